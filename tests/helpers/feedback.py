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
