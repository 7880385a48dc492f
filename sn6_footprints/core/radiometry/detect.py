"""The *Auto* input scale: what a raster's values are, from its data type, tags and a sample.

Evidence, strongest first:

1. a complex data type: single-look complex (intensity = |z|^2); a Capella product's
   ``scale_factor`` (TIFF image description JSON, ``collect.image.scale_factor``) calibrates it:
   beta0 = |z * scale_factor|^2, so the intensity gain is its square;
2. a ``SAR_SCALE`` tag (the simulator writes it) or band units naming dB;
3. the values of up to 16 full-resolution windows of 256 px spread over the raster (never the
   whole raster, never overviews), valid pixels only:

   * more than 1 % negative: dB (calibrated sigma0/beta0; values must lie within -80..+50 dB);
   * else a float raster with median 8-70 and 99.9th percentile at most 100: SN6 SAR-Intensity
     (0-92, band means 26-36);
   * else values below 50 at the 99th percentile: linear intensity or amplitude, told apart by
     the spread of their logarithm. Speckled SAR intensity has a dB standard deviation of 4-9
     dB (5.6 dB for one look alone; measured 4.8-6.7 dB on simulated 4-look scenes, 7.8 dB on
     a 1-look one); read as intensity the spread is 10·std(log10 x), as amplitude 20·std(log10 x)
     (so amplitude read as intensity gives 2.9-3.9 dB there). Intensity when the first lies in
     4.4-12 dB, amplitude when the second lies in 3.5-8 dB (the first then at most 4); a spread
     of 4-4.4 dB read as intensity, or none in range, is refused as ambiguous.

A decision the data contradict (a tag or a requested scale of SN6, linear or amplitude with
negative values; a real scale on complex data) is refused, as is what no rule fits (large
integers: uncalibrated digital numbers).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from ..raster_windows import RasterError
from .scales import SCALE_LABELS, canonical_scale

SCALE_FIX = "set Input scale (--input-scale) to sn6, db, linear, amplitude or complex"
SCALE_TAG = "SAR_SCALE"
_DB_UNITS = {"db", "decibel", "decibels"}


@dataclass(frozen=True)
class ScaleDecision:
    scale: str          # one of SCALES
    evidence: str       # for the log: what was decided and why
    gain: float = 1.0   # factor on linear intensity (a product's calibration)


def capella_gain(tags: dict) -> float | None:
    """scale_factor**2 from a Capella image description, else None."""
    try:
        description = json.loads(tags.get("TIFFTAG_IMAGEDESCRIPTION", ""))
        factor = float(description["collect"]["image"]["scale_factor"])
    except (ValueError, KeyError, TypeError):
        return None
    return factor * factor if math.isfinite(factor) and factor > 0 else None


def sample_values(dataset, band_indexes, zero_is_nodata: bool, windows: int = 16, window_px: int = 256) -> np.ndarray:
    """Valid values (float64, all bands pooled) of a grid of windows over the raster."""
    from ..reading.model_windows import valid_pixels

    per_side = max(1, int(math.sqrt(windows)))
    w, h = min(window_px, dataset.width), min(window_px, dataset.height)
    cols = np.linspace(0, dataset.width - w, per_side).astype(int)
    rows = np.linspace(0, dataset.height - h, per_side).astype(int)
    values = []
    for row in sorted(set(rows)):
        for col in sorted(set(cols)):
            raw = dataset.read(list(band_indexes), window=Window(int(col), int(row), w, h))
            valid = valid_pixels(raw, dataset.nodata, zero_is_nodata)
            values.append(raw[:, valid].ravel())
    return np.concatenate(values) if values else np.zeros(0)


def _from_values(values: np.ndarray, floating: bool) -> ScaleDecision:
    if values.size < 1000:
        raise RasterError(f"Only {values.size} valid values in the sampled windows: too few to tell the input "
                          f"scale; {SCALE_FIX}.")
    negative = float(np.mean(values < 0))
    median = float(np.median(values))
    if negative > 0.01:
        low, high = np.percentile(values, [0.1, 99.9])
        if low < -80 or high > 50:
            raise RasterError(f"{negative:.0%} of the values are negative but they span {low:.3g} to {high:.3g}, "
                              f"no dB range; {SCALE_FIX}.")
        return ScaleDecision("db", f"Auto: {negative:.0%} of the sampled values negative, median {median:.3g}: dB")
    p99, p999 = np.percentile(values, [99, 99.9])
    if floating and 8 <= median <= 70 and p999 <= 100:
        return ScaleDecision("sn6", f"Auto: values 0-{p999:.3g} (99.9th percentile), median {median:.3g}: "
                                    "SN6 SAR-Intensity")
    positive = values[values > 0]
    if p99 < 50 and positive.size >= 1000:
        spread = float(np.std(np.log10(positive)))
        as_intensity, as_amplitude = 10 * spread, 20 * spread
        said = f"median {median:.3g}, log spread {as_intensity:.2g} dB as intensity, {as_amplitude:.2g} dB as amplitude"
        if 4.4 <= as_intensity <= 12:
            return ScaleDecision("linear", f"Auto: {said}: linear intensity")
        if 3.5 <= as_amplitude <= 8.0:
            return ScaleDecision("amplitude", f"Auto: {said}: amplitude")
        raise RasterError(f"The values ({said}) could be linear intensity or amplitude; {SCALE_FIX}.")
    raise RasterError(f"The values (median {median:.3g}, 99th percentile {p99:.3g}) fit no SAR scale: uncalibrated "
                      f"digital numbers? Calibrate to sigma0/beta0 (e.g. in SNAP) or {SCALE_FIX}.")


def decide_scale(dataset, band_indexes, requested: str = "auto", *, zero_is_nodata: bool = True,
                 windows: int = 16, window_px: int = 256) -> ScaleDecision:
    """The input scale of ``dataset``'s ``band_indexes`` (see the module docstring)."""
    is_complex = any("complex" in dataset.dtypes[i - 1] for i in band_indexes)
    tags = dataset.tags()
    gain = capella_gain(tags) if is_complex else None
    requested = "auto" if not requested or requested == "auto" else canonical_scale(requested)
    if is_complex:
        if requested not in ("auto", "complex"):
            raise RasterError(f"The raster holds complex values but Input scale is {SCALE_LABELS[requested]}; "
                              "set Input scale (--input-scale) to complex or auto.")
        evidence = "complex data type" if requested == "auto" else "set by the user"
        if gain is not None:
            evidence += f"; Capella scale_factor {math.sqrt(gain):.6g} applied (intensity = |z × scale_factor|²)"
        return ScaleDecision("complex", evidence, gain or 1.0)
    if requested == "complex":
        raise RasterError("Input scale is complex but the raster holds real values (I and Q as separate bands are "
                          "not read); set Input scale (--input-scale) to auto or the values' scale.")
    tagged, source = None, ""
    raw_tag = str(tags.get(SCALE_TAG, "")).strip()
    if raw_tag:
        try:
            tagged, source = canonical_scale(raw_tag), f"the raster's {SCALE_TAG} tag"
        except ValueError:
            raise RasterError(f"The raster's {SCALE_TAG} tag says {raw_tag!r}, no known scale; {SCALE_FIX}.") from None
    elif all(str(dataset.units[i - 1] or "").strip().lower() in _DB_UNITS for i in band_indexes):
        tagged, source = "db", "band units dB"
    chosen = requested if requested != "auto" else tagged
    if chosen is not None:
        values = sample_values(dataset, band_indexes, zero_is_nodata, windows, window_px)
        if chosen in ("sn6", "linear", "amplitude") and values.size and float(np.mean(values < 0)) > 0.01:
            where = "Input scale" if requested != "auto" else source
            raise RasterError(f"{where} says {SCALE_LABELS[chosen]}, but {np.mean(values < 0):.0%} of the sampled "
                              f"values are negative, which that scale never has (dB?); {SCALE_FIX}.")
        return ScaleDecision(chosen, "set by the user" if requested != "auto" else source)
    floating = all(np.dtype(dataset.dtypes[i - 1]).kind == "f" for i in band_indexes)
    return _from_values(sample_values(dataset, band_indexes, zero_is_nodata, windows, window_px), floating)
