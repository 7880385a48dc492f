"""Bridges between QGIS Processing and the core, which runs in the worker process.

QGIS's process never imports torch, rasterio, shapely or ``sn6_footprints.core``: layers go
to the worker as files written through QGIS's own API, the worker runs the core's command
line, and its result files come back into Processing sinks here.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureRequest, QgsFeatureSink, QgsField,
                       QgsFields, QgsProcessingException, QgsProcessingFeedback, QgsProcessingUtils,
                       QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from ..worker.client import WorkerCancelled, WorkerError, run_worker
from ..worker.environment import worker_environ
from . import settings

CANCELLED = "Cancelled by the user; no output was written."


def tr(text: str) -> str:
    return QCoreApplication.translate("Sn6Footprints", text)


def not_set_up_message() -> str:
    return tr("PyTorch, rasterio and shapely are not set up for SN6 Footprints yet: click 'Install "
              "dependencies…' in the message bar or in Raster ▸ SN6 Footprints (headless: run "
              "'python3 -m sn6_footprints.install' from the plugin's folder), or set the worker environment in "
              "Processing ▸ Options ▸ Providers ▸ SN6 Footprints; then run again.")


class WorkerFeedback:
    """The worker's events on ``QgsProcessingFeedback``: progress bar, log, Cancel."""

    def __init__(self, feedback: QgsProcessingFeedback):
        self.feedback = feedback

    def set_progress(self, percent: float) -> None:
        self.feedback.setProgress(percent)

    def info(self, message: str) -> None:
        self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        self.feedback.reportError(message, False)

    def debug(self, message: str) -> None:
        self.feedback.pushDebugInfo(message)

    def is_cancelled(self) -> bool:
        return self.feedback.isCanceled()


@contextmanager
def scratch_folder():
    """A private folder for the worker's inputs, outputs and temporary files, always removed."""
    path = Path(tempfile.mkdtemp(prefix="sn6-footprints-", dir=QgsProcessingUtils.tempFolder()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_core(arguments: list[str], feedback: QgsProcessingFeedback, scratch: Path,
             cancelled_message: str = CANCELLED) -> dict:
    """One call of the core's command line in the worker; its result, or a one-line error."""
    python = settings.worker_python()
    if python is None or not Path(python).is_file():
        raise QgsProcessingException(not_set_up_message())
    feedback.pushInfo(tr(f"Worker: {python}"))
    try:
        return run_worker(python, arguments, WorkerFeedback(feedback), scratch, worker_environ())
    except WorkerCancelled:
        raise QgsProcessingException(tr(cancelled_message)) from None
    except WorkerError as error:
        raise QgsProcessingException(str(error)) from None


def export_source(source, path: Path, crs: QgsCoordinateReferenceSystem, context, feedback,
                  fields: dict[str, str] | None = None) -> Path:
    """Write a feature source to a GeoPackage for the worker, reprojected to ``crs`` through
    the project's transform context. ``fields`` maps output names to source field names;
    ``source_fid`` always holds the feature id, so results can name the features."""
    fields = {name: field for name, field in (fields or {}).items() if field}
    out_fields = QgsFields()
    out_fields.append(QgsField("source_fid", QVariant.LongLong))
    source_fields = source.fields()
    for name, field in fields.items():
        index = source_fields.indexOf(field)
        if index < 0:
            raise QgsProcessingException(tr(f"The layer has no field '{field}'."))
        copy = QgsField(source_fields.at(index))
        copy.setName(name)
        out_fields.append(copy)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = path.stem
    writer = QgsVectorFileWriter.create(str(path), out_fields, source.wkbType(), crs,
                                        context.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(tr(f"Cannot write {path.name} for the worker: {writer.errorMessage()}"))
    request = QgsFeatureRequest().setDestinationCrs(crs, context.transformContext())
    for feature in source.getFeatures(request):
        if feedback.isCanceled():
            raise QgsProcessingException(tr(CANCELLED))
        out = QgsFeature(out_fields)
        out.setGeometry(feature.geometry())
        out.setAttributes([feature.id()] + [feature[field] for field in fields.values()])
        writer.addFeature(out)
    del writer  # flush and close
    return path


def copy_into_sink(algorithm, parameters, name: str, context, path: Path, crs, feedback,
                   wkb_type=QgsWkbTypes.Polygon) -> str:
    """The worker's result file ``path`` into the algorithm's sink ``name``; its dest id."""
    layer = QgsVectorLayer(str(path), "result", "ogr")
    if not layer.isValid():
        raise QgsProcessingException(tr(f"The worker's result {path.name} cannot be read."))
    fields = QgsFields()
    keep = [i for i, field in enumerate(layer.fields()) if field.name() != "fid"]  # GeoPackage's own key
    for i in keep:
        fields.append(layer.fields().at(i))
    sink, dest_id = algorithm.parameterAsSink(parameters, name, context, fields, wkb_type, crs)
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, name))
    multi = QgsWkbTypes.isMultiType(wkb_type)
    for feature in layer.getFeatures():
        if feedback.isCanceled():
            raise QgsProcessingException(tr("Cancelled by the user; the output is incomplete and was not kept."))
        out = QgsFeature(fields)
        geometry = feature.geometry()
        if not geometry.isNull():
            if multi:
                geometry.convertToMultiType()
            out.setGeometry(geometry)
        out.setAttributes([feature.attributes()[i] for i in keep])
        if not sink.addFeature(out, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(tr(f"Cannot write to the output: {sink.lastError()}"))
    sink.flushBuffer()
    del sink
    return dest_id


def optional_args(pairs: list[tuple[str, object]]) -> list[str]:
    """``--flag value`` for every value that is not None or empty."""
    arguments = []
    for flag, value in pairs:
        if value is not None and value != "":
            arguments += [flag, str(value)]
    return arguments
