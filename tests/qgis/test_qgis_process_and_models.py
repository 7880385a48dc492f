"""The algorithm outside the toolbox: qgis_process (plugin enabled in a fresh profile) and a
saved graphical model that chains it with a native algorithm."""
from __future__ import annotations

import json
import subprocess

import processing
import pytest
from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm, \
    QgsProcessingModelChildParameterSource, QgsProcessingModelOutput, QgsProcessingModelParameter, \
    QgsProcessingParameterFile, QgsProcessingParameterRasterLayer, QgsVectorLayer

from tests.conftest import REPO_ROOT
from tests.helpers.models import boxes_scene, write_raster

BOXES = [(10, 10, 40, 40), (60, 100, 90, 150)]


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The plugin folder as `make install-plugin` lays it out, in a temporary build dir."""
    build = tmp_path_factory.mktemp("build")
    subprocess.run(["make", "-s", "install-plugin", f"BUILD={build}"], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    return build / "plugins"


def test_qgis_process_runs_the_algorithm_with_the_plugin_enabled(installed_plugins, threshold_model_path, tmp_path):
    raster = write_raster(tmp_path / "scene.tif", boxes_scene(128, 192, BOXES))
    output = tmp_path / "footprints.gpkg"
    completed = subprocess.run(
        [str(REPO_ROOT / "scripts" / "qgis_process.sh"), "--json", "run", "sn6_footprints:extract_footprints",
         "--", f"INPUT={raster}", f"MODEL={threshold_model_path}", f"OUTPUT={output}", "TILE_SIZE=64"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                          "SN6_PLUGINS_DIR": str(installed_plugins)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    results = json.loads(completed.stdout[completed.stdout.index("{"):])["results"]
    assert results["BUILDING_COUNT"] == len(BOXES)
    assert QgsVectorLayer(str(output), "out", "ogr").featureCount() == len(BOXES)


def test_qgis_process_reports_a_bad_band_count_clearly(installed_plugins, threshold_model_path, tmp_path):
    raster = write_raster(tmp_path / "two.tif", boxes_scene(64, 64, BOXES[:1], bands=2))
    completed = subprocess.run(
        [str(REPO_ROOT / "scripts" / "qgis_process.sh"), "run", "sn6_footprints:extract_footprints",
         "--", f"INPUT={raster}", f"MODEL={threshold_model_path}", f"OUTPUT={tmp_path / 'o.gpkg'}"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                          "SN6_PLUGINS_DIR": str(installed_plugins)})
    assert completed.returncode != 0
    assert "2 band(s) but the model expects 4" in completed.stdout + completed.stderr


def build_model(path) -> None:
    """extract_footprints -> native:buffer, saved as .model3."""
    model = QgsProcessingModelAlgorithm("Footprints buffered", "SN6 tests")
    for parameter in (QgsProcessingParameterRasterLayer("sar", "SAR raster"),
                      QgsProcessingParameterFile("weights", "Model file")):
        model.addModelParameter(parameter, QgsProcessingModelParameter(parameter.name()))
    extract = QgsProcessingModelChildAlgorithm("sn6_footprints:extract_footprints")
    extract.setChildId("extract")
    extract.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("sar")])
    extract.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromModelParameter("weights")])
    extract.addParameterSources("TILE_SIZE", [QgsProcessingModelChildParameterSource.fromStaticValue(64)])
    model.addChildAlgorithm(extract)
    buffer = QgsProcessingModelChildAlgorithm("native:buffer")
    buffer.setChildId("buffer")
    buffer.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("extract", "OUTPUT")])
    buffer.addParameterSources("DISTANCE", [QgsProcessingModelChildParameterSource.fromStaticValue(1.0)])
    output = QgsProcessingModelOutput("buffered", "Buffered footprints")
    output.setChildOutputName("OUTPUT")
    buffer.setModelOutputs({"buffered": output})
    model.addChildAlgorithm(buffer)
    assert model.toFile(str(path))


def test_saved_model_chains_extraction_with_a_native_algorithm(plugin, threshold_model_path, tmp_path):
    model_file = tmp_path / "chain.model3"
    build_model(model_file)
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(model_file))
    raster = write_raster(tmp_path / "scene.tif", boxes_scene(128, 192, BOXES))
    out = tmp_path / "buffered.gpkg"
    result = processing.run(loaded, {"sar": str(raster), "weights": str(threshold_model_path),
                                     "buffer:buffered": str(out)})
    layer = QgsVectorLayer(result["buffer:buffered"], "buffered", "ogr")
    assert layer.featureCount() == len(BOXES)
    areas = sorted(f.geometry().area() for f in layer.getFeatures())
    assert areas[0] > 30 * 30 * 0.25  # buffered by 1 m: bigger than the 30 x 30 px box
