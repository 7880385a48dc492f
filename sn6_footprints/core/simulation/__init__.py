"""Simulated SpaceNet 6-like SAR scenes with true building footprints.

``simulate_scene`` writes a 4-band GeoTIFF (HH, HV, VH, VV) and its footprints, on any scale
of :data:`..radiometry.scales.SCALES`, any pixel size, four look directions (``LOOK_DIRECTIONS``)
and north-up or south-up storage (``STORAGES``); the modules:

* (the scales: :mod:`..radiometry.scales`, the one mapping, reused by display code);
* :mod:`.layout` - the deterministic world (streets, land cover, buildings, trees, clutter);
* :mod:`.render` - side-looking geometry and radiometry of one window (layover, shadow,
  double bounce, speckle);
* :mod:`.scene`  - blocks, nodata strip, labels and writing.
"""
from ..radiometry.scales import (BANDS, SN6_DB_GAIN, SN6_DB_OFFSET, SN6_MAX, SN6_NODATA, db_from_linear, db_from_sn6,
                    linear_from_db, sn6_from_db)
from .render import LOOK_DIRECTIONS
from .scene import DEFAULT_ORIGIN, STORAGES, SceneInfo, SceneParameters, SceneSimulator, simulate_scene

__all__ = ["BANDS", "SN6_DB_GAIN", "SN6_DB_OFFSET", "SN6_MAX", "SN6_NODATA", "db_from_linear", "db_from_sn6",
           "linear_from_db", "sn6_from_db", "LOOK_DIRECTIONS", "STORAGES", "DEFAULT_ORIGIN", "SceneInfo",
           "SceneParameters", "SceneSimulator", "simulate_scene"]
