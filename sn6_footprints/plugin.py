"""The plugin object QGIS loads: registers the Processing provider, adds a toolbar button
and a menu entry that open the extraction dialog on the active layer."""
from __future__ import annotations

from qgis.core import QgsApplication

from .processing_provider.provider import Sn6FootprintsProvider
from .resources_path import resource

ICON = resource("icon.svg")
MENU = "&SN6 Footprints"
EXTRACT_ALGORITHM = "sn6_footprints:extract_footprints"


class Sn6FootprintsPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.action = None

    def initProcessing(self):  # noqa: N802 - QGIS API; qgis_process calls only this
        self.provider = Sn6FootprintsProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 - QGIS API
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "Extract building footprints (TernausNet)…",
                              self.iface.mainWindow())
        self.action.setObjectName("sn6FootprintsExtract")
        self.action.triggered.connect(self.open_extraction_dialog)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)

    def open_extraction_dialog(self):
        """The algorithm's own dialog, the active raster layer pre-selected."""
        import processing
        from qgis.core import QgsMapLayerType

        layer = self.iface.activeLayer()
        parameters = {}
        if layer is not None and layer.type() == QgsMapLayerType.RasterLayer:
            parameters["INPUT"] = layer.id()
        processing.execAlgorithmDialog(EXTRACT_ALGORITHM, parameters)

    def unload(self):
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
