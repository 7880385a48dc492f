"""The Processing provider: the plugin's algorithms under one name in the toolbox."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..resources_path import resource
from .settings import register_settings, unregister_settings

ICON = resource("icon.svg")


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
        from .extract_footprints import ExtractFootprintsAlgorithm
        from .score_footprints import ScoreFootprintsAlgorithm
        from .train_model import TrainModelAlgorithm

        for algorithm in (ExtractFootprintsAlgorithm(), ScoreFootprintsAlgorithm(), TrainModelAlgorithm()):
            self.addAlgorithm(algorithm)
