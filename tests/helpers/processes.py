"""Finding the worker processes a test started (Linux: through /proc)."""
from __future__ import annotations

import os


def worker_children() -> list[int]:
    """Process ids of this process's children that run the worker."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"--events" in command:
            pids.append(int(entry))
    return pids
