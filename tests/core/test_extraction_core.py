"""The QGIS-free pipeline: windows, blending, nodata, vectorising, georeferencing, CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from sn6_footprints.core.devices import DeviceError, resolve_device
from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
from sn6_footprints.core.feedback import Cancelled, Feedback
from sn6_footprints.core.engine.tiling import TilingOptions, computed_pixels, plan_tile_rows, tile_starts
from sn6_footprints.core.raster_windows import RasterError, RasterInfo
from sn6_footprints.core.vectorize import VectorizeOptions, vectorize_probabilities
from tests.conftest import REPO_ROOT
from tests.helpers.feedback import InfoLog, StopAfter
from tests.helpers.models import boxes_scene, save_threshold_model, write_raster

BOXES = [(5, 5, 25, 45), (60, 30, 130, 50), (100, 100, 104, 180), (140, 10, 190, 60)]
SOUTH_UP = Affine(-0.5, 0, 594100.0, 0, 0.5, 5749900.0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_threshold_model(tmp_path_factory.mktemp("m") / "threshold.pt")


def run(raster, model_path, **options):
    tiling = TilingOptions(*options.pop("tiling", (64, 16, 3)))
    return extract_footprints(raster, ExtractionOptions(model_path=str(model_path), tiling=tiling,
                                                        simplify_m=options.pop("simplify", 0), **options))


def as_set(result):
    return sorted(shapely.normalize(g).wkt for g in result.geometries)


def test_tile_starts_step_and_snap_the_last_tile_to_the_edge():
    assert tile_starts(900, 512, 0) == [0, 388]
    assert tile_starts(1000, 512, 64) == [0, 448, 488]
    assert tile_starts(100, 512, 64) == [0]


@pytest.mark.parametrize("side", [100, 512, 900, 1024, 1500, 2048, 4096, 20000])
def test_auto_tiles_compute_no_more_pixels_than_512_px_tiles_and_keep_the_batch_memory(side):
    fitted = TilingOptions().fitted(side, side)
    tile, overlap = fitted.tile_size_px, fitted.effective_overlap_px
    assert 512 <= tile <= 1024 and tile % 32 == 0 and overlap == 64
    windows = [w for row in plan_tile_rows(side, side, tile, overlap) for w in row]
    assert sum(w.width * w.height for w in windows) == computed_pixels(side, side, tile, overlap)
    assert computed_pixels(side, side, tile, overlap) <= computed_pixels(side, side, 512, 64)
    assert fitted.batch_size * tile ** 2 <= 1.5 * 4 * 512 ** 2  # about today's 4 x 512 px per batch
    assert TilingOptions(512, 64, 4).fitted(side, side) == TilingOptions(512, 64, 4)  # a set size is kept


@pytest.mark.parametrize("batch, largest", [(1, 512), (2, 704), (3, 864), (4, 1024), (16, 1024)])
def test_auto_tiles_hold_no_more_pixels_than_the_batch_so_batch_size_1_still_saves_memory(batch, largest):
    for side in (1024, 2048, 5000):
        fitted = TilingOptions(batch_size=batch).fitted(side, side)
        assert 512 <= fitted.tile_size_px <= largest and fitted.batch_size >= 1
        assert fitted.tile_size_px ** 2 <= batch * 512 ** 2
    with pytest.raises(ValueError, match="Batch size must be at least 1"):
        TilingOptions(batch_size=0).fitted(1024, 1024)   # refused, not run with a batch of 1


def test_auto_tiles_cover_a_1024_px_scene_with_one_tile_and_say_so(tmp_path, model_path):
    assert TilingOptions().fitted(1024, 1024) == TilingOptions(1024, 64, 1)
    assert computed_pixels(2048, 2048, TilingOptions().fitted(2048, 2048).tile_size_px, 64) < 1.2 * 2048 ** 2
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    log = InfoLog()
    auto = extract_footprints(raster, ExtractionOptions(model_path=str(model_path), simplify_m=0), log)
    assert any("tiles 512 px, overlap 64 px, 4 per batch (Auto: 1 tile computing 1.00x" in line for line in log.lines)
    assert as_set(auto) == as_set(run(raster, model_path, tiling=(64, 16, 3)))
    with pytest.raises(ValueError, match="or 0 .Auto"):
        run(raster, model_path, tiling=(100, 16, 3))


def test_polygons_are_identical_whatever_the_tiling(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    one_tile = run(raster, model_path, tiling=(512, 0, 1))
    for tiling in ((64, 16, 3), (96, 32, 1), (32, 0, 8)):
        assert as_set(run(raster, model_path, tiling=tiling)) == as_set(one_tile)
    assert len(one_tile) == len(BOXES)


def test_polygons_land_on_buildings_in_a_south_up_raster(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES), transform=SOUTH_UP)
    result = run(raster, model_path)
    expected = sorted(shapely.normalize(shapely.Polygon([SOUTH_UP * (c, r) for c, r in
                                                         ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])).wkt
                      for r0, c0, r1, c1 in BOXES)
    assert as_set(result) == expected


def test_raster_smaller_than_one_tile(tmp_path, model_path):
    raster = write_raster(tmp_path / "small.tif", boxes_scene(45, 37, [(5, 5, 25, 30)]))
    result = run(raster, model_path, tiling=(512, 64, 4))
    assert len(result) == 1 and result.attributes["area_m2"] == [500 * 0.25]


def test_nodata_and_nan_pixels_never_become_buildings(tmp_path, model_path):
    data = boxes_scene(120, 120, [(10, 10, 110, 110)])
    data[:, :, :30] = 0.0            # declared nodata (SN6 style: 0 in every band)
    data[0, 80:, :] = np.nan         # NaN in one band
    raster = write_raster(tmp_path / "r.tif", data, nodata=0.0)
    result = run(raster, model_path)
    assert len(result) == 1
    minx, miny, maxx, maxy = result.geometries[0].bounds
    transform = Affine(0.5, 0, 594000, 0, -0.5, 5750000)
    assert (minx, maxy) == transform * (30, 10) and (maxx, miny) == transform * (110, 80)


def test_rotate_180_rotates_back_exactly(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    assert as_set(run(raster, model_path, rotate_180=True)) == as_set(run(raster, model_path))


@pytest.mark.parametrize("simplify_px", [0.0, 1.5])
def test_strips_merge_into_the_same_polygons_as_one_pass(tmp_path, simplify_px):
    """Also simplified: the outline must not depend on where strips were cut (the engine's
    strips follow the tiling)."""
    rng = np.random.default_rng(1)
    probability = (rng.random((97, 61)) > 0.45).astype(np.float32) * 0.9
    path = tmp_path / "p.tif"
    write_raster(path, probability[None])
    with rasterio.open(path) as ds:
        info = RasterInfo.of(ds)
    simplify_m = simplify_px * info.pixel_size_m
    whole = vectorize_probabilities(path, info, VectorizeOptions(0.5, 0.0, simplify_m, strip_height_px=1024))
    strips = vectorize_probabilities(path, info, VectorizeOptions(0.5, 0.0, simplify_m, strip_height_px=7))
    assert len(whole[0]) > 20
    assert sorted(shapely.normalize(g).wkt for g in strips[0]) == sorted(shapely.normalize(g).wkt for g in whole[0])
    assert sorted(strips[1]["area_m2"]) == sorted(whole[1]["area_m2"])


def test_min_area_drops_small_blobs(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    result = run(raster, model_path, min_area_m2=81.0)  # the 4 x 80 px box is 80 m²
    assert len(result) == len(BOXES) - 1 and min(result.attributes["area_m2"]) > 81


def test_wrong_band_count_and_missing_crs_are_refused(tmp_path, model_path):
    with pytest.raises(RasterError, match=r"5 band\(s\) but the model expects 4"):
        run(write_raster(tmp_path / "five.tif", boxes_scene(40, 40, [], bands=5)), model_path)
    with pytest.raises(RasterError, match="no coordinate reference system"):
        run(write_raster(tmp_path / "nocrs.tif", boxes_scene(40, 40, []), crs=None), model_path)


def test_cuda_without_a_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_cancel_stops_inference(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(256, 256, BOXES))
    with pytest.raises(Cancelled):
        extract_footprints(raster, ExtractionOptions(model_path=str(model_path), tiling=TilingOptions(32, 0, 1)),
                           StopAfter(3))


def test_cli_extract_writes_a_geopackage_and_prints_json(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    out = tmp_path / "out.gpkg"
    completed = subprocess.run([sys.executable, "-m", "sn6_footprints", "extract", str(raster), str(out),
                                "--model", str(model_path), "--tile-size", "64", "--json", "--quiet"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(completed.stdout)["buildings"] == len(BOXES) and out.is_file()


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, model_path):
    raster = write_raster(tmp_path / "r.tif", boxes_scene(40, 40, [], bands=3))
    completed = subprocess.run([sys.executable, "-m", "sn6_footprints", "extract", str(raster),
                                str(tmp_path / "o.gpkg"), "--model", str(model_path)],
                               cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: r.tif has 3 band(s)")
    assert not (tmp_path / "o.gpkg").exists()


class Recorder(Feedback):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def test_a_raster_looking_opposite_to_the_model_is_rotated_automatically(tmp_path, model_path):
    raster = write_raster(tmp_path / "south.tif", boxes_scene(200, 190, BOXES))
    with rasterio.open(raster, "r+") as dataset:
        dataset.update_tags(LOOK_DIRECTION="south")
    feedback = Recorder()
    result = extract_footprints(raster, ExtractionOptions(model_path=str(model_path),
                                                          tiling=TilingOptions(64, 16, 3)), feedback)
    assert any("turned 180° before the model sees it" in line for line in feedback.lines)
    assert len(result) == len(BOXES)
    feedback = Recorder()
    extract_footprints(raster, ExtractionOptions(model_path=str(model_path), rotate_180=False), feedback)
    assert not any("rotating" in line for line in feedback.lines)


def test_grown_blobs_get_back_the_footprint_of_an_eroded_mask(tmp_path):
    """A model trained on masks eroded by 2 px predicts the cores; growing them by 2 px with
    mitred corners restores the rectangles exactly, touching neighbours stay apart, and the
    minimum area applies to the grown footprint."""
    probability = np.zeros((60, 80), np.float32)
    probability[12:28, 12:38] = 0.9   # core of the footprint rows 10-30, columns 10-40
    probability[12:28, 42:68] = 0.9   # its neighbour sharing the wall at column 40
    probability[45:49, 20:24] = 0.9   # a 4 x 4 px core: 8 x 8 px = 16 m² grown, under 20 m²
    path = write_raster(tmp_path / "p.tif", probability[None])
    with rasterio.open(path) as ds:
        info = RasterInfo.of(ds)
    geometries, attributes = vectorize_probabilities(path, info, VectorizeOptions(0.5, 20.0, 0.0, grow_px=2.0))
    assert len(geometries) == 2 and attributes["area_m2"] == [150.0, 150.0]
    t = info.transform
    expected = [shapely.box(*(t * (10, 30)), *(t * (40, 10))), shapely.box(*(t * (40, 30)), *(t * (70, 10)))]
    for geometry in geometries:
        assert max(geometry.intersection(e).area / geometry.union(e).area for e in expected) > 0.999
    small = vectorize_probabilities(path, info, VectorizeOptions(0.5, 15.0, 0.0, grow_px=2.0))
    assert len(small[0]) == 3 and sorted(small[1]["area_m2"])[0] == 16.0


def test_flip_average_is_the_mean_of_the_tile_and_its_flipped_copy():
    import torch

    from sn6_footprints.core.engine.predictor import Predictor
    from sn6_footprints.core.model import UNet11

    torch.manual_seed(0)
    model = UNet11(4, 1 / 16)
    batch = np.random.default_rng(0).normal(size=(2, 4, 64, 96)).astype(np.float32)
    cpu = resolve_device("cpu")
    plain = Predictor(model, cpu)
    for axis in (-1, -2):
        averaged = Predictor(model, cpu, flip_axis=axis)(batch)
        flipped = np.flip(plain(np.ascontiguousarray(np.flip(batch, axis))), axis)
        np.testing.assert_allclose(averaged, 0.5 * (plain(batch) + flipped), atol=1e-6)
        assert not np.allclose(averaged, plain(batch), atol=1e-3)  # the model is not symmetric: it matters


def test_flip_average_follows_the_model_unless_the_user_says_otherwise(tmp_path):
    flipping_model = save_threshold_model(tmp_path / "flip.pt", flip_average=True)
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    for option, expected in ((None, True), (False, False), (True, True)):
        log = InfoLog()
        result = extract_footprints(raster, ExtractionOptions(model_path=str(flipping_model), flip_average=option,
                                                              simplify_m=0), log)
        assert any("averaged with a flipped copy" in line for line in log.lines) is expected
        assert len(result) == len(BOXES)  # the threshold model is symmetric: the same buildings either way


def test_tiles_without_a_valid_pixel_are_skipped_and_the_buildings_stay_the_same(tmp_path, model_path):
    """A nodata swath over the left half: its tiles never reach the model, and the buildings on
    the valid half are exactly those of the same scene without the swath."""
    data = boxes_scene(200, 256, [(20, 150, 60, 200), (120, 170, 180, 240)])
    clean = run(write_raster(tmp_path / "clean.tif", data), model_path)
    data[:, :, :120] = 0.0  # declared nodata, whole tiles of 64 px (step 48) and more
    log = InfoLog()
    result = extract_footprints(write_raster(tmp_path / "swath.tif", data, nodata=0.0),
                                ExtractionOptions(model_path=str(model_path), tiling=TilingOptions(64, 16, 3),
                                                  simplify_m=0), log)
    skipped = [line for line in log.lines if "hold no valid pixel" in line]
    # tiles start at columns 0, 48, 96, 144, 192 and rows 0, 48, 96, 136: the first two columns are all nodata
    assert len(skipped) == 1 and skipped[0].startswith("8 of 20 tiles")
    assert as_set(result) == as_set(clean) and len(result) == 2


def test_multi_scale_tta_keeps_the_buildings_and_logs_its_cost(tmp_path, model_path):
    """The threshold model answers pixel by pixel, so resizing a tile and back moves only the
    outlines' edge pixels: the same buildings, nearly the same outlines."""
    raster = write_raster(tmp_path / "r.tif", boxes_scene(200, 190, BOXES))
    log = InfoLog()
    plain = run(raster, model_path)
    scaled = extract_footprints(raster, ExtractionOptions(model_path=str(model_path), tiling=TilingOptions(64, 16, 3),
                                                          simplify_m=0, tta_scales=(0.8, 1.0, 1.25)), log)
    assert len(scaled) == len(plain) == len(BOXES)
    by_place = lambda result: sorted(result.geometries, key=lambda g: g.bounds)  # noqa: E731
    for a, b in zip(by_place(plain), by_place(scaled)):
        assert a.intersection(b).area / a.union(b).area > 0.85
    cost = [line for line in log.lines if line.startswith("Multi-scale test-time augmentation at scales 0.8, 1, 1.25")]
    assert cost and "3.2x the model's compute" in cost[0], log.lines  # 0.66 + 1 + 1.56 (416, 512, 640 px)


@pytest.mark.parametrize("scales, message", [((3.0,), "outside 0.5-2"), ((1.0, 1.0), "repeat a scale")])
def test_bad_tta_scales_are_refused_before_any_work(tmp_path, model_path, scales, message):
    from sn6_footprints.core.validation import ValidationError, validate_extraction

    raster = write_raster(tmp_path / "r.tif", boxes_scene(40, 40, []))
    with pytest.raises(ValidationError, match=message):
        validate_extraction(raster, tmp_path / "o.gpkg", model=str(model_path), tta_scales=scales)


def test_speckle_dropped_before_polygonising_gives_the_same_footprints(tmp_path):
    """Blobs too small to become footprints are dropped at the label stage, and blobs cut by
    strip borders join exactly: strips of 50 rows give what polygonising every blob of the
    whole raster at once, and filtering afterwards, gives."""
    from scipy import ndimage

    from sn6_footprints.core.vectorize import FOUR_CONNECTED, BlobCollector, blobs_from_labels, polygons_from_blobs

    rng = np.random.default_rng(5)
    probability = (rng.random((120, 150)) > 0.55).astype(np.float32)
    probability[10:40, 10:60] = 1.0    # one real building among the speckle
    probability[45:105, 80:95] = 1.0   # one cut by two strip borders
    path = write_raster(tmp_path / "p.tif", probability[None])
    with rasterio.open(path) as ds:
        info = RasterInfo.of(ds)
    options = VectorizeOptions(0.5, 12.0, 0.0, strip_height_px=50, grow_px=1.0)
    labels, count = ndimage.label(probability > 0.5, structure=FOUR_CONNECTED)
    expected = polygons_from_blobs(blobs_from_labels(labels, count, probability, 0, False, False), info, options)
    filtered = vectorize_probabilities(path, info, options)
    assert len(filtered[0]) == len(expected[0]) >= 2
    assert [g.wkt for g in filtered[0]] == [g.wkt for g in expected[0]]
    assert filtered[1]["area_m2"] == expected[1]["area_m2"]
    assert filtered[1]["confidence"] == pytest.approx(expected[1]["confidence"], abs=2e-6)

    first = BlobCollector.for_options(info, options)
    first.add_strip(probability[:50], 0)
    waiting = [piece for pieces in first.open.values() for piece in pieces]
    assert waiting and all(piece.polygon.bounds[3] == 50 for piece in waiting)  # only what reaches the border
    assert len(first.finished) + len(waiting) < ndimage.label(probability[:50] > 0.5, FOUR_CONNECTED)[1] / 3
