"""Shared fixtures of the bad-input matrix (issue 11): real files, the real CLI in a real
subprocess, the real worker and real QGIS Processing.

- ``snapshot(paths)`` records the bytes and mtime of files (and the listing of folders);
  ``assert_untouched(snap)`` fails naming every one that changed, appeared or vanished.
- ``cli(*args, env=None, tmpdir=None, timeout=120)`` runs ``python -m sn6_footprints ...``
  and returns ``(code, stdout, stderr)``; ``run_cli_batch({id: argv}, folder)`` runs many
  argvs through the CLI's ``main`` in one child process (tables of refusals).
- ``run_alg(alg, params, feedback=None)`` is ``processing.run`` with the plugin loaded and
  its worker running in this checkout's environment (``plugin`` fixture of tests/qgis).
- ``scratch_folders()`` lists the worker's ``sn6-footprints-*`` folders under Processing's
  temporary folder; ``worker_children()`` the worker processes still running.
- ``model`` (the threshold model of tests/helpers/models.py), ``scene`` (a 128 x 128 px
  4-band scene with two bright boxes; a fresh copy per test) and ``truth`` (its two boxes
  as a polygon GeoPackage).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.models import TRANSFORM, boxes_scene, save_threshold_model, write_raster
from tests.helpers.processes import worker_children  # noqa: F401  (re-exported for the matrix)

REPO_ROOT = Path(__file__).resolve().parents[2]
BOXES = [(10, 10, 40, 40), (60, 70, 100, 120)]  # (row0, col0, row1, col1) in a 128 x 128 scene
SCENE_SIZE = 128
FAST = ["--tile-size", "64", "--overlap", "0"]  # CLI arguments for quick runs
FAST_PARAMS = {"TILE_SIZE": 64, "OVERLAP": 0}   # the same for processing.run


# --- inputs untouched -------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    files: dict  # path -> (bytes, mtime_ns) or None when absent; folders -> sorted listing


def take_snapshot(paths) -> Snapshot:
    files = {}
    for path in map(Path, paths):
        if path.is_dir():
            files[path] = ("dir", tuple(sorted(p.name for p in path.iterdir())))
        elif path.exists():
            files[path] = (path.read_bytes(), path.stat().st_mtime_ns)
        else:
            files[path] = None
    return Snapshot(files)


def assert_untouched(snap: Snapshot) -> None:
    """Every path of the snapshot has the same bytes and mtime (folders: the same entries)."""
    changed = [str(path) for path, before in snap.files.items() if take_snapshot([path]).files[path] != before]
    assert not changed, f"changed by the run: {changed}"


@pytest.fixture
def snapshot():
    """``snapshot(paths) -> Snapshot``; check it later with ``assert_untouched(snap)``."""
    return take_snapshot


# --- the CLI --------------------------------------------------------------------------

def cli_environ(tmpdir: str | os.PathLike | None = None, extra: dict | None = None) -> dict:
    """The CLI's environment: this checkout first on PYTHONPATH; TMPDIR/TEMP/TMP set when given."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if tmpdir is not None:
        env.update(TMPDIR=str(tmpdir), TEMP=str(tmpdir), TMP=str(tmpdir))
    env.update(extra or {})
    return env


def run_cli(*args, env: dict | None = None, tmpdir=None, timeout: float = 120, **popen) -> tuple[int, str, str]:
    """``python -m sn6_footprints <args>`` in a subprocess: ``(exit code, stdout, stderr)``."""
    completed = subprocess.run(  # a fixed interpreter, list arguments, no shell
        [sys.executable, "-m", "sn6_footprints", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True,
        env=cli_environ(tmpdir, env), timeout=timeout, stdin=subprocess.DEVNULL, check=False, **popen)
    return completed.returncode, completed.stdout, completed.stderr


# Runs many CLI invocations in one fresh interpreter: each is the real ``main(argv)`` with its
# own fds 1 and 2 (so output of C libraries is caught too) and fresh warning registries, as a
# process of its own would have; the interpreter's start and the imports happen once.
BATCH_CHILD = """
import contextlib, json, os, sys, warnings
from sn6_footprints.cli import main

cases = json.load(open(sys.argv[1]))
results = {}
for case_id, argv, out_path, err_path in cases:
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            with warnings.catch_warnings():
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
    results[case_id] = code
json.dump(results, open(sys.argv[2], "w"))
"""


def run_cli_batch(cases: dict, folder: Path, timeout: float = 600) -> dict:
    """``{id: argv}`` -> ``{id: (exit code, stdout, stderr)}``: every argv through the CLI's
    ``main`` in one child process (``folder`` keeps the captured streams)."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = [[case_id, [str(a) for a in argv], str(folder / f"{i}.out"), str(folder / f"{i}.err")]
               for i, (case_id, argv) in enumerate(cases.items())]
    (folder / "cases.json").write_text(json.dumps(listing))
    completed = subprocess.run(  # a fixed interpreter, list arguments, no shell
        [sys.executable, "-c", BATCH_CHILD, str(folder / "cases.json"), str(folder / "codes.json")], cwd=REPO_ROOT,
        capture_output=True, text=True, env=cli_environ(), timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    codes = json.loads((folder / "codes.json").read_text())
    return {case_id: (codes[case_id], Path(out).read_text(errors="replace"), Path(err).read_text(errors="replace"))
            for case_id, _argv, out, err in listing}


@pytest.fixture
def cli():
    """``cli(*args, env=None, tmpdir=None, timeout=120) -> (code, stdout, stderr)``."""
    return run_cli


# --- processing.run ---------------------------------------------------------------------

def scratch_folders() -> list[Path]:
    """The worker's private folders still under Processing's temporary folder."""
    from qgis.core import QgsProcessingUtils

    return sorted(Path(QgsProcessingUtils.tempFolder()).glob("sn6-footprints-*"))


@pytest.fixture
def run_alg(plugin, worker_env_for_every_test):  # fixtures of tests/qgis_fixtures.py
    """``run_alg(alg, params, feedback=None)``: ``processing.run`` of ``sn6_footprints:<alg>``
    (a bare name gets the provider prefix) with the plugin loaded."""
    import processing

    def run(alg: str, params: dict, feedback=None, context=None) -> dict:
        alg_id = alg if ":" in alg else f"sn6_footprints:{alg}"
        return processing.run(alg_id, dict(params), feedback=feedback, context=context)

    return run


# --- small inputs -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    """The threshold model: 'building' exactly where band 1 is bright; min area 1 m²."""
    return save_threshold_model(tmp_path_factory.mktemp("matrix-models") / "threshold.pt")


@pytest.fixture(scope="session")
def threshold_model_path(model) -> Path:
    return model


@pytest.fixture
def scene(tmp_path) -> Path:
    """128 x 128 px, 4 bands, 0.5 m pixels in EPSG:32631, two bright boxes (BOXES)."""
    return write_raster(tmp_path / "scene.tif", boxes_scene(SCENE_SIZE, SCENE_SIZE, BOXES))


def box_polygons(boxes=BOXES, transform=TRANSFORM):
    import shapely

    polygons = []
    for r0, c0, r1, c1 in boxes:
        corners = [transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
        polygons.append(shapely.Polygon(corners))
    return polygons


@pytest.fixture
def truth(tmp_path) -> Path:
    """The scene's boxes as a polygon GeoPackage in EPSG:32631 (layer 'truth')."""
    from sn6_footprints.core.vector_io import write_footprints

    path = tmp_path / "truth.gpkg"
    write_footprints(path, box_polygons(), {"id": list(range(1, len(BOXES) + 1))}, "EPSG:32631", layer_name="truth")
    return path
