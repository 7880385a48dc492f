"""The Processing provider: the plugin's algorithms under one name in the toolbox."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..resources_path import resource
from .settings import register_settings, unregister_settings

ICON = resource("icon.svg")
ALGORITHMS = (("extract_footprints", "ExtractFootprintsAlgorithm"), ("score_footprints", "ScoreFootprintsAlgorithm"),
              ("train_model", "TrainModelAlgorithm"))


class Sn6FootprintsProvider(QgsProcessingProvider):
    def load(self):
        """Registers the provider's settings (Processing → Options → Providers) with their
        stored values, then the algorithms."""
        register_settings(self.name())
        self.refreshAlgorithms()
        return True

    def unload(self):
        unregister_settings()

    def id(self):
        return "sn6_footprints"

    def name(self):
        return "SN6 Footprints"

    def longName(self):  # noqa: N802 - QGIS API
        return "SN6 Footprints — building footprints from SAR (TernausNet)"

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802 - QGIS API
        return str(ICON)

    def loadAlgorithms(self):  # noqa: N802 - QGIS API
        """Each algorithm on its own: QGIS calls this from C++, where an exception would abort the
        whole application, so a module that fails to load is logged and the others still load."""
        import importlib

        from qgis.core import Qgis, QgsMessageLog

        for module, name in ALGORITHMS:
            try:
                self.addAlgorithm(getattr(importlib.import_module(f"{__package__}.{module}"), name)())
            except Exception as error:  # noqa: BLE001 - see the docstring
                QgsMessageLog.logMessage(f"Algorithm {name} could not be loaded: {error!r}", "SN6 Footprints",
                                         Qgis.Critical)
