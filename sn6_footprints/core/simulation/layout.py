"""The simulated world: streets, land cover, buildings, trees and clutter, in map metres.

The world is cut into square cells of ``CELL_M`` metres anchored at the scene origin; streets
run along the cell borders (each cell owns half of each street around it) and every object
belongs to exactly one cell, generated from ``(seed, row, col)`` alone. So any window of a
scene of any size can be rendered on its own: it asks for the cells under it (plus a margin
for layover and shadow) and gets the same objects every time, in any order.

Cells are grouped into 2 x 2 "districts" that share a land use most of the time, so a scene
has neighbourhoods (harbour basins, terraced streets, estates, industry) rather than noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import shapely

CELL_M = 96.0
MAX_OBJECT_HEIGHT_M = 45.0   # tallest thing anywhere (buildings 40 m, ships and cranes a bit more)
MIN_BUILDING_SIDE_M = 6.0    # every building is at least 6 x 6 m, so above the 20 m² label cut

# Part kinds: how a part's height field and surfaces behave.
FLAT, GABLED, TREE, METAL = 0, 1, 2, 3
# Object kinds.
OBJ_BUILDING, OBJ_TREE, OBJ_CLUTTER = 0, 1, 2
# Ground classes (and the extra diagnostic classes the renderer reports).
WATER, ASPHALT, PAVEMENT, SOIL, GRASS, SHRUB = range(6)
BUILDING, CANOPY, CLUTTER = 6, 7, 8
CLASS_NAMES = ("water", "asphalt", "pavement", "soil", "grass", "shrub", "building", "canopy", "clutter")

LANDUSES = ("water", "park", "terraced", "courtyard", "detached", "industrial", "towers", "port", "dense")
_MIXED_WEIGHTS = {"water": 0.09, "park": 0.09, "terraced": 0.12, "courtyard": 0.14, "detached": 0.21,
                  "industrial": 0.13, "towers": 0.06, "port": 0.07, "dense": 0.08}
_DENSE_WEIGHTS = {"water": 0.04, "park": 0.04, "towers": 0.07, "dense": 0.85}
LAYOUTS = ("mixed", "dense")

# One part per row: centre x, y (m), half length along ``angle``, half width, angle (rad,
# counter-clockwise from east), eave (wall) height, ridge height, part kind, object index.
PART_COLUMNS = ("cx", "cy", "hl", "hw", "angle", "eave", "ridge", "kind", "obj")
# Ground patches: centre x, y, half length, half width, angle, ground class.
PATCH_COLUMNS = ("cx", "cy", "hl", "hw", "angle", "cls")
# Point scatterers: x, y, height (m), HH intensity (linear, per pixel at 0.5 m), cross-pol fraction.
POINT_COLUMNS = ("x", "y", "z", "power", "xpol")
_OFF = 1 << 31


@dataclass
class Building:
    """One labelled building: the union of its parts is its footprint."""

    parts: list            # indices into the cell's part table
    height_m: float
    roof: str              # "flat" | "gabled"
    shape: str             # "rectangle" | "L" | "courtyard" | "row house" | "block segment"


@dataclass
class Cell:
    """Everything one cell owns. Arrays follow the *_COLUMNS layouts above."""

    row: int
    col: int
    bounds: tuple          # xmin, ymin, xmax, ymax (m)
    landuse: str
    base_class: int        # ground class of the whole cell before streets and patches
    plot: tuple | None     # the part inside the streets (None for water)
    parts: np.ndarray
    objects: np.ndarray    # per object: kind, surface gain, facade gain, dihedral gain (linear), key
    patches: np.ndarray
    points: np.ndarray
    buildings: list = field(default_factory=list)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-mixed integer hash for arrays (uint64 wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash01(seed: int, a, b, salt: int) -> np.ndarray:
    """Uniform [0, 1) numbers from integer coordinates, identical wherever they are asked for."""
    a = np.asarray(a, dtype=np.int64).astype(np.uint64)
    b = np.asarray(b, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15) + a * np.uint64(0xC2B2AE3D27D4EB4F)
             + b * np.uint64(0x165667B19E3779F9) + np.uint64(salt) * np.uint64(0x27D4EB2F165667C5))
        x = _mix64(_mix64(x))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def value_noise(seed: int, salt: int, x: np.ndarray, y: np.ndarray, spacing: float) -> np.ndarray:
    """Smooth noise in [0, 1] on the grid x (columns, ascending) by y (rows): hashed lattice values
    every ``spacing`` metres, smoothstep-interpolated. Separable, so two small matrix products."""
    def weights(coord):
        t = coord / spacing
        i0 = np.floor(t).astype(np.int64)
        f = t - i0
        f = f * f * (3 - 2 * f)
        lo, hi = int(i0.min()), int(i0.max()) + 1
        w = np.zeros((coord.size, hi - lo + 1), dtype=np.float32)
        idx = np.arange(coord.size)
        w[idx, i0 - lo] = 1 - f
        w[idx, i0 - lo + 1] = f
        return w, lo, hi

    wx, x_lo, x_hi = weights(np.asarray(x, dtype=np.float64))
    wy, y_lo, y_hi = weights(np.asarray(y, dtype=np.float64))
    gy, gx = np.meshgrid(np.arange(y_lo, y_hi + 1), np.arange(x_lo, x_hi + 1), indexing="ij")
    lattice = hash01(seed, gy, gx, salt).astype(np.float32)
    return wy @ lattice @ wx.T


class _CellBuilder:
    """Collects one cell's objects while a layout function places them."""

    def __init__(self, rng: np.random.Generator, keep_probability: float):
        self.rng = rng
        self.keep = keep_probability
        self.parts: list[tuple] = []
        self.objects: list[tuple] = []
        self.patches: list[tuple] = []
        self.points: list[tuple] = []
        self.buildings: list[Building] = []
        self.footprints: list = []   # shapely polygons of buildings and clutter, for spacing checks

    # --- objects -------------------------------------------------------------------------
    def _object(self, kind: int, gain: float, facade: float, db: float, parts: list[tuple]) -> list[int]:
        obj = len(self.objects)
        key = float(self.rng.integers(0, 1 << 30))   # a stable id for hashing (window-independent)
        self.objects.append((kind, gain, facade, db, key))
        first = len(self.parts)
        for p in parts:
            self.parts.append(tuple(p[:8]) + (obj,))
        return list(range(first, len(self.parts)))

    def building(self, parts: list[tuple], shape: str, check: bool = True, gap: float = 0.0) -> bool:
        """Add a building made of rectangle parts (cx, cy, hl, hw, angle, eave, ridge, kind).
        Dropped (False) when thinned out by the density or when it comes closer than ``gap``
        to something already placed."""
        if self.rng.random() >= self.keep:
            return False
        polys = [rect_polygon(*p[:5]) for p in parts]
        poly = shapely.union_all(polys) if len(polys) > 1 else polys[0]
        if check and not self.is_free(poly, gap):
            return False
        r = self.rng
        height = max(max(p[5], p[6]) for p in parts)
        roof = "gabled" if any(p[7] == GABLED for p in parts) else "flat"
        gain = float(10 ** (r.normal(0.0, 1.5) / 10))
        indices = self._object(OBJ_BUILDING, gain, float(10 ** (r.normal(0.0, 1.5) / 10)),
                               float(10 ** (r.normal(0.0, 2.0) / 10)), parts)
        self.buildings.append(Building(indices, float(height), roof, shape))
        self.footprints.append(poly)
        for cx, cy, hl, hw, a, eave, _ridge, kind in (p[:8] for p in parts):   # roof clutter: vents, AC units
            if kind == FLAT:
                for _ in range(r.poisson(4 * hl * hw / 200.0)):
                    u, v = r.uniform(-hl, hl), r.uniform(-hw, hw)
                    self.point(cx + u * math.cos(a) - v * math.sin(a), cy + u * math.sin(a) + v * math.cos(a),
                               eave + 1.0, 10 ** r.uniform(0.2, 1.1), 0.1)
        return True

    def clutter(self, cx, cy, hl, hw, angle, height, gain_db=0.0, check=True, gap=0.5) -> bool:
        """Metal things that are not buildings: containers, trucks, ships."""
        poly = rect_polygon(cx, cy, hl, hw, angle)
        if check and not self.is_free(poly, gap):
            return False
        g = float(10 ** (gain_db / 10))
        self._object(OBJ_CLUTTER, g, g, g, [(cx, cy, hl, hw, angle, height, height, METAL)])
        self.footprints.append(poly)
        return True

    def tree(self, x, y, radius, height):
        """A crown: an ellipsoid cap from about a third of the height up to ``height``."""
        gain = float(10 ** (self.rng.normal(0.0, 1.0) / 10))
        self._object(OBJ_TREE, gain, 0.0, 0.0, [(x, y, radius, radius, 0.0, 0.35 * height, height, TREE)])

    def patch(self, cx, cy, hl, hw, angle, cls):
        self.patches.append((cx, cy, hl, hw, angle, cls))

    def point(self, x, y, z, power, xpol=0.05):
        self.points.append((x, y, z, power, xpol))

    # --- spacing -------------------------------------------------------------------------
    def is_free(self, poly, gap: float) -> bool:
        probe = poly.buffer(gap - 1e-6, join_style="mitre") if gap > 0 else poly.buffer(-1e-6)
        return not any(probe.intersects(other) for other in self.footprints)

    def free_point(self, x, y, clearance) -> bool:
        pt = shapely.Point(x, y)
        return all(other.distance(pt) > clearance for other in self.footprints)


def rect_polygon(cx, cy, hl, hw, angle):
    c, s = math.cos(angle), math.sin(angle)
    corners = [(sx * hl, sy * hw) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return shapely.Polygon([(cx + u * c - v * s, cy + u * s + v * c) for u, v in corners])


class Frame:
    """A rotated local frame: (u, v) in metres around a centre, u along ``phi``."""

    def __init__(self, cx, cy, phi):
        self.cx, self.cy, self.phi = cx, cy, phi
        self.c, self.s = math.cos(phi), math.sin(phi)

    def world(self, u, v):
        return self.cx + u * self.c - v * self.s, self.cy + u * self.s + v * self.c

    def rect(self, u, v, hl, hw, eave, ridge, kind, local_angle=0.0):
        x, y = self.world(u, v)
        return (x, y, hl, hw, self.phi + local_angle, eave, ridge, kind)


def _inside(parts, plot, tol=0.01) -> bool:
    x0, y0, x1, y1 = plot
    for cx, cy, hl, hw, a, *_ in parts:
        c, s = math.cos(a), math.sin(a)
        ex, ey = abs(hl * c) + abs(hw * s), abs(hl * s) + abs(hw * c)
        if cx - ex < x0 - tol or cx + ex > x1 + tol or cy - ey < y0 - tol or cy + ey > y1 + tol:
            return False
    return True


def _roof(rng, p_gabled, eave, pitch=(25, 45), half_width=5.0):
    """(ridge height, kind): gabled roofs rise over the half width at a random pitch."""
    if rng.random() < p_gabled:
        rise = half_width * math.tan(math.radians(rng.uniform(*pitch)))
        return eave + min(rise, 8.0), GABLED
    return eave, FLAT


# --- layouts: each fills the plot (x0, y0, x1, y1) of one cell --------------------------------
def _trees_in(cb: _CellBuilder, region, count, height=(7, 18), radius=(2.0, 5.0), clearance=1.5):
    x0, y0, x1, y1 = region
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    r = cb.rng
    for _ in range(int(count)):
        x, y = r.uniform(x0, x1), r.uniform(y0, y1)
        rad = r.uniform(*radius)
        if cb.free_point(x, y, rad * 0.6 + clearance):
            cb.tree(x, y, rad, r.uniform(*height))


def layout_terraced(cb: _CellBuilder, plot):
    """Terraces of gabled houses (1-3 touching houses each) along all four streets, gardens behind."""
    r = cb.rng
    x0, y0, x1, y1 = plot
    depth, setback = r.uniform(8, 12), r.uniform(0, 3)
    base = r.uniform(5.5, 9.0)
    p_gabled = 0.85
    pitch = r.uniform(30, 45)

    def row(a, b, fixed, vertical, sign):
        # Terraces of one to three houses (detached and semi-detached most often) with passages
        # between them: some buildings touch, most rows are not one unbroken wall.
        t, left_in_terrace, terrace_base = a, 0, base
        while b - t >= MIN_BUILDING_SIDE_M:
            if left_in_terrace == 0:
                if t > a:
                    t += r.uniform(2.5, 5.0)
                    if b - t < MIN_BUILDING_SIDE_M:
                        break
                left_in_terrace = int(r.choice([1, 1, 2, 2, 3]))
                terrace_base = base + r.normal(0, 1.2)
            left_in_terrace -= 1
            w = r.uniform(6.0, 9.5)
            if b - t - w < MIN_BUILDING_SIDE_M:
                w = b - t
            centre_t = t + w / 2
            centre_n = fixed + sign * (setback + depth / 2)
            eave = float(np.clip(terrace_base + r.normal(0, 0.8), 3.0, 40.0))
            ridge, kind = _roof(r, p_gabled, eave, (pitch - 3, pitch + 3), depth / 2)
            if vertical:   # row along a west/east street: houses along y, ridge along y
                part = (centre_n, centre_t, w / 2, depth / 2, math.pi / 2, eave, ridge, kind)
            else:
                part = (centre_t, centre_n, w / 2, depth / 2, 0.0, eave, ridge, kind)
            if r.random() > 0.06:
                cb.building([part], "row house", check=False)
            t += w

    row(x0, x1, y0, False, +1)
    row(x0, x1, y1, False, -1)
    inner = setback + depth
    row(y0 + inner, y1 - inner, x0, True, +1)
    row(y0 + inner, y1 - inner, x1, True, -1)
    garden = (x0 + inner + 1, y0 + inner + 1, x1 - inner - 1, y1 - inner - 1)
    _garden(cb, garden, trees=r.integers(3, 10))


def _garden(cb, region, trees):
    r = cb.rng
    x0, y0, x1, y1 = region
    if x1 - x0 < 3 or y1 - y0 < 3:
        return
    for _ in range(r.integers(1, 4)):   # shrubs and paving in gardens
        cls = SHRUB if r.random() < 0.6 else PAVEMENT
        cb.patch(r.uniform(x0, x1), r.uniform(y0, y1), r.uniform(2, 6), r.uniform(1.5, 4),
                 r.uniform(0, math.pi), cls)
    _trees_in(cb, region, trees, height=(6, 16), radius=(2.0, 4.5), clearance=1.0)


def layout_courtyard(cb: _CellBuilder, plot):
    """Perimeter blocks around courtyards, one building or a ring of touching segments."""
    r = cb.rng
    x0, y0, x1, y1 = plot
    nx, ny = max(1, math.ceil((x1 - x0) / 60.0)), max(1, math.ceil((y1 - y0) / 60.0))
    passage = 0.0 if r.random() < 0.5 else r.uniform(3, 8)
    w = ((x1 - x0) - passage * (nx - 1)) / nx
    h = ((y1 - y0) - passage * (ny - 1)) / ny
    for ix in range(nx):
        for iy in range(ny):
            bx0, by0 = x0 + ix * (w + passage), y0 + iy * (h + passage)
            _courtyard_block(cb, (bx0, by0, bx0 + w, by0 + h))


def _courtyard_block(cb, box):
    r = cb.rng
    x0, y0, x1, y1 = box
    W, H = x1 - x0, y1 - y0
    d = r.uniform(10, 15)
    height = r.uniform(10, 24)
    p_gabled = 0.2
    if W - 2 * d < 8 or H - 2 * d < 8:   # too small for a yard: one solid block
        ridge, kind = _roof(r, p_gabled, height, half_width=min(W, H) / 2)
        cb.building([((x0 + x1) / 2, (y0 + y1) / 2, W / 2, H / 2, 0.0, height, ridge, kind)], "rectangle", check=False)
        return
    sides = [  # south and north take the corners
        ((x0 + x1) / 2, y0 + d / 2, W / 2, d / 2, 0.0), ((x0 + x1) / 2, y1 - d / 2, W / 2, d / 2, 0.0),
        (x0 + d / 2, (y0 + y1) / 2, H / 2 - d, d / 2, math.pi / 2),
        (x1 - d / 2, (y0 + y1) / 2, H / 2 - d, d / 2, math.pi / 2)]
    if r.random() < 0.7:   # one courtyard building (a polygon with a hole)
        parts = []
        for cx, cy, hl, hw, a in sides:
            eave = height + (r.choice([0.0, 3.0, 6.0]) if r.random() < 0.3 else 0.0)
            ridge, kind = _roof(r, p_gabled, eave, half_width=hw)
            parts.append((cx, cy, hl, hw, a, eave, ridge, kind))
        cb.building(parts, "courtyard", check=False)
    else:                  # touching segments, each its own building and height
        for cx, cy, hl, hw, a in sides:
            length, t = 2 * hl, 0.0
            c, s = math.cos(a), math.sin(a)
            while length - t >= MIN_BUILDING_SIDE_M:
                seg = r.uniform(12, 35)
                if length - t - seg < 12:
                    seg = length - t
                mid = -hl + t + seg / 2
                eave = float(np.clip(height + r.normal(0, 3), 6, 30))
                ridge, kind = _roof(r, p_gabled, eave, half_width=hw)
                cb.building([(cx + mid * c, cy + mid * s, seg / 2, hw, a, eave, ridge, kind)], "block segment",
                            check=False)
                t += seg
    yard = (x0 + d + 1, y0 + d + 1, x1 - d - 1, y1 - d - 1)
    cb.patch((yard[0] + yard[2]) / 2, (yard[1] + yard[3]) / 2, (yard[2] - yard[0]) / 2, (yard[3] - yard[1]) / 2, 0.0,
             GRASS if r.random() < 0.6 else PAVEMENT)
    _garden(cb, yard, trees=r.integers(0, 6))


def _frame_for(cb, plot, p_aligned):
    x0, y0, x1, y1 = plot
    phi = 0.0 if cb.rng.random() < p_aligned else cb.rng.uniform(0, math.pi / 2)
    return Frame((x0 + x1) / 2, (y0 + y1) / 2, phi)


def _scatter(cb, plot, frame, tries, make, gap):
    """Random placement in a (possibly rotated) frame: keep what fits the plot and its neighbours."""
    x0, y0, x1, y1 = plot
    reach = 0.5 * math.hypot(x1 - x0, y1 - y0)
    for _ in range(tries):
        u, v = cb.rng.uniform(-reach, reach, 2)
        parts, shape = make(frame, u, v)
        if _inside(parts, plot):
            cb.building(parts, shape, gap=gap)


def layout_detached(cb: _CellBuilder, plot):
    """Houses and small blocks in gardens: rectangles and L-shapes at the estate's angle."""
    r = cb.rng
    frame = _frame_for(cb, plot, 0.4)
    random_angles = r.random() < 0.3

    def make(fr, u, v):
        eave = r.uniform(3.0, 9.0)
        jitter = r.uniform(0, math.pi) if random_angles else r.normal(0, math.radians(3))
        if r.random() < 0.7:
            length, w = r.uniform(8, 22), r.uniform(6, 14)
            ridge, kind = _roof(r, 0.6, eave, half_width=w / 2)
            return [fr.rect(u, v, length / 2, w / 2, eave, ridge, kind, jitter)], "rectangle"
        return _l_shape(r, fr, u, v, eave, jitter, arms=(12, 26), widths=(6, 11)), "L"

    _scatter(cb, plot, frame, 28, make, gap=3.0)
    x0, y0, x1, y1 = plot
    for _ in range(r.integers(1, 4)):
        cb.patch(r.uniform(x0, x1), r.uniform(y0, y1), r.uniform(2, 8), r.uniform(1.5, 3), frame.phi, PAVEMENT)
    _trees_in(cb, plot, r.integers(6, 18), height=(6, 18), radius=(2.0, 5.0))


def _l_shape(r, fr, u, v, eave, jitter, arms, widths):
    """Two rectangles sharing a corner square; both at least 6 m wide."""
    a, b = r.uniform(*arms), r.uniform(*arms)
    wa, wb = r.uniform(*widths), r.uniform(*widths)
    b = max(b, wa + MIN_BUILDING_SIDE_M)   # the wing sticks out at least 6 m
    c, s = math.cos(jitter), math.sin(jitter)
    ridge_a, kind_a = _roof(r, 0.4, eave, half_width=wa / 2)
    ridge_b = ridge_a if kind_a == FLAT else eave + (ridge_a - eave) * wb / wa
    # arm A along local x from the corner, arm B along local y from the same corner
    ua, va = a / 2, wa / 2
    ub, vb = wb / 2, wa + (b - wa) / 2
    rot = lambda du, dv: (u + du * c - dv * s, v + du * s + dv * c)  # noqa: E731
    pa, pb = rot(ua - a / 2, va - wa / 2), rot(ub - a / 2, vb - wa / 2)
    return [fr.rect(pa[0], pa[1], a / 2, wa / 2, eave, ridge_a, kind_a, jitter),
            fr.rect(pb[0], pb[1], (b - wa) / 2, wb / 2, eave, ridge_b, kind_a, jitter + math.pi / 2)]


def layout_industrial(cb: _CellBuilder, plot):
    """Large flat halls on yards, with trucks and containers (bright, not buildings)."""
    r = cb.rng
    frame = _frame_for(cb, plot, 0.6)

    def make(fr, u, v):
        length, w = r.uniform(20, 60), r.uniform(15, 40)
        eave = r.uniform(6, 15)
        if r.random() < 0.25:
            return _l_shape(r, fr, u, v, eave, 0.0, arms=(25, 55), widths=(12, 22)), "L"
        return [fr.rect(u, v, length / 2, w / 2, eave, eave, FLAT)], "rectangle"

    _scatter(cb, plot, frame, 10, make, gap=5.0)
    _boxes(cb, plot, frame, r.integers(4, 16))
    _trees_in(cb, plot, r.integers(0, 5))


def _boxes(cb, plot, frame, count, stack=(1, 2)):
    r = cb.rng
    x0, y0, x1, y1 = plot
    for _ in range(int(count)):
        x, y = r.uniform(x0, x1), r.uniform(y0, y1)
        length = r.choice([6.1, 12.2])
        h = 2.6 * r.integers(stack[0], stack[1] + 1)
        a = frame.phi + (0.0 if r.random() < 0.7 else math.pi / 2)
        if _inside([(x, y, length / 2, 1.25, a)], plot):
            cb.clutter(x, y, length / 2, 1.25, a, h, gain_db=r.normal(0, 2))


def layout_towers(cb: _CellBuilder, plot):
    """Tall slabs (20-40 m) over plazas: long layover and shadow over the neighbours."""
    r = cb.rng
    frame = _frame_for(cb, plot, 0.5)

    def make(fr, u, v):
        eave = r.uniform(20, 40)
        length, w = r.uniform(15, 50), r.uniform(12, 20)
        if r.random() < 0.3:
            length = w = r.uniform(15, 25)
        return [fr.rect(u, v, length / 2, w / 2, eave, eave, FLAT)], "rectangle"

    _scatter(cb, plot, frame, 6, make, gap=12.0)

    def podium(fr, u, v):
        eave = r.uniform(4, 8)
        return [fr.rect(u, v, r.uniform(8, 20), r.uniform(5, 10), eave, eave, FLAT)], "rectangle"

    _scatter(cb, plot, frame, 4, podium, gap=3.0)
    _trees_in(cb, plot, r.integers(4, 14), radius=(2.0, 4.0))


def layout_port(cb: _CellBuilder, plot):
    """Container stacks in rows (metal boxes: bright, tall, not buildings), cranes, a warehouse."""
    r = cb.rng
    x0, y0, x1, y1 = plot
    frame = _frame_for(cb, plot, 0.7)
    if r.random() < 0.6:
        def make(fr, u, v):
            eave = r.uniform(8, 14)
            return [fr.rect(u, v, r.uniform(15, 30), r.uniform(10, 18), eave, eave, FLAT)], "rectangle"
        _scatter(cb, plot, frame, 3, make, gap=6.0)
    # stacks: blocks of containers side by side (each stack one box of width n x 2.44 m)
    reach = 0.5 * math.hypot(x1 - x0, y1 - y0)
    for _ in range(int(r.integers(6, 16))):
        u, v = r.uniform(-reach, reach, 2)
        n = int(r.integers(2, 7))
        hl, hw = 6.1, 1.22 * n
        h = 2.6 * int(r.integers(1, 5))
        x, y = frame.world(u, v)
        if _inside([(x, y, hl, hw, frame.phi)], plot):
            cb.clutter(x, y, hl, hw, frame.phi, h, gain_db=r.normal(1, 2), gap=1.5)
    for _ in range(int(r.integers(0, 3))):   # cranes: very bright points high up
        cb.point(r.uniform(x0, x1), r.uniform(y0, y1), r.uniform(10, 40), 10 ** r.uniform(2.0, 3.0), 0.15)


def layout_park(cb: _CellBuilder, plot):
    """Grass, shrubs, paths and clumps of trees; now and then a pavilion."""
    r = cb.rng
    x0, y0, x1, y1 = plot
    for _ in range(r.integers(1, 4)):   # paths
        cb.patch(r.uniform(x0, x1), r.uniform(y0, y1), r.uniform(20, 60), r.uniform(1.0, 2.5),
                 r.uniform(0, math.pi), PAVEMENT)
    for _ in range(r.integers(2, 7)):
        cb.patch(r.uniform(x0, x1), r.uniform(y0, y1), r.uniform(3, 12), r.uniform(2, 8), r.uniform(0, math.pi), SHRUB)
    if r.random() < 0.35:
        frame = _frame_for(cb, plot, 0.3)

        def make(fr, u, v):
            eave = r.uniform(3, 6)
            length, w = r.uniform(6, 14), r.uniform(6, 10)
            ridge, kind = _roof(r, 0.5, eave, half_width=w / 2)
            return [fr.rect(u, v, length / 2, w / 2, eave, ridge, kind)], "rectangle"
        _scatter(cb, plot, frame, 2, make, gap=4.0)
    for _ in range(r.integers(3, 8)):   # clumps
        cx, cy = r.uniform(x0, x1), r.uniform(y0, y1)
        s = r.uniform(6, 18)
        _trees_in(cb, (cx - s, cy - s, cx + s, cy + s), r.integers(4, 14), height=(8, 22), radius=(2.5, 6.0),
                  clearance=0.5)


def layout_dense(cb: _CellBuilder, plot):
    """A dense quarter: rows of touching buildings of mixed heights at any angle, narrow alleys."""
    r = cb.rng
    frame = _frame_for(cb, plot, 0.2)
    x0, y0, x1, y1 = plot
    reach = 0.5 * math.hypot(x1 - x0, y1 - y0)
    v = -reach
    while v < reach:
        depth = r.uniform(9, 16)
        u = -reach + r.uniform(0, 6)
        while u < reach:
            length = r.uniform(6, 24)
            eave = float(np.clip(r.lognormal(math.log(12), 0.45), 3.0, 32.0))
            ridge, kind = _roof(r, 0.25, eave, half_width=depth / 2)
            parts = [frame.rect(u + length / 2, v + depth / 2, length / 2, depth / 2, eave, ridge, kind)]
            shape = "rectangle"
            if r.random() < 0.12:   # an L: a wing reaching back
                wing_w, wing_l = r.uniform(6, 10), r.uniform(8, 14)
                parts.append(frame.rect(u + wing_w / 2, v + depth + wing_l / 2 - 0.01, wing_l / 2, wing_w / 2,
                                        eave, eave, FLAT, math.pi / 2))
                shape = "L"
            if _inside(parts, plot):
                cb.building(parts, shape, gap=0.0)
            u += length + (0.0 if r.random() < 0.8 else r.uniform(2, 5))
        v += depth + (0.0 if r.random() < 0.35 else r.uniform(2.5, 6))
    _trees_in(cb, plot, r.integers(0, 4), radius=(2.0, 3.5))


def layout_water(cb: _CellBuilder, bounds):
    """Harbour water; sometimes a moored ship (metal, tall superstructure: not a building)."""
    r = cb.rng
    x0, y0, x1, y1 = bounds
    for _ in range(int(r.integers(0, 2) if r.random() < 0.5 else 0)):
        a = 0.0 if r.random() < 0.5 else math.pi / 2
        hl, hw = r.uniform(20, 44), r.uniform(5, 9)
        x, y = r.uniform(x0 + 46, x1 - 46), r.uniform(y0 + 46, y1 - 46)
        cb.clutter(x, y, hl, hw, a, r.uniform(4, 8), gain_db=2.0)
        c, s = math.cos(a), math.sin(a)
        cb.clutter(x + 0.7 * hl * c, y + 0.7 * hl * s, 0.2 * hl, 0.8 * hw, a, r.uniform(12, 20), gain_db=3.0,
                   check=False)


LAYOUT_FUNCTIONS = {"terraced": layout_terraced, "courtyard": layout_courtyard, "detached": layout_detached,
                    "industrial": layout_industrial, "towers": layout_towers, "port": layout_port,
                    "park": layout_park, "dense": layout_dense}
BASE_CLASS = {"terraced": GRASS, "courtyard": PAVEMENT, "detached": GRASS, "industrial": SOIL,
              "towers": PAVEMENT, "port": PAVEMENT, "park": GRASS, "dense": PAVEMENT, "water": WATER}


class World:
    """The deterministic world of one seed: land use, streets and cell contents on demand."""

    def __init__(self, seed: int, origin: tuple[float, float], layout: str = "mixed", density: float = 1.0):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        if not 0.0 <= density <= 3.0:
            raise ValueError(f"building density must be between 0 and 3, not {density}")
        self.seed, self.layout, self.density = int(seed), layout, float(density)
        self.x0, self.y0 = float(origin[0]), float(origin[1])
        weights = dict(_MIXED_WEIGHTS if layout == "mixed" else _DENSE_WEIGHTS)
        for open_use in ("park", "water"):
            if open_use in weights:
                weights[open_use] /= max(self.density, 0.25)
        self._uses = list(weights)
        w = np.array([weights[u] for u in self._uses])
        self._cum = np.cumsum(w / w.sum())
        self.keep = float(np.clip(0.9 * self.density, 0.0, 1.0))
        self.cell = lru_cache(maxsize=4096)(self._make_cell)

    # --- land use and streets ------------------------------------------------------------------
    def _pick(self, u: float) -> str:
        return self._uses[int(np.searchsorted(self._cum, u, side="right").clip(0, len(self._uses) - 1))]

    def landuse(self, i: int, j: int) -> str:
        di, dj = i // 2, j // 2
        district = self._pick(float(hash01(self.seed, di, dj, 101)))
        if district == "water":   # harbour basins: whole districts, ragged at the edge
            return "water" if hash01(self.seed, i, j, 102) < 0.8 else self._pick(float(hash01(self.seed, i, j, 103)))
        use = district if hash01(self.seed, i, j, 104) < 0.6 else self._pick(float(hash01(self.seed, i, j, 105)))
        return use

    def street_width(self, axis: int, n: int) -> float:
        """Full width of the street on grid line ``n`` (axis 0: east-west lines, 1: north-south)."""
        u = float(hash01(self.seed, axis, n, 201))
        main = hash01(self.seed, axis, n, 202) < 0.2
        if self.layout == "dense":
            return 11 + 5 * u if main else 5 + 4 * u
        return 18 + 8 * u if main else 9 + 6 * u

    def cell_bounds(self, i: int, j: int) -> tuple:
        x0 = self.x0 + j * CELL_M
        y1 = self.y0 - i * CELL_M
        return (x0, y1 - CELL_M, x0 + CELL_M, y1)

    def cells_in(self, xmin, ymin, xmax, ymax):
        """(row, col) of every cell meeting the box, row-major."""
        j0, j1 = math.floor((xmin - self.x0) / CELL_M), math.floor((xmax - self.x0) / CELL_M)
        i0, i1 = math.floor((self.y0 - ymax) / CELL_M), math.floor((self.y0 - ymin) / CELL_M)
        return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]

    # --- contents ------------------------------------------------------------------------------
    def _make_cell(self, i: int, j: int) -> Cell:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, i + _OFF, j + _OFF, 7]))
        cb = _CellBuilder(rng, self.keep)
        bounds = self.cell_bounds(i, j)
        use = self.landuse(i, j)
        plot = None
        if use == "water":
            layout_water(cb, bounds)
        else:
            x0, y0, x1, y1 = bounds
            hw_w, hw_e = self.street_width(1, j) / 2, self.street_width(1, j + 1) / 2
            hw_n, hw_s = self.street_width(0, i) / 2, self.street_width(0, i + 1) / 2
            plot = (x0 + hw_w, y0 + hw_s, x1 - hw_e, y1 - hw_n)
            self._streets(cb, bounds, plot, (i, j))
            walk = 0.0 if use == "park" else 2.5
            inner = (plot[0] + walk, plot[1] + walk, plot[2] - walk, plot[3] - walk)
            if walk:
                for side in _frame_strips(plot, walk):
                    cb.patch(*side, 0.0, PAVEMENT)
            LAYOUT_FUNCTIONS[use](cb, inner)
        parts = np.array(cb.parts, dtype=np.float64).reshape(-1, len(PART_COLUMNS))
        objects = np.array(cb.objects, dtype=np.float64).reshape(-1, 5)
        patches = np.array(cb.patches, dtype=np.float64).reshape(-1, len(PATCH_COLUMNS))
        points = np.array(cb.points, dtype=np.float64).reshape(-1, len(POINT_COLUMNS))
        return Cell(i, j, bounds, use, BASE_CLASS[use], plot, parts, objects, patches, points, cb.buildings)

    def _streets(self, cb: _CellBuilder, bounds, plot, ij):
        """Cars, lamp posts and street trees in this cell's half of each surrounding street."""
        r = cb.rng
        x0, y0, x1, y1 = bounds
        px0, py0, px1, py1 = plot
        strips = [(x0, y0, x1, py0, 0), (x0, py1, x1, y1, 0), (x0, py0, px0, py1, 1), (px1, py0, x1, py1, 1)]
        for sx0, sy0, sx1, sy1, vertical in strips:
            length = (sy1 - sy0) if vertical else (sx1 - sx0)
            width = (sx1 - sx0) if vertical else (sy1 - sy0)
            if width < 1.5:
                continue
            for _ in range(r.poisson(length / 12.0)):   # cars: small, bright, co-polarised
                x, y = r.uniform(sx0, sx1), r.uniform(sy0, sy1)
                cb.point(x, y, 0.8, 10 ** r.uniform(0.7, 1.6), 0.08)
            for t in np.arange(r.uniform(0, 25), length, 25.0):   # lamp posts: pole-ground dihedrals
                if r.random() < 0.7:
                    x, y = (sx0 + 0.5, sy0 + t) if vertical else (sx0 + t, sy0 + 0.5)
                    cb.point(x, y, 0.0, 10 ** r.uniform(0.8, 1.4), 0.05)
            if r.random() < 0.45 and width > 4:   # a row of street trees near the kerb
                spacing = r.uniform(7, 12)
                off = 1.5
                for t in np.arange(r.uniform(0, spacing), length, spacing):
                    if r.random() < 0.2:   # a gap in the row
                        continue
                    if vertical:
                        x = sx1 - off if sx0 < px0 else sx0 + off
                        y = sy0 + t
                    else:
                        x = sx0 + t
                        y = sy1 - off if sy0 < py0 else sy0 + off
                    cb.tree(x + r.normal(0, 0.4), y + r.normal(0, 0.4), r.uniform(2.0, 4.5), r.uniform(7, 16))

    def buildings_in(self, xmin, ymin, xmax, ymax):
        """(footprint polygon, Building) of every building owned by cells meeting the box."""
        out = []
        for i, j in self.cells_in(xmin, ymin, xmax, ymax):
            cell = self.cell(i, j)
            for b in cell.buildings:
                polys = [rect_polygon(*cell.parts[k, :5]) for k in b.parts]
                poly = polys[0] if len(polys) == 1 else shapely.union_all(polys)
                out.append((poly, b))
        return out


def _frame_strips(plot, width):
    """Four axis-aligned strips (cx, cy, hl, hw) along the inside of a rectangle."""
    x0, y0, x1, y1 = plot
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx, y0 + width / 2, hx, width / 2), (cx, y1 - width / 2, hx, width / 2),
            (x0 + width / 2, cy, width / 2, hy), (x1 - width / 2, cy, width / 2, hy)]


class FixedWorld(World):
    """A world of given objects on one kind of ground and no streets: for checking the
    geometry (one building on a lawn shows its layover, shadow and dihedral plainly).

    ``buildings``: list of (cx, cy, length, width, angle_deg, eave_m, ridge_m) in map metres
    (ridge > eave makes a gabled roof along the length)."""

    def __init__(self, buildings, origin, ground: int = GRASS, seed: int = 0):
        super().__init__(seed, origin, "mixed", 1.0)
        self._ground = int(ground)
        cb = _CellBuilder(np.random.default_rng(seed), 1.0)
        for cx, cy, length, width, angle, eave, ridge in buildings:
            kind = GABLED if ridge > eave else FLAT
            cb.building([(cx, cy, length / 2, width / 2, math.radians(angle), eave, max(ridge, eave), kind)],
                        "rectangle", check=False)
        cb.points.clear()   # no roof clutter: a clean target
        self._parts = np.array(cb.parts, dtype=np.float64).reshape(-1, len(PART_COLUMNS))
        self._objects = np.array(cb.objects, dtype=np.float64).reshape(-1, 5)
        for o in self._objects:   # nominal radiometry: no per-building gains
            o[1:4] = 1.0
        self._buildings = cb.buildings

    def landuse(self, i: int, j: int) -> str:
        return "park"

    def _make_cell(self, i: int, j: int) -> Cell:
        bounds = self.cell_bounds(i, j)
        empty = np.zeros((0, len(PART_COLUMNS)))
        if (i, j) != (0, 0):
            return Cell(i, j, bounds, "park", self._ground, bounds, empty, np.zeros((0, 5)),
                        np.zeros((0, len(PATCH_COLUMNS))), np.zeros((0, len(POINT_COLUMNS))), [])
        return Cell(i, j, bounds, "park", self._ground, bounds, self._parts, self._objects,
                    np.zeros((0, len(PATCH_COLUMNS))), np.zeros((0, len(POINT_COLUMNS))), self._buildings)
