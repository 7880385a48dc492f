"""Ground geometry of a raster: pixel sizes in metres, orientation, and the model's grid.

Pixel sizes are measured on the ground: the scene centre and its neighbouring pixel centres
are transformed to the local UTM zone, so a geographic CRS, Web Mercator (0.5 "m" map pixels
are about 0.31 m at Rotterdam), feet and rotated geotransforms all give metres.

The *model grid* is what the model sees: the raster's own grid when it is north-up and its
pixels are within :data:`SAME_PIXEL_TOLERANCE` of the model's size, else a north-up grid in
the raster's CRS at the model's pixel size over the raster's extent, into which windows are
resampled on the fly (:mod:`.model_windows`). Polygons are made on that grid and placed with
its transform, so they land in the raster's CRS either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as transform_points

from ..raster_windows import RasterError

SAME_PIXEL_TOLERANCE = 0.02   # 2 %: a raster this close to the model's pixel size is used as it is
AXIS_ALIGNED = 1e-9           # |rotation terms| / |scale terms| below this: an axis-aligned grid


@dataclass(frozen=True)
class GroundPixel:
    """One raster pixel on the ground: metres along a row (x) and down a column (y)."""

    x_m: float
    y_m: float
    area_m2: float   # not x_m * y_m where the grid is sheared

    @property
    def size_m(self) -> float:
        """The side of a square pixel of the same ground area."""
        return math.sqrt(self.area_m2)


def _utm_for(crs: CRS, x: float, y: float) -> CRS:
    lon, lat = transform_points(crs, "EPSG:4326", [x], [y])
    lon, lat = lon[0], lat[0]
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise RasterError("The raster's centre has no place on the Earth in its CRS; check the CRS (Raster ▸ "
                          "Projections ▸ Assign Projection).")
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def ground_distances(crs_wkt: str, origin, steps) -> list[float]:
    """Ground metres from ``origin`` to ``origin + step`` for each step (map units), measured
    in the local UTM zone; the CRS's linear unit where it has no geographic meaning."""
    return [math.hypot(*v) for v in ground_vectors(crs_wkt, origin, steps)]


def ground_vectors(crs_wkt: str, origin, steps) -> list[tuple[float, float]]:
    """Each step (map units) from ``origin`` as an (east, north) vector in ground metres."""
    crs = CRS.from_wkt(crs_wkt)
    x0, y0 = origin
    try:
        utm = _utm_for(crs, x0, y0)
        xs = [x0] + [x0 + dx for dx, _ in steps]
        ys = [y0] + [y0 + dy for _, dy in steps]
        ux, uy = transform_points(crs, utm, xs, ys)
    except (CRSError, ValueError) as exc:  # an engineering/local CRS: its own units
        factor = _linear_factor(crs)
        if factor is None:
            raise RasterError(f"The raster's CRS cannot be measured in metres ({exc}); assign a projected or "
                              "geographic CRS (Raster ▸ Projections ▸ Assign Projection).") from None
        return [(dx * factor, dy * factor) for dx, dy in steps]
    return [(ux[i] - ux[0], uy[i] - uy[0]) for i in range(1, len(xs))]


def _linear_factor(crs: CRS) -> float | None:
    try:
        name, factor = crs.linear_units_factor
    except (CRSError, AttributeError):
        return None
    return float(factor) if factor else None


def scene_centre(transform: Affine, width: int, height: int) -> tuple[float, float]:
    return transform * (width / 2, height / 2)


def ground_pixel(transform: Affine, width: int, height: int, crs_wkt: str) -> GroundPixel:
    """The ground size of a pixel at the scene centre."""
    t = transform
    (ax, ay), (bx, by) = ground_vectors(crs_wkt, scene_centre(t, width, height), [(t.a, t.d), (t.b, t.e)])
    return GroundPixel(math.hypot(ax, ay), math.hypot(bx, by), abs(ax * by - ay * bx))


MAX_READ_AS_IS_ROTATION_DEG = 15.0


def is_north_up(transform: Affine) -> bool:
    """Columns run east and rows south, rotated or sheared by at most
    :data:`MAX_READ_AS_IS_ROTATION_DEG` (a look direction a few degrees off is still the same
    one; warping would only blur), so the raster is read as it is and placed by its transform."""
    t = transform
    if not (t.a > 0 and t.e < 0):
        return False
    column_angle = abs(math.degrees(math.atan2(t.d, t.a)))
    row_angle = abs(math.degrees(math.atan2(t.b, -t.e)))
    return max(column_angle, row_angle) <= MAX_READ_AS_IS_ROTATION_DEG


def describe_orientation(transform: Affine) -> str:
    t = transform
    if is_north_up(t) and not is_axis_aligned(t):
        return f"north-up within {MAX_READ_AS_IS_ROTATION_DEG:g}° (rotated or sheared a little)"
    if is_axis_aligned(t):
        if t.a > 0 and t.e < 0:
            return "north-up"
        if t.a > 0:
            return "south-up (positive pixel height)"
        return "east-west mirrored" if t.e < 0 else "rotated 180°"
    angle = math.degrees(math.atan2(t.d, t.a))
    return f"rotated by {angle:.1f}°"


@dataclass(frozen=True)
class ModelGrid:
    """The pixel grid the model runs on, with what vectorising needs (areas, tolerances in metres)."""

    width: int
    height: int
    transform: Affine
    crs_wkt: str
    pixel_size_m: float          # side of a square ground pixel of the same area
    is_raster_grid: bool         # True: the raster's own grid, read as it is

    @property
    def pixel_area_m2(self) -> float:
        return self.pixel_size_m ** 2


def raster_corners(transform: Affine, width: int, height: int) -> list[tuple[float, float]]:
    return [transform * (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))]


def is_axis_aligned(transform: Affine) -> bool:
    t = transform
    scale = max(abs(t.a), abs(t.e))
    return abs(t.b) <= AXIS_ALIGNED * scale and abs(t.d) <= AXIS_ALIGNED * scale


def resampled_grid(transform: Affine, width: int, height: int, crs_wkt: str, pixel_size_m: float,
                   keep_pixel_size: bool = False) -> ModelGrid:
    """A north-up grid over the raster's extent whose pixels are ``pixel_size_m`` on the ground
    (``keep_pixel_size``: the raster's own map pixel size, for an axis-aligned raster that is
    only re-oriented, so every pixel keeps its place and value exactly)."""
    xs, ys = zip(*raster_corners(transform, width, height))
    left, right, bottom, top = min(xs), max(xs), min(ys), max(ys)
    if keep_pixel_size and is_axis_aligned(transform):
        dx, dy = abs(transform.a), abs(transform.e)
    else:
        centre = ((left + right) / 2, (bottom + top) / 2)
        unit = max(right - left, top - bottom) * 1e-2 or 1.0
        metres_x, metres_y = ground_distances(crs_wkt, centre, [(unit, 0.0), (0.0, unit)])
        dx, dy = pixel_size_m * unit / metres_x, pixel_size_m * unit / metres_y
    # a grid within a thousandth of a pixel of the extent is the extent (PROJ round trips)
    grid_width = max(1, math.ceil((right - left) / dx - 1e-3))
    grid_height = max(1, math.ceil((top - bottom) / dy - 1e-3))
    return ModelGrid(grid_width, grid_height, Affine(dx, 0.0, left, 0.0, -dy, top), crs_wkt, pixel_size_m, False)
