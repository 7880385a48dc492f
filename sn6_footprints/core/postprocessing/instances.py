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
    blobs, blob_count = ndimage.label(mask, structure=FOUR_CONNECTED)
    return _flooded(blobs, blob_count, markers, core)


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


def _flooded(blobs: np.ndarray, blob_count: int, markers: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The instances: the watershed from ``markers`` downhill on ``core``, inside the mask blobs
    (``blobs``, 4-connected labels 1..blob_count). A blob holding one seed is that seed's
    instance whole and a blob holding none one more instance (the watershed only floods from
    markers and would lose it), so the flood runs only on the blobs with two seeds or more,
    cropped to them: the same labels as one watershed over the window (it floods every blob
    on its own, in raster order). On a 2,048² city scene the flood took a third of the time
    and the whole split half (0.25 s -> 0.13 s)."""
    instances = np.zeros(blobs.shape, np.int32)
    if blob_count == 0:
        return instances
    seeded = markers > 0
    marker_count = int(markers.max(initial=0))
    blob_of_marker = np.zeros(marker_count + 1, np.int64)
    blob_of_marker[markers[seeded]] = blobs[seeded]     # a seed lies inside one blob
    seeds_per_blob = np.bincount(blob_of_marker[1:], minlength=blob_count + 1)
    seeds_per_blob[0] = 0
    label_of_blob = np.zeros(blob_count + 1, np.int32)
    owners = blob_of_marker[1:]
    lone = seeds_per_blob[owners] == 1
    label_of_blob[owners[lone]] = np.flatnonzero(lone).astype(np.int32) + 1
    unseeded = np.flatnonzero(seeds_per_blob == 0)[1:]  # label 0 is the background
    label_of_blob[unseeded] = np.arange(marker_count + 1, marker_count + 1 + unseeded.size, dtype=np.int32)
    instances[:] = label_of_blob[blobs]
    if not (seeds_per_blob >= 2).any():
        return instances
    flooded = (seeds_per_blob >= 2)[blobs]
    rows, columns = np.flatnonzero(flooded.any(axis=1)), np.flatnonzero(flooded.any(axis=0))
    crop = np.s_[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    region = flooded[crop]
    grown = watershed(-core[crop], np.where(region, markers[crop], 0), mask=region, connectivity=1)
    instances[crop][region] = grown[region]
    return instances
