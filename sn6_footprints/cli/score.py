"""``score``: SpaceNet F1 of proposed footprints against ground truth (both variants)."""
from __future__ import annotations

from pathlib import Path

from . import CliError, finish

# Min-area defaults. SpaceNet CSVs are in pixels: the SN6 scorer's 80 px is 20 m² at 0.5 m,
# solaris's SpaceNet evaluation uses 20 px. Georeferenced layers: 20 m² for both.
CSV_MIN_AREA_PX = {"sn6": 80.0, "solaris": 20.0}
LAYER_MIN_AREA_M2 = 20.0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="SpaceNet F1 of proposed footprints against ground truth",
        description="Match proposals to ground-truth buildings with the SpaceNet rule (greedy by "
                    "confidence, IoU strictly above the threshold) per image, and print TP, FP, FN, "
                    "precision, recall and F1 per image and pooled. Inputs are two SpaceNet CSVs "
                    "(ImageId, BuildingId, PolygonWKT_Pix[, Confidence]; pixel space) or two vector "
                    "layers in any OGR format and CRS (proposals are reprojected to the truth's CRS; "
                    "geographic CRSs are measured in metres in the local UTM zone).")
    p.add_argument("truth", help="ground truth: SpaceNet CSV or vector file")
    p.add_argument("proposals", help="proposals: SpaceNet CSV or vector file")
    p.add_argument("--variant", choices=("sn6", "solaris"), default="sn6",
                   help="sn6 (default): the official SpaceNet 6 scorer (area >= min on both sides, only "
                        "images present in the proposals are scored, first part of a MULTIPOLYGON); "
                        "solaris: solaris's eval_iou_spacenet_csv (proposals need area > min, invalid "
                        "ground truth scores IoU 0, images of both files are scored)")
    p.add_argument("--min-area", type=float,
                   help="minimum footprint area: pixels for CSVs (default 80 for sn6, i.e. 20 m² at "
                        "0.5 m; 20 for solaris, its SpaceNet default), m² for vector layers (default 20)")
    p.add_argument("--iou", type=float, default=0.5,
                   help="IoU a match must exceed, strictly (default 0.5)")
    p.add_argument("--image-field",
                   help="vector layers: field holding the image id (in both layers); matching is then "
                        "per image. Default: the layers are one scene")
    p.add_argument("--confidence-field",
                   help="vector proposals: confidence field (default: a field named confidence or conf, "
                        "else file order)")
    p.add_argument("--truth-id-field", help="vector truth: field reported as the building id (default: index)")
    p.add_argument("--proposal-id-field", help="vector proposals: field reported as the id (default: index)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON on stdout")
    p.add_argument("--features", action="store_true",
                   help="with --json: add one record per proposal and per truth polygon (IoU, match, status)")
    p.add_argument("--scored-proposals", metavar="FILE",
                   help="write the proposals with status (TP/FP), IoU and matched truth id (source_fid, status, "
                        "iou, truth_fid), in the scoring CRS; format by extension")
    p.add_argument("--missed", metavar="FILE",
                   help="write the missed ground-truth buildings (FN) with their best IoU (source_fid, best_iou)")
    p.add_argument("--html", metavar="FILE", help="write an HTML report with a table per image")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(run=run)


def crs_label(crs) -> str | None:
    """``EPSG:n`` when the CRS has an authority code, else its name (short enough to print)."""
    from ..core.vector_io import crs_name, spatial_reference

    srs = spatial_reference(crs)
    if srs is None:
        return None
    authority = srs.to_authority(confidence_threshold=100)  # an exact match only, not a look-alike
    return ":".join(authority) if authority else crs_name(srs)


def run(args) -> int:
    from ..core.footprint_sources import load_for_scoring
    from ..core.scoring import score_footprints

    from ..core.validation import validate_scoring

    if args.features and not args.json:
        raise CliError("--features needs --json")
    validate_scoring(args.truth, args.proposals, {
        "scored proposals file": args.scored_proposals, "missed buildings file": args.missed,
        "HTML report": args.html}, iou=args.iou, min_area=args.min_area)
    feedback = args.feedback
    truth, proposals, crs = load_for_scoring(
        args.truth, args.proposals, image_field=args.image_field, truth_id_field=args.truth_id_field,
        proposal_id_field=args.proposal_id_field, confidence_field=args.confidence_field, feedback=feedback)
    pixel_space = truth.pixel_space
    min_area = args.min_area if args.min_area is not None else (
        CSV_MIN_AREA_PX[args.variant] if pixel_space else LAYER_MIN_AREA_M2)
    units = "px" if pixel_space else ("m²" if crs is not None else "map units²")
    report = score_footprints(
        truth.geometries, proposals.geometries, variant=args.variant, min_area=min_area,
        iou_threshold=args.iou, truth_image_ids=truth.image_ids, proposal_image_ids=proposals.image_ids,
        proposal_confidence=proposals.confidence, truth_ids=truth.feature_ids,
        proposal_ids=proposals.feature_ids, feedback=feedback)

    write_score_outputs(args, report, truth, proposals, crs)
    if args.json or args.events:
        result = report.to_dict(features=args.features)
        result["inputs"] = {"truth": str(args.truth), "proposals": str(args.proposals),
                            "area_units": units, "crs": crs_label(crs)}
        return finish(args, result)
    measured_in = f", measured in {crs_label(crs)}" if crs is not None else ""
    print(f"SpaceNet F1, variant {report.variant}: IoU > {report.iou_threshold:g}, "
          f"min area {report.min_area:g} {units}{measured_in}")
    width = max([len("pooled")] + [len(str(k)) for k in report.per_image if k is not None])
    header = f"{'image':<{width}}  {'TP':>7} {'FP':>7} {'FN':>7}  {'precision':>9} {'recall':>9} {'F1':>9}"
    print(header)
    print("-" * len(header))

    def row(name: str, score) -> str:
        return (f"{name:<{width}}  {score.tp:>7} {score.fp:>7} {score.fn:>7}  "
                f"{score.precision:>9.4f} {score.recall:>9.4f} {score.f1:>9.4f}")

    if list(report.per_image) != [None]:
        for image_id, score in report.per_image.items():
            print(row(str(image_id), score))
        print("-" * len(header))
    print(row("pooled", report.pooled))
    print(f"{len(report.per_image)} image(s) scored; F1 {report.f1!r}")
    return 0


def write_score_outputs(args, report, truth, proposals, crs) -> None:
    """The per-feature layers and the HTML report, in the CRS the scores were measured in."""
    from ..core.score_html import score_html
    from ..core.vector_io import write_footprints

    if args.scored_proposals:
        write_footprints(args.scored_proposals, proposals.geometries, {
            "source_fid": list(proposals.feature_ids), "status": list(report.proposal_status),
            "iou": [float(v) for v in report.proposal_iou], "truth_fid": list(report.proposal_match)}, crs,
            layer_name="scored_proposals", feedback=args.feedback)
    if args.missed:
        missed = [i for i, status in enumerate(report.truth_status) if status == "FN"]
        write_footprints(args.missed, [truth.geometries[i] for i in missed], {
            "source_fid": [truth.feature_ids[i] for i in missed],
            "best_iou": [float(report.truth_iou[i]) for i in missed]}, crs,
            layer_name="missed_buildings", feedback=args.feedback)
    if args.html:
        Path(args.html).write_text(score_html(report, "SpaceNet F1 of building footprints"), encoding="utf-8")
