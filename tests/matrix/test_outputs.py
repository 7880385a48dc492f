"""Outputs complete or absent, never an input (issue 11, items 1-4, 9 and the .aux.xml of 10).

Each case runs the real CLI in a subprocess and/or ``processing.run`` with the real worker and
asserts the message, the exit code or exception, that no output (nor hidden temporary folder)
is left and that the inputs are byte-identical. A full disk is made two ways: a child process
under ``RLIMIT_FSIZE`` (SIGXFSZ ignored, so writes fail with EFBIG; runs as any user, the CI's
way) and a small tmpfs (ENOSPC; needs mount rights, else skipped)."""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from sn6_footprints.core.feedback import Cancelled, Feedback
from sn6_footprints.core.vector_io import write_footprints
from tests.helpers.models import boxes_scene, write_raster
from tests.helpers.mounts import tmpfs
from tests.helpers.plugins import install_plugin, qgis_process
from tests.matrix.conftest import FAST, FAST_PARAMS, REPO_ROOT, assert_untouched, cli_environ, take_snapshot

ALG = "extract_footprints"
SQUARE = shapely.box(594000, 5749990, 594010, 5750000)


def params(scene, model, output, **extra):
    return {"INPUT": str(scene), "MODEL": str(model), "OUTPUT": str(output), "SIMPLIFY": 0, **FAST_PARAMS, **extra}


def error_line(err: str) -> str:
    """The CLI's one error line (stderr also holds the log); no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders the writers may leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".sn6-", "sn6-footprints-")))


def other_layer_gpkg(path: Path, layers=("roads",)) -> Path:
    for name in layers:
        write_footprints(path, [SQUARE] * 3, {"kind": ["a", "b", "c"]}, "EPSG:32631", layer_name=name)
    return path


def layer_counts(path: Path) -> dict:
    return {str(name): pyogrio.read_info(str(path), layer=str(name))["features"] for name, _ in
            pyogrio.list_layers(str(path))}


def limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# --- 1. the output is never an input --------------------------------------------------------

def _target(kind, scene, truth, model):
    return {"raster": scene, "truth": truth, "model": model, "aux.xml": Path(f"{scene}.aux.xml"),
            "truth via a link": None}[kind]


@pytest.mark.parametrize("kind", ["raster", "truth", "model", "aux.xml"])
def test_cli_refuses_an_output_that_is_an_input(cli, scene, truth, model, kind, tmp_path):
    output = _target(kind, scene, truth, model)
    if kind == "aux.xml":
        output.write_text("<PAMDataset/>")
    snap = take_snapshot([scene, truth, model, output, tmp_path])
    code, _, err = cli("extract", scene, output, "--model", model, "--truth", truth, *FAST)
    assert code == 2 and "would overwrite" in error_line(err), err
    assert_untouched(snap)


@pytest.mark.parametrize("kind", ["raster", "truth", "model", "aux.xml", "truth via a link"])
def test_processing_refuses_an_output_that_is_an_input(run_alg, scene, truth, model, kind, tmp_path):
    from qgis.core import QgsProcessingException

    output = _target(kind, scene, truth, model)
    if kind == "truth via a link":
        output = tmp_path / "link.gpkg"
        output.symlink_to(truth)
    if kind == "aux.xml":
        output.write_text("<PAMDataset/>")
    snap = take_snapshot([scene, truth, model, output, tmp_path])
    with pytest.raises(QgsProcessingException, match="would overwrite"):
        run_alg(ALG, params(scene, model, output, GROUND_TRUTH=str(truth)))
    assert_untouched(snap)


# --- 2. an existing GeoPackage keeps its other layers -----------------------------------------

@pytest.mark.parametrize("existing", [("roads",), ("roads", "footprints")])
def test_cli_writes_one_layer_into_an_existing_geopackage(cli, scene, model, tmp_path, existing):
    output = other_layer_gpkg(tmp_path / "city.gpkg", existing)
    snap = take_snapshot([scene, model])
    code, _, err = cli("extract", scene, output, "--model", model, *FAST)
    assert code == 0, err
    assert layer_counts(output) == {"roads": 3, "footprints": 2}
    assert leftovers(tmp_path) == []
    assert_untouched(snap)


@pytest.mark.parametrize("existing", [("roads",), ("roads", "footprints")])
def test_processing_writes_one_layer_into_an_existing_geopackage(run_alg, scene, model, tmp_path, existing):
    output = other_layer_gpkg(tmp_path / "city.gpkg", existing)
    snap = take_snapshot([scene, model, scene.parent])
    result = run_alg(ALG, params(scene, model, output))
    assert result["BUILDING_COUNT"] == 2 and result["OUTPUT"] == f"{output}|layername=footprints"
    assert layer_counts(output) == {"roads": 3, "footprints": 2}
    assert_untouched(snap)


def test_cli_replaces_an_existing_geojson_atomically(cli, scene, model, tmp_path):
    output = tmp_path / "out.geojson"
    write_footprints(output, [SQUARE] * 5, {"id": list(range(5))}, "EPSG:32631")
    before = output.stat().st_ino
    code, _, err = cli("extract", scene, output, "--model", model, *FAST)
    assert code == 0, err
    assert output.stat().st_ino != before  # a new file moved into place, not rewritten in place
    assert pyogrio.read_info(str(output))["features"] == 2 and leftovers(tmp_path) == []


def test_processing_replaces_an_existing_geojson(run_alg, scene, model, tmp_path):
    output = tmp_path / "out.geojson"
    write_footprints(output, [SQUARE] * 5, {"id": list(range(5))}, "EPSG:32631")
    assert run_alg(ALG, params(scene, model, output))["BUILDING_COUNT"] == 2
    assert pyogrio.read_info(str(output))["features"] == 2


# --- folders and extensions --------------------------------------------------------------

def test_cli_and_processing_refuse_a_missing_folder(cli, run_alg, scene, model, tmp_path):
    from qgis.core import QgsProcessingException

    output = tmp_path / "missing" / "out.gpkg"
    code, _, err = cli("extract", scene, output, "--model", model, *FAST)
    assert code == 2 and "does not exist" in error_line(err)
    with pytest.raises(QgsProcessingException):
        run_alg(ALG, params(scene, model, output))
    assert not output.parent.exists()


def test_cli_refuses_an_unknown_extension(cli, scene, model, tmp_path):
    code, _, err = cli("extract", scene, tmp_path / "out.xyz", "--model", model, *FAST)
    assert code == 2 and "not known" in error_line(err) and list(tmp_path.glob("out*")) == []


def test_cli_and_processing_refuse_a_read_only_folder(cli, run_alg, scene, model, tmp_path):
    from qgis.core import QgsProcessingException

    with tmpfs(tmp_path / "ro", read_only=True) as folder:
        code, _, err = cli("extract", scene, folder / "out.gpkg", "--model", model, *FAST)
        assert code == 2 and "not writable" in error_line(err), err
        with pytest.raises(QgsProcessingException):
            run_alg(ALG, params(scene, model, folder / "out.gpkg"))
        assert list(folder.iterdir()) == []


# --- 3. a full disk is one line, and nothing is left ------------------------------------------

@pytest.fixture
def small_scene(tmp_path):
    """64 x 64 px: its temporary probability raster (16 kB) fits a 40 kB size limit, a GeoPackage does not."""
    return write_raster(tmp_path / "small.tif", boxes_scene(64, 64, [(10, 10, 40, 40)]))


def test_cli_file_size_limit_is_one_line_and_leaves_nothing(cli, small_scene, model, tmp_path):
    out_dir, tmp = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir(), tmp.mkdir()
    snap = take_snapshot([small_scene, model])
    code, _, err = cli("extract", small_scene, out_dir / "fp.gpkg", "--model", model, *FAST, tmpdir=tmp,
                       preexec_fn=limit_file_size(40_000))
    assert code == 2 and "File size limit reached while writing" in error_line(err), err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == [] and list(tmp.iterdir()) == []
    assert_untouched(snap)


def test_cli_disk_full_is_one_line_and_leaves_nothing(cli, scene, model, tmp_path):
    with tmpfs(tmp_path / "full", size="64k") as folder:
        code, _, err = cli("extract", scene, folder / "fp.gpkg", "--model", model, *FAST)
        assert code == 2 and f"No space left on device while writing {folder / 'fp.gpkg'}" in error_line(err), err
        assert list(folder.iterdir()) == []


def test_processing_disk_full_is_an_error_and_leaves_no_file(run_alg, scene, model, tmp_path):
    from qgis.core import QgsProcessingException

    with tmpfs(tmp_path / "full", size="64k") as folder:
        with pytest.raises(QgsProcessingException, match="No space left on device while writing"):
            run_alg(ALG, params(scene, model, folder / "fp.gpkg"))
        assert list(folder.iterdir()) == []


PROCESSING_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from qgis.core import QgsApplication, QgsProcessingException
    app = QgsApplication([], False); app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing
    Processing.initialize()
    import processing, sn6_footprints
    from processing.core.ProcessingConfig import ProcessingConfig
    from sn6_footprints.processing_provider import extract_footprints
    from sn6_footprints.processing_provider.settings import WORKER_ENV
    class Iface:
        def __getattr__(self, name): return lambda *a, **k: None
    from qgis.core import QgsSettings
    QgsSettings().setValue(f"Processing/Configuration/{WORKER_ENV}", sys.prefix)
    plugin = sn6_footprints.classFactory(Iface())  # kept: its provider lives as long as it does
    plugin.initGui()
    ProcessingConfig.setSettingValue(WORKER_ENV, sys.prefix)
    copy = extract_footprints.copy_into_sink
    def limited(*args, **kwargs):  # the disk fills while QGIS writes the output (the worker is done)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000))
        return copy(*args, **kwargs)
    extract_footprints.copy_into_sink = limited
    try:
        processing.run("sn6_footprints:extract_footprints", {"INPUT": sys.argv[1], "MODEL": sys.argv[2],
                       "OUTPUT": sys.argv[3], "TILE_SIZE": 64, "OVERLAP": 0})
    except QgsProcessingException as exc:
        print("ERROR", exc); sys.exit(3)
    print("OK")
""")


def test_processing_file_size_limit_is_an_error_and_leaves_no_file(scene, model, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = tmp_path / "child.py"
    script.write_text(PROCESSING_CHILD)
    completed = subprocess.run([sys.executable, str(script), str(scene), str(model), str(out_dir / "fp.gpkg")],
                               capture_output=True, text=True, timeout=300, env=cli_environ(), cwd=REPO_ROOT)
    assert completed.returncode == 3, completed.stdout + completed.stderr[-2000:]
    assert "ERROR File size limit reached while writing" in completed.stdout
    assert list(out_dir.iterdir()) == []


# --- 9. SIGTERM and interrupted writes leave no temporary files ----------------------------------

def test_cli_sigterm_mid_run_leaves_no_temporary_files(scene, model, tmp_path):
    big = write_raster(tmp_path / "big.tif", boxes_scene(512, 512, [(10, 10, 40, 40)]))
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir(), out.mkdir()
    process = subprocess.Popen(  # a fixed interpreter, list arguments, no shell
        [sys.executable, "-m", "sn6_footprints", "extract", str(big), str(out / "fp.gpkg"), "--model", str(model),
         "--tile-size", "64", "--overlap", "32", "--batch-size", "1", "--probability", str(out / "p.tif")],
        cwd=REPO_ROOT, env=cli_environ(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # wait until the inference runs (its partial probability raster exists)
        if line.strip().startswith("10 %"):
            break
    assert any(out.glob(".p.tif.*.partial.tif")), "the partial probability raster should exist mid-run"
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 130, rest
    assert list(tmp.iterdir()) == [] and list(out.iterdir()) == []


SIGTERM_WRITE_CHILD = textwrap.dedent("""
    import os, signal, sys
    import pyogrio.raw, shapely
    from sn6_footprints.core.feedback import Cancelled
    from sn6_footprints.core.vector_io import write_footprints
    from sn6_footprints.output_safety import terminate_raises
    real = pyogrio.raw.write
    def write_then_terminated(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the temporary file exists
    pyogrio.raw.write = write_then_terminated
    try:
        with terminate_raises(Cancelled):  # as the CLI runs every command
            write_footprints(sys.argv[1], [shapely.box(0, 0, 1, 1)], {"id": [1]}, "EPSG:32631")
    except Cancelled:
        sys.exit(130)
""")


def test_sigterm_while_writing_leaves_no_hidden_folder(tmp_path):
    output = tmp_path / "fp.gpkg"
    completed = subprocess.run([sys.executable, "-c", SIGTERM_WRITE_CHILD, str(output)], capture_output=True,
                               text=True, timeout=120, env=cli_environ(), cwd=REPO_ROOT)
    assert completed.returncode == 130, completed.stderr
    assert list(tmp_path.iterdir()) == []


# --- 4. cancel after the last vectorising strip -------------------------------------------------

class CancelAt(Feedback):
    def __init__(self, percent):
        self.percent, self.cancelled = percent, False

    def set_progress(self, percent):
        self.cancelled = self.cancelled or percent >= self.percent

    def is_cancelled(self):
        return self.cancelled


def test_core_honours_a_cancel_during_the_last_strip(tmp_path):
    from sn6_footprints.core.raster_windows import RasterInfo
    from sn6_footprints.core.vectorize import VectorizeOptions, vectorize_probabilities
    import rasterio

    path = write_raster(tmp_path / "p.tif", np.ones((1, 64, 64), np.float32), nodata=None)
    with rasterio.open(path) as dataset:
        info = RasterInfo.of(dataset)
    with pytest.raises(Cancelled):  # one strip: its progress (90 %) is the last report before the polygons
        vectorize_probabilities(path, info, VectorizeOptions(min_area_m2=0), CancelAt(90))


def test_processing_cancel_after_the_last_strip_leaves_no_output(run_alg, scene, model, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class CancelLate(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.progressChanged.connect(lambda value: value >= 99 and self.cancel())

    output = tmp_path / "fp.gpkg"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_alg(ALG, params(scene, model, output), feedback=CancelLate())
    assert not output.exists()


# --- 10. no .aux.xml beside the input raster ---------------------------------------------------

def test_no_aux_xml_beside_the_input_after_cli_and_processing(cli, run_alg, scene, model, truth, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    snap = take_snapshot([scene, truth, model, scene.parent])
    code, _, err = cli("extract", scene, out / "cli.gpkg", "--model", model, "--truth", truth, *FAST)
    assert code == 0, err
    assert run_alg(ALG, params(scene, model, out / "alg.gpkg", GROUND_TRUTH=str(truth)))["BUILDING_COUNT"] == 2
    import gc

    gc.collect()  # Processing's context and its layers are gone: GDAL would have written .aux.xml by now
    assert not Path(f"{scene}.aux.xml").exists()
    assert_untouched(snap)  # the input folder's listing too


# --- the other algorithms and qgis_process ------------------------------------------------------

def test_processing_score_refuses_an_output_that_is_the_truth(run_alg, truth, tmp_path):
    from qgis.core import QgsProcessingException

    snap = take_snapshot([truth, tmp_path])
    with pytest.raises(QgsProcessingException, match="scored proposals output .* would overwrite the ground truth"):
        run_alg("score_footprints", {"TRUTH": str(truth), "PROPOSALS": str(truth), "OUTPUT_PROPOSALS": str(truth),
                                     "OUTPUT_MISSED": str(tmp_path / "missed.gpkg")})
    assert_untouched(snap)


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory):
    """The plugin as `make install-plugin` lays it out, for scripts/qgis_process.sh."""
    return install_plugin(tmp_path_factory)


def test_qgis_process_disk_full_exits_non_zero_and_leaves_no_file(plugins_dir, scene, model, tmp_path):
    with tmpfs(tmp_path / "full", size="64k") as folder:
        completed = qgis_process(plugins_dir, "run", "sn6_footprints:extract_footprints", "--", f"INPUT={scene}",
                                 f"MODEL={model}", f"OUTPUT={folder / 'fp.gpkg'}", "TILE_SIZE=64", "OVERLAP=0")
        assert completed.returncode != 0, completed.stdout
        assert "No space left on device while writing" in completed.stdout + completed.stderr
        assert list(folder.iterdir()) == []
