"""The ready-made graphical model resources/models/extract_and_score.model3: it loads, chains
extraction with scoring, and runs to F1 1.0 on a scene whose buildings are known exactly."""
from __future__ import annotations

import processing
import pytest
import shapely
from qgis.core import QgsProcessingModelAlgorithm, QgsVectorLayer

from sn6_footprints.core.vector_io import write_footprints
from tests.conftest import REPO_ROOT
from tests.helpers.models import TRANSFORM, boxes_scene, write_raster

MODEL3 = REPO_ROOT / "resources" / "models" / "extract_and_score.model3"
BOXES = [(10, 10, 40, 40), (60, 100, 90, 150)]  # (row0, col0, row1, col1) px


def truth_polygons(boxes):
    """The boxes as map polygons, through the raster's transform (y grows up, rows down)."""
    polygons = []
    for r0, c0, r1, c1 in boxes:
        x0, y0 = TRANSFORM * (c0, r1)
        x1, y1 = TRANSFORM * (c1, r0)
        polygons.append(shapely.box(x0, y0, x1, y1))
    return polygons


def load_model() -> QgsProcessingModelAlgorithm:
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL3)), f"{MODEL3} does not load"
    return model


def test_model3_loads_and_chains_extraction_with_scoring(plugin):
    model = load_model()
    children = model.childAlgorithms()
    assert {child_id: child.algorithmId() for child_id, child in children.items()} == {
        "extract": "sn6_footprints:extract_footprints", "score": "sn6_footprints:score_footprints"}
    assert all(child.algorithm() is not None for child in children.values())  # resolved by the provider
    extract, score = children["extract"], children["score"]
    assert "GROUND_TRUTH" not in extract.parameterSources()
    assert [s.parameterName() for s in extract.parameterSources()["INPUT"]] == ["sar"]
    assert [s.parameterName() for s in score.parameterSources()["TRUTH"]] == ["truth"]
    proposals = score.parameterSources()["PROPOSALS"]
    assert [(s.outputChildId(), s.outputName()) for s in proposals] == [("extract", "OUTPUT")]
    assert {p.name() for p in model.parameterDefinitions()} >= {
        "sar", "truth", "weights", "extract:footprints", "score:scored", "score:missed"}
    valid, errors = model.validate()
    assert valid, errors


@pytest.mark.timeout(300)
def test_model3_runs_to_f1_one_on_known_boxes(plugin, threshold_model_path, tmp_path):
    raster = write_raster(tmp_path / "scene.tif", boxes_scene(128, 192, BOXES))
    truth = write_footprints(tmp_path / "truth.gpkg", truth_polygons(BOXES), {"id": [1, 2]}, crs="EPSG:32631")
    outputs = {name: str(tmp_path / f"{name}.gpkg") for name in ("footprints", "scored", "missed")}
    result = processing.run(load_model(), {
        "sar": str(raster), "truth": str(truth), "weights": str(threshold_model_path),
        "extract:footprints": outputs["footprints"], "score:scored": outputs["scored"],
        "score:missed": outputs["missed"]})
    footprints = QgsVectorLayer(result["extract:footprints"], "footprints", "ogr")
    scored = QgsVectorLayer(result["score:scored"], "scored", "ogr")
    missed = QgsVectorLayer(result["score:missed"], "missed", "ogr")
    assert footprints.featureCount() == len(BOXES)
    assert sorted(f["status"] for f in scored.getFeatures()) == ["TP", "TP"]
    assert missed.featureCount() == 0
    assert result["score:F1"] == pytest.approx(1.0)
    assert result["score:PRECISION"] == pytest.approx(1.0) and result["score:RECALL"] == pytest.approx(1.0)


def test_model3_holds_every_parameter_of_its_algorithms_at_todays_defaults(plugin):
    """A parameter added to an algorithm, or a default changed (the Auto tile size), without
    rerunning scripts/make_extract_and_score_model.py would leave the model behind."""
    for child in load_model().childAlgorithms().values():
        sources = child.parameterSources()
        for definition in child.algorithm().parameterDefinitions():
            name = definition.name()
            if definition.isDestination() or (definition.defaultValue() is None
                                              and definition.flags() & definition.FlagOptional):
                continue
            assert name in sources, f"{child.childId()}: {name} is missing; rerun make_extract_and_score_model.py"
            source = sources[name][0]
            if source.source() == source.StaticValue and name != "DEVICE":
                assert source.staticValue() == definition.defaultValue(), (child.childId(), name)
