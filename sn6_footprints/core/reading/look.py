"""Look directions: which way the sensor looked on the ground, and the quarter turns that
present a raster to the model the way it was trained.

Layover falls toward the sensor and shadow away from it, so a model trained on north-looking
scenes reads an east-looking one correctly only after the image is turned by 90 degrees. The
direction comes from the *Look direction* parameter, else the raster's ``LOOK_DIRECTION`` tag
(the simulator writes it), else the product's own metadata (orbit pass and look side, below),
else the model's own (said in the log). Turns are counted on the
north-up model grid, counter-clockwise as ``numpy.rot90``: a north-looking image turned once
looks west.
"""
from __future__ import annotations

import json
import re

from ..raster_windows import LOOK_DIRECTION_TAG, RasterError

LOOK_DIRECTIONS = ("north", "west", "south", "east")   # counter-clockwise, a quarter turn apart
LOOK_FIX = "set Look direction (--look-direction) to north, south, east or west"


def look_from_tags(tags: dict) -> str | None:
    value = str(tags.get(LOOK_DIRECTION_TAG, "")).strip().lower()
    return value if value in LOOK_DIRECTIONS else None


# Product metadata that gives the pass and the side the antenna looks to: GDAL tags (ICEYE's
# ORBIT_DIRECTION / LOOK_SIDE style) or keys of the JSON a product writes into
# TIFFTAG_IMAGEDESCRIPTION (Capella's collect.radar.pointing; STAC's sat:orbit_state and
# sar:observation_direction), matched by the key's last part, case-insensitive.
PASS_KEYS = re.compile(r"(orbit_?state|orbit_?direction|pass_?direction|flight_?direction|orbit_?pass)$", re.I)
SIDE_KEYS = re.compile(r"(observation_?direction|look_?side|antenna_?pointing|pointing|side_?looking)$", re.I)
PASS_VALUES = {"ascending": "ascending", "asc": "ascending", "a": "ascending",
               "descending": "descending", "desc": "descending", "d": "descending"}
SIDE_VALUES = {"right": "right", "r": "right", "left": "left", "l": "left"}
# A near-polar orbit flies north when ascending: looking right it looks east on the ground.
POLAR_LOOK = {("ascending", "right"): "east", ("ascending", "left"): "west",
              ("descending", "right"): "west", ("descending", "left"): "east"}


def _metadata_items(tags: dict):
    """(key path, value) of every tag and of every leaf of a JSON image description."""
    for key, value in tags.items():
        yield key, value
        text = str(value).strip()
        if text.startswith("{"):
            try:
                document = json.loads(text)
            except ValueError:
                continue
            stack = [(key, document)]
            while stack:
                path, node = stack.pop()
                if isinstance(node, dict):
                    stack.extend((f"{path}.{k}", v) for k, v in node.items())
                else:
                    yield path, node


def _found(tags: dict, keys: re.Pattern, values: dict) -> tuple[str, str] | None:
    """(normalised value, key path) of the one value the metadata gives; refused if it gives two."""
    seen = {}
    for path, value in _metadata_items(tags):
        name = path.rsplit(".", 1)[-1].split(":")[-1]
        normalised = values.get(str(value).strip().lower()) if isinstance(value, str) else None
        if normalised and keys.search(name):
            seen.setdefault(normalised, path)
    if len(seen) > 1:
        raise RasterError("The raster's metadata contradicts itself (" + ", ".join(
            f"{path} = {value}" for value, path in seen.items()) + f"); {LOOK_FIX}.")
    return next(iter(seen.items()), None)


def look_from_product_metadata(tags: dict) -> tuple[str, str] | None:
    """(ground look direction, evidence) from the product's pass and look side, where it gives both."""
    orbit, side = _found(tags, PASS_KEYS, PASS_VALUES), _found(tags, SIDE_KEYS, SIDE_VALUES)
    if orbit is None or side is None:
        return None
    look = POLAR_LOOK[orbit[0], side[0]]
    return look, (f"the product's metadata: {orbit[0]} pass ({orbit[1]}), looking {side[0]} ({side[1]}); a "
                  f"near-polar orbit then looks {look}")


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
    from_product = look_from_product_metadata(tags)
    if from_product is not None:
        return from_product
    return model_look, ("no look direction in the raster's metadata: assumed the model's "
                        f"({model_look}); if the sensor looked otherwise, {LOOK_FIX}")


def quarter_turns(raster_look: str, model_look: str) -> int:
    """Counter-clockwise quarter turns that make ``raster_look`` the model's look direction."""
    return (LOOK_DIRECTIONS.index(model_look) - LOOK_DIRECTIONS.index(raster_look)) % 4
