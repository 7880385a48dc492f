"""Where the tiles go and how their overlaps blend: plain geometry, no model, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from rasterio.windows import Window

from ...defaults import AUTO_TILE_PX, AUTO_TILE_RANGE_PX
from ..model import INPUT_MULTIPLE_PX


# With Auto, a batch holds as many pixels as batch_size tiles of 512 px: memory stays that of
# today's 512 px batches whatever tile is chosen.
BATCH_UNIT_PX = 512


@dataclass(frozen=True)
class TilingOptions:
    tile_size_px: int = AUTO_TILE_PX
    overlap_px: int = 64
    batch_size: int = 4

    @property
    def effective_overlap_px(self) -> int:
        """The overlap actually used: at most half a tile, so every tile still advances."""
        return min(self.overlap_px, self.tile_size_px // 2)

    @property
    def is_auto(self) -> bool:
        return self.tile_size_px == AUTO_TILE_PX

    def fitted(self, width: int, height: int) -> "TilingOptions":
        """Concrete options for a width x height grid: itself unless the tile size is Auto;
        then the tile (a multiple of 32 in AUTO_TILE_RANGE_PX) that computes the fewest
        pixels, the smallest on a tie, and the batch that holds batch_size 512 px tiles' pixels.
        A 512 px tile with 64 px overlap computes 2.25x a 1024 x 1024 scene's pixels and 1.56x
        a 2048 x 2048 one's; the fitted tiles 1x and 1.16x. No tile holds more pixels than the
        batch: a batch size of 1 keeps 512 px tiles (what a GPU short of memory needs)."""
        self.check()
        if not self.is_auto:
            return self
        smallest, largest = AUTO_TILE_RANGE_PX
        within_batch = int(BATCH_UNIT_PX * self.batch_size ** 0.5) // INPUT_MULTIPLE_PX * INPUT_MULTIPLE_PX
        largest = max(smallest, min(largest, within_batch))
        tile = min(range(smallest, largest + 1, INPUT_MULTIPLE_PX), key=lambda t: (self._computed(width, height, t), t))
        batch = max(1, round(self.batch_size * BATCH_UNIT_PX ** 2 / tile ** 2))
        return replace(self, tile_size_px=tile, batch_size=batch)

    def describe(self, width: int, height: int) -> str:
        """The tiles on a width x height grid, for the log (Auto says what it chose and why)."""
        fitted = self.fitted(width, height)
        tile, overlap = fitted.tile_size_px, fitted.effective_overlap_px
        text = f"tiles {tile} px, overlap {overlap} px, {fitted.batch_size} per batch"
        if self.is_auto:
            pixels = max(1, width * height)
            count = len(tile_starts(width, tile, overlap)) * len(tile_starts(height, tile, overlap))
            text += (f" (Auto: {count} tile{'s' * (count != 1)} computing "
                     f"{self._computed(width, height, tile) / pixels:.2f}x the grid's pixels")
            first = AUTO_TILE_RANGE_PX[0]
            if tile != first:
                text += f"; {first} px tiles: {self._computed(width, height, first) / pixels:.2f}x"
            text += ")"
        return text

    def _computed(self, width: int, height: int, tile: int) -> int:
        """Pixels computed on the grid with tiles of ``tile`` px and this overlap (at most half a tile)."""
        return computed_pixels(width, height, tile, replace(self, tile_size_px=tile).effective_overlap_px)

    def check(self) -> None:
        if not self.is_auto and (self.tile_size_px < INPUT_MULTIPLE_PX or self.tile_size_px % INPUT_MULTIPLE_PX):
            nearest = max(INPUT_MULTIPLE_PX, INPUT_MULTIPLE_PX * round(self.tile_size_px / INPUT_MULTIPLE_PX))
            raise ValueError(f"Tile size {self.tile_size_px} px must be a multiple of {INPUT_MULTIPLE_PX} "
                             f"(at least {INPUT_MULTIPLE_PX}), or 0 (Auto); use {nearest} (512 is the SN6 "
                             "baseline's).")
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


def computed_pixels(width: int, height: int, tile: int, overlap: int) -> int:
    """Pixels the model computes over a width x height grid with these tiles (edge tiles are
    cut to the grid)."""
    def along(length: int) -> int:
        return len(tile_starts(length, tile, overlap)) * min(tile, length)
    return along(width) * along(height)


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
