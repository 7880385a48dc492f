"""The optional building probability raster through real QGIS: written on the raster's grid,
refused over an input, styled with a colour ramp when loaded."""
from __future__ import annotations

import processing
import pytest
import rasterio
from affine import Affine
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProject

from tests.helpers.models import boxes_scene, write_raster

ALG = "sn6_footprints:extract_footprints"
SKEWED = Affine(0.5, 0.1, 594000.0, 0.05, -0.5, 5750000.0)
BOXES = [(10, 10, 30, 40), (100, 150, 140, 210)]


@pytest.fixture
def scene(tmp_path):
    return write_raster(tmp_path / "scene.tif", boxes_scene(200, 230, BOXES), transform=SKEWED)


def parameters(raster, model, tmp_path, **extra):
    return {"INPUT": str(raster), "MODEL": str(model), "OUTPUT": str(tmp_path / "footprints.gpkg"),
            "SIMPLIFY": 0, "TILE_SIZE": 128, "OVERLAP": 32, **extra}


def test_probability_raster_is_written_on_the_rasters_grid(plugin, scene, threshold_model_path, tmp_path):
    out = tmp_path / "probability.tif"
    result = processing.run(ALG, parameters(scene, threshold_model_path, tmp_path, OUTPUT_PROBABILITY=str(out),
                                            INFERENCE_PRECISION=1))
    assert result["OUTPUT_PROBABILITY"] == str(out) and result["BUILDING_COUNT"] == len(BOXES)
    with rasterio.open(out) as written, rasterio.open(scene) as source:
        assert written.transform == source.transform and written.crs == source.crs
        assert written.shape == source.shape and written.dtypes[0] == "float32" and written.nodata == -1.0
        values = written.read(1)
    assert values[15, 20] > 0.9 and values[60, 100] < 0.5          # a building and the background


def test_without_the_output_no_probability_raster_is_written(plugin, scene, threshold_model_path, tmp_path):
    result = processing.run(ALG, parameters(scene, threshold_model_path, tmp_path))
    assert not result.get("OUTPUT_PROBABILITY")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tif") == ["scene.tif"]


def test_the_input_raster_is_refused_as_probability_output(plugin, scene, threshold_model_path, tmp_path):
    before = scene.read_bytes()
    with pytest.raises(QgsProcessingException, match="building probability output"):
        processing.run(ALG, parameters(scene, threshold_model_path, tmp_path, OUTPUT_PROBABILITY=str(scene)))
    assert scene.read_bytes() == before and not (tmp_path / "footprints.gpkg").exists()


@pytest.mark.parametrize("fmt, maximum", [(0, 1.0), (1, 254.0)])
def test_loaded_probability_layer_gets_the_colour_ramp(plugin, scene, threshold_model_path, tmp_path, fmt, maximum):
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = tmp_path / f"probability{fmt}.tif"
    processing.runAndLoadResults(ALG, parameters(scene, threshold_model_path, tmp_path, OUTPUT_PROBABILITY=str(out),
                                                 PROBABILITY_FORMAT=fmt), context=context)
    try:
        layers = QgsProject.instance().mapLayersByName("Building probability (scene)")
        assert len(layers) == 1, [layer.name() for layer in QgsProject.instance().mapLayers().values()]
        renderer = layers[0].renderer()
        assert renderer.type() == "singlebandpseudocolor"
        assert (renderer.classificationMin(), renderer.classificationMax()) == (0.0, maximum)
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_a_temporary_probability_output_is_a_geotiff_that_exists(plugin, scene, threshold_model_path, tmp_path):
    result = processing.run(ALG, parameters(scene, threshold_model_path, tmp_path,
                                            OUTPUT_PROBABILITY="TEMPORARY_OUTPUT", PROBABILITY_FORMAT=1))
    with rasterio.open(result["OUTPUT_PROBABILITY"]) as written:
        assert written.dtypes[0] == "uint8" and written.nodata == 255 and written.shape == (200, 230)


def test_cancelled_run_leaves_no_probability_raster_nor_a_partial_file(plugin, tmp_path, threshold_model_path):
    from tests.qgis.test_extract_algorithm import CancelAfterFirstProgress

    big = write_raster(tmp_path / "big.tif", boxes_scene(1024, 1024, BOXES))
    out = tmp_path / "probability.tif"
    feedback = CancelAfterFirstProgress()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(ALG, parameters(big, threshold_model_path, tmp_path, OUTPUT_PROBABILITY=str(out),
                                       TILE_SIZE=64, OVERLAP=0, BATCH_SIZE=1), feedback=feedback)
    assert feedback.isCanceled()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]
