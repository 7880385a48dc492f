"""Benchmark: what the worker process costs. The demo extraction (1024 px, seed 424242, the
bundled model) through Processing, which starts a worker for every run, against the same core
call made in-process (the baseline; what the plugin did before it had a worker), in one run.

Why: the worker keeps torch out of QGIS's process, at the price of a Python start, imports and
a model load per run, plus writing the footprints to a file and reading them back into the
sink. Prints every run's wall time, the first (cold) and the best later worker run, the best
in-process run and the difference.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_worker_overhead.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, "/usr/share/qgis/python/plugins")


def _simulate(folder: Path) -> tuple[Path, Path]:
    scene, truth = folder / "demo_scene.tif", folder / "demo_truth.gpkg"
    subprocess.run([sys.executable, "-m", "sn6_footprints", "simulate", str(scene), str(truth), "--size", "1024",
                    "--seed", "424242", "--quiet"], cwd=REPO, check=True)
    return scene, truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant after the first (default 3)")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing
    from processing.core.ProcessingConfig import ProcessingConfig

    Processing.initialize()
    import processing

    import sn6_footprints
    from sn6_footprints.processing_provider.settings import WORKER_ENV

    plugin = sn6_footprints.classFactory(None)
    plugin.initProcessing()
    ProcessingConfig.setSettingValue(WORKER_ENV, sys.prefix)

    with tempfile.TemporaryDirectory(prefix="sn6-bench-") as tmp:
        scene, truth = _simulate(Path(tmp))

        def through_worker(i: int) -> float:
            started = time.perf_counter()
            result = processing.run("sn6_footprints:extract_footprints", {
                "INPUT": str(scene), "GROUND_TRUTH": str(truth), "OUTPUT": str(Path(tmp) / f"worker{i}.gpkg")})
            seconds = time.perf_counter() - started
            print(f"  worker run {i}: {seconds:.2f} s, {result['BUILDING_COUNT']} buildings, F1 {result['F1']:.3f}")
            return seconds

        def in_process(i: int) -> float:
            from sn6_footprints.core.extract import ExtractionOptions, extract_footprints, score_extraction
            from sn6_footprints.core.vector_io import read_footprints, write_footprints

            started = time.perf_counter()
            result = extract_footprints(str(scene), ExtractionOptions())
            write_footprints(Path(tmp) / f"inproc{i}.gpkg", result.geometries, result.attributes, result.crs_wkt)
            report = score_extraction(result, read_footprints(truth, target_crs=result.crs_wkt).geometries)
            seconds = time.perf_counter() - started
            print(f"  in-process run {i}: {seconds:.2f} s, {len(result)} buildings, F1 {report.f1:.3f}")
            return seconds

        print(f"CPU: {_cpu_name()}; demo scene 1024 x 1024 px, bundled model, flip averaging")
        first_worker = through_worker(0)  # first: torch and the model read from disk by a new process
        first_in_process = in_process(0)  # first: imports torch into this process
        worker, inproc = [], []
        for i in range(1, args.repeats + 1):  # alternated, so drifting machine load hits both
            worker.append(through_worker(i))
            inproc.append(in_process(i))
    best_worker, best_inproc = min(worker), min(inproc)
    print(f"first run: worker {first_worker:.2f} s, in-process {first_in_process:.2f} s (incl. importing torch)")
    print(f"later runs (best of {args.repeats}): worker {best_worker:.2f} s, in-process {best_inproc:.2f} s, "
          f"worker overhead {best_worker - best_inproc:+.2f} s ({best_worker / best_inproc:.2f}x)")
    app.exitQgis()
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
