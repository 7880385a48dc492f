"""Issue 12's measurements: the bundled model's F1 on held-out simulated scenes written on every
input scale, in every look direction, stored south-up, and at other pixel sizes; then what the
log says on the real crop.

    .venv/bin/python scripts/measure_real_sar.py [--scenes 8] [--size 512] [--only looks]

Held-out seeds 20100+ (core.heldout's default-north set: no model was trained or calibrated on
them); every group simulates the same worlds. Scales: the simulator's own products (tagged, as
a processor writes them) and the SN6 values converted without tags, so Auto decides from the
values; looks and pixel sizes are simulated natively over the same ground.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sn6_footprints.core.extract import ExtractionOptions, extract_footprints, score_extraction  # noqa: E402
from sn6_footprints.core.feedback import Feedback  # noqa: E402
from sn6_footprints.core.radiometry import convert, to_linear  # noqa: E402
from sn6_footprints.core.simulation import simulate_scene  # noqa: E402
from sn6_footprints.core.vector_io import read_footprints  # noqa: E402

SEED0 = 20100


class Log(Feedback):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    warning = info


def write_as(source: Path, target: Path, scale: str, south_up: bool = False) -> Path:
    with rasterio.open(source) as src:
        profile, data = dict(src.profile), src.read()
    nodata = (data == 0).all(axis=0)
    if scale == "complex":
        phase = np.random.default_rng(1).uniform(0, 2 * np.pi, data.shape)
        values = (np.sqrt(np.nan_to_num(to_linear(data, "sn6"))) * np.exp(1j * phase)).astype(np.complex64)
        profile.update(dtype="complex64", nodata=0)
    else:
        values = convert(data, "sn6", scale)
        values[:, nodata] = np.nan if scale == "db" else 0.0
        profile.update(nodata=float("nan") if scale == "db" else 0.0)
    if south_up:
        t = profile["transform"]
        values = values[:, ::-1]
        profile["transform"] = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * data.shape[1])
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(values)
        dst.update_tags(LOOK_DIRECTION="north")
    return target


MODEL = None  # --model: another checkpoint than the bundled one


def f1_of(rasters_and_truths, logged: str = "Input scale") -> tuple[float, str]:
    tp = fp = fn = 0
    log = Log()
    for raster, truth in rasters_and_truths:
        try:
            result = extract_footprints(raster, ExtractionOptions(model_path=MODEL), log)
        except ValueError as exc:
            return float("nan"), f"refused: {exc}"
        report = score_extraction(result, truth)
        tp, fp, fn = tp + report.tp, fp + report.fp, fn + report.fn
    return 2 * tp / max(1, 2 * tp + fp + fn), next((line for line in log.lines if logged in line), "")


def simulated(folder: Path, name: str, seeds, size: int, **parameters) -> list:
    """(raster, truth) per seed, written natively by the simulator (the same world per seed)."""
    scenes = []
    for seed in seeds:
        raster, labels = folder / f"{name}_{seed}.tif", folder / f"{name}_{seed}.gpkg"
        simulate_scene(raster, labels, width_px=size, height_px=size, seed=seed, **parameters)
        scenes.append((raster, read_footprints(labels).geometries))
    return scenes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--only", choices=("all", "scales", "looks", "pixels"), default="all",
                        help="measure one group only (default all)")
    parser.add_argument("--model", help="checkpoint to measure (default: the bundled model)")
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    seeds = range(SEED0, SEED0 + args.scenes)
    groups = ("scales", "looks", "pixels") if args.only == "all" else (args.only,)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scenes = simulated(folder, "north", seeds, args.size)
        if "scales" in groups:
            rows.append(("scale sn6",) + f1_of(scenes))
            for scale in ("db", "linear", "amplitude", "complex"):   # the simulator's own products, tagged
                rows.append((f"scale {scale}",) + f1_of(simulated(folder, scale, seeds, args.size, scale=scale)))
            for scale in ("db", "linear", "amplitude", "complex"):   # the same values untagged: Auto decides
                written = [(write_as(r, folder / f"{r.stem}_{scale}.tif", scale), t) for r, t in scenes]
                rows.append((f"untagged {scale}",) + f1_of(written))
            rows.append(("stored south-up",) + f1_of(simulated(folder, "south_up", seeds, args.size,
                                                                storage="south-up")))
        if "looks" in groups:
            for look in ("north", "south", "east", "west"):
                looked = scenes if look == "north" else simulated(folder, look, seeds, args.size, look_direction=look)
                rows.append((f"look {look}",) + f1_of(looked, "Look direction"))
        if "pixels" in groups:
            extent_m = args.size * 0.5
            for pixel in (0.35, 0.7, 1.0, 2.0):
                n = int(round(extent_m / pixel))
                sized = []
                for seed, (_, truth) in zip(seeds, scenes):
                    raster = folder / f"p{pixel}_{seed}.tif"
                    simulate_scene(raster, None, width_px=n, height_px=n, seed=seed, pixel_size_m=pixel)
                    sized.append((raster, truth))
                rows.append((f"pixel {pixel} m",) + f1_of(sized, "Pixels"))
    print(f"held-out seeds {SEED0}-{SEED0 + args.scenes - 1}, {args.size} px at 0.5 m, "
          f"{Path(args.model).name if args.model else 'bundled model'}, pooled F1")
    for name, f1, note in rows:
        print(f"{name:18s} F1 {f1:.3f}   {note[:150]}")
    crop = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "sn6" / "sar_masked.tif"
    if crop.exists():
        try:
            extract_footprints(crop, ExtractionOptions(), Log())
            print("real crop: ran")
        except ValueError as exc:
            print(f"real crop sar_masked.tif: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
