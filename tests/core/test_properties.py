"""Property-based tests of the extraction core (issue 11): random small rasters (1-300 px a
side; float32, float64, uint8, int16; declared nodata, NaN and +/-Inf; rotated, flipped and
north-up geotransforms of any pixel size) and random valid parameters through ``extract_footprints`` with the
threshold model, whose answer is known pixel for pixel.

Invariants: the only exceptions are the documented ones (``ValueError`` subclasses with a
one-line message); every polygon lies inside the raster's footprint and off every nodata,
NaN or Inf pixel (both up to the simplification tolerance, checked in pixel space); every
area is at least the minimum; identical inputs give identical results. Bounded: 50 examples
each, deadline off, well under a minute in all.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rasterio.features import shapes
from scipy import ndimage

from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
from sn6_footprints.core.engine.tiling import TilingOptions
from sn6_footprints.core.reading import InputOptions
from tests.helpers.models import BRIGHT, DARK, save_threshold_model

BANDS = 4
DTYPES = ("float32", "float64", "uint8", "int16")
DARK_, BRIGHT_, NODATA, NAN, POS_INF, NEG_INF = range(6)  # what a cell of the pattern holds
FLOAT_STATES = [DARK_, BRIGHT_, NODATA, NAN, POS_INF, NEG_INF]
INT_STATES = [DARK_, BRIGHT_, NODATA]
ORIGIN = (594000.0, 5750000.0)
CRS = "EPSG:32631"  # metres, so polygon areas are m²
EPS = 1e-6

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, database=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def model_path():
    with tempfile.TemporaryDirectory(prefix="sn6-properties-") as folder:
        yield save_threshold_model(Path(folder) / "threshold.pt")


@st.composite
def geotransforms(draw) -> Affine:
    """North-up, pixel size 0.25-3 m, rows up to 1 % longer than columns: the grid the model
    reads as it is (its checkpoint is saved at the drawn pixel size). Re-oriented, rotated and
    resampled rasters go through the warp and are checked exactly in test_reading.py."""
    size_x = draw(st.floats(0.25, 3.0))
    size_y = size_x * draw(st.sampled_from([1.0, draw(st.floats(0.99, 1.01))]))
    return Affine.translation(*ORIGIN) * Affine.scale(size_x, -size_y)


@st.composite
def rasters(draw) -> dict:
    """A raster as arrays and metadata: a coarse pattern of cells upsampled to the size,
    single pixels sprinkled over it, bands 2-4 equal to band 1 or dark."""
    side = st.one_of(st.integers(1, 96), st.integers(1, 300))  # most small, some up to 300 px
    height, width = draw(side), draw(side)
    dtype = draw(st.sampled_from(DTYPES))
    floating = dtype.startswith("float")
    states = FLOAT_STATES if floating else INT_STATES
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    cells = np.array(draw(st.lists(st.sampled_from(states), min_size=rows * cols, max_size=rows * cols)),
                     np.int8).reshape(rows, cols)
    pattern = cells[np.arange(height) * rows // height][:, np.arange(width) * cols // width]
    for r, c, state in draw(st.lists(st.tuples(st.integers(0, height - 1), st.integers(0, width - 1),
                                               st.sampled_from(states)), max_size=12)):
        pattern[r, c] = state
    nodata_choices = [None, 0.0, 255.0] if dtype == "uint8" else [None, 0.0, -9999.0]
    if floating:
        nodata_choices.append(math.nan)
    nodata = draw(st.sampled_from(nodata_choices))
    others_dark = draw(st.booleans())
    band1 = np.full((height, width), DARK, np.float64)
    band1[pattern == BRIGHT_] = BRIGHT
    band1[pattern == NAN] = math.nan
    band1[pattern == POS_INF] = math.inf
    band1[pattern == NEG_INF] = -math.inf
    data = np.repeat(band1[None], BANDS, axis=0)
    if others_dark:
        data[1:] = DARK
    fill = 0.0 if nodata is None else nodata  # undeclared 'nodata' cells are plain zeros: valid, dark
    data[:, pattern == NODATA] = fill
    return {"data": data.astype(dtype), "nodata": nodata, "transform": draw(geotransforms())}


@st.composite
def parameters(draw, transform: Affine) -> dict:
    """Valid options: threshold in (0, 1), min area 0-40 m², simplification either below half a
    pixel (the nodata check is then exact) or up to 2 px, tiles 64-256 px, any overlap."""
    pixel = math.sqrt(abs(transform.determinant))
    tolerance_px = draw(st.sampled_from([0.0, draw(st.floats(0.0, 0.45)), draw(st.floats(0.0, 2.0))]))
    tile = draw(st.sampled_from([64, 96, 128, 256]))
    min_area = draw(st.sampled_from([0.0, draw(st.floats(0.0, 40.0))]))
    overlap = draw(st.sampled_from([0, 16, draw(st.integers(0, tile))]))
    return {"threshold": draw(st.floats(0.01, 0.99)), "min_area_m2": min_area,
            "simplify_m": tolerance_px * pixel, "tile_size_px": tile, "overlap_px": overlap,
            "batch_size": draw(st.integers(1, 8))}


def write(path: Path, raster: dict) -> Path:
    data = raster["data"]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=BANDS,
                       dtype=data.dtype.name, transform=raster["transform"], crs=CRS,
                       nodata=raster["nodata"]) as dst:
        dst.write(data)
    return path


def invalid_mask(raster: dict) -> np.ndarray:
    """The documented rule: any band NaN/Inf, or every band equal to the declared nodata."""
    data = raster["data"].astype(np.float32)
    invalid = ~np.isfinite(data).all(axis=0)
    nodata = raster["nodata"]
    if nodata is not None and not math.isnan(nodata):
        invalid |= (data == np.float32(nodata)).all(axis=0)
    return invalid


def extract(raster_path: Path, model_path: Path, p: dict):
    options = ExtractionOptions(model_path=str(model_path), device="cpu",
                                input=InputOptions(input_scale="sn6", zero_is_nodata=False),
                                tiling=TilingOptions(p["tile_size_px"], p["overlap_px"], p["batch_size"]),
                                threshold=p["threshold"], min_area_m2=p["min_area_m2"],
                                simplify_m=p["simplify_m"])
    return extract_footprints(raster_path, options)


def to_pixels(polygon, transform: Affine):
    inverse = ~transform
    return shapely.affinity.affine_transform(polygon, [inverse.a, inverse.b, inverse.d, inverse.e,
                                                       inverse.c, inverse.f])


def check_invariants(result, raster: dict, p: dict) -> None:
    transform = raster["transform"]
    _, height, width = raster["data"].shape
    pixel = math.sqrt(abs(transform.determinant))
    tolerance_px = p["simplify_m"] / pixel + EPS
    frame = shapely.box(0, 0, width, height).buffer(tolerance_px, join_style="mitre")
    invalid = invalid_mask(raster)
    deep_invalid = None
    if invalid.any():
        cells = [shapely.geometry.shape(g) for g, _ in shapes(invalid.astype(np.uint8), mask=invalid,
                                                              connectivity=4)]
        deep_invalid = shapely.unary_union(cells).buffer(-tolerance_px, join_style="mitre")
    assert set(result.attributes) >= {"id", "area_m2", "confidence"}
    assert len(result.attributes["area_m2"]) == len(result.geometries)
    for geometry, area in zip(result.geometries, result.attributes["area_m2"]):
        assert geometry is not None and geometry.is_valid and not geometry.is_empty
        assert geometry.geom_type in ("Polygon", "MultiPolygon")
        in_pixels = to_pixels(geometry, transform)
        assert frame.covers(in_pixels), f"polygon outside the raster: {in_pixels.wkt}"
        if deep_invalid is not None and not deep_invalid.is_empty:
            with np.errstate(invalid="ignore"):  # GEOS warns on some disjoint pairs
                overlap = in_pixels.intersection(deep_invalid).area if in_pixels.intersects(deep_invalid) else 0.0
            assert overlap < EPS, f"polygon over nodata/NaN/Inf pixels ({overlap:.3g} px²): {in_pixels.wkt}"
        assert area >= p["min_area_m2"] - 5e-4, f"area {area} m² under the minimum {p['min_area_m2']}"
        assert geometry.area >= p["min_area_m2"] - 1e-3, f"polygon of {geometry.area} m² under the minimum"
    if p["simplify_m"] == 0:  # unsimplified, the threshold model's answer is known pixel for pixel
        expected = expected_blob_sizes(raster, p)
        got = sorted(to_pixels(g, transform).area for g in result.geometries)
        # areas back in pixels go through the transform and its inverse: 134.999999 is 135
        assert len(got) == len(expected) and np.allclose(got, expected, rtol=0, atol=1e-4), \
            f"blob sizes {got} px, expected {expected} px"


def expected_blob_sizes(raster: dict, p: dict) -> list[float]:
    """The threshold model's buildings: valid pixels whose probability (sigmoid(relu(x) - 1) of
    the normalised band 1) exceeds the threshold, as 4-connected blobs of at least the minimum."""
    band1 = raster["data"][0].astype(np.float32)
    normalised = (np.nan_to_num(band1, nan=0.0, posinf=0.0, neginf=0.0) - 127.5) / 31.875
    probability = 1.0 / (1.0 + np.exp(-(np.maximum(normalised, 0.0) - 1.0)))
    mask = (probability > p["threshold"]) & ~invalid_mask(raster)
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(2, 1))
    sizes = ndimage.sum_labels(mask, labels, np.arange(1, count + 1)) if count else np.zeros(0)
    min_pixels = p["min_area_m2"] / abs(raster["transform"].determinant)
    return sorted(float(s) for s in sizes if s >= min_pixels)


def same(a, b) -> bool:
    return ([shapely.to_wkb(g) for g in a.geometries] == [shapely.to_wkb(g) for g in b.geometries]
            and a.attributes == b.attributes and a.crs_wkt == b.crs_wkt)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_rasters_and_parameters_keep_the_invariants(model_path, data):
    raster = data.draw(rasters(), label="raster")
    p = data.draw(parameters(raster["transform"]), label="parameters")
    with tempfile.TemporaryDirectory(prefix="sn6-properties-") as folder:
        path = write(Path(folder) / "raster.tif", raster)
        model_path = save_threshold_model(Path(folder) / "threshold.pt", pixel_size_m=abs(raster["transform"].a))
        try:
            first = extract(path, model_path, p)
        except ValueError as error:  # the documented refusals: one line that names the problem
            message = str(error)
            assert message and "\n" not in message, f"{type(error).__name__} without a one-line message"
            event(f"refused: {type(error).__name__}")
            return
        event(f"polygons: {min(len(first), 3)}{'+' if len(first) >= 3 else ''}")
        event(f"invalid pixels: {bool(invalid_mask(raster).any())}")
        check_invariants(first, raster, p)
        second = extract(path, model_path, p)
        assert same(first, second), "the same input gave a different result"
