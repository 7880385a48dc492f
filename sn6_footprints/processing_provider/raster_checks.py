"""What is wrong with a raster file given by path, in the words a user can act on.

QGIS's own message for a path that does not open as a raster is ``Could not load source layer
for INPUT: <path> not found`` (``QgsProcessingAlgorithm.invalidRasterError``), also for a
folder or a text file that exists. These checks run before that message could be reached and
say what the path is instead. Nothing is loaded as a layer (no ``.aux.xml`` is written).
"""
from __future__ import annotations

import os

from qgis.core import QgsProcessingUtils


def _gdal_open_error(path: str) -> str | None:
    """None when GDAL opens ``path`` as a raster (read-only), else GDAL's reason, one line
    without the path (GDAL's exception setting and error handler are left as they were)."""
    try:
        from osgeo import gdal
    except ImportError:  # QGIS ships GDAL's bindings; without them the core's check reports it
        return None
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        gdal.ErrorReset()
        try:
            dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY | gdal.OF_VERBOSE_ERROR)
        except RuntimeError as exc:  # gdal.UseExceptions() set by someone else
            dataset, message = None, str(exc)
        else:
            message = gdal.GetLastErrorMsg()
        if dataset is not None:
            dataset = None
            return None
    finally:
        gdal.PopErrorHandler()
    message = " ".join(message.replace(f"`{path}' ", "").replace(path, "").split()).strip(" .:")
    return message or "not recognised as a raster format"


def raster_file_problem(path: str) -> str | None:
    """One line saying why ``path`` (a file path or GDAL URI) is no usable raster, or None."""
    if os.path.isdir(path):
        return f"{path} is a folder, not a raster: choose the SAR GeoTIFF."
    reason = _gdal_open_error(path)
    if reason is None:
        return None
    if not os.path.lexists(path):
        return f"{path} was not found: choose an existing SAR GeoTIFF."
    return f"{path} is not a readable raster (GDAL: {reason}): choose a GeoTIFF."


def is_raster_file_value(item, context) -> bool:
    """Whether a raster parameter's value is a file path/URI rather than a layer already open in
    QGIS (the project or the context): such values are opened as files, not as layers."""
    if not isinstance(item, str) or not item.strip():
        return False
    hint = QgsProcessingUtils.LayerHint.Raster
    return QgsProcessingUtils.mapLayerFromString(item, context, False, hint) is None


def unloaded_raster_paths(value, context) -> list[str]:
    """The file paths among a raster parameter's value(s) that are not layers already open in
    QGIS: those are opened as files, so checked here."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [item.split("|")[0].strip() for item in values if is_raster_file_value(item, context)]


def raster_parameter_problem(parameters, name: str, context) -> str | None:
    """The first problem of a raster parameter's file path(s), or None."""
    for path in unloaded_raster_paths(parameters.get(name), context):
        problem = raster_file_problem(path)
        if problem:
            return problem
    return None
