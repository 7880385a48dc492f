#!/usr/bin/env python3
"""Score models (and the non-learned span baseline) on the held-out simulated sets, on the CPU.

    .venv/bin/python scripts/evaluate_models.py --models A.pt [B.pt ...] [--span-baseline]
        [--precisions float32 bfloat16] [--sets default-north dense ...] [--scenes-per-set 2] [--size 1024]
        [--tiles 512] [--workdir build/heldout] [--threads N] [--json out.json] [--markdown]

Why: the issue asks for the bundled model's object F1 on held-out scenes beside a baseline that
learned nothing, and for two widths compared on accuracy and CPU speed before one is chosen;
this prints that table (plain text, or Markdown ready for the model card with ``--markdown``)
and writes every count, precision and recall with ``--json``. Scenes come from
:mod:`sn6_footprints.core.heldout` (seeds 20000-29999, never used for training or tuning) and
are cached in ``--workdir``. Inference runs on the CPU (``device="cpu"``); Mpx/s is pooled over
all scenes, from inference + vectorising time (model loading excluded). With several scenes per
set each F1 is followed by ± its bootstrap standard deviation over the set's scenes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sn6_footprints.core.feedback import PrintFeedback  # noqa: E402
from sn6_footprints.core.heldout import (HELDOUT_SCENE_PX, HELDOUT_SETS, SCENES_PER_SET, evaluate,  # noqa: E402
                                         make_heldout_scenes)

SPAN_BASELINE = "span baseline"


def model_row(path: Path, precision: str = "float32", tta_scales: tuple = (), tile_px: int = 0) -> tuple[dict, object]:
    """(description of a checkpoint, extract callable running it on the CPU in ``precision``,
    with multi-scale test-time augmentation at ``tta_scales`` when given, on tiles of
    ``tile_px`` (0: Auto, the default))."""
    from sn6_footprints.core.engine.tiling import TilingOptions
    from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
    from sn6_footprints.core.weights import load_model

    model, settings = load_model(path)
    name = path.stem if precision == "float32" else f"{path.stem} ({precision})"
    if tta_scales:
        name += f" (TTA {','.join(f'{s:g}' for s in tta_scales)})"
    if tile_px:
        name += f" ({tile_px} px tiles)"
    info = {"name": name, "path": str(path), "precision": precision, "kind": "model", "width": settings.width,
            "parameters": sum(p.numel() for p in model.parameters()),
            "file_mb": path.stat().st_size / 2 ** 20, "description": settings.description}
    options = ExtractionOptions(model_path=str(path), device="cpu", precision=precision, tta_scales=tuple(tta_scales),
                                tiling=TilingOptions(tile_size_px=tile_px))
    return info, lambda raster: extract_footprints(raster, options)


# A seed threshold no probability product reaches: no seeds, every footprint blob stays whole,
# so the row is the instance model's footprint channel under the plain threshold.
NO_SEEDS = 0.999999


def unsplit_row(path: Path, scratch: Path) -> tuple[dict, object]:
    """An instance-aware checkpoint without its watershed: what the splitting contributes."""
    from dataclasses import replace

    from sn6_footprints.core.weights import load_model, save_model

    model, settings = load_model(path)
    copy = scratch / f"{path.stem}-unsplit.pt"
    save_model(copy, model, replace(settings, seed_threshold=NO_SEEDS))
    info, extract = model_row(copy)
    info.update(name=f"{path.stem} (no watershed)", path=str(path))
    return info, extract


def baseline_row() -> tuple[dict, object]:
    from sn6_footprints.core.span_baseline import SpanBaselineOptions, baseline_settings, extract_span_baseline

    options = SpanBaselineOptions()
    info = {"name": SPAN_BASELINE, "path": None, "kind": "span-baseline", "width": None, "parameters": 0,
            "file_mb": 0.0, "description": baseline_settings(options).description}
    return info, lambda raster: extract_span_baseline(raster, options)


def summarise(info: dict, report: dict) -> dict:
    megapixels = sum(e["megapixels"] for e in report.values())
    seconds = sum(e["processing_seconds"] for e in report.values())
    return {**info, "cpu_megapixels_per_s": megapixels / max(seconds, 1e-9), "sets": report}


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _f1_cell(entry: dict) -> str:
    """Pooled F1, with its bootstrap standard deviation over scenes when there are several."""
    sd = entry.get("f1_bootstrap_sd")
    return f"{entry['f1']:.3f}" if sd is None else f"{entry['f1']:.3f} ± {sd:.3f}"


def table(rows: list[dict], sets: list[str], markdown: bool) -> str:
    header = ["model", "width", "params", "file MB", "CPU Mpx/s"] + [f"F1 {s}" for s in sets]
    lines = []
    for row in rows:
        lines.append([row["name"], _cell(row["width"], "g"), f"{row['parameters']:,}",
                      _cell(row["file_mb"] if row["kind"] == "model" else None, ".2f"),
                      f"{row['cpu_megapixels_per_s']:.2f}"] + [_f1_cell(row["sets"][s]) for s in sets])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=[], type=Path, help="checkpoints to score")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=("float32", "bfloat16", "float16"),
                        help="score each model in each of these CPU precisions (default float32)")
    parser.add_argument("--span-baseline", action="store_true", help="also score the non-learned span baseline")
    parser.add_argument("--tta-scales", nargs="*", default=[], type=float, metavar="S",
                        help="also score each model with multi-scale test-time augmentation at these scales")
    parser.add_argument("--tiles", nargs="*", default=[], type=int, metavar="PX",
                        help="also score each model on tiles of these sizes (the default is Auto)")
    parser.add_argument("--without-watershed", action="store_true",
                        help="also score each instance-aware model with its watershed off (plain threshold)")
    parser.add_argument("--sets", nargs="+", default=list(HELDOUT_SETS), choices=list(HELDOUT_SETS))
    parser.add_argument("--scenes-per-set", type=int, default=SCENES_PER_SET)
    parser.add_argument("--size", type=int, default=HELDOUT_SCENE_PX, help="scene side in px")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "heldout", help="scene cache")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="write every count, P, R and F1 here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--quiet", action="store_true", help="no per-scene lines")
    args = parser.parse_args(argv)
    if not args.models and not args.span_baseline:
        parser.error("give --models and/or --span-baseline")
    for path in args.models:
        if not path.is_file():
            parser.error(f"no model file {path}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    feedback = PrintFeedback(stream=sys.stderr, quiet=args.quiet)
    scenes = make_heldout_scenes(args.workdir / f"{args.size}px", args.sets, args.size, args.scenes_per_set,
                                 feedback)
    candidates = [model_row(path, precision) for path in args.models for precision in args.precisions]
    if args.tta_scales:
        candidates += [model_row(path, args.precisions[0], tuple(args.tta_scales)) for path in args.models]
    candidates += [model_row(path, args.precisions[0], tile_px=tile) for path in args.models for tile in args.tiles]
    scratch = tempfile.TemporaryDirectory(prefix="sn6-evaluate-")
    if args.without_watershed:
        from sn6_footprints.core.weights import load_model

        candidates += [unsplit_row(path, Path(scratch.name)) for path in args.models
                       if load_model(path)[1].splits_instances]
    if args.span_baseline:
        candidates.append(baseline_row())
    rows = []
    for info, extract in candidates:
        print(f"== {info['name']}", file=sys.stderr)
        rows.append(summarise(info, evaluate(extract, scenes, feedback)))
    print(table(rows, args.sets, args.markdown))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"sets": {s: {**HELDOUT_SETS[s], "seeds": HELDOUT_SETS[s]["seeds"][:args.scenes_per_set]}
                            for s in args.sets}, "scenes_per_set": args.scenes_per_set,
                   "size_px": args.size, "torch_threads": torch.get_num_threads(), "scoring": "SpaceNet sn6 rule",
                   "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
