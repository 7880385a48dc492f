"""Real QGIS for the algorithm tests: the plugin is loaded the way QGIS loads it."""
from __future__ import annotations

import pytest

import sn6_footprints
from tests.helpers.models import save_threshold_model


@pytest.fixture(scope="session")
def plugin(qgis_app, qgis_processing, qgis_iface):
    """classFactory + initGui, as QGIS's plugin loader does; the provider is then registered."""
    instance = sn6_footprints.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture(scope="session")
def threshold_model_path(tmp_path_factory):
    return save_threshold_model(tmp_path_factory.mktemp("models") / "threshold.pt")
