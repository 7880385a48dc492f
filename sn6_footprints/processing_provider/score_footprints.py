"""Processing algorithm: Score building footprints (SpaceNet F1)."""
from __future__ import annotations

from pathlib import Path

import shapely

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsField, QgsFields,
                       QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from ..core.feedback import Cancelled
from ..core.scoring import VARIANTS
from ..core.settings import SN6_MIN_AREA_M2
from .base import Sn6Algorithm
from .core_bridge import ProcessingFeedback, qgs_geometry, source_geometries
from .styling import QmlStyle

HELP = """Scores predicted building footprints against ground truth with the SpaceNet F1 metric: proposals in descending confidence each take the unmatched ground-truth polygon of highest IoU; IoU above the threshold is a true positive.

<b>Ground truth</b> and <b>Proposals</b>: polygon layers in any CRS. Both are measured in the ground truth's CRS, or, when that is geographic, in the local UTM zone (metres).
<b>Variant</b>: sn6 (the official SpaceNet 6 scorer, default) or solaris (solaris's evaluator: proposals strictly above the minimum area, invalid proposals repaired).
<b>Minimum area</b>: m²; smaller polygons are not scored. Default 20 m² (80 px at 0.5 m).
<b>IoU threshold</b>: a match needs IoU strictly above it. Default 0.5.
<b>Confidence field</b> (optional): orders the proposals, highest first; without it, layer order.
<b>Image id fields</b> (optional): match per image, then pool the counts (sn6 scores only images present in the proposals).

Outputs: F1, precision, recall, TP, FP, FN; the proposals with status (TP/FP), IoU and matched ground-truth id (green TP, red FP); the missed buildings (FN, blue); an HTML report with a table per image."""


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
    NUMBERS = ("F1", "PRECISION", "RECALL", "TP", "FP", "FN")

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
        for name in self.NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(name)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        from ..core.score_html import score_html
        from ..core.scoring import score_footprints
        from ..core.vector_io import metric_crs

        truth_source = self.parameterAsSource(parameters, self.TRUTH, context)
        proposal_source = self.parameterAsSource(parameters, self.PROPOSALS, context)
        if truth_source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.TRUTH))
        if proposal_source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.PROPOSALS))
        truth_crs = truth_source.sourceCrs()
        if not truth_crs.isValid():
            truth_crs = proposal_source.sourceCrs()
        extent = truth_source.sourceExtent()
        crs = QgsCoordinateReferenceSystem(metric_crs(truth_crs.toWkt(), [shapely.box(
            extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())]) or truth_crs.toWkt())
        if crs != truth_crs:
            feedback.pushInfo(self.tr(f"Measuring in {crs.authid()} (metres): the ground truth's CRS is geographic."))
        confidence_field = self.parameterAsString(parameters, self.CONFIDENCE_FIELD, context)
        truth_image_field = self.parameterAsString(parameters, self.TRUTH_IMAGE_FIELD, context)
        proposal_image_field = self.parameterAsString(parameters, self.PROPOSAL_IMAGE_FIELD, context)
        if bool(truth_image_field) != bool(proposal_image_field):
            raise QgsProcessingException(self.tr("Give an image id field for both layers, or for neither."))
        truth, truth_ids, truth_values = source_geometries(truth_source, crs, context, feedback,
                                                           (truth_image_field,))
        proposals, proposal_ids, proposal_values = source_geometries(
            proposal_source, crs, context, feedback, (confidence_field, proposal_image_field))
        confidence = proposal_values.get(confidence_field)
        if confidence is not None:
            confidence = [float(c) if c is not None else 0.0 for c in confidence]
        variant = VARIANTS[self.parameterAsEnum(parameters, self.VARIANT, context)]
        try:
            report = score_footprints(
                truth, proposals, variant=variant,
                min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                iou_threshold=self.parameterAsDouble(parameters, self.IOU, context),
                truth_image_ids=truth_values.get(truth_image_field),
                proposal_image_ids=proposal_values.get(proposal_image_field),
                proposal_confidence=confidence, truth_ids=truth_ids, proposal_ids=proposal_ids,
                feedback=ProcessingFeedback(feedback))
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled by the user; no output was written."))
        except ValueError as error:
            raise QgsProcessingException(str(error))

        outputs = {name: value for name, value in zip(
            self.NUMBERS, (report.f1, report.precision, report.recall, report.tp, report.fp, report.fn))}
        outputs[self.OUTPUT_PROPOSALS] = self._write(
            parameters, self.OUTPUT_PROPOSALS, context, crs, proposals,
            [("source_fid", QVariant.LongLong, proposal_ids), ("status", QVariant.String, report.proposal_status),
             ("iou", QVariant.Double, [float(v) for v in report.proposal_iou]),
             ("truth_fid", QVariant.LongLong, report.proposal_match)], feedback)
        missed = [i for i, status in enumerate(report.truth_status) if status == "FN"]
        outputs[self.OUTPUT_MISSED] = self._write(
            parameters, self.OUTPUT_MISSED, context, crs, [truth[i] for i in missed],
            [("source_fid", QVariant.LongLong, [truth_ids[i] for i in missed]),
             ("best_iou", QVariant.Double, [float(report.truth_iou[i]) for i in missed])], feedback)
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        if html_path:
            Path(html_path).write_text(score_html(report, "SpaceNet F1 of building footprints"), encoding="utf-8")
            outputs[self.OUTPUT_HTML] = html_path
        feedback.pushInfo(self.tr(f"{variant}: TP {report.tp}, FP {report.fp}, FN {report.fn}, precision "
                                  f"{report.precision:.4f}, recall {report.recall:.4f}, F1 {report.f1:.4f}"))
        self._styles = {outputs[self.OUTPUT_PROPOSALS]: "score_proposals.qml",
                        outputs[self.OUTPUT_MISSED]: "score_missed.qml"}
        return outputs

    def _write(self, parameters, name, context, crs, geometries, columns, feedback):
        fields = QgsFields()
        for field_name, kind, _values in columns:
            fields.append(QgsField(field_name, kind))
        sink, dest_id = self.parameterAsSink(parameters, name, context, fields, QgsWkbTypes.MultiPolygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, name))
        for i, geometry in enumerate(geometries):
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled by the user."))
            feature = QgsFeature(fields)
            if geometry is not None and not geometry.is_empty:
                multi = qgs_geometry(geometry)
                multi.convertToMultiType()
                feature.setGeometry(multi)
            feature.setAttributes([values[i] for _n, _k, values in columns])
            sink.addFeature(feature)
        return dest_id

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        for layer_id, qml in getattr(self, "_styles", {}).items():
            QmlStyle.attach(context, layer_id, qml)
        return {}
