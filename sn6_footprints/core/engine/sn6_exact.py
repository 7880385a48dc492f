"""The SpaceNet 6 baseline's inference, step by step (REFERENCE.md §3), over any raster.

512 px windows stepped by 512, the last snapped to the edge, never padded; the windows' raw
logits averaged where they overlap (nanmean), building where the mean logit is above 0;
4-connected blobs under 80 px removed; each blob polygonised with
``rasterio.features.shapes`` (pixel corners), ``buffer(0)``, ``simplify(0.5 px)``. With the
official weights a user gets the published baseline's polygons.

Rows of windows stream through: finished rows are thresholded at once and only the mask rows
of blobs still open at the bottom are kept, so memory follows the raster's width (and the
height of the tallest blob still open), never the raster's height. Each finished blob is
polygonised alone, on its own bounding box: the polygoniser's rings (where a ring starts,
which the simplification depends on) are then those of the whole mask, whereas merging
polygons cut at strip borders would start rings elsewhere.
"""
from __future__ import annotations

import time

import numpy as np
import rasterio
import shapely
import torch
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from scipy.special import expit

from ..devices import DeviceError
from ..feedback import Feedback
from ..reading.model_windows import ModelWindows
from ..reading.plan import InputPlan
from ..settings import ModelSettings
from ..validation import SN6_WINDOW_PX, check_sn6_exact_size
from ..vectorize import FOUR_CONNECTED
from .predictor import Predictor, normalise
from .probabilities import probability_rasters
from .stream import BlendedRows
from .tiling import tile_starts

MIN_BLOB_PX = 80          # the baseline's small-object removal, 4-connected pixels
SIMPLIFY_PX = 0.5         # its simplification tolerance, in pixels
BATCH_WINDOWS = 4         # windows per forward pass by default (an SN6 tile's four in one)
CONFIDENCE = 1.0          # the baseline's CSV gives every polygon confidence 1

PRESET_NOTE = ("Preset SpaceNet 6 baseline (exact): 512 px windows stepped by 512, the last snapped to the edge, "
               "no padding; raw logits averaged where windows overlap, building where the mean logit is above 0; "
               "4-connected blobs under 80 px removed; polygons buffer(0) and simplified by 0.5 px; confidence 1. "
               "Ignored: tile size, overlap, threshold, minimum area, simplification, flip averaging and precision "
               "(float32).")


def window_starts(length: int, reversed_axis: bool) -> list[int]:
    """Window origins along one axis. The baseline cuts windows from the tile as the model sees
    it (turned), so along an axis the turn reverses the snapped steps run from the far edge."""
    starts = tile_starts(length, SN6_WINDOW_PX, 0)
    return sorted(length - SN6_WINDOW_PX - s for s in starts) if reversed_axis else starts


def reversed_axes(quarter_turns: int) -> tuple[bool, bool]:
    """(rows, columns) that ``torch.rot90(x, quarter_turns, dims=(-2, -1))`` runs backwards."""
    turns = quarter_turns % 4
    return turns in (2, 3), turns in (1, 2)


@torch.inference_mode()
def window_logits(predictor: Predictor, batch: np.ndarray) -> np.ndarray:
    """The model's raw float32 logits of normalised (n, bands, 512, 512) windows, turned to the
    model's look direction and back, as the Predictor turns them (no sigmoid, no autocast)."""
    try:
        x = torch.from_numpy(batch).to(predictor.device).contiguous(memory_format=torch.channels_last)
        turns = predictor.quarter_turns
        if turns:
            x = torch.rot90(x, turns, dims=(-2, -1))
        logits = predictor.model(x).float()
        if turns:
            logits = torch.rot90(logits, -turns, dims=(-2, -1))
        return logits[:, 0].cpu().numpy()
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        if len(batch) < 2:
            raise DeviceError("The GPU ran out of memory on a single 512 x 512 px window of the SN6-exact preset: "
                              "set Device cpu.") from error
        # the card is full: the same windows in two halves
        half = len(batch) // 2
        return np.concatenate([window_logits(predictor, batch[:half]), window_logits(predictor, batch[half:])])


class _Blobs:
    """Mask rows in, finished blobs of at least 80 px out as pixel polygons.

    Only the rows of blobs still touching the last row seen are kept; a blob is polygonised
    once no row below can join it."""

    def __init__(self, height: int):
        self.height = height
        self.top = 0                                    # raster row of the kept rows' first
        self.kept: np.ndarray | None = None             # (rows, width) bool: pixels of open blobs
        self.polygons: list = []
        self.small = 0                                  # blobs removed for being under 80 px

    def add(self, mask_rows: np.ndarray, feedback: Feedback) -> None:
        band = mask_rows if self.kept is None else np.vstack([self.kept, mask_rows])
        bottom = self.top + band.shape[0]
        labels, count = ndimage.label(band, structure=FOUR_CONNECTED)
        is_open = np.zeros(count + 1, bool)
        if bottom < self.height:
            is_open[np.unique(labels[-1])] = True
            is_open[0] = False
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        places = ndimage.find_objects(labels)
        for label, where in enumerate(places, start=1):
            if where is None or is_open[label]:
                continue
            if sizes[label] < MIN_BLOB_PX:
                self.small += 1
                continue
            if len(self.polygons) % 256 == 0:
                feedback.check_cancelled()  # a large blob's buffer(0) can take seconds
            rows, cols = where
            blob = labels[where] == label
            origin = Affine.translation(cols.start, self.top + rows.start)
            for geometry, _ in shapes(blob.astype(np.uint8), mask=blob, connectivity=4, transform=origin):
                self.polygons.append(shapely.geometry.shape(geometry).buffer(0)
                                     .simplify(SIMPLIFY_PX, preserve_topology=True))
        if not is_open.any():
            self.top, self.kept = bottom, None
            return
        first = min(where[0].start for label, where in enumerate(places, start=1) if is_open[label])
        self.kept = is_open[labels[first:]]
        self.top += first


def sn6_exact_footprints(raster_path, predictor: Predictor, settings: ModelSettings, plan: InputPlan,
                         feedback: Feedback | None = None, deliver_path=None,
                         deliver_format: str = "float32", batch_size: int = BATCH_WINDOWS
                         ) -> tuple[list, dict[str, list], dict[str, float]]:
    """(polygons in the raster's CRS, columns id/area_m2/confidence, seconds per stage) by the
    baseline's steps over the plan's model grid; with ``deliver_path`` the probability raster
    (the sigmoid of the mean logits) is written there too, as :mod:`.probabilities` writes it.
    ``batch_size``: windows per forward pass (it changes only the last bits of float32 logits).

    Nodata: a pixel the plan marks invalid reaches the model as 0 on its scale (SN6's own
    nodata value, as the baseline fed it) and every window is run, so the valid pixels' logits
    are the baseline's; invalid pixels are then cleared from the mask before blobs are counted,
    so no polygon covers them (a blob cut by nodata counts only its valid pixels)."""
    feedback = feedback or Feedback()
    grid = plan.grid
    check_sn6_exact_size(grid.width, grid.height, plan.raster_name, plan.reads_as_is)
    feedback.info(PRESET_NOTE)
    seconds = dict.fromkeys(("read", "model", "blend", "vectorize", "write"), 0.0)
    reversed_rows, reversed_cols = reversed_axes(predictor.quarter_turns)
    row_starts = window_starts(grid.height, reversed_rows)
    col_starts = window_starts(grid.width, reversed_cols)
    total = len(row_starts) * len(col_starts)
    blobs = _Blobs(grid.height)
    with rasterio.open(raster_path) as dataset, \
            probability_rasters([(deliver_path, deliver_format)] if deliver_path is not None else [], grid,
                                dataset.crs) as delivered:
        reader = ModelWindows(dataset, plan)
        top = 0                                               # raster row of the buffers' first
        logit_sum = np.zeros((0, grid.width), np.float64)
        counts = np.zeros((0, grid.width), np.uint8)
        valid_any = np.zeros((0, grid.width), bool)
        done = 0
        for index, row in enumerate(row_starts):
            grow = row + SN6_WINDOW_PX - top - logit_sum.shape[0]
            if grow > 0:
                logit_sum = np.vstack([logit_sum, np.zeros((grow, grid.width), np.float64)])
                counts = np.vstack([counts, np.zeros((grow, grid.width), np.uint8)])
                valid_any = np.vstack([valid_any, np.zeros((grow, grid.width), bool)])
            for first in range(0, len(col_starts), batch_size):
                feedback.check_cancelled()
                t0 = time.perf_counter()
                windows = [Window(col, row, SN6_WINDOW_PX, SN6_WINDOW_PX)
                           for col in col_starts[first:first + batch_size]]
                tiles, valids = [], []
                for window in windows:
                    data, valid = reader.read(window)
                    tiles.append(normalise(data, settings))
                    valids.append(valid)
                t1 = time.perf_counter()
                logits = window_logits(predictor, np.stack(tiles))
                t2 = time.perf_counter()
                rs = slice(row - top, row - top + SN6_WINDOW_PX)
                for window, window_logit, valid in zip(windows, logits, valids):
                    cs = slice(window.col_off, window.col_off + SN6_WINDOW_PX)
                    logit_sum[rs, cs] += window_logit
                    counts[rs, cs] += 1
                    valid_any[rs, cs] |= valid
                seconds["read"] += t1 - t0
                seconds["model"] += t2 - t1
                seconds["blend"] += time.perf_counter() - t2
                done += len(windows)
                feedback.set_progress(99.0 * done / total)
            final = row_starts[index + 1] if index + 1 < len(row_starts) else grid.height
            n = final - top
            t0 = time.perf_counter()
            mean_logit = logit_sum[:n] / counts[:n]   # every pixel lies in at least one window
            mask = (mean_logit > 0) & valid_any[:n]
            t1 = time.perf_counter()
            blobs.add(mask, feedback)
            t2 = time.perf_counter()
            for raster in delivered:
                raster.write(BlendedRows(top, expit(mean_logit).astype(np.float32), valid_any[:n]))
            seconds["blend"] += t1 - t0
            seconds["vectorize"] += t2 - t1
            seconds["write"] += time.perf_counter() - t2
            logit_sum, counts, valid_any = logit_sum[n:], counts[n:], valid_any[n:]
            top = final
    feedback.check_cancelled()
    t0 = time.perf_counter()
    geometries, attributes = _placed(blobs.polygons, grid)
    seconds["vectorize"] += time.perf_counter() - t0
    feedback.info(f"SpaceNet 6 baseline: {total} windows; {len(geometries)} blob(s) of {MIN_BLOB_PX} px or more "
                  f"polygonised, {blobs.small} smaller removed.")
    feedback.set_progress(100.0)
    return geometries, attributes, seconds


def _placed(polygons: list, grid) -> tuple[list, dict[str, list]]:
    """Pixel polygons, top to bottom, placed with the grid's geotransform; areas in m²."""
    polygons = sorted(polygons, key=lambda p: (p.bounds[1], p.bounds[0]))
    t = grid.transform
    geometries = [shapely.affinity.affine_transform(p, [t.a, t.b, t.d, t.e, t.c, t.f]) for p in polygons]
    return geometries, {"id": list(range(1, len(geometries) + 1)),
                        "area_m2": [round(p.area * grid.pixel_area_m2, 3) for p in polygons],
                        "confidence": [CONFIDENCE] * len(geometries)}
