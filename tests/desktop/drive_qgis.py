"""Drives the real QGIS desktop for the smoke test; run by ``qgis.bin --code drive_qgis.py``.

QGIS executes this file in its own Python after the main window is up. Nothing here blocks the
GUI thread: every step is a short callback chained with ``QTimer.singleShot``, and waiting is
polling with a timer. (The plugin's button opens the dialog with ``exec_()``, a nested event
loop; the timers keep firing inside it.) Every step writes the JSON report again, so a run that
hangs still leaves what it got to; the pytest side (test_desktop_smoke.py) asserts on it.

Configuration comes from the JSON file named by ``SN6_SMOKE_CONFIG`` (``--code`` runs the file
with ``exec``, so there is no ``__file__`` or ``argv`` to use).
"""
import json
import os
import time
import traceback
import xml.etree.ElementTree as ElementTree

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (QAction, QApplication, QDialog, QMessageBox, QPlainTextEdit, QTabWidget,
                                 QTextEdit, QToolBar, QWidget)
from qgis.utils import iface

with open(os.environ["SN6_SMOKE_CONFIG"], encoding="utf-8") as sn6_stream:
    SN6_CONFIG = json.load(sn6_stream)
SN6_STARTED = time.monotonic()
SN6_REPORT = {"steps": [], "messages": [], "errors": [], "done": False}
SN6_STATE = {}
PLUGIN = "sn6_footprints"
ACTION_NAME = "sn6FootprintsExtract"


def sn6_now():
    return round(time.monotonic() - SN6_STARTED, 3)


def sn6_write_report():
    path = SN6_CONFIG["report"]
    with open(path + ".part", "w", encoding="utf-8") as stream:
        json.dump(SN6_REPORT, stream, indent=1, default=str)
    os.replace(path + ".part", path)


def sn6_step(name, **fields):
    SN6_REPORT["steps"].append(dict(step=name, t=sn6_now(), **fields))
    sn6_write_report()


def sn6_on_message(message, tag, level):
    SN6_REPORT["messages"].append({"t": sn6_now(), "tag": tag, "level": int(level), "message": message})


QgsApplication.messageLog().messageReceived.connect(sn6_on_message)


def sn6_guarded(function):
    """A timer callback that never raises into QGIS (which would open a stack-trace dialog):
    an exception is recorded and the driver goes straight to the exit."""
    def run(*args):
        try:
            function(*args)
        except Exception:  # noqa: BLE001 - recorded in the report; the test fails on it
            SN6_REPORT["errors"].append({"t": sn6_now(), "in": function.__name__,
                                         "traceback": traceback.format_exc()})
            sn6_write_report()
            if not SN6_STATE.get("exiting"):
                QTimer.singleShot(0, sn6_exit)
    run.__name__ = function.__name__
    return run


def sn6_later(ms, function, *args):
    QTimer.singleShot(ms, lambda: sn6_guarded(function)(*args))


def sn6_fail(why):
    raise RuntimeError(why)


def sn6_wait(condition, then, timeout_s, what, interval_ms=50, started=None):
    """Polls condition() every interval_ms until true (then then()), or fails after timeout_s.

    Also records the longest gap between two polls: how long the GUI thread was busy (a run
    that blocked it instead of running in the background task would show here)."""
    now = time.monotonic()
    started = now if started is None else started
    gaps = SN6_STATE.setdefault("gaps", {})
    last = SN6_STATE.setdefault("last_poll", {}).get(what)
    if last is not None:
        gaps[what] = round(max(gaps.get(what, 0.0), now - last - interval_ms / 1000), 3)
    SN6_STATE["last_poll"][what] = now
    if condition():
        then()
    elif time.monotonic() - started > timeout_s:
        sn6_fail(f"timed out after {timeout_s} s waiting for {what}")
    else:
        sn6_later(interval_ms, sn6_wait, condition, then, timeout_s, what, interval_ms, started)


# ---- step 1: the plugin is loaded, its algorithms registered, its button there ----------------
def sn6_message_bar():
    """What the main window's message bar shows (texts of its items)."""
    from qgis.gui import QgsMessageBarItem

    items = []
    for item in iface.messageBar().findChildren(QgsMessageBarItem):
        items.append(" ".join(filter(None, [item.title(), item.text()])))
    return items


def sn6_check_plugin():
    import qgis.utils

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById(PLUGIN)
    action = iface.mainWindow().findChild(QAction, ACTION_NAME)
    toolbars = [bar.objectName() for bar in iface.mainWindow().findChildren(QToolBar)
                if action is not None and action in bar.actions()]
    menus = []
    if action is not None:
        for widget in action.associatedWidgets():
            if widget.metaObject().className() == "QMenu":
                menus.append(widget.title())
                parent_menu = widget.menuAction().associatedWidgets()
                menus.extend(f"{w.title()} > {widget.title()}" for w in parent_menu
                             if w.metaObject().className() == "QMenu")
    SN6_STATE["action"] = action
    # no window manager under Xvfb: the main window fills the screen by hand
    iface.mainWindow().setGeometry(QApplication.primaryScreen().availableGeometry())
    sn6_step("plugin",
             loaded=PLUGIN in qgis.utils.plugins,
             active=PLUGIN in qgis.utils.active_plugins,
             available=PLUGIN in qgis.utils.available_plugins,
             load_time=qgis.utils.plugin_times.get(PLUGIN),
             provider=provider is not None,
             algorithms=sorted(a.id() for a in provider.algorithms()) if provider else [],
             action=action is not None, action_text=action.text() if action else None,
             toolbars=toolbars, menus=menus, qgis_version=Qgis.version(),
             python_path=os.environ.get("PYTHONPATH"), plugin_paths=qgis.utils.plugin_paths,
             settings_dir=QgsApplication.qgisSettingsDirPath(), message_bar=sn6_message_bar(),
             plugin_dir_listing=sorted(os.listdir(os.path.join(qgis.utils.plugin_paths[0], PLUGIN)))
             if os.path.isdir(os.path.join(qgis.utils.plugin_paths[0], PLUGIN)) else None)
    sn6_later(0, sn6_add_scene)


# ---- step 2: demo scene as the active layer, toolbar button, Run in the background ------------
def sn6_add_scene():
    # Another raster first (the second run's input, hidden): the dialog's INPUT then has two
    # choices and must take the active one, not the first or the alphabetical first ("big scene").
    big = QgsRasterLayer(SN6_CONFIG["big_scene"], "big scene")
    if not big.isValid():
        sn6_fail(f"the big scene {SN6_CONFIG['big_scene']} is not a valid raster")
    QgsProject.instance().addMapLayer(big)
    QgsProject.instance().layerTreeRoot().findLayer(big.id()).setItemVisibilityChecked(False)
    SN6_STATE["big_layer"] = big
    layer = QgsRasterLayer(SN6_CONFIG["scene"], "scene")
    if not layer.isValid():
        sn6_fail(f"the demo scene {SN6_CONFIG['scene']} is not a valid raster")
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    SN6_STATE["scene_layer"] = layer
    sn6_step("scene", layer_id=layer.id(), active=iface.activeLayer().id() if iface.activeLayer() else None)
    action = SN6_STATE["action"]
    if action is None:
        sn6_fail(f"no QAction named {ACTION_NAME} in the main window")
    # The button opens the dialog with exec_(): schedule the next step first, it runs inside
    # the dialog's event loop.
    SN6_STATE["triggered_at"] = time.monotonic()
    sn6_later(100, sn6_wait, sn6_find_dialog, sn6_dialog_opened, 30, "the extraction dialog")
    SN6_STATE["trigger_returned"] = False
    action.trigger()
    SN6_STATE["trigger_returned"] = True  # the dialog was closed (or never opened)
    sn6_step("trigger_returned")


def sn6_find_dialog():
    from qgis.gui import QgsProcessingAlgorithmDialogBase

    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QgsProcessingAlgorithmDialogBase) and widget.isVisible():
            SN6_STATE["dialog"] = widget
            return True
    return False


def sn6_value_id(value):
    """A layer parameter's value as the dialog gives it: a layer, a layer id or a source."""
    if hasattr(value, "id") and callable(value.id):
        return value.id()
    return None if value is None else str(value)


def sn6_dialog_opened():
    dialog = SN6_STATE["dialog"]
    panel = dialog.mainWidget()
    parameters = panel.createProcessingParameters()
    input_value = parameters.get("INPUT")
    scene = SN6_STATE["scene_layer"]
    sn6_step("dialog", open_s=round(time.monotonic() - SN6_STATE["triggered_at"], 3),
             dialog_class=type(dialog).__name__, algorithm=dialog.algorithm().id(),
             title=dialog.windowTitle(), input=sn6_value_id(input_value),
             input_is_active_layer=sn6_value_id(input_value) in (scene.id(), scene.source()),
             input_choices=[lyr.name() for lyr in QgsProject.instance().mapLayers().values()
                            if isinstance(lyr, QgsRasterLayer)],
             parameters=sorted(parameters))
    sn6_set(dialog, OUTPUT=SN6_CONFIG["output"])
    sn6_later(0, sn6_run, "first", sn6_first_done)


def sn6_set(dialog, **values):
    panel = dialog.mainWidget()
    for name, value in values.items():
        panel.wrappers[name].setParameterValue(value, panel.processing_context)


def sn6_run(label, then):
    dialog = SN6_STATE["dialog"]
    parameters = dialog.mainWidget().createProcessingParameters()
    output = parameters.get("OUTPUT")
    sink = output.sink.staticValue() if hasattr(output, "sink") else output
    ok, message = dialog.algorithm().checkParameterValues(parameters, dialog.mainWidget().processing_context)
    if not ok:  # Run would show a modal message box and wait for a click
        sn6_fail(f"{label} run: the dialog's parameters are refused: {message}")
    SN6_STATE[label] = {"finished": None}
    dialog.algorithmFinished.connect(
        lambda ok, results, label=label: SN6_STATE[label].update(finished=(ok, dict(results)),
                                                                 finished_at=time.monotonic()))
    SN6_STATE[label]["clicked_at"] = time.monotonic()
    dialog.runButton().click()
    running = dialog.feedback is not None
    sn6_step(f"{label}_run_clicked", output=sink, input=sn6_value_id(parameters.get("INPUT")),
             run_button=dialog.runButton().text(), running=running,
             cancel_enabled=dialog.cancelButton().isEnabled(),
             active_tasks=QgsApplication.taskManager().countActiveTasks())
    if not running:
        sn6_fail(f"{label} run: clicking Run did not start the algorithm")
    then()


def sn6_ended(label):
    """The dialog's completion handler has run (AlgorithmDialog sets feedback to None)."""
    return SN6_STATE["dialog"].feedback is None


def sn6_first_done():
    sn6_wait(lambda: sn6_ended("first"), sn6_check_first, SN6_CONFIG["run_timeout_s"], "the first run")


def sn6_log_text(dialog):
    texts = [w.toPlainText() for w in dialog.findChildren(QTextEdit)]
    return "\n".join(t for t in texts if t)


def sn6_qml_colours():
    """Fill and outline colour of the plugin's footprint style, from the QML file itself."""
    root = ElementTree.parse(SN6_CONFIG["qml"]).getroot()
    options = {o.get("name"): o.get("value") for o in root.iter("Option") if o.get("name")}
    return options.get("color"), options.get("outline_color")


def sn6_colour(colour):
    return f"{colour.red()},{colour.green()},{colour.blue()},{colour.alpha()}"


def sn6_layers_for(path):
    return [layer for layer in QgsProject.instance().mapLayers().values()
            if os.path.realpath(layer.source().split("|")[0]) == os.path.realpath(path)]


def sn6_check_first():
    state = SN6_STATE["first"]
    dialog = SN6_STATE["dialog"]
    ended_at = time.monotonic()
    layers = sn6_layers_for(SN6_CONFIG["output"])
    layer = layers[0] if layers else None
    style = {}
    if layer is not None:
        renderer = layer.renderer()
        symbol = renderer.symbol() if hasattr(renderer, "symbol") else None
        symbol_layer = symbol.symbolLayer(0) if symbol is not None else None
        style = {"renderer": renderer.type(),
                 "fill": sn6_colour(symbol_layer.color()) if symbol_layer else None,
                 "outline": sn6_colour(symbol_layer.strokeColor()) if symbol_layer else None,
                 "outline_width": symbol_layer.strokeWidth() if symbol_layer else None}
        iface.setActiveLayer(layer)
    fill, outline = sn6_qml_colours()
    ok, results = state["finished"] if state["finished"] else (None, {})
    sn6_step("first_done", run_s=round(ended_at - state["clicked_at"], 3), ok=ok,
             results={k: str(v) for k, v in results.items()},
             output_exists=os.path.exists(SN6_CONFIG["output"]),
             layers=[lyr.name() for lyr in layers], features=layer.featureCount() if layer else None,
             style=style, qml_fill=fill, qml_outline=outline,
             dialog_visible=dialog.isVisible(), gui_max_gap_s=SN6_STATE["gaps"].get("the first run"),
             log_tail=sn6_log_text(dialog)[-3000:])
    if layer is None:
        sn6_fail("the first run added no layer for its output to the project")
    canvas = iface.mapCanvas()
    canvas.setExtent(layer.extent())
    canvas.refresh()
    SN6_STATE["footprints_layer"] = layer
    sn6_later(300, sn6_wait, lambda: not canvas.isDrawing(), sn6_screenshot, 30, "the map canvas to render")


def sn6_orange_pixels(image, outline):
    """Pixels close to the style's outline colour (antialiasing blends the 0.5 mm line)."""
    red, green, blue = (int(c) for c in outline.split(",")[:3])
    count = 0
    step = 2
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            colour = QColor(image.pixel(x, y))
            if abs(colour.red() - red) < 40 and abs(colour.green() - green) < 40 and abs(colour.blue() - blue) < 40:
                count += 1
    return count * step * step


def sn6_screenshot():
    screen = QApplication.primaryScreen()
    dialog = SN6_STATE["dialog"]  # to the right edge, so that most of the map shows
    dialog.move(screen.geometry().width() - dialog.frameGeometry().width(), dialog.y())
    QApplication.processEvents()
    desktop = screen.grabWindow(0)
    saved = desktop.save(SN6_CONFIG["screenshot"])
    canvas_image = iface.mapCanvas().grab()
    canvas_saved = canvas_image.save(SN6_CONFIG["canvas_screenshot"])
    _fill, outline = sn6_qml_colours()
    sn6_step("screenshot", method="QScreen.grabWindow(0)", saved=saved, path=SN6_CONFIG["screenshot"],
             size=[desktop.width(), desktop.height()], canvas_saved=canvas_saved,
             canvas_outline_pixels=sn6_orange_pixels(canvas_image.toImage(), outline),
             desktop_outline_pixels=sn6_orange_pixels(desktop.toImage(), outline))
    sn6_later(0, sn6_second_run)


# ---- step 3: a second, longer run, cancelled from the dialog ----------------------------------
def sn6_second_run():
    dialog = SN6_STATE["dialog"]
    big = SN6_STATE["big_layer"]
    sn6_set(dialog, INPUT=big, OUTPUT=SN6_CONFIG["cancel_output"], **SN6_CONFIG["cancel_parameters"])
    sn6_later(200, sn6_run, "second", sn6_wait_before_cancel)


def sn6_wait_before_cancel():
    dialog = SN6_STATE["dialog"]
    state = SN6_STATE["second"]

    def started():
        if dialog.feedback is None:
            sn6_fail("the second run ended before it could be cancelled: make it longer")
        waited = time.monotonic() - state["clicked_at"]
        return dialog.feedback.progress() > 0 and waited >= SN6_CONFIG["cancel_after_s"]
    sn6_wait(started, sn6_cancel, SN6_CONFIG["run_timeout_s"], "the second run to report progress",
             interval_ms=20)


def sn6_child_processes():
    """QGIS's child processes (a worker would be one) as (pid, command line)."""
    me = str(os.getpid())
    children = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
                parent = stream.read().rsplit(")", 1)[1].split()[1]
            if parent == me:
                with open(f"/proc/{pid}/cmdline", "rb") as stream:
                    children.append((int(pid), stream.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return children


def sn6_cancel():
    dialog = SN6_STATE["dialog"]
    state = SN6_STATE["second"]
    cancel_button = dialog.cancelButton()
    state["progress_at_cancel"] = dialog.feedback.progress()
    state["children_before"] = sn6_child_processes()
    state["run_button_while_running"] = dialog.runButton().text()
    state["cancel_button"] = {"text": cancel_button.text(), "enabled": cancel_button.isEnabled(),
                              "visible": cancel_button.isVisible()}
    state["cancel_at"] = time.monotonic()
    if cancel_button.isEnabled() and cancel_button.isVisible():
        state["cancel_method"] = "dialog.cancelButton().click()"
        cancel_button.click()
    else:
        state["cancel_method"] = "dialog.feedback.cancel() (the Cancel button was not enabled)"
        dialog.feedback.cancel()
    sn6_wait(lambda: sn6_ended("second"), sn6_cancelled, 30, "the cancelled run to stop", interval_ms=10)


def sn6_cancelled():
    state = SN6_STATE["second"]
    state["stopped_at"] = time.monotonic()
    sn6_later(1000, sn6_check_cancel)


def sn6_worker_temp_dirs(children):
    """Folders of the worker's temporary files named on its command line ("sn6-footprints-...")."""
    folders = set()
    for _pid, command in children:
        for argument in command.split():
            if "sn6-footprints-" in argument:
                head = argument[:argument.index("sn6-footprints-")]
                rest = argument[len(head):].split("/")[0]
                folders.add(os.path.join(head, rest))
    return sorted(folders)


def sn6_check_cancel():
    state = SN6_STATE["second"]
    dialog = SN6_STATE["dialog"]
    output = SN6_CONFIG["cancel_output"]
    leftovers = sorted(name for name in os.listdir(os.path.dirname(output))
                       if name.startswith(os.path.basename(output)))
    ok = state["finished"][0] if state["finished"] else None
    sn6_step("cancel_done",
             started_to_cancel_s=round(state["cancel_at"] - state["clicked_at"], 3),
             cancel_latency_s=round(state["stopped_at"] - state["cancel_at"], 3),
             progress_at_cancel=state["progress_at_cancel"], cancel_method=state["cancel_method"],
             cancel_button=state["cancel_button"], run_button_while_running=state["run_button_while_running"],
             ok=ok, output_exists=os.path.exists(output), output_leftovers=leftovers,
             layers=[lyr.name() for lyr in sn6_layers_for(output)],
             children_before=state["children_before"], children_after=sn6_child_processes(),
             worker_temp_dirs=sn6_worker_temp_dirs(state["children_before"]),
             worker_temp_dirs_left=[d for d in sn6_worker_temp_dirs(state["children_before"])
                                    if os.path.exists(d)],
             gui_max_gap_s=SN6_STATE["gaps"].get("the cancelled run to stop"),
             active_tasks=QgsApplication.taskManager().countActiveTasks(),
             log_tail=sn6_log_text(dialog)[-3000:])
    sn6_later(0, sn6_exit)


# ---- step 4: close the dialog, record the message log, exit QGIS ------------------------------
def sn6_message_log_viewer():
    """The Log Messages panel's tabs (every message since start-up, plugin loading included)."""
    tabs = {}
    for viewer in iface.mainWindow().findChildren(QWidget):
        if viewer.metaObject().className() != "QgsMessageLogViewer":  # not found by its sip class
            continue
        for tab_widget in viewer.findChildren(QTabWidget):
            for index in range(tab_widget.count()):
                page = tab_widget.widget(index)
                text = [w.toPlainText() for w in page.findChildren(QPlainTextEdit)]
                if isinstance(page, QPlainTextEdit):
                    text.append(page.toPlainText())
                tabs[tab_widget.tabText(index)] = "\n".join(text)
    return tabs


def sn6_visible_dialogs():
    dialogs = []
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QDialog) and widget.isVisible():
            text = widget.text() if isinstance(widget, QMessageBox) else ""
            dialogs.append({"class": type(widget).__name__, "title": widget.windowTitle(), "text": text})
    return dialogs


def sn6_exit():
    SN6_STATE["exiting"] = True
    try:
        SN6_REPORT["other_dialogs"] = [d for d, w in zip(sn6_visible_dialogs(), [
            w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()])
            if w is not SN6_STATE.get("dialog")]
        SN6_REPORT["message_log_panel"] = sn6_message_log_viewer()
    except Exception:  # noqa: BLE001
        SN6_REPORT["errors"].append({"t": sn6_now(), "in": "sn6_exit", "traceback": traceback.format_exc()})
    SN6_REPORT["done"] = not SN6_REPORT["errors"]
    sn6_step("exit", message_bar=sn6_message_bar(), layers=[(lyr.name(), lyr.providerType(), lyr.source())
                             for lyr in QgsProject.instance().mapLayers().values()])
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QDialog) and widget.isVisible():
            widget.reject()
    QTimer.singleShot(300, sn6_quit)


def sn6_quit():
    """File > Exit, as a user would; should anything stop it (a question), that is recorded."""
    QgsProject.instance().setDirty(False)  # the test's layers need not be saved: no question
    SN6_REPORT["exit_blockers"] = []
    sn6_step("quit")
    QTimer.singleShot(5000, sn6_exit_blocked)
    iface.actionExit().trigger()


def sn6_exit_blocked():
    SN6_REPORT["exit_blockers"] = sn6_visible_dialogs() or ["QGIS was still running 5 s after File > Exit"]
    sn6_step("exit_blocked")
    QgsApplication.exit(0)


sn6_step("driver_started", pid=os.getpid())
sn6_later(int(SN6_CONFIG.get("start_delay_ms", 1000)), sn6_check_plugin)
