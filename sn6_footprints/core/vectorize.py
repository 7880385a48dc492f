"""Probabilities -> building polygons, strip by strip.

Each strip is thresholded, its 4-connected blobs are labelled and polygonised with
``rasterio.features.shapes`` in pixel coordinates (exact integers), so blobs cut by a strip
border merge exactly; the geotransform is applied at the end, which places polygons on the
buildings whatever the transform (rotated, south-up, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage

from .feedback import Feedback, SubFeedback
from .postprocessing.outlines import REGULAR_TOLERANCE_M, regular_outline
from .reading.ground import ModelGrid, ground_vectors, scene_centre

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass
class Blob:
    """One building candidate in pixel space with what its confidence is made of."""

    polygon: shapely.Polygon
    pixels: int
    probability_sum: float
    touches_border: bool
    label: int = 0  # its label in its strip (instances are matched across strip borders by label)


@dataclass(frozen=True)
class VectorizeOptions:
    threshold: float = 0.5
    min_area_m2: float = 20.0
    simplify_m: float = 0.5
    strip_height_px: int = 1024
    grow_px: float = 0.0  # outward offset of every blob (the model's mask erosion), mitred corners
    outline: str = "traced"  # or "regular": orthogonal walls (postprocessing.outlines)
    # for regular outlines: pixel (column, row) -> ground metres (east, north) at the scene centre
    ground_frame: tuple[float, float, float, float] | None = None

    @classmethod
    def for_model(cls, settings, grid: ModelGrid, simplify_m: float, outline: str = "traced") -> "VectorizeOptions":
        """A model's threshold, minimum area and growth (its ``grow_m`` in the grid's pixels)."""
        grow_px = settings.grow_m / grid.pixel_size_m if settings.grow_m > 0 else 0.0
        frame = pixel_ground_frame(grid) if outline == "regular" else None
        return cls(settings.threshold, settings.min_area_m2, simplify_m, grow_px=grow_px, outline=outline,
                   ground_frame=frame)


def pixel_ground_frame(grid: ModelGrid) -> tuple[float, float, float, float]:
    """The linear map (a, b, d, e) from a pixel offset (column, row) to ground metres (east,
    north) at the grid's centre: right angles there are right angles on the ground."""
    t = grid.transform
    (ax, ay), (bx, by) = ground_vectors(grid.crs_wkt, scene_centre(t, grid.width, grid.height),
                                        [(t.a, t.d), (t.b, t.e)])
    return (ax, bx, ay, by)


def blobs_in_strip(probability: np.ndarray, row_offset: int, threshold: float,
                   top_is_border: bool, bottom_is_border: bool, min_box_px: float = 0.0,
                   grow_px: float = 0.0) -> list[Blob]:
    """The 4-connected blobs above ``threshold`` in one strip, in full-raster pixel coordinates.

    A blob inside the strip whose grown bounding box is under ``min_box_px`` cannot become a
    footprint (:func:`polygons_from_blobs` drops it by the same bound), so it is dropped here,
    before polygonising: speckle (a noisy model makes thousands of such blobs a strip) costs
    one label, not one polygon. Blobs on a strip border are kept: they may continue."""
    labels, count = ndimage.label(probability > threshold, structure=FOUR_CONNECTED)
    return blobs_from_labels(labels, count, probability, row_offset, top_is_border, bottom_is_border,
                             min_box_px, grow_px)


def blobs_from_labels(labels: np.ndarray, count: int, probability: np.ndarray, row_offset: int,
                      top_is_border: bool, bottom_is_border: bool, min_box_px: float = 0.0,
                      grow_px: float = 0.0) -> list[Blob]:
    """The blobs of a label image (1..count, 0 = background): 4-connected blobs of a threshold,
    or building instances split by a watershed; see :func:`blobs_in_strip`."""
    mask = labels > 0
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    pixels = ndimage.sum_labels(mask, labels, index)
    sums = ndimage.sum_labels(probability, labels, index)
    touches = np.zeros(count + 1, bool)
    if top_is_border:
        touches[labels[0]] = True
    if bottom_is_border:
        touches[labels[-1]] = True
    if min_box_px > 0:
        boxes = ndimage.find_objects(labels)
        grown = np.array([(b[0].stop - b[0].start + 2 * grow_px) * (b[1].stop - b[1].start + 2 * grow_px)
                          for b in boxes])
        keep = np.concatenate([[False], (grown >= min_box_px) | touches[1:]])
        mask = keep[labels]
    blobs = []
    for geometry, value in shapes(labels.astype(np.int32), mask=mask, connectivity=4,
                                  transform=Affine.translation(0, row_offset)):
        label = int(value)
        blobs.append(Blob(shapely.geometry.shape(geometry), int(pixels[label - 1]),
                          float(sums[label - 1]), bool(touches[label]), label))
    return blobs


def merge_across_strips(blobs: list[Blob]) -> list[Blob]:
    """Union blobs that share a strip border; pixel statistics add up."""
    inner = [b for b in blobs if not b.touches_border]
    edge = [b for b in blobs if b.touches_border]
    if not edge:
        return inner
    merged = shapely.unary_union([b.polygon for b in edge])
    parts = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
    tree = shapely.STRtree([b.polygon.representative_point() for b in edge])
    for part in parts:
        members = tree.query(part, predicate="contains")
        inner.append(Blob(part, sum(edge[i].pixels for i in members),
                          sum(edge[i].probability_sum for i in members), False))
    return inner


def grown_outline(polygon: shapely.Polygon, grow_px: float) -> shapely.Polygon:
    """A blob's outline, repaired and offset outward by ``grow_px`` (mitred, so the rectangle a
    model trained on eroded masks predicts grows back to the footprint's corners)."""
    polygon = polygon.buffer(0)
    if polygon.geom_type == "MultiPolygon":  # a repaired pinch: keep the body, a footprint is one polygon
        polygon = max(polygon.geoms, key=lambda part: part.area)
    if grow_px > 0:
        polygon = polygon.buffer(grow_px, join_style="mitre", mitre_limit=2.0)
    return polygon


def _grown_box_area(polygon: shapely.Polygon, grow_px: float) -> float:
    """An upper bound on a blob's grown area (its grown bounding box), so speckle-sized blobs
    are dropped before any geometry work."""
    x0, y0, x1, y1 = polygon.bounds
    return (x1 - x0 + 2 * grow_px) * (y1 - y0 + 2 * grow_px)


def _canonical(polygon: shapely.Polygon) -> shapely.Polygon:
    return shapely.normalize(shapely.normalize(polygon).simplify(1e-9, preserve_topology=False))


class BlobCollector:
    """The blobs of strips handed over top to bottom (blended rows as the engine finishes them,
    or strips read from a probability raster); merged across strip borders at the end."""

    def __init__(self, height: int, threshold: float, min_box_px: float = 0.0, grow_px: float = 0.0,
                 finish=None):
        self.height, self.threshold = height, threshold
        self.min_box_px, self.grow_px = min_box_px, grow_px  # see :func:`blobs_in_strip`
        # With ``finish`` (a blob -> finished footprint or None), a blob inside its strip is
        # finished at once (on the engine's sink thread, while the model runs); only blobs on a
        # strip border wait for the merge. Without it every blob is kept in ``blobs``.
        self.finish = finish
        self.blobs: list[Blob] = []
        self.finished: list = []

    @classmethod
    def for_options(cls, info: ModelGrid, options: "VectorizeOptions") -> "BlobCollector":
        return cls(info.height, options.threshold, options.min_area_m2 / info.pixel_area_m2, options.grow_px,
                   finish=lambda blob: finished_footprint(blob, info, options))

    def add_strip(self, probability: np.ndarray, top: int) -> None:
        bottom = top + probability.shape[0]
        blobs = blobs_in_strip(probability, top, self.threshold, top_is_border=top > 0,
                               bottom_is_border=bottom < self.height, min_box_px=self.min_box_px,
                               grow_px=self.grow_px)
        if self.finish is None:
            self.blobs += blobs
            return
        for blob in blobs:
            if blob.touches_border:
                self.blobs.append(blob)
            elif (record := self.finish(blob)) is not None:
                self.finished.append(record)

    def add(self, rows) -> None:
        """A :class:`~.engine.stream.BlendedRows` (0 where invalid, so nodata is never a building)."""
        self.add_strip(rows.probability, rows.top)

    def polygons(self, info: ModelGrid, options: "VectorizeOptions",
                 feedback: Feedback | None = None) -> tuple[list, dict[str, list]]:
        """Every footprint: those finished as strips came and the merged border blobs."""
        return polygons_from_blobs(self._border_blobs(), info, options, feedback, finished=self.finished)

    def _border_blobs(self) -> list[Blob]:
        """The blobs kept for the end (all of them without ``finish``), merged across strip borders."""
        return merge_across_strips(self.blobs)


class InstanceCollector(BlobCollector):
    """The building instances of a model with edge or contact outputs, split strip by strip by
    the marker-based watershed (:mod:`.postprocessing.instances`). An instance cut by a strip
    border joins the one across the border that shares at least half of the shorter of their
    two border runs: a building continues, while the two houses of a terrace, whose dividing
    line may shift by a pixel or two between strips, stay two."""

    BORDER_SHARE = 0.5

    def __init__(self, height: int, settings, min_box_px: float, grow_px: float, finish):
        super().__init__(height, settings.threshold, min_box_px, grow_px, finish)
        self.settings = settings
        self.border_rows: list[tuple[np.ndarray, np.ndarray]] = []  # per strip: its top and bottom label rows
        self.edge: list[dict[int, Blob]] = []                      # per strip: its blobs on a border, by label

    @classmethod
    def for_settings(cls, info: ModelGrid, options: "VectorizeOptions", settings) -> "InstanceCollector":
        return cls(info.height, settings, options.min_area_m2 / info.pixel_area_m2, options.grow_px,
                   finish=lambda blob: finished_footprint(blob, info, options))

    def add(self, rows) -> None:
        from .postprocessing.instances import split_model_outputs

        labels = split_model_outputs(rows.channels, self.settings)  # 0 where invalid: never a building
        top, bottom = rows.top, rows.top + labels.shape[0]
        blobs = blobs_from_labels(labels, int(labels.max(initial=0)), rows.probability, top, top > 0,
                                  bottom < self.height, self.min_box_px, self.grow_px)
        self.border_rows.append((labels[0].copy(), labels[-1].copy()))
        self.edge.append({blob.label: blob for blob in blobs if blob.touches_border})
        for blob in blobs:
            if not blob.touches_border and (record := self.finish(blob)) is not None:
                self.finished.append(record)

    def _border_blobs(self) -> list[Blob]:
        parent: dict[tuple[int, int], tuple[int, int]] = {}

        def find(key):
            while parent.get(key, key) != key:
                key = parent[key]
            return key

        for strip in range(len(self.border_rows) - 1):
            above, below = self.border_rows[strip][1], self.border_rows[strip + 1][0]
            both = (above > 0) & (below > 0)
            if not both.any():
                continue
            runs_above, runs_below = np.bincount(above), np.bincount(below)
            pairs, shared = np.unique(np.stack([above[both], below[both]]), axis=1, return_counts=True)
            for (a, b), n in zip(pairs.T, shared):
                if n >= self.BORDER_SHARE * min(runs_above[a], runs_below[b]):
                    parent[find((strip, int(a)))] = find((strip + 1, int(b)))
        groups: dict[tuple[int, int], list[Blob]] = {}
        for strip, blobs in enumerate(self.edge):
            for label, blob in blobs.items():
                groups.setdefault(find((strip, label)), []).append(blob)
        return [Blob(shapely.unary_union([m.polygon for m in members]), sum(m.pixels for m in members),
                     sum(m.probability_sum for m in members), False) for members in groups.values()]


def vectorize_probabilities(probability_path, info: ModelGrid, options: VectorizeOptions = VectorizeOptions(),
                            feedback: Feedback | None = None) -> tuple[list, dict[str, list]]:
    """(polygons in the raster's CRS, attribute columns id/area_m2/confidence) of a probability
    raster on the model grid, read strip by strip."""
    feedback = feedback or Feedback()
    collector = BlobCollector.for_options(info, options)
    with rasterio.open(probability_path) as dataset:
        for top in range(0, info.height, options.strip_height_px):
            feedback.check_cancelled()
            height = min(options.strip_height_px, info.height - top)
            collector.add_strip(dataset.read(1, window=Window(0, top, info.width, height)), top)
            feedback.set_progress(90.0 * (top + height) / info.height)
    feedback.check_cancelled()  # a cancel during the last strip is not lost
    return collector.polygons(info, options, SubFeedback(feedback, 90, 100))


def finished_footprint(blob: Blob, info: ModelGrid, options: VectorizeOptions):
    """One blob -> (sort key, polygon in the raster's CRS, area m², confidence), or None when its
    footprint is under the minimum area. Areas and the simplification tolerance are in metres
    on the ground (the grid's pixel size)."""
    min_pixels = options.min_area_m2 / info.pixel_area_m2
    if _grown_box_area(blob.polygon, options.grow_px) < min_pixels:
        return None
    polygon = grown_outline(blob.polygon, options.grow_px)
    if polygon.area < min_pixels:  # the size that counts is the footprint's, after growing
        return None
    # the same outline whatever the strips were: normalised (one start vertex, one
    # orientation) and without the collinear vertices that merging leaves on strip borders,
    # before and after the tolerance's simplification (whose result depends on both)
    polygon = _canonical(polygon)
    tolerance_px = options.simplify_m / info.pixel_size_m
    if options.outline == "regular":   # square on the ground; its own simplification, at least REGULAR_TOLERANCE_M
        frame = options.ground_frame or (info.pixel_size_m, 0.0, 0.0, -info.pixel_size_m)
        polygon = _canonical(regular_outline(polygon, max(options.simplify_m, REGULAR_TOLERANCE_M), frame=frame))
    elif tolerance_px > 0:
        polygon = _canonical(polygon.simplify(tolerance_px, preserve_topology=True))
    t = info.transform
    key = (blob.polygon.bounds[1], blob.polygon.bounds[0])
    return (key, shapely.affinity.affine_transform(polygon, [t.a, t.b, t.d, t.e, t.c, t.f]),
            round(polygon.area * info.pixel_area_m2, 3), round(blob.probability_sum / blob.pixels, 6))


def footprint_table(records: list) -> tuple[list, dict[str, list]]:
    """Finished footprints, top to bottom then left to right, numbered from 1."""
    records = sorted(records, key=lambda record: record[0])
    return ([r[1] for r in records], {"id": list(range(1, len(records) + 1)), "area_m2": [r[2] for r in records],
                                      "confidence": [r[3] for r in records]})


def polygons_from_blobs(blobs: list[Blob], info: ModelGrid, options: VectorizeOptions,
                        feedback: Feedback | None = None, finished=()) -> tuple[list, dict[str, list]]:
    """Merged blobs (plus footprints already ``finished`` from others) -> (polygons in the
    raster's CRS, attribute columns id/area_m2/confidence)."""
    feedback = feedback or Feedback()
    records = list(finished)
    for number, blob in enumerate(blobs):
        if number % 256 == 0:
            feedback.check_cancelled()
        if (record := finished_footprint(blob, info, options)) is not None:
            records.append(record)
    feedback.check_cancelled()
    feedback.set_progress(100.0)
    return footprint_table(records)
