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


def kill_worker_at_first_progress():
    """A ``QgsProcessingFeedback`` that kills the worker (as an out-of-memory killer or a crash
    of torch would) once it reports progress; imported lazily so the core tests need no QGIS."""
    import signal

    from qgis.core import QgsProcessingFeedback

    class KillWorkerAtFirstProgress(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.progressChanged.connect(self._on_progress)

        def _on_progress(self, value):
            if value > 0:
                for pid in worker_children():
                    os.kill(pid, signal.SIGKILL)

    return KillWorkerAtFirstProgress()
