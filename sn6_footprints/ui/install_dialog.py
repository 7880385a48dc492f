"""*Install dependencies…*: shows what the headless installer will do, and runs it.

The dialog never installs anything on its own: it first runs
``<base python> -m sn6_footprints.install --plan --json`` and shows the plan (the PyTorch build
and why, the download size, where the environment goes); only the **Install** button runs the
installer with ``--events``. Both run in a ``QProcess``, so QGIS stays responsive; the event
lines (``sn6_footprints.worker.protocol``) feed the progress bar and the log pane; Cancel stops
the process. Nothing here imports torch, rasterio, shapely or the plugin's core.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtCore import QCoreApplication, QProcess, QProcessEnvironment, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QHBoxLayout, QLabel,
                                 QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout)

from ..worker import protocol
from ..worker.environment import install_log_path, package_root, plugin_data_dir, worker_environ

LOG_TAG = "SN6 Footprints"
KILL_AFTER_MS = 3000
"""Cancel asks the installer to stop (SIGTERM), and kills it if it is still running then."""


def installer_arguments(profile_dir, env_dir: str = "", cuda: str = "auto", *flags: str) -> list[str]:
    """The installer's command line after the interpreter."""
    arguments = ["-m", "sn6_footprints.install", "--profile", str(profile_dir)]
    if env_dir:
        arguments += ["--env", str(env_dir)]
    if cuda:
        arguments += ["--cuda", cuda]
    return arguments + list(flags)


def installer_environment() -> QProcessEnvironment:
    """QGIS's environment without what points a Python or GDAL at QGIS's own installation,
    and the plugin's parent folder as the only ``PYTHONPATH`` (the worker's environment)."""
    environment = QProcessEnvironment()
    for name, value in worker_environ().items():
        environment.insert(name, value)
    return environment


class InstallDialog(QDialog):
    """The plan, then on **Install** the installer's progress and log."""

    planReady = pyqtSignal(dict)  # noqa: N815 - Qt signal naming
    planFailed = pyqtSignal(str)  # noqa: N815
    installFinished = pyqtSignal(bool)  # noqa: N815 - True on success
    installed = pyqtSignal()

    def __init__(self, profile_dir, env_dir: str = "", parent=None, python=None, cuda: str = "auto"):
        super().__init__(parent)
        self.profile_dir = Path(profile_dir)
        self.env_dir = env_dir or ""
        self.python = Path(python) if python else None
        self.plan: dict | None = None
        self.result: dict | None = None
        self.error_message = ""
        self.log_path: Path | None = None
        self.state = "idle"  # planning, planned, plan-failed, installing, succeeded, failed, cancelled
        self._process: QProcess | None = None
        self._stdout = ""
        self._stderr = ""
        self._log_lines: list[str] = []
        self._cancelling = False
        self._build_widgets(cuda)
        QTimer.singleShot(0, self.start_plan)

    # --- widgets -------------------------------------------------------------------------------
    def tr(self, text):  # noqa: D102 - one translation context for the dialog
        return QCoreApplication.translate("InstallDialog", text)

    def _build_widgets(self, cuda: str):
        self.setObjectName("sn6FootprintsInstallDialog")
        self.setWindowTitle(self.tr("SN6 Footprints — Install dependencies"))
        self.setMinimumSize(620, 460)
        layout = QVBoxLayout(self)

        intro = QLabel(self.tr("SN6 Footprints runs PyTorch, rasterio and shapely in a Python "
                               "environment of its own, apart from QGIS's Python. Nothing is "
                               "downloaded or installed until you click Install."))
        intro.setWordWrap(True)
        layout.addWidget(intro)

        row = QHBoxLayout()
        row.addWidget(QLabel(self.tr("PyTorch build:")))
        self.cuda_choice = QComboBox()
        self.cuda_choice.setObjectName("cudaChoice")
        self.cuda_choice.addItem(self.tr("Automatic (CUDA when an NVIDIA GPU is found)"), "auto")
        self.cuda_choice.addItem(self.tr("CPU only"), "cpu")
        self.cuda_choice.setCurrentIndex(max(0, self.cuda_choice.findData(cuda)))
        self.cuda_choice.currentIndexChanged.connect(self._cuda_choice_changed)
        row.addWidget(self.cuda_choice, 1)
        layout.addLayout(row)

        self.plan_label = QLabel(self.tr("Working out what is needed…"))
        self.plan_label.setObjectName("planLabel")
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextFormat(Qt.RichText)
        layout.addWidget(self.plan_label)

        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progressBar")
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(False)
        layout.addWidget(self.progress_bar)

        self.log_pane = QPlainTextEdit()
        self.log_pane.setObjectName("logPane")
        self.log_pane.setReadOnly(True)
        self.log_pane.setMaximumBlockCount(5000)
        layout.addWidget(self.log_pane, 1)

        self.status_label = QLabel("")
        self.status_label.setObjectName("statusLabel")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status_label)

        self.buttons = QDialogButtonBox()
        self.install_button = QPushButton(self.tr("Install"))
        self.install_button.setObjectName("installButton")
        self.install_button.setEnabled(False)
        self.install_button.clicked.connect(self.start_install)
        self.buttons.addButton(self.install_button, QDialogButtonBox.AcceptRole)
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.clicked.connect(self.cancel)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.RejectRole)
        layout.addWidget(self.buttons)

    def _cuda_choice_changed(self, _index):
        if self.state in ("planning", "planned", "plan-failed", "idle"):
            self.start_plan()

    @property
    def cuda(self) -> str:
        return self.cuda_choice.currentData() or "auto"

    # --- processes -----------------------------------------------------------------------------
    def _interpreter(self) -> str:
        if self.python is None:
            from ..worker.environment import base_python

            self.python = Path(base_python())
        return str(self.python)

    def _start(self, flags: tuple[str, ...], on_finished) -> bool:
        self._stop_process()
        try:
            program = self._interpreter()
        except RuntimeError as error:  # no base interpreter found
            self._log(str(error))
            return False
        self._stdout = ""
        self._stderr = ""
        process = QProcess(self)
        process.setProcessEnvironment(installer_environment())
        process.setWorkingDirectory(str(package_root()))
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(on_finished)
        process.errorOccurred.connect(self._process_error)
        self._process = process
        arguments = installer_arguments(self.profile_dir, self.env_dir, self.cuda, *flags)
        self._log(f"$ {program} {' '.join(arguments)}")
        QgsMessageLog.logMessage(f"Installer: {program} {' '.join(arguments)}", LOG_TAG, Qgis.Info)
        process.start(program, arguments)
        return True

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for signal in (process.finished, process.readyReadStandardOutput,
                       process.readyReadStandardError, process.errorOccurred):
            try:
                signal.disconnect()
            except TypeError:
                pass
        if process.state() != QProcess.NotRunning:
            process.kill()
            process.waitForFinished(2000)
        process.deleteLater()

    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.NotRunning

    def _process_error(self, error):
        if error == QProcess.FailedToStart and self._process is not None:
            message = self.tr("Could not start Python ({0}): {1}").format(
                self._interpreter(), self._process.errorString())
            self._process.deleteLater()
            self._process = None
            self._log(message)
            if self.state == "planning":
                self._plan_failed(message)
            else:
                self._install_failed(message)

    def _read_stdout(self):
        if self._process is None:
            return
        self._stdout += bytes(self._process.readAllStandardOutput()).decode("utf-8", "replace")
        if self.state == "installing":
            *lines, self._stdout = self._stdout.split("\n")
            for line in lines:
                self._handle_event_line(line)

    def _read_stderr(self):
        if self._process is None:
            return
        self._stderr += bytes(self._process.readAllStandardError()).decode("utf-8", "replace")
        *lines, self._stderr = self._stderr.split("\n")
        for line in lines:
            if line.strip():
                self._log(line.rstrip())

    def _drain(self):
        self._read_stdout()
        self._read_stderr()
        if self._stderr.strip():
            self._log(self._stderr.rstrip())
        self._stderr = ""

    # --- the plan ------------------------------------------------------------------------------
    def start_plan(self) -> None:
        """Runs ``--plan --json`` (asynchronously) and shows its answer."""
        self.state = "planning"
        self.plan = None
        self.install_button.setEnabled(False)
        self.plan_label.setText(html.escape(self.tr("Working out what is needed…")))
        self.status_label.setText("")
        if not self._start(("--plan", "--json"), self._plan_finished):
            self._plan_failed(self._one_line())

    def _plan_finished(self, exit_code, exit_status):
        self._drain()
        output = self._stdout
        self._stop_process()
        if exit_status != QProcess.NormalExit:
            self._plan_failed(self.tr("The installer stopped unexpectedly."))
            return
        if exit_code != 0:
            self._plan_failed(self._one_line(output) or self.tr(
                "The installer could not make a plan (exit code {0}).").format(exit_code))
            return
        try:
            plan = json.loads(output[output.index("{"):output.rindex("}") + 1])
        except ValueError:
            self._plan_failed(self.tr("The installer's plan could not be read."))
            self._log(output)
            return
        self.plan = plan
        self.state = "planned"
        if plan.get("log"):
            self.log_path = Path(str(plan["log"]))
        self.plan_label.setText(self.describe_plan(plan))
        self.install_button.setEnabled(not self.plan_blockers(plan))
        self.planReady.emit(plan)

    def _plan_failed(self, message: str):
        self.state = "plan-failed"
        self.error_message = message
        self.plan_label.setText("<b>{}</b> {}".format(html.escape(self.tr("No plan:")), html.escape(message)))
        self.install_button.setEnabled(False)
        QgsMessageLog.logMessage(f"Installer plan failed: {message}", LOG_TAG, Qgis.Warning)
        self.planFailed.emit(message)

    def _one_line(self, stdout: str = "") -> str:
        """The installer's one-line error: its last error event, else the last line it wrote."""
        for line in reversed(stdout.splitlines()):
            event = protocol.decode(line)
            if event and event.get("event") == "error":
                return str(event.get("message", ""))
        lines = [line.strip() for line in self._log_lines if line.strip() and not line.startswith("$ ")]
        return lines[-1] if lines else ""

    def describe_plan(self, plan: dict) -> str:
        """The installer's plan as a few lines of rich text: where, which PyTorch build and
        why, the estimated download, the free disk space, what blocks an install."""
        tr = self.tr
        rows = []
        env = plan.get("env", "")
        state = tr("exists: it will be repaired") if plan.get("env_exists") else tr("will be created")
        rows.append((tr("Installs into"), f"{env} ({state})"))
        torch = plan.get("torch") or {}
        variant = str(torch.get("variant", ""))
        build = tr("CPU build") if variant == "cpu" else tr("CUDA build ({0})").format(variant)
        reason = torch.get("reason")
        rows.append((tr("PyTorch"), build + (f" — {reason}" if reason else "")))
        missing = plan.get("missing")
        packages = ", ".join(plan.get("packages") or [])
        if plan.get("env_exists") and missing is not None:
            packages += " — " + (tr("missing now: {0}").format(", ".join(missing)) if missing
                                 else tr("all present; versions are checked"))
        rows.append((tr("Packages"), packages))
        download = plan.get("download_estimate_mb") or {}
        if "total" in download:
            rows.append((tr("Download (estimated)"), tr("about {0} MB").format(download["total"])))
        disk = plan.get("disk") or {}
        if "free_mb" in disk:
            rows.append((tr("Disk"), tr("{0} MB free at {1}, about {2} MB needed").format(
                disk["free_mb"], disk.get("path", ""), disk.get("needed_estimate_mb", "?"))))
        blockers = self.plan_blockers(plan)
        for text in list(plan.get("warnings") or []) + blockers:
            rows.append((tr("Warning"), str(text)))
        return "<br>".join(f"<b>{html.escape(k)}:</b> {html.escape(v)}" for k, v in rows)

    def plan_blockers(self, plan: dict) -> list[str]:
        """What would make the install fail at once (the installer refuses with these)."""
        blockers = []
        if plan.get("create_venv") and plan.get("base_python_error"):
            blockers.append(str(plan["base_python_error"]))
        disk = plan.get("disk") or {}
        try:
            if float(disk["free_mb"]) < float(disk["needed_estimate_mb"]):
                blockers.append(self.tr("not enough free disk space: free some space or choose "
                                        "another environment folder in Processing → Options → "
                                        "Providers → SN6 Footprints"))
        except (KeyError, TypeError, ValueError):
            pass
        return blockers

    # --- the installation ----------------------------------------------------------------------
    def start_install(self) -> None:
        """Runs the installer with ``--events``; only ever called by the Install button."""
        if self.state != "planned":
            return
        self.state = "installing"
        self.result = None
        self.error_message = ""
        self._cancelling = False
        self.install_button.setEnabled(False)
        self.cuda_choice.setEnabled(False)
        self.progress_bar.setVisible(True)
        self.progress_bar.setRange(0, 0)  # busy until the first progress event
        self.status_label.setText(self.tr("Installing… QGIS stays usable; this can take several minutes."))
        if not self._start(("--events",), self._install_finished):
            self._install_failed(self._one_line())

    def _handle_event_line(self, line: str):
        event = protocol.decode(line)
        if event is None:
            if line.strip():
                self._log(line.rstrip())
            return
        kind = event["event"]
        if kind == "progress":
            try:
                percent = float(event.get("percent", 0))
            except (TypeError, ValueError):
                percent = 0.0
            self.progress_bar.setRange(0, 100)
            self.progress_bar.setValue(int(max(0.0, min(100.0, percent))))
            if event.get("message"):
                self._log(str(event["message"]))
        elif kind in ("info", "warning"):
            prefix = self.tr("Warning: ") if kind == "warning" else ""
            self._log(prefix + str(event.get("message", "")))
        elif kind == "result":
            data = event.get("data")
            self.result = data if isinstance(data, dict) else {"data": data}
        elif kind == "error":
            self.error_message = str(event.get("message", ""))
            self._log(self.tr("Error: ") + self.error_message)

    def _install_finished(self, exit_code, exit_status):
        self._drain()
        if self._stdout.strip():
            self._handle_event_line(self._stdout)
        self._stdout = ""
        self._stop_process()
        if self._cancelling:
            self._cancelled()
            return
        if exit_status == QProcess.NormalExit and exit_code == 0:
            self.state = "succeeded"
            self.progress_bar.setRange(0, 100)
            self.progress_bar.setValue(100)
            result = self.result or {}
            where = result.get("python") or result.get("env")
            message = self.tr("Dependencies installed and verified. The SN6 Footprints algorithms are ready.")
            if where:
                message += " " + self.tr("Worker Python: {0}").format(where)
            self.status_label.setText(message)
            self.cancel_button.setText(self.tr("Close"))
            self._write_log()
            QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Success)
            self.installFinished.emit(True)
            self.installed.emit()
            return
        if not self.error_message:
            self.error_message = (self._one_line() if exit_status == QProcess.NormalExit
                                  else self.tr("The installer stopped unexpectedly."))
        self._install_failed(self.error_message)

    def _install_failed(self, message: str):
        self.state = "failed"
        self.error_message = message
        self.progress_bar.setRange(0, 100)
        log_path = self._write_log()
        text = self.tr("Installation failed: {0}").format(message)
        if log_path is not None:
            text += "\n" + self.tr("Full log: {0}").format(log_path)
        self.status_label.setText(text)
        self.cancel_button.setText(self.tr("Close"))
        self.cuda_choice.setEnabled(True)
        self.install_button.setText(self.tr("Try again"))
        self.install_button.setEnabled(self.plan is not None)
        if self.plan is not None:
            self.state = "planned"  # Try again runs the same plan
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.Critical)
        self.installFinished.emit(False)

    def cancel(self) -> None:
        """Stops a running installer (SIGTERM, then kill) or closes the dialog."""
        if self.state == "installing" and self.is_running():
            self._cancelling = True
            process = self._process
            self.status_label.setText(self.tr("Cancelling…"))
            process.terminate()
            QTimer.singleShot(KILL_AFTER_MS, lambda: self._kill_if_running(process))
            return
        if self.state == "planning":
            self._stop_process()
        self.reject()

    def _kill_if_running(self, process):
        try:
            if process is self._process and process.state() != QProcess.NotRunning:
                process.kill()
        except RuntimeError:  # already deleted
            pass

    def _cancelled(self):
        self._cancelling = False
        self.state = "cancelled"
        self.progress_bar.setRange(0, 100)
        self._log(self.tr("Cancelled."))
        self._write_log()
        self.status_label.setText(self.tr("Installation cancelled. Click Install to start again; it "
                                          "repairs a partly made environment."))
        self.cancel_button.setText(self.tr("Close"))
        self.cuda_choice.setEnabled(True)
        self.install_button.setEnabled(self.plan is not None)
        if self.plan is not None:
            self.state = "planned"
        QgsMessageLog.logMessage("Installation cancelled", LOG_TAG, Qgis.Info)
        self.installFinished.emit(False)

    # --- log -----------------------------------------------------------------------------------
    def _log(self, text: str):
        self._log_lines.append(text)
        self.log_pane.appendPlainText(text)

    def log_text(self) -> str:
        return "\n".join(self._log_lines)

    def _write_log(self) -> Path | None:
        """The installer's own log when it wrote one (named in the plan, or its usual place
        in the profile), else the dialog's log pane written next to the installer's record."""
        for path in (self.log_path, install_log_path(self.profile_dir)):
            if path is not None and Path(path).is_file():
                self.log_path = Path(path)
                return self.log_path
        try:
            path = plugin_data_dir(self.profile_dir) / "install-dialog.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.log_text() + "\n", encoding="utf-8")
        except OSError as error:
            QgsMessageLog.logMessage(f"Could not write the installer log: {error}", LOG_TAG, Qgis.Warning)
            return None
        self.log_path = path
        return path

    # --- closing -------------------------------------------------------------------------------
    def reject(self):
        if self.is_running() and self.state == "installing" and not self._cancelling:
            self.cancel()
            return
        self._stop_process()
        super().reject()

    def shutdown(self) -> None:
        """Kills whatever runs and closes at once (the plugin's unload)."""
        self._cancelling = True
        self._stop_process()
        self.state = "cancelled"
        super().reject()
