#!/usr/bin/env python3
"""Quick-look PNGs of simulated scenes: the SAR beside the same SAR with its footprints.

    .venv/bin/python scripts/quicklook_scenes.py [OUT_DIR] [--size 640]

Writes ``sim_north.png``, ``sim_south.png`` and ``sim_dense.png`` (default into docs/images/).
Left panel: false colour R = HH, G = HV, B = VV; right: HH in grey with the true footprints in
yellow. Images are 2 x 2 block-averaged in linear intensity (1 m pixels) and palette-quantised
so that all three stay small. PIL only (matplotlib is not required).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sn6_footprints.core.simulation import db_from_sn6, linear_from_db, simulate_scene  # noqa: E402
from sn6_footprints.core.vector_io import read_footprints  # noqa: E402

SCENES = {
    "sim_north": dict(seed=29, look_direction="north", layout="mixed"),
    "sim_south": dict(seed=29, look_direction="south", layout="mixed"),
    "sim_dense": dict(seed=11, look_direction="north", layout="dense"),
}
# Display ranges in dB per shown band (HH, HV, VV), close to the real crop's 1st-99th percentiles.
STRETCH_DB = {0: (-20.0, 5.0), 1: (-21.0, -3.0), 3: (-20.0, 5.0)}


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[-2] // f) * f, (a.shape[-1] // f) * f
    a = a[..., :h, :w]
    return a.reshape(a.shape[:-2] + (h // f, f, w // f, f)).mean(axis=(-3, -1))


def _stretch(db: np.ndarray, band: int) -> np.ndarray:
    lo, hi = STRETCH_DB[band]
    return (np.clip((np.nan_to_num(db, nan=lo) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def render_png(raster: Path, labels: Path, out_png: Path, factor: int = 2) -> None:
    import rasterio
    from PIL import Image, ImageDraw

    with rasterio.open(raster) as src:
        values = src.read()
        transform = src.transform
    lin = linear_from_db(db_from_sn6(values))       # nodata -> NaN
    lin = _block_mean(np.nan_to_num(lin, nan=0.0), factor)
    with np.errstate(divide="ignore"):
        db = np.where(lin > 0, 10 * np.log10(np.maximum(lin, 1e-12)), np.nan)
    rgb = np.dstack([_stretch(db[b], b) for b in (0, 1, 3)])
    grey = _stretch(db[0], 0)
    h, w = grey.shape
    left = Image.fromarray(rgb, "RGB")
    right = Image.fromarray(np.dstack([grey] * 3), "RGB")
    draw = ImageDraw.Draw(right)
    inverse = ~transform
    for geom in read_footprints(labels).geometries:
        for ring in [geom.exterior, *geom.interiors]:
            pts = [tuple(v / factor for v in inverse * xy) for xy in ring.coords]
            draw.line(pts, fill=(255, 220, 0), width=1)
    canvas = Image.new("RGB", (2 * w + 6, h), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (w + 6, 0))
    canvas = canvas.quantize(colors=48, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    canvas.save(out_png, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--size", type=int, default=640, help="scene size in px (default 640)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in SCENES.items():
            raster, labels = Path(tmp) / f"{name}.tif", Path(tmp) / f"{name}.gpkg"
            info = simulate_scene(raster, labels, width_px=args.size, height_px=args.size, **kwargs)
            render_png(raster, labels, out_dir / f"{name}.png")
            print(f"{out_dir / (name + '.png')}: {info.building_count} buildings, {kwargs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
