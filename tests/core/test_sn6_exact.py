"""The sn6-exact preset gives the SpaceNet 6 baseline's polygons (REFERENCE.md §3): checked
against an independent re-implementation of the baseline's loop (tests/helpers/sn6_reference_loop.py)
with a random narrow UNet11 saved as the baseline's file is (legacy torch.save, bare 56-key
state_dict)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from scipy import ndimage
from scipy.special import expit

from sn6_footprints.core.engine.sn6_exact import window_starts
from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
from sn6_footprints.core.model import UNet11
from sn6_footprints.core.validation import ValidationError, validate_extraction
from sn6_footprints.core.vector_io import read_footprints
from sn6_footprints.defaults import SN6_EXACT_PRESET
from tests.helpers.feedback import InfoLog
from tests.helpers.models import TRANSFORM, write_raster
from tests.helpers.sn6_reference_loop import reference_sn6_logits, reference_sn6_polygons, reference_sn6_raster

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH = 0.125        # 8 channels in the first convolution: the baseline's layout at an eighth of its cost
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
NOISE_MARGIN = 2e-5  # float32 forward passes of other batch sizes/memory formats differ by about 1e-5 here


@dataclass
class Case:
    raster: Path
    checkpoint: Path
    model: UNet11
    image: np.ndarray
    rotate_180: bool


def _scene(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth SAR-Intensity-like values (1-92, no zeros: no nodata), different in every band."""
    noise = np.random.default_rng(seed).standard_normal((4, height, width))
    smooth = ndimage.gaussian_filter(noise, (0, 8, 8))
    return np.clip(45 + 20 * smooth / smooth.std(), 1, 92).astype(np.float32)


def _set_bias_with_margin(model: UNet11, image: np.ndarray, rotate_180: bool) -> float:
    """Set the final bias so that 30-45 % of the baseline's mean logits are positive and none
    lies near 0 (the middle of the widest gap between them there): the last bits of a float32
    forward pass, which depend on batch size and memory format, then cannot move a pixel across
    the threshold, and the test compares the steps, not the rounding. Returns the margin."""
    with torch.no_grad():
        model.final.bias.zero_()
    values = np.sort(reference_sn6_logits(image, model, rotate_180=rotate_180).ravel())
    low, high = int(0.55 * values.size), int(0.70 * values.size)
    gaps = np.diff(values[low:high])
    widest = int(np.argmax(gaps))
    with torch.no_grad():
        model.final.bias.fill_(-float(values[low + widest] + values[low + widest + 1]) / 2)
    return float(gaps[widest]) / 2


def _case(folder: Path, height: int, width: int, seed: int, rotate_180: bool = False,
          nodata_box: tuple[int, int, int, int] | None = None) -> Case:
    image = _scene(height, width, seed)
    if nodata_box is not None:
        r0, c0, r1, c1 = nodata_box
        image[:, r0:r1, c0:c1] = 0.0  # SN6's nodata: 0 in every band
    torch.manual_seed(seed)
    model = UNet11(4, WIDTH).eval()
    assert _set_bias_with_margin(model, image, rotate_180) > NOISE_MARGIN
    checkpoint = folder / f"baseline_like_{seed}.model"
    state = model.state_dict()
    assert len(state) == 56  # the baseline file's layout: the encoder's tensors twice (aliases)
    torch.save(state, checkpoint, _use_new_zipfile_serialization=False)
    return Case(write_raster(folder / f"scene_{seed}.tif", image), checkpoint, model, image, rotate_180)


def _exact(case: Case, raster=None, feedback=None, **options):
    return extract_footprints(raster or case.raster, ExtractionOptions(
        model_path=str(case.checkpoint), device="cpu", preset=SN6_EXACT_PRESET, rotate_180=case.rotate_180,
        **options), feedback)


def _in_crs(polygons: list) -> list:
    t = TRANSFORM
    return [shapely.affinity.affine_transform(p, [t.a, t.b, t.d, t.e, t.c, t.f]) for p in polygons]


def assert_same_polygons(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    order = lambda g: (round(g.bounds[1], 3), round(g.bounds[0], 3), round(g.area, 3))  # noqa: E731
    for mine, reference in zip(sorted(map(shapely.normalize, ours), key=order),
                               sorted(map(shapely.normalize, theirs), key=order)):
        assert mine.equals_exact(reference, 1e-6), (mine.wkt[:200], reference.wkt[:200])


def blob_sizes(logits: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(logits > 0, structure=FOUR_CONNECTED)
    return np.bincount(labels.ravel())[1:]


@pytest.fixture(scope="module")
def tile(tmp_path_factory) -> Case:
    """An SN6 tile: 900 x 900 px, four bands, 0.5 m pixels in UTM 31N."""
    return _case(tmp_path_factory.mktemp("tile"), 900, 900, seed=1)


@pytest.fixture(scope="module")
def tile_reference(tile) -> list:
    return reference_sn6_raster(tile.raster, tile.model, 127.5, 31.875, False)


def test_window_origins_are_the_baselines_512_steps_snapped_to_the_edge():
    assert window_starts(900, reversed_axis=False) == [0, 388]
    assert window_starts(512, reversed_axis=False) == [0]
    assert window_starts(1100, reversed_axis=False) == [0, 512, 588]
    # cut from the turned tile, the steps run from the far edge
    assert window_starts(1100, reversed_axis=True) == [0, 76, 588]
    assert window_starts(900, reversed_axis=True) == [0, 388]


def test_an_sn6_tile_gives_the_baselines_polygons(tile, tile_reference):
    sizes = blob_sizes(reference_sn6_logits(tile.image, tile.model))
    assert (sizes < 80).sum() > 100 and (sizes >= 80).sum() > 50  # the 80 px rule has work to do
    log = InfoLog()
    result = _exact(tile, feedback=log)
    assert_same_polygons(result.geometries, tile_reference)
    assert set(result.attributes["confidence"]) == {1.0}
    assert result.attributes["area_m2"] == pytest.approx([g.area for g in result.geometries], abs=1e-3)
    assert {"read", "model", "blend", "vectorize", "write"} <= set(result.seconds)
    assert any("Ignored: tile size, overlap, threshold, minimum area, simplification, flip averaging and precision"
               in line for line in log.lines)


@pytest.mark.parametrize("rotate_180", [False, True], ids=["as-is", "rotated"])
def test_a_mosaic_streamed_by_rows_of_windows_gives_the_baselines_polygons(tmp_path, rotate_180):
    # 700 px wide, 1100 px tall: three rows of windows, blobs carried across two row borders;
    # rotated, the rows of windows start at 0, 76 and 588 (cut from the turned mosaic)
    case = _case(tmp_path, 1100, 700, seed=2, rotate_180=rotate_180)
    reference = reference_sn6_raster(case.raster, case.model, 127.5, 31.875, rotate_180)
    assert len(reference) > 50
    assert_same_polygons(_exact(case).geometries, reference)


def test_nodata_pixels_get_no_polygon_and_no_probability(tmp_path):
    box = (300, 100, 600, 400)
    case = _case(tmp_path, 900, 900, seed=3, nodata_box=box)
    logits = reference_sn6_logits(case.image, case.model)
    valid = np.ones(logits.shape, bool)
    valid[box[0]:box[2], box[1]:box[3]] = False
    assert (logits[~valid] > 0).any()  # the model alone would find buildings in the nodata
    probability = tmp_path / "p.tif"
    result = _exact(case, probability_path=str(probability))
    expected = _in_crs(reference_sn6_polygons(np.where(valid, logits, -1.0), 80, 0.5))
    assert_same_polygons(result.geometries, expected)
    with rasterio.open(probability) as dataset:
        written = dataset.read(1)
        assert dataset.nodata == -1
    assert (written[~valid] == -1).all()
    assert np.abs(written[valid] - expit(logits[valid])).max() < 1e-5


def test_a_raster_under_512_px_is_refused_naming_the_default_preset(tmp_path, tile):
    small = write_raster(tmp_path / "small.tif", _scene(600, 500, seed=4))
    with pytest.raises(ValidationError, match=r"small.tif is 500 x 600 px: .* use the default preset"):
        validate_extraction(small, tmp_path / "out.gpkg", model=str(tile.checkpoint), preset=SN6_EXACT_PRESET)
    validate_extraction(small, tmp_path / "out.gpkg", model=str(tile.checkpoint))  # the default engine pads
    with pytest.raises(ValidationError, match="Preset sn6 is not known; use one of default, sn6-exact"):
        validate_extraction(tile.raster, tmp_path / "out.gpkg", model=str(tile.checkpoint), preset="sn6")
    with pytest.raises(ValueError, match="use the default preset"):  # callers that skip validation
        _exact(tile, raster=small)


def test_the_cli_preset_writes_the_baselines_polygons_with_confidence_1(tmp_path, tile, tile_reference):
    out = tmp_path / "out.gpkg"
    completed = subprocess.run([sys.executable, "-m", "sn6_footprints", "extract", str(tile.raster), str(out),
                                "--model", str(tile.checkpoint), "--device", "cpu", "--preset", SN6_EXACT_PRESET,
                                "--json", "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(completed.stdout)["buildings"] == len(tile_reference)
    written = read_footprints(out)
    assert_same_polygons(list(written.geometries), tile_reference)
    assert set(written.attributes["confidence"]) == {1.0}
