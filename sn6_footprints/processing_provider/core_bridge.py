"""Bridges between QGIS Processing and the QGIS-free core."""
from __future__ import annotations

import shapely
from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureRequest,
                       QgsGeometry, QgsProcessingException, QgsProcessingFeedback)

from ..core.feedback import Feedback


class ProcessingFeedback(Feedback):
    """The core's feedback on top of ``QgsProcessingFeedback`` (progress bar, log, Cancel)."""

    def __init__(self, feedback: QgsProcessingFeedback):
        self.feedback = feedback

    def set_progress(self, percent: float) -> None:
        self.feedback.setProgress(percent)

    def info(self, message: str) -> None:
        self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        self.feedback.reportError(message, False)

    def is_cancelled(self) -> bool:
        return self.feedback.isCanceled()


def source_geometries(source, crs: QgsCoordinateReferenceSystem, context, feedback=None,
                      fields: tuple = ()) -> tuple[list, list, dict]:
    """(shapely geometries in ``crs``, feature ids, {field: values}) of a feature source in
    one pass, reprojected through the project's transform context. Empty field names are
    skipped (optional field parameters)."""
    fields = tuple(name for name in fields if name)
    request = QgsFeatureRequest().setDestinationCrs(crs, context.transformContext())
    geometries, ids, values = [], [], {name: [] for name in fields}
    for feature in source.getFeatures(request):
        if feedback is not None and feedback.isCanceled():
            raise QgsProcessingException("Cancelled by the user; no output was written.")
        geometry = feature.geometry()
        geometries.append(None if geometry.isNull() else shapely.from_wkb(bytes(geometry.asWkb())))
        ids.append(feature.id())
        for name in fields:
            values[name].append(feature[name])
    return geometries, ids, values


def qgs_geometry(geometry) -> QgsGeometry:
    result = QgsGeometry()
    result.fromWkb(shapely.to_wkb(geometry))
    return result


def add_features(sink, fields, geometries: list, attributes: dict[str, list], feedback) -> None:
    """Write shapely geometries and attribute columns into a Processing sink."""
    names = list(attributes)
    for i, geometry in enumerate(geometries):
        if feedback.isCanceled():
            raise QgsProcessingException("Cancelled by the user; the output is incomplete and was not kept.")
        feature = QgsFeature(fields)
        feature.setGeometry(qgs_geometry(geometry))
        feature.setAttributes([_plain(attributes[name][i]) for name in names])
        sink.addFeature(feature)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


