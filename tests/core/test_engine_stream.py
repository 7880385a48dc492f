"""The streaming engine: reader threads, batches across rows of tiles, blended rows handed on
as they finish. Checked against a plain loop written here (every tile one by one, blended in
a whole-raster array in RAM), and for what it does when stopped or when a stage fails."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import rasterio
import torch

from sn6_footprints.core.engine.predictor import Predictor, normalise, pad_to_multiple
from sn6_footprints.core.engine.stream import run_engine
from sn6_footprints.core.engine.tiling import TilingOptions, blend_weights, plan_tile_rows
from sn6_footprints.core.feedback import Cancelled
from sn6_footprints.core.model import UNet11
from sn6_footprints.core.reading import InputOptions, plan_input
from sn6_footprints.core.reading.model_windows import ModelWindows
from sn6_footprints.core.settings import ModelSettings
from tests.helpers.feedback import StopAfter
from tests.helpers.models import write_raster

SETTINGS = ModelSettings(width=0.125)


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(7)
    return Predictor(UNet11(4, 0.125), torch.device("cpu"), precision="float32")


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 40.0, (4, 300, 230)).astype(np.float32)
    data[:, 200:, :130] = 0.0  # a nodata corner (0 in every band, SN6 style)
    return write_raster(tmp_path_factory.mktemp("s") / "s.tif", data)


def plan_of(path):
    with rasterio.open(path) as dataset:
        return plan_input(dataset, SETTINGS, InputOptions(), "s.tif")


def plain_loop(path, predictor, tiling: TilingOptions):
    """Every tile alone through the model, blended over the whole raster in RAM."""
    plan = plan_of(path)
    grid = plan.grid
    weighted = np.zeros((grid.height, grid.width), np.float64)
    weights = np.zeros_like(weighted)
    valid_any = np.zeros(weighted.shape, bool)
    with rasterio.open(path) as dataset:
        reader = ModelWindows(dataset, plan)
        for row in plan_tile_rows(grid.width, grid.height, tiling.tile_size_px, tiling.effective_overlap_px):
            for window in row:
                data, valid = reader.read(window)
                p = predictor(pad_to_multiple(normalise(data, SETTINGS))[None])[0][:window.height, :window.width]
                w = blend_weights(window.height, window.width, tiling.effective_overlap_px)
                rs, cs = window.toslices()
                weighted[rs, cs] += w * p
                weights[rs, cs] += w
                valid_any[rs, cs] |= valid
    return np.where(valid_any, weighted / weights, 0.0), valid_any


def streamed(path, predictor, tiling, **kwargs):
    blocks = []
    stats = run_engine(path, predictor, SETTINGS, plan_of(path), [("keep", blocks.append)], tiling, **kwargs)
    return blocks, stats


@pytest.mark.parametrize("tiling, readers", [((64, 16, 3), 1), ((96, 32, 5), 3)],
                         ids=["batches-span-rows", "3-readers"])
def test_streamed_rows_equal_a_plain_loop(raster, predictor, tiling, readers):
    tiling = TilingOptions(*tiling)
    expected, expected_valid = plain_loop(raster, predictor, tiling)
    blocks, stats = streamed(raster, predictor, tiling, reader_threads=readers)
    tops = [b.top for b in blocks]
    assert tops == sorted(tops) and tops[0] == 0 and len(blocks) > 2
    assert sum(b.probability.shape[0] for b in blocks) == expected.shape[0]  # every row once
    probability = np.vstack([b.probability for b in blocks])
    valid = np.vstack([b.valid for b in blocks])
    assert (valid == expected_valid).all() and not valid[250:, :80].any()
    np.testing.assert_allclose(probability, expected, atol=2e-6)
    assert stats.skipped > 0 and stats.seconds["model"] > 0  # tiles in the nodata corner never ran


def test_rows_go_on_in_strips_no_taller_than_the_cap_whatever_the_tile(raster, predictor, monkeypatch):
    """Large (Auto) tiles finish many rows at once; the consumers still get bounded strips, so
    the vectoriser's and the watershed's memory follows the width, and the rows are the same."""
    from sn6_footprints.core.engine import stream

    monkeypatch.setattr(stream, "MAX_STRIP_ROWS", 64)
    tiling = TilingOptions(160, 16, 2)  # two rows of tiles: 140 and 160 rows finish at once
    expected, _ = plain_loop(raster, predictor, tiling)
    blocks, _ = streamed(raster, predictor, tiling)
    heights = [b.probability.shape[0] for b in blocks]
    assert max(heights) <= 64 and len(blocks) == 6 and sum(heights) == 300
    assert [b.top for b in blocks] == list(np.cumsum([0] + heights[:-1]))
    np.testing.assert_allclose(np.vstack([b.probability for b in blocks]), expected, atol=2e-6)


def test_cancel_stops_every_thread(raster, predictor):
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(Cancelled):
        run_engine(raster, predictor, SETTINGS, plan_of(raster), [("keep", lambda rows: None)],
                   TilingOptions(64, 16, 1), StopAfter(3), reader_threads=2)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def test_a_failing_consumer_is_the_error_raised_and_stops_the_run(raster, predictor):
    calls = []

    def consumer(rows):
        calls.append(rows.top)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        run_engine(raster, predictor, SETTINGS, plan_of(raster), [("write", consumer)], TilingOptions(64, 16, 1))
    assert len(calls) == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("sn6-")]


def test_a_failing_read_is_the_error_raised(raster, predictor, tmp_path):
    plan = plan_of(raster)
    with pytest.raises(rasterio.errors.RasterioIOError):
        run_engine(tmp_path / "gone.tif", predictor, SETTINGS, plan, [("keep", lambda rows: None)])
    assert not [t for t in threading.enumerate() if t.name.startswith("sn6-")]
