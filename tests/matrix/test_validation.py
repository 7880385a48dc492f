"""Bad-input matrix, validation (issue 11 items 5, 6, 8, 10): every refusal comes from the one
validation step before any heavy work, through the real CLI in a subprocess and through
``processing.run`` (the worker), as one line that names the problem and the fix; nothing is
written and no input changes. Issue 12's input plan is covered too: band orders, polarisations
named by the band descriptions, Auto input scale, pixel sizes and look directions, each on a tiny
raster that holds the problem, with the setting the message names shown to work.

The CLI table runs through the CLI's ``main`` in one child process (tests/matrix/conftest.py,
``run_cli_batch``: each case with its own stdout and stderr); the entry point itself, ``python
-m sn6_footprints``, is run as a process of its own by the positive controls, the events and
ANSI cases and the unexpected-error cases below.

"Before the model loads" is observed through the log: the extraction logs its ``Model: UNet11
...`` line right after loading the model and before the first tile, so a refusal that came
later would show it (the positive controls below prove that the line is there on a valid run).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.models import TRANSFORM, boxes_scene, save_threshold_model, write_raster
from tests.helpers.plugins import install_plugin, qgis_process
from tests.matrix.conftest import BOXES, FAST, FAST_PARAMS, REPO_ROOT, SCENE_SIZE, assert_untouched, take_snapshot

MODEL_LINE = "Model: UNet11"
UNSAFE_ADVICE = "weights_only"


# ---------------------------------------------------------------- bad inputs, made on demand

def _boxes(bands: int = 4):
    return boxes_scene(SCENE_SIZE, SCENE_SIZE, BOXES, bands=bands)


def _values(kind: str):
    """(4, SCENE_SIZE, SCENE_SIZE) float32 values that Auto input scale reads, or refuses, as ``kind``
    (the rules of sn6_footprints/core/radiometry/detect.py; seeded, so the same every run)."""
    rng = np.random.default_rng(12)
    shape = (4, SCENE_SIZE, SCENE_SIZE)
    if kind == "db":                      # all negative, median -15 dB
        return rng.normal(-15.0, 3.0, shape)
    if kind == "linear_or_amplitude":     # log spread 4.5 dB, between amplitude's 4 and linear's 5; median
        return 10 ** rng.normal(-0.3, 0.45, shape)  # -3 dB as intensity and -6 as amplitude: neither is land's
    if kind == "partly_negative":         # 20 % negative: neither dB nor an intensity
        return rng.normal(1.0, 1.2, shape)
    if kind == "iq":                      # symmetric about 0: the I or Q part of complex data
        return rng.normal(0.0, 1.0, shape)
    if kind == "digital_numbers":         # whole numbers above 255
        return rng.integers(300, 4000, shape).astype(float)
    if kind == "constant":
        return np.full(shape, 0.25)
    if kind == "mostly_nodata":           # 0 (nodata) but for a 20 x 20 px patch: 400 valid pixels
        data = np.zeros(shape)
        data[:, :20, :20] = rng.gamma(4.0, 0.25, (4, 20, 20))
        return data
    raise AssertionError(f"no values for {kind}")


def _scaled_transform(pixel_m: float):
    from affine import Affine

    return Affine(pixel_m, 0, TRANSFORM.c, 0, -pixel_m, TRANSFORM.f)


# name -> () -> (data, write_raster keywords, band descriptions, band units): real SAR inputs that
# the input plan (sn6_footprints/core/reading, radiometry/detect.py) refuses, SCENE_SIZE a side.
UNTAGGED = {"scale": None}
RASTER_RECIPES = {
    "dual_pol_hh_vv.tif": lambda: (_boxes(2), {}, ("HH", "VV"), None),
    "two_hh_bands.tif": lambda: (_boxes(), {}, ("HH", "Sigma0_HH_db", "VH", "VV"), None),
    "untagged_boxes.tif": lambda: (_boxes(), UNTAGGED, None, None),
    "linear_or_amplitude.tif": lambda: (_values("linear_or_amplitude"), UNTAGGED, None, None),
    "partly_negative.tif": lambda: (_values("partly_negative"), UNTAGGED, None, None),
    "iq_part.tif": lambda: (_values("iq"), UNTAGGED, None, None),
    "digital_numbers.tif": lambda: (_values("digital_numbers"), UNTAGGED, None, None),
    "constant.tif": lambda: (_values("constant"), UNTAGGED, None, None),
    "mostly_nodata.tif": lambda: (_values("mostly_nodata"), UNTAGGED, None, None),
    "db_untagged.tif": lambda: (_values("db"), UNTAGGED, None, None),
    "db_tagged_sn6.tif": lambda: (_values("db"), {"scale": "sn6"}, None, None),
    "scale_tag_unknown.tif": lambda: (_boxes(), {"scale": "sigma0"}, None, None),
    "units_disagree.tif": lambda: (_values("db"), UNTAGGED, None, ("dB", "dB", "linear", "dB")),
    "tag_against_units.tif": lambda: (_boxes(), {"scale": "sn6"}, None, ("dB",) * 4),
    "pixels_2m.tif": lambda: (_boxes(), {"transform": _scaled_transform(2.0)}, None, None),
    "pixels_0.1m.tif": lambda: (_boxes(), {"transform": _scaled_transform(0.1)}, None, None),
    "look_tag_up.tif": lambda: (_boxes(), {"LOOK_DIRECTION": "up"}, None, None),
}


def make(name: str, folder: Path, scene: Path) -> Path:
    """One bad input by name, written into ``folder``."""
    path = folder / name
    if name == "truncated.tif":
        data = scene.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif name == "text.tif":
        path.write_text("this is not a raster\n")
    elif name == "two_bands.tif":
        write_raster(path, boxes_scene(SCENE_SIZE, SCENE_SIZE, BOXES, bands=2))
    elif name == "no_crs.tif":
        write_raster(path, boxes_scene(SCENE_SIZE, SCENE_SIZE, BOXES), crs=None)
    elif name in RASTER_RECIPES:
        data, kwargs, descriptions, units = RASTER_RECIPES[name]()
        write_raster(path, data, **kwargs)
        if descriptions or units:
            import rasterio

            with rasterio.open(path, "r+") as dst:
                for band, text in enumerate(descriptions or (), start=1):
                    dst.set_band_description(band, text)
                for band, unit in enumerate(units or (), start=1):
                    dst.set_band_unit(band, unit)
    elif name == "random.pt":
        path.write_bytes(bytes(range(256)) * 20)  # starts with 0x00: neither zip nor pickle
    elif name == "random_pickle.pt":
        path.write_bytes(b"\x80\x02" + bytes((i * 37) % 251 for i in range(4000)))
    elif name == "truncated.pt":
        whole = save_threshold_model(folder / "whole.pt")
        data = whole.read_bytes()
        whole.unlink()
        path.write_bytes(data[: len(data) // 2])
    elif name == "zero_std.pt":
        save_threshold_model(path, std=(0.0,) * 4)
    elif name == "nan_mean.pt":
        save_threshold_model(path, mean=(math.nan,) * 4)
    elif name == "threshold_1.5.pt":
        save_threshold_model(path, threshold=1.5)
    elif name == "pixel_0.pt":
        save_threshold_model(path, pixel_size_m=0.0)
    elif name == "a_folder":
        path.mkdir()
    elif name == "link_to_truth.gpkg":
        path.symlink_to(folder / "truth.gpkg")
    elif name == "hardlink_to_truth.gpkg":
        os.link(folder / "truth.gpkg", path)
    else:
        raise AssertionError(f"no recipe for {name}")
    return path


def read_only_folder(tmp_path: Path) -> Path:
    """A folder that refuses new files, also to root (a read-only sysfs; else chmod 555)."""
    if os.geteuid() == 0:
        folder = Path("/sys")
    else:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        (folder / ".probe").touch()
    except OSError:
        return folder
    (folder / ".probe").unlink()
    pytest.skip(f"{folder} is writable here")


# ---------------------------------------------------------------- CLI cases

# (id, argv template, the message fragment: one string, or a tuple of strings each of which the
# line holds, e.g. the problem and the parameter to set). In templates: {scene} {truth} {model} {out} {dir}
# name files of the test folder, {make:NAME} a bad input made by make(), {ro} a read-only folder.
EXTRACT = ["extract", "{scene}", "{out}", "--model", "{model}", *FAST]
TRAIN = ["train", "--raster", "{scene}", "--labels", "{truth}", "--output", "{dir}/m.pt", "--init", "{model}"]
CLI_CASES = [
    ("threshold-negative", EXTRACT + ["--threshold", "-1"],
     "Probability threshold -1.0 must be a finite number above 0 and below 1"),
    ("threshold-2", EXTRACT + ["--threshold", "2"], "Probability threshold 2.0 must be"),
    ("threshold-nan", EXTRACT + ["--threshold", "nan"], "Probability threshold nan must be"),
    ("threshold-inf", EXTRACT + ["--threshold", "inf"], "Probability threshold inf must be"),
    ("threshold-0", EXTRACT + ["--threshold", "0"], "Probability threshold 0.0 must be"),
    ("simplify-negative", EXTRACT + ["--simplify", "-0.5"],
     "Simplification tolerance -0.5 must be a finite number at least 0"),
    ("simplify-nan", EXTRACT + ["--simplify", "nan"], "Simplification tolerance nan"),
    ("min-area-negative", EXTRACT + ["--min-area", "-5"],
     "Minimum building area -5.0 must be a finite number at least 0"),
    ("min-area-inf", EXTRACT + ["--min-area", "inf"], "Minimum building area inf"),
    ("tile-500", EXTRACT + ["--tile-size", "500"],
     "Tile size 500 px must be a multiple of 32 and at least 64, or 0 (Auto, the default); use 512"),
    ("tile-32", EXTRACT + ["--tile-size", "32"], "at least 64, or 0 (Auto, the default); use 64"),
    ("overlap-negative", EXTRACT + ["--overlap", "-1"], "Tile overlap -1 px must be 0 or more"),
    ("batch-0", EXTRACT + ["--batch-size", "0"], "Batch size 0 must be at least 1"),
    ("raster-missing", ["extract", "{dir}/nope.tif", "{out}", "--model", "{model}"], "The input raster was not found"),
    ("raster-folder", ["extract", "{make:a_folder}", "{out}", "--model", "{model}"], "is a folder, not a file"),
    ("raster-truncated", ["extract", "{make:truncated.tif}", "{out}", "--model", "{model}"],
     "truncated.tif is not a readable raster"),
    ("raster-not-a-raster", ["extract", "{make:text.tif}", "{out}", "--model", "{model}"],
     "text.tif is not a readable raster"),
    ("raster-two-bands", ["extract", "{make:two_bands.tif}", "{out}", "--model", "{model}"],
     "has 2 band(s) but the model expects 4"),
    ("raster-no-crs", ["extract", "{make:no_crs.tif}", "{out}", "--model", "{model}"],
     "no coordinate reference system"),
    ("band-order-count", EXTRACT + ["--band-order", "1,2"],
     ("Band order 1,2 names 2 band(s); the model takes 4 (HH, HV, VH, VV): give one raster band for each",)),
    ("band-order-no-such-band", EXTRACT + ["--band-order", "1,2,3,9"],
     ("Band order 1,2,3,9 names band 9, but scene.tif has bands 1 to 4",)),
    ("band-order-band-0", EXTRACT + ["--band-order", "0,1,2,3"], ("Band order 0,1,2,3 names band 0, but",)),
    ("band-order-repeated", EXTRACT + ["--band-order", "1,1,2,3"],
     ("Band order 1,1,2,3 uses band 1 more than once; give each model band its own raster band",)),
    ("band-order-not-numbers", EXTRACT + ["--band-order", "a,b,c,d"],
     ("Band order 'a,b,c,d' is not a list of band numbers; write it like 4,3,2,1",)),
    ("raster-dual-pol", ["extract", "{make:dual_pol_hh_vv.tif}", "{out}", "--model", "{model}", *FAST],
     ("has the polarisation(s) HH, VV but the model needs HH, HV, VH, VV: HV, VH missing",
      "train a model on HH, VV", "set Band order (--band-order)")),
    ("raster-polarisation-twice", ["extract", "{make:two_hh_bands.tif}", "{out}", "--model", "{model}", *FAST],
     ("two_hh_bands.tif has more than one HH band (bands 1, 2); set Band order (--band-order)",)),
    ("scale-linear-or-amplitude", ["extract", "{make:linear_or_amplitude.tif}", "{out}", "--model", "{model}", *FAST],
     ("The values could be linear intensity or amplitude (", "log spread 4.52 dB",
      "set Input scale (--input-scale) to linear or amplitude")),
    ("scale-uncalibrated", ["extract", "{make:untagged_boxes.tif}", "{out}", "--model", "{model}", *FAST],
     ("Read as amplitude (sqrt of intensity) the median intensity is 35.6 dB", "uncalibrated?",
      "set Input scale (--input-scale) to amplitude to read the values as they are")),
    ("scale-partly-negative", ["extract", "{make:partly_negative.tif}", "{out}", "--model", "{model}", *FAST],
     ("Some values are negative (20.2 % negative", "neither dB (mostly negative) nor an intensity",
      "set Input scale (--input-scale)")),
    ("scale-i-or-q", ["extract", "{make:iq_part.tif}", "{out}", "--model", "{model}", *FAST],
     ("The values are symmetric about 0", "like the I or Q part of complex data", "set Input scale (--input-scale)")),
    ("scale-digital-numbers", ["extract", "{make:digital_numbers.tif}", "{out}", "--model", "{model}", *FAST],
     ("Integer values (", "uncalibrated digital numbers?", "set Input scale (--input-scale)")),
    ("scale-constant", ["extract", "{make:constant.tif}", "{out}", "--model", "{model}", *FAST],
     ("The values are constant (", "not SAR; set Input scale (--input-scale)")),
    ("scale-mostly-nodata", ["extract", "{make:mostly_nodata.tif}", "{out}", "--model", "{model}", *FAST],
     ("Only 400 valid of 16,384 sampled pixels: too few to tell the input scale", "set Input scale (--input-scale)",
      "turn off 'Pixels 0 in every band are nodata' (--keep-zeros)")),
    ("scale-tag-against-values", ["extract", "{make:db_tagged_sn6.tif}", "{out}", "--model", "{model}", *FAST],
     ("The raster's metadata (the SAR_SCALE tag says sn6) says SN6 SAR-Intensity but 100 % of the",
      "are negative, which that scale never is (dB?)", "set Input scale (--input-scale) to the values' scale",
      "or correct the raster's metadata")),
    ("scale-tag-unknown", ["extract", "{make:scale_tag_unknown.tif}", "{out}", "--model", "{model}", *FAST],
     ("The raster's SAR_SCALE tag says 'sigma0', no known scale; set Input scale (--input-scale)",)),
    ("scale-units-disagree", ["extract", "{make:units_disagree.tif}", "{out}", "--model", "{model}", *FAST],
     ("The bands' units disagree (db, linear); set Input scale (--input-scale)",)),
    ("scale-tag-against-units", ["extract", "{make:tag_against_units.tif}", "{out}", "--model", "{model}", *FAST],
     ("The raster's SAR_SCALE tag says 'sn6' but its band units say db; set Input scale (--input-scale)",)),
    ("input-scale-sn6-on-db", ["extract", "{make:db_untagged.tif}", "{out}", "--model", "{model}", *FAST,
                               "--input-scale", "sn6"],
     ("Input scale is SN6 SAR-Intensity but 100 % of the", "set Input scale (--input-scale) to auto or")),
    ("input-scale-complex-on-real", EXTRACT + ["--input-scale", "complex"],
     ("Input scale is complex (intensity = |z|²) but the bands hold real values",
      "set Input scale (--input-scale) to auto or")),
    ("pixels-too-coarse", ["extract", "{make:pixels_2m.tif}", "{out}", "--model", "{model}", *FAST],
     ("pixels_2m.tif has 2 m pixels, 4× the model's 0.5 m: beyond 2× (1 m)",
      "train a model at this pixel size ('Train footprint model', Model pixel size)")),
    ("pixels-too-fine", ["extract", "{make:pixels_0.1m.tif}", "{out}", "--model", "{model}", *FAST],
     ("pixels_0.1m.tif has 0.1 m pixels, 1/5 of the model's 0.5 m: finer than 1/4 is not resampled",
      "resample it first (Raster ▸ Projections ▸ Warp, to 0.5 m, or 0.125 m at the finest)")),
    ("look-tag-not-a-direction", ["extract", "{make:look_tag_up.tif}", "{out}", "--model", "{model}", *FAST],
     ("The raster's LOOK_DIRECTION tag says 'up', not a direction; set Look direction (--look-direction) to north, "
      "south, east or west",)),
    ("model-missing", ["extract", "{scene}", "{out}", "--model", "{dir}/nope.pt"], "Model file not found"),
    ("model-folder", ["extract", "{scene}", "{out}", "--model", "{make:a_folder}"], "is a folder, not a checkpoint"),
    ("model-random-bytes", ["extract", "{scene}", "{out}", "--model", "{make:random.pt}"],
     "random.pt could not be read as a PyTorch checkpoint"),
    ("model-random-pickle", ["extract", "{scene}", "{out}", "--model", "{make:random_pickle.pt}"],
     "random_pickle.pt could not be read as a PyTorch checkpoint: its pickle stream is damaged"),
    ("model-truncated", ["extract", "{scene}", "{out}", "--model", "{make:truncated.pt}"], "Is the file complete?"),
    ("model-zero-std", ["extract", "{scene}", "{out}", "--model", "{make:zero_std.pt}"],
     "the normalisation std of band HH is 0.0; it must be above 0"),
    ("model-nan-mean", ["extract", "{scene}", "{out}", "--model", "{make:nan_mean.pt}"],
     "the normalisation mean of band HH is nan"),
    ("model-threshold-1.5", ["extract", "{scene}", "{out}", "--model", "{make:threshold_1.5.pt}"],
     "threshold 1.5 must be above 0 and below 1"),
    ("model-pixel-size-0", ["extract", "{scene}", "{out}", "--model", "{make:pixel_0.pt}"],
     "pixel size 0.0 m must be above 0"),
    ("output-folder-missing", ["extract", "{scene}", "{dir}/missing/out.gpkg", "--model", "{model}"],
     "missing, does not exist; create it"),
    ("output-folder-read-only", ["extract", "{scene}", "{ro}/out.gpkg", "--model", "{model}"], "is not writable"),
    ("output-extension", ["extract", "{scene}", "{dir}/out.txt", "--model", "{model}"],
     "has the extension .txt, which is not known; use one of .gpkg, .geojson, .json, .shp, .fgb"),
    ("output-is-a-folder", ["extract", "{scene}", "{make:a_folder}", "--model", "{model}"], "is a folder; name a file"),
    ("output-is-truth", ["extract", "{scene}", "{truth}", "--model", "{model}", "--truth", "{truth}"],
     "would overwrite the ground-truth file"),
    ("output-links-to-truth", ["extract", "{scene}", "{make:link_to_truth.gpkg}", "--model", "{model}",
                               "--truth", "{truth}"], "would overwrite the ground-truth file"),
    ("output-hardlink-of-truth", ["extract", "{scene}", "{make:hardlink_to_truth.gpkg}", "--model", "{model}",
                                  "--truth", "{truth}"], "would overwrite the ground-truth file"),
    ("output-is-raster-sidecar", ["extract", "{scene}", "{scene}.aux.xml", "--model", "{model}"],
     "would overwrite scene.tif.aux.xml, a file of the input raster"),
    ("output-is-model", ["extract", "{scene}", "{model}", "--model", "{model}"], "would overwrite the model file"),
    ("truth-missing", ["extract", "{scene}", "{out}", "--model", "{model}", "--truth", "{dir}/nope.gpkg"],
     "The ground-truth file was not found"),
    ("truth-folder", ["extract", "{scene}", "{out}", "--model", "{model}", "--truth", "{make:a_folder}"],
     "The ground-truth file"),
    ("score-iou-1", ["score", "{truth}", "{truth}", "--iou", "1"],
     "IoU threshold 1.0 must be a finite number at least 0 and below 1"),
    ("score-iou-nan", ["score", "{truth}", "{truth}", "--iou", "nan"], "IoU threshold nan"),
    ("score-min-area-negative", ["score", "{truth}", "{truth}", "--min-area", "-1"], "Minimum area -1.0"),
    ("score-proposals-missing", ["score", "{truth}", "{dir}/nope.gpkg"], "The proposals file was not found"),
    ("score-html-is-truth", ["score", "{truth}", "{truth}", "--html", "{truth}"],
     "would overwrite the ground-truth file"),
    ("score-outputs-shared", ["score", "{truth}", "{truth}", "--scored-proposals", "{dir}/s.gpkg", "--missed",
                              "{dir}/s.gpkg"], "share the file s.gpkg"),
    ("train-output-is-raster", ["train", "--raster", "{scene}", "--labels", "{truth}", "--output", "{scene}"],
     "would overwrite the training raster 1"),
    ("train-output-extension", ["train", "--raster", "{scene}", "--labels", "{truth}", "--output", "{dir}/m.gpkg"],
     "use one of .pt, .pth, .model"),
    ("train-raster-truncated", ["train", "--raster", "{make:truncated.tif}", "--labels", "{truth}", "--output",
                                "{dir}/m.pt"], "truncated.tif is not a readable raster"),
    ("train-init-random", ["train", "--raster", "{scene}", "--labels", "{truth}", "--output", "{dir}/m.pt",
                           "--init", "{make:random.pt}"], "could not be read as a PyTorch checkpoint"),
    ("train-band-order-count", TRAIN + ["--band-order", "1,2"],
     ("Band order 1,2 names 2 band(s); the model takes 4 (HH, HV, VH, VV)",)),
    ("train-band-order-not-numbers", TRAIN + ["--band-order", "x"], ("Band order 'x' is not a list of band numbers",)),
    ("train-raster-dual-pol", ["train", "--raster", "{make:dual_pol_hh_vv.tif}", "--labels", "{truth}", "--output",
                               "{dir}/m.pt", "--init", "{model}"],
     ("dual_pol_hh_vv.tif has the polarisation(s) HH, VV but the model needs HH, HV, VH, VV: HV, VH missing",
      "set Band order (--band-order)")),
    ("train-second-raster-dual-pol", ["train", "--raster", "{scene}", "--labels", "{truth}", "--raster",
                                      "{make:dual_pol_hh_vv.tif}", "--labels", "{truth}", "--output", "{dir}/m.pt"],
     ("dual_pol_hh_vv.tif has the polarisation(s) HH, VV but the model needs HH, HV, VH, VV",)),
    ("train-scale-linear-or-amplitude", ["train", "--raster", "{make:linear_or_amplitude.tif}", "--labels", "{truth}",
                                         "--output", "{dir}/m.pt"],
     ("The values could be linear intensity or amplitude", "set Input scale (--input-scale) to linear or amplitude")),
    ("simulate-pixel-size-0", ["simulate", "{dir}/s.tif", "{dir}/s.gpkg", "--pixel-size", "0"], "Pixel size 0.0"),
    ("simulate-labels-is-raster", ["simulate", "{dir}/s.tif", "{dir}/s.tif"], "would overwrite the raster"),
    ("simulate-incidence-90", ["simulate", "{dir}/s.tif", "{dir}/s.gpkg", "--incidence", "90"], "Incidence angle 90.0"),
]


def _parts(fragment: str | tuple[str, ...]) -> tuple[str, ...]:
    return (fragment,) if isinstance(fragment, str) else fragment


def _fill(template: list[str], tmp_path: Path, scene: Path, truth: Path, model: Path) -> list[str]:
    argv = []
    for item in template:
        if item.startswith("{make:"):
            name = item[len("{make:"):-1]
            target = tmp_path / name
            argv.append(str(target if target.exists() else make(name, tmp_path, scene)))
            continue
        if "{ro}" in item:
            item = item.replace("{ro}", str(read_only_folder(tmp_path)))
        argv.append(item.format(scene=scene, truth=truth, model=model, out=tmp_path / "out.gpkg", dir=tmp_path))
    return argv


def _outputs(argv: list[str]) -> list[Path]:
    """The paths a command would write (positional outputs and output options)."""
    command = argv[0]
    flags = {"--scored-proposals", "--missed", "--html", "--output"}
    named = [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in flags]
    if command == "extract":
        named.append(Path(argv[2]))
    elif command == "simulate":
        named += [Path(argv[1]), Path(argv[2])]
    return named


def _files_under(folder: Path) -> list[Path]:
    return [folder, *sorted(p for p in folder.rglob("*") if not p.is_symlink())]


@pytest.fixture(scope="module")
def cli_refusals(tmp_path_factory, model):
    """Every CLI case in a folder of its own (scene.tif, truth.gpkg, the bad inputs it names),
    run through the CLI's ``main`` in one child process: ``{id: (argv, outputs, snapshot, result)}``
    or ``{id: skip reason}``. The snapshot is taken before the child starts."""
    from sn6_footprints.core.vector_io import write_footprints
    from tests.matrix.conftest import box_polygons, run_cli_batch

    prepared, skipped = {}, {}
    for case_id, template, _fragment in CLI_CASES:
        folder = tmp_path_factory.mktemp(f"cli-{case_id}")
        scene = write_raster(folder / "scene.tif", boxes_scene(SCENE_SIZE, SCENE_SIZE, BOXES))
        truth = write_footprints(folder / "truth.gpkg", box_polygons(), {"id": list(range(1, len(BOXES) + 1))},
                                 "EPSG:32631", layer_name="truth")
        try:
            argv = _fill(template, folder, scene, Path(truth), model)
        except pytest.skip.Exception as exc:
            skipped[case_id] = str(exc)
            continue
        outputs = [p for p in _outputs(argv) if not p.exists()]  # new files the run must not make
        prepared[case_id] = (argv, outputs, take_snapshot(_files_under(folder) + [model]))
    results = run_cli_batch({case_id: argv for case_id, (argv, *_rest) in prepared.items()},
                            tmp_path_factory.mktemp("cli-batch"))
    return {**skipped, **{case_id: (*entry, results[case_id]) for case_id, entry in prepared.items()}}


@pytest.mark.parametrize("case_id, fragment", [(c[0], c[2]) for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_before_any_work(cli_refusals, case_id, fragment):
    if isinstance(cli_refusals[case_id], str):
        pytest.skip(cli_refusals[case_id])
    argv, outputs, before, (code, stdout, stderr) = cli_refusals[case_id]
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert lines and lines[-1].startswith("error: "), stderr
    assert all(part in lines[-1] for part in _parts(fragment)), lines[-1]
    assert [line for line in lines if line.startswith("error")] == [lines[-1]]   # one line
    assert "Traceback" not in stderr and UNSAFE_ADVICE not in stderr
    assert MODEL_LINE not in stderr                                              # before the model loaded
    assert not [p for p in outputs if p.exists() or p.is_symlink()], "an output was written"
    assert_untouched(before)                                                     # the folder listing too


def test_cli_cases_are_at_least_25_and_named_once():
    ids = [c[0] for c in CLI_CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)


def test_every_raster_recipe_is_a_case():
    used = " ".join(str(case) for case in CLI_CASES + ALG_CASES + QGIS_PROCESS_CASES)
    assert [name for name in RASTER_RECIPES if f"{{make:{name}}}" not in used] == []


# (raster recipe, the setting a refusal names): with it, the same raster is read.
FIXES_THAT_WORK = [
    ("linear_or_amplitude.tif", ["--input-scale", "linear"]),
    ("untagged_boxes.tif", ["--input-scale", "amplitude"]),
    ("db_tagged_sn6.tif", ["--input-scale", "db"]),
    ("two_hh_bands.tif", ["--band-order", "1,2,3,4"]),
    ("look_tag_up.tif", ["--look-direction", "north"]),
]


@pytest.mark.parametrize("name, setting", FIXES_THAT_WORK, ids=[f[0] for f in FIXES_THAT_WORK])
def test_cli_the_named_setting_reads_the_refused_raster(cli, tmp_path, scene, model, name, setting):
    """The parameter a refusal names is the way through: set, the run goes on to the model."""
    code, _, stderr = cli("extract", make(name, tmp_path, scene), tmp_path / "out.gpkg", "--model", model, *FAST,
                          *setting)
    assert code == 0, stderr
    assert MODEL_LINE in stderr and (tmp_path / "out.gpkg").is_file()


def test_cli_positive_control_logs_the_model_line(cli, tmp_path, scene, truth, model):
    """The observable of 'before the model loads' is there on a valid run."""
    out = tmp_path / "out.gpkg"
    code, _, stderr = cli("extract", scene, out, "--model", model, "--truth", truth, *FAST)
    assert code == 0, stderr
    assert MODEL_LINE in stderr and out.is_file()


def test_cli_overlap_over_half_a_tile_is_used_as_half_and_said(cli, tmp_path, scene, model):
    code, _, stderr = cli("extract", scene, tmp_path / "o.gpkg", "--model", model, "--tile-size", "64",
                          "--overlap", "64")
    assert code == 0, stderr
    assert "warning: Tile overlap 64 px is more than half the 64 px tile; 32 px is used." in stderr


def test_events_error_is_one_line_of_kind_usage(cli, tmp_path, scene, model):
    import json

    code, stdout, stderr = cli("--events", "extract", scene, tmp_path / "o.gpkg", "--model", model,
                               "--threshold", "nan")
    events = [json.loads(line[len("@sn6 "):]) for line in stdout.splitlines() if line.startswith("@sn6 ")]
    assert code == 2 and events[-1]["event"] == "error" and events[-1]["kind"] == "usage"
    assert events[-1]["message"].startswith("Probability threshold nan must be")
    assert not any(e.get("message", "").startswith(MODEL_LINE) for e in events)


def test_ansi_codes_in_a_message_are_stripped(cli, tmp_path, model):
    raster = tmp_path / "\x1b[31mred\x1b[0m.tif"
    code, _, stderr = cli("extract", raster, tmp_path / "o.gpkg", "--model", model)
    assert code == 2 and "\x1b" not in stderr
    assert "red.tif" in stderr and len(stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- unexpected errors

CRASH = """
import sys
import sn6_footprints.cli.extract as extract
def run(args):
    raise RuntimeError("\\x1b[31mboom\\x1b[0m\\nsecond line")
extract.run = run
from sn6_footprints.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _crash(tmp_path, *flags):
    import subprocess

    from tests.matrix.conftest import cli_environ

    return subprocess.run([sys.executable, "-c", CRASH, *flags, "extract", "a.tif", "b.gpkg"], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=cli_environ(tmp_path), timeout=120, check=False)


def test_unexpected_error_is_one_line_with_a_log_file(tmp_path):
    completed = _crash(tmp_path)
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 1 and len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: unexpected RuntimeError: boom second line (details: ")
    assert "Traceback" not in completed.stderr and "\x1b" not in completed.stderr
    log = Path(lines[0].rsplit("(details: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path and log.name.startswith("sn6_footprints-") and log.suffix == ".log"
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError" in text and "boom" in text


def test_unexpected_error_with_debug_shows_the_traceback(tmp_path):
    completed = _crash(tmp_path, "--debug")
    assert completed.returncode == 1 and "Traceback (most recent call last)" in completed.stderr
    assert not list(tmp_path.glob("sn6_footprints-*.log"))


def test_unexpected_error_with_events_is_one_internal_event(tmp_path):
    import json

    completed = _crash(tmp_path, "--events")
    events = [json.loads(line[len("@sn6 "):]) for line in completed.stdout.splitlines() if line.startswith("@sn6 ")]
    assert completed.returncode == 1 and events[-1]["kind"] == "internal"
    assert events[-1]["message"].startswith("unexpected RuntimeError: boom second line (details: ")
    assert "\x1b" not in events[-1]["message"]


# ---------------------------------------------------------------- processing.run (the worker)

class LogFeedback:
    """A QgsProcessingFeedback that keeps every log line (made lazily: QGIS must be up)."""

    @staticmethod
    def make():
        from qgis.core import QgsProcessingFeedback

        class Recorder(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.lines = []

            def pushInfo(self, text):  # noqa: N802 - QGIS API
                self.lines.append(text)

            def pushDebugInfo(self, text):  # noqa: N802 - QGIS API
                self.lines.append(text)

            def reportError(self, text, fatal=False):  # noqa: N802 - QGIS API
                self.lines.append(text)

        return Recorder()


# (id, parameter overrides, fragment). Values "{make:NAME}" are bad inputs made by make().
# Where QGIS's own range check refuses first, the fragment is QGIS's message.
ALG_CASES = [
    ("threshold-nan", {"THRESHOLD": math.nan}, "Probability threshold nan must be"),
    ("threshold-0", {"THRESHOLD": 0.0}, "Probability threshold 0.0 must be"),
    ("threshold-1", {"THRESHOLD": 1.0}, "Probability threshold 1.0 must be"),
    ("threshold-2", {"THRESHOLD": 2.0}, "THRESHOLD"),
    ("threshold-negative", {"THRESHOLD": -1.0}, "THRESHOLD"),
    ("min-area-nan", {"MIN_AREA": math.nan}, "Minimum building area nan"),
    ("min-area-negative", {"MIN_AREA": -5.0}, "MIN_AREA"),
    ("simplify-nan", {"SIMPLIFY": math.nan}, "Simplification tolerance nan"),
    ("tile-500", {"TILE_SIZE": 500}, "use 512"),
    ("tile-32", {"TILE_SIZE": 32}, "at least 64, or 0 (Auto, the default); use 64"),
    ("batch-0", {"BATCH_SIZE": 0}, "BATCH_SIZE"),
    ("raster-truncated", {"INPUT": "{make:truncated.tif}"}, "truncated.tif is not a readable raster"),
    ("raster-not-a-raster", {"INPUT": "{make:text.tif}"},
     "text.tif is not a readable raster (GDAL: not recognized as a supported file format): choose a GeoTIFF"),
    ("raster-folder", {"INPUT": "{make:a_folder}"}, "a_folder is a folder, not a raster: choose the SAR GeoTIFF"),
    ("raster-two-bands", {"INPUT": "{make:two_bands.tif}"}, "has 2 band(s) but the model expects 4"),
    ("band-order-count", {"BAND_ORDER": "1,2"},
     ("Band order 1,2 names 2 band(s); the model takes 4 (HH, HV, VH, VV): give one raster band for each",)),
    ("band-order-not-numbers", {"BAND_ORDER": "HH,HV"}, ("Band order 'HH,HV' is not a list of band numbers",)),
    ("raster-dual-pol", {"INPUT": "{make:dual_pol_hh_vv.tif}"},
     ("has the polarisation(s) HH, VV but the model needs HH, HV, VH, VV: HV, VH missing",
      "set Band order (--band-order)")),
    ("pixels-too-coarse", {"INPUT": "{make:pixels_2m.tif}"},
     ("pixels_2m.tif has 2 m pixels, 4× the model's 0.5 m: beyond 2× (1 m)", "Model pixel size")),
    ("scale-linear-or-amplitude", {"INPUT": "{make:linear_or_amplitude.tif}"},
     ("The values could be linear intensity or amplitude", "set Input scale (--input-scale) to linear or amplitude")),
    ("input-scale-sn6-on-db", {"INPUT": "{make:db_untagged.tif}", "INPUT_SCALE": 1},
     ("Input scale is SN6 SAR-Intensity but 100 % of the", "set Input scale (--input-scale)")),
    ("look-tag-not-a-direction", {"INPUT": "{make:look_tag_up.tif}"},
     ("LOOK_DIRECTION tag says 'up', not a direction; set Look direction (--look-direction)",)),
    ("model-missing", {"MODEL": "{dir}/nope.pt"}, "Model file not found"),
    ("model-folder", {"MODEL": "{make:a_folder}"}, "Incorrect parameter value for MODEL"),
    ("model-random-bytes", {"MODEL": "{make:random.pt}"}, "could not be read as a PyTorch checkpoint"),
    ("model-random-pickle", {"MODEL": "{make:random_pickle.pt}"}, "its pickle stream is damaged"),
    ("model-truncated", {"MODEL": "{make:truncated.pt}"}, "Is the file complete?"),
    ("model-zero-std", {"MODEL": "{make:zero_std.pt}"}, "std of band HH is 0.0"),
    ("model-threshold-1.5", {"MODEL": "{make:threshold_1.5.pt}"}, "threshold 1.5 must be above 0 and below 1"),
]


def _as_params(cases):
    """(id, ...) tuples as pytest params; pytest.param entries (with marks) as they are."""
    return [case if hasattr(case, "marks") else pytest.param(*case[1:], id=case[0]) for case in cases]


@pytest.mark.parametrize("overrides, fragment", _as_params(ALG_CASES))
def test_processing_refuses_before_any_work(run_alg, tmp_path, scene, model, overrides, fragment):
    from qgis.core import QgsProcessingException

    params = {"INPUT": str(scene), "MODEL": str(model), "OUTPUT": str(tmp_path / "out.gpkg"), **FAST_PARAMS}
    for key, value in overrides.items():
        if isinstance(value, str) and value.startswith("{make:"):
            value = str(make(value[len("{make:"):-1], tmp_path, scene))
        elif isinstance(value, str):
            value = value.format(dir=tmp_path)
        params[key] = value
    inputs = [Path(v) for k, v in params.items() if k in ("INPUT", "MODEL") and Path(str(v)).is_file()]
    before = take_snapshot(inputs)
    feedback = LogFeedback.make()
    with pytest.raises(QgsProcessingException) as error:
        run_alg("extract_footprints", params, feedback=feedback)
    message = str(error.value)
    assert all(part in message for part in _parts(fragment)), message
    assert "Traceback" not in message and UNSAFE_ADVICE not in message
    assert not any(MODEL_LINE in line for line in feedback.lines), feedback.lines
    assert not (tmp_path / "out.gpkg").exists()
    assert_untouched(before)


def test_processing_cases_are_at_least_15():
    assert len(ALG_CASES) >= 15


def test_processing_positive_control_logs_the_model_line(run_alg, tmp_path, scene, model):
    feedback = LogFeedback.make()
    result = run_alg("extract_footprints", {"INPUT": str(scene), "MODEL": str(model),
                                            "OUTPUT": str(tmp_path / "out.gpkg"), **FAST_PARAMS}, feedback=feedback)
    assert result["BUILDING_COUNT"] == len(BOXES)
    assert any(MODEL_LINE in line for line in feedback.lines)


def test_validation_tile_multiple_is_the_models():
    from sn6_footprints.core import model, validation

    assert validation.INPUT_MULTIPLE_PX == model.INPUT_MULTIPLE_PX


# ---------------------------------------------------------------- qgis_process (a subset)
# One case per source of a refusal (a parameter's value, the raster's input plan, the model
# file); every message is also asserted through the CLI and processing.run above, and each
# qgis_process start costs seconds.

@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory):
    """The plugin as `make install-plugin` lays it out, for scripts/qgis_process.sh."""
    return install_plugin(tmp_path_factory)


QGIS_PROCESS_CASES = [
    ("threshold-nan", ["THRESHOLD=nan"], "Probability threshold nan must be"),
    ("model-random-bytes", ["MODEL={make:random.pt}"], "could not be read as a PyTorch checkpoint"),
    ("raster-dual-pol", ["INPUT={make:dual_pol_hh_vv.tif}"],
     ("HV, VH missing", "set Band order (--band-order)")),
]


@pytest.mark.parametrize("extra, fragment", [c[1:] for c in QGIS_PROCESS_CASES], ids=[c[0] for c in QGIS_PROCESS_CASES])
def test_qgis_process_refuses_before_any_work(plugins_dir, tmp_path, scene, model, extra, fragment):
    values = {"INPUT": str(scene), "MODEL": str(model), "OUTPUT": str(tmp_path / "out.gpkg"), "TILE_SIZE": "64",
              "OVERLAP": "0"}
    for item in extra:
        key, value = item.split("=", 1)
        values[key] = str(make(value[len("{make:"):-1], tmp_path, scene)) if value.startswith("{make:") else value
    before = take_snapshot([scene, model])
    completed = qgis_process(plugins_dir, "run", "sn6_footprints:extract_footprints", "--",
                             *[f"{key}={value}" for key, value in values.items()])
    text = completed.stdout + completed.stderr
    assert completed.returncode != 0 and all(part in text for part in _parts(fragment)), text[-3000:]
    assert MODEL_LINE not in text and "Traceback" not in text and UNSAFE_ADVICE not in text
    assert not (tmp_path / "out.gpkg").exists()
    assert_untouched(before)
