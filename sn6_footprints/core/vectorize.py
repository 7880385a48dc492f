"""Probabilities -> building polygons, strip by strip.

Each strip is thresholded, its 4-connected blobs are labelled and polygonised with
``rasterio.features.shapes`` in pixel coordinates (exact integers), so blobs cut by a strip
border merge exactly; the geotransform is applied at the end, which places polygons on the
buildings whatever the transform (rotated, south-up, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from scipy.cluster.hierarchy import DisjointSet

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


def _bounding_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """(count + 1, 4) rows (first row, last row, first column, last column) of every label
    (-1 for an absent one); one sort instead of scipy's find_objects, which made a slice
    pair per label and cost half a second a strip on a speckled mask of 200,000 labels."""
    boxes = np.full((count + 1, 4), -1, np.int64)
    flat = np.flatnonzero(labels)
    if flat.size == 0:
        return boxes
    values = labels.ravel()[flat]
    order = np.argsort(values, kind="stable")
    values, flat = values[order], flat[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    rows, columns = np.divmod(flat, labels.shape[1])
    boxes[values[starts]] = np.stack([np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts),
                                      np.minimum.reduceat(columns, starts),
                                      np.maximum.reduceat(columns, starts)], axis=1)
    return boxes


def blobs_from_labels(labels: np.ndarray, count: int, probability: np.ndarray, row_offset: int,
                      top_is_border: bool, bottom_is_border: bool, min_box_px: float = 0.0,
                      grow_px: float = 0.0) -> list[Blob]:
    """The blobs of a label image (1..count, 0 = background) of one strip, in full-raster pixel
    coordinates: 4-connected blobs of a threshold, or building instances split by a watershed.

    A blob inside the strip whose grown bounding box is under ``min_box_px`` cannot become a
    footprint (:func:`finished_footprint` drops it by the same bound), so it is dropped here,
    before polygonising: speckle (a noisy model makes thousands of such blobs a strip) costs
    one label, not one polygon. Blobs on a strip border are kept: they may continue."""
    if count == 0:
        return []
    mask = labels > 0
    flat = labels.ravel()   # label statistics by bincount: scipy's sum_labels took twice as long
    pixels = np.bincount(flat, minlength=count + 1)[1:]
    sums = np.bincount(flat, weights=probability.ravel(), minlength=count + 1)[1:]
    touches = np.zeros(count + 1, bool)
    if top_is_border:
        touches[labels[0]] = True
    if bottom_is_border:
        touches[labels[-1]] = True
    if min_box_px > 0:
        boxes = _bounding_boxes(labels, count)
        grown = (boxes[:, 1] - boxes[:, 0] + 1 + 2 * grow_px) * (boxes[:, 3] - boxes[:, 2] + 1 + 2 * grow_px)
        keep = (grown >= min_box_px) | touches
        keep[0] = False
        mask = keep[labels]
    blobs = []
    for geometry, value in shapes(labels.astype(np.int32), mask=mask, connectivity=4,
                                  transform=Affine.translation(0, row_offset)):
        label = int(value)
        blobs.append(Blob(shapely.geometry.shape(geometry), int(pixels[label - 1]),
                          float(sums[label - 1]), bool(touches[label]), label))
    return blobs


def merged_blob(members: list[Blob]) -> Blob:
    """The pieces of one blob (or instance) cut by strip borders as one: their union, pixel
    statistics added up."""
    if len(members) == 1:
        return replace(members[0], touches_border=False)
    return Blob(shapely.unary_union([m.polygon for m in members]), sum(m.pixels for m in members),
                sum(m.probability_sum for m in members), False)


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
    or strips read from a probability raster). A blob inside its strip is finished at once (on
    the engine's sink thread, while the model runs); a blob on a strip border waits only for
    the next strip, where it either continues (its pieces join) or not: what is kept between
    strips is the open blobs on one border, so memory follows the raster's width, never its
    height."""

    # Pieces that share a column across the border join: 4-connected pixels are one blob.
    BORDER_SHARE = 0.0

    def __init__(self, height: int, threshold: float, min_box_px: float = 0.0, grow_px: float = 0.0, *,
                 finish):
        self.height, self.threshold = height, threshold
        self.min_box_px, self.grow_px = min_box_px, grow_px  # see :func:`blobs_from_labels`
        self.finish = finish              # a blob -> finished footprint, or None (under the minimum area)
        self.finished: list = []
        self.open: dict[int, list[Blob]] = {}  # pieces of blobs that reach the latest strip's bottom border
        self._open_label: dict[int, int] = {}  # a label on that border -> its entry in ``open``
        self._bottom_row: np.ndarray | None = None

    @classmethod
    def for_options(cls, info: ModelGrid, options: "VectorizeOptions") -> "BlobCollector":
        return cls(info.height, options.threshold, options.min_area_m2 / info.pixel_area_m2, options.grow_px,
                   finish=lambda blob: finished_footprint(blob, info, options))

    def add_strip(self, probability: np.ndarray, top: int) -> None:
        labels, count = ndimage.label(probability > self.threshold, structure=FOUR_CONNECTED)
        self.add_labels(labels, count, probability, top)

    def add(self, rows) -> None:
        """A :class:`~.engine.stream.BlendedRows` (0 where invalid, so nodata is never a building)."""
        self.add_strip(rows.probability, rows.top)

    def add_labels(self, labels: np.ndarray, count: int, probability: np.ndarray, top: int) -> None:
        """The next strip's blobs as a label image; those inside it are finished, those on the
        border with the previous strip join the pieces they continue."""
        bottom = top + labels.shape[0]
        top_is_border, bottom_is_border = top > 0, bottom < self.height
        blobs = blobs_from_labels(labels, count, probability, top, top_is_border, bottom_is_border,
                                  self.min_box_px, self.grow_px)
        # pieces of one blob: the open groups ("open", n) and this strip's border blobs ("new", label)
        pieces = DisjointSet([("open", number) for number in self.open]
                             + [("new", blob.label) for blob in blobs if blob.touches_border])
        if top_is_border and self._bottom_row is not None:
            for above, below in self._continuing(self._bottom_row, labels[0]):
                pieces.merge(("open", self._open_label[above]), ("new", below))
        groups: dict[tuple[str, int], list[Blob]] = {}
        for number, members in self.open.items():
            groups.setdefault(pieces[("open", number)], []).extend(members)
        for blob in blobs:
            if blob.touches_border:
                groups.setdefault(pieces[("new", blob.label)], []).append(blob)
            else:
                self._finish(blob)
        on_bottom_in: dict[tuple[str, int], list[int]] = {}
        for label in (np.unique(labels[-1]).tolist() if bottom_is_border else []):
            if label:
                on_bottom_in.setdefault(pieces[("new", label)], []).append(label)
        self.open, self._open_label = {}, {}
        for root, members in groups.items():
            if root not in on_bottom_in:
                self._finish(merged_blob(members))
                continue
            number = len(self.open)
            self.open[number] = members
            self._open_label.update(dict.fromkeys(on_bottom_in[root], number))
        self._bottom_row = labels[-1].copy() if bottom_is_border else None

    def _continuing(self, above: np.ndarray, below: np.ndarray) -> list[tuple[int, int]]:
        """(label above, label below) of the pieces that continue across a border."""
        both = (above > 0) & (below > 0)
        if not both.any():
            return []
        pairs, shared = np.unique(np.stack([above[both], below[both]]), axis=1, return_counts=True)
        runs_above, runs_below = np.bincount(above), np.bincount(below)
        return [(int(a), int(b)) for (a, b), n in zip(pairs.T, shared)
                if n >= self.BORDER_SHARE * min(runs_above[a], runs_below[b])]

    def _finish(self, blob: Blob) -> None:
        if (record := self.finish(blob)) is not None:
            self.finished.append(record)

    def polygons(self, info: ModelGrid, options: "VectorizeOptions",
                 feedback: Feedback | None = None) -> tuple[list, dict[str, list]]:
        """Every footprint: those finished as strips came, and any still open (a caller that
        stopped before the last strip)."""
        remaining = [merged_blob(members) for members in self.open.values()]
        return polygons_from_blobs(remaining, info, options, feedback, finished=self.finished)


class InstanceCollector(BlobCollector):
    """The building instances of a model with edge or contact outputs, split strip by strip by
    the marker-based watershed (:mod:`.postprocessing.instances`). An instance cut by a strip
    border joins the one across the border that shares at least half of the shorter of their
    two border runs: a building continues, while the two houses of a terrace, whose dividing
    line may shift by a pixel or two between strips, stay two."""

    BORDER_SHARE = 0.5

    def __init__(self, height: int, settings, min_box_px: float, grow_px: float, finish):
        super().__init__(height, settings.threshold, min_box_px, grow_px, finish=finish)
        self.settings = settings

    @classmethod
    def for_settings(cls, info: ModelGrid, options: "VectorizeOptions", settings) -> "InstanceCollector":
        return cls(info.height, settings, options.min_area_m2 / info.pixel_area_m2, options.grow_px,
                   finish=lambda blob: finished_footprint(blob, info, options))

    def add(self, rows) -> None:
        from .postprocessing.instances import split_model_outputs

        labels = split_model_outputs(rows.channels, self.settings)  # 0 where invalid: never a building
        self.add_labels(labels, int(labels.max(initial=0)), rows.probability, rows.top)


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
