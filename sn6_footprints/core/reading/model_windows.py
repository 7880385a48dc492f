"""Windows of the model grid, read from the raster as the model expects them.

Each read is one window: the mapped bands in the plan's order, their validity (NaN/Inf, the
declared nodata value or 0 in every band: nodata), the values converted to the model's
scale, and, where the plan resamples, the covering window of the raster warped onto the
model grid with rasterio (GDAL's warper: average when coarsening, bilinear when refining,
nearest when only re-orienting). Averaging and interpolation happen on linear intensity,
where averaging speckle is physical; a plain re-orientation moves the values unchanged.
"""
from __future__ import annotations

import math

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from ..radiometry import convert, from_linear, to_linear
from .plan import InputPlan


def valid_pixels(raw: np.ndarray, nodata: float | None, zero_is_nodata: bool) -> np.ndarray:
    """(h, w) True where every band is finite and the pixel is not nodata in every band."""
    if np.iscomplexobj(raw):
        finite = np.isfinite(raw.real) & np.isfinite(raw.imag)
    else:
        finite = np.isfinite(raw)
    valid = finite.all(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(raw == nodata).all(axis=0)
    if zero_is_nodata:
        valid &= ~(raw == 0).all(axis=0)
    return valid


class ModelWindows:
    """Reads model-grid windows of an open rasterio dataset according to an :class:`InputPlan`."""

    def __init__(self, dataset, plan: InputPlan):
        self.dataset, self.plan = dataset, plan
        self.indexes = list(plan.bands.indexes)
        self._margin = 2 + (math.ceil(1 / plan.factor) if plan.resampling in ("average", "cubic") else 1)
        self._offset = (0, 0)
        if plan.reads_as_is:   # the raster's grid, or a part of it cut on whole pixels (a validation band)
            col, row = ~dataset.transform * (plan.grid.transform.c, plan.grid.transform.f)
            if max(abs(col - round(col)), abs(row - round(row))) > 1e-6:
                raise ValueError("a plan read as is needs a grid on the raster's own pixels")
            self._offset = (round(col), round(row))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (bands, h, w) on the model's scale with 0 where invalid, bool valid (h, w))."""
        if self.plan.reads_as_is:
            col, row = self._offset
            window = Window(window.col_off + col, window.row_off + row, window.width, window.height)
            raw = self.dataset.read(self.indexes, window=window)
            valid = valid_pixels(raw, self.plan.nodata, self.plan.zero_is_nodata)
            data = self._to_model(raw)
            valid &= np.isfinite(data).all(axis=0)   # values the conversion cannot map
        else:
            data = self._warped(window)
            valid = np.isfinite(data).all(axis=0)
        data[:, ~valid] = 0.0
        return data, valid

    def _to_model(self, raw: np.ndarray) -> np.ndarray:
        p = self.plan
        if p.source_scale == p.model_scale and p.gain == 1.0 and raw.dtype == np.float32:
            return raw
        return convert(raw, p.source_scale, p.model_scale, p.band_names, p.gain)

    def _source_window(self, window: Window) -> Window | None:
        """The raster window that covers a model-grid window, with a margin for the resampling kernel."""
        grid_to_raster = ~self.dataset.transform * self.plan.grid.transform
        corners = [grid_to_raster * (window.col_off + c, window.row_off + r)
                   for c, r in ((0, 0), (window.width, 0), (0, window.height), (window.width, window.height))]
        cols, rows = zip(*corners)
        m = self._margin
        c0, r0 = max(0, math.floor(min(cols)) - m), max(0, math.floor(min(rows)) - m)
        c1 = min(self.dataset.width, math.ceil(max(cols)) + m)
        r1 = min(self.dataset.height, math.ceil(max(rows)) + m)
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def _warped(self, window: Window) -> np.ndarray:
        p = self.plan
        out = np.full((len(self.indexes), int(window.height), int(window.width)), np.nan, np.float32)
        source = self._source_window(window)
        if source is None:
            return out
        raw = self.dataset.read(self.indexes, window=source)
        valid = valid_pixels(raw, p.nodata, p.zero_is_nodata)
        if p.resampling == "nearest":   # values move unchanged: convert first
            values = self._to_model(raw).astype(np.float32, copy=True)
        else:                           # average / interpolate intensities
            values = to_linear(raw, p.source_scale, p.band_names, p.gain)
        values[:, ~valid] = np.nan
        reproject(values, out, src_transform=self.dataset.window_transform(source), src_crs=self.dataset.crs,
                  dst_transform=p.grid.transform * Affine.translation(window.col_off, window.row_off),
                  dst_crs=self.dataset.crs, resampling=Resampling[p.resampling], src_nodata=np.nan,
                  dst_nodata=np.nan, num_threads=1)
        if p.resampling != "nearest":
            finite = np.isfinite(out).all(axis=0)
            out = from_linear(out, p.model_scale, p.band_names)
            out[:, ~finite] = np.nan
        return out
