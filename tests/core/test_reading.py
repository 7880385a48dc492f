"""Reading a raster as the model expects it: bands, look directions, ground pixels, grids.

End-to-end cases use the threshold model (a pixel is a building exactly where band 1 is
bright), so every rotation, re-orientation and resampling has a known answer on the ground.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
from sn6_footprints.core.engine.predictor import Predictor
from sn6_footprints.core.engine.tiling import TilingOptions
from sn6_footprints.core.model import UNet11
from sn6_footprints.core.raster_windows import RasterError
from sn6_footprints.core.reading import InputOptions
from sn6_footprints.core.reading.bands import map_bands, parse_band_order, polarisation_of
from sn6_footprints.core.reading.ground import ground_pixel, is_north_up
from sn6_footprints.core.reading.look import quarter_turns, resolve_look
from sn6_footprints.core.reading.plan import MAX_COARSER
from sn6_footprints.core.settings import ModelSettings
from sn6_footprints.core.weights import save_model
from tests.helpers.feedback import InfoLog
from tests.helpers.models import boxes_scene, save_threshold_model, threshold_model, write_raster

QUAD = ("HH", "HV", "VH", "VV")
X0, Y0 = 594000.0, 5750000.0
BOXES = [(10, 10, 40, 50), (60, 70, 100, 90), (20, 120, 36, 176)]   # (row0, col0, row1, col1) at 0.5 m


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_threshold_model(tmp_path_factory.mktemp("m") / "threshold.pt")


def extract(raster, model_path, feedback=None, **input_options):
    options = ExtractionOptions(model_path=str(model_path), tiling=TilingOptions(64, 16, 3), simplify_m=0,
                                flip_average=False, input=InputOptions(**input_options))
    return extract_footprints(raster, options, feedback)


def ground_boxes(boxes=BOXES, pixel=0.5):
    """The boxes as polygons on the ground (north-up grid at ``pixel`` from X0, Y0)."""
    return [shapely.box(X0 + c0 * pixel, Y0 - r1 * pixel, X0 + c1 * pixel, Y0 - r0 * pixel)
            for r0, c0, r1, c1 in boxes]


def matched_iou(found, expected) -> list[float]:
    """For every expected polygon, the best IoU of a found one."""
    return [max((g.intersection(e).area / g.union(e).area for g in found), default=0.0) for e in expected]


# ------------------------------------------------------------------ bands

def test_bands_are_found_by_their_descriptions_in_any_order_and_case():
    mapping = map_bands(["Sigma0_VV_db", "vh", "HV", "Amplitude_HH"], QUAD)
    assert mapping.indexes == (4, 3, 2, 1)
    assert "HH = band 4" in mapping.how
    assert polarisation_of("HHVV") is None and polarisation_of("band 1") is None


def test_band_order_parameter_maps_bands_and_its_mistakes_are_refused():
    assert map_bands([None] * 4, QUAD, parse_band_order("4, 3,2,1")).indexes == (4, 3, 2, 1)
    assert map_bands([None] * 6, QUAD, (6, 5, 1, 2)).indexes == (6, 5, 1, 2)
    with pytest.raises(RasterError, match="names 3 band"):
        map_bands([None] * 4, QUAD, (1, 2, 3))
    with pytest.raises(RasterError, match="has bands 1 to 4"):
        map_bands([None] * 4, QUAD, (1, 2, 3, 5))
    with pytest.raises(RasterError, match="uses band 1 more than once"):
        map_bands([None] * 4, QUAD, (1, 1, 2, 3))
    with pytest.raises(RasterError, match="list of band numbers"):
        parse_band_order("HH,HV")


def test_a_dual_pol_raster_is_refused_naming_the_missing_polarisations_and_the_fix():
    with pytest.raises(RasterError) as error:
        map_bands(["HH", "VV"], QUAD, raster_name="dual.tif")
    message = str(error.value)
    assert "HV, VH missing" in message and "train a model on HH, VV" in message
    with pytest.raises(RasterError, match="Band order"):
        map_bands([None, None], QUAD)


def test_unnamed_bands_in_the_models_count_are_read_in_order_and_the_log_says_so():
    mapping = map_bands([None] * 4, QUAD)
    assert mapping.indexes == (1, 2, 3, 4) and "Band order" in mapping.how


# ------------------------------------------------------------------ look directions

def test_quarter_turns_bring_every_look_direction_to_the_models():
    assert quarter_turns("north", "north") == 0
    assert quarter_turns("south", "north") == 2
    assert quarter_turns("east", "north") == 1     # east turned counter-clockwise looks north
    assert quarter_turns("west", "north") == 3
    assert quarter_turns("north", "east") == 3
    image = np.zeros((5, 5))
    image[0, 2] = 1                               # a mark on the side the sensor looks to (north: top)
    east = np.rot90(image, -1)                    # the same mark for an east-looking scene: right
    assert east[2, 4] == 1 and np.array_equal(np.rot90(east, quarter_turns("east", "north")), image)


def test_look_direction_from_the_parameter_the_tag_or_the_model():
    assert resolve_look("west", {"LOOK_DIRECTION": "north"}, "north") == ("west", "set by Look direction")
    assert resolve_look("auto", {"LOOK_DIRECTION": "East"}, "north")[0] == "east"
    look, evidence = resolve_look("auto", {}, "north")
    assert look == "north" and "assumed the model's" in evidence
    with pytest.raises(RasterError, match="Look direction"):
        resolve_look("auto", {"LOOK_DIRECTION": "left"}, "north")


@pytest.mark.parametrize("tags, look", [
    ({"ORBIT_DIRECTION": "ASCENDING", "LOOK_SIDE": "right"}, "east"),
    ({"ORBIT_DIRECTION": "DESCENDING", "LOOK_SIDE": "RIGHT"}, "west"),
    ({"TIFFTAG_IMAGEDESCRIPTION": json.dumps({"collect": {"radar": {"pointing": "left"}},
                                              "sat:orbit_state": "ascending"})}, "west"),
    ({"TIFFTAG_IMAGEDESCRIPTION": json.dumps({"properties": {"sat:orbit_state": "descending",
                                                             "sar:observation_direction": "left"}})}, "east"),
])
def test_look_direction_from_the_products_pass_and_look_side(tags, look):
    found, evidence = resolve_look("auto", tags, "north")
    assert found == look and "near-polar orbit" in evidence and "pass" in evidence


def test_product_metadata_needs_both_pass_and_side_and_must_not_contradict_itself():
    look, evidence = resolve_look("auto", {"LOOK_SIDE": "right"}, "north")   # no pass: the model's, said
    assert look == "north" and "assumed the model's" in evidence
    capella = {"TIFFTAG_IMAGEDESCRIPTION": json.dumps({"collect": {"image": {"scale_factor": 2e-4}}})}
    assert resolve_look("auto", capella, "north")[0] == "north"
    with pytest.raises(RasterError, match="contradicts itself.*Look direction"):
        resolve_look("auto", {"ORBIT_DIRECTION": "ASCENDING", "PASS_DIRECTION": "descending",
                              "LOOK_SIDE": "right"}, "north")
    assert resolve_look("auto", {"LOOK_DIRECTION": "south", "ORBIT_DIRECTION": "ASCENDING",
                                 "LOOK_SIDE": "right"}, "north")[0] == "south"   # the tag comes first


def test_a_product_whose_description_gives_pass_and_side_is_turned_by_the_plan(tmp_path, model_path):
    description = json.dumps({"collect": {"radar": {"pointing": "right"}, "state": {"orbit_direction": "ascending"}}})
    raster = write_raster(tmp_path / "product.tif", boxes_scene(110, 190, BOXES), TIFFTAG_IMAGEDESCRIPTION=description)
    log = InfoLog()
    result = extract(raster, model_path, feedback=log)
    line = next(m for m in log.lines if m.startswith("Look direction"))
    assert "east (the product's metadata: ascending pass" in line and "turned 90° counter-clockwise" in line
    assert len(result.geometries) == len(BOXES)


def test_predictor_quarter_turns_undo_exactly():
    torch.manual_seed(0)
    model = UNet11(4, width=0.125).eval()
    batch = np.random.default_rng(1).normal(size=(2, 4, 64, 96)).astype(np.float32)
    turned = Predictor(model, torch.device("cpu"), quarter_turns=1)(np.ascontiguousarray(np.rot90(batch, -1, (2, 3))))
    plain = Predictor(model, torch.device("cpu"))(batch)
    assert np.allclose(turned, np.rot90(plain, -1, (1, 2)), atol=1e-6)


# ------------------------------------------------------------------ ground pixels

def test_ground_pixel_sizes_are_metres_whatever_the_crs():
    utm = rasterio.crs.CRS.from_epsg(32631).to_wkt()
    assert ground_pixel(Affine(0.5, 0, X0, 0, -0.5, Y0), 100, 100, utm).size_m == pytest.approx(0.5, rel=1e-3)
    web = rasterio.crs.CRS.from_epsg(3857).to_wkt()   # Rotterdam: 0.5 map units are about 0.31 m
    pixel = ground_pixel(Affine(0.5, 0, 500000, 0, -0.5, 6780000), 100, 100, web)
    assert 0.29 < pixel.size_m < 0.33
    geographic = rasterio.crs.CRS.from_epsg(4326).to_wkt()
    dx, dy = 0.5 / (111_320 * np.cos(np.radians(51.9))), 0.5 / 111_250
    pixel = ground_pixel(Affine(dx, 0, 4.35, 0, -dy, 51.9), 100, 100, geographic)
    assert pixel.x_m == pytest.approx(0.5, rel=0.01) and pixel.y_m == pytest.approx(0.5, rel=0.01)
    rotated = Affine(-0.0286, -2.4998, 593124.1, 2.4998, -0.0286, 5749208.2)   # the Capella crops' transform
    assert ground_pixel(rotated, 200, 200, utm).size_m == pytest.approx(2.5, rel=1e-3)
    assert not is_north_up(rotated) and is_north_up(Affine(0.5, 0, 0, 0, -0.5, 0))


# ------------------------------------------------------------------ end to end, on the ground

def test_north_up_at_the_models_pixel_size_is_read_as_it_is(tmp_path, model_path):
    raster = write_raster(tmp_path / "north.tif", boxes_scene(110, 190, BOXES))
    result = extract(raster, model_path)
    assert min(matched_iou(result.geometries, ground_boxes())) == pytest.approx(1.0)


@pytest.mark.parametrize("name, transform, flip", [
    ("south-up", Affine(0.5, 0, X0, 0, 0.5, Y0 - 55.0), lambda a: a[:, ::-1]),
    ("rotated 180", Affine(-0.5, 0, X0 + 95.0, 0, 0.5, Y0 - 55.0), lambda a: a[:, ::-1, ::-1]),
    ("rotated 90", Affine(0, 0.5, X0, 0.5, 0, Y0 - 55.0), lambda a: np.transpose(a, (0, 2, 1))[:, :, ::-1]),
])
def test_reoriented_rasters_give_the_north_up_polygons_exactly(tmp_path, model_path, name, transform, flip):
    north = extract(write_raster(tmp_path / "north.tif", boxes_scene(110, 190, BOXES)), model_path)
    data = np.ascontiguousarray(flip(boxes_scene(110, 190, BOXES)))
    other = write_raster(tmp_path / "other.tif", data, transform=transform)
    with rasterio.open(other) as check:   # the same ground: the corners agree
        assert shapely.box(*check.bounds).equals(shapely.box(X0, Y0 - 55.0, X0 + 95.0, Y0))
    result = extract(other, model_path)
    normal = lambda r: sorted(shapely.normalize(shapely.set_precision(g, 1e-6)).wkt  # noqa: E731
                              for g in r.geometries)
    assert normal(result) == normal(north)


def test_a_one_metre_raster_is_resampled_and_its_polygons_stay_on_the_buildings(tmp_path):
    # resampling goes through linear intensity and back: SN6 values must be real ones (<= 92), so
    # boxes of 90 on 40, and a threshold model cutting at 60 (normalisation mean 50, std 10)
    model_path = save_threshold_model(tmp_path / "sixty.pt", mean=(50.0,) * 4, std=(10.0,) * 4)
    boxes_1m = [(r0 // 2, c0 // 2, r1 // 2, c1 // 2) for r0, c0, r1, c1 in BOXES]
    data = np.where(boxes_scene(55, 95, boxes_1m) > 100, 90.0, 40.0).astype(np.float32)
    raster = write_raster(tmp_path / "one_metre.tif", data, transform=Affine(1.0, 0, X0, 0, -1.0, Y0))
    log = InfoLog()
    result = extract_footprints(raster, ExtractionOptions(model_path=str(model_path), simplify_m=0, flip_average=False,
                                                          tiling=TilingOptions(64, 16, 3)), log)
    assert any("resampled on the fly" in line and "factor 2" in line for line in log.lines)
    ious = matched_iou(result.geometries, ground_boxes(boxes_1m, 1.0))
    assert len(result) == len(BOXES) and min(ious) > 0.85


def test_a_raster_beyond_the_resolution_limit_is_refused_with_the_reason(tmp_path, model_path):
    pixel = 0.5 * MAX_COARSER * 1.5
    raster = write_raster(tmp_path / "coarse.tif", boxes_scene(64, 64, [(10, 10, 30, 30)]),
                          transform=Affine(pixel, 0, X0, 0, -pixel, Y0))
    with pytest.raises(RasterError, match=r"1\.5 m pixels, 3× the model's 0\.5 m"):
        extract(raster, model_path)


def test_an_east_looking_raster_is_turned_a_quarter_and_back(tmp_path, model_path):
    data = boxes_scene(110, 190, BOXES)
    plain = extract(write_raster(tmp_path / "n.tif", data), model_path)
    east = extract(write_raster(tmp_path / "e.tif", data, LOOK_DIRECTION="east"), model_path)
    assert sorted(g.wkt for g in east.geometries) == sorted(g.wkt for g in plain.geometries)


def test_zero_borders_are_nodata_by_default_and_values_with_the_switch(tmp_path):
    # a model for which dark is building: logit relu(-normalised band 1) - 3; 0 gives 4 - 3 > 0, the
    # scene's 60 (2.1 - 3) and 255 (0 - 3) do not
    model = threshold_model(cut=3.0)
    with torch.no_grad():
        model.conv1.weight[0, 0, 1, 1] = -1.0
    model_path = save_model(tmp_path / "dark.pt", model, ModelSettings(width=model.width, min_area_m2=1.0))
    data = boxes_scene(110, 190, BOXES)
    data[:, :, :8] = 0.0                                   # an undeclared zero border, 8 px wide
    raster = write_raster(tmp_path / "zeros.tif", data, nodata=None)
    assert extract(raster, model_path).geometries == []    # nodata: no phantom polygon
    kept = extract(raster, model_path, zero_is_nodata=False)
    assert len(kept) == 1 and kept.geometries[0].equals(shapely.box(X0, Y0 - 55.0, X0 + 4.0, Y0))
