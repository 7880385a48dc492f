"""Desktop smoke test: the real ``qgis.bin`` under Xvfb, as a new user would run it.

A fresh profile (throw-away HOME and XDG_RUNTIME_DIR), the plugin unzipped from
``make package`` into the profile's plugin folder and enabled in its QGIS3.ini, no PYTHONPATH:
the worker environment is found only through the profile's record (``worker.json``).
``drive_qgis.py`` (run by QGIS with ``--code``) presses the plugin's toolbar button, runs the
extraction dialog on the active layer in the background task, takes a screenshot, cancels a
second run and exits; it writes a JSON report that this test asserts on.

Run alone: ``.venv/bin/python -m pytest -q tests/desktop -s`` (under 3 minutes on 2 cores).
"""
from __future__ import annotations

import configparser
import json
import os
import select
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PLUGIN = "sn6_footprints"
ALGORITHM = "sn6_footprints:extract_footprints"
DRIVER = Path(__file__).with_name("drive_qgis.py")
VENV = REPO_ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
QML = REPO_ROOT / "resources" / "styles" / "footprints.qml"
QGIS_TIMEOUT_S = 170          # the whole desktop session, start-up to exit
CANCEL_LIMIT_S = 2.0          # the issue: a cancelled run stops within 2 s


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (apt-get install qgis xvfb; the Makefile's "
                    "APT_PACKAGES has both): the desktop smoke test needs it")
    return path


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("desktop")


@pytest.fixture(scope="module")
def plugin_zip(session_dir) -> Path:
    """``make package`` into a temporary BUILD/DIST, so the checkout's build/ and dist/ stay."""
    for program in ("qgis.bin", "Xvfb", "zip"):  # skip before building anything
        require(program)
    build, dist = session_dir / "build", session_dir / "dist"
    completed = subprocess.run(["make", "-s", "package", f"BUILD={build}", f"DIST={dist}"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, f"make package failed:\n{completed.stdout}\n{completed.stderr}"
    zips = sorted(dist.glob(f"{PLUGIN}-*.zip"))
    assert len(zips) == 1, f"make package left {zips} in {dist}"
    return zips[0]


def simulate(path: Path, size: int, seed: int) -> Path:
    subprocess.run([str(VENV_PYTHON), "-m", PLUGIN, "simulate", str(path), str(path.with_suffix(".gpkg")),
                    "--size", str(size), "--seed", str(seed), "--quiet"],
                   cwd=REPO_ROOT, check=True, capture_output=True, timeout=120)
    return path


def write_profile_ini(profile: Path) -> None:
    """A fresh profile's QGIS3.ini: the plugin enabled, nothing that would wait for a click."""
    ini = configparser.RawConfigParser(delimiters=("=",))
    ini.optionxform = str  # keys are case-sensitive
    ini["PythonPlugins"] = {PLUGIN: "true"}
    ini["qgis"] = {"checkVersion": "false", "showTips": "false", "allowCrashReporting": "false"}
    # File > Exit asks "temporary layers ... will be lost?" for every layer under /tmp (where
    # pytest keeps the test's files; QgsMapLayer::isTemporary); the test answers nothing
    ini["app"] = {"askToSaveMemoryLayers": "false"}
    ini["core"] = {"NewsFeed\\httpsfeedqgisorg\\disabled": "true"}
    # the default, but the test relies on it: the dialog stays open after a run (run twice)
    ini["Processing"] = {"Configuration\\KEEP_DIALOG_OPEN": "true"}
    (profile / "QGIS").mkdir(parents=True, exist_ok=True)
    with open(profile / "QGIS" / "QGIS3.ini", "w", encoding="utf-8") as stream:
        ini.write(stream, space_around_delimiters=False)


def record_worker_environment(profile: Path, plugins: Path) -> dict:
    """The profile's record of the worker environment, as the installer writes it.

    With the installer in the tree, its own ``--check`` (run by QGIS's Python from the ZIP's
    copy, as the plugin would) verifies make setup's venv and writes the record; before that,
    the record is written here in the installer's format."""
    record = profile / PLUGIN / "worker.json"
    if (REPO_ROOT / PLUGIN / "install.py").exists():
        completed = subprocess.run(
            ["/usr/bin/python3", "-m", f"{PLUGIN}.install", "--check", "--env", str(VENV),
             "--profile", str(profile)],
            cwd=plugins, capture_output=True, text=True, timeout=300, env=user_environment())
        assert completed.returncode == 0, f"installer --check failed:\n{completed.stdout}\n{completed.stderr}"
        assert record.exists(), f"installer --check wrote no {record}:\n{completed.stdout}"
    else:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"env": str(VENV), "python": str(VENV_PYTHON)}), encoding="utf-8")
    return json.loads(record.read_text(encoding="utf-8"))


def user_environment(**extra) -> dict:
    """The environment of an ordinary session: no Python path, virtualenv or QGIS overrides
    (pytest-qgis sets QGIS_CUSTOM_CONFIG_PATH for the in-process tests; QGIS must not see it)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("QGIS_", "PYTEST_"))
           and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "QT_QPA_PLATFORM",
                           "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME")}
    venv_bin = str(VENV / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if p and os.path.realpath(p) != os.path.realpath(venv_bin))
    env.update(extra)
    return env


def start_xvfb(log: Path) -> tuple[subprocess.Popen, str]:
    """Xvfb on a display it picks itself (-displayfd: no race with other X servers)."""
    read_end, write_end = os.pipe()
    with open(log, "wb") as stream:
        xvfb = subprocess.Popen([require("Xvfb"), "-displayfd", str(write_end), "-screen", "0", "1600x1000x24",
                                 "-nolisten", "tcp"], pass_fds=[write_end], stdout=stream, stderr=stream,
                                start_new_session=True)
    os.close(write_end)
    number = b""
    deadline = time.monotonic() + 20
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], 0.5)
        if ready:
            chunk = os.read(read_end, 16)
            if not chunk:
                break
            number += chunk
    os.close(read_end)
    if not number.strip().isdigit():
        stop(xvfb)
        pytest.fail(f"Xvfb did not start: {log.read_text(errors='replace')[-2000:]}")
    return xvfb, f":{number.strip().decode()}"


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as stream:
                    fields = stream.read().rsplit(")", 1)[1].split()
                table[int(entry)] = (int(fields[1]), int(fields[2]))
            except (OSError, ValueError, IndexError):
                continue
    return table


def group_members(pgid: int) -> list[int]:
    """Processes still in a process group started here (QGIS's, after QGIS has exited: a
    worker left running)."""
    return [pid for pid, (_parent, group) in process_table().items() if group == pgid and pid != pgid]


def descendants(pid: int) -> list[int]:
    """The process ids below pid (QGIS's worker, should it have left QGIS's process group)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _group) in process_table().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop(process: subprocess.Popen | None) -> None:
    """Terminates a process group started here (start_new_session) and whatever it started,
    then kills what is left; only these processes, by id."""
    if process is None:
        return
    below = descendants(process.pid) + group_members(process.pid)
    if process.poll() is None:
        for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def desktop_run(session_dir, plugin_zip):
    """Runs the whole desktop session once; yields (report, timings, paths)."""
    qgis_bin = require("qgis.bin")
    require("Xvfb")
    if not VENV_PYTHON.exists():
        pytest.skip(f"no worker environment at {VENV} (make setup makes it)")
    started = time.monotonic()
    work = session_dir / "work"
    work.mkdir()
    home = session_dir / "home"
    runtime = session_dir / "runtime"
    runtime.mkdir(mode=0o700)
    profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(plugins)
    assert (plugins / PLUGIN / "metadata.txt").exists(), f"{plugin_zip} has no {PLUGIN}/metadata.txt"
    write_profile_ini(profile)
    worker_record = record_worker_environment(profile, plugins)

    scene = simulate(work / "scene.tif", 256, 424242)
    big_scene = simulate(work / "big_scene.tif", 1024, 7)
    prepared = time.monotonic()
    config = {
        "report": str(session_dir / "report.json"),
        "scene": str(scene), "big_scene": str(big_scene), "qml": str(QML),
        "output": str(work / "footprints.gpkg"), "cancel_output": str(work / "cancelled.gpkg"),
        # small tiles make the second run long enough (several seconds) to cancel part-way
        "cancel_parameters": {"TILE_SIZE": 64, "OVERLAP": 32},
        "cancel_after_s": 1.0,
        "run_timeout_s": 90,
        "screenshot": str(session_dir / "desktop.png"),
        "canvas_screenshot": str(session_dir / "canvas.png"),
    }
    config_path = session_dir / "config.json"
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")

    xvfb, display = start_xvfb(session_dir / "xvfb.log")
    qgis = None
    env = user_environment(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), DISPLAY=display,
                           QT_QPA_PLATFORM="xcb", SN6_SMOKE_CONFIG=str(config_path))
    qgis_log = session_dir / "qgis.log"
    try:
        with open(qgis_log, "wb") as stream:
            qgis = subprocess.Popen([qgis_bin, "--noversioncheck", "--nologo", "--code", str(DRIVER)],
                                    cwd=work, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            returncode = qgis.wait(QGIS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = None
        time.sleep(0.5)
        survivors = group_members(qgis.pid) if returncode is not None else []
    finally:
        stop(qgis)
        stop(xvfb)
    ended = time.monotonic()
    report_path = Path(config["report"])
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    log_tail = qgis_log.read_text(errors="replace")[-4000:]
    timings = {"prepare_s": round(prepared - started, 1), "qgis_s": round(ended - prepared, 1),
               "total_s": round(ended - started, 1), "qgis_returncode": returncode,
               "survivors": survivors}
    yield report, timings, config, log_tail, worker_record


def steps(report: dict) -> dict:
    return {step["step"]: step for step in report.get("steps", [])}


@pytest.mark.timeout(QGIS_TIMEOUT_S + 120)
def test_desktop_smoke(desktop_run):
    report, timings, config, log_tail, worker_record = desktop_run
    by_step = steps(report)
    context = (f"\nreport steps: {json.dumps(report.get('steps'), indent=1, default=str)[-6000:]}"
               f"\nerrors: {report.get('errors')}\nQGIS output (tail):\n{log_tail}")
    print(f"\ndesktop smoke: timings {timings}; worker record {worker_record}")
    assert timings["qgis_returncode"] is not None, f"QGIS did not exit within {QGIS_TIMEOUT_S} s{context}"
    assert report, f"the driver wrote no report{context}"
    assert not report["errors"], f"the driver failed{context}"
    assert report["done"] and "exit" in by_step, context
    assert not report.get("exit_blockers"), f"File > Exit did not close QGIS: {report['exit_blockers']}"
    assert timings["qgis_returncode"] == 0, f"QGIS exited with {timings['qgis_returncode']}{context}"
    assert not timings["survivors"], f"processes of QGIS's were left running after it exited: {timings}"

    # 1. the plugin loaded from the ZIP in a plain environment; algorithms and button are there
    plugin = by_step["plugin"]
    assert plugin["python_path"] is None, "QGIS ran with a PYTHONPATH"
    assert plugin["loaded"] and plugin["active"], plugin
    assert plugin["provider"] and ALGORITHM in plugin["algorithms"], plugin
    assert plugin["action"] and plugin["toolbars"], f"the plugin's button is in no toolbar: {plugin}"
    bars = plugin["message_bar"] + by_step["exit"]["message_bar"]
    assert not bars, f"message bar items although the worker environment is set up: {bars}"
    assert any(m.replace("&", "").startswith("Raster > ") for m in plugin["menus"]), \
        f"no Raster menu entry (the README promises Raster > SN6 Footprints): {plugin['menus']}"

    # 2. the button opens the extraction dialog on the active layer; Run completes in the background
    dialog = by_step["dialog"]
    assert dialog["algorithm"] == ALGORITHM, dialog
    assert len(dialog["input_choices"]) == 2, dialog  # a decoy raster, so the choice means something
    assert dialog["input_is_active_layer"], f"the active layer is not pre-selected in INPUT: {dialog}"
    clicked = by_step["first_run_clicked"]
    assert clicked["running"] and clicked["active_tasks"] >= 1, f"Run did not start a background task: {clicked}"
    first = by_step["first_done"]
    assert first["ok"] is True, f"the first run failed: {first}"
    assert first["output_exists"] and first["layers"], f"no footprint layer in the project: {first}"
    assert len(first["layers"]) == 1 and "scene" in first["layers"][0], \
        f"one layer for the output, named after the input (issue 10): {first['layers']}"
    assert first["gui_max_gap_s"] < 2.0, f"the GUI thread was blocked during the run: {first}"
    assert worker_record["python"] in first["log_tail"], \
        f"the run's log does not name the recorded worker {worker_record['python']}: {first['log_tail']}"
    assert first["features"] and first["features"] > 0, first
    style = first["style"]
    assert style["renderer"] == "singleSymbol", style
    assert (style["fill"], style["outline"]) == (first["qml_fill"], first["qml_outline"]), \
        f"the footprint layer does not carry footprints.qml: {style} vs {first['qml_fill']}/{first['qml_outline']}"
    shot = by_step["screenshot"]
    assert shot["saved"] and Path(config["screenshot"]).stat().st_size > 0, shot
    assert shot["canvas_outline_pixels"] > 0, f"no footprint outline drawn on the canvas: {shot}"
    print(f"desktop smoke: screenshot {config['screenshot']} (canvas {config['canvas_screenshot']}, "
          f"{shot['method']})")

    # 3. a second run cancelled from the dialog stops within 2 s and leaves nothing
    cancel = by_step["cancel_done"]
    assert cancel["cancel_method"] == "dialog.cancelButton().click()", cancel
    assert cancel["ok"] is not True, f"the cancelled run reported success: {cancel}"
    assert cancel["cancel_latency_s"] < CANCEL_LIMIT_S, f"cancel took {cancel['cancel_latency_s']} s: {cancel}"
    assert not cancel["output_exists"] and not cancel["output_leftovers"], f"cancel left output: {cancel}"
    assert not cancel["layers"], f"the cancelled run added a layer: {cancel}"
    assert not [c for c in cancel["children_after"] if PLUGIN in c[1]], \
        f"a worker survived the cancel: {cancel['children_after']}"
    assert not cancel["worker_temp_dirs_left"], f"the worker's temporary files survived the cancel: {cancel}"
    print(f"desktop smoke: first run {first['run_s']} s, cancel after {cancel['started_to_cancel_s']} s "
          f"at {cancel['progress_at_cancel']:.1f} %, stopped in {cancel['cancel_latency_s']} s")

    # 4. no Python error in the message log (signal since start-up of the driver, and the panel,
    # which also holds what was logged while the plugin loaded)
    cancel_at = next(s["t"] for s in report["steps"] if s["step"] == "second_run_clicked")
    python_errors = [m for m in report["messages"] if m["tag"] == "Python error" or "Traceback" in m["message"]]
    assert not python_errors, python_errors
    critical = [m for m in report["messages"] if m["level"] >= 2  # Qgis.Critical
                and not (m["tag"] == "Processing" and m["t"] >= cancel_at and "ancel" in m["message"])]
    assert not critical, f"critical messages in the log: {critical}"
    panel = report.get("message_log_panel", {})
    assert "Python error" not in panel, panel.get("Python error")
    assert "Python warning" not in panel, panel.get("Python warning")
    assert not [tag for tag, text in panel.items() if "Traceback" in text], panel
    assert not report.get("other_dialogs"), f"unexpected dialogs were open: {report['other_dialogs']}"
    assert timings["total_s"] < 180, timings
