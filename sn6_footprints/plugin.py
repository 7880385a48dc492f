"""The plugin object QGIS loads: registers the Processing provider, adds a toolbar button and
a *Raster → SN6 Footprints* menu (extraction dialog on the active layer, Install
dependencies…), and says in the message bar when the worker's environment is not set up.

Nothing here imports torch, rasterio, shapely or the core: those run in the worker process.
"""
from __future__ import annotations

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtCore import QCoreApplication

from .processing_provider.provider import Sn6FootprintsProvider
from .resources_path import resource

ICON = resource("icon.svg")
MENU = "&SN6 Footprints"
EXTRACT_ALGORITHM = "sn6_footprints:extract_footprints"
LOG_TAG = "SN6 Footprints"


def tr(text: str) -> str:
    return QCoreApplication.translate("Sn6FootprintsPlugin", text)


class Sn6FootprintsPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.action = None
        self.install_action = None
        self.menu = tr(MENU)
        self.setup_message = None
        self.install_dialog = None

    def initProcessing(self):  # noqa: N802 - QGIS API; qgis_process calls only this
        self.provider = Sn6FootprintsProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 - QGIS API
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), tr("Extract building footprints (TernausNet)…"),
                              self.iface.mainWindow())
        self.action.setObjectName("sn6FootprintsExtract")
        self.action.triggered.connect(self.open_extraction_dialog)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(self.menu, self.action)

        self.install_action = QAction(tr("Install dependencies…"), self.iface.mainWindow())
        self.install_action.setObjectName("sn6FootprintsInstallDependencies")
        self.install_action.triggered.connect(self.open_install_dialog)
        self.iface.addPluginToRasterMenu(self.menu, self.install_action)

        self.check_dependencies()

    # --- dependencies --------------------------------------------------------------------------
    def check_dependencies(self, profile=None, env_setting=None) -> str | None:
        """The cheap start-up check (the installer's record, no subprocess): shows the message
        bar when the worker's environment is missing or out of date; returns the problem."""
        from .processing_provider.settings import setup_problem

        try:
            problem = setup_problem(profile, env_setting)
        except Exception as error:  # noqa: BLE001 - a failing check must not break QGIS's start
            QgsMessageLog.logMessage(f"Dependency check failed: {error!r}", LOG_TAG, Qgis.Warning)
            problem = "missing"
        if problem is None:
            self.hide_setup_message()
        else:
            self.show_setup_message(problem)
        return problem

    def show_setup_message(self, problem: str = "missing"):
        from qgis.PyQt.QtWidgets import QPushButton

        self.hide_setup_message()
        if problem == "repair":
            text = tr("PyTorch, rasterio and shapely need to be updated for this version of the plugin.")
        else:
            text = tr("PyTorch, rasterio and shapely are not set up yet.")
        bar = self.iface.messageBar()
        item = bar.createMessage(tr("SN6 Footprints"), text)
        item.setObjectName("sn6FootprintsSetupMessage")
        button = QPushButton(tr("Install dependencies…"), item)
        button.setObjectName("sn6FootprintsInstallButton")
        button.clicked.connect(self.open_install_dialog)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Warning, 0)
        self.setup_message = item
        QgsMessageLog.logMessage(f"SN6 Footprints: {text}", LOG_TAG, Qgis.Warning)

    def hide_setup_message(self):
        from qgis.PyQt import sip

        item, self.setup_message = self.setup_message, None
        if item is not None and not sip.isdeleted(item):
            self.iface.messageBar().popWidget(item)

    def open_install_dialog(self):
        """The dialog that shows the installer's plan and, on Install, runs it."""
        from qgis.PyQt import sip

        from .processing_provider.settings import profile_dir, worker_env_setting
        from .ui.install_dialog import InstallDialog

        dialog = self.install_dialog
        if dialog is not None and not sip.isdeleted(dialog) and dialog.isVisible():
            dialog.raise_()
            dialog.activateWindow()
            return dialog
        if dialog is not None and not sip.isdeleted(dialog):
            dialog.deleteLater()
        dialog = InstallDialog(profile_dir(), worker_env_setting(), parent=self.iface.mainWindow())
        dialog.installed.connect(self._dependencies_installed)
        self.install_dialog = dialog
        dialog.show()
        return dialog

    def _dependencies_installed(self):
        self.hide_setup_message()
        self.iface.messageBar().pushMessage(
            tr("SN6 Footprints"), tr("Dependencies installed; the algorithms are ready."), Qgis.Success, 8)

    # --- extraction ----------------------------------------------------------------------------
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
        from qgis.PyQt import sip

        self.hide_setup_message()
        dialog, self.install_dialog = self.install_dialog, None
        if dialog is not None and not sip.isdeleted(dialog):
            dialog.shutdown()
            dialog.deleteLater()
        if self.install_action is not None:
            self.iface.removePluginRasterMenu(self.menu, self.install_action)
            self.install_action.deleteLater()
            self.install_action = None
        if self.action is not None:
            self.iface.removePluginRasterMenu(self.menu, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
