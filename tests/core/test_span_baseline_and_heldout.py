"""The non-learned span baseline and the held-out evaluation sets.

Scenes are 512 px (the baseline) or 128 px (the held-out machinery); the file runs in a few
seconds. The baseline's bounds sit well below what it measures on these seeds (seed 11, 512 px:
F1 about 0.2, about 60 % of the buildings touched, over 90 % of its detections on a building),
so they catch a broken pipeline, not a small tuning change.
"""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity

from sn6_footprints.core.extract import score_extraction
from sn6_footprints.core.heldout import (DEMO_SEED, HELDOUT_SEEDS, HELDOUT_SETS, TRAINING_SEEDS, UNIT_TEST_SEEDS,
                                         bootstrap_f1_sd, evaluate, make_heldout_scenes, scene_parameters)
from sn6_footprints.core.raster_windows import RasterError
from sn6_footprints.core.simulation import SceneParameters, SceneSimulator, simulate_scene
from sn6_footprints.core.span_baseline import SpanBaselineOptions, extract_span_baseline
from sn6_footprints.core.vector_io import read_footprints

SEED = 11


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("span")
    info = simulate_scene(folder / "scene.tif", folder / "labels.gpkg", width_px=512, height_px=512, seed=SEED)
    return info, read_footprints(info.labels_path).geometries


# --- held-out sets ---------------------------------------------------------------------------
def test_seed_ranges_are_disjoint_and_sets_use_only_heldout_seeds():
    ranges = [set(UNIT_TEST_SEEDS), set(TRAINING_SEEDS), set(HELDOUT_SEEDS), {DEMO_SEED}]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert not a & b
    seeds = [s for definition in HELDOUT_SETS.values() for s in definition["seeds"]]
    assert len(seeds) == len(set(seeds))                       # no scene in two sets
    assert all(s in HELDOUT_SEEDS for s in seeds)
    assert set(HELDOUT_SETS) == {"default-north", "default-south", "single-look", "incidence-45", "dense", "east-west",
                                 "density-2", "nodata-edge"}
    with pytest.raises(TypeError):
        HELDOUT_SETS["mine"] = {}                                # frozen


def test_scene_parameters_name_the_harder_conditions_and_cycle_look_direction():
    assert scene_parameters("default-south", 0)["look_direction"] == "south"
    assert scene_parameters("single-look", 0)["looks"] == 1
    assert scene_parameters("incidence-45", 0)["incidence_deg"] == 45.0
    assert scene_parameters("density-2", 1)["building_density"] == 2.0
    assert scene_parameters("density-2", 1)["look_direction"] == "south"
    assert scene_parameters("nodata-edge", 0)["nodata_strip"] is True
    dense = [scene_parameters("dense", i, 512) for i in range(2)]
    assert [p["look_direction"] for p in dense] == ["north", "south"]
    assert dense[0]["layout"] == "dense" and dense[0]["width_px"] == 512
    with pytest.raises(KeyError):
        scene_parameters("nope", 0)


def test_make_heldout_scenes_is_deterministic_caches_and_evaluate_pools(tmp_path):
    sets = ["default-north", "dense"]
    first = make_heldout_scenes(tmp_path / "a", sets, size_px=128, scenes_per_set=1)
    assert [name for name, _, _ in first] == sets
    stamps = [raster.stat().st_mtime_ns for _, raster, _ in first]
    again = make_heldout_scenes(tmp_path / "a", sets, size_px=128, scenes_per_set=1)
    assert again == first and [r.stat().st_mtime_ns for _, r, _ in again] == stamps   # reused, not rewritten
    other = make_heldout_scenes(tmp_path / "b", sets, size_px=128, scenes_per_set=1)
    for (_, r1, _), (_, r2, _) in zip(first, other):
        with rasterio.open(r1) as a, rasterio.open(r2) as b:
            assert np.array_equal(a.read(), b.read())
    with rasterio.open(first[1][1]) as dataset:                  # parameters are what the set says
        assert '"layout": "dense"' in dataset.tags()["SIMULATION"]

    scenes = make_heldout_scenes(tmp_path / "a", ["default-north"], size_px=128, scenes_per_set=2)
    report = evaluate(extract_span_baseline, scenes)
    entry = report["default-north"]
    assert len(entry["scenes"]) == 2
    for key in ("tp", "fp", "fn"):
        assert entry[key] == sum(s[key] for s in entry["scenes"])
    assert 0.0 <= entry["f1"] <= 1.0 and entry["megapixels_per_s"] > 0
    assert entry["megapixels"] == pytest.approx(2 * 128 * 128 / 1e6)


# --- the span baseline -----------------------------------------------------------------------
def test_span_baseline_finds_buildings_with_the_model_outputs_attributes(scene):
    info, truth = scene
    result = extract_span_baseline(info.raster_path)
    assert set(result.attributes) == {"id", "area_m2", "confidence"}
    assert min(result.attributes["area_m2"]) >= 20.0 - 1.0        # simplification may shave a little
    assert all(0.5 < c <= 1.0 for c in result.attributes["confidence"])
    score = score_extraction(result, truth)
    touched = set(shapely.STRtree(result.geometries).query(truth, predicate="intersects")[0])
    on_building = set(shapely.STRtree(truth).query(result.geometries, predicate="intersects")[0])
    assert score.f1 > 0.1
    assert len(touched) / len(truth) > 0.45
    assert len(on_building) / len(result) > 0.75


def test_span_baseline_tiles_match_a_whole_run_and_db_input_matches(scene, tmp_path):
    info, _ = scene
    whole = extract_span_baseline(info.raster_path)
    tiled = extract_span_baseline(info.raster_path, SpanBaselineOptions(tile_size_px=128))
    assert len(tiled) == len(whole) and all(a.equals(b) for a, b in zip(whole.geometries, tiled.geometries))
    db = simulate_scene(tmp_path / "db.tif", None, width_px=512, height_px=512, seed=SEED, scale="db")
    from_db = extract_span_baseline(db.raster_path, SpanBaselineOptions(input_scale="db"))
    assert len(from_db) == len(whole)


@pytest.mark.parametrize("look, turns", [("east", -1), ("west", 1)])
def test_span_baseline_turns_an_east_or_west_looking_scene_like_the_model(scene, tmp_path, look, turns):
    """The north-looking scene's image turned as an east (west) look would show it: the same
    buildings, turned; before, such a tag was read as north and the layover shift went the wrong way."""
    info, _ = scene
    north = extract_span_baseline(info.raster_path)
    with rasterio.open(info.raster_path) as src:
        profile, data = src.profile, src.read()
    path = tmp_path / f"{look}.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(np.rot90(data, turns, axes=(1, 2))))
        dst.update_tags(LOOK_DIRECTION=look)
    def overlap_with_north(result):   # turned back onto the north image: IoU of the two footprint maps
        t = profile["transform"]
        centre = (t.c + t.a * profile["width"] / 2, t.f + t.e * profile["height"] / 2)
        back = shapely.union_all([shapely.affinity.rotate(g, -90 * turns, origin=centre) for g in result.geometries])
        found = shapely.union_all(north.geometries)
        return back.intersection(found).area / back.union(found).area

    turned = extract_span_baseline(path)
    assert len(turned) == len(north) > 5
    as_if_north = extract_span_baseline(path, SpanBaselineOptions(look_direction="north"))  # the old reading
    assert overlap_with_north(turned) > 0.95 > overlap_with_north(as_if_north) + 0.05, \
        (overlap_with_north(turned), overlap_with_north(as_if_north))


@pytest.mark.parametrize("look", ["north", "south", "east", "west"])
def test_span_baseline_never_detects_on_nodata(tmp_path, look):
    info = simulate_scene(tmp_path / "strip.tif", None, width_px=512, height_px=512, seed=SEED,
                          look_direction=look, nodata_strip=True)
    valid = SceneSimulator(SceneParameters(512, 512, SEED, look_direction=look, nodata_strip=True)).valid_polygon()
    result = extract_span_baseline(info.raster_path)
    assert len(result) > 5
    # the valid area's edge is a slanted line, the mask its pixel staircase: under 1 m² (4 px) outside
    assert max(g.difference(valid).area for g in result.geometries) < 1.0


def test_span_baseline_refuses_other_band_counts(tmp_path):
    path = tmp_path / "three.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="float32",
                       crs="EPSG:32631", transform=rasterio.Affine(0.5, 0, 594000, 0, -0.5, 5750000)) as dst:
        dst.write(np.full((3, 64, 64), 30.0, np.float32))
    with pytest.raises(RasterError, match="needs 4"):
        extract_span_baseline(path)
    with pytest.raises(ValueError, match="input scale"):
        extract_span_baseline(path, SpanBaselineOptions(input_scale="amplitude"))


def test_bootstrap_spread_is_zero_for_identical_scenes_and_grows_with_their_differences():
    same = [{"tp": 8, "fp": 2, "fn": 2}] * 8
    assert bootstrap_f1_sd(same) == pytest.approx(0.0)
    assert bootstrap_f1_sd(same[:1]) is None
    mixed = [{"tp": 10, "fp": 0, "fn": 0}, {"tp": 2, "fp": 8, "fn": 8}] * 4
    spread = bootstrap_f1_sd(mixed)
    assert 0.05 < spread < 0.3
    assert bootstrap_f1_sd(mixed) == spread          # seeded: the table is reproducible
