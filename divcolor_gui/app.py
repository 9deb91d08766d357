"""Application entry point: ``divcolor`` / ``divcolor gui [IMAGE] [--screenshot OUT.png]``.

``run`` sets up the QApplication (name, theme, icon), builds the window around the engine
facade, offers to restore work a crash left behind (:mod:`.autosave`) and enters the event loop.
Leaving it never hangs: jobs still running are cancelled and given :data:`EXIT_GRACE_S`; one
stuck in a long uninterruptible call does not keep the process alive past that (the window is
gone and its autosave removed by then, so nothing is lost). Screenshot mode is event-driven: the window's ``ready``
signal (photo shown, first gallery results in — or known absent) triggers the grab; a timer
only guards against waiting forever.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

import qtawesome as qta

from engine.colorizer import Colorizer
from engine.errors import DivcolorError

from .jobs import cancel_every_job, running_jobs, wait_for_jobs
from .settings import Settings

SCREENSHOT_SIZE = (1440, 900)
SCREENSHOT_TIMEOUT_S = 600
SETTLE_MS = 250  # let the freshly added thumbnails lay out before grabbing
EXIT_GRACE_S = 1.0  # after the window closed, how long running jobs get to notice the cancel


def _application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("divcolor")
    app.setOrganizationName("divcolor")
    app.setApplicationDisplayName("divcolor")
    return app


def run(
    image: str | None = None,
    screenshot: str | None = None,
    *,
    colorizer: Colorizer | None = None,
    settings: Settings | None = None,
) -> int:
    """Open the app (optionally on ``image``); with ``screenshot``, save the window and exit.

    ``colorizer`` and ``settings`` are injectable so tests and the docs' screenshot script can
    run the real window on a tiny model without touching the user's settings.
    """
    from .main_window import MainWindow  # after QApplication exists: widgets need it

    app = _application()
    if screenshot and settings is None:
        # a throwaway settings file: screenshots are reproducible and leave no recent-file trace
        settings = Settings(Path(tempfile.mkdtemp(prefix="divcolor-shot-")) / "settings.ini")
    try:
        colorizer = colorizer if colorizer is not None else Colorizer()
    except DivcolorError as e:
        print(f"divcolor: {e}", file=sys.stderr)
        QMessageBox.critical(None, "divcolor cannot start", str(e))
        return 1
    win = MainWindow(colorizer, settings)
    app.setWindowIcon(qta.icon("mdi6.palette", color="#3d8bfd"))
    old_hook = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        """A bug in a slot becomes a dialog, not a silent nothing or a dead app."""
        traceback.print_exception(kind, value, tb)
        if screenshot:
            app.exit(1)
            return
        win.show_error("Unexpected error", value)

    sys.excepthook = hook
    try:
        if screenshot:
            return _screenshot(app, win, image, screenshot)
        win.show()
        restored = win.autosave.offer_restore(win)
        if image and not restored:
            win.open_path(image)
        return finish_jobs(app.exec())
    finally:
        sys.excepthook = old_hook


def finish_jobs(code: int, grace_s: float = EXIT_GRACE_S) -> int:
    """After the event loop: cancel what still runs and wait at most ``grace_s`` for it. A job
    that is still running then (a long solve or encode between two cancel checks) would keep
    the interpreter alive at exit, so the process ends here, at once, with ``code``."""
    cancel_every_job()
    if wait_for_jobs(grace_s):
        return code
    print(f"divcolor: quitting while {', '.join(running_jobs())} still ran (cancelled).", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _screenshot(app: QApplication, win, image: str | None, out: str) -> int:
    if not image:
        print("divcolor: --screenshot needs an IMAGE to open", file=sys.stderr)
        return 2
    win.force_close = True
    win.fit_screen = False  # the grab is SCREENSHOT_SIZE whatever the screen
    outcome: dict[str, int] = {}

    def finish(code: int, message: str | None = None) -> None:
        if "code" in outcome:
            return
        outcome["code"] = code
        if message:
            print(f"divcolor: {message}", file=sys.stderr)
        app.exit(code)

    def grab() -> None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = win.grab().save(str(path))
        finish(0 if ok else 1, None if ok else f"could not write {path}")

    def error(title: str, text: str) -> None:
        finish(1, f"{title}: {text}")

    win.error_sink = error  # no modal dialogs in a headless run: report and exit
    win.ready.connect(lambda: QTimer.singleShot(SETTLE_MS, grab))
    guard = QTimer(win)
    guard.setSingleShot(True)
    guard.timeout.connect(lambda: finish(1, f"timed out after {SCREENSHOT_TIMEOUT_S} s waiting for the first results"))
    guard.start(SCREENSHOT_TIMEOUT_S * 1000)
    win.resize(*SCREENSHOT_SIZE)
    win.show()
    win.open_path(image)
    code = app.exec()
    guard.stop()
    win.close()
    win.deleteLater()
    return outcome.get("code", code)
