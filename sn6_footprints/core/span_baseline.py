"""A non-learned building detector: span threshold and morphology, the model's vectoriser.

Why it exists: a reader of the model card needs to see what the learned model adds over the
obvious physics-only rule "buildings are bright". The rule here is

1. span = HH + HV + VH + VV in *linear* intensity (the total backscattered power; summing the
   four channels is a 4-channel multi-look, so speckle is lower than in any one band);
2. local smoothing: a boxcar mean of the span (more looks), normalised by the valid pixels under
   the box so that nodata never darkens its neighbours;
3. a fixed threshold in dB (a fixed level, not a per-scene percentile: it needs no second pass
   over the raster and a scene with few buildings is not forced to produce many);
4. a binary opening (removes speckle spikes, point targets, thin bright lines) and a closing
   (joins a roof broken by its own texture), then an optional shift away from the sensor (bright
   roofs and facades are laid over toward the sensor; their footprint lies further away);
5. the same vectoriser as the model (:func:`~.vectorize.vectorize_probabilities`): the score map
   goes to a temporary GeoTIFF and comes back as polygons with ``id``, ``area_m2`` and
   ``confidence``, so results are scored with :func:`~.extract.score_extraction` unchanged.

Input scale assumption: by default the raster holds SpaceNet 6 "SAR-Intensity" values, 4 bands
in the order HH, HV, VH, VV, 0 = nodata, which :mod:`.radiometry.scales` turns into dB and then
into linear intensity. ``input_scale="db"`` reads calibrated decibels (NaN = nodata) and
``"linear"`` linear intensity. A raster in another product scale needs its own mapping: the
threshold is in calibrated dB, so a wrong scale moves it.

The default parameters were tuned once, by a coarse-to-fine grid search maximising the pooled SpaceNet F1 on
two training-seed scenes (seeds 10001 north-looking and 10002 south-looking, 1024 px, default
simulation parameters; threshold -8 to 3 dB, boxcar 1-9 px, opening 3-19 px, closing 1-11 px,
shift 0-15 m), never on the held-out seeds of :mod:`.heldout`. It reached F1 0.17 there: a
plateau, not a sharp optimum. Why so low, and what a model must learn instead: the bright roof
and facade are laid over toward the sensor by height / tan(incidence), which varies from building
to building (one fixed shift cannot place them all), grass and trees are about as bright as roofs
in the span, and touching buildings merge into one blob. The shift is in map units and is not
applied to rasters in a geographic CRS.

Memory is bounded: the raster is read tile by tile with a margin as wide as every filter can
reach, so a tile's core is the same as in a whole-raster run, and written window by window.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from .extract import ExtractionResult
from .feedback import Feedback, SubFeedback
from .raster_windows import RasterError, RasterInfo, read_window
from .reading.look import LOOK_DIRECTIONS, look_from_tags, quarter_turns
from .settings import SN6_BAND_NAMES, SN6_MIN_AREA_M2, ModelSettings
from .radiometry.scales import to_linear
from .vectorize import VectorizeOptions, vectorize_probabilities

INPUT_SCALES = ("sn6-intensity", "db", "linear")
# The score map is 0 off buildings and in (0.5, 1] on them, so the vectoriser's usual 0.5
# threshold returns exactly the morphology's mask and the confidence grows with brightness.
SCORE_THRESHOLD = 0.5
# dB above the threshold at which the confidence is ~0.73 (a logistic of this scale).
CONFIDENCE_SCALE_DB = 3.0


@dataclass(frozen=True)
class SpanBaselineOptions:
    """The rule's few parameters (defaults tuned on training seeds only, see the module doc)."""

    input_scale: str = "sn6-intensity"
    smoothing_px: int = 3           # side of the boxcar mean of the linear span (1 = none)
    threshold_db: float = -2.0      # span (sum of four intensities) above this, in dB, is 'building'
    opening_px: int = 11            # side of the square structuring element (0 or 1 = none)
    closing_px: int = 7
    shift_m: float = 9.0            # move detections this far away from the sensor (layover)
    look_direction: str | None = None   # None: the raster's LOOK_DIRECTION tag, else north
    min_area_m2: float = SN6_MIN_AREA_M2
    simplify_m: float = 0.5
    tile_size_px: int = 1024

    def check(self) -> None:
        if self.input_scale not in INPUT_SCALES:
            raise ValueError(f"input scale must be one of {', '.join(INPUT_SCALES)}, not {self.input_scale!r}")
        if self.smoothing_px < 1 or self.opening_px < 0 or self.closing_px < 0:
            raise ValueError("smoothing must be at least 1 px and opening/closing at least 0 px")
        if self.look_direction not in (None,) + LOOK_DIRECTIONS:
            raise ValueError(f"look direction must be north, south, east or west, not {self.look_direction!r}")
        if self.tile_size_px < 64:
            raise ValueError(f"tile size must be at least 64 px, not {self.tile_size_px}")
        if not math.isfinite(self.threshold_db) or self.shift_m < 0 or self.min_area_m2 < 0:
            raise ValueError("threshold must be finite, shift and min area at least 0")

    def margin_px(self, shift_px: int) -> int:
        """How far any filter reaches: a tile read with this margin has an exact core."""
        return (self.smoothing_px // 2 + 2 * (self.opening_px // 2) + 2 * (self.closing_px // 2)
                + shift_px + 2)


def linear_span(data: np.ndarray, valid: np.ndarray, input_scale: str) -> np.ndarray:
    """HH + HV + VH + VV in linear intensity from a (4, h, w) window; 0 on invalid pixels."""
    span = np.nan_to_num(to_linear(data, input_scale), nan=0.0, posinf=0.0).sum(axis=0, dtype=np.float32)
    span[~valid] = 0.0
    return span


def _square(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=bool)


def span_score(data: np.ndarray, valid: np.ndarray, options: SpanBaselineOptions,
               shift_rows: int = 0) -> np.ndarray:
    """The score map of one window: 0 off buildings, (0.5, 1] on them, 0 on nodata.

    ``shift_rows`` moves the mask by that many rows (positive = down), applied before the
    final nodata cut so nothing lands on nodata."""
    span = linear_span(data, valid, options.input_scale)
    if options.smoothing_px > 1:   # normalised convolution: nodata neither counts nor darkens
        size = options.smoothing_px
        weight = ndimage.uniform_filter(valid.astype(np.float32), size, mode="reflect")
        span = ndimage.uniform_filter(span, size, mode="reflect") / np.maximum(weight, 1e-6)
    with np.errstate(divide="ignore"):
        span_db = np.where(span > 0, 10.0 * np.log10(np.maximum(span, 1e-30)), -np.inf).astype(np.float32)
    mask = (span_db > options.threshold_db) & valid
    # grey morphology on a 0/1 image with reflecting borders = binary morphology whose result
    # does not shrink at the raster's edge (binary_* would treat outside as background)
    if options.opening_px > 1:
        mask = ndimage.grey_opening(mask.view(np.uint8), footprint=_square(options.opening_px),
                                    mode="reflect").astype(bool)
    if options.closing_px > 1:
        mask = ndimage.grey_closing(mask.view(np.uint8), footprint=_square(options.closing_px),
                                    mode="reflect").astype(bool)
    if shift_rows:
        shifted = np.zeros_like(mask)
        if shift_rows > 0:
            shifted[shift_rows:] = mask[:-shift_rows]
        else:
            shifted[:shift_rows] = mask[-shift_rows:]
        mask = shifted
    mask &= valid
    excess = np.clip((span_db - options.threshold_db) / CONFIDENCE_SCALE_DB, -30.0, 30.0)
    confidence = 1.0 / (1.0 + np.exp(-excess))
    # strictly above 0.5 wherever the mask holds, whatever the pixel's own brightness
    return np.where(mask, SCORE_THRESHOLD + 0.5 * np.maximum(confidence, 1e-3), 0.0).astype(np.float32)


def _look_direction(dataset, options: SpanBaselineOptions) -> str:
    if options.look_direction is not None:
        return options.look_direction
    return look_from_tags(dataset.tags()) or "north"


def baseline_settings(options: SpanBaselineOptions) -> ModelSettings:
    """A settings record for the result, so scoring uses the same min area as for a model."""
    return ModelSettings(architecture="span-baseline", width=0.0, threshold=SCORE_THRESHOLD,
                         min_area_m2=options.min_area_m2, input_scale=options.input_scale,
                         description=(f"span > {options.threshold_db:g} dB after a {options.smoothing_px} px "
                                      f"boxcar, opening {options.opening_px} px, closing {options.closing_px} px, "
                                      f"shift {options.shift_m:g} m"))


def write_span_scores(raster_path, score_path, options: SpanBaselineOptions,
                      feedback: Feedback | None = None) -> RasterInfo:
    """Write the score map of ``raster_path`` to a float32 GeoTIFF, tile by tile with margins."""
    feedback = feedback or Feedback()
    options.check()
    with rasterio.open(raster_path) as dataset:
        info = RasterInfo.of(dataset)
        if info.bands != 4:
            raise RasterError(f"{os.path.basename(str(raster_path))} has {info.bands} band(s); the span "
                              f"baseline needs 4 ({', '.join(SN6_BAND_NAMES)}, in that order).")
        if info.crs_wkt is None:
            raise RasterError(f"{os.path.basename(str(raster_path))} has no coordinate reference system; "
                              "assign one so areas in m² and the polygons can be placed.")
        look = _look_direction(dataset, options)
        # each window is turned to look north (as the model's tiles are) and back: north-looking,
        # the sensor is south (image bottom) and footprints lie above (north of) the bright
        # layover, so the mask moves up
        shift_px = int(round(options.shift_m / info.pixel_size_map_units)) if not info.is_geographic else 0
        turns = quarter_turns(look, "north")
        margin = options.margin_px(shift_px)
        tile = options.tile_size_px
        profile = dict(driver="GTiff", width=info.width, height=info.height, count=1, dtype="float32",
                       transform=info.transform, crs=dataset.crs, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", predictor=3, BIGTIFF="IF_SAFER")
        starts = [(r, c) for r in range(0, info.height, tile) for c in range(0, info.width, tile)]
        with rasterio.open(score_path, "w", **profile) as out:
            for done, (row, col) in enumerate(starts, start=1):
                feedback.check_cancelled()
                height, width = min(tile, info.height - row), min(tile, info.width - col)
                r0, c0 = max(0, row - margin), max(0, col - margin)
                r1, c1 = min(info.height, row + height + margin), min(info.width, col + width + margin)
                data, valid = read_window(dataset, Window(c0, r0, c1 - c0, r1 - r0), info.nodata)
                score = np.rot90(span_score(np.rot90(data, turns, axes=(1, 2)), np.rot90(valid, turns), options,
                                            -shift_px), -turns)
                core = score[row - r0:row - r0 + height, col - c0:col - c0 + width]
                out.write(core[None], window=Window(col, row, width, height))
                feedback.set_progress(100.0 * done / len(starts))
    return info


def extract_span_baseline(raster_path, options: SpanBaselineOptions = SpanBaselineOptions(),
                          feedback: Feedback | None = None) -> ExtractionResult:
    """Footprints by the span rule, as an :class:`~.extract.ExtractionResult` (device "cpu",
    settings naming the rule), ready for :func:`~.extract.score_extraction`."""
    feedback = feedback or Feedback()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sn6-span-") as scratch:
        score_path = os.path.join(scratch, "span_score.tif")
        info = write_span_scores(raster_path, score_path, options, SubFeedback(feedback, 0, 70))
        seconds["inference"] = time.perf_counter() - started
        t0 = time.perf_counter()
        vectorize = VectorizeOptions(SCORE_THRESHOLD, options.min_area_m2, options.simplify_m)
        geometries, attributes = vectorize_probabilities(score_path, info, vectorize, SubFeedback(feedback, 70, 100))
        seconds["vectorize"] = time.perf_counter() - t0
    seconds["processing"] = seconds["inference"] + seconds["vectorize"]
    seconds["total"] = time.perf_counter() - started
    feedback.info(f"span baseline: {len(geometries)} footprint(s) in {seconds['total']:.1f} s")
    return ExtractionResult(geometries, attributes, info.crs_wkt, baseline_settings(options), "cpu", seconds)
