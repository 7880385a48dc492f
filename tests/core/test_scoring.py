"""SpaceNet F1 scorer: the matching rule, both variants' differences, and the edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, box

from sn6_footprints.core.feedback import Cancelled, Feedback
from sn6_footprints.core.scoring import (EMPTY, FILTERED, UNSCORED, ImageScore, precision_recall_f1,
                                         score_footprints)

# A self-intersecting "bowtie" whose larger lobe (area 133.3) is what buffer(0) keeps.
BOWTIE = shapely.from_wkt("POLYGON ((0 0, 20 20, 20 0, 0 10, 0 0))")
BIG_LOBE = shapely.Polygon([(20 / 3, 20 / 3), (20, 20), (20, 0)])


def score(truth, proposals, **kwargs):
    kwargs.setdefault("min_area", 0.0)
    return score_footprints(truth, proposals, **kwargs)


@pytest.mark.parametrize("variant", ["sn6", "solaris"])
def test_iou_exactly_at_threshold_is_not_a_match(variant):
    truth = [box(0, 0, 3, 1)]
    at_half = [box(1, 0, 4, 1)]              # intersection 2, union 4: IoU 0.5 exactly
    report = score(truth, at_half, variant=variant)
    assert report.proposal_iou[0] == 0.5
    assert (report.tp, report.fp, report.fn) == (0, 1, 1)
    assert report.proposal_status == ["FP"] and report.truth_status == ["FN"]
    assert report.truth_iou[0] == 0.5 and report.proposal_best_truth == [0]
    above_half = [box(0.99, 0, 4, 1)]
    assert score(truth, above_half, variant=variant).tp == 1


@pytest.mark.parametrize("x, y, width, height", [
    (744043.8665160078, 5818354.364224855, 5.365220082214147, 14.98415925778076),
    (127113.800413205, 1933968.3967690426, 20.565992467608545, 17.54637334062245)])
def test_near_threshold_decided_with_the_references_union_formula(x, y, width, height):
    """Boxes overlapping by 2/3 of their width: IoU 0.5 in exact arithmetic. In UTM-sized
    coordinates I/(A+B-I) gives 0.5000000000000001 here, the references' I/area(A u B) 0.5."""
    truth = box(x, y, x + width, y + height)
    proposal = box(x + width / 3, y, x + width + width / 3, y + height)
    intersection = truth.intersection(proposal).area
    assert intersection / (truth.area + proposal.area - intersection) > 0.5
    reference_iou = intersection / truth.union(proposal).area
    assert reference_iou == 0.5
    report = score([truth], [proposal])
    assert report.proposal_iou[0] == reference_iou and report.tp == 0


def test_two_proposals_on_one_building_only_one_counts():
    truth = [box(0, 0, 10, 10)]
    proposals = [box(0, 0, 10, 9), box(0, 0, 10, 10)]
    report = score(truth, proposals)
    assert (report.tp, report.fp, report.fn) == (1, 1, 0)
    # Without confidence the first proposal goes first, even though the second fits better.
    assert report.proposal_status == ["TP", "FP"]
    assert report.proposal_match == [0, None] and report.truth_match == [0]
    assert report.proposal_iou[0] == pytest.approx(0.9) and report.proposal_iou[1] == 0.0


def test_confidence_order_decides_who_matches():
    truth = [box(0, 0, 10, 10)]
    proposals = [box(0, 0, 10, 10), box(0, 0, 10, 6)]  # IoU 1.0 and 0.6
    report = score(truth, proposals, proposal_confidence=[0.2, 0.9])
    assert report.proposal_status == ["FP", "TP"]
    assert report.truth_iou[0] == pytest.approx(0.6)
    # Ties keep input order (stable sort); NaN confidence goes last.
    assert score(truth, proposals, proposal_confidence=[0.5, 0.5]).proposal_status == ["TP", "FP"]
    assert score(truth, proposals, proposal_confidence=[float("nan"), 0.1]).proposal_status == ["FP", "TP"]


def test_best_iou_wins_and_ties_go_to_the_first_truth():
    truth = [box(0, 0, 10, 10), box(10, 0, 20, 10), box(0, 0, 10, 10.5)]
    straddling = [box(5, 0, 15, 10)]          # IoU 1/3 with each of the first two
    report = score(truth, straddling)
    assert report.proposal_best_truth == [0]
    assert list(report.truth_iou) == pytest.approx([1 / 3, 0.0, 0.0])
    best = score(truth, [box(0, 0, 10, 10.4)])  # 10.4/10.5 beats 10/10.4
    assert best.proposal_match == [2]


def test_matched_truth_is_taken_out_for_later_proposals():
    truth = [box(0, 0, 10, 10), box(0, 0, 10, 8)]
    proposals = [box(0, 0, 10, 10), box(0, 0, 10, 10)]
    report = score(truth, proposals)
    assert report.proposal_match == [0, 1]     # the second takes the next best free polygon
    assert (report.tp, report.fp, report.fn) == (2, 0, 0)


def test_image_absent_from_the_proposals():
    truth = [box(0, 0, 10, 10), box(0, 0, 10, 10)]
    proposals = [box(0, 0, 10, 10)]
    ids = dict(truth_image_ids=["a", "b"], proposal_image_ids=["a"])
    sn6 = score(truth, proposals, variant="sn6", **ids)
    assert list(sn6.per_image) == ["a"] and (sn6.tp, sn6.fp, sn6.fn) == (1, 0, 0)
    assert sn6.truth_status == ["TP", UNSCORED]
    solaris = score(truth, proposals, variant="solaris", **ids)
    assert list(solaris.per_image) == ["a", "b"] and (solaris.tp, solaris.fp, solaris.fn) == (1, 0, 1)
    assert solaris.per_image["b"] == ImageScore(0, 0, 1)


def test_empty_rows_register_images():
    truth = [box(0, 0, 10, 10), shapely.from_wkt("POLYGON EMPTY")]
    proposals = [None, box(50, 50, 60, 60)]
    report = score(truth, proposals, variant="sn6", truth_image_ids=["a", "c"], proposal_image_ids=["a", "c"])
    assert report.per_image == {"a": ImageScore(0, 0, 1), "c": ImageScore(0, 1, 0)}
    assert report.proposal_status == [EMPTY, "FP"] and report.truth_status == ["FN", EMPTY]
    # An image with nothing in it at all is scored as 0/0/0, F1 0.
    empty = score([None], [None], truth_image_ids=["x"], proposal_image_ids=["x"])
    assert empty.per_image == {"x": ImageScore(0, 0, 0)} and empty.f1 == 0.0


def test_one_scene_is_always_scored_even_without_proposals():
    report = score([box(0, 0, 10, 10)], [])
    assert list(report.per_image) == [None] and (report.tp, report.fp, report.fn) == (0, 0, 1)


@pytest.mark.parametrize("variant", ["sn6", "solaris"])
def test_empty_inputs_give_zero_without_dividing_by_zero(variant):
    for truth, proposals in (([], []), ([], [box(0, 0, 5, 5)]), ([box(0, 0, 5, 5)], [])):
        report = score(truth, proposals, variant=variant)
        assert (report.precision, report.recall, report.f1) == (0.0, 0.0, 0.0)
    no_images = score([], [], variant=variant, truth_image_ids=[], proposal_image_ids=[])
    assert no_images.per_image == {} and no_images.f1 == 0.0
    assert precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)


def test_invalid_truth_is_repaired_by_sn6_and_scores_zero_in_solaris():
    assert not BOWTIE.is_valid
    proposal = [shapely.Polygon([(7, 7), (20, 20), (20, 0)])]
    sn6 = score([BOWTIE], proposal, variant="sn6")
    assert sn6.tp == 1 and sn6.truth_iou[0] > 0.9
    solaris = score([BOWTIE], proposal, variant="solaris")
    assert (solaris.tp, solaris.fp, solaris.fn) == (0, 1, 1)
    assert solaris.truth_iou[0] == 0.0 and solaris.truth_status == ["FN"]


@pytest.mark.parametrize("variant", ["sn6", "solaris"])
def test_invalid_proposal_is_repaired_with_buffer0(variant):
    report = score([BIG_LOBE], [BOWTIE], variant=variant)
    assert report.tp == 1 and report.proposal_iou[0] == pytest.approx(1.0)


def test_multipolygon_first_part_in_sn6_whole_in_solaris():
    small, big = box(0, 0, 10, 10), box(100, 100, 130, 130)
    truth = [MultiPolygon([small, big])]
    sn6 = score(truth, [big], variant="sn6")            # truth is just `small` now: no overlap
    assert (sn6.tp, sn6.fp, sn6.fn) == (0, 1, 1)
    solaris = score(truth, [big], variant="solaris")    # IoU 900 / 1000
    assert solaris.tp == 1 and solaris.proposal_iou[0] == pytest.approx(0.9)


def test_min_area_inclusive_in_sn6_strict_for_solaris_proposals():
    truth = [box(0, 0, 4, 5)]                  # area 20
    proposals = [box(0, 0, 4, 5)]
    sn6 = score(truth, proposals, variant="sn6", min_area=20)
    assert sn6.tp == 1
    solaris = score(truth, proposals, variant="solaris", min_area=20)
    assert (solaris.tp, solaris.fp, solaris.fn) == (0, 0, 1)
    assert solaris.proposal_status == [FILTERED] and solaris.truth_status == ["FN"]
    tiny = score([box(0, 0, 1, 1)], [box(0, 0, 1, 1)], min_area=20)
    assert (tiny.tp, tiny.fp, tiny.fn) == (0, 0, 0) and tiny.truth_status == [FILTERED]


def test_three_d_geometries_and_custom_ids():
    truth = [shapely.from_wkt("POLYGON Z ((0 0 0, 10 0 0, 10 10 0, 0 10 0, 0 0 0))")]
    proposals = [shapely.from_wkt("POLYGON Z ((0 0 5, 10 0 5, 10 10 5, 0 10 5, 0 0 5))")]
    report = score(truth, proposals, truth_ids=["bldg-7"], proposal_ids=[42])
    assert report.proposal_match == ["bldg-7"] and report.truth_match == [42]
    record = report.to_dict(features=True)
    assert record["proposals"][0] == {"id": 42, "iou": 1.0, "best_truth": "bldg-7", "match": "bldg-7",
                                         "status": "TP"}
    assert record["truth"][0]["match"] == 42 and record["per_image"][0]["image_id"] is None


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="variant"):
        score([], [], variant="spacenet9")
    with pytest.raises(ValueError, match="image ids"):
        score([box(0, 0, 1, 1)], [], truth_image_ids=["a"])
    with pytest.raises(ValueError, match="IoU threshold"):
        score([], [], iou_threshold=1.0)
    with pytest.raises(TypeError, match="not a shapely geometry"):
        score(["POLYGON ((0 0, 1 0, 1 1, 0 0))"], [])


class RecordingFeedback(Feedback):
    def __init__(self, cancel_after: int | None = None):
        self.progress: list[float] = []
        self.cancel_after = cancel_after

    def set_progress(self, percent: float) -> None:
        self.progress.append(percent)

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after


def test_progress_and_cancel():
    truth = [box(i * 20, 0, i * 20 + 10, 10) for i in range(20)]
    images = [f"img{i % 5}" for i in range(20)]
    feedback = RecordingFeedback()
    score(truth, truth, truth_image_ids=images, proposal_image_ids=images, feedback=feedback)
    assert feedback.progress == sorted(feedback.progress) and feedback.progress[-1] == 100
    with pytest.raises(Cancelled):
        score(truth, truth, truth_image_ids=images, proposal_image_ids=images,
              feedback=RecordingFeedback(cancel_after=2))


def brute_force(truth, proposals, confidence, images_t, images_p, threshold=0.5):
    """The reference algorithm, literally: every proposal against every free polygon of its image."""
    free = set(range(len(truth)))
    tp, best_ious = 0, []
    for p in np.argsort(-np.asarray(confidence), kind="stable"):
        candidates = [(truth[g].intersection(proposals[p]).area / truth[g].union(proposals[p]).area, -g)
                      for g in sorted(free) if images_t[g] == images_p[p] and truth[g].intersects(proposals[p])]
        best_iou, neg_g = max(candidates, default=(0.0, 1))
        best_ious.append((p, best_iou))
        if best_iou > threshold:
            tp += 1
            free.discard(-neg_g)
    return (tp, len(proposals) - tp, len(truth) - tp), dict(best_ious)


@pytest.mark.parametrize("seed", [0, 1])
def test_indexed_matching_equals_the_reference_loop(seed):
    rng = np.random.default_rng(seed)
    n = 150
    xy = rng.uniform(0, 120, (n, 2))
    size = rng.uniform(4, 12, (n, 2))
    truth = list(shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + size[:, 0], xy[:, 1] + size[:, 1]))
    shift = rng.normal(0, 2, (n, 2))
    proposals = list(shapely.box(xy[:, 0] + shift[:, 0], xy[:, 1] + shift[:, 1],
                                 xy[:, 0] + size[:, 0] * rng.uniform(0.7, 1.3, n), xy[:, 1] + size[:, 1]))
    confidence = np.round(rng.random(n), 1)  # many ties
    images_t, images_p = list(rng.integers(0, 3, n)), list(rng.integers(0, 3, n))
    report = score_footprints(truth, proposals, variant="sn6", min_area=0, proposal_confidence=confidence,
                              truth_image_ids=images_t, proposal_image_ids=images_p)
    counts, best_ious = brute_force(truth, proposals, confidence, images_t, images_p)
    assert (report.tp, report.fp, report.fn) == counts
    assert report.proposal_iou == pytest.approx([best_ious[p] for p in range(n)], abs=1e-12)
