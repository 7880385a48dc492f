"""The provider's settings, in *Processing → Options → Providers → SN6 Footprints*.

Three settings, stored by Processing under ``Processing/Configuration/<KEY>`` in the profile's
QGIS settings:

- ``SN6_FOOTPRINTS_WORKER_ENV``: the Python environment the worker runs in (a folder; empty =
  the environment the installer made in the profile's plugin-data folder);
- ``SN6_FOOTPRINTS_DEFAULT_MODEL``: the model file the algorithms start with (empty = the
  bundled model);
- ``SN6_FOOTPRINTS_DEFAULT_DEVICE``: auto, cuda or cpu.

The reading functions touch neither widgets nor ``iface``: the algorithms call them from a
background task. When the provider has not registered the settings (for example a script that
uses this module alone), they read the stored value straight from ``QgsSettings``.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import NULL, QgsApplication, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication

from ..defaults import DEVICE_CHOICES
from ..output_safety import same_file

WORKER_ENV = "SN6_FOOTPRINTS_WORKER_ENV"
DEFAULT_MODEL = "SN6_FOOTPRINTS_DEFAULT_MODEL"
DEFAULT_DEVICE = "SN6_FOOTPRINTS_DEFAULT_DEVICE"
KEYS = (WORKER_ENV, DEFAULT_MODEL, DEFAULT_DEVICE)

DEVICES = DEVICE_CHOICES
"""The device setting's values, in the order of its choices (Processing stores the index)."""

_QNAME = "Processing/Configuration/{}"
_registered: list[str] = []


def _tr(text: str) -> str:
    return QCoreApplication.translate("Sn6FootprintsSettings", text)


def _device_labels() -> list[str]:
    return [_tr("auto (CUDA when a usable GPU is found, else CPU)"), _tr("cuda (GPU)"), _tr("cpu")]


def _processing_config():
    """Processing's ProcessingConfig, or None where the processing plugin is not importable."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return None, None
    return ProcessingConfig, Setting


def register_settings(provider_name: str) -> None:
    """Adds the three settings under the provider's group and reads their stored values;
    called by the provider's ``load()``. Calling it again replaces them."""
    config, setting = _processing_config()
    if config is None:
        return
    unregister_settings()
    for item in (
        setting(provider_name, WORKER_ENV,
                _tr("Worker Python environment (empty: the one 'Install dependencies' makes in the profile)"),
                "", valuetype=setting.FOLDER),
        setting(provider_name, DEFAULT_MODEL,
                _tr("Default model file (.pt; empty: the bundled model)"),
                "", valuetype=setting.FILE),
        setting(provider_name, DEFAULT_DEVICE, _tr("Default device"),
                _device_labels()[0], valuetype=setting.SELECTION, options=_device_labels()),
    ):
        config.addSetting(item)
        item.read()
        _registered.append(item.name)
    if QCoreApplication.instance() is not None and hasattr(config, "setGroupIcon"):
        from qgis.PyQt.QtGui import QIcon

        from ..resources_path import resource

        config.setGroupIcon(provider_name, QIcon(str(resource("icon.svg"))))


def unregister_settings() -> None:
    """Removes the settings register_settings added (the stored values stay); called by the
    provider's ``unload()``."""
    config, _ = _processing_config()
    while _registered:
        name = _registered.pop()
        if config is not None and name in config.settings:
            config.removeSetting(name)


def _value(key: str):
    """The setting's current value: Processing's copy when registered (it is what the options
    dialog edits), else the stored one."""
    config, setting = _processing_config()
    if config is not None and key in config.settings:
        item = config.settings[key]
        if item.valuetype == setting.SELECTION:
            try:
                return item.options.index(item.value)
            except ValueError:
                return 0
        return item.value
    return QgsSettings().value(_QNAME.format(key), None)


def _text(value) -> str:
    if value is None or value == NULL:
        return ""
    return str(value).strip()


def worker_env_setting() -> str:
    """The worker environment folder the user chose, or "" for the installer's environment."""
    return _text(_value(WORKER_ENV))


def default_model_setting() -> str:
    """The default model file the user chose, or "" for the bundled model."""
    return _text(_value(DEFAULT_MODEL))


def default_device_setting() -> str:
    """One of "auto", "cuda", "cpu"."""
    value = _value(DEFAULT_DEVICE)
    if isinstance(value, str) and value.strip().lower() in DEVICES:
        return value.strip().lower()
    try:
        index = int(value)
    except (TypeError, ValueError):
        return DEVICES[0]
    return DEVICES[index] if 0 <= index < len(DEVICES) else DEVICES[0]


def profile_dir() -> Path:
    """The active QGIS profile's folder (desktop, qgis_process, tests alike)."""
    path = QgsApplication.qgisSettingsDirPath()
    if path:
        return Path(path)
    from ..worker.environment import default_profile_dir

    return Path(default_profile_dir())


def worker_python() -> Path | None:
    """The Python interpreter the worker runs with, or None when none is set up."""
    from ..worker.environment import resolve_worker_python

    return resolve_worker_python(profile_dir(), worker_env_setting())


def requirements_sha256() -> str | None:
    """The shipped requirements' hash as the installer records it, or None without the file."""
    from ..install import REQUIREMENTS, file_sha256

    try:
        return file_sha256(REQUIREMENTS)
    except OSError:
        return None


def setup_problem(profile=None, env_setting: str | None = None) -> str | None:
    """Whether the worker's environment is ready, from the installer's record alone (no
    subprocess, cheap enough for QGIS's start): None when ready, "missing" when there is no
    usable environment, "repair" when it is broken or was made for other requirements than
    the ones this plugin ships."""
    from ..worker.environment import read_record, resolve_worker_python

    profile = profile_dir() if profile is None else Path(profile)
    env_setting = worker_env_setting() if env_setting is None else env_setting
    python = resolve_worker_python(profile, env_setting)
    if python is None or not Path(python).is_file():
        return "missing"
    record = read_record(profile)
    recorded = record.get("python") if record else None
    if not recorded or not same_file(recorded, python):
        # An environment the user chose and the installer never checked is theirs to answer
        # for; the installer's own environment without its record is not verified.
        return None if env_setting.strip() else "repair"
    if not record.get("verified"):
        return "repair"
    shipped = requirements_sha256()
    if shipped is not None and record.get("requirements_sha256") != shipped:
        return "repair"
    return None
