"""Startup: a window is on screen before torch is imported, and the models arrive after it.

The subprocess tests look at ``sys.modules`` of a fresh interpreter (this one imported torch
long ago); the in-process ones drive :class:`divcolor_gui.app.Launcher` with a loader the test
holds back, so "before" and "after" the load are both observed — never timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QTimer
from PySide6.QtWidgets import QApplication

from engine.errors import CheckpointError
from engine.io import save_image

from divcolor_gui.app import Launcher, StartupWindow, load_engine, run
from divcolor_gui.main_window import MainWindow
from divcolor_gui.settings import Settings

from conftest import WAIT_MS, WAIT_S

ROOT = Path(__file__).resolve().parents[1]
WAIT = WAIT_MS  # a ceiling for waits on events, never asserted as a duration (conftest)
HEAVY = ("torch", "engine.colorizer", "engine.types", "divcolor_gui.main_window")
LATER = (*HEAVY, "qtawesome")  # icons too (0.3-0.7 s) come with the main window, not before the first paint


def fresh_python(script: str, tmp_path: Path, timeout: int = WAIT_S, **env: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a new interpreter, offscreen, with settings and data under ``tmp_path``."""
    environ = {k: v for k, v in os.environ.items() if k != "DIVCOLOR_STARTUP_TRACE"}
    environ.update(QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "config"),
                   XDG_DATA_HOME=str(tmp_path / "data"), XDG_STATE_HOME=str(tmp_path / "state"), **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=environ)


@pytest.fixture
def photo_path(tmp_path) -> Path:
    p = tmp_path / "street.png"
    yy, xx = np.mgrid[0:80, 0:120]
    save_image(p, np.where(xx < 60, 0.25, 0.8).astype(np.float32) + 0.03 * np.sin(xx / 3.0) * np.cos(yy / 4.0))
    return p


@pytest.fixture(autouse=True)
def no_blocking_dialogs(monkeypatch):
    """A dialog nobody answers would hang the run."""
    from PySide6.QtWidgets import QMessageBox

    for name in ("critical", "warning", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(lambda *a, **k: QMessageBox.StandardButton.Ok))


def test_the_command_shows_its_window_before_importing_torch_then_enables_the_models_actions(tmp_path):
    """The real entry point (``divcolor`` = ``command.main``) with the real loader: at the
    startup window's first paint nothing heavy is imported and Open waits; once the main
    window is painted the engine is there and Open works."""
    done = fresh_python(f"""
        import json, sys
        HEAVY, LATER = {HEAVY!r}, {LATER!r}
        from divcolor_gui import command
        from divcolor_gui import app as A
        from PySide6.QtWidgets import QApplication

        seen = {{"after_import": [m for m in LATER if m in sys.modules]}}
        start = A.Launcher.start

        def painted(launcher):
            shell = launcher.shell
            seen["at_paint"] = [m for m in LATER if m in sys.modules]
            seen["shell"] = [shell.isVisible(), shell.act["open"].isEnabled(), shell.open_button.isEnabled(),
                             shell.act["quit"].isEnabled(), shell.message.text()]

        def window_painted(win):
            seen["at_window"] = [m for m in HEAVY if m in sys.modules]
            seen["window"] = [type(win).__name__, win.isVisible(), win.act["open"].isEnabled()]
            seen["startup_windows_left"] = [w.objectName() for w in QApplication.topLevelWidgets()
                                            if w.objectName() == "startupWindow" and w.isVisible()]
            win.force_close = True
            print("RESULT", json.dumps(seen), flush=True)  # now: a job still running at exit ends the process
            QApplication.instance().exit(0)

        def hooked(self):
            self.painted.connect(lambda: painted(self))
            self.window_painted.connect(window_painted)
            return start(self)

        A.Launcher.start = hooked
        sys.exit(command.main(["gui"]))
    """, tmp_path)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    seen = json.loads(lines[0].split(" ", 1)[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert seen["after_import"] == [] and seen["at_paint"] == []  # the window came first
    visible, open_on, button_on, quit_on, text = seen["shell"]
    assert visible and not open_on and not button_on and quit_on and "Loading models" in text
    assert set(HEAVY) <= set(seen["at_window"])  # ... then the engine
    assert seen["window"] == ["MainWindow", True, True] and seen["startup_windows_left"] == []


def test_version_and_cli_help_do_not_import_torch(tmp_path):
    done = fresh_python(f"""
        import contextlib, io, sys
        from divcolor_gui.command import build_parser, main
        for argv in (["--version"], ["colorize", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
        print("LOADED", [m for m in {HEAVY!r} if m in sys.modules])
    """, tmp_path)
    assert "LOADED []" in done.stdout, done.stdout + done.stderr[-2000:]


def test_a_failed_load_is_reported_by_the_command_with_what_to_do(tmp_path):
    """No torch at all (a broken install): the window still opens, then says what is wrong; the
    trace hook the benchmark uses reports the failure and the exit code says so."""
    done = fresh_python("""
        import sys
        sys.modules["torch"] = None  # `import torch` now fails, as on a broken install
        from divcolor_gui.command import main
        sys.exit(main(["gui"]))
    """, tmp_path, DIVCOLOR_STARTUP_TRACE="ready")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "divcolor-startup: painted" in done.stderr and "divcolor-startup: failed" in done.stderr
    assert "engine could not be loaded" in done.stderr and "Reinstall divcolor" in done.stderr
    assert "Traceback" not in done.stderr


def close_all(launcher: Launcher) -> None:
    if launcher.window is not None:
        launcher.window.force_close = True
        launcher.window.close()
        launcher.window.deleteLater()
    for w in QApplication.topLevelWidgets():
        if isinstance(w, StartupWindow):
            w.close()


def test_models_actions_are_off_while_loading_and_on_once_loaded(qtbot, colorizer, photo_path, tmp_path):
    gate = threading.Event()

    def load():
        gate.wait(WAIT / 1000)  # the test decides when "importing torch" is over
        return load_engine(colorizer)

    launcher = Launcher(Settings(tmp_path / "s.ini"), load=load)
    try:
        with qtbot.waitSignal(launcher.painted, timeout=WAIT):
            launcher.start()
        shell = launcher.shell
        assert shell.isVisible() and launcher.window is None
        assert not shell.act["open"].isEnabled() and not shell.open_button.isEnabled()
        assert "once the models are loaded" in shell.act["open"].toolTip()
        assert shell.act["quit"].isEnabled() and shell.busy.isVisible()
        qtbot.wait(50)  # the event loop keeps running while the loader is held
        assert launcher.window is None and shell.isVisible()
        shell.move(shell.x() + 7, shell.y() + 5)  # the user moves the window while waiting
        where = shell.geometry()
        with qtbot.waitSignal(launcher.ready, timeout=WAIT) as blocker:
            gate.set()
        win = blocker.args[0]
        assert win is launcher.window and isinstance(win, MainWindow) and win.isVisible()
        assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, StartupWindow) and w.isVisible()]
        assert win.geometry().topLeft() == where.topLeft()  # it takes the startup window's place
        assert win.act["open"].isEnabled()
        qtbot.waitUntil(lambda: bool(win.models), timeout=WAIT)  # the engine lists its models (a job)
        with qtbot.waitSignal(win.ready, timeout=WAIT):
            win.open_path(photo_path)
        assert win.act["generate"].isEnabled()
        qtbot.waitUntil(win.is_idle, timeout=WAIT)
    finally:
        gate.set()
        close_all(launcher)


@pytest.mark.parametrize("error, says", [
    (CheckpointError("vae_mdn_general.safetensors is damaged. Delete it and reinstall divcolor."), "is damaged"),
    (ImportError("libtorch_cpu.so: cannot open shared object file"), "Reinstall divcolor"),
])
def test_a_failed_load_is_shown_in_the_window_and_models_actions_stay_off(qtbot, tmp_path, error, says):
    def load():
        raise error

    launcher = Launcher(Settings(tmp_path / "s.ini"), load=load)
    try:
        with qtbot.waitSignal(launcher.failed, timeout=WAIT) as blocker:
            launcher.start()
        shell = launcher.shell
        assert says in blocker.args[0] and says in shell.message.text() and says in (launcher.error or "")
        assert "could not start" in shell.message.text() and not shell.busy.isVisible()
        assert shell.isVisible() and launcher.window is None
        assert not shell.act["open"].isEnabled() and shell.act["quit"].isEnabled()
    finally:
        close_all(launcher)


def test_a_photo_named_on_the_command_line_opens_once_the_models_are_ready(qtbot, colorizer, photo_path, tmp_path):
    seen: dict[str, object] = {}

    def poll() -> None:
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if wins and wins[0].doc.photo is not None:
            seen["photo"] = wins[0].doc.photo.path
            wins[0].force_close = True
            wins[0].close()
            QApplication.instance().exit(0)
        else:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, poll)
    assert run(str(photo_path), colorizer=colorizer, settings=Settings(tmp_path / "s.ini")) == 0
    # Closing the last window posted a Quit that app.exec() ended before reading: left queued, the
    # next test's first processEvents would take it and every event loop after it would return at
    # once (a later waitSignal failed at once with TimeoutError). This process goes on: drop it.
    QCoreApplication.removePostedEvents(QApplication.instance(), QEvent.Type.Quit)
    assert Path(str(seen["photo"])).name == photo_path.name
