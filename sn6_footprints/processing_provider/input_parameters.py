"""The input parameters Extract and Train share, defined once: how a raster is read into a model.

Input scale, Band order, Look direction (Extract only: Train's own Look direction is the
model's), and the advanced Pixels 0 are nodata and Resampling; their choices, their spelling
on the core's command line (``cli/input_arguments.py``) and their help. Every one is optional
with a default, so models saved before they existed (``extract_and_score.model3``) still
validate.
"""
from __future__ import annotations

from qgis.core import (QgsProcessingParameterBoolean, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterString)

from .core_bridge import optional_args

INPUT_SCALE = "INPUT_SCALE"
BAND_ORDER = "BAND_ORDER"
LOOK_DIRECTION = "LOOK_DIRECTION"
ZEROS_NODATA = "ZEROS_NODATA"
RESAMPLING = "RESAMPLING"

SCALE_CHOICES = ("Auto (from the data type, tags and a sample of the values; logged)", "SN6 SAR-Intensity",
                 "dB (10·log10 intensity, e.g. calibrated sigma0 in dB)", "Linear intensity",
                 "Amplitude (sqrt of intensity)", "Complex (single-look complex, intensity |z|²)")
SCALE_CLI = ("auto", "sn6", "db", "linear", "amplitude", "complex")
LOOK_CHOICES = ("Auto (LOOK_DIRECTION tag, else the product's pass and look side, else the model's)", "North",
                "South", "East", "West")
LOOK_CLI = ("auto", "north", "south", "east", "west")
RESAMPLING_CHOICES = ("Auto (average when coarsening, bilinear when refining)", "Average", "Bilinear", "Cubic",
                      "Nearest")
RESAMPLING_CLI = ("auto", "average", "bilinear", "cubic", "nearest")

HELP_INPUT_SCALE = "<b>Input scale</b>: what the values are: SN6 SAR-Intensity, dB, linear intensity, amplitude or complex (single-look complex). Auto decides from the data type, a SAR_SCALE tag or dB band units, and the values of a sample of windows, and says why in the log; ambiguous rasters are refused. Values are converted window by window to the model's scale. Default: Auto."  # noqa: E501
HELP_BAND_ORDER = "<b>Band order</b>: the raster band for each of the model's bands, e.g. 4,3,2,1. Empty: by band descriptions naming HH/HV/VH/VV, else the raster's order (logged). A raster missing a polarisation is refused, naming it."  # noqa: E501
HELP_LOOK_DIRECTION = "<b>Look direction</b>: the ground direction the sensor looked; the scene is turned by quarter turns to the model's. Auto: the raster's LOOK_DIRECTION tag, else the product's orbit pass and look side where its metadata gives both (tags ORBIT_DIRECTION and LOOK_SIDE, or a JSON image description with Capella's collect.radar.pointing or STAC's sat:orbit_state and sar:observation_direction; ascending and right-looking is east for a near-polar orbit), else the model's own (logged). Default: Auto."  # noqa: E501
HELP_ZEROS_NODATA = "<b>Pixels 0 in every band are nodata</b>: on by default (the fill value of SN6 and most products); off reads them as values."  # noqa: E501
HELP_RESAMPLING = "Rasters whose pixels are not the model's size (beyond 2 %) or not north-up are resampled on the fly to the model's grid (<b>Resampling</b>: auto = average when coarsening, bilinear when refining, nearest when only re-oriented); pixels more than 2× coarser than the model's (1 m for 0.5 m models) or finer than a quarter are refused."  # noqa: E501


def input_parameters(tr, look_direction: bool = True) -> tuple[list, list]:
    """(main, advanced) parameter definitions; ``tr``: the algorithm's translation function."""
    main = [
        QgsProcessingParameterEnum(INPUT_SCALE, tr("Input scale"), options=list(SCALE_CHOICES), defaultValue=0,
                                   optional=True),
        QgsProcessingParameterString(BAND_ORDER, tr("Band order (e.g. 4,3,2,1; empty: by band descriptions)"),
                                     optional=True),
    ]
    if look_direction:
        main.append(QgsProcessingParameterEnum(LOOK_DIRECTION, tr("Look direction"), options=list(LOOK_CHOICES),
                                               defaultValue=0, optional=True))
    advanced = [
        QgsProcessingParameterBoolean(ZEROS_NODATA, tr("Pixels 0 in every band are nodata"), defaultValue=True,
                                      optional=True),
        QgsProcessingParameterEnum(RESAMPLING, tr("Resampling (other pixel sizes, not north-up)"),
                                   options=list(RESAMPLING_CHOICES), defaultValue=0, optional=True),
    ]
    for parameter in advanced:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return main, advanced


def input_arguments(algorithm, parameters, context, look_direction: bool = True) -> list[str]:
    """The parameters as the core's options (``--input-scale`` ...; see ``cli/input_arguments.py``)."""
    band_order = (algorithm.parameterAsString(parameters, BAND_ORDER, context) or "").strip() or None
    arguments = [("--input-scale", SCALE_CLI[algorithm.parameterAsEnum(parameters, INPUT_SCALE, context)]),
                 ("--band-order", band_order)]
    if look_direction:
        arguments.append(("--look-direction", LOOK_CLI[algorithm.parameterAsEnum(parameters, LOOK_DIRECTION,
                                                                                  context)]))
    arguments.append(("--resampling", RESAMPLING_CLI[algorithm.parameterAsEnum(parameters, RESAMPLING, context)]))
    keep_zeros = not algorithm.parameterAsBoolean(parameters, ZEROS_NODATA, context)
    return optional_args(arguments) + (["--keep-zeros"] if keep_zeros else [])
