"""What every algorithm of the provider shares: ungrouped in the provider, translated
names, help text from a class attribute, a link to the README."""
from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtCore import QCoreApplication

HELP_URL = "https://github.com/sn6-footprints/sn6_footprints#readme"


class Sn6Algorithm(QgsProcessingAlgorithm):
    ALGORITHM_ID = ""
    DISPLAY_NAME = ""
    HELP = ""

    def tr(self, text):
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)()

    def name(self):
        return self.ALGORITHM_ID

    def displayName(self):  # noqa: N802 - QGIS API
        return self.tr(self.DISPLAY_NAME)

    def group(self):
        return ""

    def groupId(self):  # noqa: N802 - QGIS API
        return ""

    def shortHelpString(self):  # noqa: N802 - QGIS API
        return self.tr(self.HELP)

    def helpUrl(self):  # noqa: N802 - QGIS API
        return HELP_URL

    def _optional_number(self, parameters, name, context) -> float | None:
        """An optional number parameter; None when left empty (meaning "the model's own")."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsDouble(parameters, name, context)
