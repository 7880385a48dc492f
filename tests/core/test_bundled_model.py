"""The bundled default model finds buildings on simulated scenes it never saw, and clearly
more of them than the non-learned span baseline.

Its pooled held-out F1 on 8 scenes per set is in sn6_footprints/models/MODEL_CARD.md; these
tests assert floors on the first scene of every set, so a change that makes the model or the
extraction worse fails.
"""
from __future__ import annotations

import pytest

from sn6_footprints.core.bundled import bundled_model_path
from sn6_footprints.core.extract import ExtractionOptions, extract_footprints, score_extraction
from sn6_footprints.core.heldout import TRAINING_SEEDS, make_heldout_scenes
from sn6_footprints.core.span_baseline import extract_span_baseline
from sn6_footprints.core.vector_io import read_footprints
from sn6_footprints.core.weights import load_model

# Floors on the first scene of each set, about 0.02 below what the instance-aware bundled model
# scores there with Auto tiles (0.859, 0.932, 0.853, 0.846, 0.765, 0.835, 0.794, 0.821; float32,
# MODEL_CARD.md) for platform noise (bf16 on CPUs that have it), and never below the floors of the
# file it replaced (0.85 default, 0.70 single-look and 45°, 0.66 dense, 0.75 east-west) but north:
# its first scene is 0.859 (0.876 before), while the pooled north set rose from 0.821 to 0.845.
F1_FLOOR = {"default-north": 0.84, "default-south": 0.90, "single-look": 0.83, "incidence-45": 0.82,
            "dense": 0.74, "east-west": 0.81, "density-2": 0.77, "nodata-edge": 0.80}


def test_bundled_model_is_small_and_carries_its_metadata():
    path = bundled_model_path()
    assert path.stat().st_size < 10 * 1024 * 1024
    _, settings = load_model(path)
    assert settings.band_names == ("HH", "HV", "VH", "VV") and settings.look_direction == "north"
    assert settings.width == 0.25 and "simulated" in settings.description
    assert settings.outputs == ("body", "edge", "contact") and settings.splits_instances  # watershed
    assert settings.threshold == 0.55 and settings.seed_threshold == 0.3  # calibrated on training-range seeds
    assert settings.grow_m == 1.5      # trained on footprints shrunk by 1.5 m, grown back at extraction
    assert settings.flip_average       # calibration chose averaging with a flipped copy
    trained_on = settings.extra["training_rasters"]
    assert trained_on and all(int(name.split("_")[1].split(".")[0]) in TRAINING_SEEDS for name in trained_on)


@pytest.mark.parametrize("set_name", sorted(F1_FLOOR))
def test_bundled_model_finds_buildings_on_a_held_out_scene_far_better_than_the_span_baseline(set_name,
                                                                                             tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "heldout"
    (_, raster, labels), = make_heldout_scenes(folder, sets=[set_name], size_px=1024, scenes_per_set=1)
    model = extract_footprints(raster, ExtractionOptions(device="cpu"))
    truth = read_footprints(labels, target_crs=model.crs_wkt).geometries
    model_score = score_extraction(model, truth)
    baseline_score = score_extraction(extract_span_baseline(raster), truth)
    assert model_score.f1 >= F1_FLOOR[set_name], (model_score.tp, model_score.fp, model_score.fn)
    assert model_score.f1 >= 1.8 * baseline_score.f1
    assert model_score.precision >= 0.5
