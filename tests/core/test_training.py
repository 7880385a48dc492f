"""Training: the recipe lowers the loss, checkpoints are whole and loadable, cancel and resume
work, the validation band is never trained on, flips keep the look direction; rasters are read
through extraction's input plan (scale converted, bands mapped, resampled, turned to the model's look)."""
from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import replace

import numpy as np
import pytest
import shapely
from affine import Affine

from sn6_footprints.core.feedback import Cancelled, Feedback
from sn6_footprints.core.settings import ModelSettings
from sn6_footprints.core.training import (TrainingData, TrainingOptions, resume_path_for, train_model,
                                          validation_split_row)
from sn6_footprints.core.vector_io import reproject, write_footprints
from sn6_footprints.core.weights import load_model, save_model
from tests.helpers.feedback import InfoLog
from tests.helpers.models import boxes_scene, write_raster

TRANSFORM = Affine(0.5, 0, 594000, 0, -0.5, 5750000)
SIZE = 128
BOXES = [(r, c, r + 12, c + 12) for r in range(4, SIZE - 4, 20) for c in range(4, SIZE - 4, 20)]
TINY_BOX = (118, 118, 122, 122)  # 4 x 4 px = 4 m²: left out of the masks
# Tiny and fast: a 1/16-width model, 64 px tiles, a few steps per epoch.
FAST = TrainingOptions(width=1 / 16, tile_size_px=64, batch_size=4, epochs=3, steps_per_epoch=4,
                       learning_rate=1e-3, validation_share=0.25)


def box_polygon(box, transform=TRANSFORM):
    r0, c0, r1, c1 = box
    return shapely.Polygon([transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


def write_labels(path, boxes, crs="EPSG:4326"):
    """Footprints of pixel boxes, stored in another CRS than the raster's (EPSG:32631)."""
    polygons = reproject([box_polygon(b) for b in boxes], "EPSG:32631", crs)
    return write_footprints(path, polygons, {"id": list(range(len(polygons)))}, crs=crs)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    raster = write_raster(folder / "scene.tif", boxes_scene(SIZE, SIZE, BOXES + [TINY_BOX]))
    labels = write_labels(folder / "scene.gpkg", BOXES + [TINY_BOX])
    return raster, labels


def open_data(stack, raster, labels, start=None, feedback=None, **options):
    """The training data of one raster for a new model (``start`` None) or ``start``'s settings."""
    return TrainingData.open([raster], [labels], replace(FAST, **options), start, stack, feedback)


def test_a_tiny_run_lowers_the_loss_and_writes_a_loadable_checkpoint(scene, tmp_path):
    raster, labels = scene
    output = tmp_path / "model.pt"
    result = train_model([raster], [labels], output, FAST)
    losses = [record.loss for record in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert all(record.val_f1 is not None for record in result.history)
    model, settings = load_model(output)
    assert model.width == settings.width == 1 / 16 and settings.bands == 4
    assert settings.band_names == ("HH", "HV", "VH", "VV")
    assert settings.mean == (127.5,) * 4 and settings.std == (31.875,) * 4
    assert settings.pixel_size_m == pytest.approx(0.5) and settings.threshold == 0.5
    assert settings.look_direction == "north" and not settings.rotate_180
    assert "scene.tif" in settings.description
    assert settings.extra["epoch"] == result.best_epoch
    assert settings.extra["validation_f1"] == pytest.approx(result.best_f1, abs=1e-6)
    assert settings.extra["training_rasters"] == ["scene.tif"]
    assert json.dumps(settings.to_dict())  # plain values only
    assert resume_path_for(output).is_file()


class CancelAtBatch(Feedback):
    """Cancels once ``at`` training batches have reported progress; counts what follows."""

    def __init__(self, at: int):
        self.at, self.progress_calls, self.calls_after_cancel = at, 0, 0

    def set_progress(self, percent: float) -> None:
        if self.progress_calls >= self.at:
            self.calls_after_cancel += 1
        self.progress_calls += 1

    def is_cancelled(self) -> bool:
        return self.progress_calls >= self.at


def test_cancel_stops_before_the_next_batch_and_writes_no_checkpoint(scene, tmp_path):
    raster, labels = scene
    feedback = CancelAtBatch(at=2)
    with pytest.raises(Cancelled):
        train_model([raster], [labels], tmp_path / "model.pt", replace(FAST, validation_share=0), feedback)
    assert feedback.calls_after_cancel == 0
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no resume file, no temporary leftovers


def test_cancel_in_a_later_epoch_keeps_the_finished_epochs_checkpoint_whole(scene, tmp_path):
    raster, labels = scene
    output = tmp_path / "model.pt"
    with pytest.raises(Cancelled):
        train_model([raster], [labels], output, replace(FAST, validation_share=0), CancelAtBatch(at=6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.resume.pt"]
    assert load_model(output)[1].extra["epoch"] == 1


def test_resume_continues_from_the_saved_epoch_as_if_never_stopped(scene, tmp_path):
    raster, labels = scene
    options = replace(FAST, epochs=2, steps_per_epoch=2, validation_share=0)
    straight = train_model([raster], [labels], tmp_path / "straight.pt", options)
    first = train_model([raster], [labels], tmp_path / "resumed.pt", replace(options, epochs=1))
    assert first.epochs == 1
    resumed = train_model([raster], [labels], tmp_path / "resumed.pt", replace(options, resume=True))
    assert [r.epoch for r in resumed.history] == [1, 2]
    assert resumed.history[0].loss == first.history[0].loss
    assert [r.loss for r in resumed.history] == pytest.approx([r.loss for r in straight.history], rel=1e-5)


def test_validation_rows_are_never_in_training_tiles(tmp_path):
    data = boxes_scene(SIZE, SIZE, BOXES)
    split = validation_split_row(SIZE, 0.25)
    assert split == 96
    data[:, split:] = 999.0  # marks the validation band
    raster = write_raster(tmp_path / "marked.tif", data)
    labels = write_labels(tmp_path / "marked.gpkg", BOXES)
    rng = np.random.default_rng(0)
    with ExitStack() as stack:
        training = open_data(stack, raster, labels)
        assert [r.split_row for r in training.regions] == [96]
        tiles = [training.sample_tile(rng) for _ in range(200)]
    assert max(float(image.max()) for image, *_ in tiles) < 999.0
    assert all(image.shape == (4, 64, 64) for image, *_ in tiles)


def test_masks_come_from_reprojected_footprints_without_small_buildings(scene):
    raster, labels = scene
    expected = np.zeros((96, SIZE), np.uint8)
    for r0, c0, r1, c1 in BOXES:
        expected[r0:min(r1, 96), c0:c1] = 1
    with ExitStack() as stack:
        data = open_data(stack, raster, labels)
        region = data.regions[0]
        assert len(region.footprints) == len(BOXES) + 1 and len(region.mask_footprints) == len(BOXES)
        np.testing.assert_array_equal(region.mask, expected)


def test_the_contact_zone_weights_the_gap_between_touching_buildings_only(tmp_path):
    left, right, alone = (20, 10, 44, 40), (20, 40, 44, 70), (60, 10, 80, 40)
    raster = write_raster(tmp_path / "pair.tif", boxes_scene(SIZE, SIZE, [left, right, alone]))
    labels = write_labels(tmp_path / "pair.gpkg", [left, right, alone])
    with ExitStack() as stack:
        plain = open_data(stack, raster, labels, label_erosion_m=1.0)
        weighted = open_data(stack, raster, labels, label_erosion_m=1.0, contact_weight=4.0)
        windowed = open_data(stack, raster, labels, label_erosion_m=1.0, contact_weight=4.0, cache_limit_mb=0)
        region = weighted.regions[0]
        assert plain.regions[0].zone is None and region.contact_radius_px == 2
        zone = region.zone
        # the wall is between columns 39 and 40; the gap between the cores is 38-41 (test above):
        # the zone covers it and one pixel of each core, along the wall's rows only
        assert zone[32, 37:43].all() and not zone[32, 36] and not zone[32, 43]
        assert zone[20:44, 40].all() and not zone[:18, 40].any() and not zone[46:, 40].any()
        assert not zone[60:80].any()  # the lone building has no contact
        _, _, valid, weight = region.read(0, 0, 96, SIZE)
        assert set(np.unique(weight[zone & valid])) == {5.0} and set(np.unique(weight[~zone & valid])) == {1.0}
        np.testing.assert_array_equal(windowed.regions[0].read(8, 16, 64, 64)[3], region.read(8, 16, 64, 64)[3])


def test_windowed_reading_gives_the_same_tiles_as_the_cache(scene):
    raster, labels = scene
    with ExitStack() as stack:
        cached = open_data(stack, raster, labels)
        windowed = open_data(stack, raster, labels, cache_limit_mb=0)
        assert cached.cached and not windowed.cached
        for a, b in zip(cached.sample_batch(np.random.default_rng(3), 6, load_settings()),
                        windowed.sample_batch(np.random.default_rng(3), 6, load_settings())):
            np.testing.assert_array_equal(a, b)


def load_settings():
    from sn6_footprints.core.settings import ModelSettings
    return ModelSettings()


@pytest.fixture(scope="module")
def gradient_raster(tmp_path_factory):
    """Band 1 grows down the rows, band 2 along the columns: flips show in the tiles."""
    folder = tmp_path_factory.mktemp("gradient")
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    data = np.stack([rows + 100, cols + 100, rows + 100, cols + 100])
    return write_raster(folder / "gradient.tif", data), write_labels(folder / "gradient.gpkg", BOXES)


@pytest.mark.parametrize("raster_look, rows_grow_down", [("north", True), ("south", False)])
def test_flips_keep_the_look_direction_and_opposite_scenes_are_rotated(gradient_raster, raster_look, rows_grow_down):
    raster, labels = gradient_raster
    rng = np.random.default_rng(0)
    with ExitStack() as stack:
        data = open_data(stack, raster, labels, validation_share=0, raster_look_directions=(raster_look,))
        tiles = [data.sample_tile(rng)[0] for _ in range(40)]
    down = [bool((np.diff(t[0], axis=0) > 0).all()) for t in tiles]
    up = [bool((np.diff(t[0], axis=0) < 0).all()) for t in tiles]
    assert all(down) if rows_grow_down else all(up)  # never an up-down flip: layover stays on its side
    right = [bool((np.diff(t[1], axis=1) > 0).all()) for t in tiles]
    assert 0 < sum(right) < len(tiles)  # left-right flips happen, about half the time


def test_per_band_normalisation_is_stored_in_the_checkpoint(scene, tmp_path):
    raster, labels = scene
    options = replace(FAST, epochs=1, steps_per_epoch=1, validation_share=0, normalisation="per-band")
    train_model([raster], [labels], tmp_path / "model.pt", options)
    settings = load_model(tmp_path / "model.pt")[1]
    assert settings.extra["normalisation"] == "per-band"
    assert 60 < settings.mean[0] < 255 and settings.std[0] > 10
    assert settings.input_scale == "sn6-intensity"  # the values' true scale, which extraction converts to


def test_fine_tuning_starts_from_the_initial_checkpoint(scene, tmp_path):
    raster, labels = scene
    options = replace(FAST, epochs=1, steps_per_epoch=1, validation_share=0)
    train_model([raster], [labels], tmp_path / "first.pt", options)
    train_model([raster], [labels], tmp_path / "tuned.pt",
                replace(options, initial_model=str(tmp_path / "first.pt"), width=0.5))
    settings = load_model(tmp_path / "tuned.pt")[1]
    assert settings.width == 1 / 16 and settings.extra["initial_model"] == "first.pt"


def test_mismatched_inputs_are_clear_errors(scene, tmp_path):
    raster, labels = scene
    with pytest.raises(ValueError, match="1 raster\\(s\\) but 2 footprint layer"):
        train_model([raster], [labels, labels], tmp_path / "model.pt", FAST)
    with pytest.raises(ValueError, match="Tile size 50 px must be a multiple of 32"):
        train_model([raster], [labels], tmp_path / "model.pt", replace(FAST, tile_size_px=50))
    with pytest.raises(ValueError, match="validation share"):
        train_model([raster], [labels], tmp_path / "model.pt", replace(FAST, validation_share=0.8))


def test_cli_trains_and_prints_a_json_summary(scene, tmp_path, capsys):
    from sn6_footprints.cli import main

    raster, labels = scene
    output = tmp_path / "cli.pt"
    code = main(["train", "--raster", str(raster), "--labels", str(labels), "--output", str(output),
                 "--width", "0.0625", "--epochs", "1", "--steps-per-epoch", "1", "--tile-size", "64",
                 "--batch-size", "2", "--val-share", "0.25", "--contact-weight", "4", "--json", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1 and output.is_file()
    assert load_model(output)[1].extra["contact_weight"] == 4.0
    assert main(["train", "--raster", str(raster), "--output", str(output), "--labels", str(labels),
                 "--labels", str(labels)]) == 2


def test_cosine_schedule_decays_from_the_learning_rate_to_zero():
    from sn6_footprints.core.training import TrainingOptions, learning_rate_at

    options = TrainingOptions(learning_rate=1e-3, lr_schedule="cosine")
    assert learning_rate_at(options, 0, 100) == pytest.approx(1e-3)
    assert learning_rate_at(options, 50, 100) == pytest.approx(5e-4)
    assert learning_rate_at(options, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_at(TrainingOptions(learning_rate=1e-3), 50, 100) == 1e-3
    with pytest.raises(ValueError, match="schedule"):
        TrainingOptions(lr_schedule="step").check()


def test_a_negative_cache_limit_is_refused_and_zero_reads_from_disk():
    from sn6_footprints.core.training import TrainingOptions

    with pytest.raises(ValueError, match="Cache limit -1 MB must be 0 or more"):
        TrainingOptions(cache_limit_mb=-1).check()
    TrainingOptions(cache_limit_mb=0).check()


def test_eroded_masks_leave_a_gap_between_touching_buildings_and_the_checkpoint_says_how_much(tmp_path):
    left, right = (20, 10, 44, 40), (20, 40, 44, 70)  # two 12 x 15 m buildings sharing a wall
    raster = write_raster(tmp_path / "pair.tif", boxes_scene(SIZE, SIZE, [left, right]))
    labels = write_labels(tmp_path / "pair.gpkg", [left, right])
    with ExitStack() as stack:
        whole = open_data(stack, raster, labels, label_erosion_m=0.0).regions[0].mask
        eroded = open_data(stack, raster, labels, label_erosion_m=1.0).regions[0].mask
    row = eroded[32]
    assert whole[32, 10:39].all() and not whole[32, 39:41].any() and whole[32, 41:70].all()  # 0 m: 2 px gap
    # 1 m = 2 px off every side: cores at columns 12-37 and 42-67, a 4 px gap where they touch
    assert row[12:38].all() and row[42:68].all() and not row[38:42].any() and not row[10:12].any()
    assert not eroded[20:22].any() and eroded[22:42, 12:38].all()
    output = tmp_path / "model.pt"
    train_model([raster], [labels], output, replace(FAST, epochs=1, steps_per_epoch=1, validation_share=0,
                                                      label_erosion_m=1.0))
    model, settings = load_model(output)
    assert settings.grow_m == 1.0
    save_model(output, model, replace(settings, flip_average=True))  # as if calibrated, like the bundled model
    tuned = tmp_path / "tuned.pt"  # fine-tuning keeps the initial model's erosion unless told otherwise
    train_model([raster], [labels], tuned, replace(FAST, epochs=1, steps_per_epoch=1, validation_share=0,
                                                     initial_model=str(output)))
    assert load_model(tuned)[1].grow_m == 1.0
    assert not load_model(tuned)[1].flip_average  # a new model's threshold and flip are not calibrated yet


def test_label_erosion_out_of_range_is_refused(scene, tmp_path):
    raster, labels = scene
    with pytest.raises(ValueError, match="Label erosion 9 m must be in \\[0, 5\\]"):
        train_model([raster], [labels], tmp_path / "model.pt", replace(FAST, label_erosion_m=9))


def test_mixed_precision_can_be_turned_off_and_the_log_says_which_precision_ran(scene, tmp_path):
    from sn6_footprints.core.devices import cpu_supports_bf16

    raster, labels = scene
    options = replace(FAST, epochs=1, steps_per_epoch=2, validation_share=0, device="cpu")
    logs = {}
    for mixed in (True, False):
        logs[mixed] = InfoLog()
        train_model([raster], [labels], tmp_path / f"{mixed}.pt", replace(options, mixed_precision=mixed), logs[mixed])
        assert load_model(tmp_path / f"{mixed}.pt")[0] is not None
    device_line = lambda log: next(line for line in log.lines if line.startswith("Device:"))  # noqa: E731
    assert "float32" in device_line(logs[False])
    assert ("bfloat16 autocast" if cpu_supports_bf16() else "float32") in device_line(logs[True])


@pytest.mark.parametrize("erosion, warned", [(1.5, False), (2.0, True)])
def test_an_erosion_that_lets_specks_grow_into_buildings_is_warned_about(scene, tmp_path, erosion, warned):
    raster, labels = scene
    log = InfoLog()
    train_model([raster], [labels], tmp_path / "model.pt",
                replace(FAST, epochs=1, steps_per_epoch=1, validation_share=0, label_erosion_m=erosion), log)
    assert any("Use at most 1.74 m" in w for w in log.warnings) is warned


# ---------------------------------------------------------------- the input plan, as extraction reads

def bundled_settings():
    from sn6_footprints.core.bundled import bundled_model_path
    from sn6_footprints.core.weights import inspect_model
    return inspect_model(bundled_model_path())


def with_descriptions(path, descriptions):
    import rasterio
    with rasterio.open(path, "r+") as dataset:
        dataset.descriptions = tuple(descriptions)
    return path


@pytest.fixture(scope="module")
def db_scene(tmp_path_factory):
    """A simulated scene of calibrated dB values (NaN nodata, band unit dB), no SN6 value in it."""
    from sn6_footprints.core.simulation import simulate_scene

    folder = tmp_path_factory.mktemp("db_scene")
    simulate_scene(folder / "db.tif", folder / "db.gpkg", width_px=192, height_px=192, seed=7, scale="db")
    return folder / "db.tif", folder / "db.gpkg"


def test_a_db_scene_fine_tunes_the_bundled_model_on_its_own_sn6_scale(db_scene, tmp_path):
    from sn6_footprints.core.reading.plan import model_scale_of

    raster, labels = db_scene
    bundled = bundled_settings()
    with ExitStack() as stack:
        data = open_data(stack, raster, labels, start=bundled, validation_share=0)
        images = [image[:, valid] for image, _m, valid, _w in (data.sample_tile(np.random.default_rng(i))
                                                                for i in range(4))]
    values = np.concatenate(images, axis=1)
    assert values.size and (values > 0).all() and values.max() <= 92  # SN6 values: a raw dB read is negative
    assert 20 < values.mean() < 45
    log = InfoLog()
    train_model([raster], [labels], tmp_path / "tuned.pt",
                replace(FAST, initial_model="bundled", epochs=1, steps_per_epoch=1, batch_size=2,
                        validation_share=0), log)
    assert any("db.tif: Input scale: dB (10·log10 intensity)" in line and "converted window by window to the "
               "model's SN6 SAR-Intensity" in line for line in log.lines)
    settings = load_model(tmp_path / "tuned.pt")[1]
    assert settings.input_scale == "sn6-intensity" == ModelSettings().input_scale  # the bundled model's true scale
    assert model_scale_of(settings) == model_scale_of(bundled) == "sn6"
    assert settings.mean == bundled.mean and settings.std == bundled.std


def test_per_band_normalisation_of_a_db_scene_records_the_db_scale(db_scene, tmp_path):
    raster, labels = db_scene
    log = InfoLog()
    train_model([raster], [labels], tmp_path / "db.pt", replace(FAST, epochs=1, steps_per_epoch=1, batch_size=2,
                                                                 validation_share=0, normalisation="per-band"), log)
    settings = load_model(tmp_path / "db.pt")[1]
    assert settings.input_scale == "db" and settings.extra["normalisation"] == "per-band"
    assert all(-30 < m < -5 for m in settings.mean) and all(2 < s < 10 for s in settings.std)
    assert any("values used as they are" in line for line in log.lines)  # no conversion: the model's own scale


EAST_BOXES = [(10, 6, 22, 30), (40, 50, 70, 62), (90, 10, 100, 20)]  # no symmetry: a wrong turn shows


def test_an_east_looking_raster_trains_a_north_model_with_crops_turned_a_quarter(tmp_path):
    raster = write_raster(tmp_path / "east.tif", boxes_scene(SIZE, SIZE, EAST_BOXES), LOOK_DIRECTION="east")
    labels = write_labels(tmp_path / "east.gpkg", EAST_BOXES)
    expected = np.zeros((SIZE, SIZE), np.uint8)
    for r0, c0, r1, c1 in EAST_BOXES:
        expected[r0:r1, c0:c1] = 1
    log = InfoLog()
    with ExitStack() as stack:
        data = open_data(stack, raster, labels, feedback=log, validation_share=0)
        region = data.regions[0]
        assert region.plan.quarter_turns == 1 and data.settings.look_direction == "north"
        image, mask, valid, weight = region.read(8, 20, 96, 64)  # 96 rows x 64 columns of the raster
        assert mask.shape == (64, 96)  # turned: the raster's columns are the rows the model sees
        np.testing.assert_array_equal(mask, np.rot90(expected[8:104, 20:84]))
        np.testing.assert_array_equal(image[0] > 100, np.rot90(expected[8:104, 20:84]).astype(bool))
        assert weight.shape == valid.shape == (64, 96)
    assert any("east.tif: Look direction: east (the raster's LOOK_DIRECTION tag); the model's is north: turned 90° "
               "counter-clockwise" in line for line in log.lines)
    assert any("crops turned 90° counter-clockwise to look north" in line for line in log.lines)
    output = tmp_path / "north.pt"
    result = train_model([raster], [labels], output, replace(FAST, epochs=1, steps_per_epoch=1, batch_size=2))
    assert load_model(output)[1].look_direction == "north" and result.history[0].val_f1 is not None


def test_east_looking_crops_are_never_flipped_across_the_turned_look(gradient_raster):
    """Band 1 grows down the raster's rows, band 2 along its columns: turned once counter-clockwise,
    band 2 falls down every crop's rows (the look, kept), band 1 runs along its columns either way
    (the left-right flip of a north-looking model)."""
    raster, labels = gradient_raster
    rng = np.random.default_rng(0)
    with ExitStack() as stack:
        data = open_data(stack, raster, labels, validation_share=0, raster_look_directions=("east",))
        tiles = [data.sample_tile(rng)[0] for _ in range(40)]
    assert all(bool((np.diff(t[1], axis=0) < 0).all()) for t in tiles)
    right = [bool((np.diff(t[0], axis=1) > 0).all()) for t in tiles]
    left = [bool((np.diff(t[0], axis=1) < 0).all()) for t in tiles]
    assert all(a or b for a, b in zip(right, left)) and 0 < sum(right) < len(tiles)


@pytest.fixture(scope="module")
def coarse_scene(tmp_path_factory):
    """The boxes scene at 1 m pixels: 64 x 64 px over the same 64 m."""
    folder = tmp_path_factory.mktemp("coarse")
    boxes = [(r // 2, c // 2, r1 // 2, c1 // 2) for r, c, r1, c1 in BOXES]
    transform = Affine(1.0, 0, 594000, 0, -1.0, 5750000)
    raster = write_raster(folder / "coarse.tif", boxes_scene(64, 64, boxes), transform=transform)
    polygons = reproject([box_polygon(b, transform) for b in boxes], "EPSG:32631", "EPSG:4326")
    labels = write_footprints(folder / "coarse.gpkg", polygons, {"id": list(range(len(polygons)))}, crs="EPSG:4326")
    return raster, labels, boxes


@pytest.mark.parametrize("how", ["pixel size option", "initial model"])
def test_a_1_m_raster_is_resampled_to_a_half_metre_model(coarse_scene, tmp_path, how):
    raster, labels, boxes = coarse_scene
    start, options = (None, dict(pixel_size_m=0.5)) if how == "pixel size option" else (bundled_settings(), {})
    log = InfoLog()
    with ExitStack() as stack:
        data = open_data(stack, raster, labels, start=start, feedback=log, validation_share=0, **options)
        region = data.regions[0]
        assert data.settings.pixel_size_m == 0.5 and not region.plan.reads_as_is
        assert region.training_pixels == 4 * 64 * 64 == region.grid.width * region.grid.height
        building_px = sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in boxes)
        # the labels on the model's grid; from the (instance-aware) bundled model, its outputs
        footprint = region.mask if how == "pixel size option" else region.mask[0]
        assert region.mask.ndim == (2 if how == "pixel size option" else 3)
        assert footprint.sum() == 4 * building_px
        assert region.image.shape == (4, 128, 128) and region.valid.all()
    assert any("resampled on the fly to the model's 0.5 m north-up grid (factor 2, bilinear" in line
               for line in log.lines)
    if how == "pixel size option":
        train_model([raster], [labels], tmp_path / "m.pt", replace(FAST, epochs=1, steps_per_epoch=1, batch_size=2,
                                                                    validation_share=0, pixel_size_m=0.5))
        assert load_model(tmp_path / "m.pt")[1].pixel_size_m == 0.5


def test_the_validation_band_is_read_at_its_place_on_the_model_grid(scene, coarse_scene):
    """A model that marks exactly the bright pixels finds every box of the validation band,
    read as is and resampled from 1 m: the band's sub-grid, turns and truth line up."""
    import torch

    from sn6_footprints.core.engine.tiling import TilingOptions
    from sn6_footprints.core.training import ValidationSet
    from tests.helpers.models import threshold_model

    model = threshold_model()
    # normalised so that the boxes (255, or SN6's 92 once resampled) are above the model's cut, 60 below
    settings = replace(ModelSettings(), width=model.width, min_area_m2=1.0, mean=(76.0,) * 4, std=(8.0,) * 4)
    with ExitStack() as stack:
        # as is: 12 boxes and the tiny one, exactly; from 1 m: 12 boxes a bilinear pixel wider all round
        for (raster, labels, *_), boxes, iou in ((scene, 13, 0.99), (coarse_scene, 12, 0.7)):
            # split at row 90, through boxes, not at their edge (a box ending on the split would blur into the band)
            data = open_data(stack, raster, labels, start=settings, pixel_size_m=0.5, validation_share=0.3)
            assert data.regions[0].split_row == 90
            scores = ValidationSet(data.regions).evaluate(model, torch.device("cpu"), settings,
                                                          TilingOptions(64, 16, 2), Feedback())
            assert (scores["val_tp"], scores["val_fp"], scores["val_fn"]) == (boxes, 0, 0)
            assert scores["val_iou"] > iou


def test_band_order_maps_a_reordered_raster_to_the_model_bands(tmp_path):
    from sn6_footprints.core.reading import InputOptions

    data = boxes_scene(SIZE, SIZE, BOXES) + np.arange(4, dtype=np.float32)[:, None, None] * 5  # bands differ
    labels = write_labels(tmp_path / "boxes.gpkg", BOXES)
    plain = write_raster(tmp_path / "plain.tif", data)
    reversed_ = write_raster(tmp_path / "reversed.tif", data[::-1])
    named = with_descriptions(write_raster(tmp_path / "named.tif", data[::-1]), ("VV", "VH", "HV", "HH"))
    log = InfoLog()
    with ExitStack() as stack:
        batches = [open_data(stack, raster, labels, feedback=log, **options).sample_batch(
            np.random.default_rng(5), 3, ModelSettings()) for raster, options in (
                (plain, {}), (reversed_, dict(input=InputOptions(band_order=(4, 3, 2, 1)))),
                (named, dict(start=bundled_settings(), outputs=("building",))))]
    for batch in batches[1:]:
        for a, b in zip(batches[0], batch):
            np.testing.assert_array_equal(a, b)
    assert any("reversed.tif: Input bands: bands as set by Band order: HH = band 4" in line for line in log.lines)
    assert any("named.tif: Input bands: bands by their descriptions: HH = band 4" in line for line in log.lines)


def test_a_raster_without_the_models_polarisations_is_refused_before_training(tmp_path, capsys):
    from sn6_footprints.cli import main
    from sn6_footprints.core.raster_windows import RasterError

    data = boxes_scene(SIZE, SIZE, BOXES, bands=2)
    raster = with_descriptions(write_raster(tmp_path / "dual.tif", data), ("HH", "HV"))
    labels = write_labels(tmp_path / "dual.gpkg", BOXES)
    with pytest.raises(RasterError, match="dual.tif has the polarisation\\(s\\) HH, HV but the model needs HH, HV, "
                                          "VH, VV: VH, VV missing"):
        train_model([raster], [labels], tmp_path / "m.pt", replace(FAST, initial_model="bundled"))
    code = main(["train", "--raster", str(raster), "--labels", str(labels), "--output", str(tmp_path / "m.pt"),
                 "--init", "bundled"])
    assert code == 2 and "VH, VV missing" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dual.gpkg", "dual.tif"]
    # a new model takes the raster's two polarisations
    train_model([raster], [labels], tmp_path / "dual.pt", replace(FAST, epochs=1, steps_per_epoch=1, batch_size=2,
                                                                   validation_share=0))
    assert load_model(tmp_path / "dual.pt")[1].band_names == ("HH", "HV")


def test_db_bands_without_polarisations_cannot_become_sn6_and_train_on_their_own_scale(tmp_path):
    from sn6_footprints.core.raster_windows import RasterError

    data = np.where(boxes_scene(SIZE, SIZE, BOXES, bands=3) > 100, -2.0, -20.0)  # dB
    raster = with_descriptions(write_raster(tmp_path / "three.tif", data, nodata=None, scale="db"),
                               ("C11", "C22", "C33"))
    labels = write_labels(tmp_path / "three.gpkg", BOXES)
    with ExitStack() as stack, pytest.raises(RasterError, match="not C11, C22, C33: set Normalisation to per-band"):
        open_data(stack, raster, labels)
    with ExitStack() as stack:
        data = open_data(stack, raster, labels, normalisation="per-band")
        assert data.settings.input_scale == "db" and data.settings.band_names == ("C11", "C22", "C33")


def test_cli_train_reads_a_db_scene_as_asked_and_refuses_a_contradicted_scale(db_scene, tmp_path, capsys):
    from sn6_footprints.cli import main

    raster, labels = db_scene
    output = tmp_path / "db.pt"
    common = lambda output: ["train", "--raster", str(raster), "--labels", str(labels), "--output",  # noqa: E731
                             str(output), "--width", "0.0625", "--epochs", "1", "--steps-per-epoch", "1",
                             "--tile-size", "64", "--batch-size", "2", "--val-share", "0.25"]
    assert main(common(output) + ["--input-scale", "db", "--normalisation", "per-band", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["history"][0]["val_f1"] is not None
    assert load_model(output)[1].input_scale == "db"
    refused = tmp_path / "sn6.pt"
    for extra, message in ((["--input-scale", "sn6"], "Input scale is SN6 SAR-Intensity but"),
                           (["--pixel-size", "0.2"], "beyond 2×"),
                           (["--band-order", "1,5"], "Band order 1,5 names band 5, but db.tif has bands 1 to 4")):
        code = main(common(refused) + extra)
        err = capsys.readouterr().err
        assert code == 2 and message in err and not refused.exists(), err
