"""Footprint files through OGR (GeoPackage, GeoJSON, Shapefile, ...), without QGIS.

The CLI and the tests read and write vectors here; inside QGIS the Processing layer uses
feature sources and sinks instead. Writes are atomic: a temporary file moved into place.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from osgeo import ogr, osr

ogr.UseExceptions()
osr.UseExceptions()

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


def spatial_reference(crs) -> osr.SpatialReference | None:
    """An OSR reference from WKT, 'EPSG:n' or PROJ text, axis order x/y (east, north)."""
    if crs is None or crs == "":
        return None
    srs = osr.SpatialReference()
    srs.SetFromUserInput(str(crs))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def is_geographic(crs) -> bool:
    srs = spatial_reference(crs)
    return bool(srs and srs.IsGeographic())


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS 84 UTM zone holding a point: a metric CRS for measuring in metres."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def reproject(geometries: list, source_crs, target_crs) -> list:
    """Geometries moved from one CRS to another (unchanged when either is unknown or equal)."""
    source, target = spatial_reference(source_crs), spatial_reference(target_crs)
    if source is None or target is None or source.IsSame(target):
        return list(geometries)
    transform = osr.CoordinateTransformation(source, target)

    def move(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return xy
        return np.asarray(transform.TransformPoints(xy[:, :2].tolist()))[:, :2]

    return [shapely.transform(g, move) for g in geometries]


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


def read_footprints(path: str | os.PathLike, layer: str | int | None = None,
                    target_crs=None) -> FootprintTable:
    """Every feature of one layer: geometry (shapely) and fields; reprojected to
    ``target_crs`` when given. Features without geometry are kept as ``None``."""
    path = Path(path)
    try:
        source = ogr.Open(str(path))
    except RuntimeError as exc:
        raise VectorError(f"Cannot open {path} as a vector file: {exc}") from exc
    if source is None:
        raise VectorError(f"Cannot open {path} as a vector file.")
    ogr_layer = source.GetLayer(layer if layer is not None else 0)
    if ogr_layer is None:
        raise VectorError(f"{path} has no layer {layer!r}.")
    definition = ogr_layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    geometries, columns = [], {name: [] for name in names}
    for feature in ogr_layer:
        ogr_geometry = feature.GetGeometryRef()
        geometries.append(None if ogr_geometry is None else shapely.from_wkb(bytes(ogr_geometry.ExportToIsoWkb())))
        for name in names:
            columns[name].append(feature.GetField(name))
    srs = ogr_layer.GetSpatialRef()
    crs_wkt = srs.ExportToWkt() if srs is not None else None
    if target_crs is not None and crs_wkt is not None:
        keep = [i for i, g in enumerate(geometries) if g is not None]
        moved = reproject([geometries[i] for i in keep], crs_wkt, target_crs)
        for i, g in zip(keep, moved):
            geometries[i] = g
        crs_wkt = spatial_reference(target_crs).ExportToWkt()
    return FootprintTable(geometries, columns, crs_wkt)


def _field_type(values: list) -> int:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, int)) for v in present):
        return ogr.OFTInteger64
    if present and all(isinstance(v, (bool, int, float)) for v in present):
        return ogr.OFTReal
    return ogr.OFTString


def write_footprints(path: str | os.PathLike, geometries: list, attributes: dict[str, list] | None = None,
                     crs=None, layer_name: str = "footprints") -> Path:
    """Write polygons and attribute columns; the format follows the file's extension.
    The file appears only when complete; an existing file is replaced."""
    path = Path(path)
    driver_name = DRIVERS_BY_SUFFIX.get(path.suffix.lower())
    if driver_name is None:
        raise VectorError(f"Unknown vector format {path.suffix!r}; use one of {', '.join(DRIVERS_BY_SUFFIX)}.")
    if not path.parent.is_dir():
        raise VectorError(f"Output folder {path.parent} does not exist; create it or choose another path.")
    attributes = attributes or {}
    tmp_dir = tempfile.mkdtemp(prefix=".sn6-", dir=path.parent)
    tmp_path = Path(tmp_dir) / path.name
    try:
        data_source = ogr.GetDriverByName(driver_name).CreateDataSource(str(tmp_path))
        ogr_layer = data_source.CreateLayer(layer_name, spatial_reference(crs), ogr.wkbMultiPolygon
                                            if any(g is not None and g.geom_type == "MultiPolygon" for g in geometries)
                                            else ogr.wkbPolygon)
        for name, values in attributes.items():
            ogr_layer.CreateField(ogr.FieldDefn(name, _field_type(values)))
        definition = ogr_layer.GetLayerDefn()
        ogr_layer.StartTransaction()
        for i, geometry in enumerate(geometries):
            feature = ogr.Feature(definition)
            if geometry is not None:
                feature.SetGeometry(ogr.CreateGeometryFromWkb(shapely.to_wkb(geometry)))
            for name, values in attributes.items():
                value = values[i]
                if value is not None:
                    feature.SetField(name, value.item() if hasattr(value, "item") else value)
            ogr_layer.CreateFeature(feature)
        ogr_layer.CommitTransaction()
        data_source = None  # flush and close
        for produced in Path(tmp_dir).iterdir():  # shapefiles are several files
            os.replace(produced, path.parent / produced.name)
    finally:
        for leftover in Path(tmp_dir).glob("*"):
            leftover.unlink()
        os.rmdir(tmp_dir)
    return path
