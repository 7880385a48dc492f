#!/usr/bin/env python3
"""Traced against regular outlines on held-out scenes: F1, share of right angles, vertices per building.

    .venv/bin/python scripts/measure_outlines.py [--model M.pt] [--sets default-north dense]
        [--scenes-per-set 4] [--package-python /tmp/brvenv/bin/python] [--markdown]

Why (issue 14): regular outlines are for users who want map-ready footprints; they must not
cost buildings. Each scene is extracted with ``--outline traced`` and ``--outline regular``
(the same model and probabilities) and scored with the SpaceNet rule. ``--package-python``
names a Python that has the ``buildingregulariser`` package (PyPI; it needs numpy >= 2, so it
cannot live in the plugin's environment): the traced footprints are then also regularised by
it (its defaults, 45° edges off, 1 m simplification: the same as ours) and scored, so the two
implementations are compared on the same polygons. Scenes come from core.heldout (never
trained or tuned on), cached in --workdir.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sn6_footprints.core.heldout import HELDOUT_SETS, make_heldout_scenes  # noqa: E402

PACKAGE_SCRIPT = """
import sys, geopandas, buildingregulariser
frame = geopandas.read_file(sys.argv[1])
out = buildingregulariser.regularize_geodataframe(frame, simplify_tolerance=1.0, allow_45_degree=False,
                                                  allow_circles=False)
out.to_file(sys.argv[2], driver="GPKG")
print(buildingregulariser.__version__)
"""


def shape_figures(polygons) -> dict:
    from sn6_footprints.core.postprocessing.outlines import right_angle_share, vertices_per_building

    polygons = [p for g in polygons for p in getattr(g, "geoms", [g]) if not p.is_empty]
    return {"right_angles": right_angle_share(polygons), "vertices": vertices_per_building(polygons)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the bundled model)")
    parser.add_argument("--sets", nargs="+", default=["default-north", "default-south", "dense", "density-2"],
                        choices=list(HELDOUT_SETS))
    parser.add_argument("--scenes-per-set", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "heldout")
    parser.add_argument("--package-python", help="a Python with buildingregulariser installed")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    from sn6_footprints.core.extract import ExtractionOptions, extract_footprints, score_extraction
    from sn6_footprints.core.vector_io import read_footprints, write_footprints

    scenes = make_heldout_scenes(args.workdir / f"{args.size}px", args.sets, args.size, args.scenes_per_set)
    variants = ["traced", "regular"] + (["buildingregulariser"] if args.package_python else [])
    totals = {v: {"tp": 0, "fp": 0, "fn": 0, "polygons": [], "seconds": 0.0} for v in variants}
    package_version = None
    for _, raster, labels in scenes:
        truth = read_footprints(labels).geometries
        for outline in ("traced", "regular"):
            options = ExtractionOptions(model_path=str(args.model) if args.model else None, device="cpu",
                                        outline=outline)
            result = extract_footprints(raster, options)
            report = score_extraction(result, truth)
            entry = totals[outline]
            entry["tp"], entry["fp"], entry["fn"] = entry["tp"] + report.tp, entry["fp"] + report.fp, \
                entry["fn"] + report.fn
            entry["polygons"] += result.geometries
            entry["seconds"] += result.seconds.get("vectorize", 0.0)
            if outline == "traced" and args.package_python:
                with tempfile.TemporaryDirectory() as scratch:
                    source, target = Path(scratch) / "traced.gpkg", Path(scratch) / "regular.gpkg"
                    write_footprints(source, result.geometries, result.attributes, result.crs_wkt)
                    done = subprocess.run([args.package_python, "-c", PACKAGE_SCRIPT, str(source), str(target)],
                                          capture_output=True, text=True, check=True)
                    package_version = done.stdout.strip().splitlines()[-1]
                    regular = read_footprints(target).geometries
                result.geometries = regular
                report = score_extraction(result, truth)
                entry = totals["buildingregulariser"]
                entry["tp"], entry["fp"], entry["fn"] = entry["tp"] + report.tp, entry["fp"] + report.fp, \
                    entry["fn"] + report.fn
                entry["polygons"] += regular
        print(f"{raster.name}: done", file=sys.stderr, flush=True)

    header = ["outlines", "F1", "precision", "recall", "right angles", "vertices / building"]
    rows = []
    for variant, entry in totals.items():
        tp, fp, fn = entry["tp"], entry["fp"], entry["fn"]
        shape = shape_figures(entry["polygons"])
        name = variant if variant != "buildingregulariser" else f"buildingregulariser {package_version}"
        rows.append([name, f"{2 * tp / max(1, 2 * tp + fp + fn):.3f}", f"{tp / max(1, tp + fp):.3f}",
                     f"{tp / max(1, tp + fn):.3f}", f"{shape['right_angles']:.1%}", f"{shape['vertices']:.1f}"])
    print(f"{len(scenes)} held-out scenes ({', '.join(args.sets)}, {args.scenes_per_set} each, {args.size} px)")
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|---|" + "---:|" * (len(header) - 1))
        print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    else:
        for row in [header] + rows:
            print("  ".join(f"{cell:>22}" for cell in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
