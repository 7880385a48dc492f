"""``extract``: a SAR raster in, a footprint vector file out (and a score with --truth)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import finish
from ..defaults import (DEFAULT_PRESET, OUTLINE_STYLES, PRECISION_CHOICES, PRESETS, PROBABILITY_FORMATS, TRACED_OUTLINE,
                        parse_scales)
from .input_arguments import add_input_arguments, input_options

CHOICE = {"model": None, "yes": True, "no": False}  # "model": the checkpoint's own setting


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("extract", help="extract building footprints from a SAR raster",
                              description="Run the model tile by tile over a SAR raster and write "
                                          "one polygon per building (GeoPackage/GeoJSON/Shapefile by extension).")
    p.add_argument("raster", help="SAR raster (the model's bands, e.g. 4 bands HH, HV, VH, VV)")
    p.add_argument("output", help="output vector file (.gpkg, .geojson, .json, .shp, .fgb); not an input "
                                    "nor one of its sidecar files")
    p.add_argument("--model", help="checkpoint (default: the bundled model)")
    p.add_argument("--truth", help="ground-truth footprint polygons to score against: any OGR format and CRS, or a "
                                   "SpaceNet CSV in pixel coordinates (ImageId, BuildingId, PolygonWKT_Pix), placed "
                                   "with the raster's geotransform")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--tile-size", type=int, default=0,
                   help="px, a multiple of 32, at least 64; 0 (default): Auto, the tile from 512 to 1024 px that "
                        "computes the fewest pixels on the raster (logged)")
    p.add_argument("--overlap", type=int, default=64, help="px, 0 or more; above half a tile: half a tile (default 64)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="tiles per forward pass (default 4); with Auto tiles, as many pixels as this many 512 px tiles "
                        "(1 keeps 512 px tiles: the least memory)")
    p.add_argument("--threshold", type=float, help="probability threshold (default: the model's, 0.5)")
    p.add_argument("--min-area", type=float, help="minimum building area in m² (default: the model's, 20)")
    p.add_argument("--simplify", type=float, default=0.5,
                   help="tolerance in metres on the ground, whatever the CRS (default 0.5; 0 keeps the pixel outline)")
    add_input_arguments(p)
    p.add_argument("--rotate-180", choices=("model", "yes", "no"), default="model",
                   help="SN6 orientation flag, set by hand: yes/no replaces the rotation the look direction gives "
                        "(default 'model': the look direction decides, plus the model's own flag)")
    p.add_argument("--flip-average", choices=("model", "yes", "no"), default="model",
                   help="average every tile's prediction with that of its copy flipped along the look direction "
                        "(twice the compute; default 'model': the model's setting, on for the bundled model)")
    p.add_argument("--probability", metavar="PATH",
                   help="also write the blended building probability raster here (GeoTIFF .tif/.tiff, the model "
                        "grid, tiled, deflate); not an input nor the footprints output; written complete or not at all")
    p.add_argument("--probability-format", choices=PROBABILITY_FORMATS, default="float32",
                   help="float32: probability 0-1, nodata -1 (default); uint8: round(p x 254), nodata 255 "
                        "(a quarter of the size; 0.5 is 127)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="arithmetic of the model's forward pass (default auto: bf16 autocast on CUDA GPUs and on CPUs "
                        "with AMX/AVX512-BF16, else float32; the log says what ran); float32: probabilities that do "
                        "not depend on the CPU; a precision the CPU only emulates runs slowly, with a warning")
    p.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                   help="default: this plugin's engine, with the options above; sn6-exact: the SpaceNet 6 baseline's "
                        "inference step by step (512 px windows stepped by 512, the last snapped to the edge, no "
                        "padding; logits averaged, logit > 0; 4-connected blobs under 80 px removed; polygons "
                        "buffer(0), simplified by 0.5 px; confidence 1), so the official weights give the published "
                        "baseline's polygons; it ignores --tile-size, --overlap, --threshold, --min-area, --simplify, "
                        "--flip-average and --precision (float32), and needs a raster of 512 x 512 px or more")
    p.add_argument("--tta-scales", type=_scales, default=(), metavar="S,S,...",
                   help="multi-scale test-time augmentation: also predict every tile resized by these scales "
                        "(0.5-2) and average the probabilities, e.g. 0.8,1,1.25 (about 3.2x the compute; the log "
                        "gives the cost); default: none")
    p.add_argument("--outline", choices=OUTLINE_STYLES, default=TRACED_OUTLINE,
                   help="traced: the outline of the probabilities, simplified by --simplify (default); regular: "
                        "straight walls along each building's two main directions and right-angled corners, for "
                        "map-ready footprints (simplified by at least 1 m first; a building whose regular outline "
                        "would overlap the traced one less than IoU 0.7 keeps the traced one)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def _scales(text: str) -> tuple[float, ...]:
    try:
        return parse_scales(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args) -> int:
    from ..core.validation import validate_extraction

    # Every check before the model loads or anything is written; the truth is read now too.
    plan = validate_extraction(
        args.raster, args.output, model=args.model, truth=args.truth, threshold=args.threshold,
        min_area_m2=args.min_area, simplify=args.simplify, tile_size_px=args.tile_size, overlap_px=args.overlap,
        batch_size=args.batch_size, input_options=input_options(args), probability=args.probability,
        probability_format=args.probability_format, precision=args.precision, preset=args.preset,
        tta_scales=args.tta_scales, outline=args.outline, feedback=args.feedback)
    from ..core.extract import ExtractionOptions, extract_footprints, score_extraction
    from ..core.engine.tiling import TilingOptions
    from ..core.truth import read_extraction_truth, scored_truth_message
    from ..core.vector_io import write_footprints

    truth = (read_extraction_truth(args.truth, plan.raster_info, Path(args.raster).name, args.feedback)
             if args.truth else None)
    options = ExtractionOptions(
        model_path=args.model, device=args.device,
        tiling=TilingOptions(args.tile_size, args.overlap, args.batch_size),
        threshold=args.threshold, min_area_m2=args.min_area, simplify_m=args.simplify,
        rotate_180=CHOICE[args.rotate_180], flip_average=CHOICE[args.flip_average], input=input_options(args),
        precision=args.precision, probability_path=args.probability or None,
        probability_format=args.probability_format, preset=args.preset, tta_scales=args.tta_scales,
        outline=args.outline)
    # the footprints are written before the probability raster takes its name: both or neither
    result = extract_footprints(args.raster, options, args.feedback, input_plan=plan.input_plan,
                                write_outputs=lambda r: write_footprints(args.output, r.geometries, r.attributes,
                                                                         r.crs_wkt, feedback=args.feedback))
    summary = {"buildings": len(result), "output": str(args.output), "device": result.device,
               "seconds": {k: round(v, 3) for k, v in result.seconds.items()}}
    if args.probability:
        summary.update(probability=str(args.probability), probability_format=args.probability_format)
    if args.truth:
        report = score_extraction(result, truth.geometries)
        args.feedback.info(scored_truth_message(report, result.settings.min_area_m2))
        summary.update(tp=report.tp, fp=report.fp, fn=report.fn, precision=report.precision,
                       recall=report.recall, f1=report.f1)
    text = f"{summary['buildings']} buildings -> {args.output} ({summary['seconds']['total']:.1f} s on {result.device})"
    if args.truth:
        text += (f"\nTP {summary['tp']}  FP {summary['fp']}  FN {summary['fn']}  precision {summary['precision']:.4f}"
                 f"  recall {summary['recall']:.4f}  F1 {summary['f1']:.4f}")
    return finish(args, summary, text)
