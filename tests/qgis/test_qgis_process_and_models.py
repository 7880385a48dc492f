"""The algorithm outside the toolbox: qgis_process (plugin enabled in a fresh profile) and a
saved graphical model that chains it with a native algorithm."""
from __future__ import annotations

import json
import os
import subprocess
import zipfile

import processing
import pytest
from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm, \
    QgsProcessingModelChildParameterSource, QgsProcessingModelOutput, QgsProcessingModelParameter, \
    QgsProcessingParameterFile, QgsProcessingParameterRasterLayer, QgsVectorLayer

from tests.conftest import REPO_ROOT
from tests.helpers.models import boxes_scene, write_raster
from tests.helpers.plugins import install_plugin, qgis_process

BOXES = [(10, 10, 40, 40), (60, 100, 90, 150)]


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The plugin folder as `make install-plugin` lays it out, in a temporary build dir."""
    return install_plugin(tmp_path_factory)


@pytest.fixture(scope="module")
def unzipped_plugin(tmp_path_factory):
    """The plugin as a user installs it: `make package`'s ZIP, unzipped into a plugins folder."""
    build = tmp_path_factory.mktemp("package")
    subprocess.run(["make", "-s", "package", f"BUILD={build / 'build'}", f"DIST={build / 'dist'}"], cwd=REPO_ROOT,
                   check=True, capture_output=True)
    plugins = build / "plugins"
    with zipfile.ZipFile(next((build / "dist").glob("sn6_footprints-*.zip"))) as archive:
        archive.extractall(plugins)
    return plugins


def plain_qgis_process(home, plugins, *arguments):
    """`qgis_process.bin` as a user runs it: a fresh profile, no PYTHONPATH, no wrapper."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "QGIS_CUSTOM_CONFIG_PATH")}
    env.update(HOME=str(home), QGIS_PLUGINPATH=str(plugins), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(home / "runtime"), PATH="/usr/bin:/bin")
    (home / "runtime").mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(["qgis_process.bin", *arguments], capture_output=True, text=True, timeout=300, env=env)


def test_plain_qgis_process_loads_the_zip_plugin_and_runs_after_the_headless_installer(
        unzipped_plugin, threshold_model_path, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert plain_qgis_process(home, unzipped_plugin, "plugins", "enable", "sn6_footprints").returncode == 0
    listed = plain_qgis_process(home, unzipped_plugin, "list")
    assert "sn6_footprints:extract_footprints" in listed.stdout and "Traceback" not in listed.stdout + listed.stderr

    raster = write_raster(tmp_path / "scene.tif", boxes_scene(128, 192, BOXES))
    output = tmp_path / "footprints.gpkg"
    run = ["--json", "run", "sn6_footprints:extract_footprints", "--", f"INPUT={raster}",
           f"MODEL={threshold_model_path}", f"OUTPUT={output}", "TILE_SIZE=64"]
    before = plain_qgis_process(home, unzipped_plugin, *run)
    assert before.returncode != 0 and not output.exists()
    assert "are not set up for SN6 Footprints yet" in before.stdout + before.stderr
    assert "Traceback" not in before.stdout + before.stderr

    profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    installer = subprocess.run(["/usr/bin/python3", "-m", "sn6_footprints.install", "--check", "--env",
                                str(REPO_ROOT / ".venv"), "--profile", str(profile)],
                               cwd=unzipped_plugin, capture_output=True, text=True, timeout=300,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert installer.returncode == 0, installer.stdout[-2000:] + installer.stderr[-2000:]

    after = plain_qgis_process(home, unzipped_plugin, *run)
    assert after.returncode == 0, after.stdout[-2000:] + after.stderr[-2000:]
    results = json.loads(after.stdout[after.stdout.index("{"):])["results"]
    assert results["BUILDING_COUNT"] == len(BOXES)
    assert QgsVectorLayer(str(output), "out", "ogr").featureCount() == len(BOXES)
    assert f"Worker: {REPO_ROOT / '.venv'}" in after.stdout + after.stderr


def test_qgis_process_script_leaves_no_profile_behind(installed_plugins, tmp_path):
    """scripts/qgis_process.sh removes its throw-away profile (it used to exec past its trap)."""
    completed = qgis_process(installed_plugins, "list", env={**os.environ, "TMPDIR": str(tmp_path)})
    assert completed.returncode == 0 and "sn6_footprints:extract_footprints" in completed.stdout
    assert list(tmp_path.glob("sn6-qgis-home-*")) == []


def test_qgis_process_reports_a_bad_band_count_clearly(installed_plugins, threshold_model_path, tmp_path):
    raster = write_raster(tmp_path / "two.tif", boxes_scene(64, 64, BOXES[:1], bands=2))
    completed = qgis_process(installed_plugins, "run", "sn6_footprints:extract_footprints", "--", f"INPUT={raster}",
                             f"MODEL={threshold_model_path}", f"OUTPUT={tmp_path / 'o.gpkg'}")
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


@pytest.fixture(scope="module")
def east_south_up_runs(installed_plugins, tmp_path_factory):
    """One simulated scene, east-looking and stored south-up, written on the SN6 scale, as dB and
    as single-look complex, each through qgis_process with the bundled model (the SN6 run is the
    reference both other scales are compared with, so it runs once): scale -> (count, log)."""
    from sn6_footprints.core.simulation import simulate_scene

    folder = tmp_path_factory.mktemp("scales")
    runs = {}
    for written in ("sn6", "db", "complex"):
        raster = folder / f"{written}.tif"
        simulate_scene(raster, None, width_px=512, height_px=512, seed=20105, scale=written,
                       look_direction="east", storage="south-up")
        completed = qgis_process(installed_plugins, "--json", "run", "sn6_footprints:extract_footprints", "--",
                                 f"INPUT={raster}", f"OUTPUT={folder / (written + '.gpkg')}")
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
        count = json.loads(completed.stdout[completed.stdout.index("{"):])["results"]["BUILDING_COUNT"]
        runs[written] = (count, completed.stdout + completed.stderr)
    return runs


@pytest.mark.parametrize("scale", ["db", "complex"])
def test_qgis_process_reads_db_and_complex_scenes_and_logs_the_decisions(east_south_up_runs, scale):
    """A simulated scene written as dB or single-look complex, east-looking and stored south-up,
    through qgis_process with the bundled model: Auto's decisions are in the log and the buildings
    are found (the same scene on the SN6 scale gives the same count)."""
    count, log = east_south_up_runs[scale]
    reference = east_south_up_runs["sn6"][0]
    assert ("Input scale: dB" if scale == "db" else "Input scale: complex") in log
    assert "Look direction: east (the raster's LOOK_DIRECTION tag)" in log and "south-up" in log
    assert reference > 20 and abs(count - reference) <= 1, (reference, count)
