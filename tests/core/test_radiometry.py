"""Input scales: conversions with known values, and Auto's decision on every scale, or its refusal.

Simulated scenes are written here without any tag (Auto decides from the values alone); the
real crops are ../shared/reference-data/sn6 (skipped without them).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from sn6_footprints.core.radiometry import canonical_scale, convert, from_linear, to_linear
from sn6_footprints.core.radiometry.detect import decide_scale, sample_windows
from sn6_footprints.core.radiometry.scales import SN6_DB_GAIN, SN6_DB_OFFSET, SN6_MAX, SN6_MIN_VALID
from sn6_footprints.core.raster_windows import RasterError
from sn6_footprints.core.simulation import simulate_scene

TRANSFORM = Affine(0.5, 0, 594000.0, 0, -0.5, 5750000.0)
QUAD = [1, 2, 3, 4]


def write(path, values, dtype="float32", tags=None, units=None, nodata=None):
    """A GeoTIFF holding ``values`` (bands, h, w) and only the metadata given."""
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1], count=values.shape[0],
                       dtype=dtype, crs="EPSG:32631", transform=TRANSFORM, nodata=nodata) as dst:
        dst.write(values.astype(dtype))
        if tags:
            dst.update_tags(**tags)
        for band, unit in enumerate(units or [], start=1):
            dst.set_band_unit(band, unit)
    return path


def decide(path, bands=QUAD, requested="auto", **kwargs):
    with rasterio.open(path) as dataset:
        return decide_scale(dataset, bands, requested, **kwargs)


# --- conversions --------------------------------------------------------------------------------

def quad(values):
    """The same (1, n) values in each of the 4 bands."""
    return np.tile(np.asarray(values, np.float32).reshape(1, 1, -1), (4, 1, 1))


def test_db_linear_and_amplitude_with_known_values():
    db = quad([-20.0, -10.0, 0.0, 10.0])
    assert np.allclose(convert(db, "db", "linear")[0, 0], [0.01, 0.1, 1.0, 10.0])
    assert np.allclose(convert(db, "db", "amplitude")[0, 0], [0.1, np.sqrt(0.1), 1.0, np.sqrt(10.0)])
    assert np.allclose(convert(quad([4.0, 0.25]), "amplitude", "linear")[0, 0], [16.0, 0.0625])
    assert np.allclose(convert(quad([100.0, 0.001]), "linear", "db")[0, 0], [20.0, -30.0])


def test_sn6_is_per_band_affine_in_db_and_clipped_to_its_valid_range():
    sn6 = convert(quad([-10.0]), "db", "sn6")[:, 0, 0]
    assert np.allclose(sn6, [32.7, 45.5, 42.8, 29.7])      # gains 1.35/1.75/1.75/1.35, offsets 46.2/63/60.3/43.2
    assert np.allclose(sn6, SN6_DB_GAIN * -10 + SN6_DB_OFFSET)
    assert np.allclose(convert(sn6.reshape(4, 1, 1), "sn6", "db"), -10.0, atol=1e-4)
    hv_only = convert(np.float32([[[-10.0]]]), "db", "sn6", band_names=["HV"])
    assert np.allclose(hv_only, 45.5)                      # a band subset keeps each band's own coefficients
    extremes = convert(quad([-200.0, 200.0]), "db", "sn6")[:, 0]
    assert (extremes[:, 0] == SN6_MIN_VALID).all() and (extremes[:, 1] == SN6_MAX).all()   # dark stays valid
    with pytest.raises(ValueError, match="SN6 scale is defined for bands"):
        convert(np.float32([[[-10.0]]]), "db", "sn6", band_names=["XX"])


def test_complex_intensity_is_the_squared_magnitude_times_the_gain():
    z = np.array([[[3 + 4j, 1j, np.nan + 0j]]] * 4, np.complex64)
    linear = to_linear(z, "complex")
    assert np.allclose(linear[0, 0, :2], [25.0, 1.0]) and np.isnan(linear[0, 0, 2])
    assert np.allclose(to_linear(z, "complex", gain=0.01)[0, 0, 0], 0.25)
    assert np.allclose(convert(z, "complex", "db", gain=0.01)[0, 0, :2], [-6.0206, -20.0], atol=1e-4)
    with pytest.raises(ValueError, match="complex"):
        to_linear(z, "linear")                             # complex values on a real scale
    with pytest.raises(ValueError, match="real-valued"):
        from_linear(linear, "complex")                     # a model never takes complex input


def test_nodata_propagates_as_nan_and_as_sn6_zero():
    db = quad([np.nan, -10.0])
    assert np.isnan(convert(db, "db", "linear")[:, 0, 0]).all()
    assert (convert(db, "db", "sn6")[:, 0, 0] == 0).all()
    sn6 = quad([0.0, 30.0])
    assert np.isnan(convert(sn6, "sn6", "db")[:, 0, 0]).all() and np.isfinite(convert(sn6, "sn6", "db")[:, 0, 1]).all()
    assert np.isnan(to_linear(quad([-1.0, np.inf]), "linear")).all()          # negative or infinite intensity
    assert np.isnan(to_linear(quad([-0.5]), "amplitude")).all()
    assert (from_linear(quad([np.nan]), "sn6") == 0).all() and np.isnan(from_linear(quad([np.nan]), "amplitude")).all()
    assert np.allclose(from_linear(quad([1e-12]), "db"), -70.0)               # floored, still valid


def test_round_trips_through_every_real_scale():
    rng = np.random.default_rng(3)
    db = rng.uniform(-25, 5, (4, 8, 8)).astype(np.float32)
    for scale in ("linear", "amplitude", "sn6"):
        assert np.allclose(convert(convert(db, "db", scale), scale, "db"), db, atol=1e-3), scale
    chain = convert(convert(convert(db, "db", "linear"), "linear", "amplitude"), "amplitude", "sn6")
    assert np.allclose(chain, convert(db, "db", "sn6"), atol=1e-3)
    same = convert(db, "db", "db")
    assert same is not db and np.array_equal(same, db)


def test_scale_names_accept_the_aliases():
    assert [canonical_scale(n) for n in ("SN6-Intensity", "dB", "decibel", "power", "magnitude", "SLC")] == \
        ["sn6", "db", "db", "linear", "amplitude", "complex"]
    with pytest.raises(ValueError, match="unknown input scale"):
        canonical_scale("gamma0")


# --- Auto on simulated scenes, written without tags ----------------------------------------------

SIMULATED = {(1, 4): "sn6", (1, 1): "sn6", (2, 4): "db", (2, 1): "db"}   # (seed, looks): the simulator's scale


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Every scale of two seeds at 4 and 1 looks, 384 px, from one simulation each; seed 2 has a NaN strip."""
    folder = tmp_path_factory.mktemp("scales")
    written = {}
    for (seed, looks), simulated in SIMULATED.items():
        source = folder / f"sim_{seed}_{looks}.tif"
        simulate_scene(source, None, width_px=384, height_px=384, seed=seed, looks=looks, scale=simulated,
                       nodata_strip=seed == 2)
        with rasterio.open(source) as src:
            data = src.read()
        linear = to_linear(data, simulated)
        nodata = ~np.isfinite(linear).all(axis=0)
        for scale in ("sn6", "db", "linear", "amplitude"):
            values = convert(data, simulated, scale)
            values[:, nodata] = 0.0 if scale != "db" else np.nan   # nodata as each scale is usually stored
            written[scale, seed, looks] = write(folder / f"{scale}_{seed}_{looks}.tif", values)
        phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, data.shape)
        z = np.sqrt(np.nan_to_num(linear)) * np.exp(1j * phase)
        written["complex", seed, looks] = write(folder / f"complex_{seed}_{looks}.tif", z, "complex64")
    return written


@pytest.mark.parametrize("seed,looks", list(SIMULATED))
@pytest.mark.parametrize("scale", ["sn6", "db", "linear", "amplitude", "complex"])
def test_auto_recognises_every_scale_from_the_values_alone(scenes, scale, seed, looks):
    decision = decide(scenes[scale, seed, looks])
    assert decision.scale == scale, decision.evidence
    assert decision.evidence.startswith("Auto: ") and decision.gain == 1.0
    expected_words = {"sn6": "SN6", "db": "negative", "linear": "log spread", "amplitude": "log spread",
                      "complex": "complex64 data type"}
    assert expected_words[scale] in decision.evidence


def test_auto_reads_only_full_resolution_windows_spread_over_the_raster():
    windows = sample_windows(3000, 2000, 16, 256)
    assert len(windows) == 16 and {(w.width, w.height) for w in windows} == {(256, 256)}
    assert min(w.col_off for w in windows) == 0 and max(w.col_off + w.width for w in windows) == 3000
    assert min(w.row_off for w in windows) == 0 and max(w.row_off + w.height for w in windows) == 2000
    assert len(sample_windows(3000, 2000, 10, 256)) == 10
    small = sample_windows(100, 80, 16, 256)               # cut into the grid: every pixel once
    covered = np.zeros((80, 100), int)
    for w in small:
        covered[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert len(small) == 16 and (covered == 1).all()


def test_tags_and_band_units_decide_unless_the_values_contradict_them(tmp_path, scenes):
    with rasterio.open(scenes["db", 2, 4]) as src:
        db = src.read()
    tagged = write(tmp_path / "tagged.tif", db, tags={"SAR_SCALE": "db"})
    assert decide(tagged).evidence == "Auto: the SAR_SCALE tag says db"
    assert decide(write(tmp_path / "units.tif", db, units=["dB"] * 4)).evidence == "Auto: band units db"
    sn6 = convert(db, "db", "sn6")
    assert decide(write(tmp_path / "alias.tif", sn6, tags={"SAR_SCALE": "SN6-Intensity"})).scale == "sn6"
    with pytest.raises(RasterError, match=r"SAR_SCALE tag says sn6.*negative.*Input scale \(--input-scale\)"):
        decide(write(tmp_path / "lying.tif", db, tags={"SAR_SCALE": "sn6"}))
    with pytest.raises(RasterError, match="no known scale"):
        decide(write(tmp_path / "unknown.tif", db, tags={"SAR_SCALE": "gamma0"}))
    with pytest.raises(RasterError, match="units disagree"):
        decide(write(tmp_path / "mixed_units.tif", db, units=["dB", "dB", "linear", "dB"]))


def test_a_requested_scale_is_taken_unless_the_values_contradict_it(scenes):
    decision = decide(scenes["linear", 1, 4], requested="amplitude")
    assert (decision.scale, decision.evidence) == ("amplitude", "set by the user")
    with pytest.raises(RasterError, match=r"linear intensity but .*negative.*Input scale \(--input-scale\)"):
        decide(scenes["db", 2, 4], requested="linear")
    with pytest.raises(RasterError, match=r"real values \(I and Q as separate bands are not supported"):
        decide(scenes["sn6", 1, 4], requested="complex")
    with pytest.raises(RasterError, match="complex values; set Input scale"):
        decide(scenes["complex", 1, 4], requested="db")
    with pytest.raises(RasterError, match="unknown input scale 'gamma0'"):
        decide(scenes["db", 2, 4], requested="gamma0")


def test_capella_metadata_calibrates_complex_and_geo_amplitude(tmp_path, scenes):
    scale_factor = 1e-4
    capella = {"TIFFTAG_IMAGEDESCRIPTION": json.dumps({"collect": {"image": {"scale_factor": scale_factor}}})}
    with rasterio.open(scenes["complex", 2, 4]) as src:
        z = src.read()
    slc = write(tmp_path / "slc.tif", z / scale_factor, "complex64", tags=capella)
    decision = decide(slc)
    assert decision.scale == "complex" and decision.gain == pytest.approx(scale_factor ** 2)
    assert "Capella scale_factor" in decision.evidence and "calibrated median intensity -1" in decision.evidence
    geo = write(tmp_path / "geo.tif", np.clip(np.abs(z) / scale_factor, 0, 65535), "uint16", tags=capella)
    decision = decide(geo)
    assert decision.scale == "amplitude" and decision.gain == pytest.approx(scale_factor ** 2)
    with pytest.raises(RasterError, match=r"uncalibrated\? .*Input scale \(--input-scale\) to complex"):
        decide(write(tmp_path / "slc_bare.tif", z / scale_factor, "complex64"))   # the same without its gain


# --- refusals ------------------------------------------------------------------------------------

def test_uncalibrated_digital_numbers_are_refused_naming_input_scale(tmp_path):
    values = np.random.default_rng(0).integers(200, 4000, (4, 128, 128))
    with pytest.raises(RasterError, match=r"digital numbers\? Calibrate to sigma0/beta0 or set Input scale"):
        decide(write(tmp_path / "dn.tif", values, "uint16"))
    with pytest.raises(RasterError, match="digital numbers"):
        decide(write(tmp_path / "dn_float.tif", values, "float32"))   # whole numbers stored as floats


def test_constant_mostly_nodata_and_iq_rasters_are_refused(tmp_path, scenes):
    with pytest.raises(RasterError, match=r"constant.*Input scale \(--input-scale\)"):
        decide(write(tmp_path / "constant.tif", np.full((4, 128, 128), 0.05)))
    with rasterio.open(scenes["sn6", 1, 4]) as src:
        sn6 = src.read()
    sn6[:, 30:, :] = 0.0                                   # 384 x 30 px left: 11,520 pixels
    sn6[:, :, 4:] = 0.0                                    # 30 x 4 = 120 px left
    with pytest.raises(RasterError, match=r"Only 120 valid of 147,456 sampled pixels: too few .*--input-scale"):
        decide(write(tmp_path / "mostly_nodata.tif", sn6))
    with rasterio.open(scenes["complex", 1, 4]) as src:
        z = src.read(1)
    iq = np.stack([z.real, z.imag, z.real, z.imag])
    with pytest.raises(RasterError, match="I and Q as separate bands are not supported"):
        decide(write(tmp_path / "iq.tif", iq))


def test_uncalibrated_intensity_is_refused(tmp_path, scenes):
    with rasterio.open(scenes["linear", 2, 4]) as src:
        linear = src.read()
    with pytest.raises(RasterError, match=r"median intensity is [0-9.]+ dB .*outside calibrated backscatter"):
        decide(write(tmp_path / "uncalibrated.tif", linear * 1e6))   # +46 dB: not sigma0/beta0


def lognormal(spread_db, median_db, shape=(4, 128, 128), seed=0):
    """Positive values whose 10*log10 has the given std and median (a stand-in with a chosen spread)."""
    return 10 ** ((median_db + spread_db * np.random.default_rng(seed).standard_normal(shape)) / 10)


def test_between_the_spreads_the_level_decides_or_auto_refuses(tmp_path):
    # a 4.5 dB spread could be a quiet intensity or a busy single-look amplitude read as intensity
    assert decide(write(tmp_path / "dark.tif", lognormal(4.5, -15.0))).scale == "linear"     # as amplitude -30 dB
    assert decide(write(tmp_path / "bright.tif", lognormal(4.5, -7.0))).scale == "amplitude"  # as amplitude -14 dB
    with pytest.raises(RasterError, match=r"could be linear intensity or amplitude.*to linear or amplitude"):
        decide(write(tmp_path / "both.tif", lognormal(4.5, -11.0)))    # -11 and -22 dB: both land-like
    with pytest.raises(RasterError, match="spread like no speckled SAR"):
        decide(write(tmp_path / "smooth.tif", lognormal(1.0, -12.0)))


# --- the real crops --------------------------------------------------------------------------------

def test_the_real_db_crop_is_db(reference_data):
    decision = decide(reference_data / "sn6" / "sar_masked.tif")
    assert decision.scale == "db" and "97 % negative" in decision.evidence   # NaN outside the swath skipped


@pytest.mark.parametrize("band", ["hh", "hv", "vh", "vv"])
def test_the_real_capella_slc_crops_are_complex_with_their_gain(reference_data, band):
    path = reference_data / "sn6" / f"sar_{band}.tif"
    with rasterio.open(path) as dataset:
        scale_factor = json.loads(dataset.tags()["TIFFTAG_IMAGEDESCRIPTION"])["collect"]["image"]["scale_factor"]
        decision = decide_scale(dataset, [1])
    assert decision.scale == "complex" and decision.gain == pytest.approx(scale_factor ** 2)
    assert "Capella scale_factor" in decision.evidence
    level_db = float(decision.evidence.split("calibrated median intensity ")[1].split(" dB")[0])
    assert -17 < level_db < -11                            # beta0 of Rotterdam: HH -13.3, HV -15.4 dB


def test_the_real_crops_on_other_scales(reference_data, tmp_path):
    """The real dB crop rewritten as linear, amplitude and SN6 without tags: Auto finds each."""
    with rasterio.open(reference_data / "sn6" / "sar_masked.tif") as src:
        db = src.read()
    for scale in ("linear", "amplitude", "sn6"):
        assert decide(write(tmp_path / f"{scale}.tif", convert(db, "db", scale))).scale == scale
