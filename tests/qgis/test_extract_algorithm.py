"""The extraction algorithm in real QGIS: registry, processing.run, errors, cancellation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import processing
import pytest
import shapely
from affine import Affine
from qgis.core import (QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsProcessingParameterDefinition,
                       QgsProcessingUtils, QgsVectorLayer)

from tests.helpers.models import boxes_scene, write_raster
from tests.helpers.processes import kill_worker_at_first_progress, worker_children

ALG = "sn6_footprints:extract_footprints"
SKEWED = Affine(0.5, 0.1, 594000.0, 0.05, -0.5, 5750000.0)
BOXES = [(10, 10, 30, 40), (100, 150, 140, 210), (230, 60, 262, 100)]


def expected_polygon_centres(boxes, transform):
    return sorted(tuple(np.round(transform * ((c0 + c1) / 2, (r0 + r1) / 2), 6)) for r0, c0, r1, c1 in boxes)


@pytest.fixture
def skewed_scene(tmp_path):
    return write_raster(tmp_path / "scene.tif", boxes_scene(300, 260, BOXES), transform=SKEWED)


def run_extract(raster, model, output, **extra):
    parameters = {"INPUT": str(raster), "MODEL": str(model), "OUTPUT": str(output), "SIMPLIFY": 0,
                  "TILE_SIZE": 128, "OVERLAP": 32}
    parameters.update(extra)
    return processing.run(ALG, parameters, feedback=extra.pop("feedback", None))


def test_provider_is_registered_with_the_extraction_algorithm(plugin):
    provider = QgsApplication.processingRegistry().providerById("sn6_footprints")
    assert provider is not None and provider.name() == "SN6 Footprints"
    algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
    assert algorithm.displayName() == "Extract building footprints (TernausNet)"
    declared = {o.name() for o in algorithm.outputDefinitions()}
    assert {"OUTPUT", "BUILDING_COUNT", "F1", "PRECISION", "RECALL", "TP", "FP", "FN"} <= declared


def test_algorithms_run_in_the_background_task_not_on_the_gui_thread(plugin):
    from qgis.core import QgsProcessingAlgorithm

    for algorithm in QgsApplication.processingRegistry().providerById("sn6_footprints").algorithms():
        assert not algorithm.flags() & QgsProcessingAlgorithm.FlagNoThreading, algorithm.id()
        assert algorithm.shortHelpString() and algorithm.helpUrl()


def test_plugin_adds_a_toolbar_button_opening_the_dialog(plugin):
    assert plugin.action is not None and plugin.action.text().startswith("Extract building footprints")
    assert not plugin.action.icon().isNull()


def test_polygons_land_on_buildings_with_a_skewed_geotransform(plugin, skewed_scene, threshold_model_path, tmp_path):
    result = run_extract(skewed_scene, threshold_model_path, tmp_path / "out.gpkg")
    layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
    assert layer.isValid() and layer.featureCount() == len(BOXES) == result["BUILDING_COUNT"]
    centres = sorted(tuple(np.round((f.geometry().centroid().asPoint().x(), f.geometry().centroid().asPoint().y()), 6))
                     for f in layer.getFeatures())
    assert centres == expected_polygon_centres(BOXES, SKEWED)
    pixel_area = abs(SKEWED.a * SKEWED.e - SKEWED.b * SKEWED.d)
    areas = sorted(f["area_m2"] for f in layer.getFeatures())
    assert areas == pytest.approx(sorted((r1 - r0) * (c1 - c0) * pixel_area for r0, c0, r1, c1 in BOXES))
    assert all(0.9 < f["confidence"] <= 1 for f in layer.getFeatures())
    assert layer.crs().authid() == "EPSG:32631"


def test_runs_twice_in_a_row_as_a_batch_does(plugin, skewed_scene, threshold_model_path, tmp_path):
    counts = [run_extract(skewed_scene, threshold_model_path, tmp_path / f"run{i}.gpkg")["BUILDING_COUNT"]
              for i in range(2)]
    assert counts == [3, 3]


def test_wrong_band_count_is_a_clear_error(plugin, tmp_path, threshold_model_path):
    three_bands = write_raster(tmp_path / "rgb.tif", boxes_scene(64, 64, BOXES[:1], bands=3))
    with pytest.raises(QgsProcessingException, match=r"3 band\(s\) but the model expects 4 \(HH, HV, VH, VV"):
        run_extract(three_bands, threshold_model_path, tmp_path / "out.gpkg")
    assert not (tmp_path / "out.gpkg").exists()


def test_raster_without_crs_is_a_clear_error(plugin, tmp_path, threshold_model_path):
    no_crs = write_raster(tmp_path / "nocrs.tif", boxes_scene(64, 64, BOXES[:1]), crs=None)
    with pytest.raises(QgsProcessingException, match="no coordinate reference system"):
        run_extract(no_crs, threshold_model_path, tmp_path / "out.gpkg")


def test_missing_model_file_is_a_clear_error(plugin, skewed_scene, tmp_path):
    with pytest.raises(QgsProcessingException, match="Model file not found"):
        run_extract(skewed_scene, tmp_path / "nope.pt", tmp_path / "out.gpkg")


def test_cuda_requested_without_gpu_is_a_clear_error(plugin, skewed_scene, threshold_model_path, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(QgsProcessingException, match="CUDA was requested but no CUDA GPU"):
        run_extract(skewed_scene, threshold_model_path, tmp_path / "out.gpkg", DEVICE=1)


class CancelAfterFirstProgress(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.progress_calls = 0
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value):
        self.progress_calls += 1
        if value > 0:
            self.cancel()


def test_cancel_through_the_feedback_stops_and_writes_nothing(plugin, tmp_path, threshold_model_path):
    big = write_raster(tmp_path / "big.tif", boxes_scene(1024, 1024, BOXES))
    feedback = CancelAfterFirstProgress()
    parameters = {"INPUT": str(big), "MODEL": str(threshold_model_path), "OUTPUT": str(tmp_path / "out.gpkg"),
                  "TILE_SIZE": 64, "OVERLAP": 0, "BATCH_SIZE": 1}
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(ALG, parameters, feedback=feedback)
    assert feedback.isCanceled() and feedback.progress() < 10
    assert not (tmp_path / "out.gpkg").exists()
    assert list(Path(QgsProcessingUtils.tempFolder()).glob("sn6-footprints-*")) == []  # the worker's scratch
    assert worker_children() == []


def test_a_worker_that_dies_is_a_clear_error_and_qgis_carries_on(plugin, tmp_path, threshold_model_path):
    big = write_raster(tmp_path / "big.tif", boxes_scene(1024, 1024, BOXES))
    parameters = {"INPUT": str(big), "MODEL": str(threshold_model_path), "OUTPUT": str(tmp_path / "out.gpkg"),
                  "TILE_SIZE": 64, "OVERLAP": 0, "BATCH_SIZE": 1}
    with pytest.raises(QgsProcessingException, match=r"worker process stopped unexpectedly \(exit code -9"):
        processing.run(ALG, parameters, feedback=kill_worker_at_first_progress())
    assert not (tmp_path / "out.gpkg").exists()
    assert list(Path(QgsProcessingUtils.tempFolder()).glob("sn6-footprints-*")) == []


def test_output_layer_is_styled_and_named_after_the_input_when_loaded(plugin, skewed_scene, threshold_model_path,
                                                                      tmp_path):
    from qgis.core import QgsProcessingContext, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    processing.runAndLoadResults(ALG, {"INPUT": str(skewed_scene), "MODEL": str(threshold_model_path),
                                       "OUTPUT": str(tmp_path / "styled.gpkg")}, context=context)
    layers = QgsProject.instance().mapLayersByName("Building footprints (scene)")
    assert len(layers) == 1, [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    layer = layers[0]
    symbol = layer.renderer().symbol()
    assert symbol.symbolLayer(0).strokeColor().name() == "#ff9f1c"
    QgsProject.instance().removeAllMapLayers()


def test_real_sar_crop_at_4_5_m_is_refused_for_a_half_metre_model(plugin, reference_data, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"4\.5 m pixels, 9× the model's 0\.5 m"):
        run_extract(reference_data / "sn6" / "sar_masked.tif", "", tmp_path / "crop.gpkg")
    assert not (tmp_path / "crop.gpkg").exists()


def test_real_sar_crop_completes_without_polygons_on_nan(plugin, reference_data, tmp_path):
    """Rotterdam dB crop (4.5 m) with a 4.5 m model that calls every valid pixel a building: the
    footprint must stay inside the swath."""
    import rasterio
    import shapely
    from rasterio.features import shapes

    from tests.helpers.models import save_threshold_model

    crop = reference_data / "sn6" / "sar_masked.tif"
    everything = save_threshold_model(tmp_path / "all.pt", min_area_m2=0.0, pixel_size_m=4.5)
    import torch
    payload = torch.load(everything, weights_only=True)
    payload["state_dict"]["final.bias"][0] = 10.0  # logit >= 10 everywhere
    torch.save(payload, everything)
    result = run_extract(crop, everything, tmp_path / "crop.gpkg", SIMPLIFY=0, TILE_SIZE=128, OVERLAP=32)
    layer = QgsVectorLayer(result["OUTPUT"], "crop", "ogr")
    assert layer.featureCount() >= 1
    with rasterio.open(crop) as ds:
        nan = np.isnan(ds.read(1))
        nan_area = shapely.unary_union([shapely.geometry.shape(g) for g, v in
                                        shapes(nan.astype(np.uint8), mask=nan, transform=ds.transform)])
        valid_area = (~nan).sum() * abs(ds.transform.a * ds.transform.e)
    footprints = shapely.unary_union([shapely.from_wkb(bytes(f.geometry().asWkb())) for f in layer.getFeatures()])
    assert footprints.intersection(nan_area).area == pytest.approx(0.0, abs=1e-6)
    assert footprints.area == pytest.approx(valid_area, rel=1e-6)


def test_ground_truth_in_another_crs_is_reprojected_and_scored(plugin, skewed_scene, threshold_model_path, tmp_path):
    """Truth in EPSG:4326: two of the three buildings plus one that the raster does not show."""
    import shapely

    from sn6_footprints.core.vector_io import reproject, write_footprints

    truth_px = BOXES[:2] + [(200, 200, 240, 250)]
    truth_utm = [shapely.Polygon([SKEWED * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])
                 for r0, c0, r1, c1 in truth_px]
    truth_path = write_footprints(tmp_path / "truth.geojson", reproject(truth_utm, "EPSG:32631", "EPSG:4326"),
                                  {"name": ["a", "b", "missing"]}, "EPSG:4326")
    result = run_extract(skewed_scene, threshold_model_path, tmp_path / "scored.gpkg",
                         GROUND_TRUTH=str(truth_path))
    assert (result["TP"], result["FP"], result["FN"]) == (2, 1, 1)
    assert result["PRECISION"] == pytest.approx(2 / 3) and result["RECALL"] == pytest.approx(2 / 3)
    assert result["F1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("choice", [1, 2])  # Yes, No: either way the symmetric threshold model finds the boxes
def test_flip_averaging_is_an_advanced_choice_that_runs(plugin, skewed_scene, threshold_model_path, tmp_path, choice):
    algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
    parameter = algorithm.parameterDefinition("FLIP_AVERAGE")
    assert parameter.flags() & parameter.FlagAdvanced and parameter.defaultValue() == 0  # the model's setting
    result = run_extract(skewed_scene, threshold_model_path, tmp_path / "out.gpkg", FLIP_AVERAGE=choice)
    assert result["BUILDING_COUNT"] == len(BOXES)


def test_db_and_complex_rasters_give_the_sn6_scale_footprints(plugin, tmp_path):
    """The same simulated scene written as SN6 values, as dB and as single-look complex values
    (no scale tags: Auto decides from the values and the data type) gives the same buildings."""
    import rasterio

    from sn6_footprints.core.radiometry import convert, to_linear
    from sn6_footprints.core.simulation import simulate_scene

    sn6 = tmp_path / "sn6.tif"
    simulate_scene(sn6, None, width_px=384, height_px=384, seed=20100)
    with rasterio.open(sn6) as src:
        profile, data = src.profile, src.read()
    nodata = (data == 0).all(axis=0)
    db = convert(data, "sn6", "db")
    db[:, nodata] = np.nan
    phase = np.random.default_rng(7).uniform(0, 2 * np.pi, data.shape)
    z = (np.sqrt(np.nan_to_num(to_linear(data, "sn6"))) * np.exp(1j * phase)).astype(np.complex64)
    written = {}
    for name, values, dtype, nodata_value in (("db", db, "float32", float("nan")),
                                             ("complex", z, "complex64", 0.0)):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", **dict(profile, dtype=dtype, nodata=nodata_value)) as dst:
            dst.write(values)
            dst.update_tags(LOOK_DIRECTION="north")
        written[name] = path
    feedback = QgsProcessingFeedback()
    counts = {"sn6": run_extract(sn6, "", tmp_path / "sn6.gpkg")["BUILDING_COUNT"]}
    for name, path in written.items():
        log = []
        feedback.pushInfo = log.append
        counts[name] = run_extract(path, "", tmp_path / f"{name}.gpkg", feedback=feedback)["BUILDING_COUNT"]
    assert counts["sn6"] > 10
    assert abs(counts["db"] - counts["sn6"]) <= 1 and abs(counts["complex"] - counts["sn6"]) <= 1, counts


def test_test_time_scales_run_through_the_worker_and_bad_ones_are_refused(plugin, skewed_scene, threshold_model_path,
                                                                         tmp_path):
    algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
    assert algorithm.parameterDefinition("TTA_SCALES").flags() & QgsProcessingParameterDefinition.FlagAdvanced
    result = run_extract(skewed_scene, threshold_model_path, tmp_path / "out.gpkg", TTA_SCALES="0.8, 1, 1.25")
    assert result["BUILDING_COUNT"] == len(BOXES)
    with pytest.raises(QgsProcessingException, match="Test-time scales '0.8,x' are not a comma-separated list"):
        run_extract(skewed_scene, threshold_model_path, tmp_path / "bad.gpkg", TTA_SCALES="0.8,x")
    with pytest.raises(QgsProcessingException, match="Test-time scale 3.0 is outside 0.5-2"):
        run_extract(skewed_scene, threshold_model_path, tmp_path / "far.gpkg", TTA_SCALES="3")
    assert not (tmp_path / "bad.gpkg").exists() and not (tmp_path / "far.gpkg").exists()


def test_regular_outlines_square_the_skewed_pixels_corners_on_the_ground(plugin, skewed_scene, threshold_model_path,
                                                                         tmp_path):
    """SKEWED pixels are 84 degrees apart on the ground: traced boxes are parallelograms there,
    regular ones rectangles on the same buildings."""
    from sn6_footprints.core.postprocessing.outlines import right_angle_share

    def polygons(result):
        layer = QgsVectorLayer(result["OUTPUT"], "out", "ogr")
        return [shapely.from_wkt(f.geometry().asWkt()) for f in layer.getFeatures()]

    algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
    assert not algorithm.parameterDefinition("OUTLINE").flags() & QgsProcessingParameterDefinition.FlagAdvanced
    traced = polygons(run_extract(skewed_scene, threshold_model_path, tmp_path / "traced.gpkg"))
    regular = polygons(run_extract(skewed_scene, threshold_model_path, tmp_path / "regular.gpkg", OUTLINE=1))
    assert len(regular) == len(traced) == len(BOXES)
    assert right_angle_share(traced, tolerance_deg=2) == 0.0
    assert right_angle_share(regular, tolerance_deg=1) == 1.0
    assert all(len(p.exterior.coords) == 5 for p in regular)
    for before, after in zip(sorted(traced, key=lambda p: p.centroid.x), sorted(regular, key=lambda p: p.centroid.x)):
        assert before.intersection(after).area / before.union(after).area > 0.85
