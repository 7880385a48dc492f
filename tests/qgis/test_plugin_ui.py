"""The plugin's UI in real QGIS: provider settings, the Raster menu, the algorithms' icon, the
start-up dependency check and its message bar, and the Install dependencies dialog running
the real installer (``--plan --json``) in a QProcess."""
from __future__ import annotations

import json
import subprocess  # nosec B404 - runs the plugin's own installer
import threading
import time
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsSettings
from qgis.PyQt.QtWidgets import QPushButton

from sn6_footprints.processing_provider import settings
from sn6_footprints.worker import environment

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SYSTEM_PYTHON = Path("/usr/bin/python3")
PROVIDER = "SN6 Footprints"


def wait_until(app, condition, timeout_s=120.0):
    """Processes Qt events until condition() is true; False after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    app.processEvents()
    return condition()


def processing_config():
    from processing.core.ProcessingConfig import ProcessingConfig

    return ProcessingConfig


@pytest.fixture
def clean_settings(plugin):
    """The three settings with nothing stored (the test profile's QGIS settings), re-read by
    Processing as the provider's load does; cleaned up again afterwards."""
    def wipe():
        stored = QgsSettings()
        for key in settings.KEYS:
            stored.remove(f"Processing/Configuration/{key}")
        settings.register_settings(PROVIDER)

    wipe()
    yield
    wipe()


@pytest.fixture(scope="module")
def verified_profile(tmp_path_factory):
    """A profile whose installer record points at the repository's .venv (which has torch,
    rasterio and shapely), made by the real installer's --check (imports, versions, a forward
    pass), as a user's ``python -m sn6_footprints.install --check --env ...`` makes it."""
    profile = tmp_path_factory.mktemp("profile-verified")
    completed = subprocess.run(  # nosec B603
        [str(SYSTEM_PYTHON), "-m", "sn6_footprints.install", "--check", "--env", str(REPO / ".venv"),
         "--profile", str(profile)],
        cwd=REPO, env=environment.worker_environ(), capture_output=True, text=True, timeout=600,
        check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    record = environment.read_record(profile)
    assert record and Path(record["python"]).is_file()
    return profile


# --- settings ------------------------------------------------------------------------------------
def test_settings_are_registered_under_the_provider_with_defaults(clean_settings):
    config = processing_config()
    registered = {key: config.settings[key] for key in settings.KEYS}
    assert {s.group for s in registered.values()} == {PROVIDER}
    from processing.core.ProcessingConfig import Setting

    assert registered[settings.WORKER_ENV].valuetype == Setting.FOLDER
    assert registered[settings.DEFAULT_MODEL].valuetype == Setting.FILE
    assert registered[settings.DEFAULT_DEVICE].valuetype == Setting.SELECTION
    assert len(registered[settings.DEFAULT_DEVICE].options) == 3
    assert PROVIDER in config.getSettings()  # what Options → Providers lists
    assert settings.worker_env_setting() == ""
    assert settings.default_model_setting() == ""
    assert settings.default_device_setting() == "auto"
    assert settings.profile_dir() == Path(QgsApplication.qgisSettingsDirPath())


def test_values_set_in_processing_options_reach_the_functions_from_any_thread(clean_settings, tmp_path):
    config = processing_config()
    model = tmp_path / "my.pt"
    model.write_bytes(b"")
    config.setSettingValue(settings.WORKER_ENV, str(REPO / ".venv"))
    config.setSettingValue(settings.DEFAULT_MODEL, str(model))
    config.setSettingValue(settings.DEFAULT_DEVICE, 2)  # the options dialog stores an index
    expected = (str(REPO / ".venv"), str(model), "cpu", VENV_PYTHON)

    def read():
        return (settings.worker_env_setting(), settings.default_model_setting(),
                settings.default_device_setting(), settings.worker_python())

    assert read() == expected
    seen = []
    thread = threading.Thread(target=lambda: seen.append(read()))
    thread.start()
    thread.join(30)
    assert seen == [expected]

    # Unregistered (the provider unloaded, or Processing absent): the stored values are read.
    settings.unregister_settings()
    assert settings.WORKER_ENV not in config.settings
    assert read() == expected
    settings.register_settings(PROVIDER)
    config.setSettingValue(settings.DEFAULT_DEVICE, 1)
    assert settings.default_device_setting() == "cuda"


# --- menu, icons -----------------------------------------------------------------------------
def test_raster_menu_has_the_extraction_and_install_entries(plugin, qgis_iface):
    calls = [tuple(call.args) for call in qgis_iface.addPluginToRasterMenu.call_args_list]
    assert (plugin.menu, plugin.action) in calls
    assert (plugin.menu, plugin.install_action) in calls
    assert plugin.menu.replace("&", "") == "SN6 Footprints"
    assert plugin.install_action.text() == "Install dependencies…"
    assert not plugin.action.icon().isNull()


def test_algorithms_show_the_plugin_icon(plugin):
    algorithms = QgsApplication.processingRegistry().providerById("sn6_footprints").algorithms()
    assert len(algorithms) == 3
    for algorithm in algorithms:
        assert not algorithm.icon().isNull(), algorithm.id()
        assert Path(algorithm.svgIconPath()).name == "icon.svg" and Path(algorithm.svgIconPath()).is_file()
        copy = QgsApplication.processingRegistry().createAlgorithmById(algorithm.id())
        assert not copy.icon().isNull() and copy.svgIconPath() == algorithm.svgIconPath()


# --- the start-up check ----------------------------------------------------------------------
def test_an_empty_profile_is_not_set_up(tmp_path):
    assert settings.setup_problem(tmp_path, "") == "missing"
    assert settings.setup_problem(tmp_path, str(tmp_path / "no-such-env")) == "missing"


def test_a_verified_record_is_set_up_and_a_stale_one_needs_repair(verified_profile, tmp_path):
    assert settings.setup_problem(verified_profile, "") is None
    record = environment.read_record(verified_profile)

    stale = tmp_path / "stale"
    environment.write_record(stale, {**record, "requirements_sha256": "0" * 64})
    assert settings.setup_problem(stale, "") == ("repair" if settings.requirements_sha256() else None)

    unverified = tmp_path / "unverified"
    environment.write_record(unverified, {**record, "verified": False})
    assert settings.setup_problem(unverified, "") == "repair"

    gone = tmp_path / "gone"
    environment.write_record(gone, {**record, "python": str(tmp_path / "deleted" / "bin" / "python")})
    assert settings.setup_problem(gone, "") == "missing"

    # An environment the user chose in the settings, which the installer never checked.
    assert settings.setup_problem(tmp_path / "fresh", str(REPO / ".venv")) is None


def test_the_message_bar_offers_install_until_the_dependencies_are_installed(plugin, qgis_iface, tmp_path,
                                                                            verified_profile):
    bar = qgis_iface.messageBar()
    try:
        assert plugin.check_dependencies(tmp_path, "") == "missing"
        item = plugin.setup_message
        assert item is not None and item in bar.items()
        assert item.level() == Qgis.Warning and item.duration() == 0
        assert "PyTorch, rasterio and shapely are not set up yet." in item.text()
        assert item.title() == "SN6 Footprints"
        buttons = item.findChildren(QPushButton, "sn6FootprintsInstallButton")
        assert [b.text() for b in buttons] == ["Install dependencies…"]

        plugin._dependencies_installed()  # what the dialog's installed signal calls
        assert plugin.setup_message is None and item not in bar.items()

        assert plugin.check_dependencies(verified_profile, "") is None
        assert plugin.setup_message is None
    finally:
        plugin.check_dependencies()  # back to the test profile's own state


# --- the install dialog --------------------------------------------------------------------------
def test_install_dialog_shows_the_plan_without_installing(qgis_app, tmp_path):
    from qgis.PyQt.QtTest import QSignalSpy

    from sn6_footprints.ui.install_dialog import InstallDialog

    dialog = InstallDialog(tmp_path, "")
    ready, failed = QSignalSpy(dialog.planReady), QSignalSpy(dialog.planFailed)
    dialog.show()
    assert dialog.state in ("idle", "planning") and not dialog.install_button.isEnabled()
    assert wait_until(qgis_app, lambda: len(ready) or len(failed), 180), dialog.log_text()
    assert len(ready) == 1, dialog.error_message + "\n" + dialog.log_text()
    assert dialog.state == "planned" and dialog.install_button.isEnabled()
    target = environment.default_env_dir(tmp_path)
    shown = dialog.plan_label.text()
    assert str(target) in shown
    assert "PyTorch" in shown and ("CPU build" in shown or "CUDA build" in shown)
    assert not target.exists()  # nothing installed without the click
    assert json.dumps(dialog.plan)  # the plan as the installer printed it
    dialog.cancel()
    assert not dialog.isVisible() and not dialog.is_running()
    dialog.deleteLater()


def test_install_action_opens_the_dialog_and_unload_removes_everything(plugin, qgis_iface, qgis_app):
    dialog = plugin.open_install_dialog()
    try:
        assert dialog.isVisible() and dialog.windowTitle().endswith("Install dependencies")
        assert plugin.open_install_dialog() is dialog  # a second click raises the same one
    finally:
        dialog.shutdown()
    item = plugin.setup_message
    config = processing_config()
    qgis_iface.removePluginRasterMenu.reset_mock()
    extract_action, install_action = plugin.action, plugin.install_action
    plugin.unload()
    try:
        removed = [tuple(call.args) for call in qgis_iface.removePluginRasterMenu.call_args_list]
        assert (plugin.menu, extract_action) in removed and (plugin.menu, install_action) in removed
        assert QgsApplication.processingRegistry().providerById("sn6_footprints") is None
        assert not any(key in config.settings for key in settings.KEYS)
        assert plugin.setup_message is None
        if item is not None:
            assert item not in qgis_iface.messageBar().items()
        assert plugin.action is None and plugin.install_action is None and plugin.install_dialog is None
    finally:
        plugin.initGui()  # the session's plugin fixture stays usable
    assert QgsApplication.processingRegistry().providerById("sn6_footprints") is not None
    assert settings.WORKER_ENV in config.settings


def run_dialog_install(qgis_app, dialog, timeout_s=600):
    """Waits for the plan, clicks Install, waits for the end; the installFinished flag."""
    from qgis.PyQt.QtTest import QSignalSpy

    finished = QSignalSpy(dialog.installFinished)
    assert wait_until(qgis_app, lambda: dialog.state != "planning" and dialog.state != "idle", 180)
    assert dialog.state == "planned", dialog.error_message + "\n" + dialog.log_text()
    dialog.install_button.click()
    assert dialog.state == "installing" and dialog.is_running()
    assert wait_until(qgis_app, lambda: len(finished), timeout_s), dialog.log_text()
    return finished[0][0]


def test_install_dialog_repairs_an_environment_with_progress_and_log(qgis_app, tmp_path):
    """The real installer, in the dialog, on the repository's .venv (everything is installed
    there already, so pip downloads nothing): progress, log lines, success, the record."""
    from qgis.PyQt.QtTest import QSignalSpy

    from sn6_footprints.ui.install_dialog import InstallDialog

    dialog = InstallDialog(tmp_path, str(REPO / ".venv"), cuda="cpu")
    installed = QSignalSpy(dialog.installed)
    dialog.show()
    try:
        assert run_dialog_install(qgis_app, dialog) is True, dialog.log_text()
        assert len(installed) == 1 and dialog.state == "succeeded"
        assert dialog.progress_bar.value() == 100
        log = dialog.log_text()
        assert "torch build cpu" in log and "verifying" in log
        assert "Dependencies installed and verified" in dialog.status_label.text()
        assert str(VENV_PYTHON) in dialog.status_label.text()
        assert dialog.cancel_button.text() == "Close"
        assert settings.setup_problem(tmp_path, "") is None  # the installer's record is there
    finally:
        dialog.shutdown()


def test_install_dialog_shows_the_one_line_error_and_the_log(qgis_app, tmp_path):
    from sn6_footprints.ui.install_dialog import InstallDialog

    not_an_env = tmp_path / "not-an-env"
    not_an_env.mkdir()
    (not_an_env / "notes.txt").write_text("mine")
    dialog = InstallDialog(tmp_path / "profile", str(not_an_env), cuda="cpu")
    dialog.show()
    try:
        assert run_dialog_install(qgis_app, dialog, 120) is False
        status = dialog.status_label.text()
        assert status.startswith("Installation failed: ")
        assert "exists but holds no Python environment" in status
        assert dialog.error_message in status and "\n" not in dialog.error_message
        log_path = environment.install_log_path(tmp_path / "profile")
        assert f"Full log: {log_path}" in status and log_path.is_file()
        assert dialog.install_button.isEnabled() and dialog.install_button.text() == "Try again"
    finally:
        dialog.shutdown()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the installer's processes")
def test_cancel_stops_the_installer_and_its_children(qgis_app, tmp_path):
    from qgis.PyQt.QtTest import QSignalSpy

    from sn6_footprints.ui.install_dialog import InstallDialog

    env = tmp_path / "new-env"
    dialog = InstallDialog(tmp_path / "profile", str(env), cuda="cpu")
    finished = QSignalSpy(dialog.installFinished)
    dialog.show()
    try:
        assert wait_until(qgis_app, lambda: dialog.state == "planned", 180), dialog.log_text()
        dialog.install_button.click()
        # Cancel once the installer is at work (the venv being made, or pip running).
        assert wait_until(qgis_app, lambda: "creating the environment" in dialog.log_text()
                          or len(finished), 120), dialog.log_text()
        assert not len(finished), dialog.log_text()
        started = time.monotonic()
        dialog.cancel_button.click()
        assert wait_until(qgis_app, lambda: len(finished), 10)
        assert time.monotonic() - started < 6
        assert finished[0][0] is False and not dialog.is_running()
        assert "cancelled" in dialog.status_label.text()
        assert dialog.install_button.isEnabled()  # Install again repairs it
        assert wait_until(qgis_app, lambda: not _processes_mentioning(str(env)), 10), \
            _processes_mentioning(str(env))
    finally:
        dialog.shutdown()
