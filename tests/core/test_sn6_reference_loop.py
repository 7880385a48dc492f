"""The independent SN6 baseline loop (tests/helpers/sn6_reference_loop.py) does what
REFERENCE.md §3 says, checked with models whose output is known exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine

from sn6_footprints.core.model import UNet11
from tests.helpers.models import write_raster
from tests.helpers.sn6_reference_loop import (reference_sn6_logits, reference_sn6_polygons, reference_sn6_raster,
                                              window_corners)


class RowInWindow(torch.nn.Module):
    """Logit = the pixel's row inside its window: overlaps average to known values."""

    def forward(self, x):
        rows = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1)
        return rows.expand(x.shape[0], 1, x.shape[2], x.shape[3]).clone()


class Band(torch.nn.Module):
    """Logit = one normalised band, as it reached the model."""

    def __init__(self, band: int = 0):
        super().__init__()
        self.band = band

    def forward(self, x):
        return x[:, self.band:self.band + 1].clone()


def test_windows_of_900_px_start_at_0_and_388():
    assert window_corners(900) == [0, 388]
    assert window_corners(1024) == [0, 512]
    assert window_corners(512) == [0]
    with pytest.raises(ValueError, match="smaller than the 512 px window"):
        window_corners(511)


def test_overlapping_windows_average_their_logits():
    logits = reference_sn6_logits(np.zeros((1, 48, 40), np.float32), RowInWindow(), tile=32)
    rows = np.arange(48, dtype=np.float64)
    # windows start at rows 0 and 16: rows 16-31 are seen by both, as rows r and r - 16
    expected = np.where(rows < 16, rows, np.where(rows < 32, rows - 8, rows - 16))
    assert logits.dtype == np.float64 and logits.shape == (48, 40)
    np.testing.assert_array_equal(logits, np.broadcast_to(expected[:, None], (48, 40)))


def test_rotation_turns_the_image_and_the_logits_back():
    logits = reference_sn6_logits(np.zeros((1, 48, 40), np.float32), RowInWindow(), rotate_180=True, tile=32)
    upright = reference_sn6_logits(np.zeros((1, 48, 40), np.float32), RowInWindow(), tile=32)
    np.testing.assert_array_equal(logits, upright[::-1, ::-1])
    assert logits[0, 0] == 31.0 and logits[47, 0] == 0.0 and logits[20, 0] == 27.0 - 8


def test_each_band_is_normalised_with_its_own_mean_and_std():
    image = np.stack([np.full((32, 32), 10.0), np.arange(32 * 32).reshape(32, 32)]).astype(np.float32)
    logits = reference_sn6_logits(image, Band(1), mean=[10.0, 100.0], std=[1.0, 4.0], tile=32)
    np.testing.assert_allclose(logits, (image[1] - 100.0) / 4.0, rtol=0, atol=1e-6)
    default = reference_sn6_logits(image, Band(0), tile=32)
    np.testing.assert_allclose(default, (10.0 - 127.5) / 31.875, rtol=1e-6)


def test_a_unet11_runs_and_timings_are_added():
    torch.manual_seed(0)
    timings = {"model": 1.0}
    logits = reference_sn6_logits(np.random.default_rng(0).uniform(0, 92, (4, 48, 32)).astype(np.float32),
                                  UNet11(width=0.125).eval(), tile=32, timings=timings)
    assert logits.shape == (48, 32) and np.isfinite(logits).all()
    assert timings["model"] > 1.0 and {"read", "stitch"} <= set(timings)


def test_blobs_under_80_four_connected_pixels_are_removed():
    logits = np.full((40, 60), -1.0)
    logits[2:10, 2:12] = 1.0                      # 80 px: kept
    logits[20:28, 2:12] = 1.0
    logits[27, 11] = -1.0                         # 79 px: removed
    logits[2:10, 30:35] = 1.0                     # 40 px ...
    logits[10:18, 35:40] = 1.0                    # ... touching it at a corner only: two blobs of 40
    polygons = reference_sn6_polygons(logits)
    assert len(polygons) == 1
    assert polygons[0].area == 80 and polygons[0].bounds == (2.0, 2.0, 12.0, 10.0)
    assert len(reference_sn6_polygons(logits, min_blob_px=40)) == 4


def test_logit_zero_is_not_a_building():
    logits = np.zeros((20, 20))
    logits[5:15, 5:15] = 1e-9
    assert [p.area for p in reference_sn6_polygons(logits)] == [100.0]
    assert reference_sn6_polygons(np.zeros((20, 20))) == []


def test_polygons_of_a_raster_land_where_its_geotransform_puts_them(tmp_path):
    image = np.full((1, 512, 520), 0.0, np.float32)
    image[0, 100:110, 200:215] = 255.0            # normalised +4 inside, -4 outside
    transform = Affine(0.5, 0, 594000, 0, -0.5, 5750000)
    path = write_raster(tmp_path / "box.tif", image, transform=transform)
    timings: dict = {}
    polygons = reference_sn6_raster(path, Band(0), timings=timings)
    assert len(polygons) == 1
    assert polygons[0].bounds == pytest.approx((594100.0, 5749945.0, 594107.5, 5749950.0))
    assert polygons[0].area == pytest.approx(150 * 0.25)
    assert set(timings) == {"read", "model", "stitch", "vectorize"}
    turned = reference_sn6_raster(path, Band(0), rotate_180=True)
    assert turned[0].equals(polygons[0])
