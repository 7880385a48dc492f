"""The plugin loaded in real QGIS as QGIS's plugin loader does, its worker in this checkout's
environment (what a user sets in Processing ▸ Options): fixtures for tests/qgis and
tests/matrix, registered once (tests/conftest.py) so the session has one plugin instance."""
from __future__ import annotations

import sys

import pytest

import sn6_footprints
from tests.helpers.models import save_threshold_model


@pytest.fixture(scope="session")
def worker_env_setting(qgis_processing):
    """The provider's worker-environment setting pointed at the test runner's own venv."""
    from processing.core.ProcessingConfig import ProcessingConfig

    from sn6_footprints.processing_provider.settings import WORKER_ENV

    return ProcessingConfig, WORKER_ENV, sys.prefix


@pytest.fixture(scope="session")
def plugin(qgis_app, qgis_processing, qgis_iface, worker_env_setting):
    """classFactory + initGui, as QGIS's plugin loader does; the provider is then registered."""
    config, key, env = worker_env_setting
    instance = sn6_footprints.classFactory(qgis_iface)
    instance.initGui()
    previous = config.getSetting(key)
    config.setSettingValue(key, env)
    yield instance
    config.setSettingValue(key, previous or "")
    instance.unload()


@pytest.fixture
def worker_env_for_every_test(worker_env_setting):
    """Re-applied before every test: tests of the settings themselves may change or unregister it."""
    from qgis.core import QgsSettings

    config, key, env = worker_env_setting
    QgsSettings().setValue(f"Processing/Configuration/{key}", env)
    if key in config.settings:
        config.setSettingValue(key, env)


@pytest.fixture(scope="session")
def threshold_model_path(tmp_path_factory):
    return save_threshold_model(tmp_path_factory.mktemp("models") / "threshold.pt")
