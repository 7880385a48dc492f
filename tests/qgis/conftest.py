"""Real QGIS for the algorithm tests (fixtures in tests/qgis_fixtures.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _worker_env(worker_env_for_every_test):
    """Every test here runs its worker in this checkout's environment."""
