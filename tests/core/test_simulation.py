"""The scene simulator: determinism, windows, georeferencing, radiometry, geometry, calibration.

Scenes are small (a few hundred px) except two shared 1024 x 1024 scenes for the statistics;
the whole file runs in well under a minute on one core.
"""
from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features
from shapely import affinity

from sn6_footprints.cli import main as cli_main
from sn6_footprints.core.feedback import Cancelled, Feedback
from sn6_footprints.core.simulation import (SN6_DB_GAIN, SN6_DB_OFFSET, SceneParameters, SceneSimulator,
                                            db_from_sn6, linear_from_db, simulate_scene, sn6_from_db)
from sn6_footprints.core.simulation import layout as L
from sn6_footprints.core.simulation.render import Renderer, speckle
from sn6_footprints.core.radiometry.scales import SN6_BAND_MEANS
from sn6_footprints.core.vector_io import read_footprints

ORIGIN = (594000.0, 5750000.0)


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[-2] // f) * f, (a.shape[-1] // f) * f
    a = a[..., :h, :w]
    return a.reshape(a.shape[:-2] + (h // f, f, w // f, f)).mean(axis=(-3, -1))


@pytest.fixture(scope="module")
def db_scene(tmp_path_factory):
    """A default 1024 x 1024 scene (mixed layout, north-looking, 4 looks) in dB, with labels."""
    folder = tmp_path_factory.mktemp("db_scene")
    info = simulate_scene(folder / "scene.tif", folder / "labels.gpkg", seed=1, scale="db")
    with rasterio.open(info.raster_path) as src:
        return info, src.read(), src.profile


@pytest.fixture(scope="module")
def diagnostics():
    """The same scene's renderer layers (cover classes, shadow, layover) for per-class statistics."""
    sim = SceneSimulator(SceneParameters(seed=1))
    return sim.render_block(0, 0, diagnostics=True)


# --- the SN6 scale ---------------------------------------------------------------------------
def test_sn6_mapping_round_trip_nodata_and_range(reference_data):
    db = np.array([[-20.0, -12.0, 5.0, np.nan]] * 4, dtype=np.float32)
    values = sn6_from_db(db)
    assert values[:, 3].tolist() == [0.0] * 4                     # NaN -> nodata 0
    back = db_from_sn6(values)
    assert np.allclose(back[:, :3], db[:, :3], atol=1e-4) and np.isnan(back[:, 3]).all()
    assert np.allclose(sn6_from_db(-12.0, band="HV"), SN6_DB_GAIN[1] * -12.0 + SN6_DB_OFFSET[1])
    # the real Rotterdam dB crop maps well inside SN6's 0-92, valid pixels never onto nodata
    with rasterio.open(reference_data / "sn6" / "sar_masked.tif") as src:
        real = src.read()
    mapped = sn6_from_db(real)
    valid = np.isfinite(real)
    assert (mapped[valid] > 0).all() and mapped.max() <= 92
    for b in range(4):
        p1, p99 = np.percentile(mapped[b][valid[b]], [1, 99])
        assert 15 < p1 < p99 < 65, (b, p1, p99)


def test_sn6_scale_statistics_of_a_default_scene(tmp_path):
    """SN6 per-band means about 28.6 / 36.1 / 33.8 / 26.2 and std about 8.5 (REFERENCE.md §1)."""
    info = simulate_scene(tmp_path / "s.tif", None, seed=1)
    with rasterio.open(info.raster_path) as src:
        values, profile = src.read(), src.profile
    assert profile["nodata"] == 0 and profile["dtype"] == "float32" and profile["count"] == 4
    assert (values > 0).all() and values.max() <= 92
    for b in range(4):
        assert abs(values[b].mean() - SN6_BAND_MEANS[b]) < 2.5, (b, values[b].mean())
        assert 7.0 < values[b].std() < 10.0, (b, values[b].std())


# --- speckle ---------------------------------------------------------------------------------
@pytest.mark.parametrize("looks", [1, 4])
def test_speckle_is_unit_mean_with_variance_one_over_looks(looks):
    s = speckle(np.random.default_rng(0), looks, (300, 300)).astype(np.float64)
    for b in range(4):
        assert abs(s[b].mean() - 1) < 0.02
        assert abs(s[b].var() * looks - 1) < 0.08, (b, s[b].var() * looks)
    corr = np.corrcoef(s.reshape(4, -1))
    assert 0.9 < corr[1, 2] < 0.995            # HV ~ VH (reciprocity), not identical
    assert 0.3 < corr[0, 3] < 0.7              # HH and VV partly correlated
    assert corr[0, 1] < 0.4


# --- determinism and windows ----------------------------------------------------------------
def test_same_seed_same_files_other_seed_other_scene(tmp_path):
    kw = dict(width_px=192, height_px=160, nodata_strip=True, block_px=128)
    a = simulate_scene(tmp_path / "a.tif", tmp_path / "a.gpkg", seed=5, **kw)
    b = simulate_scene(tmp_path / "b.tif", tmp_path / "b.geojson", seed=5, **kw)
    c = simulate_scene(tmp_path / "c.tif", tmp_path / "c.gpkg", seed=6, **kw)
    read = lambda p: rasterio.open(p).read()  # noqa: E731
    assert np.array_equal(read(a.raster_path), read(b.raster_path))
    assert not np.array_equal(read(a.raster_path), read(c.raster_path))
    la, lb = read_footprints(a.labels_path), read_footprints(b.labels_path)
    assert a.building_count == b.building_count == len(la) > 0
    assert all(ga.equals_exact(gb, 1e-6) for ga, gb in zip(la.geometries, lb.geometries))
    assert la.attributes["height_m"] == lb.attributes["height_m"]


def test_any_block_renders_alone_and_blocks_join_without_seams(tmp_path):
    params = SceneParameters(width_px=256, height_px=256, seed=2, block_px=128)
    info = simulate_scene(tmp_path / "s.tif", None, width_px=256, height_px=256, seed=2, block_px=128)
    with rasterio.open(info.raster_path) as src:
        written = src.read()
    alone = SceneSimulator(params).render_block(1, 1)["values"]      # a fresh simulator, one block
    assert np.array_equal(alone, written[:, 128:, 128:])
    # before speckle, four 128-px blocks and one 256-px block give the same picture: the margins
    # carry layover and shadow across block borders
    whole = SceneSimulator(SceneParameters(width_px=256, height_px=256, seed=2, block_px=256)).render_block(0, 0)
    tiled = SceneSimulator(params)
    for bi in (0, 1):
        for bj in (0, 1):
            part = tiled.render_block(bi, bj)["sigma"]
            ref = whole["sigma"][:, bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            assert np.allclose(part, ref, rtol=1e-4, atol=1e-6)


def test_memory_does_not_grow_with_scene_size(tmp_path):
    """Written block by block: a scene 4 times wider peaks at about the same memory."""
    peaks = []
    for width in (256, 1024):
        tracemalloc.start()
        simulate_scene(tmp_path / f"w{width}.tif", None, width_px=width, height_px=128, seed=3, block_px=128)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks


# --- labels against the raster ---------------------------------------------------------------
def test_labels_are_true_footprints_on_the_raster_grid(db_scene, diagnostics):
    info, data, profile = db_scene
    table = read_footprints(info.labels_path)
    assert profile["crs"].to_epsg() == 32631 and "32631" in table.crs_wkt
    assert profile["transform"] == info.transform
    assert profile["transform"].a == 0.5 and (profile["transform"].c, profile["transform"].f) == ORIGIN
    bounds = shapely.box(ORIGIN[0], ORIGIN[1] - 512, ORIGIN[0] + 512, ORIGIN[1])
    assert len(table) == info.building_count > 100
    assert all(bounds.covers(g) for g in table.geometries)
    assert min(g.area for g in table.geometries) >= 20.0
    assert len(set(table.attributes["shape"])) >= 3 and "rectangle" in table.attributes["shape"]
    assert {"flat", "gabled"} == set(table.attributes["roof"])
    heights = np.array(table.attributes["height_m"])
    assert heights.min() >= 3.0 and heights.max() <= 40.0
    assert any(len(g.interiors) for g in table.geometries)          # courtyard blocks
    touching = shapely.STRtree(table.geometries)
    pairs = touching.query(table.geometries, predicate="touches")
    assert pairs.shape[1] > 20                                       # rows of touching buildings
    # rasterised with the raster's own transform, the labels are the pixels the renderer built on
    mask = features.rasterize(((g, 1) for g in table.geometries), out_shape=(1024, 1024),
                              transform=info.transform).astype(bool)
    built = diagnostics["object_kind"] == L.OBJ_BUILDING
    crowns = diagnostics["object_kind"] == L.OBJ_TREE                # crowns may overhang roofs
    iou = (mask & built).sum() / (mask | built).sum()
    assert iou > 0.97, iou
    # only slivers under 20 m² cut off by the scene border are built but not labelled
    assert (built & ~mask).sum() < 0.002 * mask.sum() and (mask & ~built & ~crowns).sum() < 0.01 * mask.sum()


# --- radiometry per land cover and band -------------------------------------------------------
# Median dB of lit ground not reached by layover, 1024 x 1024 default scene; the noise floor is
# about -19 dB, so dark classes sit just above it.
CLASS_RANGES = {  # class: ((lo, hi) HH, HV, VH, VV)
    L.WATER: ((-21, -16), (-21, -17), (-21, -17), (-21, -15.5)),       # dark everywhere
    L.ASPHALT: ((-18.5, -13.5), (-20, -16), (-20, -16), (-18, -13)),   # dark co-pol
    L.PAVEMENT: ((-16.5, -12), (-19.5, -15), (-19.5, -15), (-16, -11.5)),
    L.SOIL: ((-16, -11.5), (-19, -14.5), (-19, -14.5), (-15.5, -11)),
    L.GRASS: ((-15, -10.5), (-17, -12.5), (-17, -12.5), (-14.5, -10)),
    L.SHRUB: ((-12.5, -7.5), (-14, -9.5), (-14, -9.5), (-12, -7)),     # volume: strong cross-pol
}


def test_statistics_per_land_cover_and_band(diagnostics):
    db = 10 * np.log10(diagnostics["intensity"])
    clean = ~diagnostics["shadow"] & ~diagnostics["layover"]
    medians = {}
    for cls, ranges in CLASS_RANGES.items():
        m = clean & (diagnostics["cover"] == cls)
        assert m.sum() > 2000, L.CLASS_NAMES[cls]
        medians[cls] = [float(np.median(db[b][m])) for b in range(4)]
        for b, (lo, hi) in enumerate(ranges):
            assert lo <= medians[cls][b] <= hi, (L.CLASS_NAMES[cls], b, medians[cls][b])
    # orderings that do not depend on the exact tables
    for b in range(4):
        assert medians[L.WATER][b] == min(m[b] for m in medians.values())
    assert medians[L.SHRUB][1] > medians[L.PAVEMENT][1] + 3
    assert medians[L.SHRUB][1] - medians[L.SHRUB][0] > medians[L.ASPHALT][1] - medians[L.ASPHALT][0] - 1
    assert medians[L.SHRUB][1] - medians[L.SHRUB][0] > medians[L.PAVEMENT][1] - medians[L.PAVEMENT][0]
    # HV and VH: nearly equal, not identical
    hv, vh = diagnostics["intensity"][1], diagnostics["intensity"][2]
    assert abs(10 * np.log10(vh.mean() / hv.mean())) < 1.0 and not np.allclose(hv, vh)
    # shadows are dark but not empty: noise floor, multipath, neighbours
    shadow = diagnostics["shadow"] & ~diagnostics["layover"]
    sh = [float(10 * np.log10(diagnostics["intensity"][b][shadow].mean())) for b in range(4)]
    assert all(-20.5 < v < -14 for v in sh), sh


# --- geometry on a single building -------------------------------------------------------------
def _one_building(look, angle_deg=0.0, height=20.0, incidence=35.0, gabled=False):
    """A 20 x 20 m building centred on pixel (100, 100) of a 200 x 200 px scene on pavement."""
    world = L.FixedWorld([(ORIGIN[0] + 50, ORIGIN[1] - 50, 20, 20, angle_deg, height,
                           height + (5 if gabled else 0))], ORIGIN, ground=L.PAVEMENT)
    r = Renderer(world, origin=ORIGIN, pixel_size=0.5, look=look, incidence_deg=incidence, looks=4)
    return r.render(0, 0, 200, 200, np.random.default_rng(0), diagnostics=True)


@pytest.mark.parametrize("look,incidence,height", [("north", 35, 20.0), ("south", 35, 20.0),
                                                   ("north", 45, 20.0), ("south", 25, 12.0)])
def test_layover_shadow_and_double_bounce_sides(look, incidence, height):
    out = _one_building(look, height=height, incidence=incidence)
    hh = 10 * np.log10(out["sigma"][0][:, 90:111].mean(axis=1))       # along range, centre columns
    k = height / math.tan(math.radians(incidence)) / 0.5                 # layover, px
    s = height * math.tan(math.radians(incidence)) / 0.5                 # shadow, px
    near_edge, far_edge = (119, 80) if look == "north" else (80, 119)  # footprint rows 80..119
    step = 1 if look == "north" else -1                                 # toward the sensor
    # double bounce: the brightest line, on the footprint edge facing the sensor
    peak = int(np.argmax(hh))
    assert peak in (near_edge, near_edge + step)
    assert hh[peak] > 15 and hh[peak] > hh[far_edge] + 25 and hh[peak] > hh[near_edge + 8 * step] + 15
    # layover: wall and roof returns reach h / tan(incidence) toward the sensor, ground beyond
    end = near_edge + step * int(round(k))
    assert hh[end - 3 * step] > -8 and hh[end + 3 * step] < -13
    # shadow: h * tan(incidence) behind the far edge, then lit ground again
    shadow = out["shadow"][:, 100]
    assert shadow[far_edge - step * int(s - 2)] and not shadow[far_edge - step * int(s + 2)]
    assert hh[far_edge - step * int(s / 2)] < -17 and hh[far_edge - step * int(s + 6)] > -16.5
    # the footprint in the labels and the renderer agree: the cover map has the building unshifted
    built = out["cover"] == L.BUILDING
    assert built[80:120, 80:120].all() and built.sum() == 40 * 40


def test_double_bounce_fades_as_the_wall_turns():
    square = _one_building("north")["sigma"][0].max()
    turned = _one_building("north", angle_deg=30.0)["sigma"][0].max()
    assert 10 * np.log10(square / turned) > 8


def test_gabled_roof_slope_facing_the_sensor_is_bright():
    """An 8 m eave, 13 m ridge running east-west: the south slope (facing a north-looking sensor)
    is squeezed into a few bright rows, the north slope stretched and dim."""
    def rows(o, a, b):
        return 10 * np.log10(o["sigma"][0][a:b, 85:115].mean())
    flat = _one_building("north", height=8.0)
    gabled = _one_building("north", height=8.0, gabled=True)
    # far slope maps to rows ~103-137, near slope to ~137-142 (ridge 13 m, eave 8 m, k = 2.86 px/m)
    assert rows(gabled, 137, 141) - rows(gabled, 104, 118) > 10
    assert rows(flat, 137, 141) - rows(flat, 104, 118) < 6


# --- a whole scene: double bounce on the sensor-facing side ------------------------------------
def _edge_strips(geoms, dy):
    """Thin slivers just outside each footprint on one side (dy > 0: north)."""
    return [affinity.translate(g, 0, dy).difference(g) for g in geoms]


def _strip_means(values, geoms, transform, dy):
    mask = features.rasterize(((s, 1) for s in _edge_strips(geoms, dy) if not s.is_empty),
                              out_shape=values.shape[1:], transform=transform).astype(bool)
    return [float(values[b][mask].mean()) for b in range(4)]


def test_scene_double_bounce_on_the_sensor_facing_side(db_scene, tmp_path):
    info, data, _ = db_scene
    geoms = read_footprints(info.labels_path).geometries
    lin = linear_from_db(data)
    south = _strip_means(lin, geoms, info.transform, -1.0)    # sensor side when looking north
    north = _strip_means(lin, geoms, info.transform, +1.0)
    assert 10 * np.log10(south[0] / north[0]) > 10
    assert 10 * np.log10(south[0] / south[1]) > 8              # dihedrals are co-polarised
    assert 10 * np.log10(south[3] / south[1]) > 8
    # the same world seen from the north: the bright side swaps
    s = simulate_scene(tmp_path / "s.tif", tmp_path / "s.gpkg", width_px=512, height_px=512, seed=1,
                       look_direction="south", scale="db")
    with rasterio.open(s.raster_path) as src:
        lin_s = linear_from_db(src.read())
    g_s = read_footprints(s.labels_path).geometries
    assert 10 * np.log10(_strip_means(lin_s, g_s, s.transform, +1.0)[0]
                         / _strip_means(lin_s, g_s, s.transform, -1.0)[0]) > 10


# --- calibration against the real Rotterdam crop -----------------------------------------------
def test_calibration_against_real_sn6_crop(db_scene, reference_data):
    """Block-averaged to 4.5 m in linear intensity, the simulated per-band dB percentiles
    (1, 50, 99) are within 3 dB of the real crop's."""
    _, data, _ = db_scene
    sim = 10 * np.log10(block_mean(linear_from_db(data), 9))
    with rasterio.open(reference_data / "sn6" / "sar_masked.tif") as src:
        real = src.read()
    for b in range(4):
        r = np.percentile(real[b][np.isfinite(real[b])], [1, 50, 99])
        s = np.percentile(sim[b], [1, 50, 99])
        assert np.all(np.abs(s - r) <= 3.0), (b, s.round(1).tolist(), r.round(1).tolist())


# --- nodata strip, options, CLI, cancelling -----------------------------------------------------
@pytest.mark.parametrize("look", ["north", "south"])
def test_nodata_strip_on_the_far_range_side(tmp_path, look):
    info = simulate_scene(tmp_path / "n.tif", tmp_path / "n.gpkg", width_px=256, height_px=256, seed=4,
                          look_direction=look, nodata_strip=True)
    with rasterio.open(info.raster_path) as src:
        values = src.read()
    nodata = (values == 0).all(axis=0)
    assert ((values == 0).any(axis=0) == nodata).all()               # all bands or none
    assert 0.1 < nodata.mean() < 0.5
    far, near = (nodata[:20], nodata[-20:]) if look == "north" else (nodata[-20:], nodata[:20])
    assert far.mean() > 0.9 and near.mean() == 0
    valid = features.rasterize(((g, 1) for g in read_footprints(info.labels_path).geometries),
                               out_shape=(256, 256), transform=info.transform).astype(bool)
    assert (valid & nodata).sum() <= 0.01 * max(valid.sum(), 1)      # labels clipped to the swath


def test_db_scale_uses_nan_nodata(tmp_path):
    info = simulate_scene(tmp_path / "d.tif", None, width_px=128, height_px=128, seed=4, scale="db",
                          nodata_strip=True, looks=1, incidence_deg=45, pixel_size_m=1.0)
    with rasterio.open(info.raster_path) as src:
        values, nodata = src.read(), src.nodata
    assert math.isnan(nodata) and np.isnan(values).any() and np.isfinite(values).any()
    lo, hi = np.percentile(values[np.isfinite(values)], [0.1, 99.9])
    assert -45 < lo < -20 and 0 < hi < 45


def test_dense_layout_is_denser_and_rotated(tmp_path):
    dense = SceneSimulator(SceneParameters(seed=11, layout="dense"))
    mixed = SceneSimulator(SceneParameters(seed=11))
    g_dense, _ = dense.labels()
    g_mixed, _ = mixed.labels()
    area = lambda gs: sum(g.area for g in gs)  # noqa: E731
    assert area(g_dense) > 1.3 * area(g_mixed)
    angles = []
    for g in g_dense:
        x, y = np.asarray(g.minimum_rotated_rectangle.exterior.coords).T
        angles.append(math.degrees(math.atan2(y[1] - y[0], x[1] - x[0])) % 90)
    angles = np.array(angles)
    assert ((angles > 5) & (angles < 85)).mean() > 0.3                # not all axis-aligned


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "cli.tif"
    code = cli_main(["simulate", str(out), str(tmp_path / "cli.geojson"), "--size", "128", "--seed", "2",
                     "--look", "south", "--looks", "2", "--density", "1.5", "--layout", "dense", "--json",
                     "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["width"] == 128 and summary["parameters"]["look_direction"] == "south"
    with rasterio.open(out) as src:
        assert src.count == 4 and src.descriptions == ("HH", "HV", "VH", "VV")
        assert json.loads(src.tags()["SIMULATION"])["layout"] == "dense"
    assert cli_main(["simulate", str(tmp_path / "x.png"), str(tmp_path / "x.gpkg")]) == 2
    assert cli_main(["simulate", str(tmp_path / "y.tif"), str(tmp_path / "y.gpkg"), "--incidence", "80"]) == 2


def test_cancelling_leaves_no_files(tmp_path):
    class CancelAfterFirstBlock(Feedback):
        calls = 0

        def is_cancelled(self):
            self.calls += 1
            return self.calls > 2

    with pytest.raises(Cancelled):
        simulate_scene(tmp_path / "c.tif", tmp_path / "c.gpkg", width_px=256, height_px=256, block_px=128,
                       feedback=CancelAfterFirstBlock())
    assert list(tmp_path.iterdir()) == []
