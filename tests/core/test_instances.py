"""Marker-based watershed: touching buildings that a threshold merges come apart, and no
building pixel is gained or lost on the way."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sn6_footprints.core.postprocessing.instances import min_seed_px, split_instances, split_model_outputs
from sn6_footprints.core.settings import ModelSettings

THRESHOLD, SEED_THRESHOLD, MIN_SEED_PX = 0.5, 0.7, 20
SHAPE = (40, 56)
# Two houses sharing a wall at column 24 (rows, cols as slices), and their union.
LEFT = (slice(8, 30), slice(6, 24))
RIGHT = (slice(8, 30), slice(24, 46))


def rectangle(where, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[where] = True
    return mask


def body_map(*rectangles, inside=0.95, outside=0.03) -> np.ndarray:
    """A model's footprint probability: high on every rectangle, softened at the outline."""
    union = np.logical_or.reduce([rectangle(r) for r in rectangles])
    return ndimage.uniform_filter(np.where(union, inside, outside).astype(np.float32), size=3)


def contact_map() -> np.ndarray:
    """High on the two columns either side of the shared wall, low elsewhere."""
    contact = np.full(SHAPE, 0.02, np.float32)
    contact[8:30, 23:25] = 0.9
    return contact


def edge_map(*rectangles) -> np.ndarray:
    """A one-pixel band on each rectangle's outline (the shared wall included)."""
    edge = np.full(SHAPE, 0.02, np.float32)
    for where in rectangles:
        mask = rectangle(where)
        edge[mask & ~ndimage.binary_erosion(mask)] = 0.8
    return edge


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def split(body, edge=None, contact=None, **kwargs):
    params = dict(threshold=THRESHOLD, seed_threshold=SEED_THRESHOLD, min_seed_px=MIN_SEED_PX) | kwargs
    labels = split_instances(body, edge, contact, **params)
    assert labels.dtype == np.int32 and labels.shape == body.shape
    assert np.array_equal(labels > 0, body > params["threshold"])  # the mask, exactly: no pixel lost or gained
    return labels


@pytest.mark.parametrize("with_edge", [False, True])
def test_watershed_splits_two_touching_rectangles_that_a_threshold_merges(with_edge):
    body = body_map(LEFT, RIGHT)
    _, merged = ndimage.label(body > THRESHOLD)
    assert merged == 1
    labels = split(body, edge_map(LEFT, RIGHT) if with_edge else None, contact_map())
    assert sorted(np.unique(labels)) == [0, 1, 2]
    for where in (LEFT, RIGHT):
        truth = rectangle(where)
        best = max(iou(labels == label, truth) for label in (1, 2))
        assert best > 0.8, best
    assert labels[20, 10] != labels[20, 40]


def test_without_contact_or_edge_touching_rectangles_stay_one_building():
    labels = split(body_map(LEFT, RIGHT))
    assert sorted(np.unique(labels)) == [0, 1]


def test_a_blob_without_a_seed_stays_one_instance():
    """Faint (below the seed threshold) or with seeds too small: kept, one instance each."""
    body = body_map(LEFT)
    body[2:6, 48:54] = 0.6               # faint: no seed pixel at all
    small = np.zeros(SHAPE, bool)
    small[32:38, 48:54] = True           # 36 px above the mask, only a 2x2 core above the seed threshold
    body[small] = 0.6
    body[34:36, 50:52] = 0.9
    labels = split(body, contact=contact_map() * 0)
    assert len(np.unique(labels)) == 4   # background, the house, the faint blob, the small-seeded one
    assert len(np.unique(labels[small])) == 1 and len(np.unique(labels[2:6, 48:54])) == 1


def test_seeds_under_the_minimum_size_do_not_cut_a_building():
    body = body_map(LEFT, RIGHT)
    contact = contact_map()
    assert len(np.unique(split(body, contact=contact, min_seed_px=500))) == 2  # both seeds too small: one blob
    assert len(np.unique(split(body, contact=contact, min_seed_px=300))) == 3  # seeds of 320 and 400 px


def test_nodata_is_background_and_a_strip_gives_the_same_instances_as_the_whole_window():
    body = body_map(LEFT, RIGHT)
    contact = contact_map()
    body[0:4, :] = np.nan
    contact[:, 0:2] = np.nan
    whole = split(body, contact=contact)
    assert (whole[0:4] == 0).all()
    strip = split(body[4:34], contact=contact[4:34])   # rows of a larger raster, buildings inside it
    assert np.array_equal(strip > 0, whole[4:34] > 0)
    assert all(len(np.unique(whole[4:34][strip == label])) == 1 for label in (1, 2))


def test_empty_maps_give_no_instances():
    assert not split(np.zeros(SHAPE, np.float32), contact=np.zeros(SHAPE, np.float32)).any()


def test_maps_of_different_windows_are_refused():
    with pytest.raises(ValueError, match="contact map is"):
        split_instances(np.zeros((4, 4)), None, np.zeros((4, 5)), threshold=0.5, seed_threshold=0.7, min_seed_px=1)
    with pytest.raises(ValueError, match="must be 2-D"):
        split_instances(np.zeros((1, 4, 4)), threshold=0.5, seed_threshold=0.7, min_seed_px=1)


def test_model_outputs_are_split_by_their_names_and_the_settings_parameters():
    settings = ModelSettings(outputs=("body", "contact", "edge"), seed_threshold=SEED_THRESHOLD,
                             min_seed_area_m2=5.0, pixel_size_m=0.5)
    assert min_seed_px(settings.min_seed_area_m2, settings.pixel_size_m) == 20
    stacked = np.stack([body_map(LEFT, RIGHT), contact_map(), edge_map(LEFT, RIGHT)])
    assert len(np.unique(split_model_outputs(stacked, settings))) == 3
    swapped = np.stack([stacked[0], stacked[2], stacked[1]])  # the same maps named the other way round
    assert np.array_equal(split_model_outputs(swapped, ModelSettings(outputs=("body", "edge", "contact"))),
                          split_model_outputs(stacked, settings))
    with pytest.raises(ValueError, match="do not match the model's 3 output"):
        split_model_outputs(stacked[:2], settings)


def one_watershed_over_the_window(body, core, threshold, seed_threshold, min_px):
    """The reference: every seed (and every seedless blob, whole) flooded by one skimage
    watershed over the whole window, numbered as split_instances numbers them."""
    from skimage.segmentation import watershed

    mask = body > threshold
    seeds, count = ndimage.label(mask & (core > seed_threshold))
    sizes = np.bincount(seeds.ravel(), minlength=count + 1)
    kept = np.flatnonzero(sizes >= min_px)
    kept = kept[kept > 0]
    markers = np.zeros_like(seeds)
    for number, label in enumerate(kept, start=1):
        markers[seeds == label] = number
    blobs, blob_count = ndimage.label(mask)
    next_label = len(kept) + 1
    for blob in range(1, blob_count + 1):
        if not markers[blobs == blob].any():
            markers[blobs == blob] = next_label
            next_label += 1
    return watershed(-core, markers, mask=mask, connectivity=1)


@pytest.mark.parametrize("seed", range(6))
def test_flooding_only_blobs_with_several_seeds_gives_the_labels_of_one_watershed_over_the_window(seed):
    rng = np.random.default_rng(seed)
    shape = (96, 128)
    body = ndimage.gaussian_filter(rng.random(shape), 3)
    body = ((body - body.min()) / np.ptp(body)).astype(np.float32)
    contact = ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)
    contact = (contact - contact.min()) / np.ptp(contact)
    core = body * (1 - contact)
    labels = split(body, contact=contact, threshold=0.45, seed_threshold=0.3, min_seed_px=4)
    reference = one_watershed_over_the_window(body, core, 0.45, 0.3, 4)
    assert len(np.unique(reference)) - 1 > ndimage.label(body > 0.45)[1]   # blobs split into several buildings
    assert np.array_equal(labels, reference)
