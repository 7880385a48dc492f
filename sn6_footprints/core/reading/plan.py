"""How one raster is presented to one model: bands, scale, nodata, look direction and grid.

:func:`plan_input` decides everything before the model runs, from the raster's header, its
tags and a small sample of windows; it refuses what it cannot read correctly with a message
naming the parameter to set, and :meth:`InputPlan.log_lines` says what was decided and why.
The extraction, the validation before it and training all use the same plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..radiometry import SCALE_LABELS, canonical_scale
from ..raster_windows import RasterError
from .bands import BandMapping, map_bands
from .ground import (SAME_PIXEL_TOLERANCE, GroundPixel, ModelGrid, describe_orientation, ground_pixel, is_north_up,
                     resampled_grid)
from .look import quarter_turns, resolve_look

# Resolution limits, as raster pixel / model pixel. Coarser than 2x (1.0 m for a 0.5 m model)
# the model sees buildings it was trained on at a quarter of their pixels or fewer and the
# held-out F1 falls apart (docs/real-sar.md gives the measurements); finer than 1/4 the reads
# grow 16-fold for a result no better than at 1/2.
MAX_COARSER = 2.0
MAX_FINER = 0.25
RESAMPLINGS = ("auto", "average", "bilinear", "cubic", "nearest")
RESOLUTION_FIX = ("use a product at the model's resolution or train a model at this pixel size "
                  "('Train footprint model', Model pixel size)")


@dataclass(frozen=True)
class InputOptions:
    """What a user may set about the input; the defaults decide from the raster itself."""

    input_scale: str = "auto"
    band_order: tuple[int, ...] | None = None
    look_direction: str = "auto"
    zero_is_nodata: bool = True
    resampling: str = "auto"

    def check(self) -> None:
        if self.input_scale != "auto":
            try:
                canonical_scale(self.input_scale)
            except ValueError as exc:
                raise RasterError(f"Input scale: {exc}.") from None
        if self.resampling not in RESAMPLINGS:
            raise RasterError(f"Resampling {self.resampling!r} is not one of {', '.join(RESAMPLINGS)}.")


@dataclass(frozen=True)
class InputPlan:
    raster_name: str
    bands: BandMapping
    band_names: tuple[str, ...]
    source_scale: str
    scale_evidence: str
    gain: float
    model_scale: str
    nodata: float | None
    zero_is_nodata: bool
    look: str
    look_evidence: str
    model_look: str
    quarter_turns: int
    ground: GroundPixel
    orientation: str
    grid: ModelGrid
    resampling: str | None          # None: the raster's own grid, read as it is
    model_pixel_m: float

    @property
    def factor(self) -> float:
        """Raster pixel / model pixel on the ground (2: the raster is twice as coarse)."""
        return self.ground.size_m / self.model_pixel_m

    @property
    def reads_as_is(self) -> bool:
        return self.resampling is None

    def log_lines(self) -> list[str]:
        lines = [f"Input bands: {self.bands.how}."]
        if self.source_scale == self.model_scale and self.gain == 1.0:
            lines.append(f"Input scale: {SCALE_LABELS[self.source_scale]} ({self.scale_evidence}), the model's own: "
                         "values used as they are.")
        else:
            gain = f", intensity × {self.gain:.6g}" if self.gain != 1.0 else ""
            lines.append(f"Input scale: {SCALE_LABELS[self.source_scale]} ({self.scale_evidence}); converted window "
                         f"by window to the model's {SCALE_LABELS[self.model_scale]}{gain}.")
        nodata = ["NaN/Inf"]
        if self.nodata is not None and not math.isnan(self.nodata):
            nodata.append(f"the declared nodata value {self.nodata:g} in every band")
        if self.zero_is_nodata:
            nodata.append("0 in every band")
        lines.append(f"Nodata: {', '.join(nodata)}" + ("" if self.zero_is_nodata else
                                                       " (zeros kept as values, as asked)") + ".")
        turn = {0: "no rotation", 1: "turned 90° counter-clockwise", 2: "turned 180°",
                3: "turned 90° clockwise"}[self.quarter_turns]
        lines.append(f"Look direction: {self.look} ({self.look_evidence}); the model's is {self.model_look}: "
                     f"{turn} before the model sees it (inference and training alike).")
        size = f"{self.ground.x_m:.3g} × {self.ground.y_m:.3g} m" if abs(self.ground.x_m - self.ground.y_m) > \
            1e-3 * self.ground.size_m else f"{self.ground.size_m:.3g} m"
        if self.reads_as_is:
            lines.append(f"Pixels: {size} on the ground, {self.orientation}; the model's {self.model_pixel_m:g} m "
                         "(within 2 %): read as they are.")
        else:
            lines.append(f"Pixels: {size} on the ground, {self.orientation}; resampled on the fly to the model's "
                         f"{self.model_pixel_m:g} m north-up grid (factor {self.factor:.3g}, {self.resampling}; "
                         f"{self.grid.width} × {self.grid.height} px); polygons land in the raster's CRS.")
        return lines


def check_placeable(width: int, height: int, crs, name: str) -> None:
    """Refuse a raster with no pixels or no CRS: nothing could be placed on the ground."""
    if width < 1 or height < 1:
        raise RasterError(f"{name} is empty (extent {width} x {height} px).")
    if crs is None:
        raise RasterError(f"{name} has no coordinate reference system, so areas in m² and the output polygons "
                          "cannot be placed. Assign its CRS (Raster ▸ Projections ▸ Assign Projection) and run again.")


def model_scale_of(settings) -> str:
    """The scale a model takes. Checkpoints written before the scale was recorded say
    'per-band statistics of the training data' there; their normalisation means, the
    training data's own per-band means, tell the scale: SN6 values lie in 0-92 (means about
    26-36), dB means are negative."""
    try:
        return canonical_scale(settings.input_scale)
    except ValueError:
        pass
    means = [float(m) for m in settings.mean]
    if all(5.0 <= m <= 92.0 for m in means):
        return "sn6"
    if all(-60.0 <= m < 0.0 for m in means):
        return "db"
    raise RasterError(f"The model's metadata gives no input scale ({settings.input_scale!r}) and its "
                      f"normalisation means ({', '.join(f'{m:.3g}' for m in means)}) do not tell one; retrain it "
                      "with 'Train footprint model', which records the scale.")


def _choose_resampling(requested: str, factor: float, needs_scaling: bool) -> str:
    if requested != "auto":
        return requested
    if not needs_scaling:
        return "nearest"          # only re-oriented: every value lands on a pixel unchanged
    return "average" if factor < 1 else "bilinear"


def plan_input(dataset, settings, options: InputOptions = InputOptions(), raster_name: str | None = None) -> InputPlan:
    """The plan for reading ``dataset`` (an open rasterio dataset) into a model with ``settings``."""
    from ..radiometry.detect import decide_scale

    options.check()
    name = raster_name or Path(str(dataset.name)).name
    check_placeable(dataset.width, dataset.height, dataset.crs, name)
    bands = map_bands(list(dataset.descriptions), settings.band_names, options.band_order, name)
    decision = decide_scale(dataset, bands.indexes, options.input_scale, zero_is_nodata=options.zero_is_nodata)
    model_scale = model_scale_of(settings)
    look, look_evidence = resolve_look(options.look_direction, dataset.tags(), settings.look_direction)
    turns = quarter_turns(look, settings.look_direction)
    crs_wkt = dataset.crs.to_wkt()
    ground = ground_pixel(dataset.transform, dataset.width, dataset.height, crs_wkt)
    model_pixel = float(settings.pixel_size_m)
    factor = ground.size_m / model_pixel
    if factor > MAX_COARSER:
        raise RasterError(
            f"{name} has {ground.size_m:.3g} m pixels, {factor:.3g}× the model's {model_pixel:g} m: beyond "
            f"{MAX_COARSER:g}× ({MAX_COARSER * model_pixel:g} m) buildings are too few pixels for this model to find "
            f"them; {RESOLUTION_FIX}.")
    if factor < MAX_FINER:
        raise RasterError(
            f"{name} has {ground.size_m:.3g} m pixels, 1/{1 / factor:.3g} of the model's {model_pixel:g} m: finer "
            f"than 1/{1 / MAX_FINER:g} is not resampled (every window would read {1 / factor ** 2:.0f}× the pixels); "
            f"resample it first (Raster ▸ Projections ▸ Warp, to {model_pixel:g} m, or {model_pixel * MAX_FINER:g} m "
            f"at the finest) "
            f"or {RESOLUTION_FIX}.")
    same_size = all(abs(s / model_pixel - 1) <= SAME_PIXEL_TOLERANCE for s in (ground.x_m, ground.y_m))
    north_up = is_north_up(dataset.transform)
    if same_size and north_up:
        grid = ModelGrid(dataset.width, dataset.height, dataset.transform, crs_wkt, ground.size_m, True)
        resampling = None
    else:
        grid = resampled_grid(dataset.transform, dataset.width, dataset.height, crs_wkt, model_pixel,
                              keep_pixel_size=same_size)
        resampling = _choose_resampling(options.resampling, factor, not same_size)
    return InputPlan(name, bands, tuple(settings.band_names), decision.scale, decision.evidence, decision.gain,
                     model_scale, dataset.nodata, options.zero_is_nodata, look, look_evidence,
                     settings.look_direction, turns, ground, describe_orientation(dataset.transform), grid,
                     resampling, model_pixel)
