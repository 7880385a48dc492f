"""Small file systems for the output tests: a tmpfs that fills up, a read-only mount.

Mounting needs root with CAP_SYS_ADMIN; where it is refused the test that asked skips with
the reason (the RLIMIT_FSIZE cases cover a full disk everywhere)."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str = "64k", read_only: bool = False, mode: str | None = None):
    """``path`` as a fresh tmpfs of ``size`` (read-only when asked; ``mode`` e.g. "1777" so
    an unprivileged child can write), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "") + (f",mode={mode}" if mode else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],  # fixed tool, no shell
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
