"""Command-line interface: one module per sub-command, each with ``add_parser`` and ``run``.

Errors the user can fix (bad input, missing files) print one line, ``error: ...``, and exit
with code 2; the command's checks run first (``core/validation.py``), before any model loads
or any file is written. An unexpected exception prints one line, ``error: unexpected <Type>:
<message> (details: <log file>)``, and writes its traceback to that log file in the temporary
folder (``--debug``: the traceback on stderr instead). Messages are stripped of ANSI escape
codes and control characters and folded onto one line. With ``--events`` (how the QGIS
plugin runs it as its worker) every log line, progress step, the result and any error are
JSON event lines on stdout instead (``worker/protocol.py``), and SIGTERM cancels the run
cleanly.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import re
import sys
import tempfile
import traceback

from ..output_safety import terminate_raises

COMMANDS = ("extract", "score", "simulate", "train")
EXIT_USAGE = 2
EXIT_CANCELLED = 130
EXIT_INTERNAL = 1
# CSI / OSC / other two-character escape sequences, then any other control character.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class CliError(Exception):
    """A user-fixable problem: printed as one line, exit code 2."""


def one_line(message: object) -> str:
    """A message as one printable line: ANSI escape codes and control characters removed,
    line breaks folded into single spaces."""
    text = _CONTROL.sub("", _ANSI.sub("", str(message)))
    return " ".join(text.split())


def write_crash_log(exc: BaseException, argv: list[str] | None) -> str | None:
    """The traceback of an unexpected exception in a new log file in the temporary folder;
    its path, or None when it cannot be written."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        fd, path = tempfile.mkstemp(prefix=f"sn6_footprints-{stamp}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as log:
            log.write(f"python -m sn6_footprints {' '.join(sys.argv[1:] if argv is None else argv)}\n")
            log.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        return None
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sn6_footprints",
                                     description="Building footprints from SAR with TernausNet.")
    parser.add_argument("--events", action="store_true",
                        help="machine-readable output for the QGIS plugin: JSON event lines on stdout")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error on stderr (default: in a log file)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # sub-command not part of this build
            raise
        module.add_parser(subparsers)
    return parser


def finish(args, summary: dict, text: str | None = None) -> int:
    """The command's result: an event for the worker's caller, JSON with ``--json``, else text."""
    if args.events:
        from ..worker.protocol import emit

        emit("result", data=summary)
    elif getattr(args, "json", False) or text is None:
        print(json.dumps(summary, indent=2))
    else:
        print(text)
    return 0


def _feedback(args):
    from ..core.feedback import EventFeedback, PrintFeedback

    return EventFeedback() if args.events else PrintFeedback(quiet=getattr(args, "quiet", False))


# GDAL's block cache defaults to 5 % of the machine's RAM (6 GB on a 128 GB machine), filled as
# a large raster is read; the engine reads each window once, row by row, so a few rows of
# blocks are all it can reuse (the 64 px overlap: 20 MB on a 20,000 px wide 4-band float32
# raster). Read before GDAL's first use; a value set by the user wins. 32 MB instead of 256 MB
# lowered the peak RSS on a 20,000 x 2,048 px scene by 92 MB at the same speed (61 s, 64 s).
GDAL_CACHE_MB = 64


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    args = build_parser().parse_args(argv)
    from ..core.feedback import Cancelled
    from ..worker.protocol import emit

    args.feedback = _feedback(args)
    try:
        with terminate_raises(Cancelled):  # SIGTERM cancels: the core's finally blocks clean up
            return args.run(args) or 0
    except (CliError, ValueError, FileNotFoundError) as exc:
        message = one_line(exc) or type(exc).__name__
        if args.events:
            emit("error", kind="usage", message=message)
        else:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except (Cancelled, KeyboardInterrupt):
        if args.events:
            emit("error", kind="cancelled", message="cancelled")
        else:
            print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # one line for the user, the traceback in a log file (or --debug)
        if args.debug and not args.events:
            raise
        if args.events:  # the worker's caller keeps its stderr in the Processing log; the scratch
            traceback.print_exc(file=sys.stderr)  # folder (the worker's temp dir) is removed
            details = "the worker's traceback is in the log"
        else:
            details = write_crash_log(exc, argv) or "no log file could be written; rerun with --debug"
        message = one_line(f"unexpected {type(exc).__name__}: {exc} (details: {details})")
        if args.events:
            emit("error", kind="internal", message=message)
        else:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_INTERNAL
