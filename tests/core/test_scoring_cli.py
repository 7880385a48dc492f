"""Reading footprints for scoring (SpaceNet CSVs, OGR layers in other CRSs) and the ``score`` CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shapely.geometry import box

from sn6_footprints.core.footprint_sources import load_for_scoring, read_spacenet_csv
from sn6_footprints.core.scoring import score_footprints
from sn6_footprints.core.vector_io import read_footprints, reproject, write_footprints

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_spacenet_csv_variants(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text(
        "imageid,TileBuildingId,PolygonWKT_Pix,Confidence\n"
        'tile_1,0,"POLYGON ((0 0 0, 10 0 0, 10 10 0, 0 10 0, 0 0 0))",0.9\n'
        'tile_1,1,"POLYGON ((20 0, 30 0, 30 10, 20 10, 20 0))",\n'
        "tile_2,-1,POLYGON EMPTY,1\n")
    source = read_spacenet_csv(path)
    assert source.image_ids == ["tile_1", "tile_1", "tile_2"] and source.feature_ids == [0, 1, -1]
    assert source.geometries[0].equals(box(0, 0, 10, 10)) and not source.geometries[0].has_z
    assert source.geometries[2].is_empty and source.pixel_space
    assert source.confidence[0] == 0.9 and source.confidence[1] != source.confidence[1]  # blank -> NaN


def test_spacenet_csv_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('ImageId,BuildingId,PolygonWKT_Pix\na,1,"POLYGON ((0 0, 1 0"\n')
    with pytest.raises(ValueError, match="line 2"):
        read_spacenet_csv(bad)
    geo_only = tmp_path / "geo.csv"
    geo_only.write_text("ImageId,BuildingId,PolygonWKT_Geo\n")
    with pytest.raises(ValueError, match="PolygonWKT_Pix"):
        read_spacenet_csv(geo_only)


def test_layers_in_other_crss_are_scored_in_metres(reference_data, tmp_path):
    folder = reference_data / "solaris"
    truth = read_footprints(folder / "gt.geojson")
    proposals = read_footprints(folder / "pred.geojson")
    write_footprints(tmp_path / "pred_wgs84.gpkg", reproject(proposals.geometries, proposals.crs_wkt, "EPSG:4326"),
                     proposals.attributes, "EPSG:4326")
    write_footprints(tmp_path / "gt_wgs84.geojson", reproject(truth.geometries, truth.crs_wkt, "EPSG:4326"),
                     {}, "EPSG:4326")
    for truth_path in (folder / "gt.geojson", tmp_path / "gt_wgs84.geojson"):
        t, p, crs = load_for_scoring(truth_path, tmp_path / "pred_wgs84.gpkg")
        for min_area, expected in ((0, (8, 20, 20)), (20, (8, 17, 18))):  # m², as in EPSG:32616
            report = score_footprints(t.geometries, p.geometries, min_area=min_area,
                                      proposal_confidence=p.confidence)
            assert (report.tp, report.fp, report.fn) == expected, (truth_path.name, min_area)


def test_image_field_and_ids_from_layers(tmp_path):
    squares = [box(0, 0, 10, 10), box(0, 0, 10, 10), box(50, 0, 60, 10)]
    write_footprints(tmp_path / "truth.gpkg", squares, {"tile": ["a", "b", "b"], "name": ["x", "y", "z"]}, "EPSG:32631")
    write_footprints(tmp_path / "pred.gpkg", squares[:1] + squares[2:], {"tile": ["a", "b"], "score": [0.3, 0.8]},
                     "EPSG:32631")
    truth, proposals, _ = load_for_scoring(tmp_path / "truth.gpkg", tmp_path / "pred.gpkg", image_field="tile",
                                           truth_id_field="name", confidence_field="score")
    report = score_footprints(truth.geometries, proposals.geometries, truth_image_ids=truth.image_ids,
                              proposal_image_ids=proposals.image_ids, truth_ids=truth.feature_ids,
                              proposal_confidence=proposals.confidence)
    assert {k: (s.tp, s.fp, s.fn) for k, s in report.per_image.items()} == {"a": (1, 0, 0), "b": (1, 0, 1)}
    assert report.proposal_match == ["x", "z"]
    with pytest.raises(ValueError, match="no field 'tiles'"):
        load_for_scoring(tmp_path / "truth.gpkg", tmp_path / "pred.gpkg", image_field="tiles")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sn6_footprints", "score", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_json_numbers(reference_data):
    folder = reference_data / "solaris"
    sn6 = run_cli(folder / "SN2_sample_truth.csv", folder / "SN2_sample_preds.csv", "--json", "--quiet")
    assert sn6.returncode == 0, sn6.stderr
    result = json.loads(sn6.stdout)
    assert (result["tp"], result["fp"], result["fn"], result["f1"]) == (86, 58, 79, 0.5566343042071198)
    assert result["min_area"] == 80 and result["inputs"]["area_units"] == "px"
    per_image = {r["image_id"]: (r["tp"], r["fp"], r["fn"]) for r in result["per_image"]}
    assert per_image["AOI_5_Khartoum_img130"] == (22, 13, 31)

    solaris = run_cli(folder / "SN2_sample_truth.csv", folder / "SN2_sample_preds.csv", "--variant", "solaris",
                      "--json", "--features", "--quiet")
    result = json.loads(solaris.stdout)
    assert (result["tp"], result["fp"], result["fn"], result["min_area"]) == (87, 57, 82, 20)
    assert len(result["truth"]) == 172 and len(result["proposals"]) == 145
    assert result["proposals"][-1] == {"id": -1, "image_id": "AOI_5_Khartoum_img463", "iou": 0.0,
                                       "best_truth": None, "match": None, "status": "empty"}

    layers = run_cli(folder / "gt.geojson", folder / "pred.geojson", "--min-area", "0", "--json", "--quiet")
    result = json.loads(layers.stdout)
    assert (result["tp"], result["fp"], result["fn"], result["f1"]) == (8, 20, 20, 0.2857142857142857)
    assert result["inputs"]["crs"] == "EPSG:32616"


def test_cli_table_and_user_errors(reference_data):
    folder = reference_data / "solaris"
    table = run_cli(folder / "gt.geojson", folder / "pred.geojson", "--quiet")
    assert table.returncode == 0 and "min area 20 m²" in table.stdout
    assert table.stdout.splitlines()[-2].split()[:4] == ["pooled", "8", "17", "18"]
    mixed = run_cli(folder / "gt.geojson", folder / "SN2_sample_preds.csv")
    assert mixed.returncode == 2 and "both be SpaceNet CSVs" in mixed.stderr
