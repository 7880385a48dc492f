"""Command-line interface: one module per sub-command, each with ``add_parser`` and ``run``.

Errors the user can fix (bad input, missing files) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("extract", "score", "simulate", "train")
EXIT_USAGE = 2


class CliError(Exception):
    """A user-fixable problem: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sn6_footprints",
                                     description="Building footprints from SAR with TernausNet.")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..core.feedback import Cancelled

    try:
        return args.run(args) or 0
    except (CliError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return 130
