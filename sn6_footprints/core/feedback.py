"""Progress and cancellation, without QGIS.

The core reports through a :class:`Feedback`; the Processing layer adapts
``QgsProcessingFeedback`` to it, the CLI prints, the tests count calls.
"""
from __future__ import annotations


class Cancelled(Exception):
    """Raised inside the core when the caller asked to stop."""


class Feedback:
    """Silent feedback: no progress shown, never cancelled. Subclass to connect a UI."""

    def set_progress(self, percent: float) -> None:
        """Overall progress in percent (0-100)."""

    def info(self, message: str) -> None:
        """A line for the log."""

    def warning(self, message: str) -> None:
        """A line for the log that the user should notice."""

    def is_cancelled(self) -> bool:
        return False

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop; call it in every loop."""
        if self.is_cancelled():
            raise Cancelled("cancelled by the user")


class PrintFeedback(Feedback):
    """Feedback for the CLI: log lines on stderr, progress in steps of 10 %."""

    def __init__(self, stream=None, quiet: bool = False):
        import sys

        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._last_decile = -1

    def set_progress(self, percent: float) -> None:
        decile = int(percent // 10)
        if not self._quiet and decile > self._last_decile:
            self._last_decile = decile
            print(f"  {decile * 10:3d} %", file=self._stream, flush=True)

    def info(self, message: str) -> None:
        if not self._quiet:
            print(message, file=self._stream, flush=True)

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=self._stream, flush=True)


class EventFeedback(Feedback):
    """Feedback for the worker process: every report is one event line on stdout (the
    protocol in ``sn6_footprints.worker.protocol``). The caller cancels with SIGTERM, which
    the CLI turns into :class:`Cancelled`."""

    def __init__(self, stream=None):
        self._stream = stream
        self._last_percent = -1.0

    def set_progress(self, percent: float) -> None:
        percent = round(float(percent), 1)
        if percent != self._last_percent:  # the core reports per tile; one event per 0.1 %
            self._last_percent = percent
            self._emit("progress", percent=percent)

    def info(self, message: str) -> None:
        self._emit("info", message=message)

    def warning(self, message: str) -> None:
        self._emit("warning", message=message)

    def _emit(self, event: str, **fields) -> None:
        from ..worker.protocol import emit

        emit(event, stream=self._stream, **fields)


class SubFeedback(Feedback):
    """Maps 0-100 % of a sub-step onto [start, end] % of its parent, passing the rest on."""

    def __init__(self, parent: Feedback, start: float, end: float):
        self.parent, self.start, self.end = parent, start, end

    def set_progress(self, percent: float) -> None:
        self.parent.set_progress(self.start + (self.end - self.start) * percent / 100.0)

    def info(self, message: str) -> None:
        self.parent.info(message)

    def warning(self, message: str) -> None:
        self.parent.warning(message)

    def is_cancelled(self) -> bool:
        return self.parent.is_cancelled()
