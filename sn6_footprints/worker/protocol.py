"""The worker's machine-readable stream: one JSON event per line on stdout, each line
prefixed with ``@sn6 `` so that anything else a library prints there is told apart.

Events: ``{"event": "progress", "percent": 12.5}``, ``{"event": "info", "message": ...}``,
``{"event": "warning", "message": ...}``, ``{"event": "result", "data": {...}}`` and
``{"event": "error", "kind": "usage" | "cancelled" | "internal", "message": ...}``.
Standard library only: both QGIS's Python and the worker import it.
"""
from __future__ import annotations

import json
import sys

PREFIX = "@sn6 "
EVENTS = ("progress", "info", "warning", "result", "error")
ERROR_KINDS = ("usage", "cancelled", "internal")


def encode(event: str, **fields) -> str:
    """One line (no newline) of the stream."""
    if event not in EVENTS:
        raise ValueError(f"unknown worker event {event!r}")
    return PREFIX + json.dumps({"event": event, **fields}, ensure_ascii=True, allow_nan=False, default=str)


def decode(line: str) -> dict | None:
    """The event of a stream line, or None for a line that is not one (stray output)."""
    line = line.rstrip("\r\n")
    if not line.startswith(PREFIX):
        return None
    try:
        event = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and event.get("event") in EVENTS else None


def emit(event: str, stream=None, **fields) -> None:
    """Write one event and flush, so the caller sees it at once."""
    stream = stream or sys.stdout
    stream.write(encode(event, **fields) + "\n")
    stream.flush()
