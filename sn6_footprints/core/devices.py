"""Choosing the torch device and precision for inference and training."""
from __future__ import annotations

import torch

from ..defaults import DEVICE_CHOICES, PRECISION_CHOICES  # noqa: F401 - re-exported here


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


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AMX or AVX512-BF16): there oneDNN runs
    bf16 convolutions about 3x faster than fp32 (measured on this project's 2-core machine);
    without them bf16 is emulated and slower, so it is not used."""
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(cpu, name, None)
        try:
            supported = check is not None and bool(check())
        except Exception:  # a private helper that changed: fall back to fp32
            supported = False
        if supported:
            return True
    return False


_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where supported, else fp16) and on CPUs with native bf16
    (AMX or AVX512-BF16), for inference as for training: the bundled model's held-out F1 moved by
    at most 0.002 on any set in bf16 (8 scenes a set) and its forward ran 1.8x faster on an AMX
    Xeon (README, Precision). Other CPUs stay in float32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cpu_supports_bf16():
        return torch.bfloat16
    return None


def resolve_precision(device: torch.device, requested: str = "auto") -> tuple[torch.dtype | None, str | None]:
    """(the autocast dtype inference runs in, None for float32; a note for the log or None).

    ``auto`` is :func:`autocast_dtype`'s choice. A precision the device cannot run is refused
    (bf16 on a GPU without it); one it only emulates runs, slowly, and the note says so."""
    requested = (requested or "auto").lower()
    if requested not in PRECISION_CHOICES:
        raise DeviceError(f"Unknown precision {requested!r}; choose one of {', '.join(PRECISION_CHOICES)}.")
    if requested == "auto":
        return autocast_dtype(device), None
    dtype = _DTYPES[requested]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"Precision bfloat16 was requested but {torch.cuda.get_device_name(device)} does not "
                          "support it: choose float16, float32 or auto.")
    if device.type == "cpu" and dtype is not None and not (dtype is torch.bfloat16 and cpu_supports_bf16()):
        return dtype, (f"this CPU has no native {requested} instructions: PyTorch emulates them, which is "
                       "usually slower than float32 (Precision auto or float32 is faster here).")
    return dtype, None


def describe(device: torch.device, dtype: torch.dtype | None) -> str:
    """The device and the autocast dtype a run uses (None: float32), for logs and results."""
    precision = f"{str(dtype).replace('torch.', '')} autocast" if dtype is not None else "float32"
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)} ({precision})"
    return f"CPU ({torch.get_num_threads()} threads, {precision})"


def torch_versions() -> str:
    """PyTorch's version and the CUDA/cuDNN it was built with, for the start-of-run log."""
    if torch.version.cuda is None:
        return f"{torch.__version__} (CPU build)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return f"{torch.__version__} (CUDA {torch.version.cuda}{f', cuDNN {cudnn}' if cudnn else ''})"
