"""Processing algorithm: Extract building footprints (TernausNet).

The parameters become one call of the core's ``extract`` command in the worker process; its
footprint file comes back into the output sink, its scores into the number outputs.
"""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString)

from ..defaults import OUTLINE_STYLES, PRESETS, PROBABILITY_FORMATS, SN6_MIN_AREA_M2, parse_scales
from ..defaults import PRECISION_CHOICES as PRECISIONS
from .base import SCORE_OUTPUTS, Sn6Algorithm
from .core_bridge import (check_outputs_are_not_inputs, copy_into_sink, destination_path, export_source, optional_args,
                          raster_input, raster_paths_unloaded, run_core, scratch_folder)
from . import input_parameters
from .input_parameters import (HELP_BAND_ORDER, HELP_INPUT_SCALE, HELP_LOOK_DIRECTION, HELP_RESAMPLING,
                               HELP_ZEROS_NODATA, input_arguments)
from .raster_checks import raster_parameter_problem
from .settings import DEVICES, default_device_setting, default_model_setting
from .styling import QmlStyle
from .truth_inputs import SPACENET_CSV, UncheckedSource, check_polygon_source, export_path, source_label, spacenet_csv

ROTATION_CHOICES = ("Auto (raster LOOK_DIRECTION tag, else the model's setting)",
                    "Yes (south-looking scene for a north-looking model)", "No")
FLIP_CHOICES = ("The model's setting (the bundled model: yes)", "Yes", "No")
CLI_CHOICES = ("model", "yes", "no")  # ROTATION_CHOICES / FLIP_CHOICES as the CLI spells them
PROBABILITY_FORMAT_CHOICES = ("Float32: probability 0–1, nodata -1", "Byte: round(probability × 254), nodata 255")
PROBABILITY_STYLES = {"float32": "probability.qml", "uint8": "probability_uint8.qml"}
PRECISION_CHOICES = ("Auto (bfloat16 on CUDA and on CPUs with native bf16, else float32)", "float32",
                     "bfloat16", "float16")
PRESET_CHOICES = ("This plugin's engine (default)", "SpaceNet 6 baseline (exact)")  # defaults.PRESETS, in order
OUTLINE_CHOICES = ("Traced (default)", "Regular: straight walls, right-angled corners")  # defaults.OUTLINE_STYLES

HELP = "\n".join([
    """Detects buildings in a SAR raster with a TernausNet U-Net (VGG11 encoder) and writes one polygon per building.

<b>SAR raster</b>: the bands the model expects, in order (SN6: 4 bands HH, HV, VH, VV on the SpaceNet 6 SAR-Intensity scale; nodata and NaN pixels never become buildings). It must have a CRS.
<b>Model file</b>: a UNet11 checkpoint (.pt/.pth/.model): the SpaceNet 6 baseline weights, or one written by 'Train footprint model'. Empty: the default model set in Processing ▸ Options ▸ Providers ▸ SN6 Footprints, else the bundled model (a small model trained on simulated SAR). Its metadata gives the defaults below; a bare SN6 baseline file uses the SN6 settings.
<b>Ground-truth footprints</b> (optional): polygons in any CRS (reprojected; invalid ones repaired with make_valid and counted in the log), or a SpaceNet CSV in pixel coordinates (ImageId, BuildingId, PolygonWKT_Pix), placed with the raster's geotransform; points, lines and tables without geometry are refused. The run then reports TP, FP, FN, precision, recall and F1 (SpaceNet rule: IoU &gt; 0.5, greedy by confidence, buildings under the minimum area ignored) as outputs; without ground truth these six outputs are left out of the results.
<b>Device</b>: auto = CUDA GPU if PyTorch sees one, else CPU. Default: the provider's setting (auto).
<b>Probability threshold</b>: 0–1; pixels above it are building. Default: the model's (SN6 baseline 0.5, bundled model 0.6).
<b>Minimum building area</b>: m²; smaller blobs are dropped. Default: the model's (20 m² = 80 px at 0.5 m).
<b>Simplification tolerance</b>: metres on the ground, whatever the CRS (geographic CRSs included); 0 keeps the pixel outline. Default 0.5.
<b>Outline style</b> (default Traced): Traced follows the probabilities (simplified by the tolerance above). Regular gives map-ready footprints: straight walls along each building's two main directions and right-angled corners (simplified by at least 1 m first); a building whose regular outline would overlap the traced one less than IoU 0.7 keeps its traced outline, so no building is lost or moved. Not with the SpaceNet 6 baseline (exact) preset.""",  # noqa: E501 - one paragraph a line: QGIS shows newlines as line breaks
    HELP_INPUT_SCALE,
    HELP_BAND_ORDER,
    HELP_LOOK_DIRECTION,
    HELP_ZEROS_NODATA,
    HELP_RESAMPLING,
    """A model trained on shrunk footprints (its metadata's grow_m, 1.5 m for the bundled model) predicts building cores a gap apart; every blob is grown back by that distance with square corners, so touching buildings come out as separate polygons.
<b>Tile size</b> (px, a multiple of 32 of at least 64, or 0; default 0 = Auto: the tile from 512 to 1024 px that computes the fewest pixels on the raster, said in the log), <b>tile overlap</b> (px, default 64; overlapping tiles are blended), <b>batch size</b> (tiles per forward pass, default 4; with Auto, as many pixels as that many 512 px tiles, and no tile larger than the batch: 1 keeps 512 px tiles, the least memory; a GPU that runs out of memory on one tile says so and names the fix).
<b>Rotate 180°</b>: the SpaceNet 6 orientation flag: rotate the scene before inference when its look direction is opposite to the model's (SN6: strips with flag 1 in SAR_orientations.txt). Default Auto: rotate when the raster's LOOK_DIRECTION metadata tag (written by the simulator) is opposite to the model's look direction, else the model's setting.
<b>Building probability</b> (optional raster output, off by default): the blended probability of every pixel on the model's grid, the very values the footprints are traced from (GeoTIFF, tiled, deflate; written complete or not at all). <b>Probability raster format</b>: Float32 (0–1, nodata -1) or Byte (round(p × 254), nodata 255: a quarter of the size, 0.5 is 127). Nodata: pixels without valid input. Styled with a colour ramp on loading.
<b>Precision</b> (default Auto): the arithmetic of the model's forward pass. Auto: bfloat16 autocast on CUDA GPUs that support it (else float16) and on CPUs with AMX or AVX512-BF16 (about 1.8× faster, held-out F1 within 0.002), else float32; the log's Device line says what ran. float32: probabilities that do not depend on the machine. A precision the CPU only emulates runs slowly, with a warning; bfloat16 on a GPU without it is refused.
<b>Preset</b> (default: this plugin's engine): SpaceNet 6 baseline (exact) runs the baseline's inference step by step, so the official baseline weights give the published baseline's polygons: 512 px windows stepped by 512 (the last snapped to the raster's edge, no padding), logits averaged where windows overlap, building where the logit is above 0, 4-connected blobs under 80 px removed, polygons buffered by 0 and simplified by 0.5 px, confidence 1. It ignores tile size, overlap, threshold, minimum area, simplification, flipped-copy averaging and precision (float32), keeps Rotate 180° and the input options, and needs a raster of at least 512 × 512 px.
<b>Test-time scales</b> (default: empty, none): comma-separated factors between 0.5 and 2, e.g. 0.8,1,1.25; every tile is also resized by each factor (to a multiple of 32 px), predicted, resized back, and the probabilities are averaged. Costs about the sum of the squared factors times one pass (3.2x for 0.8,1,1.25; the log says it). With the bundled model it lowered held-out F1 on every set (e.g. 0.822 to 0.777 on default scenes): use it only with a model trained for it.
<b>Average with a flipped copy</b>: test-time augmentation; every tile is also predicted flipped along the look direction (a flip that keeps layover on its side) and the two probabilities are averaged. Twice the compute; on the bundled model's calibration scenes it raises F1 from 0.790 to 0.813. Default: the model's setting (on for the bundled model, off for the SN6 baseline).

Output attributes: id, area_m2 (m²), confidence (mean building probability inside the polygon). The layer is named after the input, e.g. "Building footprints (scene)".
The model runs in the plugin's own Python environment (a worker process; set up once with Install dependencies…); the log names its Python, PyTorch and the device."""])  # noqa: E501 - one paragraph a line: QGIS shows newlines as line breaks


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
    INPUT_SCALE = input_parameters.INPUT_SCALE
    BAND_ORDER = input_parameters.BAND_ORDER
    LOOK_DIRECTION = input_parameters.LOOK_DIRECTION
    ZEROS_NODATA = input_parameters.ZEROS_NODATA
    RESAMPLING = input_parameters.RESAMPLING
    PROBABILITY_FORMAT = "PROBABILITY_FORMAT"
    INFERENCE_PRECISION = "INFERENCE_PRECISION"  # PRECISION is the score output
    PRESET = "PRESET"
    TTA_SCALES = "TTA_SCALES"
    OUTLINE = "OUTLINE"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITY = "OUTPUT_PROBABILITY"
    BUILDING_COUNT = "BUILDING_COUNT"

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("SAR raster")))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Model file (empty: the default model in Processing options, else the bundled model)"),
            optional=True,
            fileFilter="PyTorch checkpoints (*.pt *.pth *.model);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.GROUND_TRUTH, self.tr("Ground-truth footprints for scoring"),
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), options=list(DEVICES),
            defaultValue=DEVICES.index(default_device_setting())))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Probability threshold (empty: the model's)"),
            QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, self.tr("Minimum building area [m²] (empty: the model's, usually {:g})").format(
                SN6_MIN_AREA_M2), QgsProcessingParameterNumber.Double, optional=True, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.SIMPLIFY, self.tr("Simplification tolerance [m]"),
            QgsProcessingParameterNumber.Double, defaultValue=0.5, minValue=0.0))
        self.addParameter(QgsProcessingParameterEnum(
            self.OUTLINE, self.tr("Outline style"), options=[self.tr(c) for c in OUTLINE_CHOICES], defaultValue=0,
            optional=True))  # optional: models saved before it still validate
        main_input, advanced_input = input_parameters.input_parameters(self.tr)
        for parameter in main_input:
            self.addParameter(parameter)
        advanced = advanced_input + [
            QgsProcessingParameterNumber(self.TILE_SIZE,
                                         self.tr("Tile size [px, multiple of 32; 0: Auto, fitted to the raster]"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=0,
                                         minValue=0, maxValue=8192),
            QgsProcessingParameterNumber(self.OVERLAP, self.tr("Tile overlap [px]"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=64,
                                         minValue=0, maxValue=4096),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size [tiles; with Auto, 512 px tiles' worth]"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=4,
                                         minValue=1, maxValue=256),
            QgsProcessingParameterEnum(self.ROTATE_180, self.tr("Rotate 180° before inference"),
                                       options=list(ROTATION_CHOICES), defaultValue=0),
            QgsProcessingParameterEnum(self.FLIP_AVERAGE,
                                       self.tr("Average with a flipped copy (twice the compute)"),
                                       options=list(FLIP_CHOICES), defaultValue=0),
            QgsProcessingParameterEnum(self.PROBABILITY_FORMAT, self.tr("Probability raster format"),
                                       options=list(PROBABILITY_FORMAT_CHOICES), defaultValue=0,
                                       optional=True),  # optional: models saved before it still validate
            QgsProcessingParameterEnum(self.INFERENCE_PRECISION, self.tr("Precision"),
                                       options=list(PRECISION_CHOICES), defaultValue=0, optional=True),
            QgsProcessingParameterEnum(self.PRESET, self.tr("Preset"), options=list(PRESET_CHOICES), defaultValue=0,
                                       optional=True),  # optional: models saved before it still validate
            QgsProcessingParameterString(self.TTA_SCALES,
                                         self.tr("Test-time scales (e.g. 0.8,1,1.25; empty: none; about "
                                                 "sum of scale² times the compute)"),
                                         defaultValue="", optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Building footprints"), QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITY, self.tr("Building probability"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.BUILDING_COUNT, self.tr("Number of buildings")))
        for name, label in SCORE_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        # A folder or a non-raster file by path: say so (QGIS's own words would be '... not found'),
        # here rather than in checkParameterValues, whose refusals processing.run makes two lines.
        problem = raster_parameter_problem(parameters, self.INPUT, context)
        if problem:
            raise QgsProcessingException(self.tr(problem))
        layer = raster_input(self, parameters, self.INPUT, context)  # a file path: no .aux.xml beside it
        if layer.providerType() != "gdal":
            raise QgsProcessingException(self.tr(
                f"Layer '{layer.name()}' is not a file raster (provider {layer.providerType()}); "
                "save it as GeoTIFF (Export ▸ Save As…) and use that file."))
        truth_source = self.parameterAsSource(parameters, self.GROUND_TRUTH, context)
        truth_layer = self.parameterAsVectorLayer(parameters, self.GROUND_TRUTH, context)
        probability = self._probability_path(parameters, context)
        check_outputs_are_not_inputs(
            [("footprints output", destination_path(parameters, self.OUTPUT, context)),
             ("building probability output", probability)],
            [("input raster", layer.source(), "raster"),
             ("model file", self.parameterAsFile(parameters, self.MODEL, context) or default_model_setting(), "file"),
             ("ground truth", truth_layer.source() if truth_layer is not None else None, "vector")])
        truth_csv = truth_label = None
        if truth_source is not None:  # checked before anything is exported
            truth_label = source_label(parameters, self.GROUND_TRUTH, truth_source.sourceName())
            truth_csv = spacenet_csv(self, parameters, self.GROUND_TRUTH, context, truth_source)
            if truth_csv is None:
                check_polygon_source(truth_source, truth_label, f" (or {SPACENET_CSV})")
        self._layer_name = self.tr(f"Building footprints ({layer.name()})")
        with scratch_folder() as scratch:
            footprints = scratch / "footprints.gpkg"
            arguments = ["extract", layer.source().split("|")[0], str(footprints), *self._options(parameters, context)]
            if probability:  # written by the worker straight to its destination (complete or absent)
                arguments += ["--probability", probability]
            if truth_csv is not None:  # pixel coordinates: the worker places them with the raster's geotransform
                arguments += ["--truth", truth_csv]
            elif truth_source is not None:  # invalid polygons too: the worker repairs and counts them
                truth = export_source(UncheckedSource(truth_source), export_path(scratch, "truth", truth_label),
                                      layer.crs(), context, feedback)
                arguments += ["--truth", str(truth)]
            result = run_core(arguments, feedback, scratch)
            dest_id = copy_into_sink(self, parameters, self.OUTPUT, context, footprints, layer.crs(), feedback,
                                     layer_name="footprints")
        outputs = {self.OUTPUT: dest_id, self.BUILDING_COUNT: result["buildings"]}
        self._probability = None
        if probability:
            outputs[self.OUTPUT_PROBABILITY] = probability
            fmt = PROBABILITY_FORMATS[self.parameterAsEnum(parameters, self.PROBABILITY_FORMAT, context)]
            self._probability = (probability, PROBABILITY_STYLES[fmt],
                                 self.tr(f"Building probability ({layer.name()})"))
        if truth_source is not None:
            outputs.update({name: result[name.lower()] for name in SCORE_OUTPUTS})
            feedback.pushInfo(self.tr(
                f"Against the ground truth (SpaceNet rule, IoU > 0.5): TP {result['tp']}, FP {result['fp']}, "
                f"FN {result['fn']}, precision {result['precision']:.4f}, recall {result['recall']:.4f}, "
                f"F1 {result['f1']:.4f}"))
        self._dest_id = dest_id
        return outputs

    def _options(self, parameters, context) -> list[str]:
        """The parameters as the core's ``extract`` options (empty ones: the model's own)."""
        model = self.parameterAsFile(parameters, self.MODEL, context) or default_model_setting()
        return optional_args([
            ("--model", model),
            ("--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]),
            ("--tile-size", self.parameterAsInt(parameters, self.TILE_SIZE, context)),
            ("--overlap", self.parameterAsInt(parameters, self.OVERLAP, context)),
            ("--batch-size", self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
            ("--threshold", self._optional_number(parameters, self.THRESHOLD, context)),
            ("--min-area", self._optional_number(parameters, self.MIN_AREA, context)),
            ("--simplify", self.parameterAsDouble(parameters, self.SIMPLIFY, context)),
            ("--rotate-180", CLI_CHOICES[self.parameterAsEnum(parameters, self.ROTATE_180, context)]),
            ("--flip-average", CLI_CHOICES[self.parameterAsEnum(parameters, self.FLIP_AVERAGE, context)]),
            ("--probability-format",
             PROBABILITY_FORMATS[self.parameterAsEnum(parameters, self.PROBABILITY_FORMAT, context)]),
            ("--precision", PRECISIONS[self.parameterAsEnum(parameters, self.INFERENCE_PRECISION, context)]),
            ("--preset", PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)]),
            ("--tta-scales", (self.parameterAsString(parameters, self.TTA_SCALES, context) or "").replace(" ", "")),
            ("--outline", OUTLINE_STYLES[self.parameterAsEnum(parameters, self.OUTLINE, context)]),
        ]) + input_arguments(self, parameters, context)

    def _probability_path(self, parameters, context) -> str | None:
        """The probability raster's file (None: not asked for); GeoTIFF only, said before any work."""
        value = parameters.get(self.OUTPUT_PROBABILITY)
        if value is None or value == "":
            return None
        path = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITY, context)
        if not path:
            return None
        if not path.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(self.tr(
                f"Building probability {path} is not a GeoTIFF; give it a .tif or .tiff name."))
        return path

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS API
        """Processing's own checks, without loading a raster file as a layer (no .aux.xml); the
        test-time scales must read as numbers (their range is checked by the worker's validation)."""
        ok, message = super().checkParameterValues(raster_paths_unloaded(parameters, self.INPUT, context), context)
        if ok:
            try:
                parse_scales(self.parameterAsString(parameters, self.TTA_SCALES, context) or "")
            except ValueError as exc:
                return False, self.tr(str(exc))
        return ok, message

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        dest_id = getattr(self, "_dest_id", None)
        if dest_id:
            if context.willLoadLayerOnCompletion(dest_id):
                context.layerToLoadOnCompletionDetails(dest_id).name = self._layer_name
            QmlStyle.attach(context, dest_id, "footprints.qml")
        probability = getattr(self, "_probability", None)
        if probability:
            path, qml, name = probability
            if context.willLoadLayerOnCompletion(path):
                context.layerToLoadOnCompletionDetails(path).name = name
            QmlStyle.attach(context, path, qml)
        return {}
