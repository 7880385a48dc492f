"""Loading and saving checkpoints, apart from the architecture.

Accepted: the bare SN6 baseline state_dict (legacy or zip serialisation), the same with a
``module.`` prefix (saved from DataParallel), ``{"state_dict": ...}`` wrappers, and this
project's own format ``{"format": ..., "state_dict": ..., "metadata": {...}}``. Files are
read with ``weights_only=True``: a checkpoint can never run code.
"""
from __future__ import annotations

import os
import pickle  # only for UnpicklingError; files are read with weights_only=True  # nosec B403
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


def _read(path: Path):
    if not path.is_file():
        raise WeightsError(f"Model file not found: {path}. Choose an existing checkpoint "
                           "(.pt/.pth/.model) or leave the parameter empty for the bundled model.")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path.name} is not a plain weights file ({str(exc).splitlines()[0]}). Save the "
            "model's state_dict (torch.save(model.state_dict(), path)) and use that file.") from exc
    except Exception as exc:  # truncated files, not a torch file at all
        raise WeightsError(f"{path.name} could not be read as a PyTorch checkpoint "
                           f"({type(exc).__name__}: {exc}). Is the file complete?") from exc


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
            lines.append(f"  {title} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{more}")
    return "\n".join(lines)


def settings_from_state(state: dict, metadata: dict | None) -> ModelSettings:
    """Metadata if the file has it, else SN6 baseline settings with width/bands read off
    the first convolution (so a bare baseline file needs nothing more)."""
    if metadata:
        return ModelSettings.from_dict(metadata)
    settings = ModelSettings()
    first = state.get("encoder.0.weight")
    if first is not None and first.ndim == 4:
        settings = replace(settings, width=first.shape[0] / VGG11_FIRST_WIDTH).with_bands(first.shape[1])
    return settings


def load_model(path: str | os.PathLike) -> tuple[UNet11, ModelSettings]:
    """The model in eval mode on the CPU, and its settings."""
    path = Path(path)
    state, metadata = _unwrap(_read(path))
    settings = settings_from_state(state, metadata)
    if settings.architecture != "UNet11":
        raise WeightsError(f"{path.name} is a {settings.architecture!r} model; only UNet11 is supported.")
    model = UNet11(in_channels=settings.bands, width=settings.width)
    report = _describe_mismatch(model, state)
    if report:
        raise WeightsError(
            f"{path.name} does not match UNet11 (width {settings.width:g}, {settings.bands} bands):\n"
            f"{report}\nUse a TernausNet UNet11 checkpoint such as the SN6 baseline weights or one "
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
