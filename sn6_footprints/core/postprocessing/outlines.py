"""Regular outlines: footprints with straight walls and right-angled corners, for map-ready output.

A traced footprint follows the pixel staircase and the speckle of the probability map; a
building drawn by hand has a few walls along two perpendicular directions. This turns the
one into the other: find the footprint's dominant direction (the length-weighted circular
mean of its edge directions, modulo 90°), turn it upright, simplify it, snap every run of
near-horizontal edges to one horizontal wall and every run of near-vertical edges to one
vertical wall, and turn it back. An outline that cannot be snapped (too few walls, a
self-crossing result) becomes its upright bounding rectangle; one that would stray from the
traced footprint (IoU below ``min_iou``) is kept as traced, so regularising never loses a
building or moves it.

Why not the ``buildingregulariser`` package (PyPI, MIT): every release requires numpy >= 2
and geopandas, and the QGIS 3.22 GDAL bindings this plugin lives beside need numpy < 2
(README, "Regular outlines", has the comparison that was measured).
"""
from __future__ import annotations

import math

import numpy as np
import shapely
from shapely import affinity

# The snapped outline must overlap the traced one this much, or the traced one is kept.
MIN_IOU = 0.7
# Walls shorter than this after simplification are noise, not a wall (metres on the ground).
REGULAR_TOLERANCE_M = 1.0


def dominant_angle(polygon: shapely.Polygon) -> float:
    """The footprint's main wall direction in degrees, in [-45, 45): the length-weighted circular
    mean of its exterior edges' directions taken modulo 90° (so walls at θ and θ + 90° agree)."""
    coords = np.asarray(polygon.exterior.coords)
    dx, dy = np.diff(coords[:, 0]), np.diff(coords[:, 1])
    lengths = np.hypot(dx, dy)
    angles = np.arctan2(dy, dx)
    sin, cos = float((lengths * np.sin(4 * angles)).sum()), float((lengths * np.cos(4 * angles)).sum())
    if abs(sin) < 1e-12 and abs(cos) < 1e-12:
        return 0.0
    return math.degrees(math.atan2(sin, cos) / 4)


def _snapped_ring(coords: np.ndarray) -> np.ndarray | None:
    """An upright ring's vertices (n, 2), open) snapped to horizontal and vertical walls, or None
    when fewer than four walls remain. Each maximal run of edges with the same class becomes one
    wall at the length-weighted mean position of its edges; a corner joins consecutive walls."""
    edges = np.roll(coords, -1, axis=0) - coords
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 1e-9
    coords, edges, lengths = coords[keep], edges[keep], lengths[keep]
    if len(coords) < 4:
        return None
    horizontal = np.abs(edges[:, 0]) >= np.abs(edges[:, 1])
    changes = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(changes) < 4:           # all edges one class, or only two walls
        return None
    walls = []                      # (is horizontal, position)
    midpoints = coords + edges / 2
    for start, stop in zip(changes, np.roll(changes, -1)):
        run = np.arange(start, stop if stop > start else stop + len(coords)) % len(coords)
        axis = 1 if horizontal[start] else 0
        walls.append((bool(horizontal[start]), float(np.average(midpoints[run, axis], weights=lengths[run]))))
    corners = []
    for (is_h, position), (_, next_position) in zip(walls, walls[1:] + walls[:1]):
        corners.append((next_position, position) if is_h else (position, next_position))
    return np.asarray(corners)


def regular_outline(polygon: shapely.Polygon, tolerance: float, min_iou: float = MIN_IOU,
                    frame: tuple[float, float, float, float] | None = None) -> shapely.Polygon:
    """``polygon`` with orthogonal walls along its dominant direction (see the module's doc);
    ``tolerance`` is the simplification before snapping. ``frame`` (a, b, d, e): the linear map
    from the polygon's coordinates to ground metres (x' = a x + b y, y' = d x + e y), so walls
    are square on the ground even for skewed pixels or a geographic CRS, and ``tolerance`` is in
    metres; None: the polygon's own units are square. Holes are snapped the same way and
    dropped when they cannot be. Returns the input where the result would overlap it less than
    ``min_iou``."""
    if polygon.is_empty or polygon.geom_type != "Polygon" or polygon.area <= 0:
        return polygon
    if frame is not None:
        a, b, d, e = frame
        det = a * e - b * d
        if abs(det) < 1e-18:
            return polygon
        ground = regular_outline(affinity.affine_transform(polygon, [a, b, d, e, 0.0, 0.0]), tolerance, min_iou)
        return affinity.affine_transform(ground, [e / det, -b / det, -d / det, a / det, 0.0, 0.0])
    angle = dominant_angle(polygon.simplify(tolerance, preserve_topology=True))
    origin = polygon.centroid
    upright = affinity.rotate(polygon, -angle, origin=origin)
    simple = upright.simplify(tolerance, preserve_topology=True)
    snapped = _regular_upright(simple)
    if snapped is None:
        snapped = shapely.box(*upright.bounds)
    result = affinity.rotate(snapped, angle, origin=origin)
    union = result.union(polygon).area
    if union <= 0 or result.intersection(polygon).area / union < min_iou:
        return polygon
    return result


def _regular_upright(polygon: shapely.Polygon) -> shapely.Polygon | None:
    shell = _snapped_ring(np.asarray(polygon.exterior.coords)[:-1])
    if shell is None:
        return None
    holes = [ring for interior in polygon.interiors
             if (ring := _snapped_ring(np.asarray(interior.coords)[:-1])) is not None]
    candidate = shapely.Polygon(shell, holes)
    if not candidate.is_valid:
        candidate = shapely.Polygon(shell)
        if not candidate.is_valid:
            return None
    candidate = shapely.normalize(candidate.simplify(0.0))
    return candidate if candidate.geom_type == "Polygon" and candidate.area > 0 else None


def right_angle_share(polygons, tolerance_deg: float = 10.0) -> float:
    """Share of the exterior corners of ``polygons`` within ``tolerance_deg`` of 90° or 270°:
    how map-like the outlines are (1.0 for rectangles, lower for traced staircases)."""
    right = total = 0
    for polygon in polygons:
        coords = np.asarray(shapely.normalize(polygon.simplify(0.0)).exterior.coords)[:-1]
        if len(coords) < 3:
            continue
        before = coords - np.roll(coords, 1, axis=0)
        after = np.roll(coords, -1, axis=0) - coords
        turn = np.degrees(np.arctan2(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0],
                                     (before * after).sum(axis=1)))
        right += int((np.abs(np.abs(turn) - 90.0) <= tolerance_deg).sum())
        total += len(coords)
    return right / total if total else 0.0


def vertices_per_building(polygons) -> float:
    """Mean count of exterior corners: vertices where the outline turns (collinear and repeated
    vertices and the closing one not counted), so outlines from any tool compare fairly."""
    counts = [len(p.simplify(0.0).exterior.coords) - 1 for p in polygons if not p.is_empty]
    return float(np.mean(counts)) if counts else 0.0
