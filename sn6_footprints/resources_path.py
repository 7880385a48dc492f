"""Where icons and QML styles are: inside the installed plugin, or at the repository root."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource(name: str) -> Path:
    """``resources/<name>`` of the installed plugin (make install-plugin copies it in), else
    of the source checkout."""
    for base in (_PACKAGE / "resources", _PACKAGE.parent / "resources"):
        if (base / name).exists():
            return base / name
    return _PACKAGE / "resources" / name
