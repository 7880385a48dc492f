"""The *Auto* input scale: what a raster's values are, from its data type, tags and a sample.

Evidence, strongest first; each decision comes with a sentence for the log, and what no rule
settles is refused with a message that names Input scale (``--input-scale``):

1. **Data type.** Complex bands (complex64, complex128, complex_int16) are single-look complex:
   intensity = |z|^2. A real Input scale on them, or Input scale complex on real bands, is
   refused (I and Q stored as two real bands are not read as complex).
2. **Capella metadata.** A TIFF image description JSON with ``collect.image.scale_factor`` s
   calibrates the digital numbers: beta0 = |DN * s|^2, so the intensity gain is s^2 (Capella's
   product specification). Complex bands are SLC; real ones are GEO/GEC amplitude.
3. **Tags.** The ``SAR_SCALE`` tag (the simulator writes it; :func:`.canonical_scale` names
   accepted), else band units (dB, decibel -> db; linear, intensity, power -> linear; amplitude,
   magnitude -> amplitude). Units that disagree with each other or with the tag are refused.
4. **Values**, from up to 16 full-resolution windows of 256 px spread over the raster (never the
   whole raster at once, never overviews; a raster under 4 x 256 px a side is cut into the 16
   windows, so each pixel counts once): valid pixels only (finite; not the declared nodata in every
   band; with zero-is-nodata, not 0 in every band), all sampled bands pooled unless said:

   * fewer than 2,000 valid pixels: refused (too few to tell);
   * constant values: refused (not SAR);
   * about half negative and symmetric about 0 (35-65 % negative, |median| under a quarter
     of the interquartile range): refused as I or Q parts of complex data;
   * integer values (an integer type, or whole-number floats above 255): refused as
     uncalibrated digital numbers;
   * at least half negative: **dB**, if the 0.1-99.9th percentiles lie within -80..+50 dB and
     the median within -40..+10 dB (simulated scenes: 96-99.5 % negative, median -14 to -16,
     0.1th percentile about -26 at 4 looks and -42 at 1 look; the real Rotterdam crop: 97 %,
     median -13.3, 0.1-99.9th percentiles -20.4..+16.2);
   * 5-50 % negative: refused (neither dB nor an intensity);
   * none negative (under 5 %: noise-subtracted intensities go slightly negative), a float
     raster with median 8-70, 99.9th percentile at most 100 and at most 5x the median:
     **SN6 SAR-Intensity** (0-92; simulated: median 28-32, 99.9th percentile 62-75);
   * otherwise **linear** or **amplitude**, from the spread of the logarithm: S = 10*std(log10 x)
     in the band with the widest spread, the dB spread of x read as intensity (read as
     amplitude the spread is 2S). Speckled SAR intensity spreads several dB. Measured on
     simulated 256 and 512 px scenes (mixed, dense and sparse layouts, 4-6 seeds each, NaN
     strips on half): S 6.6-9.0 dB at 1 look, 5.3-7.9 at 2, 4.6-7.4 at 4, 4.3-7.2 at 8; the real
     4.5 m Rotterdam crop 5.6 dB, the real Capella SLC crop's |z|^2 7.5 dB. Amplitude images so
     read give half: 3.3-4.5 dB at 1 look, 2.3-3.7 at 4, 2.1-3.6 at 8, 2.8 (Rotterdam), 3.8
     (Capella). Hence S >= 5.0 dB -> linear (as amplitude it would spread 10 dB or more,
     beyond every scene measured) and S <= 4.0 dB -> amplitude (as intensity it would be
     smoother than every full-resolution scene but the sparsest 8-look ones). Between, where a
     quiet multi-looked intensity meets a busy single-look amplitude, the level decides if
     exactly one reading puts the median in land backscatter's typical -24..-9 dB (simulated:
     -13 to -17 dB as intensity; amplitude scenes read as intensity -6 to -8.5 dB), else it is
     refused. S under 1.5 dB (under 3 dB even as amplitude: not speckled) or above 16 dB is
     refused. These rules decided all 784 simulated cases above (112 scenes on every scale,
     linear and amplitude also through SN6's clipping) correctly, 57 of them by the level;
   * a linear, amplitude or complex reading whose median intensity (after any gain) lies
     outside -40..+10 dB is refused as uncalibrated (the Capella SLC crop without its gain
     reads +58..+69 dB by band).

A scale set by the user is taken as it is (evidence "set by the user"), and so is a tag, except
where the values contradict it: 5 % or more negative values on SN6, linear or amplitude; complex
against real data. Values beyond SN6's 92 are taken when tagged or set as SN6 (synthetic test
rasters use 255), though Auto never reads them as SN6. The Capella gain applies to the
complex and amplitude scales, set or detected.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from ..raster_windows import RasterError
from .scales import SCALE_LABELS, SCALES, canonical_scale

SCALE_TAG = "SAR_SCALE"
SCALE_FIX = "set Input scale (--input-scale) to sn6, db, linear, amplitude or complex"
UNIT_SCALES = {"db": "db", "decibel": "db", "decibels": "db", "linear": "linear", "intensity": "linear",
               "power": "linear", "amplitude": "amplitude", "magnitude": "amplitude"}

MIN_VALID_PIXELS = 2000
NEGATIVE_SHARE_CONTRADICTS = 0.05     # this share negative or more: not SN6, linear or amplitude
NEGATIVE_SHARE_DB = 0.5               # this share negative or more: dB
IQ_NEGATIVE_SHARE = (0.35, 0.65)      # with a median near 0: I or Q parts of complex data
DB_RANGE = (-80.0, 50.0)              # 0.1th and 99.9th percentiles of dB values
CALIBRATED_MEDIAN_DB = (-40.0, 10.0)  # median intensity of calibrated backscatter
TYPICAL_MEDIAN_DB = (-24.0, -9.0)     # median of land scenes: decides the linear/amplitude overlap
SN6_MEDIAN = (8.0, 70.0)
SN6_P999_MAX = 100.0
SN6_TAIL_MAX = 5.0                    # 99.9th percentile / median
LINEAR_MIN_SPREAD_DB = 5.0
AMPLITUDE_MAX_SPREAD_DB = 4.0         # both S, the spread read as intensity
SPREAD_RANGE_DB = (1.5, 16.0)
DN_MIN = 255.0                        # whole numbers above this: digital numbers


@dataclass(frozen=True)
class ScaleDecision:
    scale: str          # one of SCALES
    evidence: str       # one sentence for the log: what was decided and why (the numbers)
    gain: float = 1.0   # factor on linear intensity (a product's calibration, e.g. Capella scale_factor**2)


@dataclass(frozen=True)
class Sample:
    """The valid pixels of the sampled windows: ``values`` (bands, n), float32 or complex64."""

    values: np.ndarray
    pixels_read: int
    zero_is_nodata: bool = True     # the rule the pixels were read with (a refusal names its switch)

    @property
    def count(self) -> int:
        return int(self.values.shape[1])

    def describe(self) -> str:
        return f"{self.count:,} valid of {self.pixels_read:,} sampled pixels"


def sample_windows(width: int, height: int, windows: int = 16, window_px: int = 256) -> list[Window]:
    """Up to ``windows`` full-resolution windows of at most ``window_px`` on an even grid over the
    raster, corners included, never overlapping: a raster smaller than the grid is cut into it."""
    windows = max(1, int(windows))
    per_side = math.ceil(math.sqrt(windows))

    def starts_and_size(length: int) -> tuple[list[int], int]:
        count = min(per_side, length)
        size = min(window_px, length // count)
        return sorted(set(np.linspace(0, length - size, count).round().astype(int).tolist())), size

    cols, w = starts_and_size(width)
    rows, h = starts_and_size(height)
    grid = [Window(c, r, w, h) for r in rows for c in cols]
    if len(grid) > windows:   # an even subset of the grid
        grid = [grid[i] for i in np.linspace(0, len(grid) - 1, windows).round().astype(int)]
    return grid


def sample_pixels(dataset, band_indexes, zero_is_nodata: bool = True, windows: int = 16,
                  window_px: int = 256) -> Sample:
    """The valid pixels of :func:`sample_windows` (the reader's own validity rule)."""
    from ..reading.model_windows import valid_pixels

    chunks, read = [], 0
    for window in sample_windows(dataset.width, dataset.height, windows, window_px):
        raw = dataset.read(list(band_indexes), window=window)
        valid = valid_pixels(raw, dataset.nodata, zero_is_nodata)
        read += valid.size
        chunks.append(raw[:, valid])
    values = np.concatenate(chunks, axis=1)
    values = values.astype(np.complex64 if np.iscomplexobj(values) else np.float32, copy=False)
    return Sample(values, read, zero_is_nodata)


def capella_scale_factor(tags: dict) -> float | None:
    """``collect.image.scale_factor`` of a Capella image description, else None."""
    try:
        factor = float(json.loads(tags.get("TIFFTAG_IMAGEDESCRIPTION", ""))["collect"]["image"]["scale_factor"])
    except (ValueError, KeyError, TypeError):
        return None
    return factor if math.isfinite(factor) and factor > 0 else None


def declared_scale(dataset, band_indexes) -> tuple[str, str] | None:
    """(scale, where it was read) from the ``SAR_SCALE`` tag or the band units, else None."""
    raw_tag = str(dataset.tags().get(SCALE_TAG, "")).strip()
    units = {str(dataset.units[i - 1] or "").strip().lower() for i in band_indexes}
    unit_scales = {UNIT_SCALES[u] for u in units if u in UNIT_SCALES}
    if len(unit_scales) > 1:
        raise RasterError(f"The bands' units disagree ({', '.join(sorted(units))}); {SCALE_FIX}.")
    if raw_tag:
        try:
            tagged = canonical_scale(raw_tag)
        except ValueError:
            raise RasterError(f"The raster's {SCALE_TAG} tag says {raw_tag!r}, no known scale; {SCALE_FIX}.") from None
        if unit_scales and unit_scales != {tagged}:
            raise RasterError(f"The raster's {SCALE_TAG} tag says {raw_tag!r} but its band units say "
                              f"{', '.join(sorted(units))}; {SCALE_FIX}.")
        return tagged, f"the {SCALE_TAG} tag says {raw_tag}"
    if unit_scales:
        return unit_scales.pop(), f"band units {', '.join(sorted(u for u in units if u))}"
    return None


def _pct(share: float) -> str:
    return f"{100 * share:.3g} %"


def contradiction(scale: str, sample: Sample) -> str | None:
    """What in the sampled values rules ``scale`` out (a phrase), else None."""
    if sample.count == 0:
        return None
    values = sample.values
    if np.iscomplexobj(values):
        return None if scale == "complex" else "the bands hold complex values"
    if scale == "complex":
        return ("the bands hold real values (I and Q as separate bands are not supported: merge them into one "
                "complex band)")
    negative = float(np.mean(values < 0))
    if scale in ("sn6", "linear", "amplitude") and negative >= NEGATIVE_SHARE_CONTRADICTS:
        return f"{_pct(negative)} of the {sample.describe()} are negative, which that scale never is (dB?)"
    return None


def _intensity_level_db(intensity: np.ndarray) -> float:
    positive = intensity[intensity > 0]
    return 10 * math.log10(float(np.median(positive))) if positive.size else float("-inf")


def _spread_db(values: np.ndarray) -> float:
    """10*std(log10 x) of the band with the widest spread (positive values only)."""
    spreads = [10 * float(np.std(np.log10(band[band > 0]))) for band in values if np.count_nonzero(band > 0) >= 100]
    return max(spreads) if spreads else 0.0


def _calibrated(scale: str, level_db: float, said: str, gain_note: str = "") -> None:
    low, high = CALIBRATED_MEDIAN_DB
    if not low <= level_db <= high:
        raise RasterError(f"Read as {SCALE_LABELS[scale]}{gain_note} the median intensity is {level_db:.3g} dB "
                          f"({said}), outside calibrated backscatter's {low:g}..{high:+g} dB: uncalibrated? "
                          f"Calibrate to sigma0/beta0 or set Input scale (--input-scale) to {scale} to read the values "
                          "as they are.")


def scale_from_values(sample: Sample, integer_type: bool) -> ScaleDecision:
    """Auto's decision on real values (the rules of the module docstring, from the fourth)."""
    values = sample.values
    if sample.count < MIN_VALID_PIXELS:
        zeros = (" If 0 is a value here, not a fill, turn off 'Pixels 0 in every band are nodata' (--keep-zeros)."
                 if sample.zero_is_nodata else "")
        raise RasterError(f"Only {sample.describe()}: too few to tell the input scale (mostly nodata?); "
                          f"{SCALE_FIX}.{zeros}")
    pooled = values.ravel()
    median = float(np.median(pooled))
    low, high = (float(v) for v in np.percentile(pooled, [0.1, 99.9]))
    said = f"{sample.describe()}, median {median:.4g}, 0.1-99.9th percentiles {low:.4g}..{high:.4g}"
    if low == high:
        raise RasterError(f"The values are constant ({said}), not SAR; {SCALE_FIX}.")
    negative = float(np.mean(pooled < 0))
    said = f"{_pct(negative) if negative else 'none'} negative, {said}"
    q25, q75 = np.percentile(pooled, [25, 75])
    if IQ_NEGATIVE_SHARE[0] <= negative <= IQ_NEGATIVE_SHARE[1] and abs(median) < 0.25 * (q75 - q25):
        raise RasterError(f"The values are symmetric about 0 ({said}) like the I or Q part of complex data; "
                          "I and Q as separate bands are not supported: merge them into one complex band or convert "
                          f"to intensity, or {SCALE_FIX}.")
    if integer_type or (high > DN_MIN and bool(np.all(pooled == np.round(pooled)))):
        raise RasterError(f"Integer values ({said}): uncalibrated digital numbers? Calibrate to sigma0/beta0 or "
                          f"{SCALE_FIX}.")
    if negative >= NEGATIVE_SHARE_DB:
        (db_low, db_high), (level_low, level_high) = DB_RANGE, CALIBRATED_MEDIAN_DB
        if low < db_low or high > db_high or not level_low <= median <= level_high:
            raise RasterError(f"Most values are negative but they are no calibrated dB ({said}; dB lies within "
                              f"{db_low:g}..{db_high:+g}, median {level_low:g}..{level_high:+g}); {SCALE_FIX}.")
        return ScaleDecision("db", f"Auto: {said}: dB")
    if negative >= NEGATIVE_SHARE_CONTRADICTS:
        raise RasterError(f"Some values are negative ({said}): neither dB (mostly negative) nor an intensity "
                          f"(none); {SCALE_FIX}.")
    positive = pooled[pooled > 0]
    if (SN6_MEDIAN[0] <= median <= SN6_MEDIAN[1] and high <= SN6_P999_MAX and high <= SN6_TAIL_MAX * median):
        return ScaleDecision("sn6", f"Auto: {said}: SN6 SAR-Intensity (0-92)")
    spread = _spread_db(values)
    level = _intensity_level_db(positive)
    said = f"{said}; log spread {spread:.2f} dB read as intensity, {2 * spread:.2f} as amplitude"
    if not SPREAD_RANGE_DB[0] <= spread <= SPREAD_RANGE_DB[1]:
        raise RasterError(f"The values spread like no speckled SAR intensity or amplitude ({said}; not within "
                          f"{SPREAD_RANGE_DB[0]:g}-{SPREAD_RANGE_DB[1]:g} dB read as intensity); {SCALE_FIX}.")
    if spread >= LINEAR_MIN_SPREAD_DB:
        scale, why = "linear", f"at least {LINEAR_MIN_SPREAD_DB:g} dB"
    elif spread <= AMPLITUDE_MAX_SPREAD_DB:
        scale, why = "amplitude", f"at most {AMPLITUDE_MAX_SPREAD_DB:g} dB read as intensity"
    else:
        typical = [TYPICAL_MEDIAN_DB[0] <= median_db <= TYPICAL_MEDIAN_DB[1] for median_db in (level, 2 * level)]
        if typical.count(True) != 1:
            raise RasterError(f"The values could be linear intensity or amplitude ({said}, median {level:.3g} dB as "
                              f"intensity, {2 * level:.3g} as amplitude); set Input scale (--input-scale) to linear "
                              "or amplitude.")
        scale = "linear" if typical[0] else "amplitude"
        why = (f"between {AMPLITUDE_MAX_SPREAD_DB:g} and {LINEAR_MIN_SPREAD_DB:g} dB, and only this reading puts the "
               f"median ({level if typical[0] else 2 * level:.3g} dB) in land's {TYPICAL_MEDIAN_DB[0]:g}.."
               f"{TYPICAL_MEDIAN_DB[1]:g} dB")
    level_db = level if scale == "linear" else 2 * level
    _calibrated(scale, level_db, said)
    return ScaleDecision(scale, f"Auto: {said}: {SCALE_LABELS[scale]} (spread {why}), median {level_db:.3g} dB")


def decide_scale(dataset, band_indexes, requested: str = "auto", *, zero_is_nodata: bool = True,
                 windows: int = 16, window_px: int = 256) -> ScaleDecision:
    """The scale of ``dataset``'s ``band_indexes`` (1-based; the bands mapped to the model): ``requested``
    when it is not "auto" and nothing contradicts it, else Auto's decision (the module docstring)."""
    band_indexes = [int(i) for i in band_indexes]
    if not band_indexes or any(not 1 <= i <= dataset.count for i in band_indexes):
        raise RasterError(f"Bands {band_indexes} are not bands of this {dataset.count}-band raster; set Band order "
                          "(--band-order).")
    try:
        requested = "auto" if not requested or str(requested).lower() == "auto" else canonical_scale(requested)
    except ValueError as exc:
        raise RasterError(f"Input scale: {exc}; set Input scale (--input-scale) to auto or one of them.") from None
    dtypes = [str(dataset.dtypes[i - 1]) for i in band_indexes]
    complex_bands = ["complex" in d for d in dtypes]
    if any(complex_bands) and not all(complex_bands):
        raise RasterError(f"The bands mix complex and real types ({', '.join(dtypes)}); set Band order (--band-order) "
                          "to bands of one kind.")
    is_complex = complex_bands[0]
    factor = capella_scale_factor(dataset.tags())
    capella = f"Capella scale_factor {factor:.6g}: gain {factor * factor:.4g} (beta0 = |DN × s|²)" if factor else ""
    sample = sample_pixels(dataset, band_indexes, zero_is_nodata, windows, window_px)

    def refuse_if_contradicted(scale: str, source: str) -> None:
        problem = contradiction(scale, sample)
        if is_complex != (scale == "complex"):
            problem = problem or ("the bands hold complex values" if is_complex else "the bands hold real values")
        if problem:
            from_user = requested != "auto"
            if is_complex:
                fix = "set Input scale (--input-scale) to complex" + (" or auto" if from_user else "")
            elif from_user:
                fix = f"set Input scale (--input-scale) to auto or the values' scale ({', '.join(SCALES[:4])})"
            else:   # auto reads the same metadata again: only naming the scale (or fixing the tag) helps
                fix = (f"set Input scale (--input-scale) to the values' scale ({', '.join(SCALES[:4])}), "
                       "or correct the raster's metadata")
            raise RasterError(f"{source} {SCALE_LABELS[scale]} but {problem}; {fix}.")

    def with_gain(scale: str, evidence: str) -> ScaleDecision:
        if factor and scale in ("complex", "amplitude"):
            return ScaleDecision(scale, f"{evidence}; {capella}", factor * factor)
        return ScaleDecision(scale, evidence)

    if requested != "auto":
        refuse_if_contradicted(requested, "Input scale is")
        return with_gain(requested, "set by the user")
    declared = declared_scale(dataset, band_indexes)
    if is_complex or factor:
        scale = "complex" if is_complex else "amplitude"
        source = f"{dtypes[0]} data type" if is_complex else f"{dtypes[0]} bands with Capella metadata (GEO/GEC)"
        if declared is not None and declared[0] != scale:
            raise RasterError(f"The raster's metadata ({declared[1]}) contradicts its {source}, which is "
                              f"{SCALE_LABELS[scale]}; {SCALE_FIX}.")
        refuse_if_contradicted(scale, f"The {source} says")
        if sample.count < MIN_VALID_PIXELS:
            raise RasterError(f"Only {sample.describe()}: too few to check the input scale; {SCALE_FIX}.")
        gain = factor * factor if factor else 1.0
        intensity = (np.abs(sample.values) ** 2 if is_complex else sample.values ** 2) * gain
        level = _intensity_level_db(intensity)
        _calibrated(scale, level, sample.describe(), f" with gain {gain:.4g}" if factor else "")
        calibrated = "calibrated " if factor else ""
        return with_gain(scale, f"Auto: {source}, {calibrated}median intensity {level:.3g} dB")
    if declared is not None:
        scale, source = declared
        refuse_if_contradicted(scale, f"The raster's metadata ({source}) says")
        return with_gain(scale, f"Auto: {source}")
    return scale_from_values(sample, integer_type=any(np.dtype(d).kind in "iu" for d in dtypes))
