"""Footprint files through pyogrio (GeoPackage, GeoJSON, Shapefile, FlatGeobuf), without QGIS.

The CLI and the tests read and write vectors here; inside QGIS the Processing layer uses
feature sources and sinks instead. Writes are complete or absent: a temporary file, reopened
and counted, moved into place; an existing GeoPackage keeps its other layers.
pyogrio and rasterio's CRS stand in for GDAL's own Python bindings (``osgeo``), which pip
cannot install portably: this module must import in the plugin's plain worker venv.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform as transform_xy

with warnings.catch_warnings():
    # pyogrio imports pyproj when it can (for GeoDataFrames, unused here). Where it finds a
    # system pyproj that cannot locate its data (Debian's, from a venv with system site packages:
    # the dev .venv), that import warns on stderr; nothing here uses pyproj.
    warnings.filterwarnings("ignore", message="Valid PROJ data directory not found", category=UserWarning)
    import pyogrio
    import pyogrio.raw
    from pyogrio.errors import DataLayerError, DataSourceError, FeatureError

GPKG_VERSION = {"VERSION": "1.2"}  # readable without warnings by every GDAL QGIS 3.22+ ships
DRIVERS_BY_SUFFIX = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON",
                     ".shp": "ESRI Shapefile", ".fgb": "FlatGeobuf"}


class VectorError(ValueError):
    """A vector file that cannot be read or written; the message says why."""


@dataclass
class FootprintTable:
    """Polygons with their attribute columns and CRS (WKT, or None when unknown)."""

    geometries: list
    attributes: dict[str, list] = field(default_factory=dict)
    crs_wkt: str | None = None

    def __len__(self) -> int:
        return len(self.geometries)


def spatial_reference(crs) -> CRS | None:
    """A CRS from WKT, 'EPSG:n', PROJ text or a CRS; rasterio keeps axis order x/y (east, north)."""
    if crs is None or crs == "":
        return None
    return crs if isinstance(crs, CRS) else CRS.from_user_input(str(crs))


def crs_wkt(crs) -> str | None:
    """The CRS as WKT (what :class:`FootprintTable` stores), ``None`` when unknown."""
    srs = spatial_reference(crs)
    return srs.to_wkt() if srs is not None else None


def crs_name(crs) -> str | None:
    """The CRS's own name, as its WKT states it (e.g. 'WGS 84 / UTM zone 16N')."""
    wkt = crs_wkt(crs)
    match = re.match(r'\s*\w+\[\s*"([^"]*)"', wkt or "")
    return match.group(1) if match else None


def is_geographic(crs) -> bool:
    srs = spatial_reference(crs)
    return bool(srs and srs.is_geographic)


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS 84 UTM zone holding a point: a metric CRS for measuring in metres."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def reproject(geometries: list, source_crs, target_crs) -> list:
    """Geometries moved from one CRS to another (unchanged when either is unknown or equal)."""
    source, target = spatial_reference(source_crs), spatial_reference(target_crs)
    if source is None or target is None or source == target or len(geometries) == 0:
        return list(geometries)

    def move(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return xy
        xs, ys = transform_xy(source, target, xy[:, 0], xy[:, 1])
        return np.column_stack([xs, ys])

    # One call for all coordinates: a transformation is set up once, not per geometry.
    return list(shapely.transform(np.asarray(geometries, dtype=object), move))


def metric_crs(crs, geometries: list) -> str | None:
    """``crs`` itself when projected; for a geographic CRS, the UTM zone at the data's centre."""
    if not is_geographic(crs):
        return crs
    bounds = shapely.total_bounds([g for g in geometries if g is not None and not g.is_empty])
    if any(math.isnan(b) for b in bounds):
        return utm_crs_for(0.0, 0.0)
    centre = shapely.Point((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    lonlat = reproject([centre], crs, "EPSG:4326")[0]
    return utm_crs_for(lonlat.x, lonlat.y)


def _python_values(values: np.ndarray, ogr_type: str, ogr_subtype: str) -> list:
    """One column as OGR's ``GetField`` gave it: Python values, ``None`` for nulls.
    pyogrio reads integer columns holding nulls as floats with NaN, hence the way back."""
    if values.dtype.kind == "f":
        whole = ogr_type.startswith("OFTInteger")
        return [None if math.isnan(v) else int(v) if whole else v for v in values.tolist()]
    if values.dtype.kind == "b" or ogr_subtype == "OFSTBoolean":
        return [int(v) for v in values.tolist()]
    return values.tolist()


def read_footprints(path: str | os.PathLike, layer: str | int | None = None,
                    target_crs=None) -> FootprintTable:
    """Every feature of one layer: geometry (shapely) and fields; reprojected to
    ``target_crs`` when given. Features without geometry are kept as ``None``."""
    path = Path(path)
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(str(path), layer=layer if layer is not None else 0,
                                                    datetime_as_string=True)
    except (DataSourceError, FeatureError) as exc:  # FeatureError is a DataLayerError: first
        raise VectorError(f"Cannot open {path} as a vector file: {exc}") from exc
    except DataLayerError as exc:
        raise VectorError(f"{path} has no layer {layer!r}.") from exc
        raise VectorError(f"Cannot open {path} as a vector file: {exc}") from exc
    geometries = list(shapely.from_wkb(wkb)) if len(wkb) else []
    columns = {name: _python_values(values, ogr_type, subtype) for name, values, ogr_type, subtype
               in zip(meta["fields"], field_data, meta["ogr_types"], meta["ogr_subtypes"])}
    wkt = crs_wkt(meta["crs"])
    if target_crs is not None and wkt is not None:
        keep = [i for i, g in enumerate(geometries) if g is not None]
        moved = reproject([geometries[i] for i in keep], wkt, target_crs)
        for i, g in zip(keep, moved):
            geometries[i] = g
        wkt = crs_wkt(target_crs)
    return FootprintTable(geometries, columns, wkt)


def _field_type(values: list) -> str:
    """int64, real or string, as the values allow (None does not count)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, int)) for v in present):
        return "int64"
    if present and all(isinstance(v, (bool, int, float)) for v in present):
        return "float64"
    return "string"


def _column(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(values as one typed array, mask of the missing ones) for pyogrio. Numbers in a
    string column are written as text, as OGR's ``SetField`` did."""
    kind = _field_type(values)
    plain = [v.item() if hasattr(v, "item") else v for v in values]
    missing = np.array([v is None for v in plain], dtype=bool)
    if kind == "string":
        text = [None if v is None else str(int(v)) if isinstance(v, bool) else str(v) for v in plain]
        return np.array(text, dtype=object), missing
    fill = 0 if kind == "int64" else math.nan
    return np.array([fill if v is None else v for v in plain], dtype=kind), missing


def write_footprints(path: str | os.PathLike, geometries: list, attributes: dict[str, list] | None = None,
                     crs=None, layer_name: str = "footprints", feedback=None) -> Path:
    """Write polygons and attribute columns; the format follows the file's extension.

    Complete or absent: the file is written under a temporary name in the target folder, reopened
    and its features counted, and only then moved into place; a failed, cancelled (``feedback``'s
    cancel, or a :class:`Cancelled` from the CLI's SIGTERM handler) or interrupted write removes
    what it made. An existing file is replaced,
    except an existing GeoPackage: there only the layer ``layer_name`` is added or replaced and its
    other layers are kept. A full disk, a file size limit or a denied permission is one line."""
    from ..output_safety import OutputWriteError, geopackage_layers, write_error_message

    path = Path(path)
    driver_name = DRIVERS_BY_SUFFIX.get(path.suffix.lower())
    if driver_name is None:
        raise VectorError(f"Unknown vector format {path.suffix!r}; use one of {', '.join(DRIVERS_BY_SUFFIX)}.")
    if not path.parent.is_dir():
        raise VectorError(f"Output folder {path.parent} does not exist; create it or choose another path.")
    attributes = attributes or {}
    columns = [_column(list(values)) for values in attributes.values()]
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geometries], dtype=object)
    geometry_type = ("MultiPolygon" if any(g is not None and g.geom_type == "MultiPolygon" for g in geometries)
                     else "Polygon")
    kept_layers = ([name for name in geopackage_layers(path) or [] if name != layer_name]
                   if driver_name == "GPKG" else [])
    try:
        tmp_dir = tempfile.mkdtemp(prefix=".sn6-", dir=path.parent)
    except OSError as exc:
        raise OutputWriteError(write_error_message(path, exc)) from exc
    tmp_path = Path(tmp_dir) / path.name
    try:
        try:
            if kept_layers:  # the user's GeoPackage with its other layers: a copy gets the new layer
                shutil.copy2(path, tmp_path)
            # NaN stays a value and only None is null; in a MultiPolygon layer every polygon is
            # written as a one-part MultiPolygon (a conformant GeoPackage, no GDAL warning). New
            # GeoPackages are version 1.2, which QGIS 3.22's GDAL 3.6 reads without a warning (the
            # wheels' GDAL would write 1.4). No CRS is allowed: pixel-space and unknown-CRS layers
            # are written as such, without pyogrio's warning.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
                pyogrio.raw.write(str(tmp_path), wkb, [values for values, _ in columns], list(attributes),
                                  field_mask=[missing for _, missing in columns], layer=layer_name,
                                  driver=driver_name, geometry_type=geometry_type, crs=crs_wkt(crs),
                                  promote_to_multi=geometry_type == "MultiPolygon", nan_as_null=False,
                                  dataset_options=GPKG_VERSION if driver_name == "GPKG" and not kept_layers
                                  else None)
            problem = _written_problem(tmp_path, driver_name, layer_name, len(geometries), kept_layers)
        except (OSError, RuntimeError) as exc:  # pyogrio's errors are RuntimeErrors
            raise OutputWriteError(write_error_message(path, exc)) from exc
        if problem:
            raise OutputWriteError(write_error_message(path, problem))
        if feedback is not None:
            feedback.check_cancelled()
        for produced in Path(tmp_dir).iterdir():  # shapefiles are several files
            os.replace(produced, path.parent / produced.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _written_problem(path: Path, driver_name: str, layer_name: str, expected: int, kept_layers: list) -> str | None:
    """What is wrong with a freshly written file (reopened: features counted, kept layers there), or None."""
    layer = layer_name if driver_name == "GPKG" else 0
    try:
        count = pyogrio.read_info(str(path), layer=layer, force_feature_count=True)["features"]
        present = {str(name) for name, _ in pyogrio.list_layers(str(path))} if kept_layers else set()
    except (DataSourceError, DataLayerError) as exc:
        return f"the written file cannot be reopened ({exc})"
    if count != expected:
        return f"the written file holds {count} of {expected} features"
    missing = [name for name in kept_layers if name not in present]
    if missing:
        return f"the layers {', '.join(missing)} went missing while writing"
    return None
