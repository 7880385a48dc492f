"""Bridges between QGIS Processing and the core, which runs in the worker process.

QGIS's process never imports torch, rasterio, shapely or ``sn6_footprints.core``: layers go
to the worker as files written through QGIS's own API, the worker runs the core's command
line, and its result files come back into Processing sinks here.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsDataProvider, QgsFeature, QgsFeatureRequest, QgsFeatureSink,
                       QgsField, QgsFields, QgsGeometry, QgsProcessing, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingOutputLayerDefinition, QgsProcessingUtils, QgsProperty, QgsProviderRegistry,
                       QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from ..output_safety import (OutputIsInputError, check_outputs_not_inputs, geopackage_layers, source_path,
                             vector_files, write_error_message)
from ..worker.client import WorkerCancelled, WorkerError, run_worker
from ..worker.environment import worker_environ
from . import settings
from .raster_checks import is_raster_file_value

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
        if not writer.addFeature(out):  # a full scratch disk: never hand the worker part of a layer
            problem = writer.errorMessage() or "a feature could not be added"
            del writer
            raise QgsProcessingException(tr(write_error_message(path, problem)))
    if not writer.flushBuffer():
        raise QgsProcessingException(tr(write_error_message(path, writer.errorMessage() or "flush failed")))
    del writer  # close
    return path


def check_outputs_are_not_inputs(outputs, inputs) -> None:
    """Before any export or worker call: no destination is an input file or one of its sidecars.
    ``outputs``: ``(label, path or None)``; ``inputs``: ``(label, QGIS source or path, kind)``
    with kind raster, vector or file (see ``output_safety.check_outputs_not_inputs``)."""
    files = [(label, source_path(source), kind) for label, source, kind in inputs]
    try:
        check_outputs_not_inputs(outputs, files)
    except OutputIsInputError as exc:
        raise QgsProcessingException(tr(str(exc))) from None


_PROVIDER_URI = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:(?![\\/])")  # postgis:..., memory:... (not C:/...)
_OGR_DBNAME = re.compile(r"""dbname='((?:[^'\\]|\\.)*)'""")


def _as_text(value, context) -> str:
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink
    if isinstance(value, QgsProperty):
        value = value.valueAsString(context.expressionContext(), "")
        value = value[0] if isinstance(value, tuple) else value
    return "" if value is None else str(value)


def destination_path(parameters, name: str, context) -> str | None:
    """The file a sink or file destination parameter writes, or None for a temporary output, a
    memory layer or a database."""
    text = _as_text(parameters.get(name), context).strip()
    if not text or text == QgsProcessing.TEMPORARY_OUTPUT:
        return None
    if text.startswith("ogr:"):
        match = _OGR_DBNAME.search(text)
        return match.group(1).replace("\\'", "'") if match else None
    if _PROVIDER_URI.match(text):
        return None
    return text.split("|")[0]


class _Destination:
    """Where a sink writes and what may be removed when the write fails or is cancelled."""

    def __init__(self, parameters, name: str, context, layer_name: str, feedback):
        self.parameters, self.feedback = parameters, feedback
        self.path = destination_path(parameters, name, context)
        self.layer_name = None  # set when writing one layer into the user's existing GeoPackage
        layers = geopackage_layers(self.path) if self.path and self.path.lower().endswith(".gpkg") else None
        if layers and any(layer != Path(self.path).stem for layer in layers):
            # QGIS's sink for a plain path recreates the whole file: write the one layer into it
            # instead, keeping the user's other layers.
            self.layer_name = layer_name
            escaped = self.path.replace("'", "\\'")
            uri = f"ogr:dbname='{escaped}' table=\"{layer_name}\" (geom)"
            original = parameters.get(name)
            if isinstance(original, QgsProcessingOutputLayerDefinition):
                definition = QgsProcessingOutputLayerDefinition(original)
                definition.sink = QgsProperty.fromValue(uri)
            else:
                definition = uri
            self.parameters = {**parameters, name: definition}
            others = [layer for layer in layers if layer != layer_name]
            verb = "replacing its layer" if layer_name in layers else "as the layer"
            feedback.pushInfo(tr(f"Writing into the existing GeoPackage {self.path}, {verb} '{layer_name}'; its "
                                 f"other layers ({', '.join(others)}) are kept."))

    def remove_partial(self) -> None:
        """What a failed or cancelled write left: the new file (and its journals or parts), or
        only the new layer of a GeoPackage that holds other layers."""
        if not self.path:
            return
        if self.layer_name is not None:
            try:
                connection = QgsProviderRegistry.instance().providerMetadata("ogr").createConnection(self.path, {})
                if self.layer_name in [table.tableName() for table in connection.tables()]:
                    connection.dropVectorTable("", self.layer_name)
            except Exception as exc:  # noqa: BLE001 - best effort; the error that brought us here is reported
                self.feedback.reportError(tr(f"The partial layer '{self.layer_name}' could not be removed from "
                                             f"{self.path}: {exc}"), False)
            return
        for part in vector_files(self.path) + [Path(self.path + s) for s in ("-wal", "-shm", "-journal")]:
            try:
                os.remove(part)
            except OSError:
                pass


_OGR_FIELD_TYPES = {"Integer": QVariant.Int, "Integer64": QVariant.LongLong, "Real": QVariant.Double,
                    "String": QVariant.String}


class _ResultFile:
    """The worker's result GeoPackage read through GDAL's Python bindings (QGIS's Python always
    has them), not through a QGIS layer: QGIS's OGR connection pool would keep the file open
    after the scratch folder is deleted (a descriptor per run; on Windows the folder could
    not be deleted). Opened read-only, read once, closed explicitly."""

    def __init__(self, path: Path):
        from osgeo import ogr

        self.path = path
        self._dataset = ogr.Open(str(path), 0)
        self._layer = self._dataset.GetLayer(0) if self._dataset is not None else None
        if self._layer is None:
            self.close()
            raise QgsProcessingException(tr(f"The worker's result {path.name} cannot be read."))
        definition = self._layer.GetLayerDefn()
        self.fields = QgsFields()
        self._field_count = definition.GetFieldCount()
        for i in range(self._field_count):
            field = definition.GetFieldDefn(i)
            type_name = field.GetTypeName()
            variant = _OGR_FIELD_TYPES.get(type_name, QVariant.String)
            self.fields.append(QgsField(field.GetName(), variant, type_name, field.GetWidth(), field.GetPrecision()))
        self.count = self._layer.GetFeatureCount()
        srs = self._layer.GetSpatialRef()
        self.crs = QgsCoordinateReferenceSystem.fromWkt(srs.ExportToWkt()) if srs is not None else None

    def features(self):
        """(WKB or None, attributes) of every feature, in the file's order."""
        self._layer.ResetReading()
        feature = self._layer.GetNextFeature()
        while feature is not None:
            geometry = feature.GetGeometryRef()
            wkb = bytes(geometry.ExportToIsoWkb()) if geometry is not None else None
            values = [feature.GetField(i) if feature.IsFieldSetAndNotNull(i) else None
                      for i in range(self._field_count)]
            yield wkb, values
            feature = self._layer.GetNextFeature()

    def close(self) -> None:
        self._layer = None
        self._dataset = None  # GDAL closes the file when its last reference goes


def result_crs(path: Path, fallback: QgsCoordinateReferenceSystem) -> QgsCoordinateReferenceSystem:
    """The CRS the worker wrote its result file in (e.g. the local UTM zone it scored in)."""
    result = _ResultFile(path)
    try:
        return result.crs if result.crs is not None and result.crs.isValid() else fallback
    finally:
        result.close()


def copy_into_sink(algorithm, parameters, name: str, context, path: Path, crs, feedback,
                   wkb_type=QgsWkbTypes.Polygon, layer_name: str = "footprints") -> str:
    """The worker's result file ``path`` into the algorithm's sink ``name``; its dest id.

    Complete or absent: creating the sink, every ``addFeature`` and the final flush are checked
    and the written layer is reopened and counted; on a failure or a cancel the partial file is
    removed (only the new layer when the destination is an existing GeoPackage with other
    layers: those are kept, see ``_Destination``) and one line says why (disk full, permission, ...).
    The result file is closed before this returns (see ``_ResultFile``)."""
    if feedback.isCanceled():
        raise QgsProcessingException(tr(CANCELLED))
    result = _ResultFile(path)
    try:
        return _copy_result(algorithm, parameters, name, context, result, crs, feedback, wkb_type, layer_name)
    finally:
        result.close()


def _copy_result(algorithm, parameters, name, context, result: _ResultFile, crs, feedback, wkb_type,
                 layer_name) -> str:
    fields = result.fields
    expected = result.count
    destination = _Destination(parameters, name, context, layer_name, feedback)
    try:
        sink, dest_id = algorithm.parameterAsSink(destination.parameters, name, context, fields, wkb_type, crs)
    except QgsProcessingException as exc:  # e.g. 'Could not create layer ...: database or disk is full'
        message = write_error_message(destination.path or name, str(exc))
        destination.remove_partial()
        raise QgsProcessingException(tr(message)) from None
    if sink is None:
        destination.remove_partial()
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, name))
    multi = QgsWkbTypes.isMultiType(wkb_type)
    problem = None
    try:
        for wkb, values in result.features():
            if feedback.isCanceled():
                break
            out = QgsFeature(fields)
            if wkb is not None:
                geometry = QgsGeometry()
                geometry.fromWkb(wkb)
                if multi:
                    geometry.convertToMultiType()
                out.setGeometry(geometry)
            out.setAttributes(values)
            if not sink.addFeature(out, QgsFeatureSink.FastInsert):
                problem = sink.lastError() or "a feature could not be added"
                break
        if problem is None and not feedback.isCanceled() and not sink.flushBuffer():
            problem = sink.lastError() or "the features could not be flushed"
    finally:
        del sink  # closes the file: the GeoPackage's transaction is committed here
    if problem is None and not feedback.isCanceled() and destination.path:
        written = QgsVectorLayer(dest_id, "written", "ogr")
        count = written.featureCount() if written.isValid() else -1
        del written
        if count != expected:
            problem = (f"the written layer holds {count} of {expected} features" if count >= 0
                       else "the written file cannot be reopened")
    if feedback.isCanceled():
        destination.remove_partial()
        raise QgsProcessingException(tr("Cancelled by the user; the output is incomplete and was not kept."))
    if problem is not None:
        message = write_error_message(destination.path or dest_id, problem)  # probes the folder: before removal
        destination.remove_partial()
        raise QgsProcessingException(tr(message))
    return dest_id


class RasterFile:
    """A raster file with what the algorithms read of it (source, CRS, name, provider), opened
    with GDAL's provider but no map layer: a QGIS raster layer computes a histogram for its
    default style, and GDAL saves it as ``<raster>.aux.xml`` beside the user's file."""

    def __init__(self, uri: str, crs: QgsCoordinateReferenceSystem):
        self._uri, self._crs = uri, QgsCoordinateReferenceSystem(crs)

    def source(self) -> str:
        return self._uri

    def crs(self) -> QgsCoordinateReferenceSystem:
        return QgsCoordinateReferenceSystem(self._crs)

    def name(self) -> str:
        return Path(self._uri.split("|")[0]).stem

    def providerType(self) -> str:  # noqa: N802 - as QgsMapLayer
        return "gdal"


def _raster_file_value(parameters, name: str, context) -> str | None:
    """The parameter's value when it is a file path/URI not already open as a layer (in the
    project or the context), else None."""
    value = parameters.get(name)
    return value if is_raster_file_value(value, context) else None


def raster_paths_unloaded(parameters, name: str, context) -> dict:
    """The parameters for Processing's own checks, with a raster file path wrapped so that the
    check does not load it as a layer (see :class:`RasterFile`); the run opens it as a RasterFile."""
    value = _raster_file_value(parameters, name, context)
    return parameters if value is None else {**parameters, name: QgsProperty.fromValue(value)}


def raster_input(algorithm, parameters, name: str, context):
    """The input raster: a layer already open in QGIS, or the file through :class:`RasterFile`."""
    value = _raster_file_value(parameters, name, context)
    if value is None:
        layer = algorithm.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(algorithm.invalidRasterError(parameters, name))
        return layer
    provider = QgsProviderRegistry.instance().createProvider("gdal", value, QgsDataProvider.ProviderOptions())
    if provider is None or not provider.isValid():
        raise QgsProcessingException(algorithm.invalidRasterError(parameters, name))
    raster = RasterFile(value, provider.crs())
    del provider
    return raster


def optional_args(pairs: list[tuple[str, object]]) -> list[str]:
    """``--flag value`` for every value that is not None or empty."""
    arguments = []
    for flag, value in pairs:
        if value is not None and value != "":
            arguments += [flag, str(value)]
    return arguments
