"""The Precision option: what each choice runs in on this machine, and that reduced precision
stays close to float32 on a real model's forward pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sn6_footprints.core.devices import DeviceError, cpu_supports_bf16, resolve_device, resolve_precision
from sn6_footprints.core.engine.predictor import Predictor
from sn6_footprints.core.model import UNet11

CPU = resolve_device("cpu")


def test_auto_is_bfloat16_on_a_cpu_with_native_bf16_else_float32():
    assert resolve_precision(CPU, "auto") == (torch.bfloat16 if cpu_supports_bf16() else None, None)
    assert resolve_precision(CPU, "float32") == (None, None)
    assert resolve_precision(CPU, "FLOAT32")[0] is None


def test_bfloat16_on_the_cpu_is_noted_only_where_the_cpu_lacks_native_bf16():
    dtype, note = resolve_precision(CPU, "bfloat16")
    assert dtype is torch.bfloat16
    assert (note is None) is cpu_supports_bf16()
    if note is not None:
        assert "emulates" in note and "float32" in note


def test_float16_on_the_cpu_runs_with_a_note_that_it_is_emulated():
    dtype, note = resolve_precision(CPU, "float16")
    assert dtype is torch.float16 and "float16" in note


def test_an_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(DeviceError, match="auto, float32, bfloat16, float16"):
        resolve_precision(CPU, "int8")


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_runs_in_that_precision_and_stays_close_to_float32(precision):
    torch.manual_seed(0)
    model = UNet11(4, 1 / 8)
    batch = np.random.default_rng(1).normal(size=(2, 4, 64, 64)).astype(np.float32)
    exact = Predictor(model, CPU, precision="float32")(batch)
    reduced_predictor = Predictor(model, CPU, precision=precision)
    reduced = reduced_predictor(batch)
    assert reduced_predictor.autocast is getattr(torch, precision)
    assert reduced.dtype == np.float32 and reduced.shape == exact.shape
    difference = np.abs(reduced - exact)
    assert difference.max() > 0          # it really ran in reduced precision
    assert difference.mean() < 5e-3 and difference.max() < 5e-2


def test_the_precision_asked_for_is_what_the_extraction_runs_and_logs(tmp_path):
    from sn6_footprints.core.extract import ExtractionOptions, extract_footprints
    from tests.helpers.feedback import InfoLog
    from tests.helpers.models import boxes_scene, save_threshold_model, write_raster

    model = save_threshold_model(tmp_path / "threshold.pt")
    raster = write_raster(tmp_path / "r.tif", boxes_scene(96, 96, [(10, 10, 60, 70)]))
    auto = "bfloat16 autocast" if cpu_supports_bf16() else "float32)"
    for precision, said in (("float32", "float32)"), ("bfloat16", "bfloat16 autocast"), ("auto", auto)):
        log = InfoLog()
        result = extract_footprints(raster, ExtractionOptions(model_path=str(model), precision=precision), log)
        device_line = next(line for line in log.lines if line.startswith("Device:"))
        assert said in device_line and said in result.device
        assert len(result) == 1
        warned = any(line.startswith("Precision bfloat16") for line in log.warnings)
        assert warned is (precision == "bfloat16" and not cpu_supports_bf16())
