"""``simulate``: write a simulated SN6-like SAR scene and its building footprints."""
from __future__ import annotations

from pathlib import Path

from . import finish


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="write a simulated SAR scene (4-band GeoTIFF) and its building footprints",
        description="Simulate a side-looking quad-pol SAR scene (HH, HV, VH, VV) with layover, shadow, "
                    "double bounce and speckle, and write the true building footprints beside it. "
                    "Deterministic from --seed; any size (written block by block). Every input path of a "
                    "real product can be written: any --scale, --pixel-size, --look and --storage; the "
                    "footprints come from the world, the same for all of them (with --nodata-strip they "
                    "are clipped to the swath, whose far-range edge follows --look).")
    p.add_argument("raster", help="output GeoTIFF (.tif)")
    p.add_argument("labels", help="output footprints (.gpkg or .geojson)")
    p.add_argument("--size", type=int, default=1024, help="width and height in px (default 1024)")
    p.add_argument("--width", type=int, help="width in px (overrides --size)")
    p.add_argument("--height", type=int, help="height in px (overrides --size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixel-size", type=float, default=0.5,
                   help="ground pixel size in m, 0.1-5 (default 0.5); the same --origin and size in metres "
                        "(width = extent / pixel size) give the same ground and the same footprints")
    p.add_argument("--look", choices=("north", "south", "east", "west"), default="north",
                   help="look direction (tagged LOOK_DIRECTION): north = sensor south of the scene, near range "
                        "at the bottom (default); south is the 180-degree case (SN6 orientation flag 1); "
                        "east = sensor west of the scene, near range on the left; west = near range on the right")
    p.add_argument("--incidence", type=float, default=35.0, help="incidence angle in degrees (default 35)")
    p.add_argument("--looks", type=int, default=4, help="number of looks of the speckle (default 4)")
    p.add_argument("--density", type=float, default=1.0, help="building density, 0-3 (default 1)")
    p.add_argument("--scale", choices=("sn6", "db", "linear", "amplitude", "complex"), default="sn6",
                   help="values written (tagged SAR_SCALE): sn6 = SN6 SAR-Intensity, nodata 0 (default); "
                        "db = decibels, nodata NaN, band unit dB; linear = intensity (1 = 0 dB), nodata 0; "
                        "amplitude = square root of intensity, nodata 0; complex = complex64 "
                        "sqrt(intensity) * exp(i phase) with a random phase, nodata 0")
    p.add_argument("--storage", choices=("north-up", "south-up"), default="north-up",
                   help="row order of the file: north-up = first row north, negative pixel height (default); "
                        "south-up = the same scene with rows reversed and a positive pixel height (same "
                        "ground, same footprints)")
    p.add_argument("--layout", choices=("mixed", "dense"), default="mixed")
    p.add_argument("--nodata-strip", action="store_true", help="cut the scene at a swath edge (nodata beyond)")
    p.add_argument("--origin", type=float, nargs=2, metavar=("X", "Y"),
                   help="upper-left corner in the CRS (default 594000 5750000, Rotterdam)")
    p.add_argument("--crs", default="EPSG:32631")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core.simulation import DEFAULT_ORIGIN, simulate_scene

    from ..core.validation import validate_simulation

    raster, labels = Path(args.raster), Path(args.labels)
    validate_simulation(raster, labels, width_px=args.width or args.size, height_px=args.height or args.size,
                        pixel_size_m=args.pixel_size, incidence_deg=args.incidence, looks=args.looks,
                        density=args.density)
    info = simulate_scene(
        raster, labels, width_px=args.width or args.size, height_px=args.height or args.size, seed=args.seed,
        pixel_size_m=args.pixel_size, look_direction=args.look, incidence_deg=args.incidence, looks=args.looks,
        building_density=args.density, scale=args.scale, nodata_strip=args.nodata_strip,
        origin=tuple(args.origin) if args.origin else DEFAULT_ORIGIN, crs=args.crs, layout=args.layout,
        storage=args.storage, feedback=args.feedback)
    summary = {"raster": str(info.raster_path), "labels": str(info.labels_path), "width": info.width,
               "height": info.height, "buildings": info.building_count, "transform": list(info.transform)[:6],
               "crs": info.crs, "seconds": round(info.seconds, 2), "parameters": info.parameters}
    if args.json or args.events:
        return finish(args, summary)
    return 0
