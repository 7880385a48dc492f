"""Feedback objects that record what the core reports, for tests to read back."""
from __future__ import annotations

from sn6_footprints.core.feedback import Feedback


class InfoLog(Feedback):
    """Keeps every info line."""

    def __init__(self):
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)
