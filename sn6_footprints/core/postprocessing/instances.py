"""Marker-based watershed: touching buildings that one threshold merges become one instance each.

A footprint threshold gives one blob for a terrace of houses that share walls. An
instance-aware model also predicts each footprint's edge and the contact pixels between
touching footprints; their cores, body * (1 - contact) * (1 - edge), fall apart into one seed
per building, and scikit-image's watershed grows every seed back over the footprint mask.
The functions take plain arrays (a whole tile or a strip of a larger raster) and return a
label image; vectorising the labels is the caller's business.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from ..settings import CONTACT_OUTPUT, EDGE_OUTPUT, ModelSettings

# 4-connectivity, as the vectoriser's rasterio.features.shapes: a diagonal touch is two blobs.
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def split_instances(body: np.ndarray, edge: np.ndarray | None = None, contact: np.ndarray | None = None, *,
                    threshold: float, seed_threshold: float, min_seed_px: int) -> np.ndarray:
    """Building instances (int32 labels 1..n, 0 = background) from probability maps in [0, 1].

    ``body`` > ``threshold`` is the footprint mask, exactly today's threshold, so no pixel is
    gained or lost: the watershed only draws lines inside it. Seeds are 4-connected blobs of
    body * (1 - contact) * (1 - edge) > ``seed_threshold`` with at least ``min_seed_px`` pixels
    (smaller ones are noise that would cut a building in pieces). The seeds are flooded on the
    same core map, downhill from its peaks, so two buildings meet where the core is lowest:
    on the contact line. A mask blob without a seed stays one instance (a small or faint
    building is never dropped). NaN (nodata) is background. Without edge and contact the
    core is the body itself, which has no valleys to split on: the result is the threshold's.
    """
    body = _checked(body, "body")
    shape = body.shape
    core = np.nan_to_num(body, nan=0.0)
    for name, channel in ((EDGE_OUTPUT, edge), (CONTACT_OUTPUT, contact)):
        if channel is not None:
            channel = _checked(channel, name)
            if channel.shape != shape:
                raise ValueError(f"The {name} map is {channel.shape}, the body map {shape}: give maps of one window.")
            core = core * (1.0 - np.nan_to_num(channel, nan=1.0))
    if not 0 < threshold < 1 or not 0 < seed_threshold < 1:
        raise ValueError(f"Threshold {threshold} and seed threshold {seed_threshold} must be above 0 and below 1.")
    if min_seed_px < 0:
        raise ValueError(f"Minimum seed size {min_seed_px} px must be 0 or more.")

    with np.errstate(invalid="ignore"):
        mask = body > threshold
    seeds, count = ndimage.label(mask & (core > seed_threshold), structure=FOUR_CONNECTED)
    markers = _large_enough(seeds, count, min_seed_px)
    markers = _seed_unseeded_blobs(mask, markers)
    if not markers.any():
        return markers
    return watershed(-core, markers, mask=mask, connectivity=1).astype(np.int32, copy=False)


def split_model_outputs(probabilities: np.ndarray, settings: ModelSettings) -> np.ndarray:
    """Instances from a model's probability maps ``(channels, h, w)``, named and parametrised
    by its settings (outputs, threshold, seed threshold, minimum seed area on its pixel grid)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] != settings.out_channels:
        raise ValueError(f"Probabilities of shape {probabilities.shape} do not match the model's "
                         f"{settings.out_channels} output(s) ({', '.join(settings.outputs)}).")

    def channel(name: str) -> np.ndarray | None:
        index = settings.output_index(name)
        return None if index is None else probabilities[index]

    return split_instances(probabilities[0], channel(EDGE_OUTPUT), channel(CONTACT_OUTPUT),
                           threshold=settings.threshold, seed_threshold=settings.seed_threshold,
                           min_seed_px=min_seed_px(settings.min_seed_area_m2, settings.pixel_size_m))


def min_seed_px(min_seed_area_m2: float, pixel_size_m: float) -> int:
    """The smallest seed in pixels for an area in m² (rounded up: a seed never counts for more)."""
    return max(0, math.ceil(min_seed_area_m2 / (pixel_size_m * pixel_size_m) - 1e-9))


def _checked(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"The {name} map must be 2-D (rows, columns), not of shape {array.shape}.")
    return array.astype(np.float32, copy=False)


def _large_enough(seeds: np.ndarray, count: int, min_px: int) -> np.ndarray:
    """The seed labels with blobs under ``min_px`` pixels removed, renumbered 1..n."""
    sizes = np.bincount(seeds.ravel(), minlength=count + 1)
    keep = sizes >= min_px
    keep[0] = False
    renumber = np.zeros(count + 1, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return renumber[seeds]


def _seed_unseeded_blobs(mask: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Markers plus every mask blob that holds no seed, whole, as a marker of its own: the
    watershed only floods from markers, and would leave such a blob unlabelled (lost)."""
    blobs, count = ndimage.label(mask, structure=FOUR_CONNECTED)
    if count == 0:
        return markers
    seeded = np.zeros(count + 1, bool)
    seeded[blobs[markers > 0]] = True
    seeded[0] = True
    unseeded = np.flatnonzero(~seeded)
    if unseeded.size == 0:
        return markers
    renumber = np.zeros(count + 1, np.int32)
    first = int(markers.max()) + 1
    renumber[unseeded] = np.arange(first, first + unseeded.size, dtype=np.int32)
    extra = renumber[blobs]
    return np.where(extra > 0, extra, markers).astype(np.int32, copy=False)
