"""SAR input scales and the conversions between them: the one place for it.

Scales (``SCALES``): ``sn6`` (SpaceNet 6 SAR-Intensity, log-scaled, nodata 0), ``db``
(10 log10 of intensity, e.g. calibrated sigma0/beta0 in dB), ``linear`` (intensity, power),
``amplitude`` (sqrt of intensity) and ``complex`` (single-look complex z, intensity = |z|^2).
Every conversion goes through linear intensity (:func:`to_linear`, :func:`from_linear`),
window by window and band by band; :func:`convert` is the identity where nothing changes.

The SN6 <-> dB mapping below is this project's fit, not a published constant:

SN6 ships log-scaled intensities: roughly 0-92, nodata 0, per-band means about 28.6 (HH),
36.1 (HV), 33.8 (VH), 26.2 (VV), std about 8.5 in every band (REFERENCE.md §1). We model them
as an affine function of calibrated decibels, per band::

    value = SN6_DB_GAIN[band] * dB + SN6_DB_OFFSET[band]      (HH, HV, VH, VV)
    gains   1.35, 1.75, 1.75, 1.35
    offsets 46.2, 63.0, 60.3, 43.2

How the numbers were chosen: full-resolution simulated scenes (default parameters: mixed
layout, 4 looks, 35 degrees; 8 seeds pooled) have per-band dB means of -13.1 / -15.5 / -15.2 /
-12.6 and std 6.3 / 4.8 / 4.9 / 6.2, and their 4.5 m block averages match the real Rotterdam dB
crop within about 2 dB (see the calibration test). Gain = 8.5 / std (HV and VH sharing one) and offset =
SN6 mean - gain * dB mean then reproduce SN6's per-band means and std of about 8.5.

Why per band: calibrated cross-pol is weaker and less spread than co-pol (the real crop: medians
HH -12.4, HV -14.3, VH -13.9, VV -11.7 dB; cross-pol 1st-99th percentile span 16-18 dB against
27 dB for co-pol), yet SN6's cross-pol means are 7-10 units *higher* and all four std are equal:
the product carries per-channel gains and offsets, so no single affine map fits all bands.
Applied to the real crop, the map gives values well inside 0-92 (its 1st-99th percentiles land
at about 21-57 for HH and 29-58 for HV). Fewer looks widen the dB spread (a 1-look scene has an
SN6 std nearer 11); the map does not change with the simulation parameters.

The simulator, the quick-looks and any display code convert through these functions only.
"""
from __future__ import annotations

import numpy as np

BANDS = ("HH", "HV", "VH", "VV")
SN6_DB_GAIN = np.array([1.35, 1.75, 1.75, 1.35], dtype=np.float32)
SN6_DB_OFFSET = np.array([46.2, 63.0, 60.3, 43.2], dtype=np.float32)
SN6_NODATA = 0.0
SN6_MIN_VALID = 0.5   # valid pixels are clipped to [SN6_MIN_VALID, SN6_MAX] so none reads as nodata
SN6_MAX = 92.0
# SN6 per-band statistics quoted by the winners (REFERENCE.md §1), for checks.
SN6_BAND_MEANS = (28.6, 36.1, 33.8, 26.2)
SN6_BAND_STD = 8.5


def _band_coefficients(band, ndim: int):
    """(gain, offset) broadcast to an array whose first axis is the 4 bands (band=None), or the
    scalars of one band (a name or an index)."""
    if band is None:
        shape = (4,) + (1,) * (ndim - 1)
        return SN6_DB_GAIN.reshape(shape), SN6_DB_OFFSET.reshape(shape)
    index = BANDS.index(band.upper()) if isinstance(band, str) else int(band)
    return SN6_DB_GAIN[index], SN6_DB_OFFSET[index]


def sn6_from_db(db, band=None) -> np.ndarray:
    """dB -> SN6 value. ``band`` None: the array's first axis holds HH, HV, VH, VV; else a band
    name or index. NaN (nodata) becomes 0; valid values are clipped to [0.5, 92]."""
    db = np.asarray(db, dtype=np.float32)
    gain, offset = _band_coefficients(band, db.ndim)
    value = gain * db + offset
    value = np.clip(value, SN6_MIN_VALID, SN6_MAX)
    return np.where(np.isfinite(db), value, np.float32(SN6_NODATA)).astype(np.float32)


def db_from_sn6(value, band=None) -> np.ndarray:
    """SN6 value -> dB (0 = nodata -> NaN). Same band convention as :func:`sn6_from_db`."""
    value = np.asarray(value, dtype=np.float32)
    gain, offset = _band_coefficients(band, value.ndim)
    db = (value - offset) / gain
    return np.where(value == SN6_NODATA, np.float32(np.nan), db).astype(np.float32)


def db_from_linear(intensity) -> np.ndarray:
    """10 log10 of linear intensity; zero or negative gives NaN."""
    intensity = np.asarray(intensity, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(intensity)
    return np.where(intensity > 0, db, np.float32(np.nan)).astype(np.float32)


def linear_from_db(db) -> np.ndarray:
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


SCALES = ("sn6", "db", "linear", "amplitude", "complex")
SCALE_LABELS = {"sn6": "SN6 SAR-Intensity", "db": "dB (10·log10 intensity)", "linear": "linear intensity",
                "amplitude": "amplitude (sqrt of intensity)", "complex": "complex (intensity = |z|²)"}
_ALIASES = {"sn6-intensity": "sn6", "sn6_intensity": "sn6", "sar-intensity": "sn6", "decibel": "db",
            "decibels": "db", "intensity": "linear", "power": "linear", "linear-intensity": "linear",
            "magnitude": "amplitude", "slc": "complex"}
# Linear intensities are floored here before a logarithm: a valid but dark pixel stays valid.
MIN_LINEAR = np.float32(1e-7)   # -70 dB


def canonical_scale(name: str) -> str:
    """A scale name as :data:`SCALES` spells it (model metadata says 'sn6-intensity')."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SCALES:
        raise ValueError(f"unknown input scale {name!r}; one of {', '.join(SCALES)}")
    return key


def _sn6_bands(band_names) -> list[int]:
    try:
        return [BANDS.index(str(b).upper()) for b in band_names]
    except ValueError:
        raise ValueError(f"the SN6 scale is defined for bands {', '.join(BANDS)}, not {', '.join(band_names)}; "
                         "convert from dB, linear or amplitude instead") from None


def _per_band(values: np.ndarray, band_names, ndim: int) -> np.ndarray:
    return values[_sn6_bands(band_names)].reshape((len(band_names),) + (1,) * (ndim - 1))


def to_linear(data, scale: str, band_names=BANDS, gain: float = 1.0) -> np.ndarray:
    """Linear intensity (float32, first axis = bands), NaN where a value is nodata or not
    finite (SN6: 0). ``gain`` multiplies the intensity (a product's calibration factor)."""
    scale = canonical_scale(scale)
    data = np.asarray(data)
    if scale == "complex":
        z = data.astype(np.complex64, copy=False)
        linear = (z.real.astype(np.float32) ** 2 + z.imag.astype(np.float32) ** 2)
        linear[~(np.isfinite(z.real) & np.isfinite(z.imag))] = np.nan
    elif np.iscomplexobj(data):
        raise ValueError(f"complex values cannot be read as {SCALE_LABELS[scale]}; use the complex scale")
    else:
        values = data.astype(np.float32, copy=False)
        if scale == "linear":
            linear = np.where(values >= 0, values, np.float32(np.nan))
        elif scale == "amplitude":
            linear = np.where(values >= 0, values * values, np.float32(np.nan))
        elif scale == "db":
            linear = linear_from_db(values)
        else:  # sn6
            gain_b, offset_b = _per_band(SN6_DB_GAIN, band_names, values.ndim), _per_band(SN6_DB_OFFSET, band_names,
                                                                                       values.ndim)
            db = (values - offset_b) / gain_b
            linear = np.where(values == SN6_NODATA, np.float32(np.nan), linear_from_db(db))
    linear = linear.astype(np.float32, copy=False)
    linear[~np.isfinite(linear)] = np.nan
    if gain != 1.0:
        linear *= np.float32(gain)
    return linear


def from_linear(linear, scale: str, band_names=BANDS) -> np.ndarray:
    """Linear intensity (NaN = nodata) on ``scale`` (float32). Nodata becomes SN6's 0 on the
    SN6 scale and NaN on the others; intensities are floored at :data:`MIN_LINEAR` before a
    logarithm. A model never takes complex input, so ``complex`` is refused."""
    scale = canonical_scale(scale)
    linear = np.asarray(linear, dtype=np.float32)
    if scale == "complex":
        raise ValueError("a model's input is real-valued: convert to dB, linear, amplitude or SN6")
    if scale == "linear":
        return linear.copy()
    if scale == "amplitude":
        return np.sqrt(linear)
    db = db_from_linear(np.maximum(linear, MIN_LINEAR))
    db = np.where(np.isfinite(linear), db, np.float32(np.nan)).astype(np.float32)
    if scale == "db":
        return db
    gain_b, offset_b = _per_band(SN6_DB_GAIN, band_names, db.ndim), _per_band(SN6_DB_OFFSET, band_names, db.ndim)
    value = np.clip(gain_b * db + offset_b, SN6_MIN_VALID, SN6_MAX)
    return np.where(np.isfinite(db), value, np.float32(SN6_NODATA)).astype(np.float32)


def convert(data, source: str, target: str, band_names=BANDS, gain: float = 1.0) -> np.ndarray:
    """``data`` from the ``source`` scale to the ``target`` scale (float32); unchanged values
    (a float32 copy) when the scales are the same and ``gain`` is 1."""
    source, target = canonical_scale(source), canonical_scale(target)
    if source == target and gain == 1.0 and source != "complex":
        return np.array(data, dtype=np.float32)
    return from_linear(to_linear(data, source, band_names, gain), target, band_names)
