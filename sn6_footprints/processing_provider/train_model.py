"""Processing algorithm: Train footprint model (TernausNet)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber, QgsRasterLayer,
                       QgsVectorLayer)

from ..defaults import DEFAULT_LABEL_EROSION_M, MODEL_OUTPUTS
from .base import Sn6Algorithm
from .core_bridge import check_outputs_are_not_inputs, export_source, optional_args, run_core, scratch_folder
from . import input_parameters
from .input_parameters import HELP_BAND_ORDER, HELP_INPUT_SCALE, HELP_RESAMPLING, HELP_ZEROS_NODATA, input_arguments
from ..worker.environment import plugin_data_dir
from .raster_checks import raster_parameter_problem
from .settings import DEVICES, default_device_setting, profile_dir
from .truth_inputs import check_label_layers, export_path

CANCELLED = ("Cancelled by the user. Epochs already finished are kept: the best so far is the output file (if "
             "one was written); run again with Resume to continue.")

# MODEL_OUTPUTS, then the default (appended, so models saved with 0 or 1 keep their meaning)
OUTPUT_CHOICES = ("Footprint only", "Footprint, edge and contact: split touching buildings",
                  "As the initial model (default; footprint only without one)")
NORMALISATION_CHOICES = (("auto", "Automatic: the initial model's, else SN6 (127.5 / 31.875)"),
                         ("sn6", "SN6 SAR-Intensity scale: (x − 127.5) / 31.875 on every band"),
                         ("per-band", "Per band: mean and std of the training data"))
LOOK_CHOICES = (None, "north", "south", "east", "west")

HELP = "\n".join([
    """Trains a TernausNet U-Net (VGG11 encoder, UNet11) to find buildings in SAR, or fine-tunes an existing checkpoint, with the SpaceNet 6 baseline's recipe: dice + 10 × focal loss on the logits, AdamW, random crops, buildings of 20 m² or less left out of the masks.

<b>SAR rasters</b>: one or more file rasters, each with a CRS, read as 'Extract building footprints' reads them (the parameters below): bands mapped to the model's (SN6: 4 bands HH, HV, VH, VV), values converted to the model's scale, resampled to its pixel size, and turned by quarter turns to its look direction. The model's scale is the initial model's; a new model's is SN6 SAR-Intensity, or with per-band normalisation the first raster's own; the checkpoint records it.
<b>Footprint layers</b>: building polygons, one layer per raster, in the same order; any CRS (reprojected to the raster's).
<b>Model width</b>: channel multiplier; 1 = the SN6 baseline (23 M parameters, a GPU model), 0.25 = the bundled CPU model (1.4 M parameters). Default 0.25. Ignored when an initial model is given.
<b>Initial model</b> (optional): a UNet11 checkpoint to fine-tune (the SN6 baseline weights, the bundled model in the plugin's <i>models</i> folder, or an earlier run's output). Empty: random initialisation.
<b>Tile size</b>: px, multiple of 32, side of the random training crops and of the validation tiles. Default 256.
<b>Batch size</b>: tiles per step. Default 8.
<b>Epochs</b>: total epochs; with Resume, training continues up to this number. Default 10.
<b>Learning rate</b>: AdamW. Default 0.0001 (the SN6 baseline's).
<b>Validation share</b>: 0–0.9; this share of each raster's rows, at its bottom, is never trained on. After every epoch the extraction runs there and is scored against the footprints (SpaceNet F1: IoU &gt; 0.5); the epoch with the best F1 is kept. 0: no validation, the epoch with the lowest loss is kept. Default 0.2.
<b>Device</b>: auto = CUDA GPU if PyTorch sees one, else CPU. Default auto.
<b>Resume</b>: continue an interrupted or finished run into the same output from its resume state, written after every epoch into the plugin's data folder in the QGIS profile (the log names it). Default off. Advanced: <b>keep the resume file beside the output</b> as <i>output</i>.resume.pt instead (about 17 MB at the default width 0.25: weights and optimiser state); default off.""",  # noqa: E501 - one paragraph a line: QGIS shows newlines as line breaks
    HELP_INPUT_SCALE,
    HELP_BAND_ORDER + " A new model takes the bands it reads (named by their descriptions where they name "
                      "polarisations).",
    """Advanced: <b>steps per epoch</b> (0 = about one pass over the training area; default 0), <b>seed</b> (default 0; the same seed gives the same run), <b>normalisation</b> (default automatic), <b>look direction</b> of the model (default: the initial model's, else north; a raster whose LOOK_DIRECTION tag says another direction is turned by quarter turns to it, as extraction turns it; only flips that keep the look direction are used, left-right for north/south), <b>model pixel size</b> (m; every raster is resampled to it; empty: the initial model's, else the first raster's ground pixel size), <b>pixels 0 in every band are nodata</b> (default on), <b>resampling</b> (default auto; see below), <b>minimum building area</b> (m², default 20), <b>shrink footprints in the masks</b> (m; every footprint is eroded by this much in the training masks so that touching buildings are a clear gap apart, and extraction grows each predicted blob back by as much; empty: the initial model's value, else 1 m; 0 learns whole footprints, as the SN6 baseline did; keep it under about 1.7 m at 0.5 m pixels and 20 m², or specks of noise grow past the minimum area: the log warns), <b>extra loss weight where touching buildings meet</b> (default 0 = off; with W, every pixel of the gap between two touching footprints, and the edge pixel of each, counts 1 + W times in the focal loss, as the U-Net paper weights the borders between touching cells; the bundled model was trained without it), <b>model outputs</b> (default As the initial model: its outputs, or Footprint only without one; Footprint, edge and contact: the model also learns each footprint's outline and the gap between touching buildings, and extraction splits touching buildings with a marker-based watershed seeded from the building cores; an initial one-channel model keeps its footprint channel and gains the two others; Footprint only from an instance-aware initial model keeps its footprint channel alone), <b>mixed precision</b> (default on: bf16/fp16 autocast on CUDA, bf16 on CPUs with AMX or AVX512-BF16, about 3x faster there; other CPUs train in float32).""",  # noqa: E501 - one paragraph a line: QGIS shows newlines as line breaks
    HELP_ZEROS_NODATA,
    HELP_RESAMPLING,
    """<b>Output model</b>: a file (not a temporary one: it would be deleted when QGIS exits), the best epoch's checkpoint (.pt), with what extraction needs: width, bands, normalisation, pixel size, threshold, look direction, training data, validation F1.

Outputs: BEST_F1 (validation F1 of the kept epoch, empty without validation), BEST_EPOCH, OUTPUT_MODEL."""])  # noqa: E501 - one paragraph a line: QGIS shows newlines as line breaks


class TrainModelAlgorithm(Sn6Algorithm):
    ALGORITHM_ID = "train_model"
    DISPLAY_NAME = "Train footprint model (TernausNet)"
    HELP = HELP
    INPUT_RASTERS = "INPUT_RASTERS"
    LABELS = "LABELS"
    WIDTH = "WIDTH"
    INITIAL_MODEL = "INITIAL_MODEL"
    TILE_SIZE = "TILE_SIZE"
    BATCH_SIZE = "BATCH_SIZE"
    EPOCHS = "EPOCHS"
    LEARNING_RATE = "LEARNING_RATE"
    VALIDATION_SHARE = "VALIDATION_SHARE"
    DEVICE = "DEVICE"
    RESUME = "RESUME"
    STEPS_PER_EPOCH = "STEPS_PER_EPOCH"
    SEED = "SEED"
    NORMALISATION = "NORMALISATION"
    LOOK_DIRECTION = "LOOK_DIRECTION"
    MIN_AREA = "MIN_AREA"
    LABEL_EROSION = "LABEL_EROSION"
    CONTACT_WEIGHT = "CONTACT_WEIGHT"
    OUTPUTS = "OUTPUTS"
    MIXED_PRECISION = "MIXED_PRECISION"
    RESUME_BESIDE_OUTPUT = "RESUME_BESIDE_OUTPUT"
    INPUT_SCALE = input_parameters.INPUT_SCALE
    BAND_ORDER = input_parameters.BAND_ORDER
    ZEROS_NODATA = input_parameters.ZEROS_NODATA
    RESAMPLING = input_parameters.RESAMPLING
    PIXEL_SIZE = "PIXEL_SIZE"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    BEST_F1 = "BEST_F1"
    BEST_EPOCH = "BEST_EPOCH"

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT_RASTERS, self.tr("SAR rasters"), QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.LABELS, self.tr("Footprint layers (one per raster, same order)"), QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterNumber(
            self.WIDTH, self.tr("Model width (1 = SN6 baseline)"), QgsProcessingParameterNumber.Double,
            defaultValue=0.25, minValue=0.01, maxValue=4.0))
        self.addParameter(QgsProcessingParameterFile(
            self.INITIAL_MODEL, self.tr("Initial model to fine-tune (empty: random initialisation)"), optional=True,
            fileFilter="PyTorch checkpoints (*.pt *.pth *.model);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, self.tr("Tile size [px, multiple of 32]"), QgsProcessingParameterNumber.Integer,
            defaultValue=256, minValue=32, maxValue=4096))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, self.tr("Batch size [tiles]"), QgsProcessingParameterNumber.Integer,
            defaultValue=8, minValue=1, maxValue=256))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, self.tr("Epochs"), QgsProcessingParameterNumber.Integer, defaultValue=10,
            minValue=1, maxValue=100000))
        learning_rate = QgsProcessingParameterNumber(
            self.LEARNING_RATE, self.tr("Learning rate (AdamW)"), QgsProcessingParameterNumber.Double,
            defaultValue=1e-4, minValue=1e-8, maxValue=1.0)
        learning_rate.setMetadata({"widget_wrapper": {"decimals": 8}})
        self.addParameter(learning_rate)
        self.addParameter(QgsProcessingParameterNumber(
            self.VALIDATION_SHARE, self.tr("Validation share of each raster's rows (bottom band)"),
            QgsProcessingParameterNumber.Double, defaultValue=0.2, minValue=0.0, maxValue=0.9))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), options=list(DEVICES),
            defaultValue=DEVICES.index(default_device_setting())))
        self.addParameter(QgsProcessingParameterBoolean(
            self.RESUME, self.tr("Resume an interrupted or finished run into this output"), defaultValue=False))
        # The rasters are read as extraction reads them (optional: models saved before these existed validate);
        # no Look direction of the rasters here: this algorithm's Look direction is the model's.
        main_input, advanced_input = input_parameters.input_parameters(self.tr, look_direction=False)
        for parameter in main_input:
            self.addParameter(parameter)
        advanced = [
            QgsProcessingParameterNumber(self.STEPS_PER_EPOCH, self.tr("Steps per epoch (0: one pass over the data)"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0),
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Integer,
                                         defaultValue=0, minValue=0),
            QgsProcessingParameterEnum(self.NORMALISATION, self.tr("Normalisation"),
                                       options=[label for _, label in NORMALISATION_CHOICES], defaultValue=0),
            QgsProcessingParameterEnum(self.LOOK_DIRECTION,
                                       self.tr("Look direction of the model (the scenes are turned to it)"),
                                       options=["Initial model's, else north", "North", "South", "East", "West"],
                                       defaultValue=0),
            QgsProcessingParameterNumber(self.PIXEL_SIZE,
                                         self.tr("Model pixel size [m] (empty: the initial model's, else the "
                                                 "first raster's)"),
                                         QgsProcessingParameterNumber.Double, optional=True, minValue=0.01,
                                         maxValue=100.0),
            *advanced_input,
            QgsProcessingParameterNumber(self.MIN_AREA, self.tr("Minimum building area in the masks [m²]"),
                                         QgsProcessingParameterNumber.Double, defaultValue=20.0, minValue=0.0),
            QgsProcessingParameterNumber(self.LABEL_EROSION,
                                         self.tr("Shrink footprints in the masks by [m] (empty: initial model's, "
                                                 f"else {DEFAULT_LABEL_EROSION_M:g})"),
                                         QgsProcessingParameterNumber.Double, optional=True, minValue=0.0,
                                         maxValue=5.0),
            QgsProcessingParameterNumber(self.CONTACT_WEIGHT,
                                         self.tr("Extra loss weight where touching buildings meet (0: off)"),
                                         QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0,
                                         maxValue=50.0),
            QgsProcessingParameterEnum(self.OUTPUTS, self.tr("Model outputs"),
                                       options=[self.tr(c) for c in OUTPUT_CHOICES], defaultValue=2,
                                       optional=True),  # optional: models saved before it still validate
            QgsProcessingParameterBoolean(self.RESUME_BESIDE_OUTPUT,
                                          self.tr("Keep the resume file beside the output (<output>.resume.pt)"),
                                          defaultValue=False),
            QgsProcessingParameterBoolean(self.MIXED_PRECISION,
                                          self.tr("Mixed precision (CUDA; CPUs with AMX or AVX512-BF16)"),
                                          defaultValue=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Output model"), fileFilter="PyTorch checkpoint (*.pt)"))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_F1, self.tr("Validation F1 of the kept epoch")))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_EPOCH, self.tr("Kept epoch")))

    def _rasters(self, parameters, context) -> list[QgsRasterLayer]:
        layers = self.parameterAsLayerList(parameters, self.INPUT_RASTERS, context)
        if not layers:
            raise QgsProcessingException(self.tr("Choose at least one SAR raster."))
        for layer in layers:
            if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
                raise QgsProcessingException(self.tr(
                    f"Layer '{layer.name()}' is not a file raster; save it as GeoTIFF (Export ▸ Save As…) "
                    "and use that file."))
            if not layer.crs().isValid():
                raise QgsProcessingException(self.tr(
                    f"Raster '{layer.name()}' has no CRS, so its footprints cannot be placed on it; assign its "
                    "CRS (Raster ▸ Projections ▸ Assign Projection) and run again."))
        return layers

    def checkParameterValues(self, parameters, context):  # noqa: N802 - QGIS API
        """A trained model saved to a temporary file is lost when QGIS exits: ask for a file."""
        if parameters.get(self.OUTPUT_MODEL) in (None, "", QgsProcessing.TEMPORARY_OUTPUT):
            return False, self.tr("Choose a file for the output model (…▸ Save to File…): a temporary file is "
                                  "deleted when QGIS exits, and the trained model with it.")
        problem = raster_parameter_problem(parameters, self.INPUT_RASTERS, context)  # before QGIS's '... not found'
        if problem:
            return False, self.tr(problem)
        return super().checkParameterValues(parameters, context)

    def _labels(self, parameters, context, rasters, scratch, feedback) -> list[Path]:
        """Footprints of each raster, read through QGIS (any provider), reprojected to its CRS and
        written as files for the worker."""
        layers = self.parameterAsLayerList(parameters, self.LABELS, context)
        if len(layers) != len(rasters):
            raise QgsProcessingException(self.tr(
                f"{len(rasters)} raster(s) but {len(layers)} footprint layer(s): choose one footprint layer per "
                "raster, in the same order."))
        for layer in layers:
            if not isinstance(layer, QgsVectorLayer):
                raise QgsProcessingException(self.tr(f"Layer '{layer.name()}' is not a polygon layer: choose the "
                                                     "building footprint polygons."))
        check_label_layers(layers)  # points, lines, all empty: refused before anything is exported
        paths = []
        for i, (layer, raster) in enumerate(zip(layers, rasters)):
            paths.append(export_source(layer, export_path(scratch, f"labels_{i}", layer.name()), raster.crs(), context,
                                       feedback))
            feedback.pushInfo(self.tr(f"{layer.name()}: {layer.featureCount()} footprint(s) for {raster.name()}"))
        return paths

    def _resume_file(self, output: str, beside: bool) -> Path:
        """The resume state (17 MB at full width): in the plugin's data folder, keyed by the output
        path, unless the user asked for it beside the output."""
        if beside:
            return Path(output + ".resume.pt")
        key = hashlib.sha256(str(Path(output).resolve()).encode("utf-8")).hexdigest()[:16]
        folder = plugin_data_dir(profile_dir()) / "resume"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{Path(output).stem}-{key}.resume.pt"

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        rasters = self._rasters(parameters, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        if not output:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_MODEL))
        labels = self.parameterAsLayerList(parameters, self.LABELS, context)
        check_outputs_are_not_inputs(
            [("output model", output)],
            [("SAR raster", raster.source(), "raster") for raster in rasters]
            + [("footprint layer", layer.source(), "vector") for layer in labels]
            + [("initial model", self.parameterAsFile(parameters, self.INITIAL_MODEL, context) or None, "file")])
        resume_file = self._resume_file(output, self.parameterAsBoolean(parameters, self.RESUME_BESIDE_OUTPUT, context))
        feedback.pushInfo(self.tr(f"Resume state: {resume_file}"))
        with scratch_folder() as scratch:
            labels = self._labels(parameters, context, rasters, scratch, feedback)
            arguments = ["train", "--output", output, "--resume-file", str(resume_file)]
            for raster, label in zip(rasters, labels):
                arguments += ["--raster", raster.source().split("|")[0], "--labels", str(label)]
            arguments += self._options(parameters, context)
            result = run_core(arguments, feedback, scratch, cancelled_message=CANCELLED)
        return {self.OUTPUT_MODEL: result["output"], self.BEST_F1: result["best_f1"],
                self.BEST_EPOCH: result["best_epoch"]}

    def _options(self, parameters, context) -> list[str]:
        """The parameters as the core's ``train`` options."""
        look = LOOK_CHOICES[self.parameterAsEnum(parameters, self.LOOK_DIRECTION, context)]
        flags = [flag for flag, on in (
            ("--resume", self.parameterAsBoolean(parameters, self.RESUME, context)),
            ("--no-mixed-precision", not self.parameterAsBoolean(parameters, self.MIXED_PRECISION, context))) if on]
        return flags + optional_args([
            ("--width", self.parameterAsDouble(parameters, self.WIDTH, context)),
            ("--init", self.parameterAsFile(parameters, self.INITIAL_MODEL, context)),
            ("--tile-size", self.parameterAsInt(parameters, self.TILE_SIZE, context)),
            ("--batch-size", self.parameterAsInt(parameters, self.BATCH_SIZE, context)),
            ("--epochs", self.parameterAsInt(parameters, self.EPOCHS, context)),
            ("--steps-per-epoch", self.parameterAsInt(parameters, self.STEPS_PER_EPOCH, context) or None),
            ("--lr", repr(self.parameterAsDouble(parameters, self.LEARNING_RATE, context))),
            ("--val-share", self.parameterAsDouble(parameters, self.VALIDATION_SHARE, context)),
            ("--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]),
            ("--seed", self.parameterAsInt(parameters, self.SEED, context)),
            ("--normalisation",
             NORMALISATION_CHOICES[self.parameterAsEnum(parameters, self.NORMALISATION, context)][0]),
            ("--look-direction", look),
            ("--min-area", self.parameterAsDouble(parameters, self.MIN_AREA, context)),
            ("--label-erosion", self._optional_number(parameters, self.LABEL_EROSION, context)),
            ("--contact-weight", self.parameterAsDouble(parameters, self.CONTACT_WEIGHT, context)),
            ("--outputs", (tuple(MODEL_OUTPUTS) + (None,))[self.parameterAsEnum(parameters, self.OUTPUTS, context)]),
            ("--pixel-size", self._optional_number(parameters, self.PIXEL_SIZE, context)),
        ]) + input_arguments(self, parameters, context, look_direction=False)
