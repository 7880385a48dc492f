"""Ground truth and training labels: building footprint polygons, read the same way on every path.

Extraction's ``--truth``, scoring's truth and proposals and training's labels must be
Polygon or MultiPolygon layers: points, lines, geometry collections, mixed layers and files
without geometry are refused with the reason, before any heavy work. Invalid polygons
(self-intersections, bow-ties) are repaired with ``shapely.make_valid``, keeping their
polygonal parts (largest first, so a scorer taking a MULTIPOLYGON's first part takes the
main building), and counted in the log. A SpaceNet CSV in pixel space (``ImageId,
BuildingId, PolygonWKT_Pix``) given as a raster's truth is placed with that raster's
geotransform (rotated ones too). QGIS-free: the CLI, the worker and the tests use it.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from . import vector_io
from .feedback import Feedback

FIX = "choose the building footprint polygons"
SPACENET_HINT = "or a SpaceNet CSV with the columns ImageId and PolygonWKT_Pix"
_KINDS = {"point": "points", "multipoint": "points", "linestring": "lines", "multilinestring": "lines",
          "linearring": "lines", "polygon": "polygons", "multipolygon": "polygons",
          "geometrycollection": "geometry collections", "curvepolygon": "curved polygons",
          "multisurface": "curved polygons", "compoundcurve": "lines", "circularstring": "lines",
          "multicurve": "lines", "polyhedralsurface": "surfaces", "tin": "surfaces", "triangle": "surfaces"}
_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
               6: "MultiPolygon", 7: "GeometryCollection"}


class TruthError(ValueError):
    """Ground truth or labels of the wrong kind; the message names the problem and the fix."""


@dataclass
class PolygonLayer:
    """Footprints as read: polygons (``None`` for rows without a usable one), fields, CRS and
    what the repair did."""

    path: Path
    geometries: list
    attributes: dict[str, list] = field(default_factory=dict)
    crs_wkt: str | None = None
    repaired: int = 0
    emptied: int = 0       # invalid polygons with no area left after the repair
    pixel_space: bool = False

    def __len__(self) -> int:
        return len(self.geometries)

    @property
    def polygons(self) -> list:
        """The non-empty polygons alone."""
        return [g for g in self.geometries if g is not None and not g.is_empty]


def _kind(type_name: str | None) -> str:
    """'points', 'lines', 'polygons', ... for an OGR or shapely geometry type name."""
    name = (type_name or "").lower().replace("2.5d", "").replace(" ", "")
    for suffix in ("zm", "z", "m"):
        if name.endswith(suffix) and name[:-len(suffix)] in _KINDS:
            name = name[:-len(suffix)]
    return _KINDS.get(name, "unknown")


def _refuse(name: str, kinds: list[str], hint: str = "") -> TruthError:
    others = [k for k in kinds if k != "polygons"]
    if "polygons" in kinds:
        return TruthError(f"{name} holds {' and '.join(others)} as well as polygons: {FIX} only (a layer of "
                          f"Polygon/MultiPolygon features){hint}")
    return TruthError(f"{name} holds {' and '.join(others)}, not polygons: {FIX}{hint}")


def check_polygons(geometries, name: str, declared_type: str | None = "Unknown", hint: str = "") -> None:
    """Refuse anything but Polygon/MultiPolygon features (missing and empty ones pass)."""
    declared = _kind(declared_type)
    if declared not in ("polygons", "unknown", "geometry collections"):
        raise _refuse(name, [declared], hint)
    array = np.asarray(list(geometries), dtype=object)
    present = array[~shapely.is_missing(array)] if len(array) else array
    present = present[~shapely.is_empty(present)] if len(present) else present
    type_ids = np.unique(shapely.get_type_id(present)) if len(present) else []
    kinds = sorted({_kind(_TYPE_NAMES.get(int(t))) for t in type_ids}, key=lambda k: (k != "polygons", k))
    if kinds and kinds != ["polygons"]:
        raise _refuse(name, kinds, hint)


def polygonal_part(geometry):
    """The polygons of a repaired geometry: a Polygon, or a MultiPolygon with its parts
    largest first; an empty Polygon when nothing with area is left."""
    parts = []
    stack = [geometry]
    while stack:
        g = stack.pop()
        if g is None or g.is_empty:
            continue
        if g.geom_type == "Polygon":
            if g.area > 0:
                parts.append(g)
        elif hasattr(g, "geoms"):
            stack.extend(g.geoms)
    if not parts:
        return shapely.Polygon()
    if len(parts) == 1:
        return parts[0]
    return shapely.MultiPolygon(sorted(parts, key=lambda p: -p.area))


def repair_polygons(geometries) -> tuple[list, int, int]:
    """``(geometries, repaired, emptied)``: invalid polygons made valid with ``make_valid``
    (their polygonal parts), the others unchanged; ``emptied`` of them had no area left and
    become ``None``."""
    out = list(geometries)
    array = np.asarray(out, dtype=object)
    if len(array) == 0:
        return out, 0, 0
    present = ~shapely.is_missing(array)
    invalid = np.zeros(len(array), bool)
    invalid[present] = ~shapely.is_valid(array[present])
    emptied = 0
    for i in np.flatnonzero(invalid).tolist():
        fixed = polygonal_part(shapely.make_valid(out[i]))
        if fixed.is_empty:
            emptied += 1
            fixed = None
        out[i] = fixed
    return out, int(invalid.sum()), emptied


def report_repairs(layer, what: str, feedback: Feedback) -> None:
    """'repaired 3 invalid ground-truth polygon(s)' in the log (and the ones left empty); ``layer``
    has ``path``, ``repaired`` and ``emptied`` (a :class:`PolygonLayer` or a FootprintSource)."""
    if layer.repaired:
        emptied = (f"; {layer.emptied} had no area left and are not used" if layer.emptied else "")
        feedback.info(f"{layer.path.name}: repaired {layer.repaired} invalid {what} polygon(s) with make_valid "
                      f"(self-intersections; their polygonal parts kept){emptied}")


def is_csv(path) -> bool:
    return Path(path).suffix.lower() == ".csv"


def read_polygon_layer(path: str | os.PathLike, *, target_crs=None, repair: bool = True) -> PolygonLayer:
    """One OGR layer of polygons, checked and (unless ``repair`` is false) repaired; features
    without geometry are kept as ``None`` (they may register an image). Reprojected to
    ``target_crs`` when given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    hint = f" ({SPACENET_HINT})" if is_csv(path) else ""
    declared = "Unknown"
    try:
        info = vector_io.pyogrio.read_info(str(path), layer=0)
    except Exception:  # noqa: BLE001 - unreadable files: read_footprints says why in its own words
        info = None
    if info is not None:
        declared = info.get("geometry_type")
        if declared is None:
            columns = ", ".join(map(str, info.get("fields", []))) or "none"
            raise TruthError(f"{path.name} has no geometry (a table with columns {columns}), not polygons: "
                             f"{FIX}{hint}")
    table = vector_io.read_footprints(path, target_crs=target_crs)
    check_polygons(table.geometries, path.name, declared, hint)
    geometries, repaired, emptied = repair_polygons(table.geometries) if repair else (table.geometries, 0, 0)
    return PolygonLayer(path, geometries, table.attributes, table.crs_wkt, repaired, emptied)


# ---------------------------------------------------------------- SpaceNet pixel CSVs on a raster

def pixel_to_map(geometries: list, transform) -> list:
    """Pixel-space geometries (x = column, y = row, from the raster's top-left corner) in map
    coordinates through the raster's affine geotransform (rotation and shear included)."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def move(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    present = [i for i, g in enumerate(geometries) if g is not None]
    out = list(geometries)
    if present:
        moved = shapely.transform(np.asarray([geometries[i] for i in present], dtype=object), move)
        for i, g in zip(present, moved):
            out[i] = g
    return out


def _rows_of_raster(image_ids: list, raster_name: str, path: Path) -> tuple[list[int], str | None]:
    """Rows of the CSV that belong to the raster: all when it holds one image, else those whose
    ImageId ends the raster's file name (SpaceNet names rasters ``<product>_<ImageId>.tif``)."""
    images = list(dict.fromkeys(image_ids))
    if len(images) <= 1:
        return list(range(len(image_ids))), images[0] if images else None
    stem = Path(raster_name).stem
    matching = [i for i in images if stem == str(i) or stem.endswith("_" + str(i))]
    if not matching:
        shown = ", ".join(map(str, images[:3])) + (", …" if len(images) > 3 else "")
        raise TruthError(f"{path.name} holds {len(images)} images ({shown}) and none matches the raster's name "
                         f"{raster_name}: keep only this raster's rows (its ImageId) in the CSV, or name the "
                         f"raster <anything>_<ImageId>.tif")
    image = max(matching, key=lambda i: len(str(i)))
    return [k for k, i in enumerate(image_ids) if i == image], str(image)


def read_spacenet_truth(path: str | os.PathLike, raster_info, raster_name: str,
                        feedback: Feedback | None = None) -> PolygonLayer:
    """A SpaceNet pixel-space CSV placed on the raster (its CRS), checked and repaired."""
    from .footprint_sources import read_spacenet_csv

    feedback = feedback or Feedback()
    path = Path(path)
    try:
        source = read_spacenet_csv(path)
    except ValueError as exc:
        if "is not a SpaceNet CSV" not in str(exc):
            raise
        with open(path, newline="", encoding="utf-8-sig") as handle:
            columns = ", ".join(next(csv.reader(handle), [])) or "none"
        geo = (": PolygonWKT_Geo alone is not placed, convert it to a vector file"
               if "polygonwkt_geo" in columns.lower() else "")
        raise TruthError(f"{path.name} has no geometry (a table with columns {columns}), not polygons: {FIX} "
                         f"({SPACENET_HINT}{geo})") from None
    check_polygons(source.geometries, path.name, hint=f" ({SPACENET_HINT}: polygons in pixel coordinates)")
    rows, image = _rows_of_raster(source.image_ids, raster_name, path)
    pixels = [source.geometries[i] for i in rows]
    pixels, repaired, emptied = repair_polygons(pixels)
    polygons = [g for g in pixels if g is not None and not g.is_empty]
    width, height = raster_info.width, raster_info.height
    frame = shapely.box(0, 0, width, height)
    with np.errstate(invalid="ignore"):  # GEOS's NaN for disjoint pairs is only a warning
        inside = [g for g in polygons if g.intersects(frame) and g.intersection(frame).area > 0]
    if polygons and not inside:
        x0, y0, x1, y1 = shapely.total_bounds(polygons)
        raise TruthError(f"{path.name}: none of its {len(polygons)} pixel polygon(s) lie on {raster_name} "
                         f"(0–{width} x 0–{height} px; theirs span x {x0:g}–{x1:g}, y {y0:g}–{y1:g}): choose the "
                         "CSV of this raster's image, or a georeferenced footprint layer")
    if len(inside) < len(polygons):
        feedback.warning(f"{path.name}: {len(polygons) - len(inside)} of its {len(polygons)} pixel polygon(s) lie "
                         f"outside {raster_name} and cannot be matched")
    placed = pixel_to_map(pixels, raster_info.transform)
    of_image = f" (ImageId {image}, {len(rows)} of {len(source)} rows)" if len(rows) < len(source) else ""
    feedback.info(f"{path.name} is a SpaceNet CSV in pixel coordinates: {len(polygons)} polygon(s){of_image} placed "
                  f"on {raster_name} with its geotransform")
    layer = PolygonLayer(path, placed, {}, raster_info.crs_wkt, repaired, emptied, pixel_space=True)
    return layer


def is_spacenet_csv(path) -> bool:
    """A CSV whose header has ``PolygonWKT_Pix`` (SpaceNet's pixel-space footprints)."""
    if not is_csv(path):
        return False
    try:
        with open(path, encoding="utf-8-sig") as handle:
            header = handle.readline()
    except OSError:
        return False
    return "polygonwkt_pix" in header.lower()


# ---------------------------------------------------------------- a raster's truth or labels

def read_raster_truth(path: str | os.PathLike, raster_info, raster_name: str, *, what: str = "ground-truth",
                      feedback: Feedback | None = None) -> PolygonLayer:
    """Footprints of one raster in its CRS: a polygon layer in any CRS (reprojected) or a
    SpaceNet pixel CSV (placed with the geotransform); checked, repaired, counted in the log."""
    feedback = feedback or Feedback()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: choose the {what} footprint file")
    if is_csv(path):
        layer = read_spacenet_truth(path, raster_info, raster_name, feedback)
    else:
        layer = read_polygon_layer(path, target_crs=raster_info.crs_wkt)
        polygons = layer.polygons
        if polygons and raster_info.crs_wkt is not None:
            t, w, h = raster_info.transform, raster_info.width, raster_info.height
            outline = shapely.Polygon([t * (c, r) for c, r in ((0, 0), (w, 0), (w, h), (0, h))])
            if not any(shapely.intersects(outline, polygons).tolist()):
                feedback.warning(f"none of the {len(polygons)} {what} footprint(s) of {path.name} lie on "
                                 f"{raster_name}: check the layer's CRS and that it covers the raster")
    layer.geometries = layer.polygons
    report_repairs(layer, what, feedback)
    return layer


def read_extraction_truth(path, raster_info, raster_name: str, feedback: Feedback | None = None) -> PolygonLayer:
    """The ground truth of an extraction, before the inference: refuses the wrong kinds, warns
    when it holds no polygon (then every proposal is a false positive)."""
    feedback = feedback or Feedback()
    layer = read_raster_truth(path, raster_info, raster_name, what="ground-truth", feedback=feedback)
    if not layer.geometries:
        feedback.warning("the ground truth has no polygons: every proposal is a false positive")
    return layer


def scored_truth_message(report, min_area: float, units: str = "m²") -> str:
    """What the score was measured against, from the report itself."""
    scored = report.tp + report.fn
    small = sum(1 for s in report.truth_status if s == "filtered")
    text = f"Against {scored} ground-truth footprint(s)"
    if small:
        text += f" ({small} under the minimum area of {min_area:g} {units} not scored)"
    return text

