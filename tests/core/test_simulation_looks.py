"""The simulator writes every input path of a real product: four look directions, every scale,
south-up storage and any pixel size, each checked end to end on small scenes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio import features
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from sn6_footprints.cli import main as cli_main
from sn6_footprints.core.radiometry.scales import SCALES, to_linear
from sn6_footprints.core.simulation import SceneParameters, SceneSimulator, simulate_scene
from sn6_footprints.core.simulation import layout as L
from sn6_footprints.core.simulation.render import Renderer
from sn6_footprints.core.vector_io import read_footprints

ORIGIN = (594000.0, 5750000.0)
# Unit vector (row, col) pointing from the scene toward the sensor, in image pixels.
TOWARD_SENSOR = {"north": (1, 0), "south": (-1, 0), "east": (0, -1), "west": (0, 1)}


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags(), src.units


# --- geometry in every look direction ----------------------------------------------------------
@pytest.mark.parametrize("look", ["north", "south", "east", "west"])
def test_layover_toward_and_shadow_away_from_the_sensor_in_every_look(look):
    """A 20 m tall, 20 x 20 m building centred on pixel (100, 100): its roof and walls land up to
    h / tan(35°) = 57 px toward the sensor, its shadow reaches h * tan(35°) = 28 px away from it."""
    world = L.FixedWorld([(ORIGIN[0] + 50, ORIGIN[1] - 50, 20, 20, 0.0, 20.0, 20.0)], ORIGIN, ground=L.PAVEMENT)
    out = Renderer(world, origin=ORIGIN, pixel_size=0.5, look=look, incidence_deg=35.0, looks=4).render(
        0, 0, 200, 200, np.random.default_rng(0), diagnostics=True)
    built = out["cover"] == L.BUILDING
    assert built[80:120, 80:120].all() and built.sum() == 40 * 40       # the footprint does not move
    dr, dc = TOWARD_SENSOR[look]
    rows, cols = np.mgrid[0:200, 0:200]
    toward = (rows - 99.5) * dr + (cols - 99.5) * dc       # px from the centre toward the sensor
    across = (rows - 99.5) * dc + (cols - 99.5) * dr
    beside = np.abs(across) < 20
    layover_out = out["layover"] & ~built
    assert layover_out[beside & (toward > 20) & (toward < 70)].mean() > 0.95   # lit between footprint and sensor
    lay = toward[layover_out & beside]
    assert lay.min() > 20 and 20 + 55 < lay.max() < 20 + 60
    shade = toward[out["shadow"] & beside]
    assert shade.max() < -19 and -20 - 30 < shade.min() < -20 - 26
    # the double bounce: the brightest line on the footprint edge facing the sensor
    peak = np.unravel_index(np.argmax(out["sigma"][0]), (200, 200))
    assert 19 <= toward[peak] <= 21 and abs(across[peak]) < 20


# Four buildings, one gabled, two turned, off the pixel grid: (dx, dy) m from the scene centre.
_BUILDINGS = [(-20.1, 15.3, 14, 10, 0.0, 12.0, 12.0), (18.2, -12.4, 20, 12, 30.0, 25.0, 25.0),
              (10.3, 22.1, 16, 9, 0.0, 6.0, 10.0), (-15.2, -20.3, 8, 8, 15.0, 4.0, 4.0)]


def _render_fixed(turned: bool, look: str) -> dict:
    """The buildings on pavement, or the same world turned 90° counter-clockwise about the centre."""
    cx, cy = ORIGIN[0] + 50, ORIGIN[1] - 50
    buildings = [(cx - dy, cy + dx, length, width, angle + 90, eave, ridge) if turned else
                 (cx + dx, cy + dy, length, width, angle, eave, ridge)
                 for dx, dy, length, width, angle, eave, ridge in _BUILDINGS]
    world = L.FixedWorld(buildings, ORIGIN, ground=L.PAVEMENT)
    renderer = Renderer(world, origin=ORIGIN, pixel_size=0.5, look=look, incidence_deg=35.0, looks=4)
    return renderer.render(0, 0, 200, 200, np.random.default_rng(0), diagnostics=True)


@pytest.mark.parametrize("look,turned_look", [("east", "north"), ("north", "west"), ("west", "south"),
                                              ("south", "east")])
def test_a_look_is_the_next_look_of_the_world_turned_a_quarter(look, turned_look):
    """Turning the world 90° counter-clockwise moves the sensor from west to south (east-looking
    becomes north-looking, and so on round): the image turns with it. Heights, shadows and cover
    agree pixel for pixel; the radiometry up to the textures, which stay in map coordinates."""
    seen = _render_fixed(False, look)
    turned = _render_fixed(True, turned_look)
    for key in ("height", "shadow", "cover", "object_kind"):
        assert np.array_equal(np.rot90(seen[key]), turned[key]), key
    assert turned["shadow"].sum() > 1000
    sigma, sigma_turned = np.rot90(seen["sigma"], axes=(1, 2)), turned["sigma"]
    assert np.percentile(np.abs(10 * np.log10(sigma / sigma_turned)), 99) < 3.0
    bright, bright_turned = sigma[0] > 0.3 * sigma[0].max(), sigma_turned[0] > 0.3 * sigma_turned[0].max()
    assert 20 < bright.sum() and (bright & bright_turned).sum() > 0.9 * (bright | bright_turned).sum()  # dihedrals


def test_an_east_looking_scene_has_the_statistics_of_a_north_looking_one():
    """The same world seen from the south and from the west: per band, the mean and median dB and the
    shares of shadow and layover agree as closely as north- and south-looking views of it do."""
    def stats(look):
        out = SceneSimulator(SceneParameters(512, 512, seed=1, look_direction=look, block_px=512)).render_block(
            0, 0, diagnostics=True)
        db = 10 * np.log10(out["intensity"].astype(np.float64))
        return (db.mean(axis=(1, 2)), np.median(db, axis=(1, 2)), out["shadow"].mean(), out["layover"].mean())

    north = stats("north")
    for look in ("south", "east", "west"):
        mean, median, shadow, layover = stats(look)
        assert np.abs(mean - north[0]).max() < 0.75, (look, mean, north[0])
        assert np.abs(median - north[1]).max() < 0.4, (look, median, north[1])
        assert abs(shadow / north[2] - 1) < 0.2 and abs(layover / north[3] - 1) < 0.2, look


@pytest.mark.parametrize("look", ["east", "west"])
def test_east_and_west_blocks_render_alone_and_join_without_seams(tmp_path, look):
    kw = dict(width_px=256, height_px=256, seed=2, look_direction=look)
    info = simulate_scene(tmp_path / "s.tif", None, block_px=128, **kw)
    again = simulate_scene(tmp_path / "t.tif", None, block_px=128, **kw)
    written = _read(info.raster_path)[0]
    assert np.array_equal(written, _read(again.raster_path)[0])           # deterministic
    assert _read(info.raster_path)[2]["LOOK_DIRECTION"] == look
    params = SceneParameters(block_px=128, **kw)
    assert np.array_equal(SceneSimulator(params).render_block(1, 0)["values"], written[:, 128:, :128])
    whole = SceneSimulator(SceneParameters(block_px=256, **kw)).render_block(0, 0)["sigma"]
    tiled = SceneSimulator(params)
    for bi in (0, 1):
        for bj in (0, 1):
            part = tiled.render_block(bi, bj)["sigma"]
            ref = whole[:, bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            assert np.allclose(part, ref, rtol=1e-4, atol=1e-6), (bi, bj)


@pytest.mark.parametrize("look", ["east", "west"])
def test_nodata_strip_on_the_far_range_side_for_east_and_west(tmp_path, look):
    """East-looking: the sensor is west, far range on the right; west-looking: on the left."""
    info = simulate_scene(tmp_path / "n.tif", tmp_path / "n.gpkg", width_px=256, height_px=192, seed=4,
                          look_direction=look, nodata_strip=True, block_px=128)
    values = _read(info.raster_path)[0]
    nodata = (values == 0).all(axis=0)
    assert ((values == 0).any(axis=0) == nodata).all()
    assert 0.1 < nodata.mean() < 0.5
    far, near = (nodata[:, -20:], nodata[:, :20]) if look == "east" else (nodata[:, :20], nodata[:, -20:])
    assert far.mean() > 0.9 and near.mean() == 0
    sim = SceneSimulator(SceneParameters(256, 192, seed=4, look_direction=look, nodata_strip=True, block_px=128))
    region = features.rasterize([(sim.valid_polygon(), 1)], out_shape=(192, 256), transform=info.transform)
    assert (region.astype(bool) != ~nodata).mean() < 0.01               # the polygon is the valid mask
    labels = features.rasterize(((g, 1) for g in read_footprints(info.labels_path).geometries),
                                out_shape=(192, 256), transform=info.transform).astype(bool)
    assert labels.sum() > 500 and (labels & nodata).sum() <= 0.01 * labels.sum()


# --- scales ----------------------------------------------------------------------------------
SCALE_FILES = {"sn6": ("float32", 0.0, None), "db": ("float32", math.nan, "dB"), "linear": ("float32", 0.0, None),
               "amplitude": ("float32", 0.0, None), "complex": ("complex64", 0.0, None)}


@pytest.fixture(scope="module")
def scale_scenes(tmp_path_factory):
    """The same small scene with a nodata strip, written on every scale."""
    folder = tmp_path_factory.mktemp("scales")
    return {scale: _read(simulate_scene(folder / f"{scale}.tif", None, width_px=160, height_px=144, seed=8,
                                        scale=scale, nodata_strip=True, look_direction="west", block_px=64)
                         .raster_path) for scale in SCALES}


@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_writes_the_same_intensity_with_its_nodata_and_tags(scale_scenes, scale):
    values, profile, tags, units = scale_scenes[scale]
    dtype, nodata, unit = SCALE_FILES[scale]
    assert profile["dtype"] == dtype and profile["count"] == 4
    assert profile["nodata"] == nodata or (math.isnan(nodata) and math.isnan(profile["nodata"]))
    assert units == (unit,) * 4
    assert tags["SAR_SCALE"] == scale and tags["LOOK_DIRECTION"] == "west" and tags["BAND_ORDER"] == "HH,HV,VH,VV"
    assert json.loads(tags["SIMULATION"])["scale"] == scale and len(tags["SCALE"]) > 20
    linear_file = scale_scenes["linear"][0]
    invalid = (linear_file == 0).all(axis=0)
    assert 0.1 < invalid.mean() < 0.5
    intensity = to_linear(values, scale)                          # nodata -> NaN
    if scale in ("sn6", "db"):
        assert np.isnan(intensity[:, invalid]).all()
    else:
        assert (values[:, invalid] == 0).all()
        intensity[:, invalid] = np.nan
    assert np.isfinite(intensity[:, ~invalid]).all()
    expected = linear_file[:, ~invalid]
    # sn6 clips at its ends (0.5 and 92): compare where it does not
    inside = np.ones(expected.shape, dtype=bool) if scale != "sn6" else (values[:, ~invalid] > 0.5) & (
        values[:, ~invalid] < 92)
    assert inside.mean() > 0.99
    assert np.allclose(intensity[:, ~invalid][inside], expected[inside], rtol=2e-4, atol=0)


def test_complex_phase_is_deterministic_and_uniform(scale_scenes, tmp_path):
    z = scale_scenes["complex"][0]
    again = _read(simulate_scene(tmp_path / "c.tif", None, width_px=160, height_px=144, seed=8, scale="complex",
                                 nodata_strip=True, look_direction="west", block_px=64).raster_path)[0]
    assert np.array_equal(z, again)
    valid = (z != 0).all(axis=0)
    phase = np.angle(z[:, valid])
    assert abs(np.cos(phase).mean()) < 0.02 and abs(np.sin(phase).mean()) < 0.02
    counts = np.histogram(phase, bins=8, range=(-math.pi, math.pi))[0]
    assert counts.min() > 0.9 * counts.mean()
    assert abs(np.corrcoef(phase[0], phase[3])[0, 1]) < 0.05            # independent per band


# --- storage and pixel size ------------------------------------------------------------------
def test_south_up_storage_is_the_same_ground_with_rows_reversed(tmp_path):
    """Rows reversed, pixel height +p, the same footprints; a north-up warp reads the north-up scene."""
    kw = dict(width_px=160, height_px=200, seed=9, nodata_strip=True, block_px=128, look_direction="east")
    north = simulate_scene(tmp_path / "n.tif", tmp_path / "n.geojson", **kw)
    south = simulate_scene(tmp_path / "s.tif", tmp_path / "s.geojson", storage="south-up", **kw)
    values_n, values_s = _read(north.raster_path)[0], _read(south.raster_path)[0]
    assert np.array_equal(values_s, values_n[:, ::-1])             # 200 rows in blocks of 128 and 72, mirrored
    assert south.transform == Affine(0.5, 0, ORIGIN[0], 0, 0.5, ORIGIN[1] - 100.0)
    with rasterio.open(south.raster_path) as src:
        left, bottom, right, top = rasterio.open(north.raster_path).bounds
        assert (src.bounds.left, src.bounds.right) == (left, right)
        assert sorted((src.bounds.bottom, src.bounds.top)) == [bottom, top]
        assert json.loads(src.tags()["SIMULATION"])["storage"] == "south-up"
        with WarpedVRT(src, crs=src.crs, transform=north.transform, width=160, height=200,
                       resampling=Resampling.nearest) as vrt:
            assert np.array_equal(vrt.read(), values_n)
    geoms_n, geoms_s = (read_footprints(i.labels_path).geometries for i in (north, south))
    assert len(geoms_n) == len(geoms_s) >= 3 and all(a.equals_exact(b, 1e-9) for a, b in zip(geoms_n, geoms_s))


def test_pixel_size_changes_neither_the_ground_nor_the_labels(tmp_path):
    """The world is in metres: 256 m at 0.5 m and at 1 m cover the same ground with the same labels,
    and walls, dihedrals and points keep their power per square metre: the scene mean stays within
    a fraction of a dB (it grew by 1.9 dB at 1 m and 4.7 dB at 2 m when line targets ignored the
    pixel size). The mean is a heavy-tailed sum, so the check uses a seed whose bright dihedrals do
    not sit right at the tip of a neighbour's shadow, where a pixel's sampling decides them."""
    scenes = {p: simulate_scene(tmp_path / f"{p}.tif", tmp_path / f"{p}.gpkg", width_px=round(256 / p),
                                height_px=round(256 / p), seed=3, pixel_size_m=p, nodata_strip=True)
              for p in (0.5, 1.0)}
    with rasterio.open(scenes[0.5].raster_path) as fine, rasterio.open(scenes[1.0].raster_path) as coarse:
        assert fine.bounds == coarse.bounds and coarse.res == (1.0, 1.0)
    labels = {p: read_footprints(info.labels_path) for p, info in scenes.items()}
    assert len(labels[0.5]) == len(labels[1.0]) > 20
    assert all(a.equals_exact(b, 1e-9) for a, b in zip(labels[0.5].geometries, labels[1.0].geometries))
    assert labels[0.5].attributes == labels[1.0].attributes
    means = {}
    for p in (0.5, 1.0, 2.0):
        n = round(256 / p)
        sigma = SceneSimulator(SceneParameters(n, n, seed=1, pixel_size_m=p, block_px=512)).render_block(0, 0)["sigma"]
        means[p] = 10 * np.log10(sigma.astype(np.float64).mean(axis=(1, 2)))
    for p in (1.0, 2.0):
        assert np.abs(means[p] - means[0.5]).max() < 0.75, (p, means[p], means[0.5])


# --- parameters and the CLI --------------------------------------------------------------------
@pytest.mark.parametrize("field,value,flag", [("look_direction", "up", "--look"), ("scale", "gamma0", "--scale"),
                                              ("storage", "east-up", "--storage"), ("pixel_size_m", 7.0,
                                                                                    "--pixel-size")])
def test_parameters_out_of_range_are_refused_naming_the_flag(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        SceneParameters(**{field: value}).validate()


def test_cli_simulate_writes_look_scale_and_storage(tmp_path, capsys):
    out = tmp_path / "cli.tif"
    code = cli_main(["simulate", str(out), str(tmp_path / "cli.gpkg"), "--size", "96", "--look", "west", "--scale",
                     "amplitude", "--storage", "south-up", "--pixel-size", "0.7", "--json", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"]["storage"] == "south-up" and summary["transform"][4] == 0.7
    with rasterio.open(out) as src:
        assert src.tags()["SAR_SCALE"] == "amplitude" and src.tags()["LOOK_DIRECTION"] == "west"
        assert src.transform.e > 0 and src.descriptions == ("HH", "HV", "VH", "VV")
    with pytest.raises(SystemExit):   # argparse refuses a scale it does not list
        cli_main(["simulate", str(tmp_path / "x.tif"), str(tmp_path / "x.gpkg"), "--scale", "gamma0"])
    assert cli_main(["simulate", str(tmp_path / "y.tif"), str(tmp_path / "y.gpkg"), "--pixel-size", "7"]) == 2
