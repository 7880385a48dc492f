"""Input scales: conversions with known values, and Auto's decision on every scale, or its refusal."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sn6_footprints.core.radiometry import convert, from_linear, to_linear
from sn6_footprints.core.radiometry.detect import decide_scale
from sn6_footprints.core.radiometry.scales import SN6_DB_GAIN, SN6_DB_OFFSET
from sn6_footprints.core.raster_windows import RasterError
from sn6_footprints.core.simulation import simulate_scene


def test_conversions_with_known_values_and_nodata():
    db = np.array([[[-10.0, 0.0, np.nan]]] * 4, np.float32)
    linear = convert(db, "db", "linear")
    assert np.allclose(linear[0, 0, :2], [0.1, 1.0]) and np.isnan(linear[0, 0, 2])
    assert np.allclose(convert(db, "db", "amplitude")[0, 0, :2], [np.sqrt(0.1), 1.0])
    sn6 = convert(db, "db", "sn6")
    assert np.allclose(sn6[:, 0, 0], SN6_DB_GAIN * -10 + SN6_DB_OFFSET) and (sn6[:, 0, 2] == 0).all()
    assert np.allclose(convert(sn6, "sn6", "db")[:, 0, :2], db[:, 0, :2], atol=1e-4)
    z = np.array([[[3 + 4j, 0j]]] * 4, np.complex64)
    assert np.allclose(to_linear(z, "complex")[0, 0], [25.0, 0.0])
    assert np.allclose(to_linear(z, "complex", gain=0.5)[0, 0, 0], 12.5)
    assert np.allclose(from_linear(np.float32([[[1e-12]]] * 4), "db"), -70.0)   # floored, still valid
    with pytest.raises(ValueError):
        from_linear(linear, "complex")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scales")
    written = {}
    for looks in (4, 1):
        base = folder / f"sn6_{looks}.tif"
        simulate_scene(base, None, width_px=384, height_px=384, seed=20110 + looks, looks=looks)
        with rasterio.open(base) as src:
            profile, data = dict(src.profile), src.read()
        nodata = (data == 0).all(axis=0)
        for scale in ("sn6", "db", "linear", "amplitude", "complex"):
            if scale == "complex":
                phase = np.random.default_rng(looks).uniform(0, 2 * np.pi, data.shape)
                values = (np.sqrt(np.nan_to_num(to_linear(data, "sn6"))) * np.exp(1j * phase)).astype(np.complex64)
                dtype = "complex64"
            else:
                values, dtype = convert(data, "sn6", scale), "float32"
                values[:, nodata] = np.nan if scale == "db" else 0.0
            path = folder / f"{scale}_{looks}.tif"
            with rasterio.open(path, "w", **dict(profile, dtype=dtype, nodata=None)) as dst:
                dst.write(values)   # no tags: Auto decides from the values
            written[scale, looks] = path
    return written


@pytest.mark.parametrize("scale", ["sn6", "db", "linear", "amplitude", "complex"])
@pytest.mark.parametrize("looks", [4, 1])
def test_auto_recognises_every_scale_from_the_values(scenes, scale, looks):
    with rasterio.open(scenes[scale, looks]) as dataset:
        decision = decide_scale(dataset, [1, 2, 3, 4])
    assert decision.scale == scale
    assert "Auto" in decision.evidence or (scale == "complex" and "complex data type" in decision.evidence)


def test_ambiguous_and_uncalibrated_rasters_are_refused_naming_input_scale(tmp_path, scenes):
    digital = tmp_path / "dn.tif"
    values = np.random.default_rng(0).integers(200, 4000, (4, 128, 128)).astype("uint16")
    with rasterio.open(digital, "w", driver="GTiff", width=128, height=128, count=4, dtype="uint16",
                       crs="EPSG:32631", transform=rasterio.Affine(0.5, 0, 0, 0, -0.5, 0)) as dst:
        dst.write(values)
    with rasterio.open(digital) as dataset, pytest.raises(RasterError, match=r"digital numbers.*Input scale"):
        decide_scale(dataset, [1, 2, 3, 4])
    with rasterio.open(scenes["db", 4]) as dataset, pytest.raises(RasterError, match="negative"):
        decide_scale(dataset, [1, 2, 3, 4], "sn6")   # a requested scale the values contradict
    with rasterio.open(scenes["sn6", 4]) as dataset, pytest.raises(RasterError, match="complex"):
        decide_scale(dataset, [1, 2, 3, 4], "complex")


def test_the_real_crops_dB_and_capella_complex(reference_data):
    with rasterio.open(reference_data / "sn6" / "sar_masked.tif") as dataset:
        assert decide_scale(dataset, [1, 2, 3, 4]).scale == "db"
    with rasterio.open(reference_data / "sn6" / "sar_hh.tif") as dataset:
        decision = decide_scale(dataset, [1])
    assert decision.scale == "complex" and decision.gain == pytest.approx(0.0002777517937677223 ** 2)
    assert "Capella scale_factor" in decision.evidence
