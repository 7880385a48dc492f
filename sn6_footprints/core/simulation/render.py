"""Rendering one window of the world as a 4-band side-looking SAR image (linear intensity).

Geometry (ground-range image, north up; the sensor flies east-west, or north-south for the east
and west looks):

* ``look="north"``: the sensor looks toward north, so it sits south of the scene; the near-range
  side of the image is the bottom (south) row, far range the top. ``look="south"`` is the mirror:
  near range at the top. Rotating a south-looking image by 180 degrees gives the north-looking
  geometry (SN6's orientation flag 1). ``look="east"``: the sensor sits west of the scene (it
  flies north-south), near range in the left columns; ``look="west"``: near range on the right.
* A point at height z appears displaced toward the sensor by z / tan(incidence) (layover), so
  roofs and facades slide onto whatever lies nearer the sensor, neighbours included.
* Ground behind an object (away from the sensor) is in shadow for h * tan(incidence); in the
  image the dark zone also covers the part of the footprint the roof slid away from.
* A wall facing the sensor and the ground in front of it form a dihedral: a bright line at the
  wall's base, i.e. on the footprint edge that faces the sensor, strongest in HH and VV, fading
  fast as the wall turns away from the look direction.

Internally every window is turned so that rows increase toward the sensor ("canonical" frame:
a flip of the rows for south-looking scenes, a quarter turn for east- and west-looking ones),
rendered, and turned back: the same world and the same physics in every look direction.

Intensities are backscatter coefficients (linear, 1 = 0 dB). All physical constants are in the
tables below, in dB, band order HH, HV, VH, VV, per 0.5 m pixel; at other pixel sizes point
targets scale with the pixel area and line targets with its side, so a scene's mean does not
depend on the pixel size.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from . import layout as L

BANDS = ("HH", "HV", "VH", "VV")
REFERENCE_INCIDENCE_DEG = 35.0
LOOK_DIRECTIONS = ("north", "south", "east", "west")
# World direction from the scene to the sensor (radians from east, counter-clockwise).
SENSOR_ANGLE = {"north": -math.pi / 2, "south": math.pi / 2, "east": math.pi, "west": 0.0}


def _lin(db) -> np.ndarray:
    return (10.0 ** (np.asarray(db, dtype=np.float64) / 10.0)).astype(np.float32)


# Ground classes (X band, 35 degrees): water and asphalt dark (specular), vegetation with strong
# cross-pol (volume scattering).                 HH     HV     VH     VV
GROUND_DB = np.array([[-25.0, -34.0, -34.0, -23.5],   # water
                      [-19.0, -24.0, -24.0, -18.5],   # asphalt (roads, parking)
                      [-15.5, -20.5, -20.5, -15.0],   # pavement, concrete
                      [-14.0, -18.5, -18.5, -13.5],   # bare soil
                      [-13.0, -16.0, -16.0, -12.5],   # grass
                      [-10.0, -12.0, -12.0, -9.5]])   # shrub
# How fast each ground class darkens with incidence: sigma0 ~ cos(theta)^n.
GROUND_COS_POWER = np.array([6.0, 4.0, 3.0, 2.0, 1.5, 1.0])
# Smooth ground makes strong dihedrals with walls; rough and vegetated ground much weaker ones.
GROUND_DIHEDRAL = np.array([1.0, 1.0, 0.8, 0.45, 0.3, 0.15])
CANOPY_DB = np.array([-8.5, -10.5, -10.5, -8.0])         # tree crowns: volume
ROOF_DB = np.array([-11.5, -15.5, -15.5, -11.0])        # flat and tiled roofs (diffuse part)
METAL_DB = np.array([-6.0, -14.0, -14.0, -5.5])         # containers, ships (rough metal tops)
ROOF_SPECULAR = 6.0       # relative to the diffuse part at 35 degrees, at normal incidence
ROOF_SLOPE_RMS = 0.28     # rms slope of the specular lobe
FACADE_DB = np.array([-6.0, -11.0, -11.0, -5.5])        # per image pixel of a wall facing the sensor
METAL_FACADE_DB = np.array([2.0, -6.0, -6.0, 2.0])
WINDOW_DB = np.array([7.0, -3.0, -3.0, 7.0])            # floor-line corner reflectors, per point
EDGE_DB = np.array([3.0, -7.0, -7.0, 3.0])              # roof edge facing the sensor
# Dihedral wall-ground, per pixel of wall base, 10 m wall square to the look direction.
DIHEDRAL_DB = np.array([20.0, 0.0, 0.0, 20.5])
METAL_DIHEDRAL_DB = np.array([23.0, 3.0, 3.0, 23.0])
DIHEDRAL_WIDTH_DEG = 11.0   # e-folding aspect angle of the dihedral lobe
MULTIPATH = 0.006           # fraction of wall and dihedral power arriving late (triple bounce)
MULTIPATH_BANDS = np.array([1.0, 0.3, 0.3, 0.9], dtype=np.float32)
NOISE_DB = np.array([-18.8, -19.0, -18.9, -18.3])        # thermal noise floor (NESZ) per channel
VH_IMBALANCE_DB = 0.3       # VH a little hotter than HV: channel imbalance, not physics
# Polarimetric crosstalk: a little co-pol power leaks into the cross-pol channels (more into VH),
# which is why bright targets are brighter in VH than in HV in the real data.
CROSSTALK_DB = np.array([-24.5, -16.5])    # into HV, into VH
POINT_SIDELOBE = 0.15
TREE_SHADOW = 0.3           # two-way transmission through a crown


def speckle(rng: np.random.Generator, looks: int, shape: tuple) -> np.ndarray:
    """Multiplicative speckle for HH, HV, VH, VV: each channel has mean 1 and variance 1/looks.

    Built from gamma variates (shape looks/2, unit mean) mixed so the channels correlate like
    real quad-pol data: HV and VH almost equal (reciprocity, correlation about 0.97 but not 1),
    HH and VV partly (0.5), co- and cross-pol weakly (0.2). Each mixture has the right mean and
    variance; with the half-shape variates it stays close to a gamma(looks) law.
    """
    if looks < 1:
        raise ValueError(f"looks must be at least 1, not {looks}")
    shape_k = 0.5 * looks

    def g():
        return rng.standard_gamma(shape_k, size=shape, dtype=np.float32) / np.float32(shape_k)

    c = 0.12                                  # VH's own share
    # Solve a2^2 + (1 - a2 - c)^2 + c^2 = 0.5 for the smaller root (sum of squares 0.5 as for HH).
    q = 1 - c
    a2 = (q - math.sqrt(q * q - 2 * (q * q + c * c - 0.5))) / 2
    b = q - a2
    common, cross = g(), g()
    out = np.empty((4,) + tuple(shape), dtype=np.float32)
    out[0] = 0.5 * common + 0.5 * g()
    out[3] = 0.5 * common + 0.5 * g()
    out[1] = a2 * common + b * cross + c * g()
    out[2] = a2 * common + b * cross + c * g()
    return out


class Renderer:
    """Renders windows of a :class:`~.layout.World` for one sensor set-up."""

    def __init__(self, world: L.World, *, origin, pixel_size: float, look: str, incidence_deg: float, looks: int):
        if look not in LOOK_DIRECTIONS:
            raise ValueError(f"look direction must be one of {', '.join(LOOK_DIRECTIONS)}, not {look!r}")
        if not 15.0 <= incidence_deg <= 60.0:
            raise ValueError(f"incidence angle must be between 15 and 60 degrees, not {incidence_deg}")
        if not 0.1 <= pixel_size <= 5.0:
            raise ValueError(f"pixel size must be between 0.1 and 5 m, not {pixel_size}")
        self.world = world
        self.x0, self.y0 = float(origin[0]), float(origin[1])
        self.p = float(pixel_size)
        self.look = look
        self.theta = math.radians(incidence_deg)
        self.looks = int(looks)
        self.k = 1.0 / (math.tan(self.theta) * self.p)     # image px of layover per metre of height
        self.delta = self.p / math.tan(self.theta)         # shadow ray descent (m) per px of ground
        self.sensor_angle = SENSOR_ANGLE[look]
        self.across_track = look in ("east", "west")       # range runs along the columns
        h = L.MAX_OBJECT_HEIGHT_M
        self.reach_layover = int(math.ceil(h * self.k)) + 3
        self.reach_shadow = int(math.ceil(h * math.tan(self.theta) / self.p)) + 3
        self.pad_side = 12
        self.mp_shift = max(1, int(round(5.0 / self.p)))
        # incidence-dependent ground reflectivity, per class and band
        cos_ratio = math.cos(self.theta) / math.cos(math.radians(REFERENCE_INCIDENCE_DEG))
        self.ground = _lin(GROUND_DB) * (cos_ratio ** GROUND_COS_POWER)[:, None].astype(np.float32)
        self.ground = self.ground.T.copy()          # (4, classes)
        self.noise = _lin(NOISE_DB)
        self.area = (self.p / 0.5) ** 2             # pixel area relative to 0.5 m pixels
        # A line target (wall base, parapet, a row of window ledges) one pixel wide returns power in
        # proportion to its length in the pixel, so its backscatter per unit area goes as 1 / pixel size:
        # the per-pixel tables are for 0.5 m, and the scene mean stays the same at any pixel size.
        self.line = np.float32(0.5 / self.p)
        self.wall_scale = math.tan(self.theta) / math.tan(math.radians(REFERENCE_INCIDENCE_DEG))

    # ------------------------------------------------------------------------------------------
    def margins(self) -> tuple[int, int, int, int]:
        """Pixels of padding (top, bottom, left, right) a window needs so that layover, shadow and
        multipath from objects outside it are included: wide on the range axis, narrow along track."""
        far, near = self.reach_layover + self.pad_side, self.reach_shadow + self.pad_side + self.mp_shift
        side = self.pad_side
        return {"north": (far, near, side, side), "south": (near, far, side, side),
                "east": (side, side, near, far), "west": (side, side, far, near)}[self.look]

    def to_canonical(self, a: np.ndarray) -> np.ndarray:
        """Image layers (..., rows, cols) -> canonical frame, rows increasing toward the sensor."""
        if self.look == "north":
            return a
        if self.look == "south":
            return a[..., ::-1, :]
        return np.ascontiguousarray(np.rot90(a, 1 if self.look == "east" else -1, axes=(-2, -1)))

    def from_canonical(self, a: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_canonical`."""
        if self.look == "north":
            return a
        if self.look == "south":
            return a[..., ::-1, :]
        return np.rot90(a, -1 if self.look == "east" else 1, axes=(-2, -1))

    def _canonical_index(self, r, c, H, W):
        """Image pixel (row, col) of an H x W window -> its canonical (row, col)."""
        if self.look == "north":
            return r, c
        if self.look == "south":
            return H - 1 - r, c
        return (W - 1 - c, r) if self.look == "east" else (c, H - 1 - r)

    def render(self, row0: int, col0: int, height: int, width: int, rng: np.random.Generator,
               diagnostics: bool = False) -> dict:
        """Intensity (4, height, width) of scene pixels [row0:row0+height, col0:col0+width].

        Returns {"intensity": speckled linear intensity with noise, "sigma": the same before
        speckle} and with ``diagnostics`` also "height", "shadow", "layover" (something elevated or
        a wall landed here), "cover" (ground class or BUILDING / CANOPY / CLUTTER where an object
        stands) and "object_kind", all in the image frame whatever the look direction.
        """
        top, bottom, left, right = self.margins()
        pr0, pc0 = row0 - top, col0 - left
        H, W = height + top + bottom, width + left + right
        xs = self.x0 + (pc0 + np.arange(W) + 0.5) * self.p
        ys = self.y0 - (pr0 + np.arange(H) + 0.5) * self.p
        bbox = (xs[0] - self.p, ys[-1] - self.p, xs[-1] + self.p, ys[0] + self.p)
        cells = [self.world.cell(i, j) for i, j in self.world.cells_in(*bbox)]

        cover = self._paint_ground(cells, pr0, pc0, H, W)
        parts, objects, points = _gather(cells)
        hgt, kind, obj, gx, gy, psi = self._rasterize(parts, pr0, pc0, H, W)
        tex = self._textures(xs, ys)

        # canonical frame: rows increase toward the sensor
        cover, hgt, kind, obj, gx, gy, psi = (self.to_canonical(a) for a in (cover, hgt, kind, obj, gx, gy, psi))
        tex = tuple(self.to_canonical(t) for t in tex)
        # surface slope toward the sensor (m/m) and across the look direction
        g_r, g_c = {"north": (-gy, gx), "south": (gy, gx), "east": (-gx, gy), "west": (gx, gy)}[self.look]
        # global along-track pixel index of each canonical column (keys hashes that must agree across windows)
        along = {"north": pc0 + np.arange(W), "south": pc0 + np.arange(W),
                 "east": pr0 + np.arange(H), "west": pr0 + H - 1 - np.arange(H)}[self.look]
        sigma, parts_out = self._physics(cover, hgt, kind, obj, objects, g_r, g_c, psi, tex, along)

        # crop to the window (canonical rows: the far margin is at the top)
        range_px, along_px = (width, height) if self.across_track else (height, width)
        r_lo = self.reach_layover + self.pad_side
        crop = (slice(None), slice(r_lo, r_lo + range_px), slice(self.pad_side, self.pad_side + along_px))
        sigma = sigma[crop]
        pts = self._points(points, pr0, pc0, H, W, hgt, parts_out["horizon"])
        pts = pts[crop]
        copol = 0.5 * (sigma[0] + sigma[3])
        sigma[1] += copol * np.float32(10 ** (CROSSTALK_DB[0] / 10))
        sigma[2] += copol * np.float32(10 ** (CROSSTALK_DB[1] / 10))
        sigma[2] *= np.float32(10 ** (VH_IMBALANCE_DB / 10))
        sigma += self.noise[:, None, None]
        intensity = sigma * speckle(rng, self.looks, (range_px, along_px)) + pts
        intensity, sigma = self.from_canonical(intensity), self.from_canonical(sigma + pts)
        out = {"intensity": np.ascontiguousarray(intensity), "sigma": np.ascontiguousarray(sigma)}
        if diagnostics:
            cov = cover.copy()
            objkind = np.where(obj >= 0, objects[np.maximum(obj, 0), 0], -1).astype(np.int8)
            cov[objkind == L.OBJ_BUILDING] = L.BUILDING
            cov[objkind == L.OBJ_TREE] = L.CANOPY
            cov[objkind == L.OBJ_CLUTTER] = L.CLUTTER
            diag = {"height": hgt, "shadow": parts_out["shadow"], "layover": parts_out["layover"], "cover": cov,
                    "object_kind": objkind}
            for key, arr in diag.items():
                out[key] = np.ascontiguousarray(self.from_canonical(arr[crop[1:]]))
        return out

    # ------------------------------------------------------------------------------------------
    def _to_px(self, x, y, pr0, pc0):
        """World metres -> continuous window pixel coordinates (col, row); pixel c spans [c, c+1)."""
        return (np.asarray(x) - self.x0) / self.p - pc0, (self.y0 - np.asarray(y)) / self.p - pr0

    def _paint_ground(self, cells, pr0, pc0, H, W) -> np.ndarray:
        cover = np.full((H, W), L.ASPHALT, dtype=np.uint8)
        for cell in cells:
            x0, y0, x1, y1 = cell.bounds
            box = cell.bounds if cell.plot is None else cell.plot
            c0, r0 = self._to_px(box[0], box[3], pr0, pc0)
            c1, r1 = self._to_px(box[2], box[1], pr0, pc0)
            rs = slice(int(np.clip(round(r0), 0, H)), int(np.clip(round(r1), 0, H)))
            cs = slice(int(np.clip(round(c0), 0, W)), int(np.clip(round(c1), 0, W)))
            cover[rs, cs] = cell.base_class
            if len(cell.patches):
                for cx, cy, hl, hw, ang, cls in cell.patches:
                    sl, inside = self._rect_mask(cx, cy, hl, hw, ang, pr0, pc0, H, W)
                    if sl is not None:
                        cover[sl][inside] = int(cls)
        return cover

    def _rect_mask(self, cx, cy, hl, hw, ang, pr0, pc0, H, W):
        """(slices, mask) of window pixels whose centres fall in a rotated rectangle."""
        ccol, crow = self._to_px(cx, cy, pr0, pc0)
        c, s = math.cos(ang), math.sin(ang)
        ex = (abs(hl * c) + abs(hw * s)) / self.p
        ey = (abs(hl * s) + abs(hw * c)) / self.p
        c0, c1 = max(int(math.floor(ccol - ex)), 0), min(int(math.ceil(ccol + ex)), W)
        r0, r1 = max(int(math.floor(crow - ey)), 0), min(int(math.ceil(crow + ey)), H)
        if c0 >= c1 or r0 >= r1:
            return None, None
        dx = ((np.arange(c0, c1) + 0.5 - ccol) * self.p)[None, :]
        dy = (-(np.arange(r0, r1) + 0.5 - crow) * self.p)[:, None]
        u = dx * c + dy * s
        v = -dx * s + dy * c
        return (slice(r0, r1), slice(c0, c1)), (np.abs(u) <= hl) & (np.abs(v) <= hw)

    def _rasterize(self, parts, pr0, pc0, H, W):
        """Height field and per-pixel attributes of the tallest part at each pixel: height, part
        kind, object index, surface slope (dh/dx east, dh/dy north) and the outward normal angle
        of the nearest wall (for facades and dihedrals)."""
        hgt = np.zeros((H, W), dtype=np.float32)
        kind = np.full((H, W), -1, dtype=np.int8)
        obj = np.full((H, W), -1, dtype=np.int32)
        gx = np.zeros((H, W), dtype=np.float32)
        gy = np.zeros((H, W), dtype=np.float32)
        psi = np.zeros((H, W), dtype=np.float32)
        p = self.p
        trees = parts[:, 7] == L.TREE
        for cx, cy, hl, hw, ang, eave, ridge, pk, ob in parts[~trees]:
            ccol, crow = self._to_px(cx, cy, pr0, pc0)
            c, s = math.cos(ang), math.sin(ang)
            ex = (abs(hl * c) + abs(hw * s)) / p
            ey = (abs(hl * s) + abs(hw * c)) / p
            c0, c1 = max(int(math.floor(ccol - ex)), 0), min(int(math.ceil(ccol + ex)), W)
            r0, r1 = max(int(math.floor(crow - ey)), 0), min(int(math.ceil(crow + ey)), H)
            if c0 >= c1 or r0 >= r1:
                continue
            dx = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - ccol) * p)[None, :]
            dy = (-(np.arange(r0, r1, dtype=np.float32) + 0.5 - crow) * p)[:, None]
            u = dx * c + dy * s
            v = -dx * s + dy * c
            au, av = np.abs(u), np.abs(v)
            inside = (au <= hl) & (av <= hw)
            gabled = int(pk) == L.GABLED and ridge > eave
            h = eave + (ridge - eave) * (1.0 - av / hw) if gabled else np.full(u.shape, eave, dtype=np.float32)
            sl = (slice(r0, r1), slice(c0, c1))
            upd = inside & (h > hgt[sl])
            if not upd.any():
                continue
            hgt[sl][upd] = h[upd]
            kind[sl][upd] = int(pk)
            obj[sl][upd] = int(ob)
            near_u = (hl - au) < (hw - av)
            nrm = np.where(near_u, ang + np.where(u >= 0, 0.0, math.pi),
                           ang + math.pi / 2 + np.where(v >= 0, 0.0, math.pi))
            psi[sl][upd] = nrm[upd]
            if gabled:
                dhv = -(ridge - eave) / hw * np.sign(v[upd])
                gx[sl][upd] = dhv * -s
                gy[sl][upd] = dhv * c
            else:
                gx[sl][upd] = 0.0
                gy[sl][upd] = 0.0
        if trees.any():
            self._rasterize_crowns(parts[trees], pr0, pc0, H, W, hgt, kind, obj, gx, gy, psi)
        return hgt, kind, obj, gx, gy, psi

    def _rasterize_crowns(self, crowns, pr0, pc0, H, W, hgt, kind, obj, gx, gy, psi):
        """All tree crowns at once (there are thousands): ellipsoid caps on a shared stencil,
        merged so that the tallest surface wins at each pixel."""
        p = self.p
        ccol, crow = self._to_px(crowns[:, 0], crowns[:, 1], pr0, pc0)
        m = int(math.ceil(crowns[:, 2].max() / p)) + 1
        near = (ccol > -m) & (ccol < W + m) & (crow > -m) & (crow < H + m)
        crowns, ccol, crow = crowns[near], ccol[near], crow[near]
        if not len(crowns):
            return
        off = np.arange(-m, m + 1)
        c_idx = (np.floor(ccol).astype(np.int64)[:, None, None] + off[None, None, :])
        r_idx = (np.floor(crow).astype(np.int64)[:, None, None] + off[None, :, None])
        dx = (c_idx + 0.5 - ccol[:, None, None]) * p                # east, m
        dy = -(r_idx + 0.5 - crow[:, None, None]) * p               # north, m
        rad = crowns[:, 2][:, None, None]
        d2 = (dx * dx + dy * dy) / (rad * rad)
        ok = (d2 <= 1.0) & (c_idx >= 0) & (c_idx < W) & (r_idx >= 0) & (r_idx < H)
        t = np.nonzero(ok)[0]
        dx, dy, d2 = (np.broadcast_to(x, ok.shape)[ok] for x in (dx, dy, d2))
        flat = (np.broadcast_to(r_idx, ok.shape)[ok] * W + np.broadcast_to(c_idx, ok.shape)[ok])
        base, top = crowns[t, 5], crowns[t, 6]
        root = np.sqrt(np.maximum(1.0 - d2, 1e-4))
        h = (base + (top - base) * root).astype(np.float32)
        higher = h > hgt.ravel()[flat]
        flat, h, t, dx, dy, d2, root = (x[higher] for x in (flat, h, t, dx, dy, d2, root))
        order = np.lexsort((h, flat))                      # by pixel, then height: last one wins
        flat, h, t, dx, dy, d2, root = (x[order] for x in (flat, h, t, dx, dy, d2, root))
        last = np.ones(flat.size, dtype=bool)
        last[:-1] = flat[1:] != flat[:-1]
        flat, h, t, dx, dy, d2, root = (x[last] for x in (flat, h, t, dx, dy, d2, root))
        rho = np.sqrt(dx * dx + dy * dy) + 1e-6
        dhd = np.clip(-(crowns[t, 6] - crowns[t, 5]) * np.sqrt(d2) / root / crowns[t, 2], -3.0, 0.0)
        hgt.ravel()[flat] = h
        kind.ravel()[flat] = L.TREE
        obj.ravel()[flat] = crowns[t, 8].astype(np.int32)
        gx.ravel()[flat] = dhd * dx / rho
        gy.ravel()[flat] = dhd * dy / rho
        psi.ravel()[flat] = np.arctan2(dy, dx)

    def _textures(self, xs, ys):
        """Deterministic multiplicative textures in map coordinates (so windows join seamlessly):
        broad brightness changes (moisture, roughness) and fine clumping for vegetation."""
        seed = self.world.seed
        broad = L.value_noise(seed, 301, xs, ys, 40.0)
        fine = L.value_noise(seed, 302, xs, ys, 3.0)
        broad = np.power(np.float32(10.0), (broad - 0.5) * np.float32(0.5))    # about +-2.5 dB
        fine = np.power(np.float32(10.0), (fine - 0.5) * np.float32(0.8))      # about +-4 dB
        return broad.astype(np.float32), fine.astype(np.float32)

    # ------------------------------------------------------------------------------------------
    def _physics(self, cover, hgt, kind, obj, objects, g_r, g_c, psi, tex, along):
        """Canonical-frame rendering: ground, layover of elevated surfaces, walls, dihedrals,
        multipath. ``along``: the scene's along-track pixel index of each column. Returns
        (sigma (4, H, W), extras)."""
        H, W = hgt.shape
        broad, fine = tex
        has_obj = obj >= 0
        is_tree = kind == L.TREE
        # Shadow: the horizon cast by everything nearer the sensor (higher rows). Crowns are
        # half transparent at X band, so their shadow only dims; buildings' shadow is black.
        horizon_all = _horizon(hgt, self.delta)
        horizon = _horizon(np.where(is_tree, np.float32(0.0), hgt), self.delta)
        shadow = horizon > hgt + 0.05
        illum = np.where(shadow, np.float32(0.0),
                         np.where(horizon_all > hgt + 0.05, np.float32(TREE_SHADOW), np.float32(1.0)))

        # ground
        veg = (cover == L.GRASS) | (cover == L.SHRUB)
        gtex = broad * np.where(veg, fine, np.float32(1.0))
        sigma = self.ground[:, cover] * (gtex * np.where(has_obj, np.float32(0.0), illum))[None]

        seg_lo, seg_hi, seg_col, seg_w = [], [], [], []    # constant-density row segments
        dep_idx, dep_w = [], []                             # single-pixel deposits

        # elevated surfaces: roofs, crowns, metal tops, slid toward the sensor
        rr, cc = np.nonzero(has_obj & (illum > 0))
        if rr.size:
            h = hgt[rr, cc]
            gr = g_r[rr, cc]
            gc = g_c[rr, cc]
            pk = kind[rr, cc]
            ob = obj[rr, cc]
            gain = objects[ob, 1].astype(np.float32) * illum[rr, cc]
            cos_t, sin_t = math.cos(self.theta), math.sin(self.theta)
            cos_l = np.clip((cos_t - gr * sin_t) / np.sqrt(1.0 + gr * gr + gc * gc), 0.0, 1.0)
            tan2 = (1.0 - cos_l ** 2) / np.maximum(cos_l ** 2, 1e-6)
            c35 = math.cos(math.radians(REFERENCE_INCIDENCE_DEG))
            surf = (cos_l / c35) ** 2 + ROOF_SPECULAR * np.exp(-tan2 / (2 * ROOF_SLOPE_RMS ** 2))
            surf = np.where(cos_l > 0.02, surf, 0.0).astype(np.float32)
            tree = pk == L.TREE
            metal = pk == L.METAL
            base = np.where(tree[None], _lin(CANOPY_DB)[:, None],
                            np.where(metal[None], _lin(METAL_DB)[:, None], _lin(ROOF_DB)[:, None]))
            # crowns get the clumpy texture, roofs a milder one (vents, gravel, repairs)
            scal = gain * np.where(tree, fine[rr, cc] * broad[rr, cc], surf * np.sqrt(fine[rr, cc]))
            start = rr - 0.5 + (h - 0.5 * gr * self.p) * self.k
            end = rr + 0.5 + (h + 0.5 * gr * self.p) * self.k
            lo = np.rint(np.minimum(start, end)).astype(np.int64)
            hi = np.maximum(np.rint(np.maximum(start, end)).astype(np.int64), lo + 1)
            seg_lo.append(lo), seg_hi.append(hi), seg_col.append(cc)
            seg_w.append(base * (scal / (hi - lo))[None])

        # walls: a height drop toward the sensor between row r (object) and r + 1
        wall = (hgt[:-1] - hgt[1:] > 0.3) & has_obj[:-1] & ~is_tree[:-1]
        wr, wc = np.nonzero(wall)
        if wr.size:
            top = hgt[wr, wc]
            front = hgt[wr + 1, wc]
            z_lo = np.maximum(front, horizon[wr, wc])
            alpha = np.abs(_wrap(psi[wr, wc] - self.sensor_angle))
            cos_a = np.cos(alpha)
            keep = (z_lo < top - 0.1) & (cos_a > 0.02)
            wr, wc, top, front, z_lo, alpha, cos_a = (x[keep] for x in (wr, wc, top, front, z_lo, alpha, cos_a))
            ob = obj[wr, wc]
            metal = kind[wr, wc] == L.METAL
            fgain = objects[ob, 2].astype(np.float32)
            fac = np.where(metal[None], _lin(METAL_FACADE_DB)[:, None], _lin(FACADE_DB)[:, None])
            u0 = np.rint(wr + 0.5 + z_lo * self.k).astype(np.int64)
            u1 = np.maximum(np.rint(wr + 0.5 + top * self.k).astype(np.int64), u0 + 1)
            seg_lo.append(u0), seg_hi.append(u1), seg_col.append(wc)
            seg_w.append(fac * (fgain * cos_a ** 1.5 * self.wall_scale)[None])
            # floor lines every 3 m: window ledges and balconies as corner reflectors, lit or not
            # by a hash of map column and building, so neighbouring windows agree
            zf = (np.arange(1, 15, dtype=np.float32) * 3.0 - 0.3)[None, :]
            fi, fj = np.nonzero((zf > z_lo[:, None]) & (zf < top[:, None]) & ~metal[:, None])
            if fi.size:
                frow = np.rint(wr[fi] + 0.5 + zf[0, fj] * self.k).astype(np.int64)
                key = objects[ob[fi], 4].astype(np.int64)
                lit = L.hash01(self.world.seed, along[wc[fi]] // max(1, int(round(1.0 / self.p))) + 7919 * key,
                               fj, 401)
                wgt = (np.where(lit < 0.3, 1.0, 0.05) * cos_a[fi] ** 3).astype(np.float32)
                _deposit(dep_idx, dep_w, frow, wc[fi], _lin(WINDOW_DB)[:, None] * (wgt * self.line)[None], H, W)
            # roof edge (parapet) facing the sensor, at the top of the wall
            erow = np.rint(wr + 0.5 + top * self.k).astype(np.int64)
            _deposit(dep_idx, dep_w, erow, wc, _lin(EDGE_DB)[:, None] * (fgain * cos_a ** 2 * self.line)[None],
                     H, W)
            # dihedral at the base: the ground in front must be open and lit
            base_ok = (front <= 0.0) & (illum[wr + 1, wc] > 0)
            if base_ok.any():
                br, bc, ba, bt, bm, bo = (x[base_ok] for x in (wr, wc, alpha, top, metal, ob))
                lobe = np.exp(-(np.degrees(ba) / DIHEDRAL_WIDTH_DEG) ** 2) + 0.015
                strength = (lobe * np.minimum(bt, 20.0) / 10.0 * GROUND_DIHEDRAL[cover[br + 1, bc]]
                            * objects[bo, 3] * illum[br + 1, bc]).astype(np.float32)
                co = np.where(bm[None], _lin(METAL_DIHEDRAL_DB)[:, None], _lin(DIHEDRAL_DB)[:, None])
                xfrac = (0.02 + 0.45 * np.sin(2 * ba) ** 2).astype(np.float32)
                w = co * (strength * self.line)[None]
                w[1] = w[0] * xfrac
                w[2] = w[0] * xfrac
                # the base line lies between the wall pixel and the ground pixel in front
                _deposit(dep_idx, dep_w, br, bc, 0.5 * w, H, W)
                _deposit(dep_idx, dep_w, br + 1, bc, 0.5 * w, H, W)

        layers = _segments(seg_lo, seg_hi, seg_col, seg_w, H, W)
        dep = _flush(dep_idx, dep_w, H, W)
        # multipath: part of the wall and dihedral power arrives late, behind the building
        strong = dep[0] + layers[0] * (~has_obj)
        mp = ndimage.uniform_filter(strong, size=(int(round(6 / self.p)) | 1, int(round(3 / self.p)) | 1))
        mp = np.roll(mp, -self.mp_shift, axis=0) * np.float32(MULTIPATH)
        lifted = (layers[0] > 0) | (dep[0] > 0)      # something elevated or a wall landed here
        sigma += layers
        sigma += dep
        sigma += mp[None] * MULTIPATH_BANDS[:, None, None]
        return sigma, {"shadow": shadow, "horizon": horizon, "layover": lifted}

    def _points(self, points, pr0, pc0, H, W, hgt, horizon_canonical):
        """Point scatterers (cars, lamp posts, cranes) with a little sidelobe cross, unspeckled, in
        the canonical frame of an H x W image window (``hgt`` and the horizon already canonical)."""
        out = np.zeros((4,) + hgt.shape, dtype=np.float32)
        if not len(points):
            return out
        col, row = self._to_px(points[:, 0], points[:, 1], pr0, pc0)
        r, c = self._canonical_index(np.floor(row).astype(np.int64), np.floor(col).astype(np.int64), H, W)
        H, W = hgt.shape
        z = points[:, 2]
        ok = (c >= 1) & (c < W - 1) & (r >= 0) & (r < H)
        c, r, z, pw, xp = c[ok], r[ok], z[ok], points[ok, 3], points[ok, 4]
        visible = (horizon_canonical[r, c] <= z + 0.05) & (hgt[r, c] <= z + 0.5)   # both canonical
        r_img = np.rint(r + z * self.k).astype(np.int64)
        ok = visible & (r_img >= 1) & (r_img < H - 1)
        r_img, c, pw, xp = r_img[ok], c[ok], pw[ok] / self.area, xp[ok]
        w = np.stack([pw, pw * xp, pw * xp * 1.1, pw * 0.8]).astype(np.float32)
        for dr, dc, f in ((0, 0, 1.0), (1, 0, POINT_SIDELOBE), (-1, 0, POINT_SIDELOBE),
                          (0, 1, POINT_SIDELOBE), (0, -1, POINT_SIDELOBE)):
            for b in range(4):
                np.add.at(out[b], (r_img + dr, c + dc), w[b] * np.float32(f))
        return out


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _horizon(hgt, delta):
    """Height of the sensor's grazing ray over each pixel, from everything nearer the sensor
    (canonical frame: higher rows): max over k > r of h[k] - (k - r) * delta."""
    H = hgt.shape[0]
    rows = np.arange(H, dtype=np.float32)[:, None] * np.float32(delta)
    m = np.maximum.accumulate((hgt - rows)[::-1], axis=0)[::-1]
    out = np.full(hgt.shape, -np.inf, dtype=np.float32)
    out[:-1] = m[1:] + rows[:-1]
    return out


def _segments(lo_list, hi_list, col_list, w_list, H, W):
    """Sum of constant-density segments (rows [lo, hi) of a column, value w (4, n) per pixel),
    through a difference array and one cumulative sum along the rows."""
    out = np.zeros((4, H, W), dtype=np.float32)
    if not lo_list:
        return out
    lo = np.clip(np.concatenate(lo_list), 0, H)
    hi = np.clip(np.concatenate(hi_list), 0, H)
    col = np.concatenate(col_list)
    w = np.concatenate(w_list, axis=1)
    ok = hi > lo
    lo, hi, col, w = lo[ok], hi[ok], col[ok], w[:, ok]
    idx = np.concatenate([lo * W + col, hi * W + col])
    for b in range(4):
        diff = np.bincount(idx, weights=np.concatenate([w[b], -w[b]]), minlength=(H + 1) * W)
        out[b] = np.cumsum(diff.reshape(H + 1, W)[:H], axis=0)
    return out


def _deposit(idx_list, w_list, rows, cols, w, H, W):
    ok = (rows >= 0) & (rows < H)
    idx_list.append((rows[ok] * W + cols[ok]).astype(np.int64))
    w_list.append(np.asarray(w, dtype=np.float32)[:, ok])


def _flush(idx_list, w_list, H, W):
    out = np.zeros((4, H, W), dtype=np.float32)
    if not idx_list:
        return out
    idx = np.concatenate(idx_list)
    w = np.concatenate(w_list, axis=1)
    for b in range(4):
        out[b] = np.bincount(idx, weights=w[b], minlength=H * W).reshape(H, W)
    return out


def _gather(cells):
    """All cells' parts with object indices made global, the object table and the points."""
    parts, objects, points = [], [], []
    offset = 0
    for cell in cells:
        if len(cell.parts):
            p = cell.parts.copy()
            p[:, 8] += offset
            parts.append(p)
        objects.append(cell.objects)
        offset += len(cell.objects)
        if len(cell.points):
            points.append(cell.points)
    parts = np.concatenate(parts) if parts else np.zeros((0, 9))
    objects = np.concatenate(objects) if objects else np.zeros((0, 5))
    points = np.concatenate(points) if points else np.zeros((0, 5))
    return parts, objects, points
