"""UNet11 layout and checkpoint loading: the SN6 baseline file must load unchanged."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from sn6_footprints.core.model import UNet11
from sn6_footprints.core.settings import ModelSettings
from sn6_footprints.core.weights import WeightsError, load_model, save_model

# REFERENCE.md §2: the baseline checkpoint's keys and shapes.
SN6_ENCODER_SHAPES = {0: (64, 4, 3, 3), 3: (128, 64, 3, 3), 6: (256, 128, 3, 3), 8: (256, 256, 3, 3),
                      11: (512, 256, 3, 3), 13: (512, 512, 3, 3), 16: (512, 512, 3, 3), 18: (512, 512, 3, 3)}
SN6_ALIASES = {"conv1": 0, "conv2": 3, "conv3s": 6, "conv3": 8, "conv4s": 11, "conv4": 13, "conv5s": 16, "conv5": 18}
SN6_DECODER_SHAPES = {
    "center.block.0.conv": (512, 512, 3, 3), "center.block.1": (512, 256, 3, 3),
    "dec5.block.0.conv": (512, 768, 3, 3), "dec5.block.1": (512, 256, 3, 3),
    "dec4.block.0.conv": (512, 768, 3, 3), "dec4.block.1": (512, 128, 3, 3),
    "dec3.block.0.conv": (256, 384, 3, 3), "dec3.block.1": (256, 64, 3, 3),
    "dec2.block.0.conv": (128, 192, 3, 3), "dec2.block.1": (128, 32, 3, 3),
    "dec1.conv": (32, 96, 3, 3), "final": (1, 32, 1, 1),
}


def sn6_baseline_state_dict() -> OrderedDict:
    """Random tensors under exactly the baseline file's 56 keys and shapes, written from the
    reference, not from our model."""
    generator = torch.Generator().manual_seed(0)
    state = OrderedDict()

    def add(prefix, shape):
        state[f"{prefix}.weight"] = torch.randn(shape, generator=generator) * 0.01
        bias_len = shape[1] if prefix.endswith("block.1") else shape[0]  # ConvTranspose: (in, out, k, k)
        state[f"{prefix}.bias"] = torch.randn(bias_len, generator=generator) * 0.01

    for index, shape in SN6_ENCODER_SHAPES.items():
        add(f"encoder.{index}", shape)
    for alias, index in SN6_ALIASES.items():
        state[f"{alias}.weight"] = state[f"encoder.{index}.weight"]
        state[f"{alias}.bias"] = state[f"encoder.{index}.bias"]
    for prefix, shape in SN6_DECODER_SHAPES.items():
        add(prefix, shape)
    return state


def test_baseline_architecture_has_the_published_size():
    model = UNet11()
    assert sum(p.numel() for p in model.parameters()) == 22_927_969
    assert len(model.state_dict()) == 56


def test_sn6_baseline_legacy_checkpoint_loads_strictly_with_sn6_defaults(tmp_path):
    state = sn6_baseline_state_dict()
    assert len(state) == 56
    path = tmp_path / "best_epoch19_0.6000000238418579.model"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    model, settings = load_model(path)
    assert settings == ModelSettings()  # bare file: SN6 baseline settings
    assert settings.mean == (127.5,) * 4 and settings.std == (31.875,) * 4 and settings.threshold == 0.5
    assert torch.equal(model.state_dict()["dec3.block.1.weight"], state["dec3.block.1.weight"])
    with torch.no_grad():
        assert model(torch.zeros(1, 4, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("wrap", ["module_prefix", "state_dict_key"])
def test_wrapped_baseline_checkpoints_load(tmp_path, wrap):
    state = sn6_baseline_state_dict()
    payload = (OrderedDict((f"module.{k}", v) for k, v in state.items()) if wrap == "module_prefix"
               else {"state_dict": state, "epoch": 19})
    torch.save(payload, tmp_path / "w.pt")
    model, _ = load_model(tmp_path / "w.pt")
    assert torch.equal(model.state_dict()["final.weight"], state["final.weight"])


def test_mismatched_checkpoint_lists_missing_unexpected_and_shape_problems(tmp_path):
    state = sn6_baseline_state_dict()
    del state["final.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["dec1.conv.weight"] = torch.zeros(32, 95, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as error:
        load_model(tmp_path / "bad.pt")
    message = str(error.value)
    assert "missing keys (1): final.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "dec1.conv.weight: file (32, 95, 3, 3) vs model (32, 96, 3, 3)" in message
    assert len(message.splitlines()) <= 6


def test_not_a_checkpoint_and_truncated_files_are_clear_errors(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(WeightsError, match="could not be read as a PyTorch checkpoint"):
        load_model(tmp_path / "text.pt")
    torch.save(sn6_baseline_state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="Is the file complete"):
        load_model(tmp_path / "cut.pt")


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_that_start_like_a_pickle_are_damaged_not_objects(tmp_path, seed):
    """1 random file in 256 starts with the pickle opcode 0x80: it is a damaged file, not one
    holding Python objects (a flaky CI run once said the latter)."""
    body = np.random.default_rng(seed).integers(0, 256, 4094, dtype=np.uint8).tobytes()
    (tmp_path / "noise.pt").write_bytes(bytes([0x80, 2 + seed]) + body)
    with pytest.raises(WeightsError, match="could not be read as a PyTorch checkpoint: its pickle stream is damaged"):
        load_model(tmp_path / "noise.pt")


def test_legacy_pickle_of_a_function_is_refused_as_a_python_object(tmp_path):
    torch.save({"state_dict": len}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"not a plain weights file: it holds a pickled Python object \(\w*\.?len\)"):
        load_model(tmp_path / "legacy.pt")


def test_pickled_whole_model_is_refused_without_running_it(tmp_path):
    torch.save(UNet11(width=1 / 16), tmp_path / "whole.pt")
    with pytest.raises(WeightsError, match="not a plain weights file"):
        load_model(tmp_path / "whole.pt")


def test_metadata_round_trips_and_sets_width_and_bands(tmp_path):
    settings = ModelSettings(width=0.25, threshold=0.4, rotate_180=True, description="tiny").with_bands(2)
    save_model(tmp_path / "m.pt", UNet11(in_channels=2, width=0.25), settings)
    model, loaded = load_model(tmp_path / "m.pt")
    assert loaded == settings and model.in_channels == 2 and model.encoder[0].out_channels == 16
