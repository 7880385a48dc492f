"""The optional probability raster: the values that were vectorised, nodata kept, complete or absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import shapely

from sn6_footprints.core.engine.tiling import TilingOptions
from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
from sn6_footprints.core.feedback import Cancelled, Feedback
from sn6_footprints.output_safety import OutputIsInputError
from sn6_footprints.core.reading import InputOptions, plan_input
from sn6_footprints.core.validation import ValidationError, validate_extraction
from sn6_footprints.core.vectorize import VectorizeOptions, vectorize_probabilities
from tests.conftest import REPO_ROOT
from tests.helpers.models import TRANSFORM, boxes_scene, save_threshold_model, write_raster
from tests.helpers.feedback import StopAfter

BOXES = [(5, 5, 25, 45), (60, 30, 130, 50), (140, 10, 190, 60)]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_threshold_model(tmp_path_factory.mktemp("m") / "threshold.pt")


@pytest.fixture
def scene(tmp_path):
    """Buildings, and declared nodata (0 in every band) in the right-hand columns, away from them."""
    data = boxes_scene(200, 190, BOXES)
    data[:, :, 150:] = 0.0
    return write_raster(tmp_path / "scene.tif", data, nodata=0.0)


def run(raster, model_path, feedback=None, **options):
    return extract_footprints(raster, ExtractionOptions(model_path=str(model_path), tiling=TilingOptions(64, 16, 3),
                                                        simplify_m=0, **options), feedback)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_float32_raster_holds_what_was_vectorised_with_nodata_kept(tmp_path, scene, model_path):
    out = tmp_path / "probability.tif"
    result = run(scene, model_path, probability_path=str(out))
    with rasterio.open(out) as dataset:
        assert (dataset.width, dataset.height, dataset.count, dataset.dtypes[0]) == (190, 200, 1, "float32")
        assert dataset.transform == TRANSFORM and dataset.crs.to_epsg() == 32631
        assert dataset.nodata == -1.0 and dataset.compression.value.lower() == "deflate"
        assert dataset.block_shapes[0] == (256, 256)
        values = dataset.read(1)
    assert (values[:, 150:] == -1.0).all()                      # no valid input: nodata, not 0
    valid = values[:, :150]
    assert valid.min() >= 0 and valid.max() <= 1 and valid.max() > 0.9
    with rasterio.open(scene) as dataset:
        grid = plan_input(dataset, result.settings, InputOptions(), "scene.tif").grid
    geometries, attributes = vectorize_probabilities(str(out), grid,
                                                     VectorizeOptions.for_model(result.settings, grid, 0))
    assert len(result) == len(BOXES)
    assert sorted(shapely.normalize(g).wkt for g in geometries) == \
        sorted(shapely.normalize(g).wkt for g in result.geometries)
    assert sorted(attributes["confidence"]) == pytest.approx(sorted(result.attributes["confidence"]), abs=1e-6)
    assert leftovers(tmp_path) == []


def test_uint8_is_round_p_times_254_with_255_as_nodata(tmp_path, scene, model_path):
    run(scene, model_path, probability_path=str(tmp_path / "p32.tif"))
    run(scene, model_path, probability_path=str(tmp_path / "p8.tif"), probability_format="uint8")
    with rasterio.open(tmp_path / "p32.tif") as f32, rasterio.open(tmp_path / "p8.tif") as u8:
        assert u8.dtypes[0] == "uint8" and u8.nodata == 255
        p, q = f32.read(1), u8.read(1)
    assert (q[:, 150:] == 255).all()
    np.testing.assert_array_equal(q[:, :150], np.rint(p[:, :150] * 254).astype(np.uint8))
    assert q[:, :150].max() <= 254


def test_precision_float32_runs_and_the_log_names_it(tmp_path, scene, model_path):
    class Lines(Feedback):
        def __init__(self):
            self.lines = []

        def info(self, message):
            self.lines.append(message)

    log = Lines()
    result = run(scene, model_path, log, precision="float32")
    assert len(result) == len(BOXES)
    assert any(line.startswith("Device:") for line in log.lines)


def test_cancelled_run_leaves_no_probability_raster(tmp_path, scene, model_path):
    out = tmp_path / "probability.tif"
    with pytest.raises(Cancelled):
        run(scene, model_path, StopAfter(3), probability_path=str(out))
    assert not out.exists() and leftovers(tmp_path) == []


def test_footprints_that_fail_to_write_take_the_probability_raster_with_them(tmp_path, scene, model_path):
    """Both outputs or neither: the probability raster takes its name only after the caller's
    footprint writer succeeded."""
    out = tmp_path / "probability.tif"
    written = []

    def failing_writer(result):
        written.append(len(result))
        assert leftovers(tmp_path) != []  # the probability raster is complete, still under its partial name
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        extract_footprints(scene, ExtractionOptions(model_path=str(model_path), tiling=TilingOptions(64, 16, 3),
                                                    probability_path=str(out)), write_outputs=failing_writer)
    assert written == [len(BOXES)]
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_earlier_file_is_replaced_only_by_a_complete_one(tmp_path, scene, model_path):
    out = tmp_path / "probability.tif"
    out.write_bytes(b"earlier run")
    with pytest.raises(Cancelled):
        run(scene, model_path, StopAfter(3), probability_path=str(out))
    assert out.read_bytes() == b"earlier run"       # a cancelled run does not touch it
    run(scene, model_path, probability_path=str(out))
    with rasterio.open(out) as dataset:
        assert dataset.shape == (200, 190)


@pytest.mark.parametrize("name, message", [
    ("scene.tif", "probability raster scene.tif would overwrite the input raster"),
    ("p.png", "probability raster p.png has the extension .png"),
    ("out.gpkg", "footprints output and the probability raster share the file out.gpkg"),
    ("nofolder/p.tif", "folder of the probability raster"),
])
def test_bad_probability_paths_are_refused_before_any_work(tmp_path, scene, model_path, name, message):
    with pytest.raises(ValidationError, match=message):
        validate_extraction(scene, tmp_path / "out.gpkg", model=str(model_path), probability=tmp_path / name)


def test_cli_writes_the_probability_raster_and_names_it_in_the_json(tmp_path, scene, model_path):
    out, probability = tmp_path / "out.gpkg", tmp_path / "p.tif"
    completed = subprocess.run([sys.executable, "-m", "sn6_footprints", "extract", str(scene), str(out),
                                "--model", str(model_path), "--tile-size", "64", "--probability", str(probability),
                                "--probability-format", "uint8", "--precision", "float32", "--json", "--quiet"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(completed.stdout)
    assert summary["probability"] == str(probability) and summary["buildings"] == len(BOXES)
    with rasterio.open(probability) as dataset:
        assert dataset.dtypes[0] == "uint8" and dataset.shape == (200, 190)


def test_cli_refuses_the_input_as_probability_output_in_one_line(tmp_path, scene, model_path):
    before = scene.read_bytes()
    completed = subprocess.run([sys.executable, "-m", "sn6_footprints", "extract", str(scene),
                                str(tmp_path / "o.gpkg"), "--model", str(model_path), "--probability", str(scene)],
                               cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: The probability raster scene.tif would overwrite the input raster")
    assert len(completed.stderr.strip().splitlines()) == 1
    assert scene.read_bytes() == before and not (tmp_path / "o.gpkg").exists()


def test_a_direct_call_never_writes_over_the_input_nor_guesses_a_format(tmp_path, scene, model_path):
    before = scene.read_bytes()
    with pytest.raises(OutputIsInputError, match="would overwrite the input raster"):
        run(scene, model_path, probability_path=str(scene))
    with pytest.raises(ValueError, match="Probability format int16 is not known"):
        run(scene, model_path, probability_path=str(tmp_path / "p.tif"), probability_format="int16")
    assert scene.read_bytes() == before and not (tmp_path / "p.tif").exists() and leftovers(tmp_path) == []


def test_the_probability_raster_gets_the_users_usual_permissions(tmp_path, scene, model_path):
    import os
    import stat

    out = tmp_path / "p.tif"
    run(scene, model_path, Feedback(), probability_path=str(out))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # as any file the user's tools create


BLOCK_ROWS_SCRIPT = r"""
import os, sys
import numpy as np, rasterio
from affine import Affine
from scipy import ndimage
from sn6_footprints.core.engine.probabilities import ProbabilityRaster, _profile
from sn6_footprints.core.engine.stream import BlendedRows
from sn6_footprints.core.reading.ground import ModelGrid
folder, strip = sys.argv[1], int(sys.argv[2])
width, height = 2048, 2000
probability = ndimage.gaussian_filter(np.random.default_rng(0).random((height, width)), 4).astype(np.float32)
grid = ModelGrid(width, height, Affine(0.5, 0, 0, 0, -0.5, 0), "EPSG:32631", 0.5, True)
raster = ProbabilityRaster(os.path.join(folder, "strips.tif"), grid, "EPSG:32631")
for top in range(0, height, strip):
    part = probability[top:top + strip]
    raster.write(BlendedRows(top, part, np.ones(part.shape, bool)))
raster.close()
with rasterio.open(os.path.join(folder, "whole.tif"), "w", **_profile(grid, "EPSG:32631")) as dataset:
    dataset.write(probability[None])
with rasterio.open(os.path.join(folder, "strips.tif")) as dataset:
    assert np.array_equal(dataset.read(1), probability)
print(os.path.getsize(os.path.join(folder, "strips.tif")) / os.path.getsize(os.path.join(folder, "whole.tif")))
"""


@pytest.mark.parametrize("strip", [480, 37])
def test_strips_that_end_inside_a_row_of_blocks_do_not_store_blocks_twice(tmp_path, strip):
    """Under a 1 MB GDAL cache (a wide raster's reads evict the written blocks), rows handed
    over in strips that end inside a row of 256 px blocks give the file of one write."""
    environment = {"GDAL_CACHEMAX": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", BLOCK_ROWS_SCRIPT, str(tmp_path), str(strip)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **environment})
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) < 1.02   # every block stored once (before: 1.35x)
