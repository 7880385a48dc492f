"""Where the worker's Python environment lives and how the worker is launched.

Standard library only: QGIS's own Python imports this module (it never imports torch,
rasterio or shapely). The installer (``python -m sn6_footprints.install``) writes a record
``<profile>/sn6_footprints/worker.json`` after it has verified an environment; the plugin
reads it back to find the worker's interpreter.
"""
from __future__ import annotations

import json
import os
import shutil
# subprocess runs pip, venv, nvidia-smi and chosen interpreters: argument lists, never a shell
import subprocess  # nosec B404
import sys
import tempfile
from pathlib import Path

PLUGIN_NAME = "sn6_footprints"
RECORD_NAME = "worker.json"
ENV_NAME = "env"

# Variables that point a Python or GDAL/PROJ at QGIS's own installation: inherited by the
# worker they make its interpreter load QGIS's modules or data instead of its own.
_DROPPED_VARIABLES = (
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "GDAL_DATA", "GDAL_DRIVER_PATH",
    "PROJ_LIB", "PROJ_DATA", "QGIS_PREFIX_PATH", "LD_PRELOAD",
    "__PYVENV_LAUNCHER__",  # macOS framework builds: makes a venv's python pose as another
)


def _is_windows(platform: str | None = None) -> bool:
    return (platform or sys.platform).startswith("win")


def default_profile_dir(platform: str | None = None, environ: dict | None = None) -> Path:
    """The default QGIS 3 profile folder of the current user (outside QGIS; inside it the
    caller passes ``QgsApplication.qgisSettingsDirPath()`` instead)."""
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or Path.home())
    if _is_windows(platform):
        base = Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def plugin_data_dir(profile_dir) -> Path:
    """The plugin's own folder in a QGIS profile (environment, record, install log)."""
    return Path(profile_dir) / PLUGIN_NAME


def default_env_dir(profile_dir) -> Path:
    """The environment the installer makes when the user names none."""
    return plugin_data_dir(profile_dir) / ENV_NAME


def record_path(profile_dir) -> Path:
    return plugin_data_dir(profile_dir) / RECORD_NAME


def install_log_path(profile_dir) -> Path:
    return plugin_data_dir(profile_dir) / "install.log"


def env_python(env_dir, platform: str | None = None) -> Path:
    """The interpreter of an environment folder; a path to an interpreter is returned as is."""
    env_dir = Path(env_dir)
    if env_dir.is_file():
        return env_dir
    if _is_windows(platform):
        scripts = env_dir / "Scripts" / "python.exe"
        conda_style = env_dir / "python.exe"  # conda environments keep it at the top
        return conda_style if not scripts.exists() and conda_style.exists() else scripts
    python = env_dir / "bin" / "python"
    python3 = env_dir / "bin" / "python3"
    return python3 if not python.exists() and python3.exists() else python


def read_record(profile_dir) -> dict | None:
    """The installer's record of the verified environment, or None when there is none (or
    it cannot be read: the plugin then offers the installer again)."""
    try:
        record = json.loads(record_path(profile_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(profile_dir, record: dict) -> Path:
    """Write the record atomically, so a plugin reading it never sees half a file."""
    path = record_path(profile_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".worker-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _is_qgis_executable(path: Path) -> bool:
    """True for QGIS's own binary (inside QGIS ``sys.executable`` is QGIS, not a Python)."""
    name = path.name.lower()
    if name.startswith("qgis"):
        return True
    running = Path(sys.executable)
    if running.name.lower().startswith("python"):
        return False
    try:
        return path.resolve() == running.resolve()
    except OSError:
        return False


def resolve_worker_python(profile_dir, setting: str = "") -> Path | None:
    """The worker's interpreter: the user's setting (an environment folder or interpreter)
    wins, then the installer's record, then the default environment; None when none exists.

    A setting is returned even when it does not exist, so the caller reports the user's own
    choice as wrong instead of silently running another environment."""
    if setting and setting.strip():
        python = env_python(Path(setting.strip()).expanduser())
        return None if _is_qgis_executable(python) else python
    candidates = []
    record = read_record(profile_dir)
    if record and record.get("python"):
        candidates.append(Path(record["python"]))
    candidates.append(env_python(default_env_dir(profile_dir)))
    for python in candidates:
        if python.is_file() and not _is_qgis_executable(python):
            return python
    return None


def _version_of(python: Path) -> tuple[int, int] | None:
    try:
        completed = subprocess.run(  # nosec B603
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60, env=clean_environ(), check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        major, minor = completed.stdout.strip().split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def base_python() -> Path:
    """The real interpreter matching the running Python, to make a venv from (inside QGIS
    ``sys.executable`` is QGIS itself, and a venv's interpreter would nest venvs)."""
    major, minor = sys.version_info[:2]
    candidates = []
    for prefix in dict.fromkeys((sys.base_prefix, sys.base_exec_prefix, sys.prefix)):
        prefix = Path(prefix)
        if _is_windows():
            candidates += [prefix / "python.exe", prefix / "python3.exe",
                           prefix / "apps" / f"Python{major}{minor}" / "python.exe"]
        else:
            candidates += [prefix / "bin" / f"python{major}.{minor}", prefix / "bin" / "python3"]
    found = shutil.which(f"python{major}.{minor}")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and _version_of(candidate) == (major, minor):
            return candidate
    raise RuntimeError(
        f"no Python {major}.{minor} interpreter found next to this one ({sys.base_prefix}): "
        f"install Python {major}.{minor} or pass --env an existing environment")


def clean_environ(base: dict | None = None) -> dict:
    """The environment for a Python other than QGIS's: nothing of QGIS's Python or GDAL."""
    environ = dict(os.environ if base is None else base)
    for name in _DROPPED_VARIABLES:
        environ.pop(name, None)
    environ.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    return environ


def package_root() -> Path:
    """The folder that holds the ``sn6_footprints`` package (plugins folder or checkout)."""
    return Path(__file__).resolve().parents[2]


def worker_environ(base: dict | None = None) -> dict:
    """The environment to launch the worker with: clean, with the plugin's own package on
    ``PYTHONPATH`` so the worker imports this plugin's core (not another copy)."""
    environ = clean_environ(base)
    environ["PYTHONPATH"] = str(package_root())
    return environ
