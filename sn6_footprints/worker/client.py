"""Runs the core's command line in the worker environment and follows its event stream.

QGIS's process calls :func:`run_worker`; it never imports torch, rasterio or shapely. The
worker's temporary files live in a scratch folder that the caller owns and deletes, so a
worker that is cancelled, killed or crashes leaves nothing behind. Standard library only.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from . import protocol

POLL_S = 0.1
# After SIGTERM the worker stops at its next cancellation check (a batch: well under a
# second on CPU); past this it is killed, so Cancel always takes effect within ~2 s.
TERMINATE_GRACE_S = 1.0
STDERR_TAIL_LINES = 20


class WorkerError(Exception):
    """The worker refused the input or failed; the message is one line for the user."""


class WorkerCancelled(WorkerError):
    """The caller cancelled; the worker was stopped."""


def _reader(stream, name: str, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put((name, line))
    lines.put((name, None))


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM first (the worker cleans up and exits), SIGKILL when it does not in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return f", killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f", killed by signal {-returncode}"
    return ""


def run_worker(python: str | os.PathLike, arguments: list[str], feedback, scratch: str | os.PathLike,
               environ: dict | None = None) -> dict:
    """Run ``python -m sn6_footprints --events <arguments>`` and return its result data.

    ``feedback`` has ``set_progress(percent)``, ``info(text)``, ``warning(text)``,
    ``is_cancelled()`` and optionally ``debug(text)`` (stray output, stderr). Raises
    :class:`WorkerCancelled` when cancelled, :class:`WorkerError` with the worker's own
    one-line message when it refused the input, or with the exit code and its last words
    when it died.
    """
    python = Path(python)
    if not python.is_file():
        raise WorkerError(f"The worker's Python {python} does not exist.")
    scratch_tmp = Path(scratch) / "tmp"
    scratch_tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if environ is None else environ)
    env.update(TMPDIR=str(scratch_tmp), TEMP=str(scratch_tmp), TMP=str(scratch_tmp))
    command = [str(python), "-m", "sn6_footprints", "--events", *[str(a) for a in arguments]]
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    try:
        process = subprocess.Popen(  # a fixed interpreter, list arguments, no shell
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace", bufsize=1, env=env, creationflags=flags)
    except OSError as exc:
        raise WorkerError(f"Cannot start the worker {python}: {exc}") from exc
    lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_reader, args=(stream, name, lines), daemon=True)
               for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    result, error, open_streams = None, None, 2
    stderr_tail: deque = deque(maxlen=STDERR_TAIL_LINES)
    debug = getattr(feedback, "debug", None)
    try:
        while open_streams:
            if feedback.is_cancelled():
                _stop(process)
                raise WorkerCancelled("Cancelled by the user.")
            try:
                name, line = lines.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            event = protocol.decode(line) if name == "stdout" else None
            if event is None:
                text = line.rstrip()
                if name == "stderr" and text:
                    stderr_tail.append(text)
                if text and debug is not None:
                    debug(text)
                continue
            kind = event["event"]
            if kind == "progress":
                feedback.set_progress(float(event.get("percent", 0.0)))
            elif kind == "info":
                feedback.info(str(event.get("message", "")))
            elif kind == "warning":
                feedback.warning(str(event.get("message", "")))
            elif kind == "result":
                result = event.get("data") or {}
            elif kind == "error":
                error = event
        returncode = process.wait()
    finally:
        _stop(process)
        for stream in (process.stdout, process.stderr):
            stream.close()
    if error is not None:
        if error.get("kind") == "cancelled":
            raise WorkerCancelled("Cancelled by the user.")
        raise WorkerError(str(error.get("message", "the worker failed")))
    if returncode != 0 or result is None:
        last = " | ".join(list(stderr_tail)[-3:]) or "no message"
        raise WorkerError(f"The worker process stopped unexpectedly (exit code {returncode}"
                          f"{_signal_name(returncode)}): {last}")
    return result

