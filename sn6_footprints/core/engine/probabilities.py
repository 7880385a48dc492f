"""Blended probabilities -> GeoTIFFs, written row block by row block and checked.

The engine (:mod:`.stream`) hands on finished rows of the blended probability; a
:class:`ProbabilityRaster` writes them as they come, so memory follows the raster's width,
never its height, and a failed write (disk full, file size limit) is an error, never a
silently truncated file.
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
from ..reading.plan import InputPlan
from ..settings import ModelSettings
from .predictor import Predictor
from .stream import EngineStats, run_engine
from .tiling import TilingOptions

try:
    import resource
except ImportError:  # Windows
    resource = None


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


BLOCK_PX = 256


def _profile(grid: ModelGrid, crs) -> dict:
    return dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                transform=grid.transform, crs=crs, tiled=True, blockxsize=BLOCK_PX, blockysize=BLOCK_PX,
                compress="deflate", predictor=3, BIGTIFF="IF_SAFER")


class ProbabilityRaster:
    """A probability GeoTIFF written block of rows by block of rows, every GDAL error checked:
    an error of any block or of the file's directory (disk full, file size limit), even one GDAL
    only logs when the file is closed, raises :class:`ProbabilityWriteError`, and the closed
    file must open again with the grid's size. ``fmt``: ``float32``/``uint8`` as delivered to
    the user (:func:`encode_probability`), or ``None`` for the bare blend (0 on nodata)."""

    def __init__(self, path, grid: ModelGrid, crs, fmt: str | None = None):
        self.path, self.grid, self.fmt = path, grid, fmt
        self.errors = _GdalErrors()
        self._pending: np.ndarray | None = None   # rows of a row of blocks not yet complete
        self._pending_top: int | None = None
        profile = _profile(grid, crs)
        if fmt is not None:
            profile = _delivered_profile(profile, fmt)
        try:
            with self.errors.watching():
                self.dataset = rasterio.open(path, "w", **profile)
        except (RasterioError, OSError) as exc:
            raise _write_failure(path, " ".join(self.errors.messages + [str(exc)])) from exc

    def write(self, rows) -> None:
        """Write one :class:`~.stream.BlendedRows` (rows come top to bottom, one after the other).
        Only whole rows of blocks are written; the rest waits for the next rows: a block written
        half and evicted from GDAL's cache (64 MB in the CLI) before its other half came would
        be compressed twice and stored twice (the file 35 % larger with strips of 480 rows)."""
        values = rows.probability if self.fmt is None else encode_probability(rows.probability, rows.valid, self.fmt)
        top = rows.top
        if self._pending is not None:
            values, top = np.concatenate([self._pending, values]), self._pending_top
        bottom = top + len(values)
        cut = bottom if bottom >= self.grid.height else bottom // BLOCK_PX * BLOCK_PX
        if cut > top:
            _write_checked(self.dataset, self.path, values[:cut - top], Window(0, top, self.grid.width, cut - top),
                           self.errors)
        self._pending, self._pending_top = (values[cut - top:].copy(), cut) if cut < bottom else (None, None)

    def close(self, completed: bool = True) -> None:
        """Close the file (its cached blocks and directory are written now); when the run
        completed, raise what GDAL reported and check the file reads back whole."""
        pending, self._pending = self._pending, None
        if completed and pending is not None:   # rows that ended short of the raster's bottom
            try:
                _write_checked(self.dataset, self.path, pending, Window(0, self._pending_top, self.grid.width,
                                                                        len(pending)), self.errors)
            except ProbabilityWriteError:
                self.close(completed=False)
                raise
        with self.errors.watching():
            try:
                self.dataset.close()
            except Exception as exc:  # noqa: BLE001 - reported below, unless another error is on its way
                self.errors.messages.append(str(exc))
        if completed:
            if self.errors.messages:
                raise _write_failure(self.path, " ".join(self.errors.messages))
            _check_readable(self.path, self.grid)


@contextmanager
def probability_rasters(targets: list[tuple[str, str | None]], grid: ModelGrid, crs):
    """Open a :class:`ProbabilityRaster` per (path, fmt); all are closed on the way out, and
    checked only when the block completed (an error already on its way is not hidden)."""
    opened: list[ProbabilityRaster] = []
    completed = False
    try:
        for path, fmt in targets:
            opened.append(ProbabilityRaster(path, grid, crs, fmt))
        yield opened
        completed = True
    finally:
        for raster in opened:
            raster.close(completed)


def predict_probabilities(raster_path, probability_path, predictor: Predictor, settings: ModelSettings,
                          plan: InputPlan, options: TilingOptions | None = None,
                          feedback: Feedback | None = None, deliver_path=None,
                          deliver_format: str = "float32") -> ModelGrid:
    """Write the blended building probability of every pixel of the plan's model grid (0 on
    nodata) to a GeoTIFF; with ``deliver_path``, the same rows also go to the user's probability
    raster (:func:`encode_probability`: nodata stays nodata), so it costs no second pass."""
    feedback = feedback or Feedback()
    with rasterio.open(raster_path) as dataset:
        crs = dataset.crs
    targets = [(probability_path, None)] + ([(deliver_path, deliver_format)] if deliver_path is not None else [])
    with probability_rasters(targets, plan.grid, crs) as rasters:
        stats = run_engine(raster_path, predictor, settings, plan, [("write", r.write) for r in rasters],
                           options, feedback)
    report_skipped(stats, feedback)
    return plan.grid


def report_skipped(stats: EngineStats, feedback: Feedback) -> None:
    if stats.skipped:
        feedback.info(f"{stats.skipped} of {stats.tiles} tiles hold no valid pixel: skipped without running the model.")


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
