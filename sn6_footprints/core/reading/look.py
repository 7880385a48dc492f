"""Look directions: which way the sensor looked on the ground, and the quarter turns that
present a raster to the model the way it was trained.

Layover falls toward the sensor and shadow away from it, so a model trained on north-looking
scenes reads an east-looking one correctly only after the image is turned by 90 degrees. The
direction comes from the *Look direction* parameter, else the raster's ``LOOK_DIRECTION`` tag
(the simulator writes it), else the model's own (said in the log). Turns are counted on the
north-up model grid, counter-clockwise as ``numpy.rot90``: a north-looking image turned once
looks west.
"""
from __future__ import annotations

from ..raster_windows import LOOK_DIRECTION_TAG, RasterError

LOOK_DIRECTIONS = ("north", "west", "south", "east")   # counter-clockwise, a quarter turn apart
LOOK_FIX = "set Look direction (--look-direction) to north, south, east or west"


def look_from_tags(tags: dict) -> str | None:
    value = str(tags.get(LOOK_DIRECTION_TAG, "")).strip().lower()
    return value if value in LOOK_DIRECTIONS else None


def resolve_look(requested: str, tags: dict, model_look: str) -> tuple[str, str]:
    """(the raster's ground look direction, where it came from)."""
    requested = (requested or "auto").strip().lower()
    if requested != "auto":
        if requested not in LOOK_DIRECTIONS:
            raise RasterError(f"Look direction {requested!r} is not one of auto, north, south, east, west.")
        return requested, "set by Look direction"
    tagged = look_from_tags(tags)
    if tagged is not None:
        return tagged, f"the raster's {LOOK_DIRECTION_TAG} tag"
    raw = str(tags.get(LOOK_DIRECTION_TAG, "")).strip()
    if raw:
        raise RasterError(f"The raster's {LOOK_DIRECTION_TAG} tag says {raw!r}, not a direction; {LOOK_FIX}.")
    return model_look, ("no look direction in the raster's metadata: assumed the model's "
                        f"({model_look}); if the sensor looked otherwise, {LOOK_FIX}")


def quarter_turns(raster_look: str, model_look: str) -> int:
    """Counter-clockwise quarter turns that make ``raster_look`` the model's look direction."""
    return (LOOK_DIRECTIONS.index(model_look) - LOOK_DIRECTIONS.index(raster_look)) % 4
