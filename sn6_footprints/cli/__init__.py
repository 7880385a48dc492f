"""Command-line interface: one module per sub-command, each with ``add_parser`` and ``run``.

Errors the user can fix (bad input, missing files) print one line and exit with code 2.
With ``--events`` (how the QGIS plugin runs it as its worker) every log line, progress step,
the result and any error are JSON event lines on stdout instead (``worker/protocol.py``),
and SIGTERM cancels the run cleanly.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import traceback

COMMANDS = ("extract", "score", "simulate", "train")
EXIT_USAGE = 2
EXIT_CANCELLED = 130


class CliError(Exception):
    """A user-fixable problem: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sn6_footprints",
                                     description="Building footprints from SAR with TernausNet.")
    parser.add_argument("--events", action="store_true",
                        help="machine-readable output for the QGIS plugin: JSON event lines on stdout")
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

    if not args.events:
        return PrintFeedback(quiet=getattr(args, "quiet", False))
    feedback = EventFeedback()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: feedback.cancel())
    return feedback


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..core.feedback import Cancelled
    from ..worker.protocol import emit

    args.feedback = _feedback(args)
    try:
        return args.run(args) or 0
    except (CliError, ValueError, FileNotFoundError) as exc:
        if args.events:
            emit("error", kind="usage", message=str(exc))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Cancelled, KeyboardInterrupt):
        if args.events:
            emit("error", kind="cancelled", message="cancelled")
        else:
            print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # the worker's caller gets one line; the traceback goes to stderr
        if not args.events:
            raise
        traceback.print_exc(file=sys.stderr)
        emit("error", kind="internal",
             message=f"Unexpected error in the worker: {type(exc).__name__}: {exc} (traceback in the log)")
        return 1
