"""The input options ``extract`` and ``train`` share: scale, bands, look direction, nodata, resampling."""
from __future__ import annotations

SCALE_CHOICES = ("auto", "sn6", "db", "linear", "amplitude", "complex")
LOOK_CHOICES = ("auto", "north", "south", "east", "west")
RESAMPLING_CHOICES = ("auto", "average", "bilinear", "cubic", "nearest")


def add_input_arguments(parser, look_direction: bool = True) -> None:
    """The shared options; ``look_direction`` False leaves out --look-direction (``train`` has
    its own: the model's look, and --raster-look for the rasters')."""
    parser.add_argument("--input-scale", choices=SCALE_CHOICES, default="auto",
                        help="what the raster's values are: sn6 (SpaceNet 6 SAR-Intensity), db (10·log10 intensity, "
                             "e.g. calibrated sigma0 in dB), linear intensity, amplitude, complex (single-look "
                             "complex, intensity |z|²); default auto: decided from the data type, tags and a sample "
                             "of windows, and logged")
    parser.add_argument("--band-order", metavar="B,B,...",
                        help="raster band for each of the model's bands, in the model's order, e.g. 4,3,2,1 "
                             "(default: by the band descriptions HH/HV/VH/VV, else the raster's order)")
    if look_direction:
        parser.add_argument("--look-direction", choices=LOOK_CHOICES, default="auto",
                            help="the ground direction the sensor looked (default auto: the raster's LOOK_DIRECTION "
                                 "tag, else the product's orbit pass and look side where its metadata gives both, "
                                 "else the model's); the scene is turned by quarter turns to the model's")
    parser.add_argument("--keep-zeros", action="store_true",
                        help="read pixels that are 0 in every band as values (default: they are nodata, as SN6's "
                             "and most products' fill value)")
    parser.add_argument("--resampling", choices=RESAMPLING_CHOICES, default="auto",
                        help="when the raster's pixels are not the model's size or not north-up (default auto: "
                             "average when coarsening, bilinear when refining, nearest when only re-orienting)")


def input_options(args, look_direction: bool = True):
    """The parsed options as :class:`~sn6_footprints.core.reading.InputOptions` (bad band orders
    refused); ``look_direction`` False: the look stays auto (``train``'s --look-direction is the model's)."""
    from ..core.reading import InputOptions
    from ..core.reading.bands import parse_band_order

    return InputOptions(input_scale=args.input_scale, band_order=parse_band_order(args.band_order),
                        look_direction=args.look_direction if look_direction else "auto",
                        zero_is_nodata=not args.keep_zeros, resampling=args.resampling)
