"""The scorer against external references: solaris's own test fixtures and the SN6 scorer's numbers
(values from ../shared/reference-data/solaris/EXPECTED.md)."""
from __future__ import annotations

import csv

import pytest
import shapely

from sn6_footprints.core.footprint_sources import load_for_scoring, read_spacenet_csv
from sn6_footprints.core.scoring import ImageScore, precision_recall_f1, score_footprints
from sn6_footprints.core.vector_io import spatial_reference

# solaris, SN2_test_results_full.csv: image -> (TP, FP, FN, F1)
SOLARIS_PER_IMAGE = {
    "AOI_5_Khartoum_img130": (22, 13, 32, 0.4943820224719101),
    "AOI_2_Vegas_img3457": (28, 2, 6, 0.8749999999999999),
    "AOI_2_Vegas_img5979": (7, 0, 1, 0.9333333333333333),
    "AOI_5_Khartoum_img1301": (17, 15, 23, 0.47222222222222215),
    "AOI_5_Khartoum_img1306": (13, 27, 20, 0.35616438356164376),
    "AOI_5_Khartoum_img463": (0, 0, 0, 0.0),
}
SOLARIS_PER_AOI = {"AOI_2_Vegas": (35, 2, 7, 0.8860759493670887),
                   "AOI_5_Khartoum": (52, 55, 75, 0.4444444444444444)}
# The official SpaceNet 6 scorer on the same files (min area 80 px): image -> (TP, FP, FN)
SN6_PER_IMAGE = {
    "AOI_2_Vegas_img3457": (28, 2, 6), "AOI_2_Vegas_img5979": (7, 0, 0),
    "AOI_5_Khartoum_img130": (22, 13, 31), "AOI_5_Khartoum_img1301": (16, 16, 22),
    "AOI_5_Khartoum_img1306": (13, 27, 20), "AOI_5_Khartoum_img463": (0, 0, 0),
}
FEATURE_27_PROPOSAL = shapely.Polygon([
    (736348.0, 3722762.5), (736353.0, 3722762.0), (736354.0, 3722759.0), (736352.0, 3722755.5),
    (736348.5, 3722755.5), (736346.0, 3722757.5), (736348.0, 3722762.5)])


@pytest.fixture(scope="module")
def sn2(reference_data):
    folder = reference_data / "solaris"
    return read_spacenet_csv(folder / "SN2_sample_truth.csv"), read_spacenet_csv(folder / "SN2_sample_preds.csv")


def score_sn2(sn2, variant, min_area):
    truth, proposals = sn2
    return score_footprints(truth.geometries, proposals.geometries, variant=variant, min_area=min_area,
                            truth_image_ids=truth.image_ids, proposal_image_ids=proposals.image_ids,
                            proposal_confidence=proposals.confidence, truth_ids=truth.feature_ids,
                            proposal_ids=proposals.feature_ids)


def test_sn2_csvs_read_as_spacenet_writes_them(sn2):
    truth, proposals = sn2
    assert len(truth) == 172 and len(proposals) == 145
    assert proposals.image_ids[-1] == "AOI_5_Khartoum_img463" and proposals.geometries[-1].is_empty
    assert not any(g.has_z for g in proposals.geometries)  # 3-D WKT flattened
    assert truth.feature_ids[:3] == [1, 2, 3] and proposals.confidence[:2] == [7.0, 6.0]


def test_solaris_variant_per_image_exactly(sn2):
    report = score_sn2(sn2, "solaris", 20)
    assert {k: (s.tp, s.fp, s.fn, s.f1) for k, s in report.per_image.items()} == SOLARIS_PER_IMAGE
    for aoi, expected in SOLARIS_PER_AOI.items():
        counts = [sum(getattr(s, n) for k, s in report.per_image.items() if k.startswith(aoi))
                  for n in ("tp", "fp", "fn")]
        assert (*counts, ImageScore(*counts).f1) == expected
    assert (report.tp, report.fp, report.fn) == (87, 57, 82)
    # EXPECTED.md derives 2TP/(2TP+FP+FN); the scorers' 2PR/(P+R) differs in the last bit.
    assert report.f1 == pytest.approx(0.5559105431309904, rel=1e-15, abs=0)


def test_solaris_variant_iou_by_building(sn2, reference_data):
    report = score_sn2(sn2, "solaris", 20)
    with open(reference_data / "solaris" / "SN2_sample_iou_by_building.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = sn2[0]
    assert [(r["ImageId"], int(r["BuildingId"])) for r in rows] == list(zip(truth.image_ids, truth.feature_ids))
    expected = [float(r["iou_score"]) for r in rows]
    assert list(report.truth_iou) == pytest.approx(expected, abs=1e-9, rel=0)


def test_sn6_variant_matches_the_official_scorer(sn2):
    report = score_sn2(sn2, "sn6", 80)
    assert (report.tp, report.fp, report.fn) == (86, 58, 79)
    assert report.f1 == 0.5566343042071198
    assert 100 * report.f1 == pytest.approx(55.663430420711975, rel=1e-15)
    assert {k: (s.tp, s.fp, s.fn) for k, s in report.per_image.items()} == SN6_PER_IMAGE


@pytest.mark.parametrize("variant", ["sn6", "solaris"])
def test_georeferenced_geojson(reference_data, variant):
    folder = reference_data / "solaris"
    truth, proposals, crs = load_for_scoring(folder / "gt.geojson", folder / "pred.geojson")
    assert spatial_reference(crs).to_authority(confidence_threshold=100) == ("EPSG", "32616")
    assert proposals.confidence == [1.0] * 28  # the "conf" field
    report = score_footprints(truth.geometries, proposals.geometries, variant=variant, min_area=0,
                              proposal_confidence=proposals.confidence)
    assert (report.tp, report.fp, report.fn) == (8, 20, 20)
    assert report.precision == report.recall == report.f1 == 0.2857142857142857


def test_single_polygon_iou_against_feature_27(reference_data):
    truth, _, _ = load_for_scoring(reference_data / "solaris" / "gt.geojson",
                                   reference_data / "solaris" / "pred.geojson")
    report = score_footprints(truth.geometries, [FEATURE_27_PROPOSAL], variant="solaris", min_area=0)
    assert report.proposal_best_truth == [27]
    assert report.proposal_iou[0] == pytest.approx(0.073499798744833519, abs=1e-12, rel=0)
    assert report.truth_iou[27] == report.proposal_iou[0]


def test_f1_formula_reproduces_the_scorers_floats():
    assert precision_recall_f1(28, 2, 6)[2] == 0.8749999999999999
    assert precision_recall_f1(86, 58, 79)[2] == 0.5566343042071198
