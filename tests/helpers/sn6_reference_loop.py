"""An independent, deliberately plain SpaceNet 6 baseline inference (REFERENCE.md §3).

Written from REFERENCE.md alone, sharing no code with the engine (``core.engine``,
``core.vectorize``, ``core.extract``), so tests and the benchmark can hold the engine and
its ``sn6-exact`` preset against it. Simple over fast: the whole raster in RAM, float64
stitching, one batch per SN6 tile's worth of windows, no prefetch.
"""
from __future__ import annotations

import time

import numpy as np
import rasterio
import shapely
import torch
from rasterio.features import shapes
from scipy import ndimage
from shapely.affinity import affine_transform
from shapely.geometry import shape

SN6_MEAN = 127.5          # albumentations Normalize(mean=0.5, std=0.125, max_pixel_value=255)
SN6_STD = 31.875
SN6_WINDOW_PX = 512
SN6_TILE_PX = 900         # an SN6 tile: its windows went through the model in one batch
MIN_BLOB_PX = 80
SIMPLIFY_PX = 0.5
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _add(timings: dict | None, key: str, started: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started


def window_corners(length: int, tile: int = SN6_WINDOW_PX) -> list[int]:
    """Window origins along one axis: stepped by ``tile``, the last snapped to the edge."""
    if length < tile:
        raise ValueError(f"The image is {length} px along an axis, smaller than the {tile} px window.")
    corners = list(range(0, length - tile + 1, tile))
    if corners[-1] + tile < length:
        corners.append(length - tile)
    return corners


def reference_sn6_logits(image: np.ndarray, model: torch.nn.Module, mean=SN6_MEAN, std=SN6_STD,
                         rotate_180: bool = False, tile: int = SN6_WINDOW_PX, timings: dict | None = None,
                         device: str = "cpu") -> np.ndarray:
    """The (H, W) float64 mean logit of every pixel of a (bands, H, W) raw image."""
    started = time.perf_counter()
    image = np.asarray(image, dtype=np.float32)
    if rotate_180:
        image = np.rot90(image, 2, axes=(1, 2))
    mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, np.float32).reshape(-1, 1, 1)
    normalised = np.ascontiguousarray((image - mean) / std, dtype=np.float32)
    _, height, width = normalised.shape
    windows = [(r, c) for r in window_corners(height, tile) for c in window_corners(width, tile)]
    _add(timings, "read", started)

    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.float64)
    per_batch = len(window_corners(max(SN6_TILE_PX, tile), tile)) ** 2
    model = model.to(device).float().eval()
    for first in range(0, len(windows), per_batch):
        batch_windows = windows[first:first + per_batch]
        started = time.perf_counter()
        batch = torch.from_numpy(np.stack([normalised[:, r:r + tile, c:c + tile] for r, c in batch_windows]))
        with torch.inference_mode():
            logits = model(batch.to(device))[:, 0].float().cpu().numpy()
        _add(timings, "model", started)
        started = time.perf_counter()
        for (r, c), window_logits in zip(batch_windows, logits):
            total[r:r + tile, c:c + tile] += window_logits
            count[r:r + tile, c:c + tile] += 1.0
        _add(timings, "stitch", started)
    started = time.perf_counter()
    mean_logits = total / count
    if rotate_180:
        mean_logits = np.ascontiguousarray(np.rot90(mean_logits, 2))
    _add(timings, "stitch", started)
    return mean_logits


def reference_sn6_polygons(logits: np.ndarray, min_blob_px: int = MIN_BLOB_PX,
                           simplify_px: float = SIMPLIFY_PX) -> list[shapely.Polygon]:
    """Building polygons in pixel coordinates (x = column, y = row, pixel corners)."""
    mask = np.asarray(logits) > 0
    labels, _ = ndimage.label(mask, structure=FOUR_CONNECTED)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_blob_px
    keep[0] = False
    mask = keep[labels]
    polygons: list[shapely.Polygon] = []
    for geometry, _ in shapes(mask.astype(np.uint8), mask=mask, connectivity=4):
        repaired = shape(geometry).buffer(0).simplify(simplify_px, preserve_topology=True)
        polygons += [p for p in getattr(repaired, "geoms", [repaired]) if not p.is_empty]
    return polygons


def reference_sn6_raster(raster_path, model: torch.nn.Module, mean=SN6_MEAN, std=SN6_STD,
                         rotate_180: bool = False, timings: dict | None = None,
                         device: str = "cpu") -> list[shapely.Polygon]:
    """The baseline's polygons for a whole raster, in the raster's CRS."""
    started = time.perf_counter()
    with rasterio.open(raster_path) as dataset:
        image = dataset.read(out_dtype="float32")
        t = dataset.transform
    _add(timings, "read", started)
    logits = reference_sn6_logits(image, model, mean, std, rotate_180, timings=timings, device=device)
    started = time.perf_counter()
    matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
    polygons = [affine_transform(p, matrix) for p in reference_sn6_polygons(logits)]
    _add(timings, "vectorize", started)
    return polygons
