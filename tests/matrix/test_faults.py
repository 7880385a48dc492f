"""Faults (issue 11): signals, a killed worker, full disks, broken and hostile files, unreadable
inputs, through the CLI, the worker client (``run_worker``), ``processing.run`` and
``qgis_process``. Each case asserts the exact outcome: exit code or exception and the text it
must contain, one line, no output and no temporary files left, inputs untouched."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from sn6_footprints.worker.client import WorkerCancelled, WorkerError, run_worker
from sn6_footprints.worker.environment import worker_environ
from tests.helpers.models import boxes_scene, write_raster
from tests.helpers.mounts import tmpfs
from tests.helpers.plugins import install_plugin, qgis_process
from tests.helpers.processes import kill_worker_at_first_progress
from tests.matrix.conftest import (BOXES, FAST, FAST_PARAMS, REPO_ROOT, assert_untouched, cli_environ,
                                   scratch_folders, take_snapshot, worker_children)

pytestmark = pytest.mark.timeout(300)
NOBODY = 65534
UNSAFE_ADVICE = "weights_only=False"


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture
def big_scene(tmp_path) -> Path:
    """1024 x 1024 px: a few seconds with 64 px tiles one by one, long enough to hit mid-run."""
    return write_raster(tmp_path / "big.tif", boxes_scene(1024, 1024, BOXES))


@pytest.fixture
def long_scene(tmp_path) -> Path:
    """2048 x 2048 px: about 2 s with 64 px tiles one by one on an idle machine (1024 px once finished
    between the parent seeing the run start and its signal)."""
    return write_raster(tmp_path / "long.tif", boxes_scene(2048, 2048, BOXES))


def signal_mid_run(child, signum, probability_folder: Path, output: Path) -> None:
    """Freeze the child, check it is still mid-run, send ``signum``, let it go on: the signal
    arrives during the work however slowly the parent was scheduled."""
    os.kill(child.pid, signal.SIGSTOP)
    try:
        assert inference_started(probability_folder)() and not output.exists(), "the run was over before the signal"
        child.send_signal(signum)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGCONT)


@pytest.fixture
def noisy_scene(tmp_path) -> Path:
    """512 x 512 px of random bright pixels: a probability raster that does not compress away."""
    import numpy as np

    from tests.helpers.models import BRIGHT, DARK

    band = np.where(np.random.default_rng(11).random((512, 512)) < 0.3, BRIGHT, DARK)
    return write_raster(tmp_path / "noisy.tif", np.repeat(band[None], 4, axis=0))


@pytest.fixture
def private_tmp(tmp_path) -> Path:
    """The child's own TMPDIR, to prove it leaves nothing there."""
    folder = tmp_path / "child-tmp"
    folder.mkdir()
    return folder


def _as_at_a_terminal(then=None):
    """Ctrl-C's default disposition in the child, as a terminal gives it: a test run started in
    the background of a non-interactive shell (nohup, CI runners) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler."""
    def prepare():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()
    return prepare


def start_cli(*args, tmpdir: Path, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen(  # a fixed interpreter, list arguments, no shell
        [sys.executable, "-m", "sn6_footprints", *map(str, args)], cwd=REPO_ROOT, env=cli_environ(tmpdir),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_as_at_a_terminal(preexec_fn))  # noqa: PLW1509 - signal disposition, resource limits, a uid


def wait_for(condition, timeout: float = 60.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def probability_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "probability"
    folder.mkdir(exist_ok=True)
    return folder


def with_probability(folder: Path) -> list:
    """CLI arguments that also write the probability raster into ``folder``: its hidden partial
    file exists while the engine runs (the engine itself writes nothing to TMPDIR)."""
    return ["--probability", folder / "p.tif"]


def inference_started(folder: Path):
    """The probability raster's partial file exists: the heavy work is under way."""
    return lambda: any(folder.glob(".p.tif.*.partial.tif"))


def one_error_line(stderr: str) -> str:
    """The CLI's last stderr line, its only error line (progress and log lines may precede it)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and "Traceback" not in stderr, f"no error line or a traceback: {stderr!r}"
    assert sum(line.startswith("error:") for line in lines) <= 1, f"more than one error line: {stderr!r}"
    return lines[-1]


def leftovers_beside(output: Path) -> list[str]:
    """The output itself, its journal and any hidden temporary folder or file beside it."""
    return sorted(p.name for p in output.parent.iterdir()
                  if p.name.startswith((output.name, "." + output.stem, ".sn6-")) or p.name.startswith(".tmp"))


def assert_no_output(output: Path) -> None:
    assert leftovers_beside(output) == [], f"left beside the output: {leftovers_beside(output)}"


def limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def as_nobody():
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def small_tmpfs(path: Path, size: str = "1m"):
    """A tmpfs of ``size`` at ``path`` that any user may write (skips where mounting is refused)."""
    return tmpfs(path, size, mode="1777")


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` until it is full, then free ``leave`` bytes (room for
    Python's check that the folder is writable, not for the run); the filler file."""
    filler = folder / "filler.bin"
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), open(filler, "wb") as stream:
        while True:
            stream.write(chunk)
            stream.flush()
    with contextlib.suppress(OSError), open(filler, "ab") as stream:  # the last bytes
        while True:
            stream.write(b"\0")
            stream.flush()
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


class CancelAt(QgsProcessingFeedback):
    """Presses Cancel once progress reaches ``percent`` (95: after the inference, while
    vectorising and writing)."""

    def __init__(self, percent: float):
        super().__init__()
        self.percent = percent
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value):
        if value >= self.percent and not self.isCanceled():
            self.cancel()


class Recorder:
    """Feedback for ``run_worker``: kills or cancels at a progress mark."""

    def __init__(self, cancel_at: float | None = None, kill_at: float | None = None):
        self.cancel_at, self.kill_at, self.cancelled = cancel_at, kill_at, False

    def set_progress(self, percent):
        if self.kill_at is not None and percent >= self.kill_at:
            for pid in worker_children():
                os.kill(pid, signal.SIGKILL)
        if self.cancel_at is not None and percent >= self.cancel_at:
            self.cancelled = True

    def info(self, message):
        pass

    def warning(self, message):
        pass

    def is_cancelled(self):
        return self.cancelled


@pytest.fixture
def evil_model(tmp_path):
    """A zip-format .pt whose pickle would create ``marker`` when unpickled unsafely."""
    marker = tmp_path / "pwned.marker"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture
def random_model(tmp_path):
    path = tmp_path / "random.pt"
    # seeded, and not starting with the pickle opcode 0x80 (that case: test_model_and_weights)
    data = bytearray(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data[0] = data[0] if data[0] != 0x80 else 0x7F
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def truncated_scene(tmp_path, scene):
    data = scene.read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: len(data) // 3])
    return path


# --- signals and a killed process: the CLI ------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_cli_extraction_interrupted_exits_130_and_leaves_no_temp_file(long_scene, model, tmp_path, private_tmp,
                                                                       signum):
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([long_scene, model])
    probability = probability_folder(tmp_path)
    child = start_cli("extract", long_scene, output, "--model", model, "--tile-size", "64", "--overlap", "0",
                      "--batch-size", "1", *with_probability(probability), tmpdir=private_tmp)
    assert wait_for(inference_started(probability)), "the extraction never started"
    signal_mid_run(child, signum, probability, output)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, (child.returncode, stderr)
    assert one_error_line(stderr) == "cancelled"
    assert sorted(p.name for p in private_tmp.iterdir()) == []
    assert sorted(p.name for p in probability.iterdir()) == []  # the partial probability raster is gone
    assert_no_output(output)
    assert_untouched(snap)


def test_cli_events_sigterm_is_a_cancelled_event_exit_130_and_no_temp_file(long_scene, model, tmp_path,
                                                                           private_tmp):
    output = tmp_path / "out.gpkg"
    probability = probability_folder(tmp_path)
    child = start_cli("--events", "extract", long_scene, output, "--model", model, "--tile-size", "64",
                      "--overlap", "0", "--batch-size", "1", *with_probability(probability), tmpdir=private_tmp)
    assert wait_for(inference_started(probability))
    started = time.monotonic()
    signal_mid_run(child, signal.SIGTERM, probability, output)
    stdout, _ = child.communicate(timeout=30)
    assert time.monotonic() - started < 2.0
    assert child.returncode == 130
    events = [json.loads(line.split(" ", 1)[1]) for line in stdout.splitlines() if line.startswith("@sn6 ")]
    assert events[-1] == {"event": "error", "kind": "cancelled", "message": "cancelled"}
    assert list(private_tmp.iterdir()) == []
    assert_no_output(output)


def test_cli_killed_mid_run_leaves_no_output(long_scene, model, tmp_path, private_tmp):
    """SIGKILL cannot be caught: it may leave the probability raster's hidden partial file (and
    in TMPDIR, the worker's being the scratch folder its caller removes), never anything at or
    beside the footprints output, never a file under a name the user gave."""
    output = tmp_path / "out.gpkg"
    probability = probability_folder(tmp_path)
    child = start_cli("extract", long_scene, output, "--model", model, *FAST, "--batch-size", "1",
                      *with_probability(probability), tmpdir=private_tmp)
    assert wait_for(inference_started(probability))
    signal_mid_run(child, signal.SIGKILL, probability, output)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert_no_output(output)
    assert all(p.name.startswith(".p.tif.") and p.name.endswith(".partial.tif") for p in probability.iterdir())


# --- a killed or cancelled worker ----------------------------------------------------------

def test_worker_killed_is_a_clear_error_with_no_output(big_scene, model, tmp_path):
    output = tmp_path / "out.gpkg"
    with pytest.raises(WorkerError, match=r"^The worker process stopped unexpectedly \(exit code -9, killed by "
                                          r"SIGKILL\)") as caught:
        run_worker(sys.executable, ["extract", big_scene, output, "--model", model, *FAST, "--batch-size", "1"],
                   Recorder(kill_at=1), tmp_path / "scratch", worker_environ())
    assert "\n" not in str(caught.value)
    assert worker_children() == []
    assert_no_output(output)


@pytest.mark.parametrize("percent", [1, 95], ids=["during-inference", "after-inference"])
def test_worker_cancelled_stops_and_leaves_no_output(big_scene, model, tmp_path, percent):
    output = tmp_path / "out.gpkg"
    with pytest.raises(WorkerCancelled):
        run_worker(sys.executable, ["extract", big_scene, output, "--model", model, *FAST, "--batch-size", "4"],
                   Recorder(cancel_at=percent), tmp_path / "scratch", worker_environ())
    assert worker_children() == []
    assert_no_output(output)


def test_algorithm_with_its_worker_killed_fails_clearly_and_cleans_up(run_alg, big_scene, model, tmp_path):
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([big_scene, model])
    params = {"INPUT": str(big_scene), "MODEL": str(model), "OUTPUT": str(output), "BATCH_SIZE": 1, **FAST_PARAMS}
    with pytest.raises(QgsProcessingException, match=r"worker process stopped unexpectedly \(exit code -9, "
                                                     r"killed by SIGKILL\)") as caught:
        run_alg("extract_footprints", params, feedback=kill_worker_at_first_progress())
    assert "\n" not in str(caught.value)
    assert_no_output(output)
    assert scratch_folders() == [] and worker_children() == []
    assert_untouched(snap)


def test_algorithm_cancelled_after_the_inference_leaves_no_output(run_alg, big_scene, model, tmp_path):
    """Issue 11 item 4: Cancel after the last strip, while vectorising or writing."""
    output = tmp_path / "out.gpkg"
    feedback = CancelAt(95)
    params = {"INPUT": str(big_scene), "MODEL": str(model), "OUTPUT": str(output), **FAST_PARAMS}
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_alg("extract_footprints", params, feedback=feedback)
    assert feedback.isCanceled()
    assert_no_output(output)
    assert scratch_folders() == [] and worker_children() == []


# --- full disks -------------------------------------------------------------------------------

def assert_disk_full_line(stderr: str) -> str:
    line = one_error_line(stderr)
    assert line.startswith("error: ") and "Read failed" not in line and "unexpected" not in line, line
    words = ("no space left", "disk is full", "too large", "limit reached", "full")
    assert any(word in line.lower() for word in words), line
    return line


def test_full_temporary_folder_does_not_stop_an_extraction(noisy_scene, model, tmp_path):
    """A TMPDIR with 16 KB free, too little for the noisy scene's probability raster: the engine
    hands blended rows straight to the vectoriser and writes nothing there."""
    output = tmp_path / "out.gpkg"
    with small_tmpfs(tmp_path / "full-tmp", "1m") as tmpdir:
        filler = fill(tmpdir, leave=16384)
        code, _, stderr = run_cli_in(tmpdir, "extract", noisy_scene, output, "--model", model, *FAST)
        left = sorted(p.name for p in tmpdir.iterdir())
    assert code == 0, (code, stderr)
    assert left == [filler.name]
    assert output.stat().st_size > 0


@pytest.mark.parametrize("victim", ["probability-raster", "output"])
def test_file_size_limit_is_one_clear_line(scene, noisy_scene, model, tmp_path, private_tmp, victim):
    """RLIMIT_FSIZE (works for any root or non-root CI process): 16 KB stops the noisy scene's
    probability raster; 2 KB stops the small scene's GeoPackage."""
    output = tmp_path / "out.gpkg"
    probability = probability_folder(tmp_path)
    raster, limit, extra = ((noisy_scene, 16384, with_probability(probability)) if victim == "probability-raster"
                            else (scene, 2048, []))
    child = start_cli("extract", raster, output, "--model", model, *FAST, *extra, tmpdir=private_tmp,
                      preexec_fn=limit_file_size(limit))
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, (child.returncode, stderr)
    assert_disk_full_line(stderr)
    assert list(private_tmp.iterdir()) == []
    assert list(probability.iterdir()) == []
    assert_no_output(output)


def test_full_output_disk_is_one_clear_line_and_no_partial_file(scene, model, tmp_path, private_tmp):
    snap = take_snapshot([scene, model])
    with small_tmpfs(tmp_path / "full-out", "256k") as folder:
        filler = fill(folder)
        output = folder / "out.gpkg"
        code, _, stderr = run_cli_in(private_tmp, "extract", scene, output, "--model", model, *FAST)
        left = sorted(p.name for p in folder.iterdir())
    assert code == 2, (code, stderr)
    assert_disk_full_line(stderr)
    assert left == [filler.name]
    assert list(private_tmp.iterdir()) == []
    assert_untouched(snap)


def test_algorithm_writing_to_a_full_disk_fails_and_leaves_no_file(run_alg, scene, model, tmp_path):
    """Issue 11 item 3: never 'success' with an unreadable GeoPackage left behind."""
    with small_tmpfs(tmp_path / "full-out", "256k") as folder:
        filler = fill(folder)
        output = folder / "out.gpkg"
        params = {"INPUT": str(scene), "MODEL": str(model), "OUTPUT": str(output), **FAST_PARAMS}
        with pytest.raises(QgsProcessingException) as caught:
            run_alg("extract_footprints", params)
        left = sorted(p.name for p in folder.iterdir())
    message = str(caught.value)
    assert "\n" not in message and any(w in message.lower() for w in ("space", "full", "cannot write")), message
    assert left == [filler.name]
    assert scratch_folders() == [] and worker_children() == []


def run_cli_in(tmpdir: Path, *args, preexec_fn=None) -> tuple[int, str, str]:
    child = start_cli(*args, tmpdir=tmpdir, preexec_fn=preexec_fn)
    stdout, stderr = child.communicate(timeout=120)
    return child.returncode, stdout, stderr


# --- broken and hostile files ---------------------------------------------------------------

BROKEN_RASTERS = {
    "truncated": ("truncated_scene", "is not a readable raster"),
    "directory": ("raster_directory", "is a folder"),
}


@pytest.fixture
def raster_directory(tmp_path):
    folder = tmp_path / "scene.tif"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("case", sorted(BROKEN_RASTERS))
def test_cli_broken_raster_is_one_line_exit_2(request, case, model, tmp_path, private_tmp):
    fixture, expected = BROKEN_RASTERS[case]
    raster = request.getfixturevalue(fixture)
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([raster, model])
    code, _, stderr = run_cli_in(private_tmp, "extract", raster, output, "--model", model, *FAST)
    assert code == 2, (code, stderr)
    assert expected in one_error_line(stderr)
    assert list(private_tmp.iterdir()) == []
    assert_no_output(output)
    assert_untouched(snap)


@pytest.mark.parametrize("case", ["directory", "truncated"])
def test_algorithm_broken_raster_is_one_line(request, run_alg, case, model, tmp_path):
    fixture, _ = BROKEN_RASTERS[case]
    raster = request.getfixturevalue(fixture)
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([raster, model])
    with pytest.raises(QgsProcessingException) as caught:
        run_alg("extract_footprints", {"INPUT": str(raster), "MODEL": str(model), "OUTPUT": str(output),
                                       **FAST_PARAMS})
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "not found" not in message.lower(), message
    assert raster.name in message, message
    assert_no_output(output)
    assert scratch_folders() == [] and worker_children() == []
    assert_untouched(snap)


def test_cli_model_of_random_bytes_is_refused_without_unsafe_advice(scene, random_model, tmp_path, private_tmp):
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([scene, random_model])
    code, _, stderr = run_cli_in(private_tmp, "extract", scene, output, "--model", random_model, *FAST)
    assert code == 2
    line = one_error_line(stderr)
    assert "could not be read as a PyTorch checkpoint" in line and UNSAFE_ADVICE not in line
    assert_no_output(output)
    assert_untouched(snap)


def test_cli_malicious_pickle_is_refused_and_runs_nothing(scene, evil_model, tmp_path, private_tmp):
    model, marker = evil_model
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([scene, model])
    code, _, stderr = run_cli_in(private_tmp, "extract", scene, output, "--model", model, *FAST)
    assert code == 2
    line = one_error_line(stderr)
    assert "is not a plain weights file" in line and "nothing in it was run" in line and UNSAFE_ADVICE not in line
    assert not marker.exists()
    assert_no_output(output)
    assert_untouched(snap)


@pytest.mark.parametrize("case", ["random-bytes", "malicious-pickle"])
def test_algorithm_refuses_a_bad_model_file_in_one_line(request, run_alg, scene, tmp_path, case):
    if case == "random-bytes":
        model, marker, expected = request.getfixturevalue("random_model"), None, "could not be read as a PyTorch"
    else:
        (model, marker), expected = request.getfixturevalue("evil_model"), "is not a plain weights file"
    output = tmp_path / "out.gpkg"
    snap = take_snapshot([scene, model])
    with pytest.raises(QgsProcessingException, match=expected) as caught:
        run_alg("extract_footprints", {"INPUT": str(scene), "MODEL": str(model), "OUTPUT": str(output),
                                       **FAST_PARAMS})
    assert "\n" not in str(caught.value) and UNSAFE_ADVICE not in str(caught.value)
    assert marker is None or not marker.exists()
    assert_no_output(output)
    assert scratch_folders() == [] and worker_children() == []
    assert_untouched(snap)


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The plugin folder as `make install-plugin` lays it out, for scripts/qgis_process.sh."""
    return install_plugin(tmp_path_factory)


def test_qgis_process_refuses_a_malicious_pickle_and_leaves_no_profile(installed_plugins, scene, evil_model,
                                                                        tmp_path, private_tmp):
    model, marker = evil_model
    output = tmp_path / "out.gpkg"
    env = {key: value for key, value in cli_environ(private_tmp).items() if key != "PYTHONPATH"}
    completed = qgis_process(installed_plugins, "run", "sn6_footprints:extract_footprints", "--", f"INPUT={scene}",
                             f"MODEL={model}", f"OUTPUT={output}", "TILE_SIZE=64", "OVERLAP=0", env=env)
    assert completed.returncode != 0
    assert "is not a plain weights file" in completed.stdout + completed.stderr
    assert not marker.exists()
    assert_no_output(output)
    assert list(private_tmp.glob("sn6-qgis-home-*")) == []


# --- unreadable inputs (a child without root's privileges) ------------------------------------

@pytest.fixture
def nobody_tmp(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to start a child as 'nobody' (as an ordinary user chmod 000 alone does it)")
    folder = tmp_path / "nobody-tmp"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    for parent in [tmp_path, *tmp_path.parents]:  # pytest's tmp folders are 0700
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)
    if subprocess.run([sys.executable, "-c", "import sn6_footprints.core.extract"], cwd=REPO_ROOT,
                      env=cli_environ(folder), preexec_fn=as_nobody, capture_output=True,  # noqa: PLW1509
                      check=False).returncode != 0:
        pytest.skip("the checkout or its .venv is not readable by 'nobody'")
    return folder


@pytest.mark.parametrize("what", ["raster", "model"])
def test_unreadable_input_is_one_line_exit_2(scene, model, tmp_path, nobody_tmp, what):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    os.chown(out_dir, NOBODY, NOBODY)
    private_model = tmp_path / "model.pt"
    shutil.copy(model, private_model)
    target = scene if what == "raster" else private_model
    target.chmod(0)
    (scene if what == "model" else private_model).chmod(0o644)
    snap = take_snapshot([scene, private_model])
    code, _, stderr = run_cli_in(nobody_tmp, "extract", scene, out_dir / "out.gpkg", "--model", private_model,
                                 *FAST, preexec_fn=as_nobody)
    assert code == 2, (code, stderr)
    line = one_error_line(stderr)
    assert target.name in line and "ermission denied" in line, line
    assert list(nobody_tmp.iterdir()) == []
    assert list(out_dir.iterdir()) == []
    assert_untouched(snap)
