"""The scoring algorithm in real QGIS: reference numbers, styled layers, report, model chain."""
from __future__ import annotations

from collections import Counter

import processing
import pytest
from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                       QgsProcessingModelChildParameterSource, QgsProcessingModelOutput,
                       QgsProcessingModelParameter, QgsProcessingParameterFile,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorLayer, QgsVectorLayer)

from tests.helpers.models import boxes_scene, write_raster

ALG = "sn6_footprints:score_footprints"


def test_reference_geojson_scores_like_solaris(plugin, reference_data, tmp_path):
    """solaris's gt.geojson / pred.geojson: TP 8, FP 20, FN 20 (EXPECTED.md)."""
    result = processing.run(ALG, {
        "TRUTH": str(reference_data / "solaris" / "gt.geojson"),
        "PROPOSALS": str(reference_data / "solaris" / "pred.geojson"),
        "CONFIDENCE_FIELD": "conf", "MIN_AREA": 0,
        "OUTPUT_PROPOSALS": str(tmp_path / "proposals.gpkg"), "OUTPUT_MISSED": str(tmp_path / "missed.gpkg"),
        "OUTPUT_HTML": str(tmp_path / "report.html")})
    assert (result["TP"], result["FP"], result["FN"]) == (8, 20, 20)
    assert result["F1"] == pytest.approx(0.2857142857142857, abs=1e-15)
    proposals = QgsVectorLayer(result["OUTPUT_PROPOSALS"], "p", "ogr")
    assert Counter(f["status"] for f in proposals.getFeatures()) == {"TP": 8, "FP": 20}
    assert all((f["iou"] > 0.5) == (f["status"] == "TP") for f in proposals.getFeatures())
    assert QgsVectorLayer(result["OUTPUT_MISSED"], "m", "ogr").featureCount() == 20
    assert "F1 <b>0.2857</b>" in (tmp_path / "report.html").read_text()


def test_scored_layers_are_styled_green_red_blue(plugin, reference_data, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = processing.runAndLoadResults(ALG, {
        "TRUTH": str(reference_data / "solaris" / "gt.geojson"),
        "PROPOSALS": str(reference_data / "solaris" / "pred.geojson"),
        "OUTPUT_PROPOSALS": str(tmp_path / "p.gpkg"), "OUTPUT_MISSED": str(tmp_path / "m.gpkg")}, context=context)
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    scored, missed = layers["Scored proposals"], layers["Missed buildings (FN)"]
    categories = {c.value(): c.symbol().color().name() for c in scored.renderer().categories()}
    assert categories["TP"] == "#1a9850" and categories["FP"] == "#d73027"
    assert missed.renderer().symbol().color().name() == "#2166ac"
    QgsProject.instance().removeAllMapLayers()
    assert result["TP"] >= 0


def test_model_chains_extraction_then_scoring(plugin, threshold_model_path, tmp_path):
    from sn6_footprints.core.vector_io import write_footprints
    import shapely
    from affine import Affine

    transform = Affine(0.5, 0, 594000, 0, -0.5, 5750000)
    boxes = [(10, 10, 40, 40), (60, 100, 90, 150)]
    raster = write_raster(tmp_path / "scene.tif", boxes_scene(128, 192, boxes))
    truth = write_footprints(tmp_path / "truth.gpkg",
                             [shapely.box(*(transform * (c0, r1)), *(transform * (c1, r0)))
                              for r0, c0, r1, c1 in boxes],
                             {"name": ["a", "b"]}, "EPSG:32631")
    model = QgsProcessingModelAlgorithm("Extract and score", "SN6 tests")
    for parameter in (QgsProcessingParameterRasterLayer("sar", "SAR"), QgsProcessingParameterFile("weights", "Model"),
                      QgsProcessingParameterVectorLayer("truth", "Truth")):
        model.addModelParameter(parameter, QgsProcessingModelParameter(parameter.name()))
    extract = QgsProcessingModelChildAlgorithm("sn6_footprints:extract_footprints")
    extract.setChildId("extract")
    extract.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("sar")])
    extract.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromModelParameter("weights")])
    model.addChildAlgorithm(extract)
    score = QgsProcessingModelChildAlgorithm(ALG)
    score.setChildId("score")
    score.addParameterSources("TRUTH", [QgsProcessingModelChildParameterSource.fromModelParameter("truth")])
    source = QgsProcessingModelChildParameterSource
    score.addParameterSources("PROPOSALS", [source.fromChildOutput("extract", "OUTPUT")])
    score.addParameterSources("CONFIDENCE_FIELD", [source.fromStaticValue("confidence")])
    for name in ("OUTPUT_PROPOSALS", "OUTPUT_MISSED"):
        output = QgsProcessingModelOutput(name.lower(), name)
        output.setChildOutputName(name)
        score.setModelOutputs({**score.modelOutputs(), name.lower(): output})
    model.addChildAlgorithm(score)
    model.toFile(str(tmp_path / "chain.model3"))
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(tmp_path / "chain.model3"))
    context_results = processing.run(loaded, {"sar": str(raster), "weights": str(threshold_model_path),
                                              "truth": str(truth),
                                              "score:output_proposals": str(tmp_path / "p.gpkg"),
                                              "score:output_missed": str(tmp_path / "m.gpkg")})
    scored = QgsVectorLayer(context_results["score:output_proposals"], "p", "ogr")
    assert Counter(f["status"] for f in scored.getFeatures()) == {"TP": 2}


def test_geographic_ground_truth_is_measured_in_metres_with_the_same_result(plugin, reference_data, tmp_path):
    from sn6_footprints.core.vector_io import read_footprints, write_footprints

    gt = read_footprints(reference_data / "solaris" / "gt.geojson", target_crs="EPSG:4326")
    truth_4326 = write_footprints(tmp_path / "gt_4326.gpkg", gt.geometries, {}, "EPSG:4326")
    result = processing.run(ALG, {
        "TRUTH": str(truth_4326), "PROPOSALS": str(reference_data / "solaris" / "pred.geojson"),
        "CONFIDENCE_FIELD": "conf", "MIN_AREA": 0,
        "OUTPUT_PROPOSALS": "memory:", "OUTPUT_MISSED": "memory:"})
    assert (result["TP"], result["FP"], result["FN"]) == (8, 20, 20)
