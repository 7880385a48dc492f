"""Reading a raster window by window: the plan of tiles and what each tile holds.

Never the whole raster: every read is one window, so memory follows the tile size, not
the scene size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window


class RasterError(ValueError):
    """A raster that cannot be processed; the message names the problem and the fix."""


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know of an input raster."""

    width: int
    height: int
    bands: int
    transform: "rasterio.Affine"
    crs_wkt: str | None
    nodata: float | None
    is_geographic: bool

    @classmethod
    def of(cls, dataset) -> "RasterInfo":
        crs = dataset.crs
        return cls(dataset.width, dataset.height, dataset.count, dataset.transform,
                   crs.to_wkt() if crs else None, dataset.nodata,
                   bool(crs and crs.is_geographic))

    @property
    def pixel_area_map_units(self) -> float:
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)

    @property
    def pixel_size_map_units(self) -> float:
        """The side of a square pixel of the same area (for tolerances given in map units)."""
        return math.sqrt(self.pixel_area_map_units)

    @property
    def pixel_size_m(self) -> float:
        """The side of a square ground pixel of the same area."""
        return math.sqrt(self.pixel_area_m2)

    @property
    def pixel_area_m2(self) -> float:
        """Ground area of one pixel; geographic CRSs are converted at the scene's centre."""
        if not self.is_geographic:
            return self.pixel_area_map_units
        lat = (self.transform * (self.width / 2, self.height / 2))[1]
        metres_per_degree = 111_320.0
        return self.pixel_area_map_units * metres_per_degree ** 2 * math.cos(math.radians(lat))


def read_window(dataset, window: Window, nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 array of shape (bands, h, w), boolean valid mask (h, w)).

    A pixel is invalid when any band is NaN/inf or every band equals the nodata value
    (SN6 marks nodata with 0 in all bands)."""
    data = dataset.read(window=window, out_dtype="float32")
    valid = np.isfinite(data).all(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(data == np.float32(nodata)).all(axis=0)
    data[:, ~valid] = 0.0
    return data, valid


LOOK_DIRECTION_TAG = "LOOK_DIRECTION"


def look_preserving_flip_axis(look_direction: str) -> int:
    """The array axis a SAR image may be flipped along without moving layover and shadow to the
    wrong side: columns (-1) for north/south-looking scenes, rows (-2) for east/west-looking."""
    return -1 if look_direction in ("north", "south") else -2

