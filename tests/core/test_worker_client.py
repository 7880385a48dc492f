"""The worker process as QGIS's side drives it, without QGIS: the real CLI in a real
subprocess, its event stream, one-line errors, Cancel and a worker that dies."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from sn6_footprints.worker import protocol
from sn6_footprints.worker.client import WorkerCancelled, WorkerError, run_worker
from sn6_footprints.worker.environment import worker_environ
from tests.helpers.models import boxes_scene, save_threshold_model, write_raster
from tests.helpers.processes import worker_children

BOXES = [(10, 10, 40, 40), (60, 100, 90, 150)]


class Recorder:
    """Feedback that keeps everything and can cancel once progress passes a mark."""

    def __init__(self, cancel_at: float | None = None):
        self.progress, self.infos, self.warnings, self.debug_lines = [], [], [], []
        self.cancel_at, self.cancelled_at = cancel_at, None

    def set_progress(self, percent):
        self.progress.append(percent)
        if self.cancel_at is not None and percent >= self.cancel_at and self.cancelled_at is None:
            self.cancelled_at = time.monotonic()

    def info(self, message):
        self.infos.append(message)

    def warning(self, message):
        self.warnings.append(message)

    def debug(self, message):
        self.debug_lines.append(message)

    def is_cancelled(self):
        return self.cancelled_at is not None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_threshold_model(tmp_path_factory.mktemp("worker-models") / "threshold.pt")


def test_events_round_trip_and_stray_lines_are_not_events():
    line = protocol.encode("progress", percent=12.5)
    assert protocol.decode(line + "\n") == {"event": "progress", "percent": 12.5}
    assert protocol.decode("some library chatter") is None
    assert protocol.decode(protocol.PREFIX + "{not json") is None
    with pytest.raises(ValueError):
        protocol.encode("bogus")


def test_extraction_reports_progress_log_and_result(tmp_path, model):
    raster = write_raster(tmp_path / "scene.tif", boxes_scene(128, 192, BOXES))
    recorder = Recorder()
    result = run_worker(sys.executable, ["extract", raster, tmp_path / "out.gpkg", "--model", model,
                                         "--tile-size", "64", "--overlap", "0"],
                        recorder, tmp_path / "scratch", worker_environ())
    assert result["buildings"] == len(BOXES) and (tmp_path / "out.gpkg").is_file()
    assert len(recorder.progress) > 3 and recorder.progress == sorted(recorder.progress)
    assert recorder.progress[-1] == pytest.approx(100.0)
    assert any(line.startswith("Device: CPU") for line in recorder.infos)
    assert any(line.startswith("PyTorch ") for line in recorder.infos)


def test_a_refused_input_is_the_workers_one_line_message(tmp_path, model):
    raster = write_raster(tmp_path / "rgb.tif", boxes_scene(64, 64, BOXES[:1], bands=3))
    with pytest.raises(WorkerError, match=r"^rgb.tif has 3 band\(s\) but the model expects 4") as caught:
        run_worker(sys.executable, ["extract", raster, tmp_path / "o.gpkg", "--model", model],
                   Recorder(), tmp_path / "scratch", worker_environ())
    assert "\n" not in str(caught.value) and not isinstance(caught.value, WorkerCancelled)


def test_cancel_stops_the_worker_within_two_seconds_and_its_temp_files_go(tmp_path, model):
    raster = write_raster(tmp_path / "big.tif", boxes_scene(1024, 1024, BOXES))
    recorder = Recorder(cancel_at=1.0)
    scratch = tmp_path / "scratch"
    with pytest.raises(WorkerCancelled):
        run_worker(sys.executable, ["extract", raster, tmp_path / "o.gpkg", "--model", model, "--tile-size", "64",
                                    "--overlap", "0", "--batch-size", "1"], recorder, scratch, worker_environ())
    assert time.monotonic() - recorder.cancelled_at < 2.0
    assert not (tmp_path / "o.gpkg").exists()
    assert list((scratch / "tmp").iterdir()) == []  # SIGTERM: the worker removed its probability raster


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc (Linux)")
def test_a_worker_that_dies_is_a_clear_error(tmp_path, model):
    raster = write_raster(tmp_path / "big.tif", boxes_scene(1024, 1024, BOXES))

    def kill_when_started():
        for _ in range(200):
            pids = worker_children()
            if pids:
                time.sleep(0.5)
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    with pytest.raises(WorkerError, match=r"stopped unexpectedly \(exit code -9, killed by SIGKILL\)"):
        run_worker(sys.executable, ["extract", raster, tmp_path / "o.gpkg", "--model", model, "--tile-size", "64",
                                    "--overlap", "0", "--batch-size", "1"], Recorder(), tmp_path / "s",
                   worker_environ())
    killer.join()
    assert worker_children() == []


def test_a_missing_worker_python_is_named(tmp_path):
    with pytest.raises(WorkerError, match="does not exist"):
        run_worker(tmp_path / "no-such-env" / "bin" / "python", ["extract"], Recorder(), tmp_path, worker_environ())
