"""Loading and saving checkpoints, apart from the architecture.

Accepted: the bare SN6 baseline state_dict (legacy or zip serialisation), the same with a
``module.`` prefix (saved from DataParallel), ``{"state_dict": ...}`` wrappers, and this
project's own format ``{"format": ..., "state_dict": ..., "metadata": {...}}``. Files are
read with ``weights_only=True``: a checkpoint can never run code.

The model's output channels are named by the metadata's ``outputs`` (``ModelSettings``); a
file without it has the one "building" channel. A file whose final layer has several channels
but no metadata is refused rather than guessed at: the channel order (body, edge, contact or
another) is not in the tensors, and a wrong guess would split or merge buildings silently.
"""
from __future__ import annotations

import math
import os
import pickle  # only for UnpicklingError; files are read with weights_only=True  # nosec B403
import re
import tempfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch

from .model import UNet11
from .settings import FOOTPRINT_OUTPUTS, KNOWN_OUTPUTS, ModelSettings

CHECKPOINT_FORMAT = "sn6_footprints/1"
VGG11_FIRST_WIDTH = 64
_MAX_LISTED = 6


class WeightsError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


TORCH_ZIP_MAGIC = b"PK\x03\x04"   # torch.save's default (zip) format
PICKLE_PROTOCOL_OPCODE = 0x80     # the legacy format starts with a pickle of protocol 2 or above
CHECKPOINT_FIX = ("Choose a checkpoint saved with torch.save (.pt/.pth/.model), or leave the model empty "
                  "for the bundled model.")


def _short(exc: BaseException) -> str:
    """The first sentence of an exception's message, without torch's advice that follows it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".")[:160]


# What torch's weights-only unpickler says when a file pickles Python objects (classes, functions)
# rather than tensors; any other complaint ("Unsupported operand 95") means a damaged stream,
# as random bytes that happen to start with a pickle's first opcode give.
PYTHON_OBJECT_REFUSAL = re.compile(r"GLOBAL|allowlist|add_safe_globals")


def _weights_only_reason(exc: BaseException) -> str:
    """The unpickler's own complaint, without torch's advice around it."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
    return found.group(1).strip().splitlines()[0][:120] if found else _short(exc)


def _refused_pickle(path: Path, exc: BaseException) -> WeightsError:
    """torch's weights-only refusal in our words: never its advice to load unsafely."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"a pickled Python object ({found.group(1)})" if found else "pickled data other than tensors"
    return WeightsError(
        f"{path.name} is not a plain weights file: it holds {what}, which is not loaded (nothing in it was "
        "run). Save the model's state_dict (torch.save(model.state_dict(), path)) and use that file.")


def _read(path: Path, lazy: bool = False):
    """The unpickled checkpoint (tensors only). ``lazy``: map a zip-format file's tensors
    instead of reading them (for a look at its metadata)."""
    if path.is_dir():
        raise WeightsError(f"Model file {path} is a folder, not a checkpoint. {CHECKPOINT_FIX}")
    if not path.is_file():
        raise WeightsError(f"Model file not found: {path}. Choose an existing checkpoint "
                           "(.pt/.pth/.model) or leave the parameter empty for the bundled model.")
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError as exc:
        raise WeightsError(f"Model file {path} cannot be read ({exc.strerror or exc}). {CHECKPOINT_FIX}") from exc
    is_zip = head == TORCH_ZIP_MAGIC
    if not is_zip and (len(head) < 2 or head[0] != PICKLE_PROTOCOL_OPCODE):
        raise WeightsError(f"{path.name} could not be read as a PyTorch checkpoint: it is neither a zip-format "
                           f"nor a legacy torch.save file. {CHECKPOINT_FIX}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=lazy and is_zip)
    except pickle.UnpicklingError as exc:
        if PYTHON_OBJECT_REFUSAL.search(str(exc)):
            raise _refused_pickle(path, exc) from None
        raise WeightsError(f"{path.name} could not be read as a PyTorch checkpoint: its pickle stream is damaged "
                           f"({_weights_only_reason(exc)}). Is the file complete? Copy it again or choose another "
                           "checkpoint.") from None
    except Exception as exc:  # truncated or damaged files  # noqa: BLE001 - reworded, never passed on raw
        raise WeightsError(f"{path.name} could not be read as a PyTorch checkpoint ({type(exc).__name__}: "
                           f"{_short(exc)}). Is the file complete? Copy it again or choose another "
                           "checkpoint.") from None


def _unwrap(payload) -> tuple[dict, dict | None]:
    """(state_dict, metadata or None) from any accepted layout."""
    if not isinstance(payload, dict):
        raise WeightsError("The checkpoint holds a "
                           f"{type(payload).__name__}, not a state_dict. Save model.state_dict().")
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    state = OrderedDict()
    for key, value in payload.items():
        if not torch.is_tensor(value):
            raise WeightsError(f"Entry {key!r} of the checkpoint is not a tensor: not a state_dict.")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state, metadata


def _describe_mismatch(model: torch.nn.Module, state: dict) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            lines.append(f"{title} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{more}")
    return "; ".join(lines)


def settings_from_state(state: dict, metadata: dict | None) -> ModelSettings:
    """Metadata if the file has it, else SN6 baseline settings with width/bands read off
    the first convolution (so a bare baseline file needs nothing more)."""
    if metadata:
        try:
            return ModelSettings.from_dict(metadata)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"The checkpoint's metadata cannot be read ({exc}). Re-save it with "
                               "'Train footprint model' or use the bare state_dict.") from None
    settings = ModelSettings()
    first = state.get("encoder.0.weight")
    if first is not None and first.ndim == 4:
        settings = replace(settings, width=first.shape[0] / VGG11_FIRST_WIDTH).with_bands(first.shape[1])
    channels = final_channels(state)
    if channels not in (None, settings.out_channels):
        raise WeightsError(
            f"The checkpoint's final layer has {channels} output channels but the file has no metadata naming "
            "them (which is the footprint, which the edge or contact). Save it with save_model and "
            f"ModelSettings(outputs=...), e.g. outputs=('body', 'edge', 'contact'), or use a one-channel model.")
    return settings


def final_channels(state: dict) -> int | None:
    """The number of output channels of a state_dict's final 1x1 convolution (None if absent)."""
    final = state.get("final.weight")
    return int(final.shape[0]) if final is not None and final.ndim == 4 else None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def settings_problem(settings: ModelSettings) -> str | None:
    """What makes a checkpoint's settings unusable (one phrase), or None when they are sane."""
    if settings.architecture != "UNet11":
        return f"it is a {settings.architecture!r} model; only UNet11 is supported"
    width = _number(settings.width)
    if width is None or width <= 0:
        return f"width {settings.width!r} must be a number above 0"
    if settings.bands < 1:
        return "it names no bands"
    for key in ("mean", "std"):
        values = getattr(settings, key)
        if len(values) != settings.bands:
            return f"{len(values)} {key} value(s) for {settings.bands} band(s)"
    for name, mean, std in zip(settings.band_names, settings.mean, settings.std):
        if _number(mean) is None:
            return f"the normalisation mean of band {name} is {mean!r}, not a finite number"
        if _number(std) is None or float(std) <= 0:
            return f"the normalisation std of band {name} is {std!r}; it must be above 0"
    threshold = _number(settings.threshold)
    if threshold is None or not 0 < threshold < 1:
        return f"threshold {settings.threshold!r} must be above 0 and below 1"
    pixel = _number(settings.pixel_size_m)
    if pixel is None or pixel <= 0:
        return f"pixel size {settings.pixel_size_m!r} m must be above 0"
    for key in ("min_area_m2", "grow_m", "min_seed_area_m2"):
        value = _number(getattr(settings, key))
        if value is None or value < 0:
            return f"{key} {getattr(settings, key)!r} must be 0 or more"
    return outputs_problem(settings)


def outputs_problem(settings: ModelSettings) -> str | None:
    """What is wrong with the output names and the watershed parameters, or None."""
    outputs = settings.outputs
    if not outputs or not all(isinstance(name, str) for name in outputs):
        return f"its outputs {outputs!r} must name at least one channel"
    if outputs[0] not in FOOTPRINT_OUTPUTS:
        return (f"its first output is {outputs[0]!r}; the first channel must be the footprint "
                f"({' or '.join(FOOTPRINT_OUTPUTS)})")
    unknown = [name for name in outputs if name not in KNOWN_OUTPUTS]
    if unknown:
        return f"output(s) {', '.join(map(repr, unknown))} are unknown (known: {', '.join(KNOWN_OUTPUTS)})"
    if len(set(outputs)) != len(outputs) or sum(name in FOOTPRINT_OUTPUTS for name in outputs) > 1:
        return f"its outputs {', '.join(outputs)} name a channel twice"
    seed = _number(settings.seed_threshold)
    if seed is None or not 0 < seed < 1:
        return f"seed threshold {settings.seed_threshold!r} must be above 0 and below 1"
    return None


def check_settings(settings: ModelSettings, name: str) -> None:
    """Refuse a checkpoint whose metadata would silently give a wrong result."""
    problem = settings_problem(settings)
    if problem:
        raise WeightsError(f"{name} cannot be used: {problem}. Fix the checkpoint's metadata (re-save it with "
                           "'Train footprint model') or choose another model.")


def inspect_model(path: str | os.PathLike) -> ModelSettings:
    """The settings of a checkpoint, checked, without building the model (tensors are mapped,
    not read, for zip-format files): the cheap look that validation takes first."""
    path = Path(path)
    state, metadata = _unwrap(_read(path, lazy=True))
    settings = settings_from_state(state, metadata)
    check_settings(settings, path.name)
    check_outputs(state, settings, path.name)
    return settings


def check_outputs(state: dict, settings: ModelSettings, name: str) -> None:
    """Refuse metadata that names more or fewer outputs than the final layer has: the
    shape-mismatch report would say the same less plainly."""
    channels = final_channels(state)
    if channels is not None and channels != settings.out_channels:
        raise WeightsError(
            f"{name} cannot be used: its metadata names {settings.out_channels} output(s) "
            f"({', '.join(settings.outputs)}) but its final layer has {channels} channel(s). Fix the "
            "metadata's outputs (re-save it with save_model) or choose another model.")


def load_model(path: str | os.PathLike) -> tuple[UNet11, ModelSettings]:
    """The model in eval mode on the CPU, and its settings."""
    path = Path(path)
    state, metadata = _unwrap(_read(path))
    settings = settings_from_state(state, metadata)
    check_settings(settings, path.name)
    check_outputs(state, settings, path.name)
    model = UNet11(in_channels=settings.bands, width=settings.width, out_channels=settings.out_channels)
    report = _describe_mismatch(model, state)
    if report:
        raise WeightsError(
            f"{path.name} does not match UNet11 (width {settings.width:g}, {settings.bands} bands, "
            f"{settings.out_channels} output(s)): "
            f"{report}. Use a TernausNet UNet11 checkpoint such as the SN6 baseline weights or one "
            "written by 'Train footprint model'.")
    model.load_state_dict(state, strict=True)
    return model.eval(), settings


def save_model(path: str | os.PathLike, model: UNet11, settings: ModelSettings) -> Path:
    """Write a checkpoint with metadata, atomically (never a half-written file)."""
    channels = getattr(model, "out_channels", 1)
    if channels != settings.out_channels:
        raise WeightsError(f"The model has {channels} output channel(s) but its settings name "
                           f"{settings.out_channels} ({', '.join(settings.outputs)}): give ModelSettings the "
                           "model's outputs before saving.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "metadata": settings.to_dict()}
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(payload, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then a rename: readers never see
    a half-written file, and a crash leaves the previous file intact."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is for every user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
