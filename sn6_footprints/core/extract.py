"""The whole extraction: a SAR raster in, building polygons out (and a score if asked).

One function, plain inputs and outputs, so the Processing algorithm, the CLI, the tests and
the benchmarks run exactly the same pipeline.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import rasterio

from .bundled import bundled_model_path, describe_model
from .devices import describe, resolve_device, torch_versions
from ..output_safety import OutputIsInputError, OutputWriteError, same_file
from .feedback import Feedback, SubFeedback
from .engine.predictor import Predictor
from ..defaults import PROBABILITY_FORMATS, SN6_EXACT_PRESET
from .engine.probabilities import ProbabilityWriteError, predict_probabilities
from .engine.tiling import TilingOptions
from .raster_windows import RasterInfo, look_preserving_flip_axis
from .reading import InputOptions, plan_input
from .settings import ModelSettings
from .vectorize import VectorizeOptions, vectorize_probabilities
from .weights import load_model


@dataclass(frozen=True)
class ExtractionOptions:
    """Everything a user may set; ``None`` means 'the model's own setting'."""

    model_path: str | None = None
    device: str = "auto"
    tiling: TilingOptions = TilingOptions()
    threshold: float | None = None
    min_area_m2: float | None = None
    simplify_m: float = 0.5            # metres on the ground
    rotate_180: bool | None = None     # SN6 orientation flag, on top of the look direction; None: the model's
    input: InputOptions = InputOptions()
    flip_average: bool | None = None  # average with a flipped copy (2x compute); None: the model's
    precision: str = "auto"            # auto, float32, bfloat16, float16 (auto: decided per device)
    probability_path: str | None = None  # also write the blended probability raster here (GeoTIFF)
    probability_format: str = "float32"  # float32 (0-1, nodata -1) or uint8 (round(p*254), nodata 255)
    preset: str = "default"            # default, or sn6-exact: REFERENCE.md §3 step by step (PRESETS)


@dataclass
class ExtractionResult:
    geometries: list
    attributes: dict[str, list]
    crs_wkt: str | None
    settings: ModelSettings
    device: str
    seconds: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.geometries)


class TemporaryFolderError(OutputWriteError):
    """The temporary probability raster did not fit in the temporary folder (TMPDIR)."""


def _size(n_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TB"


def temporary_folder_message(folder: str, error: ProbabilityWriteError) -> str:
    """One line for a probability raster that could not be written in the temporary folder."""
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    redirect = "set TMPDIR (TEMP on Windows) to a folder on a larger disk"
    if error.code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (f"No space left in the temporary folder {folder} ({free}) for the probability raster: "
                f"free space or {redirect}.")
    if error.code == errno.EFBIG:
        return (f"File size limit reached while writing the probability raster in the temporary folder {folder} "
                f"(this process's limit, ulimit -f, or the file system's): raise the limit or {redirect}.")
    if error.code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Permission denied while writing the probability raster in the temporary folder {folder}: {redirect}."
    return f"The temporary folder {folder} ({free}) could not hold the probability raster: {error}"


def _check_probability_output(raster_path, options: ExtractionOptions) -> None:
    """Also for callers that skipped validation: an unknown format is no silent float32, and the
    input raster is never the destination."""
    if options.probability_format not in PROBABILITY_FORMATS:
        raise ValueError(f"Probability format {options.probability_format} is not known; use one of "
                         f"{', '.join(PROBABILITY_FORMATS)}.")
    if options.probability_path and same_file(os.path.expanduser(str(options.probability_path)), raster_path):
        raise OutputIsInputError(f"The probability raster {os.path.basename(str(options.probability_path))} "
                                 "would overwrite the input raster; choose another output file.")


def _partial_path(destination) -> str:
    """A new file beside the destination (same folder, so the final rename is atomic and never
    crosses disks), hidden and named after it. GDAL creates it, so it gets the user's usual
    permissions (umask), not mkstemp's owner-only ones."""
    folder, name = os.path.split(os.path.abspath(os.path.expanduser(str(destination))))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.partial.tif")


def _remove(path) -> None:
    for leftover in (path, path + ".aux.xml"):
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            pass


def _format_note(fmt: str) -> str:
    if fmt == "uint8":
        return "uint8: round(p x 254), 255 = nodata"
    return "float32: 0-1, -1 = nodata"


def extract_footprints(raster_path, options: ExtractionOptions = ExtractionOptions(),
                       feedback: Feedback | None = None, input_plan=None) -> ExtractionResult:
    """Run the model over ``raster_path`` tile by tile and return the footprints (``input_plan``:
    the one validation already made for these options, so the raster is not sampled twice). The temporary
    probability raster is removed on every way out, a :class:`Cancelled` raised by a signal
    handler of the caller's included (the CLI makes SIGTERM one)."""
    feedback = feedback or Feedback()
    _check_probability_output(raster_path, options)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model, settings = load_model(options.model_path or bundled_model_path())
    if options.threshold is not None:
        settings = replace(settings, threshold=options.threshold)
    if options.min_area_m2 is not None:
        settings = replace(settings, min_area_m2=options.min_area_m2)
    with rasterio.open(raster_path) as dataset:
        info = RasterInfo.of(dataset)
        plan = input_plan or plan_input(dataset, settings, options.input, Path(str(raster_path)).name)
    for line in plan.log_lines():
        feedback.info(line)
    if options.rotate_180 is None:   # the look direction's turns, plus the checkpoint's own 180° flag
        rotate_180 = settings.rotate_180
        turns = (plan.quarter_turns + (2 if rotate_180 else 0)) % 4
    else:                            # the SN6 orientation flag set by hand replaces the look direction's turns
        rotate_180 = options.rotate_180
        turns = 2 if rotate_180 else 0
        if turns != plan.quarter_turns:
            feedback.info(f"Rotate 180° is set to {'yes' if rotate_180 else 'no'}: that, not the look direction, "
                          "decides the rotation.")
    flip_average = settings.flip_average if options.flip_average is None else options.flip_average
    exact = options.preset == SN6_EXACT_PRESET
    if exact:  # the baseline's steps: no flip averaging, float32, its own tiling (logged by the preset)
        flip_average = False
    device = resolve_device(options.device)
    feedback.info(f"Model: UNet11 width {settings.width:g}, bands {', '.join(settings.band_names)} — "
                  f"{describe_model(options.model_path, settings)}")
    feedback.info(f"PyTorch {torch_versions()}")
    predictor = Predictor(model, device, quarter_turns=turns,
                          flip_axis=look_preserving_flip_axis(settings.look_direction) if flip_average else None,
                          precision="float32" if exact else options.precision)
    feedback.info(f"Device: {describe(device, predictor.autocast)}; raster {info.width} x {info.height} px"
                  f"{'' if plan.reads_as_is else f' (model grid {plan.grid.width} x {plan.grid.height} px)'}, "
                  f"tiles {options.tiling.tile_size_px} px, overlap {options.tiling.effective_overlap_px} px"
                  f"{f', turned {90 * turns}° counter-clockwise' if turns else ''}"
                  f"{', averaged with a flipped copy' if flip_average else ''}")
    if predictor.precision_note:
        feedback.warning(f"Precision {options.precision}: {predictor.precision_note}")
    seconds["load"] = time.perf_counter() - started
    partial = _partial_path(options.probability_path) if options.probability_path else None
    try:
        with tempfile.TemporaryDirectory(prefix="sn6-footprints-") as scratch:
            probability_path = os.path.join(scratch, "probability.tif")
            t0 = time.perf_counter()
            if exact:
                from .engine.sn6_exact import sn6_exact_footprints
                geometries, attributes, stage_seconds = sn6_exact_footprints(
                    raster_path, predictor, settings, plan, feedback, deliver_path=partial,
                    deliver_format=options.probability_format)
                seconds.update(stage_seconds)
            else:
                grid = predict_probabilities(raster_path, probability_path, predictor, settings, plan, options.tiling,
                                             SubFeedback(feedback, 0, 90), deliver_path=partial,
                                             deliver_format=options.probability_format)
                seconds["inference"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                vectorize = VectorizeOptions.for_model(settings, grid, options.simplify_m)
                geometries, attributes = vectorize_probabilities(probability_path, grid, vectorize,
                                                                 SubFeedback(feedback, 90, 100))
                seconds["vectorize"] = time.perf_counter() - t0
        feedback.check_cancelled()  # cancelled after the last strip: no result, nothing to write
        if partial is not None:  # complete: only now does it take the user's name
            os.replace(partial, os.path.expanduser(str(options.probability_path)))
            partial = None
            feedback.info(f"Building probability ({_format_note(options.probability_format)}) -> "
                          f"{options.probability_path}")
    except ProbabilityWriteError as exc:
        if partial is not None and exc.path == partial:  # the user's file: its folder's words, not TMPDIR's
            raise OutputWriteError(str(exc).replace(os.path.basename(partial),
                                                    os.path.basename(options.probability_path))) from None
        # told once the scratch folder is gone: the free space is the user's
        raise TemporaryFolderError(temporary_folder_message(os.path.dirname(scratch), exc)) from None
    finally:
        if partial is not None:  # failed or cancelled: no half-written probability raster is left
            _remove(partial)
    seconds["total"] = time.perf_counter() - started
    feedback.info(f"{len(geometries)} building footprint(s) in {seconds['total']:.1f} s")
    return ExtractionResult(geometries, attributes, info.crs_wkt, settings, describe(device, predictor.autocast),
                            seconds)


def score_extraction(result: ExtractionResult, truth_geometries: list, variant: str = "sn6"):
    """Score the footprints against ground truth given in the raster's CRS (SpaceNet rule,
    the model's minimum area). A geographic CRS is measured in metres (local UTM zone)."""
    from .scoring import score_footprints
    from .vector_io import metric_crs, reproject

    proposals = result.geometries
    metric = metric_crs(result.crs_wkt, list(proposals) + list(truth_geometries))
    if metric != result.crs_wkt:
        proposals = reproject(proposals, result.crs_wkt, metric)
        truth_geometries = reproject([g for g in truth_geometries if g is not None], result.crs_wkt, metric)
    return score_footprints(truth_geometries, proposals, variant=variant,
                            min_area=result.settings.min_area_m2,
                            proposal_confidence=result.attributes["confidence"])
