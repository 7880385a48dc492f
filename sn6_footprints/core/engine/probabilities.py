"""Rows of tiles -> the blended probability of every pixel, written to a GeoTIFF.

Tiles overlap and their probabilities are blended with a weight that falls towards the tile
border, so no seam shows. Rows of tiles stream through a buffer a little taller than one tile;
finished rows go to a float32 probability GeoTIFF, so memory follows the tile size and the
raster's width, never its height.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from contextlib import contextmanager

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ...output_safety import OutputWriteError, write_error_message
from ..feedback import Feedback
from ..reading.ground import ModelGrid
from ..reading.model_windows import ModelWindows
from ..reading.plan import InputPlan
from ..settings import ModelSettings
from .predictor import Predictor, normalise, pad_to_multiple
from .tiling import TilingOptions, blend_weights, plan_tile_rows

try:
    import resource
except ImportError:  # Windows
    resource = None


def _predict_row(reader: ModelWindows, windows: list[Window], predictor: Predictor,
                 settings: ModelSettings, options: TilingOptions, feedback: Feedback, skipped: list[int]):
    """Yield (window, probabilities, valid) for one row of tiles, batch by batch. A tile without a
    single valid pixel (a nodata swath, a mosaic's empty corner) is not run: its pixels are
    nodata in every tile that covers them, so its probability (0) cannot change the output;
    ``skipped`` counts them."""
    for start in range(0, len(windows), options.batch_size):
        feedback.check_cancelled()
        chunk = windows[start:start + options.batch_size]
        tiles, valids = [], []
        for window in chunk:
            data, valid = reader.read(window)
            tiles.append(pad_to_multiple(normalise(data, settings)) if valid.any() else None)
            valids.append(valid)
        run = [t for t in tiles if t is not None]
        skipped[0] += len(tiles) - len(run)
        if not run:
            probabilities = []
        elif any(t.shape != run[0].shape for t in run):  # edge tiles of other sizes: one by one
            probabilities = [predictor(t[None])[0] for t in run]
        else:
            probabilities = list(predictor(np.stack(run)))
        results = iter(probabilities)
        for window, tile, valid in zip(chunk, tiles, valids):
            p = next(results) if tile is not None else np.zeros((window.height, window.width), np.float32)
            yield window, p[:window.height, :window.width], valid


class ProbabilityWriteError(OutputWriteError):
    """The probability raster could not be written completely (disk full, file size limit, ...);
    ``code`` is the errno when known, ``detail`` GDAL's own words."""

    def __init__(self, message: str, path, code: int | None, detail: str):
        super().__init__(message)
        self.path, self.code, self.detail = path, code, detail


_GDAL_LOGGER = "rasterio._env"  # rasterio logs GDAL's errors here, failed writes at close at INFO only


class _GdalErrors(logging.Filter):
    """Collects GDAL's errors that rasterio logs instead of raising (a GeoTIFF's blocks and
    directory are written at close, and GDAL 3.6's close reports no status); what the
    logger would not have shown before stays hidden."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []
        self._shown_from = logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR or "signalled an error" in message:
            self.messages.append(message)
        return record.levelno >= self._shown_from

    @contextmanager
    def watching(self):
        logger = logging.getLogger(_GDAL_LOGGER)
        self._shown_from = logger.getEffectiveLevel()
        previous = logger.level
        logger.addFilter(self)
        if self._shown_from > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            yield self
        finally:
            logger.removeFilter(self)
            logger.setLevel(previous)


def _write_failure(path, detail: str) -> ProbabilityWriteError:
    lowered = detail.lower()
    code = None
    if "no space left" in lowered or "disk full" in lowered or "disk is full" in lowered:
        code = errno.ENOSPC
    elif "file too large" in lowered or "file size limit" in lowered:
        code = errno.EFBIG
    elif "permission denied" in lowered or "read-only file system" in lowered:
        code = errno.EACCES
    else:
        code = _likely_errno(path)
    return ProbabilityWriteError(write_error_message(path, detail, code), path, code, detail)


def _likely_errno(path) -> int | None:
    """When GDAL's words name no cause: a nearly full disk or a file at this process's size limit."""
    try:
        if shutil.disk_usage(os.path.dirname(os.fspath(path)) or ".").free < (1 << 20):
            return errno.ENOSPC
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else -1
        if soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)) and os.path.getsize(path) >= soft - (1 << 16):
            return errno.EFBIG
    except OSError:
        pass
    return None


FLOAT32_NODATA = -1.0  # outside 0-1, so no probability reads as nodata; finite, so every tool compares it
UINT8_NODATA = 255     # 0-254 hold round(p * 254): 1.0 is 254 exactly and the default 0.5 threshold is 127


def encode_probability(blended: np.ndarray, valid: np.ndarray, fmt: str) -> np.ndarray:
    """The delivered probability raster's values: float32 0-1 with -1 as nodata, or uint8
    round(p * 254) with 255 as nodata (254 steps keep 255 free and put 0.5 on a whole value)."""
    if fmt == "uint8":
        return np.where(valid, np.rint(np.clip(blended, 0, 1) * 254), UINT8_NODATA).astype(np.uint8)
    return np.where(valid, blended, FLOAT32_NODATA).astype(np.float32)


def _delivered_profile(profile: dict, fmt: str) -> dict:
    if fmt == "uint8":
        return {**profile, "dtype": "uint8", "nodata": UINT8_NODATA, "predictor": 2}
    return {**profile, "nodata": FLOAT32_NODATA}


def _write_checked(dataset, path, rows: np.ndarray, window: Window, errors: _GdalErrors) -> None:
    """Write rows of one band, raising :class:`ProbabilityWriteError` on any error GDAL reports."""
    try:
        with errors.watching():
            dataset.write(rows[None], window=window)
    except Exception as exc:  # noqa: BLE001 - rasterio's CPLE_* errors are plain Exceptions
        raise _write_failure(path, " ".join(errors.messages + [str(exc)])) from exc
    if errors.messages:
        raise _write_failure(path, " ".join(errors.messages))


def predict_probabilities(raster_path, probability_path, predictor: Predictor, settings: ModelSettings,
                          plan: InputPlan, options: TilingOptions | None = None,
                          feedback: Feedback | None = None, deliver_path=None,
                          deliver_format: str = "float32") -> ModelGrid:
    """Write the blended building probability of every pixel of the plan's model grid (0 on
    nodata) to a GeoTIFF; with ``deliver_path``, the same rows also go to the user's probability
    raster (:func:`encode_probability`: nodata stays nodata), so it costs no second pass.

    The write is checked: an error of any block or of the file's directory (disk full, file
    size limit), even one GDAL only logs when the file is closed, raises
    :class:`ProbabilityWriteError`, and the written file must open again."""
    feedback = feedback or Feedback()
    options = options or TilingOptions()
    options.check()
    errors = _GdalErrors()
    with rasterio.open(raster_path) as dataset:
        grid = plan.grid
        reader = ModelWindows(dataset, plan)
        rows = plan_tile_rows(grid.width, grid.height, options.tile_size_px, options.effective_overlap_px)
        total_tiles = sum(len(r) for r in rows)
        skipped = [0]
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                       transform=grid.transform, crs=dataset.crs, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", predictor=3, BIGTIFF="IF_SAFER")
        done = 0
        try:
            with errors.watching():
                out = rasterio.open(probability_path, "w", **profile)
        except (RasterioError, OSError) as exc:
            raise _write_failure(probability_path, " ".join(errors.messages + [str(exc)])) from exc
        delivered = None
        completed = False
        try:
            if deliver_path is not None:
                try:
                    with errors.watching():
                        delivered = rasterio.open(deliver_path, "w", **_delivered_profile(profile, deliver_format))
                except (RasterioError, OSError) as exc:
                    raise _write_failure(deliver_path, " ".join(errors.messages + [str(exc)])) from exc
            buffer_top = 0
            weighted = np.zeros((0, grid.width), np.float32)
            weights = np.zeros((0, grid.width), np.float32)
            valid_any = np.zeros((0, grid.width), bool)
            for index, row in enumerate(rows):
                row_bottom = row[0].row_off + row[0].height
                grow = row_bottom - buffer_top - weighted.shape[0]
                if grow > 0:
                    weighted = np.vstack([weighted, np.zeros((grow, grid.width), np.float32)])
                    weights = np.vstack([weights, np.zeros((grow, grid.width), np.float32)])
                    valid_any = np.vstack([valid_any, np.zeros((grow, grid.width), bool)])
                for window, probability, valid in _predict_row(reader, row, predictor, settings, options,
                                                               feedback, skipped):
                    w = blend_weights(window.height, window.width, options.effective_overlap_px)
                    rs = slice(window.row_off - buffer_top, window.row_off - buffer_top + window.height)
                    cs = slice(window.col_off, window.col_off + window.width)
                    weighted[rs, cs] += w * probability
                    weights[rs, cs] += w
                    valid_any[rs, cs] |= valid
                    done += 1
                    feedback.set_progress(100.0 * done / total_tiles)
                final_bottom = rows[index + 1][0].row_off if index + 1 < len(rows) else grid.height
                n = final_bottom - buffer_top
                blended = np.where(valid_any[:n], weighted[:n] / np.maximum(weights[:n], 1e-12), 0.0)
                rows_window = Window(0, buffer_top, grid.width, n)
                _write_checked(out, probability_path, blended.astype(np.float32), rows_window, errors)
                if delivered is not None:
                    _write_checked(delivered, deliver_path, encode_probability(blended, valid_any[:n], deliver_format),
                                   rows_window, errors)
                weighted, weights, valid_any = weighted[n:], weights[n:], valid_any[n:]
                buffer_top = final_bottom
            completed = True
        finally:
            with errors.watching():
                try:
                    out.close()  # blocks still cached and the TIFF directory are written here
                except Exception as exc:  # noqa: BLE001 - reported below, unless another error is on its way
                    errors.messages.append(str(exc))
            delivered_errors = _GdalErrors()
            if delivered is not None:
                with delivered_errors.watching():
                    try:
                        delivered.close()
                    except Exception as exc:  # noqa: BLE001 - reported below
                        delivered_errors.messages.append(str(exc))
        if completed and errors.messages:
            raise _write_failure(probability_path, " ".join(errors.messages))
        if completed and delivered_errors.messages:
            raise _write_failure(deliver_path, " ".join(delivered_errors.messages))
    if skipped[0]:
        feedback.info(f"{skipped[0]} of {total_tiles} tiles hold no valid pixel: skipped without running the model.")
    _check_readable(probability_path, grid)
    if deliver_path is not None:
        _check_readable(deliver_path, grid)
    return grid


def _check_readable(probability_path, grid: ModelGrid) -> None:
    """The written probability raster opens again with the expected size (its directory is whole)."""
    errors = _GdalErrors()
    try:
        with errors.watching(), rasterio.open(probability_path) as check:
            shape = (check.width, check.height, check.count)
    except (RasterioError, OSError) as exc:
        raise _write_failure(probability_path, " ".join(errors.messages + [str(exc)])) from exc
    if shape != (grid.width, grid.height, 1):
        raise _write_failure(probability_path, f"the written raster is {shape[0]} x {shape[1]} px, "
                                               f"not {grid.width} x {grid.height}")
