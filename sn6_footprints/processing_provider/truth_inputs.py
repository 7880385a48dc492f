"""Ground truth, proposals and labels in QGIS's process: checked before anything is exported.

The polygon-only parameters do not stop ``processing.run`` (QGIS 3.22 accepts a path to a
point file), so the geometry type QGIS already knows is checked here, cheaply, with the
same words as the core (``sn6_footprints/core/truth.py``, which checks every feature again
in the worker). Invalid polygons are exported as they are (Processing's own invalid-geometry
check would skip them or stop the run): the worker repairs them with ``make_valid`` and
counts them in the log, the same way as the CLI.
"""
from __future__ import annotations

import re
from pathlib import Path

from qgis.core import QgsProcessingException, QgsProcessingFeatureSource, QgsWkbTypes
from qgis.PyQt.QtCore import QCoreApplication, QUrl

FIX = "choose the building footprint polygons"
SPACENET_CSV = "a SpaceNet CSV with the columns ImageId and PolygonWKT_Pix"
_KINDS = {QgsWkbTypes.PointGeometry: "points", QgsWkbTypes.LineGeometry: "lines"}


def tr(text: str) -> str:
    return QCoreApplication.translate("Sn6Footprints", text)


def source_label(parameters: dict, name: str, fallback: str) -> str:
    """The file name the user gave (``truth.gpkg``), else the layer's name."""
    value = parameters.get(name)
    if isinstance(value, str) and value:
        path = value.split("|")[0]
        if Path(path).suffix:
            return Path(path).name
    return fallback or name


def export_path(scratch: Path, role: str, label: str) -> Path:
    """Where a source is exported for the worker: named after the user's file or layer
    (``scratch/truth/bowties.gpkg``), so the worker's messages name it too."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(label).stem).strip("._") or role
    folder = scratch / role
    folder.mkdir(exist_ok=True)
    return folder / f"{stem}.gpkg"


def check_polygon_source(source, label: str, hint: str = "") -> None:
    """Refuse a point, line or table source before any export, with the reason; ``hint`` is
    added for a table (e.g. what to do with a SpaceNet CSV)."""
    geometry = QgsWkbTypes.geometryType(source.wkbType())
    if geometry in _KINDS:
        raise QgsProcessingException(tr(f"{label} holds {_KINDS[geometry]}, not polygons: {FIX}"))
    if geometry == QgsWkbTypes.NullGeometry:
        columns = ", ".join(source.fields().names()) or "none"
        raise QgsProcessingException(tr(f"{label} has no geometry (a table with columns {columns}), not polygons: "
                                        f"{FIX}{hint}"))


def layer_file(layer) -> str | None:
    """The file behind an OGR or delimited-text layer, else None."""
    if layer is None:
        return None
    source = layer.source()
    if layer.providerType() == "delimitedtext":
        return QUrl(source).toLocalFile() or None
    if layer.providerType() == "ogr":
        return source.split("|")[0]
    return None


def spacenet_csv(algorithm, parameters: dict, name: str, context, source) -> str | None:
    """The file of a SpaceNet pixel-space CSV (fields ImageId and PolygonWKT_Pix, as QGIS reads
    it: a table, or a delimited-text layer of pixel polygons), passed to the worker as it is:
    it places the polygons with the raster's geotransform. None for any other source."""
    fields = {field.lower() for field in source.fields().names()}
    if not {"imageid", "polygonwkt_pix"} <= fields:
        return None
    path = layer_file(algorithm.parameterAsVectorLayer(parameters, name, context))
    if path and path.lower().endswith(".csv") and Path(path).is_file():
        return path
    return None


class UncheckedSource:
    """A Processing feature source read without the invalid-geometry check, for export_source:
    invalid truth polygons reach the worker, which repairs and counts them."""

    def __init__(self, source):
        self._source = source

    def fields(self):
        return self._source.fields()

    def wkbType(self):  # noqa: N802 - QGIS API
        return self._source.wkbType()

    def getFeatures(self, request):  # noqa: N802 - QGIS API
        return self._source.getFeatures(request, QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks)


def check_label_layers(layers) -> None:
    """Training labels: polygon layers, and not all of them empty (refused before training)."""
    for layer in layers:
        geometry = QgsWkbTypes.geometryType(layer.wkbType()) if hasattr(layer, "wkbType") else None
        if geometry in _KINDS:
            raise QgsProcessingException(tr(f"{layer.name()} holds {_KINDS[geometry]}, not polygons: {FIX}"))
        if geometry != QgsWkbTypes.PolygonGeometry:
            raise QgsProcessingException(tr(f"Layer '{layer.name()}' is not a polygon layer: {FIX}"))
    if layers and all(layer.featureCount() == 0 for layer in layers):
        names = ", ".join(layer.name() for layer in layers)
        raise QgsProcessingException(tr(f"The footprint layer(s) {names} hold no polygons: training needs the "
                                        f"building footprints of the rasters; {FIX}"))
