"""SpaceNet building F1: predicted footprints against ground truth, in both published variants.

The rule (REFERENCE.md §5): per image, proposals in descending confidence each take the
still-unmatched ground-truth polygon with the highest IoU (first in ground-truth order on
ties); IoU strictly above the threshold is a true positive and removes that polygon;
totals are summed over images. Two published scorers differ in details, selectable by name:

``sn6``      the official SpaceNet 6 (Topcoder) scorer: min area applied with ``>=`` to both
             sides, stable confidence order, only images present in the proposals are scored
             (an empty proposal row registers its image), MULTIPOLYGON keeps only its first
             part. Invalid polygons on either side are repaired with ``buffer(0)``.
``solaris``  ``solaris.eval.base.Evaluator.eval_iou_spacenet_csv``: ground truth kept if area
             ``>=`` min area, proposals if area ``>`` min area (areas of the geometries as given),
             invalid proposals repaired with ``buffer(0)``, invalid ground truth gets IoU 0,
             images are the union of both sides' image ids.

Why not the reference loop: both references compare every proposal with every polygon of
its image (quadratic). The IoU of a pair never changes during the greedy pass, only which
polygons are still free; so all overlapping pairs are found once with an STRtree and
vectorised GEOS intersection areas, and the greedy pass walks those few pairs per proposal.
Pairs with zero intersection area are dropped: their IoU of 0 can never match and never
raises a polygon's best IoU, so the counts are those of the references. IoU is computed as
I / (A + B - I), which saves a second overlay per pair; it differs from the references'
I / area(A u B) only in the last digits (about 1e-10 relative with UTM-sized coordinates),
so pairs within 1e-9 of the threshold are recomputed their way and decided as they decide.

QGIS-free: the Processing algorithm and the CLI both call :func:`score_footprints`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import shapely

from ..defaults import SCORING_VARIANTS as VARIANTS
from .feedback import Feedback

DEFAULT_VARIANT = "sn6"

TP, FP, FN = "TP", "FP", "FN"
FILTERED = "filtered"   # below the min area (or zero area): not scored
EMPTY = "empty"         # no geometry / POLYGON EMPTY: only registers its image
UNSCORED = "unscored"   # its image is not scored (sn6: image absent from the proposals)

# IoUs this close to the threshold are recomputed as intersection / union area, the way
# both references compute them, so a pair exactly at the threshold is decided like theirs.
_THRESHOLD_RECHECK = 1e-9
# Proposals per vectorised batch: bounds memory and gives progress/cancel points in one big image.
_BATCH = 16384


@dataclass(frozen=True)
class VariantRules:
    """The details in which the published scorers differ."""

    name: str
    proposal_area_strict: bool        # proposals kept if area > min (else >=)
    first_part_only: bool             # MULTIPOLYGON -> its first polygon
    repair_truth: bool                # invalid truth: buffer(0) (else IoU 0)
    area_after_repair: bool           # the min-area filter sees the repaired geometry
    score_all_images: bool            # union of image ids (else only images in the proposals)


RULES = {
    "sn6": VariantRules("sn6", proposal_area_strict=False, first_part_only=True,
                        repair_truth=True, area_after_repair=True, score_all_images=False),
    "solaris": VariantRules("solaris", proposal_area_strict=True, first_part_only=False,
                            repair_truth=False, area_after_repair=False, score_all_images=True),
}


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1, 0 where undefined. F1 is 2PR/(P+R), the expression both
    reference scorers evaluate, so the floats agree with theirs to the last bit."""
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision * recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


@dataclass(frozen=True)
class ImageScore:
    """Counts of one image (or of the pooled total) and the rates derived from them."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return precision_recall_f1(self.tp, self.fp, self.fn)[0]

    @property
    def recall(self) -> float:
        return precision_recall_f1(self.tp, self.fp, self.fn)[1]

    @property
    def f1(self) -> float:
        return precision_recall_f1(self.tp, self.fp, self.fn)[2]

    def to_dict(self) -> dict:
        precision, recall, f1 = precision_recall_f1(self.tp, self.fp, self.fn)
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn,
                "precision": precision, "recall": recall, "f1": f1}


@dataclass
class ScoreReport:
    """Pooled counts, per-image counts and the verdict on every input feature.

    Per-feature lists are aligned with the inputs. ``proposal_iou`` is the IoU with the best
    still-unmatched polygon when the proposal's turn came (0 when none overlapped);
    ``proposal_best_truth`` is that polygon (matched or not: for a false positive, the
    building it came closest to). ``truth_iou`` is the highest IoU among the proposals that
    picked the polygon as their best candidate (solaris's ``iou_score`` per building).
    ``*_match`` hold the other side's id (``truth_ids``/``proposal_ids``, else the index) for
    true positives and ``None`` otherwise; ``*_match_index`` the same as indices with -1.
    """

    variant: str
    min_area: float
    iou_threshold: float
    tp: int
    fp: int
    fn: int
    per_image: dict[Hashable, ImageScore]
    proposal_iou: np.ndarray
    proposal_status: list[str]
    proposal_match: list
    proposal_match_index: np.ndarray
    proposal_best_truth: list
    truth_iou: np.ndarray
    truth_status: list[str]
    truth_match: list
    truth_match_index: np.ndarray
    proposal_ids: list = field(default_factory=list)
    truth_ids: list = field(default_factory=list)
    proposal_image_ids: list | None = None
    truth_image_ids: list | None = None

    @property
    def precision(self) -> float:
        return self.pooled.precision

    @property
    def recall(self) -> float:
        return self.pooled.recall

    @property
    def f1(self) -> float:
        return self.pooled.f1

    @property
    def pooled(self) -> ImageScore:
        return ImageScore(self.tp, self.fp, self.fn)

    def to_dict(self, features: bool = False) -> dict:
        """Plain JSON-ready data: settings, pooled scores, per-image scores and, with
        ``features=True``, one record per proposal and per ground-truth polygon."""
        result = {"variant": self.variant, "min_area": self.min_area,
                  "iou_threshold": self.iou_threshold, **self.pooled.to_dict(),
                  "images_scored": len(self.per_image),
                  "per_image": [{"image_id": _plain(image_id), **score.to_dict()}
                                for image_id, score in self.per_image.items()]}
        if features:
            result["proposals"] = [
                {"id": _plain(self.proposal_ids[i]),
                 **({"image_id": _plain(self.proposal_image_ids[i])} if self.proposal_image_ids is not None else {}),
                 "iou": float(self.proposal_iou[i]), "best_truth": _plain(self.proposal_best_truth[i]),
                 "match": _plain(self.proposal_match[i]), "status": self.proposal_status[i]}
                for i in range(len(self.proposal_status))]
            result["truth"] = [
                {"id": _plain(self.truth_ids[i]),
                 **({"image_id": _plain(self.truth_image_ids[i])} if self.truth_image_ids is not None else {}),
                 "iou": float(self.truth_iou[i]), "match": _plain(self.truth_match[i]),
                 "status": self.truth_status[i]}
                for i in range(len(self.truth_status))]
        return result


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so ``json.dumps`` accepts them."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class _Side:
    """One side's geometries as the variant sees them."""

    geometries: np.ndarray     # for IoU: 2-D, first part (sn6), repaired where the variant repairs
    areas: np.ndarray          # areas of ``geometries``
    filter_areas: np.ndarray   # areas the min-area filter compares
    empty: np.ndarray          # no geometry or an empty one
    usable: np.ndarray         # may overlap anything (solaris: invalid truth may not)


def _geometry_array(geometries: Sequence, what: str) -> np.ndarray:
    if isinstance(geometries, np.ndarray) and geometries.dtype == object and geometries.ndim == 1:
        array = geometries.copy()
    else:
        array = np.empty(len(geometries), dtype=object)
        array[:] = list(geometries)
    missing = shapely.is_missing(array)
    not_geometry = ~(missing | shapely.is_geometry(array))
    if not_geometry.any():
        first = int(np.flatnonzero(not_geometry)[0])
        raise TypeError(f"{what}[{first}] is a {type(array[first]).__name__}, not a shapely geometry")
    return array


def _prepare(geometries: Sequence, what: str, rules: VariantRules, repair: bool) -> _Side:
    array = _geometry_array(geometries, what)
    empty = shapely.is_missing(array) | shapely.is_empty(array)
    array[empty] = None
    if shapely.has_z(array).any():
        array = shapely.force_2d(array)
    if rules.first_part_only:
        multi = shapely.get_type_id(array) == shapely.GeometryType.MULTIPOLYGON
        array[multi] = shapely.get_geometry(array[multi], 0)
    original_areas = np.nan_to_num(shapely.area(array))
    invalid = ~empty & ~shapely.is_valid(array)
    usable = ~empty
    areas = original_areas
    if repair and invalid.any():
        array = array.copy()
        array[invalid] = shapely.buffer(array[invalid], 0.0)
        areas = original_areas.copy()
        areas[invalid] = np.nan_to_num(shapely.area(array[invalid]))
    elif not repair:
        usable &= ~invalid
    filter_areas = areas if rules.area_after_repair else original_areas
    return _Side(array, areas, filter_areas, empty, usable)


def _image_codes(truth_image_ids, proposal_image_ids, n_truth: int, n_proposals: int):
    """Integer image codes for both sides, the image keys in first-seen order (truth first),
    and which side registered each image."""
    if truth_image_ids is None and proposal_image_ids is None:
        return (np.zeros(n_truth, np.int64), np.zeros(n_proposals, np.int64), [None],
                np.ones(1, bool))
    if truth_image_ids is None or proposal_image_ids is None:
        raise ValueError("give image ids for both truth and proposals, or for neither")
    if len(truth_image_ids) != n_truth or len(proposal_image_ids) != n_proposals:
        raise ValueError("image ids must be as many as the geometries they label")
    codes: dict = {}
    truth_codes = np.fromiter((codes.setdefault(_plain(i), len(codes)) for i in truth_image_ids),
                              np.int64, n_truth)
    proposal_codes = np.fromiter((codes.setdefault(_plain(i), len(codes)) for i in proposal_image_ids),
                                 np.int64, n_proposals)
    in_proposals = np.zeros(len(codes), bool)
    in_proposals[proposal_codes] = True
    return truth_codes, proposal_codes, list(codes), in_proposals


def _groups(indices: np.ndarray, codes: np.ndarray) -> dict[int, np.ndarray]:
    """``indices`` split by image code, each group keeping the order of ``indices``."""
    if len(indices) == 0:
        return {}
    by_code = np.argsort(codes[indices], kind="stable")
    ordered = indices[by_code]
    sorted_codes = codes[ordered]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    return {int(group_codes[0]): group
            for group, group_codes in zip(np.split(ordered, bounds), np.split(sorted_codes, bounds))}


def _intersection_areas(a: np.ndarray, b: np.ndarray, feedback: Feedback) -> np.ndarray:
    try:
        return shapely.area(shapely.intersection(a, b))
    except shapely.errors.GEOSException:
        # One pair GEOS cannot overlay must not sink the whole score: retry pair by pair.
        areas = np.zeros(len(a))
        for k, (ga, gb) in enumerate(zip(a, b)):
            try:
                areas[k] = shapely.area(shapely.intersection(ga, gb))
            except shapely.errors.GEOSException as exc:
                feedback.warning(f"IoU of an overlapping pair could not be computed ({exc}); counted as 0")
        return areas


def _overlapping_pairs(proposal_side: _Side, truth_side: _Side, proposal_order: np.ndarray,
                       truth_indices: np.ndarray, iou_threshold: float, feedback: Feedback,
                       on_batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (proposal rank, truth index, IoU) with a positive intersection area, sorted by
    rank then truth index: the order in which the greedy pass must see them."""
    tree = shapely.STRtree(truth_side.geometries[truth_indices])
    ranks, truths, ious = [], [], []
    for start in range(0, len(proposal_order), _BATCH):
        feedback.check_cancelled()
        batch = proposal_order[start:start + _BATCH]
        batch_rank, tree_index = tree.query(proposal_side.geometries[batch])
        proposal_index, truth_index = batch[batch_rank], truth_indices[tree_index]
        intersection = _intersection_areas(proposal_side.geometries[proposal_index],
                                           truth_side.geometries[truth_index], feedback)
        overlapping = intersection > 0
        proposal_index, truth_index = proposal_index[overlapping], truth_index[overlapping]
        intersection = intersection[overlapping]
        iou = intersection / (proposal_side.areas[proposal_index] + truth_side.areas[truth_index]
                              - intersection)
        near = np.abs(iou - iou_threshold) <= _THRESHOLD_RECHECK
        if near.any():
            union = shapely.area(shapely.union(proposal_side.geometries[proposal_index[near]],
                                               truth_side.geometries[truth_index[near]]))
            iou[near] = intersection[near] / union
        ranks.append(batch_rank[overlapping] + start)
        truths.append(truth_index)
        ious.append(iou)
        on_batch(len(batch))
    rank, truth, iou = (np.concatenate(ranks), np.concatenate(truths), np.concatenate(ious))
    order = np.lexsort((truth, rank))
    return rank[order], truth[order], iou[order]


def score_footprints(truth: Sequence, proposals: Sequence, *, variant: str = DEFAULT_VARIANT,
                     min_area: float = 20.0, iou_threshold: float = 0.5,
                     truth_image_ids: Sequence | None = None,
                     proposal_image_ids: Sequence | None = None,
                     proposal_confidence: Sequence[float] | None = None,
                     truth_ids: Sequence | None = None, proposal_ids: Sequence | None = None,
                     feedback: Feedback | None = None) -> ScoreReport:
    """Score ``proposals`` against ``truth`` with the SpaceNet rule of ``variant``.

    Geometries are shapely polygons (``None`` or empty allowed: such a row only registers its
    image) in one CRS whose units the min area is in (metres for layers, pixels for SpaceNet
    CSVs; the caller reprojects). With image ids, matching is per image and totals pooled;
    without (both ``None``) everything is one image that is always scored. Confidence orders
    the proposals, highest first, ties in input order; ``None`` keeps input order.
    """
    if variant not in RULES:
        raise ValueError(f"unknown scoring variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if not (min_area >= 0 and math.isfinite(min_area)):
        raise ValueError(f"min area must be a finite number >= 0, not {min_area}")
    if not 0 <= iou_threshold < 1:
        raise ValueError(f"IoU threshold must be in [0, 1), not {iou_threshold}")
    rules = RULES[variant]
    feedback = feedback or Feedback()
    n_truth, n_proposals = len(truth), len(proposals)
    for name, values, expected in (("truth_ids", truth_ids, n_truth), ("proposal_ids", proposal_ids, n_proposals),
                                   ("proposal_confidence", proposal_confidence, n_proposals)):
        if values is not None and len(values) != expected:
            raise ValueError(f"{name} has {len(values)} entries for {expected} geometries")

    truth_side = _prepare(truth, "truth", rules, repair=rules.repair_truth)
    proposal_side = _prepare(proposals, "proposals", rules, repair=True)
    truth_codes, proposal_codes, image_keys, in_proposals = _image_codes(
        truth_image_ids, proposal_image_ids, n_truth, n_proposals)
    scored_image = np.ones(len(image_keys), bool) if rules.score_all_images or image_keys == [None] \
        else in_proposals

    truth_kept = ~truth_side.empty & (truth_side.filter_areas > 0) & (truth_side.filter_areas >= min_area)
    proposal_big_enough = (proposal_side.filter_areas > min_area) if rules.proposal_area_strict \
        else (proposal_side.filter_areas >= min_area)
    proposal_kept = ~proposal_side.empty & (proposal_side.filter_areas > 0) & proposal_big_enough

    if proposal_confidence is None:
        confidence_order = np.arange(n_proposals)
    else:
        confidence = np.asarray(proposal_confidence, dtype=float)
        confidence_order = np.argsort(np.where(np.isnan(confidence), np.inf, -confidence), kind="stable")
    proposals_by_image = _groups(confidence_order[proposal_kept[confidence_order]], proposal_codes)
    truth_by_image = _groups(np.flatnonzero(truth_kept), truth_codes)
    feedback.set_progress(5)

    proposal_iou = np.zeros(n_proposals)
    proposal_best = np.full(n_proposals, -1, np.int64)
    proposal_match = np.full(n_proposals, -1, np.int64)
    truth_iou = [0.0] * n_truth
    truth_match = np.full(n_truth, -1, np.int64)
    matched = bytearray(n_truth)

    scored_codes = np.flatnonzero(scored_image)
    total_work = sum(len(proposals_by_image.get(int(c), ())) for c in scored_codes) + len(scored_codes)
    work_done = 0
    last_percent = -1

    def advance(amount: int) -> None:
        nonlocal work_done, last_percent
        work_done += amount
        percent = 5 + int(95 * work_done / max(total_work, 1))
        if percent != last_percent:
            last_percent = percent
            feedback.set_progress(percent)

    per_image: dict[Hashable, ImageScore] = {}
    for code in scored_codes.tolist():
        feedback.check_cancelled()
        image_proposals = proposals_by_image.get(code, np.empty(0, np.int64))
        image_truth = truth_by_image.get(code, np.empty(0, np.int64))
        image_truth_usable = image_truth[truth_side.usable[image_truth]]
        tp = 0
        if len(image_proposals) and len(image_truth_usable):
            ranks, truth_indices, ious = _overlapping_pairs(
                proposal_side, truth_side, image_proposals, image_truth_usable, iou_threshold,
                feedback, advance)
            ranks, truth_indices, ious = ranks.tolist(), truth_indices.tolist(), ious.tolist()
            image_proposal_list = image_proposals.tolist()
            k, n_pairs = 0, len(ranks)
            while k < n_pairs:
                rank, best_truth, best_iou = ranks[k], -1, 0.0
                while k < n_pairs and ranks[k] == rank:
                    if not matched[truth_indices[k]] and ious[k] > best_iou:
                        best_truth, best_iou = truth_indices[k], ious[k]
                    k += 1
                if best_truth < 0:
                    continue
                proposal = image_proposal_list[rank]
                proposal_iou[proposal] = best_iou
                proposal_best[proposal] = best_truth
                if best_iou > truth_iou[best_truth]:
                    truth_iou[best_truth] = best_iou
                if best_iou > iou_threshold:
                    matched[best_truth] = 1
                    proposal_match[proposal] = best_truth
                    truth_match[best_truth] = proposal
                    tp += 1
        else:
            advance(len(image_proposals))
        per_image[image_keys[code]] = ImageScore(tp, len(image_proposals) - tp, len(image_truth) - tp)
        advance(1)

    truth_status = _statuses(truth_side.empty, truth_kept, scored_image[truth_codes],
                             truth_match >= 0, FN)
    proposal_status = _statuses(proposal_side.empty, proposal_kept, scored_image[proposal_codes],
                                proposal_match >= 0, FP)
    truth_id_list = list(truth_ids) if truth_ids is not None else list(range(n_truth))
    proposal_id_list = list(proposal_ids) if proposal_ids is not None else list(range(n_proposals))

    def ids_of(indices: np.ndarray, id_list: list) -> list:
        return [id_list[i] if i >= 0 else None for i in indices.tolist()]

    pooled = [sum(getattr(s, name) for s in per_image.values()) for name in ("tp", "fp", "fn")]
    feedback.set_progress(100)
    return ScoreReport(
        variant=variant, min_area=float(min_area), iou_threshold=float(iou_threshold),
        tp=pooled[0], fp=pooled[1], fn=pooled[2], per_image=per_image,
        proposal_iou=proposal_iou, proposal_status=proposal_status,
        proposal_match=ids_of(proposal_match, truth_id_list), proposal_match_index=proposal_match,
        proposal_best_truth=ids_of(proposal_best, truth_id_list),
        truth_iou=np.asarray(truth_iou, dtype=float), truth_status=truth_status,
        truth_match=ids_of(truth_match, proposal_id_list), truth_match_index=truth_match,
        proposal_ids=proposal_id_list, truth_ids=truth_id_list,
        proposal_image_ids=list(proposal_image_ids) if proposal_image_ids is not None else None,
        truth_image_ids=list(truth_image_ids) if truth_image_ids is not None else None)


def _statuses(empty: np.ndarray, kept: np.ndarray, image_scored: np.ndarray, matched: np.ndarray,
              unmatched_label: str) -> list[str]:
    status = np.where(matched, TP, unmatched_label).astype(object)
    status[~image_scored] = UNSCORED
    status[~kept] = FILTERED
    status[empty] = EMPTY
    return status.tolist()
