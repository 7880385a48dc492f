"""Reading a SAR raster the way a model expects it: one plan, then window by window.

* :mod:`.bands` - raster bands to the model's polarisations (descriptions, Band order);
* :mod:`.look` - look directions and the quarter turns that present a scene as trained;
* :mod:`.ground` - pixel sizes on the ground in metres and the model's grid;
* :mod:`.plan` - :func:`plan_input`: everything decided (and logged) before the model runs;
* :mod:`.model_windows` - :class:`ModelWindows`: model-ready windows, resampled on the fly.
"""
from .plan import InputOptions, InputPlan, plan_input

__all__ = ["InputOptions", "InputPlan", "plan_input"]
