"""Soak (issue 11): 20 extractions in one QGIS process through processing.run. Memory (VmRSS)
grows by less than 20 MB after the first run (1 MB a run, the bound 50 runs had at 50 MB; each
run starts a worker, so 50 took two minutes of the suite); open file descriptors and the worker's
scratch folders are back to their starting count; no worker process is left."""
from __future__ import annotations

import os
import time
from pathlib import Path

import processing
import pytest
from qgis.core import QgsProcessingUtils, QgsVectorLayer

from tests.helpers.models import boxes_scene, write_raster
from tests.helpers.processes import worker_children

RUNS = 20
MAX_RSS_GROWTH_MB = 20.0
BOXES = [(4, 4, 20, 24), (36, 30, 60, 58)]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def scratch_count() -> int:
    return len(list(Path(QgsProcessingUtils.tempFolder()).glob("sn6-footprints-*")))


@pytest.fixture(scope="module")
def soak(plugin, threshold_model_path, tmp_path_factory) -> dict:
    """The runs, once for the module; the figures the tests below check."""
    folder = tmp_path_factory.mktemp("soak")
    scene = write_raster(folder / "scene.tif", boxes_scene(64, 64, BOXES))
    fds_before, scratch_before = open_fds(), scratch_count()
    rss, counts, started = [], [], time.monotonic()
    for run in range(RUNS):
        result = processing.run("sn6_footprints:extract_footprints", {
            "INPUT": str(scene), "MODEL": str(threshold_model_path), "OUTPUT": str(folder / f"out_{run}.gpkg"),
            "TILE_SIZE": 64, "OVERLAP": 0, "SIMPLIFY": 0})
        counts.append(result["BUILDING_COUNT"])
        rss.append(rss_mb())
    figures = {"rss_first_mb": rss[0], "rss_last_mb": rss[-1], "rss_peak_mb": max(rss), "fds_before": fds_before,
               "fds_after": open_fds(), "scratch_before": scratch_before, "scratch_after": scratch_count(),
               "workers_left": worker_children(), "seconds": time.monotonic() - started, "counts": counts,
               "last_output": folder / f"out_{RUNS - 1}.gpkg"}
    figures["text"] = (f"RSS after run 1 {rss[0]:.1f} MB, after run {RUNS} {rss[-1]:.1f} MB (growth "
                       f"{rss[-1] - rss[0]:+.1f} MB, peak {max(rss):.1f} MB); fds {fds_before} -> "
                       f"{figures['fds_after']}; scratch folders {scratch_before} -> {figures['scratch_after']}; "
                       f"{figures['seconds']:.1f} s for {RUNS} runs")
    print(figures["text"])
    return figures


def test_every_run_gives_the_same_complete_result(soak):
    assert soak["counts"] == [len(BOXES)] * RUNS
    layer = QgsVectorLayer(str(soak["last_output"]), "last", "ogr")
    assert layer.isValid() and layer.featureCount() == len(BOXES)


def test_memory_grows_less_than_20_mb_after_the_first_run(soak):
    assert soak["rss_last_mb"] - soak["rss_first_mb"] < MAX_RSS_GROWTH_MB, soak["text"]


def test_scratch_folders_and_workers_are_back_to_the_start(soak):
    assert soak["scratch_after"] == soak["scratch_before"], soak["text"]
    assert soak["workers_left"] == [], soak["text"]


def test_open_file_descriptors_are_back_to_the_start(soak):
    assert soak["fds_after"] <= soak["fds_before"], soak["text"]
