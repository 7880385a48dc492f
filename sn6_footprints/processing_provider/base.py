"""What every algorithm of the provider shares: ungrouped in the provider, translated
names, help text from a class attribute, a link to the README."""
from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..resources_path import resource

HELP_URL = "https://github.com/sn6-footprints/sn6_footprints#readme"
ICON = resource("icon.svg")
# The SpaceNet scores both algorithms report: output name -> label.
SCORE_OUTPUTS = {"F1": "F1 score", "PRECISION": "Precision", "RECALL": "Recall",
                 "TP": "True positives (TP)", "FP": "False positives (FP)", "FN": "False negatives (FN, missed)"}


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

    def icon(self):
        """The plugin's icon in the toolbox and the modeler (not the generic gear)."""
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802 - QGIS API
        return str(ICON)

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
