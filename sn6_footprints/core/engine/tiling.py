"""Where the tiles go and how their overlaps blend: plain geometry, no model, no I/O."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rasterio.windows import Window

from ..model import INPUT_MULTIPLE_PX


@dataclass(frozen=True)
class TilingOptions:
    tile_size_px: int = 512
    overlap_px: int = 64
    batch_size: int = 4

    @property
    def effective_overlap_px(self) -> int:
        """The overlap actually used: at most half a tile, so every tile still advances."""
        return min(self.overlap_px, self.tile_size_px // 2)

    def check(self) -> None:
        if self.tile_size_px < INPUT_MULTIPLE_PX or self.tile_size_px % INPUT_MULTIPLE_PX:
            nearest = max(INPUT_MULTIPLE_PX, INPUT_MULTIPLE_PX * round(self.tile_size_px / INPUT_MULTIPLE_PX))
            raise ValueError(f"Tile size {self.tile_size_px} px must be a multiple of {INPUT_MULTIPLE_PX} "
                             f"(at least {INPUT_MULTIPLE_PX}); use {nearest} (512 is the SN6 baseline's).")
        if self.overlap_px < 0:
            raise ValueError(f"Overlap {self.overlap_px} px must be 0 or more.")
        if self.batch_size < 1:
            raise ValueError("Batch size must be at least 1.")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: steps of ``tile - overlap``, the last snapped to the edge."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def plan_tile_rows(width: int, height: int, tile: int, overlap: int) -> list[list[Window]]:
    """Tiles grouped by row, top to bottom; edge tiles are cut to the raster."""
    rows = []
    for row in tile_starts(height, tile, overlap):
        rows.append([Window(col, row, min(tile, width - col), min(tile, height - row))
                     for col in tile_starts(width, tile, overlap)])
    return rows


@lru_cache(maxsize=16)
def blend_weights(height: int, width: int, overlap_px: int) -> np.ndarray:
    """A tile's blending weight: 1 inside, ramping down over the overlap towards its border
    (never 0, so raster borders covered by one tile still count). Every tile of a raster has
    one of a few shapes, so each is computed once; the array is read-only."""
    ramp_len = max(1, overlap_px)

    def axis(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
        return np.clip(distance / ramp_len, 1e-3, 1.0).astype(np.float32)

    weights = np.outer(axis(height), axis(width))
    weights.flags.writeable = False
    return weights
