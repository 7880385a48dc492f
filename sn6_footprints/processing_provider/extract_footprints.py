"""Processing algorithm: Extract building footprints (TernausNet)."""
from __future__ import annotations

from qgis.core import (QgsField, QgsFields, QgsProcessing,
                       QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from ..core.devices import DEVICE_CHOICES
from ..core.feedback import Cancelled
from ..core.inference import TilingOptions
from ..core.settings import SN6_MIN_AREA_M2
from .base import Sn6Algorithm
from .core_bridge import ProcessingFeedback, add_features, source_geometries
from .styling import QmlStyle

ROTATION_CHOICES = ("Auto (raster LOOK_DIRECTION tag, else the model's setting)", "Yes (south-looking scene for a north-looking model)", "No")
FLIP_CHOICES = ("The model's setting (the bundled model: yes)", "Yes", "No")
CHOICE_VALUES = (None, True, False)  # ROTATION_CHOICES / FLIP_CHOICES: None = the model's setting
SCORE_OUTPUTS = ("F1", "PRECISION", "RECALL", "TP", "FP", "FN")

HELP = """Detects buildings in a SAR raster with a TernausNet U-Net (VGG11 encoder) and writes one polygon per building.

<b>SAR raster</b>: the bands the model expects, in order (SN6: 4 bands HH, HV, VH, VV on the SpaceNet 6 SAR-Intensity scale; nodata and NaN pixels never become buildings). It must have a CRS.
<b>Model file</b>: a UNet11 checkpoint (.pt/.pth/.model): the SpaceNet 6 baseline weights, or one written by 'Train footprint model'. Empty: the bundled model (a small model trained on simulated SAR). Its metadata gives the defaults below; a bare SN6 baseline file uses the SN6 settings.
<b>Ground-truth footprints</b> (optional): polygons in any CRS (reprojected). The run then reports TP, FP, FN, precision, recall and F1 (SpaceNet rule: IoU &gt; 0.5, greedy by confidence, buildings under the minimum area ignored) as outputs.
<b>Device</b>: auto = CUDA GPU if PyTorch sees one, else CPU. Default auto.
<b>Probability threshold</b>: 0–1; pixels above it are building. Default: the model's (SN6 baseline 0.5, bundled model 0.6).
<b>Minimum building area</b>: m²; smaller blobs are dropped. Default: the model's (20 m² = 80 px at 0.5 m).
<b>Simplification tolerance</b>: map units; 0 keeps the pixel outline. Default 0.5.
A model trained on shrunk footprints (its metadata's grow_m, 1.5 m for the bundled model) predicts building cores a gap apart; every blob is grown back by that distance with square corners, so touching buildings come out as separate polygons.
<b>Tile size</b> (px, multiple of 32, default 512), <b>tile overlap</b> (px, default 64; overlapping tiles are blended), <b>batch size</b> (tiles per forward pass, default 4).
<b>Rotate 180°</b>: the SpaceNet 6 orientation flag: rotate the scene before inference when its look direction is opposite to the model's (SN6: strips with flag 1 in SAR_orientations.txt). Default Auto: rotate when the raster's LOOK_DIRECTION metadata tag (written by the simulator) is opposite to the model's look direction, else the model's setting.
<b>Average with a flipped copy</b>: test-time augmentation; every tile is also predicted flipped along the look direction (a flip that keeps layover on its side) and the two probabilities are averaged. Twice the compute; on the bundled model's calibration scenes it raises F1 from 0.790 to 0.813. Default: the model's setting (on for the bundled model, off for the SN6 baseline).

Output attributes: id, area_m2 (m²), confidence (mean building probability inside the polygon)."""


class ExtractFootprintsAlgorithm(Sn6Algorithm):
    ALGORITHM_ID = "extract_footprints"
    DISPLAY_NAME = "Extract building footprints (TernausNet)"
    HELP = HELP
    INPUT = "INPUT"
    MODEL = "MODEL"
    GROUND_TRUTH = "GROUND_TRUTH"
    DEVICE = "DEVICE"
    THRESHOLD = "THRESHOLD"
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    ROTATE_180 = "ROTATE_180"
    FLIP_AVERAGE = "FLIP_AVERAGE"
    OUTPUT = "OUTPUT"
    BUILDING_COUNT = "BUILDING_COUNT"

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("SAR raster")))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Model file (empty: bundled model)"), optional=True,
            fileFilter="PyTorch checkpoints (*.pt *.pth *.model);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.GROUND_TRUTH, self.tr("Ground-truth footprints (optional, for scoring)"),
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), options=list(DEVICE_CHOICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Probability threshold (empty: the model's)"),
            QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, self.tr("Minimum building area [m²] (empty: the model's, usually {:g})").format(
                SN6_MIN_AREA_M2), QgsProcessingParameterNumber.Double, optional=True, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.SIMPLIFY, self.tr("Simplification tolerance [map units]"),
            QgsProcessingParameterNumber.Double, defaultValue=0.5, minValue=0.0))
        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, self.tr("Tile size [px, multiple of 32]"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=512,
                                         minValue=32, maxValue=8192),
            QgsProcessingParameterNumber(self.OVERLAP, self.tr("Tile overlap [px]"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=64,
                                         minValue=0, maxValue=4096),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size [tiles]"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=4,
                                         minValue=1, maxValue=256),
            QgsProcessingParameterEnum(self.ROTATE_180, self.tr("Rotate 180° before inference"),
                                       options=list(ROTATION_CHOICES), defaultValue=0),
            QgsProcessingParameterEnum(self.FLIP_AVERAGE,
                                       self.tr("Average with a flipped copy (twice the compute)"),
                                       options=list(FLIP_CHOICES), defaultValue=0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Building footprints"), QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.BUILDING_COUNT, self.tr("Number of buildings")))
        for name in SCORE_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(f"{name} against the ground truth")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from ..core.extract import ExtractionOptions, extract_footprints

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(self.tr(
                f"Layer '{layer.name()}' is not a file raster (provider {layer.providerType()}); "
                "save it as GeoTIFF (Export ▸ Save As…) and use that file."))
        rotation = self.parameterAsEnum(parameters, self.ROTATE_180, context)
        options = ExtractionOptions(
            model_path=self.parameterAsFile(parameters, self.MODEL, context) or None,
            device=DEVICE_CHOICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            tiling=TilingOptions(self.parameterAsInt(parameters, self.TILE_SIZE, context),
                                 self.parameterAsInt(parameters, self.OVERLAP, context),
                                 self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
            threshold=self._optional_number(parameters, self.THRESHOLD, context),
            min_area_m2=self._optional_number(parameters, self.MIN_AREA, context),
            simplify_map_units=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            rotate_180=CHOICE_VALUES[rotation],
            flip_average=CHOICE_VALUES[self.parameterAsEnum(parameters, self.FLIP_AVERAGE, context)])
        truth_source = self.parameterAsSource(parameters, self.GROUND_TRUTH, context)
        try:
            result = extract_footprints(layer.source().split("|")[0], options, ProcessingFeedback(feedback))
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled by the user; no output was written."))
        except (ValueError, FileNotFoundError) as error:  # the core's messages name the fix
            raise QgsProcessingException(str(error))

        fields = QgsFields()
        fields.append(QgsField("id", QVariant.LongLong))
        fields.append(QgsField("area_m2", QVariant.Double))
        fields.append(QgsField("confidence", QVariant.Double))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields,
                                             QgsWkbTypes.Polygon, layer.crs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        add_features(sink, fields, result.geometries, result.attributes, feedback)
        sink.flushBuffer()
        outputs = {self.OUTPUT: dest_id, self.BUILDING_COUNT: len(result)}
        outputs.update({name: None for name in SCORE_OUTPUTS})
        if truth_source is not None:
            outputs.update(self._score(result, truth_source, layer.crs(), context, feedback))
        self._dest_id = dest_id
        return outputs

    def _score(self, result, truth_source, crs, context, feedback) -> dict:
        from ..core.extract import score_extraction

        truth, _ids, _ = source_geometries(truth_source, crs, context, feedback)
        report = score_extraction(result, truth)
        feedback.pushInfo(self.tr(
            f"Against {len(truth)} ground-truth footprint(s) (SpaceNet rule, IoU > 0.5, min area "
            f"{result.settings.min_area_m2:g} m²): TP {report.tp}, FP {report.fp}, FN {report.fn}, "
            f"precision {report.precision:.4f}, recall {report.recall:.4f}, F1 {report.f1:.4f}"))
        return {"F1": report.f1, "PRECISION": report.precision, "RECALL": report.recall,
                "TP": report.tp, "FP": report.fp, "FN": report.fn}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        dest_id = getattr(self, "_dest_id", None)
        if dest_id:
            QmlStyle.attach(context, dest_id, "footprints.qml")
        return {}
