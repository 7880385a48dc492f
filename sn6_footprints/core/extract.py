"""The whole extraction: a SAR raster in, building polygons out (and a score if asked).

One function, plain inputs and outputs, so the Processing algorithm, the CLI, the tests and
the benchmarks run exactly the same pipeline.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import rasterio
from rasterio.crs import CRS

from .bundled import bundled_model_path, describe_model
from .devices import describe, resolve_device, torch_versions
from ..output_safety import OutputIsInputError, OutputWriteError, same_file
from .feedback import Feedback, SubFeedback
from .engine.predictor import Predictor
from ..defaults import PROBABILITY_FORMATS, REGULAR_OUTLINE, SN6_EXACT_PRESET
from .engine.probabilities import ProbabilityWriteError, probability_rasters, report_skipped
from .engine.stream import run_engine
from .engine.tiling import TilingOptions
from .raster_windows import RasterInfo, look_preserving_flip_axis
from .reading import InputOptions, plan_input
from .settings import ModelSettings
from .postprocessing.outlines import MIN_IOU
from .vectorize import BlobCollector, InstanceCollector, VectorizeOptions
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
    tta_scales: tuple[float, ...] = ()  # multi-scale test-time augmentation, e.g. (0.8, 1.0, 1.25); (): none
    reader_threads: int | None = None  # threads reading windows ahead of the model; None: 1 on a CPU, up to 4 on CUDA
    outline: str = "traced"            # traced, or regular: orthogonal walls and corners (OUTLINE_STYLES)


@dataclass
class ExtractionResult:
    """The footprints and how they were made. ``seconds``: load, processing (wall time after
    loading), total, and the busy seconds of each engine stage (read, wait, model, blend,
    vectorize, write): the stages overlap, so these may add up to more than processing."""

    geometries: list
    attributes: dict[str, list]
    crs_wkt: str | None
    settings: ModelSettings
    device: str
    seconds: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.geometries)


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


def default_reader_threads(device) -> int:
    """On a CPU the model already keeps every core busy, so one reader overlaps the reads; a GPU
    must never wait for GeoTIFF decoding, so several readers feed it."""
    if device.type == "cuda":
        return max(1, min(4, (os.cpu_count() or 2) - 1))
    return 1


def _engine_footprints(raster_path, predictor: Predictor, settings: ModelSettings, plan, info: RasterInfo,
                       options: ExtractionOptions, deliver_path, feedback: Feedback, seconds: dict,
                       observe_rows=None) -> tuple:
    """This plugin's engine: blended rows go straight to the vectoriser (and to the probability
    raster when asked), on the sink thread while the model runs; no temporary raster."""
    grid = plan.grid
    vectorize = VectorizeOptions.for_model(settings, grid, options.simplify_m, options.outline)
    if options.outline == REGULAR_OUTLINE:
        feedback.info("Outlines are regularised: straight walls along each building's two main directions, "
                      "right-angled corners (kept as traced where that would move the footprint: IoU < "
                      f"{MIN_IOU:g})")
    if settings.splits_instances:
        collector = InstanceCollector.for_settings(grid, vectorize, settings)
        feedback.info(f"Touching buildings are split by a marker-based watershed on the model's "
                      f"{', '.join(settings.outputs[1:])} output(s): seeds where body x (1 - contact) x (1 - edge) "
                      f"> {settings.seed_threshold:g}, at least {settings.min_seed_area_m2:g} m²")
    else:
        collector = BlobCollector.for_options(grid, vectorize)
    targets = [(deliver_path, options.probability_format)] if deliver_path is not None else []
    crs = CRS.from_wkt(info.crs_wkt) if info.crs_wkt else None
    with probability_rasters(targets, grid, crs) as rasters:
        stats = run_engine(raster_path, predictor, settings, plan,
                           [("vectorize", collector.add)] + [("write", r.write) for r in rasters]
                           + ([("observe", observe_rows)] if observe_rows is not None else []),
                           options.tiling, SubFeedback(feedback, 0, 90),
                           reader_threads=options.reader_threads or default_reader_threads(predictor.device))
    report_skipped(stats, feedback)
    t0 = time.perf_counter()
    geometries, attributes = collector.polygons(grid, vectorize, SubFeedback(feedback, 90, 100))
    seconds.update(stats.seconds)
    seconds["vectorize"] = seconds.get("vectorize", 0.0) + time.perf_counter() - t0
    return geometries, attributes


def extract_footprints(raster_path, options: ExtractionOptions = ExtractionOptions(),
                       feedback: Feedback | None = None, input_plan=None,
                       write_outputs: Callable[[ExtractionResult], None] | None = None,
                       observe_rows: Callable | None = None) -> ExtractionResult:
    """Run the model over ``raster_path`` tile by tile and return the footprints (``input_plan``:
    the one validation already made for these options, so the raster is not sampled twice).

    ``write_outputs`` (the caller's footprint writer) runs on the result before the probability
    raster takes the user's name: if it fails, no probability raster is delivered either, so
    the outputs are complete or absent together. The partial probability raster is removed on
    every way out, a :class:`Cancelled` raised by a signal handler of the caller's included
    (the CLI makes SIGTERM one).

    ``observe_rows`` also receives every blended block of rows (:class:`~.engine.stream.BlendedRows`,
    every output channel), so a calibration can try many post-processing settings on one run
    of the model (refused with the sn6-exact preset, which has no blended rows)."""
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
    if exact and observe_rows is not None:
        raise ValueError("The sn6-exact preset has no blended rows to observe; use the default preset.")
    if exact:  # the baseline's steps: no flip averaging, float32, its own tiling (logged by the preset)
        flip_average = False
    device = resolve_device(options.device)
    feedback.info(f"Model: UNet11 width {settings.width:g}, bands {', '.join(settings.band_names)} — "
                  f"{describe_model(options.model_path, settings)}")
    feedback.info(f"PyTorch {torch_versions()}")
    predictor = Predictor(model, device, quarter_turns=turns,
                          flip_axis=look_preserving_flip_axis(settings.look_direction) if flip_average else None,
                          precision="float32" if exact else options.precision,
                          scales=() if exact else tuple(options.tta_scales))
    windows = ("the SpaceNet 6 baseline's 512 px windows stepped by 512" if exact else
               options.tiling.describe(plan.grid.width, plan.grid.height))
    feedback.info(f"Device: {describe(device, predictor.autocast)}; raster {info.width} x {info.height} px"
                  f"{'' if plan.reads_as_is else f' (model grid {plan.grid.width} x {plan.grid.height} px)'}, "
                  f"{windows}{f', turned {90 * turns}° counter-clockwise' if turns else ''}"
                  f"{', averaged with a flipped copy' if flip_average else ''}")
    if len(predictor.scales) > 1 or predictor.scales[0] != 1.0:
        feedback.info(f"Multi-scale test-time augmentation at scales {', '.join(f'{s:g}' for s in predictor.scales)}: "
                      f"{predictor.passes_per_tile:.1f}x the model's compute of one plain pass per tile")
    if predictor.precision_note:
        feedback.warning(f"Precision {options.precision}: {predictor.precision_note}")
    seconds["load"] = time.perf_counter() - started
    partial = _partial_path(options.probability_path) if options.probability_path else None
    try:
        t0 = time.perf_counter()
        if exact:
            from .engine.sn6_exact import sn6_exact_footprints
            geometries, attributes, stage_seconds = sn6_exact_footprints(
                raster_path, predictor, settings, plan, feedback, deliver_path=partial,
                deliver_format=options.probability_format, batch_size=options.tiling.batch_size)
            seconds.update(stage_seconds)
        else:
            geometries, attributes = _engine_footprints(raster_path, predictor, settings, plan, info, options,
                                                        partial, feedback, seconds, observe_rows)
        seconds["processing"] = time.perf_counter() - t0  # wall time of the whole run after loading
        feedback.check_cancelled()  # cancelled after the last strip: no result, nothing to write
        result = ExtractionResult(geometries, attributes, info.crs_wkt, settings,
                                  describe(device, predictor.autocast), seconds)
        if write_outputs is not None:
            write_outputs(result)
        if partial is not None:  # complete: only now does it take the user's name
            os.replace(partial, os.path.expanduser(str(options.probability_path)))
            partial = None
            feedback.info(f"Building probability ({_format_note(options.probability_format)}) -> "
                          f"{options.probability_path}")
    except ProbabilityWriteError as exc:
        if partial is not None and exc.path == partial:  # the user's file, named as the user named it
            raise OutputWriteError(str(exc).replace(os.path.basename(partial),
                                                    os.path.basename(options.probability_path))) from None
        raise
    finally:
        if partial is not None:  # failed or cancelled: no half-written probability raster is left
            _remove(partial)
    seconds["total"] = time.perf_counter() - started
    feedback.info(f"{len(geometries)} building footprint(s) in {seconds['total']:.1f} s")
    return result


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
