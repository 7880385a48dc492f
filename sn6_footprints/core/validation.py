"""One validation step before any heavy work, shared by every command (and so by the worker).

Each ``validate_*`` function looks at everything a run will touch before the model is built
or a byte is written: inputs exist, are files and open as what they should be (a raster
whose first and last blocks read, a checkpoint with sane metadata, a readable file of ground
truth); outputs have a known extension, their folder exists and takes a file, and no output
is an input or one of an input's sidecar files; numbers are finite and in range. The first
problem found is raised as a one-line :class:`ValidationError` (a ``ValueError``) that names
the problem and the fix; a missing input is an :class:`InputNotFound`, also a
``FileNotFoundError``.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..defaults import (AUTO_TILE_PX, AUTO_TILE_RANGE_PX, DEFAULT_PRESET, OUTLINE_STYLES, PRESETS, PROBABILITY_FORMATS,
                        SN6_EXACT_PRESET, TRACED_OUTLINE)
from ..output_safety import find_clash
from .feedback import Feedback

# Multiple the UNet's input must have (five 2x poolings; core.model.INPUT_MULTIPLE_PX, which
# imports torch: a refusal should not wait for that import).
INPUT_MULTIPLE_PX = 32

VECTOR_EXTENSIONS = (".gpkg", ".geojson", ".json", ".shp", ".fgb")
MODEL_EXTENSIONS = (".pt", ".pth", ".model")
HTML_EXTENSIONS = (".html", ".htm")
RASTER_EXTENSIONS = (".tif", ".tiff")
MIN_TILE_PX = 64
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
SN6_WINDOW_PX = 512  # the SpaceNet 6 baseline's window, never padded (the sn6-exact preset)


class ValidationError(ValueError):
    """A run refused before any work; the message is one line with the fix."""


class InputNotFound(ValidationError, FileNotFoundError):
    """An input file that does not exist."""


# ---------------------------------------------------------------- numbers

def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_range(label: str, value, *, above: float | None = None, at_least: float | None = None,
                below: float | None = None, at_most: float | None = None, hint: str = "") -> None:
    """Refuse a value that is not finite or outside the bounds (``None``: no value, accepted)."""
    if value is None:
        return
    bounds = []
    if above is not None:
        bounds.append(f"above {above:g}")
    if at_least is not None:
        bounds.append(f"at least {at_least:g}")
    if below is not None:
        bounds.append(f"below {below:g}")
    if at_most is not None:
        bounds.append(f"at most {at_most:g}")
    wanted = " and ".join(bounds) or "a finite number"
    ok = _finite(value)
    if ok:
        number = float(value)
        ok = ((above is None or number > above) and (at_least is None or number >= at_least)
              and (below is None or number < below) and (at_most is None or number <= at_most))
    if not ok:
        raise ValidationError(f"{label} {value} must be a finite number {wanted}{'; ' + hint if hint else ''}.")


def check_threshold(value, label: str = "Probability threshold") -> None:
    check_range(label, value, above=0, below=1, hint="leave it empty for the model's own (usually 0.5)")


def check_tiling(tile_size_px: int, overlap_px: int, batch_size: int, feedback: Feedback | None = None) -> None:
    """Tile size a multiple of 32 and at least 64, overlap 0 or more (more than half a tile is
    used as half a tile, and said so), batch size 1 or more."""
    tile = tile_size_px
    auto = tile == AUTO_TILE_PX and isinstance(tile, int)
    if auto:
        tile = AUTO_TILE_RANGE_PX[0]  # the smallest Auto can choose, for the overlap warning below
    elif not isinstance(tile, int) or tile < MIN_TILE_PX or tile % INPUT_MULTIPLE_PX:
        suggestion = max(MIN_TILE_PX, INPUT_MULTIPLE_PX * round(float(tile) / INPUT_MULTIPLE_PX)) \
            if _finite(tile) else 512
        raise ValidationError(f"Tile size {tile} px must be a multiple of {INPUT_MULTIPLE_PX} and at least "
                              f"{MIN_TILE_PX}, or 0 (Auto, the default); use {suggestion} or 0.")
    if not isinstance(overlap_px, int) or overlap_px < 0:
        raise ValidationError(f"Tile overlap {overlap_px} px must be 0 or more (default 64).")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"Batch size {batch_size} must be at least 1 (default 4).")
    if overlap_px > tile // 2 and feedback is not None:
        feedback.warning(f"Tile overlap {overlap_px} px is more than half the {tile} px tile; "
                         f"{tile // 2} px is used." if not auto else
                         f"Tile overlap {overlap_px} px is more than half the smallest Auto tile ({tile} px); "
                         "at most half the chosen tile is used (the log names it).")


def check_sn6_exact_size(width: int, height: int, name: str, raster_grid: bool = True) -> None:
    """The sn6-exact preset cuts 512 px windows and never pads, so the grid must hold one."""
    if width < SN6_WINDOW_PX or height < SN6_WINDOW_PX:
        grid = "" if raster_grid else " on the model's grid"
        raise ValidationError(f"{name} is {width} x {height} px{grid}: the preset SpaceNet 6 baseline (exact) needs "
                              f"at least {SN6_WINDOW_PX} x {SN6_WINDOW_PX} px (its windows are {SN6_WINDOW_PX} px and "
                              "never padded); use the default preset (--preset default, 'This plugin's engine'), "
                              "which pads small rasters.")


# ---------------------------------------------------------------- paths

def _path(value, what: str) -> Path:
    if value is None or str(value).strip() == "":
        raise ValidationError(f"No {what} given; name a file.")
    return Path(os.path.expanduser(str(value)))


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def clash(output, inputs: dict[str, object]) -> tuple[str, Path | None] | None:
    """(label, file) of the first input that writing ``output`` would overwrite: the input
    itself (file None) or one of its sidecars (``output_safety.find_clash``, the one rule
    QGIS's process uses too)."""
    found = find_clash(_resolved(Path(output)), [(label, Path(os.path.expanduser(str(value))), None)
                                                 for label, value in inputs.items()
                                                 if value is not None and str(value)])
    return None if found is None else (found[0], found[2])


def check_input_file(value, what: str, fix: str) -> Path:
    """An input that exists, is a file (not a folder) and can be opened for reading."""
    path = _path(value, what)
    if path.is_dir():
        raise ValidationError(f"The {what} {path} is a folder, not a file; {fix}.")
    if not path.exists():
        raise InputNotFound(f"The {what} was not found: {path}; {fix}.")
    try:
        with open(path, "rb") as stream:
            stream.read(1)
    except OSError as exc:
        raise ValidationError(f"The {what} {path} cannot be read ({exc.strerror or exc}); {fix}.") from None
    return path


def check_output(value, what: str, extensions: tuple[str, ...], inputs: dict[str, object] | None = None) -> Path:
    """An output with a known extension, in an existing folder that takes a new file, that
    is none of ``inputs`` (label -> path) nor one of their sidecars."""
    path = _path(value, what)
    if path.is_dir():
        example = path / ("out" + extensions[0])
        raise ValidationError(f"The {what} {path} is a folder; name a file in it (e.g. {example}).")
    found = clash(path, inputs or {})
    if found:
        label, member = found
        target = f"the {label}" if member is None else f"{member.name}, a file of the {label}"
        raise ValidationError(f"The {what} {path.name} would overwrite {target}; choose another output file.")
    if path.suffix.lower() not in extensions:
        shown = path.suffix or "(none)"
        raise ValidationError(f"The {what} {path.name} has the extension {shown}, which is not known; "
                              f"use one of {', '.join(extensions)}.")
    folder = _resolved(path).parent
    if not folder.exists():
        raise ValidationError(f"The folder of the {what}, {folder}, does not exist; create it or choose another.")
    if not folder.is_dir():
        raise ValidationError(f"The {what}'s folder {folder} is not a folder; choose another output path.")
    try:  # a real probe: permissions, read-only mounts and ACLs all show here (also for root)
        fd, probe = tempfile.mkstemp(prefix=".sn6-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValidationError(f"The folder of the {what}, {folder}, is not writable ({exc.strerror or exc}); "
                              "choose a folder you can write to.") from None
    return path


def check_outputs_distinct(outputs: dict[str, object]) -> None:
    """No two outputs share a file."""
    named = [(label, value) for label, value in outputs.items() if value]
    for index, (label, value) in enumerate(named):
        others = dict(named[index + 1:])
        found = clash(value, others)
        if found:
            raise ValidationError(f"The {label} and the {found[0]} share the file "
                                  f"{(found[1] or Path(str(value))).name}; give each output its own file.")


# ---------------------------------------------------------------- inputs of each kind

def _gdal_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause if cause is not None and str(cause) else exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def check_raster(value, what: str = "input raster"):
    """A raster that GDAL opens and whose first and last blocks read (a truncated file fails
    here, not after the model has run); its :class:`RasterInfo`."""
    import rasterio
    from rasterio.errors import RasterioError

    from .raster_windows import RasterError, RasterInfo

    path = check_input_file(value, what, "choose an existing raster file (GeoTIFF)")
    try:
        with rasterio.open(path) as dataset:
            info = RasterInfo.of(dataset)
            if dataset.count and dataset.width and dataset.height:
                block_h, block_w = dataset.block_shapes[0]
                rows = max(1, math.ceil(dataset.height / block_h))
                cols = max(1, math.ceil(dataset.width / block_w))
                for i, j in {(0, 0), (rows - 1, cols - 1)}:
                    dataset.read(window=dataset.block_window(1, i, j))
    except (RasterioError, OSError, ValueError) as exc:
        raise RasterError(f"{path.name} is not a readable raster ({_gdal_reason(exc)}); choose a GeoTIFF or "
                          "another GDAL raster, or copy or export the file again if it is damaged.") from None
    return info


def check_model(value):
    """The checkpoint's settings (``None``: the bundled model's), read without building the model."""
    from .bundled import bundled_model_path
    from .weights import inspect_model

    if value is None or str(value) == "":
        return inspect_model(bundled_model_path())
    return inspect_model(_path(value, "model file"))


def check_vector_input(value, what: str) -> Path:
    """A vector input (ground truth, proposals, labels) that exists and can be read; its
    content is checked where it is read (``footprint_sources``)."""
    return check_input_file(value, what, "choose an existing vector file (GeoPackage, GeoJSON, Shapefile, "
                                         "SpaceNet CSV)")


# ---------------------------------------------------------------- one step per command

@dataclass(frozen=True)
class ExtractionPlan:
    """What validation learned and the run reuses."""

    raster_info: object
    settings: object
    input_plan: object = None   # reading.InputPlan: bands, scale, look direction and grid


TTA_SCALE_RANGE = (0.5, 2.0)  # beyond: buildings the model never saw at that size


def check_tta_scales(scales) -> None:
    """Test-time scales: each finite within TTA_SCALE_RANGE, none twice."""
    low, high = TTA_SCALE_RANGE
    for scale in scales:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and low <= scale <= high):
            raise ValidationError(f"Test-time scale {scale} is outside {low:g}-{high:g}; use for example 0.8,1,1.25.")
    if len(set(scales)) != len(scales):
        raise ValidationError(f"Test-time scales {','.join(f'{s:g}' for s in scales)} repeat a scale; give each once.")


def validate_extraction(raster, output=None, *, model=None, truth=None, threshold=None, min_area_m2=None,
                        simplify=0.5, tile_size_px=512, overlap_px=64, batch_size=4, input_options=None,
                        probability=None, probability_format="float32", precision="auto", preset=DEFAULT_PRESET,
                        tta_scales=(), outline=TRACED_OUTLINE, feedback: Feedback | None = None) -> ExtractionPlan:
    """Everything ``extract`` needs, checked before the model loads (the checks that need
    torch, of the model file, last); ``probability``: the optional probability raster output;
    ``preset``: one of ``defaults.PRESETS`` (sn6-exact needs a grid of 512 x 512 px or more)."""
    from dataclasses import replace

    check_threshold(threshold)
    check_range("Minimum building area", min_area_m2, at_least=0, hint="m², e.g. 20")
    check_range("Simplification tolerance", simplify, at_least=0, hint="metres, 0 keeps the pixel outline")
    check_tiling(tile_size_px, overlap_px, batch_size, feedback)
    check_tta_scales(tta_scales)
    info = check_raster(raster)
    if truth is not None and str(truth) != "":
        check_vector_input(truth, "ground-truth file")
    inputs = {"input raster": raster, "ground-truth file": truth, "model file": model}
    if output is not None:
        check_output(output, "output", VECTOR_EXTENSIONS, inputs)
    if probability_format not in PROBABILITY_FORMATS:
        raise ValidationError(f"Probability format {probability_format} is not known; use one of "
                              f"{', '.join(PROBABILITY_FORMATS)}.")
    if precision not in PRECISIONS:
        raise ValidationError(f"Precision {precision} is not known; use one of {', '.join(PRECISIONS)}.")
    if preset not in PRESETS:
        raise ValidationError(f"Preset {preset} is not known; use one of {', '.join(PRESETS)}.")
    if outline not in OUTLINE_STYLES:
        raise ValidationError(f"Outline style {outline} is not known; use one of {', '.join(OUTLINE_STYLES)}.")
    if preset == SN6_EXACT_PRESET and outline != TRACED_OUTLINE:
        raise ValidationError("The SpaceNet 6 baseline (exact) preset gives the baseline's own polygons, which are "
                              "traced; set Outline style to traced, or use the default preset for regular outlines.")
    if probability is not None and str(probability) != "":
        if output is not None:  # first: 'the same file' says more than 'a vector extension'
            check_outputs_distinct({"footprints output": output, "probability raster": probability})
        check_output(probability, "probability raster", RASTER_EXTENSIONS, inputs)
    settings = check_model(model)
    input_plan = check_input_plan(raster, settings, input_options)
    if preset == SN6_EXACT_PRESET:
        check_sn6_exact_size(input_plan.grid.width, input_plan.grid.height, input_plan.raster_name,
                             input_plan.reads_as_is)
    if threshold is not None:
        settings = replace(settings, threshold=float(threshold))
    return ExtractionPlan(info, settings, input_plan)


def check_input_plan(raster, settings, input_options=None):
    """How the raster is read into the model (:func:`.reading.plan_input`): bands, scale, look
    direction and resolution decided, or refused, before anything heavy runs."""
    import rasterio

    from .reading import InputOptions, plan_input

    with rasterio.open(_path(raster, "input raster")) as dataset:
        return plan_input(dataset, settings, input_options or InputOptions(), Path(str(raster)).name)


def validate_scoring(truth, proposals, outputs: dict[str, object], *, iou=0.5, min_area=None) -> None:
    """Everything ``score`` needs: readable inputs, writable distinct outputs, sane numbers.
    ``outputs`` maps 'scored proposals' / 'missed buildings' / 'HTML report' to paths or None."""
    check_range("IoU threshold", iou, at_least=0, below=1, hint="the SpaceNet rule uses 0.5")
    check_range("Minimum area", min_area, at_least=0, hint="m² for layers, pixels for SpaceNet CSVs")
    check_vector_input(truth, "ground-truth file")
    check_vector_input(proposals, "proposals file")
    inputs = {"ground-truth file": truth, "proposals file": proposals}
    for label, value in outputs.items():
        if value:
            check_output(value, label, HTML_EXTENSIONS if "HTML" in label else VECTOR_EXTENSIONS, inputs)
    check_outputs_distinct(outputs)


def validate_training(rasters, labels, output, options, resume_file=None) -> None:
    """Everything ``train`` needs: options in range, readable rasters and label files, an
    initial model with sane metadata, a writable output that is no input, and every raster
    planned into the model's input once (bands, scale, look, pixel size: refused as extraction
    refuses them)."""
    from .training import check_training_rasters, resume_settings

    options.check()
    inputs: dict[str, object] = {}
    for index, (raster, label) in enumerate(zip(rasters, labels), start=1):
        check_raster(raster, f"training raster {index}")
        check_vector_input(label, f"label file {index}")
        inputs[f"training raster {index}"] = raster
        inputs[f"label file {index}"] = label
    start = None
    if options.initial_model not in (None, ""):
        start = check_model(None if options.initial_model == "bundled" else options.initial_model)
        if options.initial_model != "bundled":
            inputs["initial model"] = options.initial_model
    check_output(output, "output model", MODEL_EXTENSIONS, inputs)
    if resume_file:
        check_output(resume_file, "resume file", MODEL_EXTENSIONS, {**inputs, "output model": output})
    resumed = bool(options.resume and resume_file and Path(resume_file).is_file())
    check_training_rasters(rasters, options, resume_settings(resume_file) if resumed else start, resumed)


def validate_simulation(raster, labels, *, width_px, height_px, pixel_size_m, incidence_deg, looks,
                        density) -> None:
    """Everything ``simulate`` needs: two distinct writable outputs, sane numbers."""
    for label, value in (("Width", width_px), ("Height", height_px), ("Looks", looks)):
        check_range(label, value, at_least=1)
    check_range("Pixel size", pixel_size_m, above=0, hint="metres, e.g. 0.5")
    check_range("Incidence angle", incidence_deg, above=0, below=90, hint="degrees, e.g. 35")
    check_range("Building density", density, at_least=0, at_most=3, hint="default 1")
    check_output(raster, "raster", RASTER_EXTENSIONS)
    check_output(labels, "labels file", (".gpkg", ".geojson", ".json"), {"raster": raster})
