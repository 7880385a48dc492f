"""Styling of output layers, on the main thread after the run (never in processAlgorithm)."""
from __future__ import annotations

from qgis.core import QgsProcessingLayerPostProcessorInterface

from ..resources_path import resource


class QmlStyle(QgsProcessingLayerPostProcessorInterface):
    """Loads a QML style from resources/styles onto the layer QGIS adds to the project."""

    _alive: list = []  # QGIS does not own post-processors: keep them until used

    def __init__(self, qml_name: str):
        super().__init__()
        self.qml_path = str(resource(f"styles/{qml_name}"))

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        if layer is not None and layer.isValid():
            layer.loadNamedStyle(self.qml_path)
            layer.triggerRepaint()

    @classmethod
    def attach(cls, context, layer_id: str, qml_name: str) -> None:
        if context.willLoadLayerOnCompletion(layer_id):
            post_processor = cls(qml_name)
            cls._alive.append(post_processor)
            context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(post_processor)
