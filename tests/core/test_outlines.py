"""Regular outlines: straight walls and right angles on the ground, no building lost or moved."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
import shapely
from shapely import affinity

from sn6_footprints.core.extract import ExtractionOptions, extract_footprints, score_extraction
from sn6_footprints.core.postprocessing.outlines import (MIN_IOU, dominant_angle, regular_outline, right_angle_share,
                                                         vertices_per_building)
from sn6_footprints.core.simulation import simulate_scene
from sn6_footprints.core.validation import ValidationError, validate_extraction
from sn6_footprints.core.vector_io import read_footprints


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def traced(polygon: shapely.Polygon, size: int = 96) -> shapely.Polygon:
    """The pixel staircase a threshold would give for ``polygon`` (pixel units)."""
    mask = rasterio.features.rasterize([polygon], out_shape=(size, size)).astype(np.uint8)
    return max((shapely.geometry.shape(g) for g, v in rasterio.features.shapes(mask) if v == 1), key=lambda p: p.area)


L_SHAPE = affinity.translate(affinity.rotate(shapely.Polygon([(0, 0), (40, 0), (40, 15), (15, 15), (15, 30), (0, 30)]),
                                             20, origin=(0, 0)), 20, 5)


def test_a_traced_rotated_l_becomes_six_straight_walls_with_right_angles_on_the_building():
    staircase = traced(L_SHAPE)
    assert len(staircase.exterior.coords) > 50
    regular = regular_outline(staircase, tolerance=2.0)
    assert len(regular.exterior.coords) - 1 == 6
    assert right_angle_share([regular], tolerance_deg=1.0) == 1.0
    assert iou(regular, L_SHAPE) > 0.92 and iou(regular, staircase) >= MIN_IOU
    assert abs(dominant_angle(staircase.simplify(2.0)) - 20.0) < 3.0


def test_a_shape_that_is_no_building_keeps_its_traced_outline():
    triangle = shapely.Polygon([(0, 0), (30, 0), (0, 30)])   # its best box overlaps it by IoU 0.5
    assert regular_outline(triangle, tolerance=1.0).equals(triangle)
    assert regular_outline(shapely.Polygon(), tolerance=1.0).is_empty


def test_walls_are_square_on_the_ground_not_in_skewed_pixel_units():
    # pixels whose column and row steps are 84 degrees apart on the ground: a ground rectangle
    # is a parallelogram in pixel units, and must come back as one
    frame = (0.5, 0.1, 0.05, -0.5)                     # (column, row) -> (east, north) metres
    a, b, d, e = frame
    det = a * e - b * d
    to_pixels = [e / det, -b / det, -d / det, a / det, 0, 0]
    ground_box = shapely.box(10, -30, 25, -20)
    in_pixels = affinity.affine_transform(ground_box, to_pixels)
    noisy = in_pixels.buffer(0.3, join_style="mitre").simplify(0.05)
    regular = regular_outline(noisy, tolerance=0.5, frame=frame)
    on_ground = affinity.affine_transform(regular, [a, b, d, e, 0, 0])
    assert right_angle_share([on_ground], tolerance_deg=1.0) == 1.0
    assert right_angle_share([regular], tolerance_deg=1.0) < 1.0  # not square in pixel units
    assert iou(on_ground, ground_box) > 0.9


def test_shape_figures_count_corners_and_vertices():
    box = shapely.box(0, 0, 4, 2)
    square_turned = shapely.Polygon([(0, 0), (4, 1), (3, 5), (-1, 4)])     # a square at 14 degrees
    assert right_angle_share([box]) == 1.0 and vertices_per_building([box]) == 4
    assert right_angle_share([shapely.Polygon([(0, 0), (4, 0), (2, 3)])]) == 0.0
    assert right_angle_share([box, square_turned]) == pytest.approx(1.0)
    assert vertices_per_building([]) == 0.0


def test_extraction_with_regular_outlines_keeps_every_building_and_squares_its_corners(tmp_path):
    """The bundled model on a simulated scene it never saw."""
    raster, labels = tmp_path / "scene.tif", tmp_path / "truth.gpkg"
    simulate_scene(raster, labels, width_px=512, height_px=512, seed=31)
    truth = read_footprints(labels).geometries
    results = {outline: extract_footprints(raster, ExtractionOptions(device="cpu", outline=outline))
               for outline in ("traced", "regular")}
    traced_result, regular_result = results["traced"], results["regular"]
    assert len(regular_result) == len(traced_result) > 20
    assert right_angle_share(regular_result.geometries) > 0.95 > right_angle_share(traced_result.geometries)
    assert vertices_per_building(regular_result.geometries) < vertices_per_building(traced_result.geometries)
    f1 = {name: score_extraction(result, truth).f1 for name, result in results.items()}
    assert f1["regular"] >= f1["traced"] - 0.03, f1
    for before, after in zip(traced_result.geometries, regular_result.geometries):
        assert iou(before, after) >= MIN_IOU - 0.05   # the same building, in its place


def test_an_unknown_outline_style_and_regular_with_the_exact_preset_are_refused(tmp_path):
    raster = tmp_path / "scene.tif"
    simulate_scene(raster, None, width_px=512, height_px=512, seed=32)
    with pytest.raises(ValidationError, match="Outline style square is not known; use one of traced, regular"):
        validate_extraction(raster, tmp_path / "out.gpkg", outline="square")
    with pytest.raises(ValidationError, match="set Outline style to traced"):
        validate_extraction(raster, tmp_path / "out.gpkg", preset="sn6-exact",
                            outline="regular")
    validate_extraction(raster, tmp_path / "out.gpkg", outline="regular")
