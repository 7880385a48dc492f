"""Feedback objects that record what the core reports, for tests to read back."""
from __future__ import annotations

from sn6_footprints.core.feedback import Feedback


class InfoLog(Feedback):
    """Keeps every info and warning line."""

    def __init__(self):
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


class StopAfter(Feedback):
    """Says 'cancelled' from its ``calls + 1``-th cancel check on: a Cancel pressed mid-run."""

    def __init__(self, calls: int):
        self.calls = calls

    def is_cancelled(self) -> bool:
        self.calls -= 1
        return self.calls < 0
