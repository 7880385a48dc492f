"""Benchmark: SpaceNet F1 scoring at city scale, indexed scorer against the reference loop.

Scores N synthetic-but-realistic building footprints against N proposals (a city grid of
rectangles and L-shapes in UTM coordinates; proposals are shifted, scaled, rotated and
vertex-jittered copies of 80 % of the buildings plus false alarms between them) with
``sn6_footprints.core.scoring.score_footprints`` and, on the sizes where it finishes within
its time budget, with the straightforward loop the reference scorers use (each proposal
tested against every remaining building of the image). Prints seconds and polygons per
second for both and checks that TP/FP/FN agree wherever both ran.

    .venv/bin/python bench/bench_scoring.py [--sizes 1000 10000 100000] [--loop-budget 60]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sn6_footprints.core.scoring import score_footprints  # noqa: E402

ORIGIN = np.array([590_000.0, 5_750_000.0])  # UTM metres, as a georeferenced layer would be
PLOT_SPACING = 24.0                          # metres between building centres
MIN_AREA = 20.0
IOU_THRESHOLD = 0.5


def _place(shapes: np.ndarray, centres: np.ndarray, angles: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Rotate, scale and move (n, k, 2) outlines given around the origin."""
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x, y = shapes[..., 0] * scales[:, None], shapes[..., 1] * scales[:, None]
    return np.stack([x * cos - y * sin, x * sin + y * cos], axis=-1) + centres[:, None, :]


def _outlines(rng: np.random.Generator, n: int, l_fraction: float = 0.3) -> list[np.ndarray]:
    """n building outlines around the origin, rectangles and L-shapes (metres)."""
    n_l = int(n * l_fraction)
    w, h = rng.uniform(6, 20, n - n_l), rng.uniform(6, 16, n - n_l)
    rectangles = np.stack([np.stack(c, 1) for c in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2),
                                                    (-w / 2, h / 2))], 1)
    w, h = rng.uniform(10, 20, n_l), rng.uniform(10, 16, n_l)
    cut_w, cut_h = w * rng.uniform(0.3, 0.6, n_l), h * rng.uniform(0.3, 0.6, n_l)
    ls = np.stack([np.stack(c, 1) for c in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2 - cut_h),
                                            (w / 2 - cut_w, h / 2 - cut_h), (w / 2 - cut_w, h / 2),
                                            (-w / 2, h / 2))], 1)
    return [rectangles, ls]


def city(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` buildings on a jittered grid and ``n`` proposals with confidences."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.divmod(np.arange(n), side), 1)[:, ::-1] * PLOT_SPACING
    centres = ORIGIN + grid + rng.normal(0, 1.0, (n, 2))
    angles = rng.normal(0, 0.15, n)
    truth, truth_outlines = [], []
    start = 0
    for shapes in _outlines(rng, n):
        count = len(shapes)
        placed = _place(shapes, centres[start:start + count], angles[start:start + count], np.ones(count))
        truth.append(shapely.polygons(placed))
        truth_outlines.append(shapes)
        start += count

    detected = rng.random(n) < 0.8
    proposals = []
    start = 0
    for shapes in truth_outlines:
        count = len(shapes)
        chosen = np.flatnonzero(detected[start:start + count])
        jitter = rng.normal(0, 0.4, shapes[chosen].shape)
        placed = _place(shapes[chosen] + jitter, centres[start + chosen] + rng.normal(0, 1.5, (len(chosen), 2)),
                        angles[start + chosen] + rng.normal(0, 0.08, len(chosen)),
                        rng.uniform(0.85, 1.15, len(chosen)))
        proposals.append(shapely.polygons(placed))
        start += count
    n_false = n - int(detected.sum())
    false_centres = ORIGIN + rng.uniform(0, side * PLOT_SPACING, (n_false, 2))
    false_shapes = _outlines(rng, n_false, l_fraction=0.0)[0]
    proposals.append(shapely.polygons(_place(false_shapes, false_centres, rng.uniform(0, np.pi, n_false),
                                             rng.uniform(0.5, 1.0, n_false))))
    truth_array = np.concatenate(truth)
    proposal_array = np.concatenate(proposals)
    shuffle = rng.permutation(len(proposal_array))
    return truth_array, proposal_array[shuffle], rng.random(len(proposal_array))


def reference_loop(truth: np.ndarray, proposals: np.ndarray, confidence: np.ndarray,
                   budget_s: float) -> tuple[int, int, int] | None:
    """The reference scorers' algorithm (solaris ``calculate_iou`` over the remaining ground
    truth, SN6 rules for the area filter); ``None`` when it runs past ``budget_s``."""
    started = time.perf_counter()
    remaining = truth[shapely.area(truth) >= MIN_AREA]
    n_truth = len(remaining)
    kept = proposals[shapely.area(proposals) >= MIN_AREA]
    kept_confidence = confidence[shapely.area(proposals) >= MIN_AREA]
    tp = 0
    for count, proposal in enumerate(kept[np.argsort(-kept_confidence, kind="stable")]):
        if count % 256 == 0 and time.perf_counter() - started > budget_s:
            return None
        candidates = np.flatnonzero(shapely.intersects(proposal, remaining))
        if len(candidates) == 0:
            continue
        ious = [proposal.intersection(remaining[c]).area / proposal.union(remaining[c]).area
                for c in candidates]
        best = int(np.argmax(ious))
        if ious[best] > IOU_THRESHOLD:
            tp += 1
            remaining = np.delete(remaining, candidates[best])
    return tp, len(kept) - tp, n_truth - tp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--loop-budget", type=float, default=60.0,
                        help="seconds the reference loop may take per size (default 60); "
                             "sizes whose quadratic estimate exceeds it are skipped")
    parser.add_argument("--variant", default="sn6", choices=("sn6", "solaris"))
    args = parser.parse_args()

    print(f"{'N':>8} {'scorer s':>9} {'polys/s':>10} {'loop s':>9} {'polys/s':>10} {'speed-up':>9}  "
          f"{'TP':>7} {'FP':>7} {'FN':>7}  {'F1':>6}  agree")
    loop_rate = None  # seconds per proposal x truth pair, from the last loop run
    for n in args.sizes:
        truth, proposals, confidence = city(n)
        started = time.perf_counter()
        report = score_footprints(truth, proposals, variant=args.variant, min_area=MIN_AREA,
                                  iou_threshold=IOU_THRESHOLD, proposal_confidence=confidence)
        scorer_s = time.perf_counter() - started
        polygons = len(truth) + len(proposals)
        loop_cell, loop_rate_cell, speedup_cell, agree = "skipped", "-", "-", "-"
        estimate = loop_rate * len(truth) * len(proposals) if loop_rate else 0.0
        if estimate <= args.loop_budget:
            started = time.perf_counter()
            counts = reference_loop(truth, proposals, confidence, args.loop_budget)
            loop_s = time.perf_counter() - started
            if counts is None:
                loop_cell = f">{args.loop_budget:.0f}"
            else:
                loop_rate = loop_s / (len(truth) * len(proposals))
                loop_cell, loop_rate_cell = f"{loop_s:.2f}", f"{polygons / loop_s:,.0f}"
                speedup_cell = f"{loop_s / scorer_s:.0f}x"
                agree = "yes" if counts == (report.tp, report.fp, report.fn) else f"NO {counts}"
        else:
            loop_cell = f"(~{estimate:.0f})"
        print(f"{n:>8} {scorer_s:>9.2f} {polygons / scorer_s:>10,.0f} {loop_cell:>9} {loop_rate_cell:>10} "
              f"{speedup_cell:>9}  {report.tp:>7} {report.fp:>7} {report.fn:>7}  {report.f1:.4f}  {agree}",
              flush=True)
    print(f"variant {args.variant}, min area {MIN_AREA} m², IoU > {IOU_THRESHOLD}, one image; "
          "polys/s = (truth + proposals) / seconds; '(~s)' = loop skipped, quadratic estimate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
