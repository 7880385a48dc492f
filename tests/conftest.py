"""Shared test fixtures: where the external reference data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pytest_plugins = ["tests.qgis_fixtures"]  # the plugin and its worker, one instance per session

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference-data"


@pytest.fixture(scope="session")
def reference_data() -> Path:
    """``../shared/reference-data`` beside the checkout; tests needing it skip without it."""
    if not REFERENCE_DATA.is_dir():
        pytest.skip(f"external reference data not found at {REFERENCE_DATA} "
                    "(it lives beside the checkout in ../shared/reference-data)")
    return REFERENCE_DATA
