"""The plugin as ``make install-plugin`` lays it out, and ``scripts/qgis_process.sh`` run on it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
QGIS_PROCESS = REPO_ROOT / "scripts" / "qgis_process.sh"


def install_plugin(tmp_path_factory) -> Path:
    """``make install-plugin`` into a fresh build folder; the plugins folder (for a module-scoped fixture)."""
    build = tmp_path_factory.mktemp("build")
    subprocess.run(["make", "-s", "install-plugin", f"BUILD={build}"], cwd=REPO_ROOT, check=True, capture_output=True)
    return build / "plugins"


def qgis_process(plugins: Path, *arguments, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``scripts/qgis_process.sh ARGUMENTS`` with ``plugins`` as its plugin folder (``env``: the
    environment instead of this process's own); never raises on a non-zero exit."""
    environ = {**(os.environ if env is None else env), "SN6_PLUGINS_DIR": str(plugins)}
    return subprocess.run([str(QGIS_PROCESS), *map(str, arguments)], capture_output=True, text=True,
                          timeout=timeout, env=environ, check=False)
