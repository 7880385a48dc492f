"""Output channels: an instance-aware UNet11 (body, edge, contact) saves and loads with its
metadata, while the bare SN6 file and the bundled model load and run exactly as before."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace

import numpy as np
import pytest
import torch

from sn6_footprints.core.bundled import bundled_model_path
from sn6_footprints.core.feedback import Feedback
from sn6_footprints.core.model import UNet11
from sn6_footprints.core.settings import ModelSettings
from sn6_footprints.core.training import NEW_OUTPUT_PRIOR, TrainingData, TrainingOptions, train_model, with_outputs
from sn6_footprints.core.weights import WeightsError, inspect_model, load_model, save_model
from tests.conftest import REPO_ROOT
from tests.core.test_model_and_weights import sn6_baseline_state_dict
from tests.core.test_training import write_labels
from tests.helpers.models import boxes_scene, threshold_model, write_raster

INSTANCE_OUTPUTS = ("body", "edge", "contact")


def probe(height: int = 64, width: int = 96) -> torch.Tensor:
    """A fixed, non-trivial normalised input (no random generator: the same on every machine)."""
    return torch.sin(torch.linspace(-2, 2, 4 * height * width).reshape(1, 4, height, width) * 7.0) * 2.0


def instance_settings(**changes) -> ModelSettings:
    return replace(ModelSettings(width=0.125, outputs=INSTANCE_OUTPUTS, seed_threshold=0.65, min_seed_area_m2=3.0,
                                 description="tiny instance model"), **changes)


def test_extra_output_channels_widen_only_the_final_layer():
    default, three = UNet11(width=0.25), UNet11(width=0.25, out_channels=3)
    assert default.final.weight.shape == (1, 8, 1, 1) and three.final.weight.shape == (3, 8, 1, 1)
    assert default.state_dict().keys() == three.state_dict().keys() and len(default.state_dict()) == 56
    with torch.no_grad():
        assert three(torch.zeros(1, 4, 64, 64)).shape == (1, 3, 64, 64)


def test_multi_output_checkpoint_round_trips_with_its_metadata(tmp_path):
    torch.manual_seed(3)
    model = UNet11(width=0.125, out_channels=3).eval()
    settings = instance_settings()
    path = save_model(tmp_path / "instances.pt", model, settings)
    loaded, loaded_settings = load_model(path)
    assert loaded_settings == settings == inspect_model(path)
    assert loaded_settings.outputs == INSTANCE_OUTPUTS and loaded_settings.splits_instances
    assert (loaded_settings.seed_threshold, loaded_settings.min_seed_area_m2) == (0.65, 3.0)
    assert loaded.out_channels == 3 and loaded_settings.output_index("contact") == 2
    with torch.no_grad():
        # same weights, so the same logits; not bit for bit: oneDNN may pick another kernel for
        # another module object once earlier tests have run (seen in the full suite)
        torch.testing.assert_close(loaded(probe()), model(probe()), rtol=1e-5, atol=1e-6)
    metadata = torch.load(path, weights_only=True)["metadata"]
    assert metadata["outputs"] == list(INSTANCE_OUTPUTS) and metadata["seed_threshold"] == 0.65


def test_a_checkpoint_saved_before_outputs_existed_loads_as_one_building_channel(tmp_path):
    model = UNet11(width=0.125)
    save_model(tmp_path / "new.pt", model, ModelSettings(width=0.125, threshold=0.6))
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    for key in ("outputs", "seed_threshold", "min_seed_area_m2"):
        del payload["metadata"][key]
    torch.save(payload, tmp_path / "old.pt")
    _, settings = load_model(tmp_path / "old.pt")
    assert settings.outputs == ("building",) and not settings.splits_instances and settings.threshold == 0.6
    assert "outputs" not in settings.extra


def test_several_channels_without_metadata_are_refused_not_guessed(tmp_path):
    state = UNet11(width=0.125, out_channels=3).state_dict()
    torch.save(state, tmp_path / "bare3.pt")
    for read in (load_model, inspect_model):
        with pytest.raises(WeightsError, match="final layer has 3 output channels but the file has no metadata"):
            read(tmp_path / "bare3.pt")


def test_metadata_naming_more_outputs_than_the_final_layer_has_is_refused(tmp_path):
    save_model(tmp_path / "one.pt", UNet11(width=0.125), ModelSettings(width=0.125))
    payload = torch.load(tmp_path / "one.pt", weights_only=True)
    payload["metadata"]["outputs"] = list(INSTANCE_OUTPUTS)
    torch.save(payload, tmp_path / "lying.pt")
    with pytest.raises(WeightsError, match=r"names 3 output\(s\) \(body, edge, contact\) but its final layer has 1"):
        load_model(tmp_path / "lying.pt")
    with pytest.raises(WeightsError, match="give ModelSettings the model's outputs"):
        save_model(tmp_path / "x.pt", UNet11(width=0.125), instance_settings())


@pytest.mark.parametrize("outputs, problem", [
    (("edge", "body"), "first output is 'edge'"),
    (("body", "roof"), "'roof' are unknown"),
    (("body", "edge", "edge"), "name a channel twice"),
    (("building", "body"), "name a channel twice"),
    ((), "must name at least one channel"),
])
def test_unusable_output_names_are_refused_with_the_reason(tmp_path, outputs, problem):
    model = UNet11(width=0.125, out_channels=max(1, len(outputs)))
    save_model(tmp_path / "m.pt", model, instance_settings(outputs=outputs or ("body",)))
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["metadata"]["outputs"] = list(outputs)
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(WeightsError, match=problem):
        load_model(tmp_path / "m.pt")


def test_seed_threshold_outside_zero_one_is_refused(tmp_path):
    save_model(tmp_path / "m.pt", UNet11(width=0.125, out_channels=3), instance_settings(seed_threshold=1.5))
    with pytest.raises(WeightsError, match="seed threshold 1.5 must be above 0 and below 1"):
        load_model(tmp_path / "m.pt")


def test_bare_sn6_state_dict_loads_as_one_building_channel_with_unchanged_logits(tmp_path):
    state = sn6_baseline_state_dict()
    torch.save(state, tmp_path / "best_epoch19.model", _use_new_zipfile_serialization=False)
    model, settings = load_model(tmp_path / "best_epoch19.model")
    assert settings.outputs == ("building",) and model.out_channels == 1
    reference = UNet11()
    reference.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(model(probe(32, 32)), reference.eval()(probe(32, 32)))


# The previous bundled model (one footprint channel, four looks; git history, commit 8818498)
# and its logits on probe(), computed with UNet11 as it was before output channels existed
# (git show f6920e2:sn6_footprints/core/model.py, float32 on the CPU).
PREVIOUS_BUNDLED_COMMIT = "8818498"
PREVIOUS_PROBE_MEAN, PREVIOUS_PROBE_STD = -16.56902503967285, 4.703820705413818
PREVIOUS_PROBE_PIXELS = {(0, 0): -4.084510326385498, (31, 47): -23.00702476501465, (63, 95): -3.7593021392822266}


@pytest.fixture(scope="module")
def previous_bundled_model(tmp_path_factory):
    """The file the bundled model replaced, from this clone's git history."""
    import shutil
    import subprocess  # nosec B404 - git, on this repository

    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the previous bundled model lives in the history")
    path = tmp_path_factory.mktemp("previous") / "previous-bundled.pt"
    with open(path, "wb") as out:
        shown = subprocess.run([git, "-C", str(REPO_ROOT), "show",  # nosec B603
                                f"{PREVIOUS_BUNDLED_COMMIT}:sn6_footprints/models/sn6_sim_unet11_w025.pt"],
                               stdout=out, stderr=subprocess.PIPE)
    if shown.returncode:
        pytest.skip(f"commit {PREVIOUS_BUNDLED_COMMIT} is not in this clone (shallow?): "
                    f"{shown.stderr.decode(errors='replace').strip()[:120]}")
    return path


def test_previous_bundled_model_loads_as_one_building_channel_and_gives_the_logits_it_gave_before(
        previous_bundled_model):
    model, settings = load_model(previous_bundled_model)
    assert settings.outputs == ("building",) and not settings.splits_instances and model.out_channels == 1
    assert settings.threshold == 0.6 and settings.flip_average
    with torch.no_grad():
        logits = model(probe())
    assert logits.shape == (1, 1, 64, 96)
    assert logits.mean().item() == pytest.approx(PREVIOUS_PROBE_MEAN, rel=1e-4)
    assert logits.std().item() == pytest.approx(PREVIOUS_PROBE_STD, rel=1e-4)
    for (row, col), value in PREVIOUS_PROBE_PIXELS.items():
        assert logits[0, 0, row, col].item() == pytest.approx(value, rel=1e-4, abs=1e-4)


def test_bundled_model_is_instance_aware_and_its_footprint_channel_is_the_previous_models_exactly(
        previous_bundled_model):
    """Only the edge and contact channels were trained (train_only_new_outputs): without its
    watershed the bundled model gives the previous model's footprints."""
    model, settings = load_model(bundled_model_path())
    assert settings.outputs == INSTANCE_OUTPUTS and settings.splits_instances and model.out_channels == 3
    previous, _ = load_model(previous_bundled_model)
    with torch.no_grad():
        assert torch.equal(model(probe())[:, :1], previous(probe()))
    for name, value in previous.state_dict().items():
        if not name.startswith("final."):
            assert torch.equal(model.state_dict()[name], value), name


# ---------------------------------------------------------------- training the extra channels

def _pair_scene(folder):
    """Two buildings sharing a wall at column 40 and one alone, on a 128 px box scene."""
    boxes = [(20, 10, 44, 40), (20, 40, 44, 70), (60, 10, 80, 40)]
    return write_raster(folder / "pair.tif", boxes_scene(128, 128, boxes)), write_labels(folder / "pair.gpkg", boxes)


def test_training_targets_hold_the_mask_an_edge_band_and_the_contact_between_touching_buildings(tmp_path):
    raster, labels = _pair_scene(tmp_path)
    options = TrainingOptions(width=1 / 16, tile_size_px=64, validation_share=0.25, label_erosion_m=0.0)
    with ExitStack() as stack:
        plain = TrainingData.open([raster], [labels], options, None, stack).regions[0]
        region = TrainingData.open([raster], [labels], replace(options, outputs=INSTANCE_OUTPUTS), None,
                                   stack).regions[0]
        windowed = TrainingData.open([raster], [labels], replace(options, outputs=INSTANCE_OUTPUTS,
                                                                 cache_limit_mb=0), None, stack).regions[0]
        body, edge, contact = region.mask
        assert plain.mask.shape == body.shape and (body == plain.mask).all()  # the footprint target is today's
        assert edge[32, 10:12].all() and not edge[32, 12:38].any() and edge[32, 38:42].all()  # 2 px along outlines
        assert not edge[32, 42:68].any() and edge[32, 68:70].all()
        assert edge[60:62, 10:40].all() and not edge[64:76, 14:36].any()
        assert contact[20:44, 39:41].all() and contact.sum() == 2 * 24  # the shared wall's two columns only
        assert np.array_equal(windowed.read(8, 16, 64, 64)[1], region.read(8, 16, 64, 64)[1])


def test_one_epoch_trains_a_three_output_model_and_saves_its_outputs(tmp_path):
    raster, labels = _pair_scene(tmp_path)
    options = TrainingOptions(width=1 / 16, tile_size_px=64, batch_size=2, epochs=1, steps_per_epoch=2,
                              learning_rate=1e-3, validation_share=0, outputs=INSTANCE_OUTPUTS)
    result = train_model([raster], [labels], tmp_path / "instances.pt", options)
    assert np.isfinite(result.history[0].loss)
    model, settings = load_model(tmp_path / "instances.pt")
    assert settings.outputs == INSTANCE_OUTPUTS and model.out_channels == 3 and settings.splits_instances
    assert settings.extra["edge_width_px"] == 2
    with pytest.raises(ValueError, match="first output is 'edge'"):
        train_model([raster], [labels], tmp_path / "x.pt", replace(options, outputs=("edge", "body")))


def test_a_one_channel_initial_model_gains_extra_channels_and_keeps_its_footprint_logits():
    model = threshold_model()
    widened = with_outputs(model, ModelSettings(width=model.width), INSTANCE_OUTPUTS, Feedback())
    assert widened.out_channels == 3
    with torch.no_grad():
        assert torch.equal(widened(probe())[:, :1], model(probe()))
        # the new channels start silent, at the rare-class prior, whatever the input
        new = torch.sigmoid(widened(probe())[:, 1:])
    assert torch.allclose(new, torch.full_like(new, NEW_OUTPUT_PRIOR), atol=1e-6)


def test_training_only_the_new_outputs_keeps_the_footprint_channel_exactly(tmp_path):
    """Fine-tuning a one-channel model with train_only_new_outputs: its footprint logits are
    the initial model's to the bit (weight decay included), while the new channels learn."""
    raster, labels = _pair_scene(tmp_path)
    initial = save_model(tmp_path / "one.pt", threshold_model(width=1 / 16), ModelSettings(width=1 / 16))
    options = TrainingOptions(width=1 / 16, tile_size_px=64, batch_size=2, epochs=1, steps_per_epoch=3,
                              learning_rate=1e-2, validation_share=0, outputs=INSTANCE_OUTPUTS,
                              initial_model=str(initial), train_only_new_outputs=True)
    train_model([raster], [labels], tmp_path / "heads.pt", options)
    before, _ = load_model(initial)
    after, settings = load_model(tmp_path / "heads.pt")
    assert settings.outputs == INSTANCE_OUTPUTS
    with torch.no_grad():
        assert torch.equal(after(probe())[:, :1], before(probe()))
        new = torch.sigmoid(after(probe())[:, 1:])
    assert not torch.allclose(new, torch.full_like(new, NEW_OUTPUT_PRIOR), atol=1e-3)  # the heads moved
    for name, value in before.state_dict().items():
        if not name.startswith("final."):
            assert torch.equal(after.state_dict()[name], value), name
    with pytest.raises(ValueError, match="needs an instance-aware model"):
        train_model([raster], [labels], tmp_path / "x.pt", replace(options, outputs=("building",)))


def test_fine_tuning_an_instance_model_keeps_its_outputs_unless_one_channel_is_asked_for(tmp_path):
    """The bundled model is instance-aware: fine-tuning it with the default outputs gives an
    instance-aware model again; asking for one channel keeps its footprint (body) channel."""
    raster, labels = _pair_scene(tmp_path)
    initial = tmp_path / "instance.pt"
    save_model(initial, with_outputs(threshold_model(width=1 / 16), ModelSettings(width=1 / 16), INSTANCE_OUTPUTS,
                                     Feedback()), ModelSettings(width=1 / 16, outputs=INSTANCE_OUTPUTS))
    options = TrainingOptions(width=1 / 16, tile_size_px=64, batch_size=2, epochs=1, steps_per_epoch=1,
                              learning_rate=1e-9, validation_share=0, initial_model=str(initial))
    assert options.outputs is None  # the default: the initial model's
    train_model([raster], [labels], tmp_path / "again.pt", options)
    assert load_model(tmp_path / "again.pt")[1].outputs == INSTANCE_OUTPUTS
    train_model([raster], [labels], tmp_path / "one.pt", replace(options, outputs=("building",)))
    one, settings = load_model(tmp_path / "one.pt")
    assert settings.outputs == ("building",) and one.out_channels == 1
    narrowed = with_outputs(load_model(initial)[0], load_model(initial)[1], ("building",), Feedback())
    with torch.no_grad():
        assert torch.equal(narrowed(probe()), load_model(initial)[0](probe())[:, :1])
    # from scratch, the default is one footprint channel
    train_model([raster], [labels], tmp_path / "scratch.pt", replace(options, initial_model=None))
    assert load_model(tmp_path / "scratch.pt")[1].outputs == ("building",)
