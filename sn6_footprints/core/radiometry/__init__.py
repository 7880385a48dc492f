"""Radiometry: what the values of a SAR raster mean and how they become the model's scale.

* :mod:`.scales` - the scales (SN6 SAR-Intensity, dB, linear, amplitude, complex) and every
  conversion between them, with the constants and where they come from;
* :mod:`.detect` - the *Auto* input scale: a decision from the data type, metadata tags and a
  sample of windows, with its evidence, or a refusal that names the parameter to set.
"""
from .scales import SCALE_LABELS, SCALES, canonical_scale, convert, from_linear, to_linear

__all__ = ["SCALES", "SCALE_LABELS", "canonical_scale", "convert", "from_linear", "to_linear"]
from .detect import ScaleDecision, decide_scale  # noqa: E402  (appended to the exports above)

__all__ += ["ScaleDecision", "decide_scale"]
