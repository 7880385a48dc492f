"""Scenes: a GeoTIFF written block by block plus the footprints, from one seed.

Memory stays bounded whatever the size: the raster is produced in blocks of ``block_px``
(default 1024) pixels, each rendered with a margin wide enough for layover and shadow from
objects outside it, and written through rasterio windows. Speckle (and the phase of complex
output) is drawn per block from ``(seed, block row, block col)``, everything else from the
world's cells, so a block renders the same on its own as inside a full run.

The output covers every input path of a real product: any scale of :data:`SCALES`, any pixel
size (the world is in metres, so the same origin and extent give the same ground and labels),
four look directions, and north-up or south-up storage (rows reversed, positive pixel height).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from ..feedback import Feedback
from ..radiometry.scales import SCALES, SN6_DB_GAIN, SN6_DB_OFFSET, SN6_NODATA, from_linear
from . import layout as L
from .render import BANDS, LOOK_DIRECTIONS, Renderer

DEFAULT_ORIGIN = (594000.0, 5750000.0)   # Rotterdam harbour, UTM 31N (the SN6 area)
MIN_LABEL_AREA_M2 = 20.0
STORAGES = ("north-up", "south-up")
# What the values of each output scale mean, for the SCALE tag (SAR_SCALE holds the name).
SCALE_TEXTS = {
    "sn6": ("SN6 SAR-Intensity: value = gain[band] * dB + offset[band], gains %s, offsets %s (HH, HV, VH, VV); "
            "0 = nodata" % (", ".join(f"{g:g}" for g in SN6_DB_GAIN), ", ".join(f"{o:g}" for o in SN6_DB_OFFSET))),
    "db": "dB (10 log10 of linear intensity); NaN = nodata",
    "linear": "linear intensity (backscatter coefficient, 1 = 0 dB); 0 = nodata",
    "amplitude": "amplitude = sqrt(linear intensity); 0 = nodata",
    "complex": "complex z = sqrt(linear intensity) * exp(i * phase), phase uniform random; intensity = |z|^2; "
               "0 = nodata",
}


@dataclass(frozen=True)
class SceneParameters:
    """Everything that determines a scene; stored as JSON in the GeoTIFF's metadata."""

    width_px: int = 1024
    height_px: int = 1024
    seed: int = 0
    pixel_size_m: float = 0.5
    look_direction: str = "north"
    incidence_deg: float = 35.0
    looks: int = 4
    building_density: float = 1.0
    scale: str = "sn6"
    nodata_strip: bool = False
    origin: tuple = DEFAULT_ORIGIN
    crs: str = "EPSG:32631"
    layout: str = "mixed"
    block_px: int = 1024
    storage: str = "north-up"

    def validate(self) -> None:
        """Refuse a parameter out of range with one line naming it and the CLI flag that sets it."""
        if not (16 <= self.width_px <= 1_000_000 and 16 <= self.height_px <= 1_000_000):
            raise ValueError(f"scene size must be 16 to 1,000,000 px per side, not {self.width_px} x {self.height_px} "
                             "(set --size, --width, --height)")
        if not 0.1 <= self.pixel_size_m <= 5.0:
            raise ValueError(f"pixel size must be between 0.1 and 5 m, not {self.pixel_size_m:g} (set --pixel-size)")
        if not 15.0 <= self.incidence_deg <= 60.0:
            raise ValueError(f"incidence angle must be between 15 and 60 degrees, not {self.incidence_deg:g} "
                             "(set --incidence)")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {self.scale!r} (set --scale)")
        if self.look_direction not in LOOK_DIRECTIONS:
            raise ValueError(f"look direction must be one of {', '.join(LOOK_DIRECTIONS)}, "
                             f"not {self.look_direction!r} (set --look)")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, not {self.storage!r} (set --storage)")
        if not 1 <= self.looks <= 100:
            raise ValueError(f"looks must be between 1 and 100, not {self.looks} (set --looks)")
        if self.block_px < 64 or self.block_px % 16:
            raise ValueError(f"block size must be a multiple of 16 of at least 64 px, not {self.block_px}")
        if self.layout not in L.LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(L.LAYOUTS)}, not {self.layout!r} (set --layout)")


@dataclass
class SceneInfo:
    """What :func:`simulate_scene` wrote."""

    raster_path: Path
    labels_path: Path | None
    width: int
    height: int
    transform: Affine
    crs: str
    building_count: int
    parameters: dict = field(default_factory=dict)
    seconds: float = 0.0


class SceneSimulator:
    """One scene's world, sensor and grid; renders blocks and lists labels without writing."""

    def __init__(self, params: SceneParameters):
        params.validate()
        self.params = params
        self.world = L.World(params.seed, params.origin, params.layout, params.building_density)
        self.renderer = Renderer(self.world, origin=params.origin, pixel_size=params.pixel_size_m,
                                 look=params.look_direction, incidence_deg=params.incidence_deg, looks=params.looks)
        p = params.pixel_size_m
        self.transform = Affine(p, 0.0, float(params.origin[0]), 0.0, -p, float(params.origin[1]))
        self.bounds = (float(params.origin[0]), float(params.origin[1]) - params.height_px * p,
                       float(params.origin[0]) + params.width_px * p, float(params.origin[1]))
        # the file's grid: north-up as rendered, or south-up (row 0 the southern edge, pixel height +p)
        self.stored_transform = (self.transform if params.storage == "north-up" else
                                 Affine(p, 0.0, self.bounds[0], 0.0, p, self.bounds[1]))
        self._strip = self._strip_edge() if params.nodata_strip else None

    # --- grid ----------------------------------------------------------------------------------
    def blocks(self):
        """(block row, block col, row0, col0, height, width) in row-major order."""
        b, P = self.params.block_px, self.params
        for bi in range(math.ceil(P.height_px / b)):
            for bj in range(math.ceil(P.width_px / b)):
                r0, c0 = bi * b, bj * b
                yield bi, bj, r0, c0, min(b, P.height_px - r0), min(b, P.width_px - c0)

    def render_block(self, bi: int, bj: int, diagnostics: bool = False) -> dict:
        """One block: "values" (the output scale, nodata applied, (4, h, w)) plus the renderer's
        layers ("intensity", "sigma", and with ``diagnostics`` "height", "shadow", "cover",
        "object_kind") and "valid" (False in the nodata strip)."""
        b, P = self.params.block_px, self.params
        r0, c0 = bi * b, bj * b
        h, w = min(b, P.height_px - r0), min(b, P.width_px - c0)
        if h <= 0 or w <= 0 or bi < 0 or bj < 0:
            raise ValueError(f"block ({bi}, {bj}) is outside the scene")
        rng = np.random.default_rng(np.random.SeedSequence([P.seed & 0xFFFFFFFF, bi, bj, 99]))
        out = self.renderer.render(r0, c0, h, w, rng, diagnostics=diagnostics)
        valid = self.valid_mask(r0, c0, h, w)
        out["valid"] = valid
        out["values"] = self.to_output(out["intensity"], valid, rng)
        return out

    def to_output(self, intensity: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Linear intensity -> the scene's scale, nodata where not ``valid``: SN6's 0 on sn6, NaN on
        db, 0 on linear and amplitude, 0+0j on complex (whose phase is drawn from ``rng``)."""
        scale = self.params.scale
        linear = np.array(intensity, dtype=np.float32)
        linear[:, ~valid] = np.nan
        if scale == "complex":
            phase = rng.random(linear.shape, dtype=np.float32) * np.float32(2 * math.pi)
            amplitude = np.sqrt(np.where(valid, linear, np.float32(0.0)))
            z = np.empty(linear.shape, dtype=np.complex64)
            z.real, z.imag = amplitude * np.cos(phase), amplitude * np.sin(phase)
            return z
        values = from_linear(linear, scale, BANDS)
        if scale in ("linear", "amplitude"):
            values[:, ~valid] = 0.0
        return values

    @property
    def nodata(self) -> float:
        """The nodata value the raster declares (NaN on the dB scale, 0 on every other)."""
        return float("nan") if self.params.scale == "db" else SN6_NODATA

    # --- nodata strip --------------------------------------------------------------------------
    def _strip_edge(self):
        """The swath edge: a line nearly along track on the far-range side (top for north-looking,
        the right for east-looking)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.params.seed & 0xFFFFFFFF, 5, 5, 55]))
        return float(rng.uniform(0.15, 0.45)), float(math.tan(math.radians(rng.uniform(-8, 8))))

    def _edge_depth(self, along_centres: np.ndarray) -> np.ndarray:
        """Pixels from the far-range side of the scene to the swath edge, at along-track positions
        (columns for north/south-looking scenes, rows for east/west-looking ones)."""
        frac, slope = self._strip
        P = self.params
        range_px, along_px = ((P.width_px, P.height_px) if self.renderer.across_track
                              else (P.height_px, P.width_px))
        return frac * range_px + slope * (along_centres - along_px / 2)

    def valid_mask(self, r0, c0, h, w) -> np.ndarray:
        """True where pixels [r0:r0+h, c0:c0+w] lie inside the swath (not in the nodata strip)."""
        if self._strip is None:
            return np.ones((h, w), dtype=bool)
        P = self.params
        if self.renderer.across_track:
            depth = self._edge_depth(r0 + np.arange(h) + 0.5)[:, None]
            cols = (c0 + np.arange(w) + 0.5)[None, :]
            return (P.width_px - cols if P.look_direction == "east" else cols) >= depth
        depth = self._edge_depth(c0 + np.arange(w) + 0.5)[None, :]
        rows = (r0 + np.arange(h) + 0.5)[:, None]
        if P.look_direction == "south":
            rows = P.height_px - rows
        return rows >= depth

    def valid_polygon(self):
        """The valid (not nodata) part of the scene as a polygon in map coordinates."""
        xmin, ymin, xmax, ymax = self.bounds
        box = shapely.box(xmin, ymin, xmax, ymax)
        if self._strip is None:
            return box
        P = self.params
        along_px = P.height_px if self.renderer.across_track else P.width_px
        d0, d1 = self._edge_depth(np.array([0.0, float(along_px)]))
        p = P.pixel_size_m
        if P.look_direction == "north":   # nodata above the edge: keep what is south of it
            half = shapely.Polygon([(xmin, ymax - d0 * p), (xmax, ymax - d1 * p), (xmax, ymin - 1e6 * p),
                                    (xmin, ymin - 1e6 * p)])
        elif P.look_direction == "south":
            half = shapely.Polygon([(xmin, ymin + d0 * p), (xmax, ymin + d1 * p), (xmax, ymax + 1e6 * p),
                                    (xmin, ymax + 1e6 * p)])
        elif P.look_direction == "east":   # nodata east of the edge (depth counted from the top row down)
            half = shapely.Polygon([(xmax - d0 * p, ymax), (xmax - d1 * p, ymin), (xmin - 1e6 * p, ymin),
                                    (xmin - 1e6 * p, ymax)])
        else:
            half = shapely.Polygon([(xmin + d0 * p, ymax), (xmin + d1 * p, ymin), (xmax + 1e6 * p, ymin),
                                    (xmax + 1e6 * p, ymax)])
        return box.intersection(half)

    # --- labels --------------------------------------------------------------------------------
    def labels(self):
        """(geometries, attributes): true ground footprints clipped to the valid scene area.
        A building cut into several pieces by the border gives one polygon per piece; pieces
        under 20 m² are dropped (whole buildings are all >= 36 m²)."""
        region = self.valid_polygon()
        geoms, attrs = [], {"building_id": [], "height_m": [], "roof": [], "shape": [], "area_m2": [],
                            "clipped": []}
        for poly, b in self.world.buildings_in(*region.bounds):
            if not poly.intersects(region):
                continue
            clipped = not region.contains(poly)
            pieces = [poly]
            if clipped:
                cut = poly.intersection(region)
                pieces = [g for g in getattr(cut, "geoms", [cut]) if g.geom_type == "Polygon"]
            for piece in pieces:
                piece = shapely.set_precision(piece, 1e-3)
                if piece.is_empty or piece.area < MIN_LABEL_AREA_M2:
                    continue
                geoms.append(piece)
                attrs["building_id"].append(len(geoms))
                attrs["height_m"].append(round(b.height_m, 2))
                attrs["roof"].append(b.roof)
                attrs["shape"].append(b.shape)
                attrs["area_m2"].append(round(float(piece.area), 2))
                attrs["clipped"].append(int(clipped))
        return geoms, attrs


def simulate_scene(raster_path, labels_path=None, *, width_px: int = 1024, height_px: int = 1024, seed: int = 0,
                   pixel_size_m: float = 0.5, look_direction: str = "north", incidence_deg: float = 35.0,
                   looks: int = 4, building_density: float = 1.0, scale: str = "sn6", nodata_strip: bool = False,
                   origin=DEFAULT_ORIGIN, crs: str = "EPSG:32631", layout: str = "mixed", block_px: int = 1024,
                   storage: str = "north-up", feedback: Feedback | None = None) -> SceneInfo:
    """Write a simulated SN6-like SAR scene (4-band GeoTIFF: HH, HV, VH, VV) and its building
    footprints (GeoPackage/GeoJSON by extension; ``labels_path`` None skips them).

    ``scale``: ``"sn6"`` SN6 SAR-Intensity values (see :mod:`..radiometry.scales`), nodata 0;
    ``"db"`` decibels, nodata NaN, band unit dB; ``"linear"`` intensity and ``"amplitude"`` its
    square root, float32, nodata 0; ``"complex"`` complex64 sqrt(intensity) * exp(i phase), nodata
    0. ``look_direction``: north, south, east or west. ``storage="south-up"`` writes the same
    scene with rows reversed and a positive pixel height (``SceneInfo.transform`` is the file's).
    Deterministic from ``seed`` and the other parameters. Files appear only when complete;
    cancelling through ``feedback`` leaves nothing behind.
    """
    import rasterio

    from ..vector_io import write_footprints

    feedback = feedback or Feedback()
    started = time.perf_counter()
    params = SceneParameters(int(width_px), int(height_px), int(seed), float(pixel_size_m), str(look_direction),
                             float(incidence_deg), int(looks), float(building_density), str(scale),
                             bool(nodata_strip), (float(origin[0]), float(origin[1])), str(crs), str(layout),
                             int(block_px), str(storage))
    sim = SceneSimulator(params)
    raster_path = Path(raster_path)
    if not raster_path.parent.is_dir():
        raise FileNotFoundError(f"output folder {raster_path.parent} does not exist")
    if labels_path is not None:
        from ..vector_io import DRIVERS_BY_SUFFIX

        if Path(labels_path).resolve() == raster_path.resolve():
            raise ValueError("the labels path is the raster path; choose two different files")
        if Path(labels_path).suffix.lower() not in DRIVERS_BY_SUFFIX:   # fail before rendering, not after
            raise ValueError(f"unknown vector format {Path(labels_path).suffix!r}; use .gpkg or .geojson")
        if not Path(labels_path).parent.is_dir():
            raise FileNotFoundError(f"output folder {Path(labels_path).parent} does not exist")

    feedback.info(f"simulating {params.width_px} x {params.height_px} px of {params.pixel_size_m:g} m, seed "
                  f"{params.seed}, {params.look_direction}-looking at {params.incidence_deg:g} deg, layout "
                  f"{params.layout}, {params.scale} scale, stored {params.storage}")
    count = 0
    if labels_path is not None:
        geoms, attrs = sim.labels()
        count = len(geoms)
        feedback.check_cancelled()
    feedback.set_progress(5)

    tile = 512 if min(params.width_px, params.height_px) >= 512 else 256
    profile = dict(driver="GTiff", width=params.width_px, height=params.height_px, count=4,
                   dtype="complex64" if params.scale == "complex" else "float32", crs=params.crs,
                   transform=sim.stored_transform, tiled=True, blockxsize=tile, blockysize=tile, nodata=sim.nodata,
                   BIGTIFF="IF_SAFER")
    south_up = params.storage == "south-up"
    tmp = raster_path.with_name(f".{raster_path.name}.partial")
    blocks = list(sim.blocks())
    try:
        # a small GDAL block cache: written tiles go to disk instead of piling up in memory
        with rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024), rasterio.open(tmp, "w", **profile) as dst:
            for i, (bi, bj, r0, c0, h, w) in enumerate(blocks):
                feedback.check_cancelled()
                values = sim.render_block(bi, bj)["values"]
                if south_up:   # the block's rows reversed, at its mirrored row offset
                    values, r0 = values[:, ::-1], params.height_px - r0 - h
                dst.write(values, window=rasterio.windows.Window(c0, r0, w, h))
                feedback.set_progress(5 + 95 * (i + 1) / len(blocks))
            for b, name in enumerate(BANDS, start=1):
                dst.set_band_description(b, name)
                if params.scale == "db":
                    dst.set_band_unit(b, "dB")
            meta = asdict(params)
            dst.update_tags(SIMULATION=json.dumps(meta), BAND_ORDER=",".join(BANDS), SCALE=SCALE_TEXTS[params.scale],
                            SAR_SCALE=params.scale, LOOK_DIRECTION=params.look_direction)
        if labels_path is not None:
            write_footprints(labels_path, geoms, attrs, crs=params.crs)
        os.replace(tmp, raster_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - started
    feedback.info(f"wrote {raster_path} and {count} footprints in {seconds:.1f} s")
    return SceneInfo(raster_path, Path(labels_path) if labels_path is not None else None, params.width_px,
                     params.height_px, sim.stored_transform, params.crs, count, asdict(params), seconds)
