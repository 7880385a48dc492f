"""Processing algorithm: Score building footprints (SpaceNet F1)."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber, QgsWkbTypes)

from ..defaults import SCORING_VARIANTS as VARIANTS
from ..defaults import SN6_MIN_AREA_M2
from .base import SCORE_OUTPUTS, Sn6Algorithm
from .core_bridge import (check_outputs_are_not_inputs, copy_into_sink, destination_path, export_source, optional_args,
                          result_crs, run_core, scratch_folder)
from .styling import QmlStyle
from .truth_inputs import UncheckedSource, check_polygon_source, export_path, source_label

CSV_HINT = (" (SpaceNet CSVs in pixel coordinates: score two of them with 'python -m sn6_footprints score "
            "truth.csv proposals.csv', or give the truth CSV to the extraction algorithm)")


HELP = """Scores predicted building footprints against ground truth with the SpaceNet F1 metric: proposals in descending confidence each take the unmatched ground-truth polygon of highest IoU; IoU above the threshold is a true positive.

<b>Ground truth</b> and <b>Proposals</b>: polygon layers in any CRS (points, lines and tables are refused; invalid polygons are repaired with make_valid and counted in the log). Both are measured in the ground truth's CRS, or, when that is geographic, in the local UTM zone (metres).
<b>Variant</b>: sn6 (the official SpaceNet 6 scorer, default) or solaris (solaris's evaluator: proposals strictly above the minimum area, invalid proposals repaired).
<b>Minimum area</b>: m²; smaller polygons are not scored. Default 20 m² (80 px at 0.5 m).
<b>IoU threshold</b>: a match needs IoU strictly above it. Default 0.5.
<b>Confidence field</b> (optional): orders the proposals, highest first; without it, layer order.
<b>Image id fields</b> (optional): match per image, then pool the counts (sn6 scores only images present in the proposals).

Outputs: F1, precision, recall, TP, FP, FN; the proposals with status (TP/FP), IoU and matched ground-truth id (green TP, red FP); the missed buildings (FN, blue); an HTML report with a table per image."""  # noqa: E501 - one paragraph a line: QGIS shows newlines as line breaks


class ScoreFootprintsAlgorithm(Sn6Algorithm):
    ALGORITHM_ID = "score_footprints"
    DISPLAY_NAME = "Score building footprints (SpaceNet F1)"
    HELP = HELP
    TRUTH = "TRUTH"
    PROPOSALS = "PROPOSALS"
    VARIANT = "VARIANT"
    MIN_AREA = "MIN_AREA"
    IOU = "IOU"
    CONFIDENCE_FIELD = "CONFIDENCE_FIELD"
    TRUTH_IMAGE_FIELD = "TRUTH_IMAGE_FIELD"
    PROPOSAL_IMAGE_FIELD = "PROPOSAL_IMAGE_FIELD"
    OUTPUT_PROPOSALS = "OUTPUT_PROPOSALS"
    OUTPUT_MISSED = "OUTPUT_MISSED"
    OUTPUT_HTML = "OUTPUT_HTML"
    NUMBERS = tuple(SCORE_OUTPUTS)

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterFeatureSource(self.TRUTH, self.tr("Ground truth"), polygons))
        self.addParameter(QgsProcessingParameterFeatureSource(self.PROPOSALS, self.tr("Proposals"), polygons))
        self.addParameter(QgsProcessingParameterEnum(self.VARIANT, self.tr("Variant"), options=list(VARIANTS),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_AREA, self.tr("Minimum area [m²]"),
                                                       QgsProcessingParameterNumber.Double,
                                                       defaultValue=SN6_MIN_AREA_M2, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(self.IOU, self.tr("IoU threshold"),
                                                       QgsProcessingParameterNumber.Double, defaultValue=0.5,
                                                       minValue=0.0, maxValue=0.999))
        self.addParameter(QgsProcessingParameterField(self.CONFIDENCE_FIELD, self.tr("Confidence field"),
                                                      parentLayerParameterName=self.PROPOSALS, optional=True,
                                                      type=QgsProcessingParameterField.Numeric))
        for name, parent, label in ((self.TRUTH_IMAGE_FIELD, self.TRUTH, "Image id field (ground truth)"),
                                    (self.PROPOSAL_IMAGE_FIELD, self.PROPOSALS, "Image id field (proposals)")):
            self.addParameter(QgsProcessingParameterField(name, self.tr(label), parentLayerParameterName=parent,
                                                          optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_PROPOSALS, self.tr("Scored proposals"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_MISSED, self.tr("Missed buildings (FN)"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_HTML, self.tr("Score report"),
                                                                "HTML files (*.html)", optional=True))
        for name, label in SCORE_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        truth_source = self.parameterAsSource(parameters, self.TRUTH, context)
        proposal_source = self.parameterAsSource(parameters, self.PROPOSALS, context)
        if truth_source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.TRUTH))
        if proposal_source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.PROPOSALS))
        labels = {name: source_label(parameters, name, source.sourceName())
                  for source, name in ((truth_source, self.TRUTH), (proposal_source, self.PROPOSALS))}
        check_polygon_source(truth_source, labels[self.TRUTH], CSV_HINT)  # before any export
        check_polygon_source(proposal_source, labels[self.PROPOSALS], CSV_HINT)
        confidence_field = self.parameterAsString(parameters, self.CONFIDENCE_FIELD, context)
        truth_image_field = self.parameterAsString(parameters, self.TRUTH_IMAGE_FIELD, context)
        proposal_image_field = self.parameterAsString(parameters, self.PROPOSAL_IMAGE_FIELD, context)
        if bool(truth_image_field) != bool(proposal_image_field):
            raise QgsProcessingException(self.tr("Give an image id field for both layers, or for neither."))
        crs = truth_source.sourceCrs() if truth_source.sourceCrs().isValid() else proposal_source.sourceCrs()
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        layers = {name: self.parameterAsVectorLayer(parameters, name, context) for name in (self.TRUTH, self.PROPOSALS)}
        check_outputs_are_not_inputs(
            [("scored proposals output", destination_path(parameters, self.OUTPUT_PROPOSALS, context)),
             ("missed buildings output", destination_path(parameters, self.OUTPUT_MISSED, context)),
             ("score report", html_path or None)],
            [(label, layers[name].source() if layers[name] is not None else None, "vector")
             for name, label in ((self.TRUTH, "ground truth"), (self.PROPOSALS, "proposals"))])
        variant = VARIANTS[self.parameterAsEnum(parameters, self.VARIANT, context)]
        with scratch_folder() as scratch:
            # Both layers go in the ground truth's CRS; the worker measures in it, or in the local
            # UTM zone when it is geographic, and writes its layers in that CRS.
            truth = export_source(UncheckedSource(truth_source), export_path(scratch, "truth", labels[self.TRUTH]),
                                  crs, context, feedback,
                                  {"image_id": truth_image_field})
            proposals = export_source(UncheckedSource(proposal_source),
                                      export_path(scratch, "proposals", labels[self.PROPOSALS]), crs, context,
                                      feedback,
                                      {"confidence": confidence_field, "image_id": proposal_image_field})
            scored, missed = scratch / "scored.gpkg", scratch / "missed.gpkg"
            arguments = ["score", str(truth), str(proposals), "--truth-id-field", "source_fid",
                         "--proposal-id-field", "source_fid", "--scored-proposals", str(scored),
                         "--missed", str(missed), *optional_args([
                             ("--variant", variant),
                             ("--min-area", self.parameterAsDouble(parameters, self.MIN_AREA, context)),
                             ("--iou", self.parameterAsDouble(parameters, self.IOU, context)),
                             ("--confidence-field", "confidence" if confidence_field else None),
                             ("--image-field", "image_id" if truth_image_field else None),
                             ("--html", html_path)])]
            report = run_core(arguments, feedback, scratch)
            measured_crs = result_crs(scored, crs) if crs.isGeographic() else crs
            if crs.isGeographic():
                feedback.pushInfo(self.tr(f"Measured in {measured_crs.authid()} (metres): the ground truth's CRS "
                                          "is geographic."))
            outputs = {name: report[name.lower()] for name in self.NUMBERS}
            outputs[self.OUTPUT_PROPOSALS] = copy_into_sink(self, parameters, self.OUTPUT_PROPOSALS, context, scored,
                                                            measured_crs, feedback, QgsWkbTypes.MultiPolygon,
                                                            layer_name="scored_proposals")
            outputs[self.OUTPUT_MISSED] = copy_into_sink(self, parameters, self.OUTPUT_MISSED, context, missed,
                                                         measured_crs, feedback, QgsWkbTypes.MultiPolygon,
                                                         layer_name="missed_buildings")
        if html_path:
            outputs[self.OUTPUT_HTML] = html_path
        feedback.pushInfo(self.tr(f"{variant}: TP {report['tp']}, FP {report['fp']}, FN {report['fn']}, precision "
                                  f"{report['precision']:.4f}, recall {report['recall']:.4f}, F1 {report['f1']:.4f}"))
        self._styles = {outputs[self.OUTPUT_PROPOSALS]: "score_proposals.qml",
                        outputs[self.OUTPUT_MISSED]: "score_missed.qml"}
        return outputs

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        for layer_id, qml in getattr(self, "_styles", {}).items():
            QmlStyle.attach(context, layer_id, qml)
        return {}
