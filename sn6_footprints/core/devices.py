"""Choosing the torch device and precision for inference and training."""
from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "cpu")


class DeviceError(ValueError):
    """A device that cannot be used here."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; asking for CUDA without it is an error."""
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise DeviceError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no CUDA GPU is available to PyTorch "
                          f"(torch {torch.__version__}). Choose device 'auto' or 'cpu', or install a "
                          "CUDA build of PyTorch on a machine with an NVIDIA GPU.")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full fp32 on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        dtype = autocast_dtype(device)
        return f"CUDA {torch.cuda.get_device_name(device)} ({str(dtype).replace('torch.', '')} autocast)"
    return f"CPU ({torch.get_num_threads()} threads, float32)"
