"""Outputs that never destroy an input, and write failures told in one line.

Standard library only: QGIS's Python (the Processing algorithms) and the worker's core
(``core/vector_io.py``, the CLI) both import it.
"""
from __future__ import annotations

import errno
import os
import signal
import sqlite3
import tempfile
import threading
from contextlib import closing, contextmanager
from pathlib import Path

# Files GDAL/OGR read or write beside a data file: name + suffix (any file) ...
APPENDED_SIDECARS = (".aux.xml", ".aux", ".ovr", ".msk", ".xml", "-wal", "-shm", "-journal")
# ... stem + suffix beside a raster (world files, ENVI/ESRI headers and projections) ...
RASTER_STEM_SUFFIXES = (".wld", ".hdr", ".prj", ".rpb", ".aux")
# ... and every part of a Shapefile (given as any of its parts).
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qmd")
RASTER_SUFFIXES = (".tif", ".tiff", ".img", ".jp2", ".vrt", ".png", ".jpg", ".jpeg")
PROBE_BYTES = 1 << 20


class OutputIsInputError(ValueError):
    """An output path names one of the run's input files (or a sidecar of one)."""


class OutputWriteError(ValueError):
    """An output could not be written (disk full, size limit, permission); one line says why."""


def _key(path) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def same_file(a, b) -> bool:
    """The same file: equal resolved paths (links followed), or one file under two names."""
    if _key(a) == _key(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def sidecar_files(path, kind: str | None = None) -> list[Path]:
    """The files GDAL/OGR read or write beside ``path`` (not ``path`` itself): ``.aux.xml``,
    overviews, masks, journals; for a raster (``kind="raster"``, or a raster suffix) world
    files and headers; for any part of a Shapefile its other parts (either case)."""
    path = Path(path)
    ext = path.suffix.lower()
    files = [path.with_name(path.name + suffix) for suffix in APPENDED_SIDECARS]
    if kind == "raster" or ext in RASTER_SUFFIXES:
        files += [path.with_suffix(suffix) for suffix in RASTER_STEM_SUFFIXES]
        if len(ext) >= 3:  # world files: scene.tif -> scene.tfw and scene.tifw
            files += [path.with_suffix(ext[:2] + ext[-1] + "w"), path.with_suffix(ext + "w")]
    if ext in SHAPEFILE_PARTS:
        files += [path.with_suffix(part) for part in SHAPEFILE_PARTS if part != ext]
        files += [path.with_suffix(part.upper()) for part in SHAPEFILE_PARTS if part != ext]
    return files


def raster_files(raster) -> list[Path]:
    """A raster and the sidecar files GDAL reads or writes beside it (world files, .aux.xml, ...)."""
    return [Path(raster)] + sidecar_files(raster, "raster")


def vector_files(vector) -> list[Path]:
    """A vector file and, for a shapefile, every file of it."""
    path = Path(vector)
    if path.suffix.lower() == ".shp":
        return [path.with_suffix(s) for s in SHAPEFILE_PARTS]
    return [path]


def find_clash(output, inputs) -> tuple[str, str, Path | None] | None:
    """The first input that writing ``output`` would overwrite, as ``(label, input, file)``:
    ``file`` is None when ``output`` is the input itself (also through a link or a hard link,
    or when one of the output's own sidecars is the input), else the input's sidecar that the
    output or one of its sidecars would replace (the latter only when that sidecar exists).

    ``inputs``: ``(label, path, kind)`` with kind ``"raster"``, ``"vector"``, ``"file"`` or None
    (from the suffix); empty paths are skipped. The output is the input itself first, for all
    inputs, then one of their sidecars."""
    inputs = [(label, path, kind) for label, path, kind in inputs if path is not None and str(path)]
    own = sidecar_files(output)
    for label, path, _ in inputs:
        if same_file(output, path) or any(same_file(mine, path) for mine in own):
            return label, path, None
    for label, path, kind in inputs:
        for member in sidecar_files(path, kind):
            if same_file(output, member) or (os.path.lexists(member) and any(same_file(mine, member)
                                                                             for mine in own)):
                return label, path, member
    return None


def source_path(source: str | os.PathLike | None) -> str | None:
    """The file of a QGIS/OGR data source (``path|layername=x``), or None when not a file."""
    if source is None:
        return None
    text = os.fspath(source).split("|")[0].strip()
    return text if text and os.path.isfile(text) else None


def check_outputs_not_inputs(outputs, inputs) -> None:
    """Refuse before any work when an output would overwrite an input.

    ``outputs``: ``(label, path)`` pairs (None paths are skipped), e.g. ``("footprints output", p)``;
    ``inputs``: ``(label, path, kind)`` as :func:`find_clash` takes them (a raster's sidecars and
    a shapefile's parts count too). Outputs must also differ from each other.
    """
    outputs = [(label, path) for label, path in outputs if path]
    for out_label, out_path in outputs:
        found = find_clash(out_path, inputs)
        if found:
            in_label, in_path, member = found
            which = (f"the {in_label} {in_path}" if member is None
                     else f"{member}, a sidecar file of the {in_label} {in_path}")
            raise OutputIsInputError(f"The {out_label} {out_path} would overwrite {which}; choose another output file.")
    for i, (label_a, path_a) in enumerate(outputs):
        found = find_clash(path_a, [(label, path, None) for label, path in outputs[i + 1:]])
        if found:
            label_b, _, member = found
            shared = f"are the same file {path_a}" if member is None else f"share the file {member}"
            raise OutputIsInputError(f"The {label_a} and the {label_b} {shared}; choose a different file for each.")


def geopackage_layers(path) -> list[str] | None:
    """The layer names of an existing GeoPackage (read-only, nothing written), or None when the
    file does not exist or is not a GeoPackage."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)) as connection:
            rows = connection.execute("SELECT table_name FROM gpkg_contents ORDER BY rowid").fetchall()
    except sqlite3.Error:
        return None
    return [row[0] for row in rows]


def _probe_errno(folder: Path) -> int | None:
    """Write a scratch file of 1 MiB in ``folder``: the errno that stops it, None when it fits."""
    try:
        handle, name = tempfile.mkstemp(prefix=".sn6-probe-", dir=folder)
    except OSError as exc:
        return exc.errno
    try:
        chunk = b"\0" * 65536
        with os.fdopen(handle, "wb") as stream:
            for _ in range(PROBE_BYTES // len(chunk)):
                stream.write(chunk)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as exc:
        return exc.errno
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass
    return None


NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error_message(path, detail: str | BaseException = "", code: int | None = None) -> str:
    """One line for a failed write of ``path``: disk full, file size limit, permission denied
    (from the errno, else from a probe written into the folder), or the library's own words."""
    path = Path(path)
    if code is None and isinstance(detail, OSError):
        code = detail.errno
    text = " ".join(str(detail).split())
    lowered = text.lower()
    if code is None:
        if "disk is full" in lowered or "no space left" in lowered:
            code = errno.ENOSPC
        elif "file too large" in lowered:
            code = errno.EFBIG
        elif "read-only file system" in lowered or "permission denied" in lowered:
            code = errno.EACCES
    folder = path.parent
    if code is None and folder.is_dir():
        code = _probe_errno(folder)
    if code in NO_SPACE:
        return f"No space left on device while writing {path}: free space or choose another folder."
    if code == errno.EFBIG:
        return (f"File size limit reached while writing {path} (the file system's or this process's limit): "
                "free space, raise the limit or choose another folder.")
    if code in NO_PERMISSION:
        return f"Permission denied while writing {path}: choose a folder you can write to."
    return f"Cannot write {path}: {text or 'the write failed'}; check the folder and the free space."


@contextmanager
def terminate_raises(exception_type):
    """While inside, SIGTERM raises ``exception_type`` in the main thread (so ``finally``
    blocks remove temporary files) when nobody else handles SIGTERM; otherwise unchanged
    (the worker's handler turns SIGTERM into a cancel request itself)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def _raise(_signum, _frame):
        raise exception_type("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
