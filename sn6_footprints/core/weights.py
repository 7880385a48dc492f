"""Loading and saving checkpoints, apart from the architecture.

Accepted: the bare SN6 baseline state_dict (legacy or zip serialisation), the same with a
``module.`` prefix (saved from DataParallel), ``{"state_dict": ...}`` wrappers, and this
project's own format ``{"format": ..., "state_dict": ..., "metadata": {...}}``. Files are
read with ``weights_only=True``: a checkpoint can never run code.
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
from .settings import ModelSettings

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
    return settings


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
    for key in ("min_area_m2", "grow_m"):
        value = _number(getattr(settings, key))
        if value is None or value < 0:
            return f"{key} {getattr(settings, key)!r} must be 0 or more"
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
    return settings


def load_model(path: str | os.PathLike) -> tuple[UNet11, ModelSettings]:
    """The model in eval mode on the CPU, and its settings."""
    path = Path(path)
    state, metadata = _unwrap(_read(path))
    settings = settings_from_state(state, metadata)
    check_settings(settings, path.name)
    model = UNet11(in_channels=settings.bands, width=settings.width)
    report = _describe_mismatch(model, state)
    if report:
        raise WeightsError(
            f"{path.name} does not match UNet11 (width {settings.width:g}, {settings.bands} bands): "
            f"{report}. Use a TernausNet UNet11 checkpoint such as the SN6 baseline weights or one "
            "written by 'Train footprint model'.")
    model.load_state_dict(state, strict=True)
    return model.eval(), settings


def save_model(path: str | os.PathLike, model: UNet11, settings: ModelSettings) -> Path:
    """Write a checkpoint with metadata, atomically (never a half-written file)."""
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
