"""Application entry point: ``divcolor`` / ``divcolor gui [IMAGE] [--screenshot OUT.png]``.

A window is on screen before the engine is imported. Importing torch takes seconds (5 s and
more on a laptop); the window takes a few hundred milliseconds. So :func:`run` sets up the
QApplication (name, theme), shows a :class:`StartupWindow` — the app's empty state saying
"Loading models…", with the actions that need the engine disabled — and only after its first
paint does a :class:`Launcher` import the engine and the main window's modules on a worker
thread (the event loop keeps running: the window moves, resizes, repaints and quits). When
that is done the real :class:`~.main_window.MainWindow` takes the startup window's place and
size, offers to restore work a crash left behind (:mod:`.autosave`) and opens ``IMAGE``. If
loading fails, the startup window says why and what to do, and the exit code is 1.

This module, :mod:`.command`, :mod:`.jobs`, :mod:`.settings`, :mod:`.theme` and
:mod:`.errors` must therefore never import torch (or :mod:`engine.colorizer`) at module level;
``tests/test_startup.py`` holds them to it. ``DIVCOLOR_STARTUP_TRACE`` makes the startup
measurable (``benchmarks/bench_startup.py``): set, each milestone (``painted``: the startup
window's first paint; ``ready``: the main window's) is printed to stderr as
``divcolor-startup: MILESTONE EPOCH_SECONDS``; set to a milestone's name, the process also exits
there.

Leaving never hangs: jobs still running are cancelled and given :data:`EXIT_GRACE_S`; one
stuck in a long uninterruptible call does not keep the process alive past that (the window is
gone and its autosave removed by then, so nothing is lost). Screenshot mode loads the engine
first (nobody watches) and is event-driven: the window's ``ready`` signal (photo shown, first
gallery results in — or known absent) triggers the grab; a timer only guards against waiting
forever.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import DivcolorError

from . import theme
from .errors import error_text
from .jobs import cancel_every_job, running_jobs, wait_for_jobs
from .settings import Settings

if TYPE_CHECKING:  # both import torch: only once the startup window is on screen
    from engine.colorizer import Colorizer

    from .main_window import MainWindow

SCREENSHOT_SIZE = (1440, 900)
SCREENSHOT_TIMEOUT_S = 600
SETTLE_MS = 250  # let the freshly added thumbnails lay out before grabbing
EXIT_GRACE_S = 1.0  # after the window closed, how long running jobs get to notice the cancel
TRACE_ENV = "DIVCOLOR_STARTUP_TRACE"
MILESTONES = ("painted", "ready")
# the first window's size without saved geometry: the rule of MainWindow.place_on_screen, so the
# main window takes the startup window's place without a jump
DEFAULT_SIZE = (1440, 900)
SCREEN_SHARE = 0.92
LOADING_TEXT = "Loading models…"
WAITING_TIP = "Available once the models are loaded"


def _application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("divcolor")
    app.setOrganizationName("divcolor")
    app.setApplicationDisplayName("divcolor")
    return app


def binding_problem(call: Callable[[], None] | None = None, calls: int = 64) -> str | None:
    """Why this Qt binding would crash the app, or None: PySide6-Essentials 6.12.0 drops a
    reference to None on each void call from Python, so on Python < 3.12 the app aborts after
    minutes of painting. Better one clear refusal at start than a crash that loses a stroke.
    ``call`` (a void Qt call by default) is injectable so the detection itself is testable."""
    if call is None:
        probe = QObject()
        call = lambda: probe.setObjectName("probe")  # noqa: E731
    before = sys.getrefcount(None)
    for _ in range(calls):
        call()
    if before - sys.getrefcount(None) < calls // 2:  # immortal None (3.12+) never moves
        return None
    import PySide6

    return (f"This copy of the Qt binding (PySide6 {PySide6.__version__}) has a known bug that "
            "crashes divcolor after a few minutes of use. Install another version, e.g. "
            "pip install \"PySide6-Essentials!=6.12.0\" (scripts/install.sh does), and start it again.")


def load_engine(colorizer: Colorizer | None = None) -> Colorizer:
    """Import what the main window needs (torch, the engine, the views) and make the facade.

    Runs on the launcher's worker thread: it creates no widget. ``colorizer``, when given, is
    used instead of a new one (tests, the screenshot script).
    """
    from . import main_window  # noqa: F401  (the slow part: torch and every view module)

    if colorizer is not None:
        return colorizer
    from engine.colorizer import Colorizer

    return Colorizer()


def loading_error_text(exc: BaseException) -> str:
    """What the startup window says when the engine could not be loaded."""
    if isinstance(exc, ImportError):
        return (
            f"The colorization engine could not be loaded ({exc}). Reinstall divcolor "
            "(pip install --force-reinstall divcolor, or scripts/run.sh) and start it again."
        )
    return error_text(exc)


class _FirstPaint(QObject):
    """Calls ``fn`` once, on the event loop's next turn after ``widget`` was first painted (so
    the frame is on screen by then, and slow work started from ``fn`` does not delay it)."""

    def __init__(self, widget: QWidget, fn: Callable[[], None]) -> None:
        super().__init__(widget)
        self._widget, self._fn = widget, fn
        widget.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if obj is self._widget and event.type() == QEvent.Type.Paint:
            self._widget.removeEventFilter(self)
            QTimer.singleShot(0, self._fn)
            self.deleteLater()
        return False


def on_first_paint(widget: QWidget, fn: Callable[[], None]) -> None:
    """Run ``fn`` right after ``widget``'s first paint reached the screen."""
    _FirstPaint(widget, fn)


def startup_geometry(widget: QWidget, settings: Settings) -> None:
    """Where the user left the window, or the default size centred — as the main window places
    itself, so the swap does not move anything. Clamped to the screen (it may have changed)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    avail = screen.availableGeometry() if screen is not None else None
    saved = settings.window_geometry
    if saved is not None and widget.restoreGeometry(saved):
        if avail is not None and not widget.isMaximized():
            g = widget.geometry()
            w, h = min(g.width(), avail.width()), min(g.height(), avail.height())
            x = min(max(g.x(), avail.left()), avail.right() - w + 1)
            y = min(max(g.y(), avail.top()), avail.bottom() - h + 1)
            widget.setGeometry(x, y, w, h)
        return
    if avail is None:
        widget.resize(*DEFAULT_SIZE)
        return
    w = min(DEFAULT_SIZE[0], int(avail.width() * SCREEN_SHARE))
    h = min(DEFAULT_SIZE[1], int(avail.height() * SCREEN_SHARE))
    widget.resize(w, h)
    widget.move(avail.left() + max(0, (avail.width() - w) // 2), avail.top() + max(0, (avail.height() - h) // 2))


class StartupWindow(QMainWindow):
    """The app's empty state while the engine loads: "Loading models…" and a busy bar, the
    commands that need the engine (Open, Open photo…) disabled with a tip saying why, Quit
    working. If loading fails it says what went wrong and what to do instead."""

    def __init__(self, settings: Settings, image: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("startupWindow")
        self.setWindowTitle("divcolor")
        self.failed_text: str | None = None
        self.act: dict[str, QAction] = {}
        for key, text, shortcut, slot in (
            ("open", "&Open…", QKeySequence.StandardKey.Open, None),
            ("quit", "&Quit", QKeySequence.StandardKey.Quit, self.close),
        ):
            a = QAction(text, self)
            a.setShortcut(shortcut)
            if slot is not None:
                a.triggered.connect(slot)
            self.addAction(a)
            self.act[key] = a
        self.act["open"].setEnabled(False)
        self.act["open"].setToolTip(WAITING_TIP)
        self.act["open"].setStatusTip(WAITING_TIP)
        menu = self.menuBar().addMenu("&File")
        menu.addAction(self.act["open"])
        menu.addSeparator()
        menu.addAction(self.act["quit"])

        body = QWidget()
        body.setObjectName("emptyState")  # the main window's empty state, in the theme's colours
        title = QLabel("Colour a black-and-white photo")
        title.setObjectName("emptyTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        waiting = f"{LOADING_TEXT[:-1]}, then opening {Path(image).name}…" if image else LOADING_TEXT
        self.message = QLabel(waiting)
        self.message.setObjectName("hint")
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setMaximumWidth(560)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate: the import cannot say how far it is
        self.busy.setTextVisible(False)
        self.busy.setFixedWidth(240)
        self.open_button = QPushButton("Open photo…")
        self.open_button.setObjectName("primary")
        self.open_button.setEnabled(False)
        self.open_button.setToolTip(WAITING_TIP)
        lay = QVBoxLayout(body)
        lay.addStretch(1)
        lay.addWidget(title)
        for w in (self.message, self.busy, self.open_button):
            row = QHBoxLayout()
            row.addStretch(1)
            row.addWidget(w)
            row.addStretch(1)
            lay.addLayout(row)
        lay.addStretch(2)
        self.setCentralWidget(body)
        self.statusBar().showMessage(LOADING_TEXT)
        startup_geometry(self, settings)

    def show_failure(self, text: str) -> None:
        """Loading failed: say so where the user is looking; only Quit is left to do."""
        self.failed_text = text
        self.busy.hide()
        self.message.setText(f"divcolor could not start. {text}")
        self.message.setObjectName("banner")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.statusBar().showMessage("The models could not be loaded")
        self.setWindowTitle("divcolor — could not start")


class Launcher(QObject):
    """Shows the startup window, loads the engine off the event loop after its first paint, then
    puts the main window in its place (``ready``) — or shows why it could not (``failed``).

    ``load`` runs on a worker thread and returns the :class:`~engine.colorizer.Colorizer`; it
    must import the main window's modules (:func:`load_engine` does), so that building the
    window on the GUI thread afterwards imports nothing slow.
    """

    painted = Signal()  # the startup window's first frame is on screen
    ready = Signal(object)  # the MainWindow, shown (the startup window is closed by then)
    window_painted = Signal(object)  # the MainWindow's first frame is on screen
    failed = Signal(str)
    _loaded = Signal(object)  # from the worker thread: queued to the GUI thread
    _load_failed = Signal(object)

    def __init__(
        self,
        settings: Settings,
        image: str | None = None,
        load: Callable[[], Colorizer] = load_engine,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.load = load
        self.window: MainWindow | None = None
        self.error: str | None = None
        self.thread: threading.Thread | None = None
        self.shell = StartupWindow(settings, image)
        self._loaded.connect(self._build, Qt.ConnectionType.QueuedConnection)
        self._load_failed.connect(self._fail, Qt.ConnectionType.QueuedConnection)

    def start(self) -> StartupWindow:
        """Show the startup window; the engine starts loading once it has been painted."""
        on_first_paint(self.shell, self._painted)
        self.shell.show()
        return self.shell

    def _painted(self) -> None:
        self.painted.emit()
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="divcolor-load-engine", daemon=True)
            self.thread.start()

    def _work(self) -> None:
        try:
            result: Any = self.load()
        except BaseException as exc:  # noqa: BLE001 (reported in the window, never lost)
            if not isinstance(exc, (DivcolorError, ImportError)):  # a bug: keep what a report needs
                traceback.print_exception(exc)
            signal, result = self._load_failed, exc
        else:
            signal = self._loaded
        try:
            signal.emit(result)
        except RuntimeError:  # the app quit while loading: nobody is left to tell
            pass

    def _build(self, colorizer: Colorizer) -> None:
        if not self.shell.isVisible():  # closed while loading: the app is quitting
            return
        from .main_window import MainWindow  # imported by the worker: instant here

        try:
            win = MainWindow(colorizer, self.settings)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exception(exc)
            self._fail(exc)
            return
        on_first_paint(win, lambda: self.window_painted.emit(win))
        if self.shell.isMaximized():
            win.showMaximized()
        else:
            win.setGeometry(self.shell.geometry())
            win.show()
        self.window = win
        self.shell.close()
        self.shell.deleteLater()
        self.ready.emit(win)

    def _fail(self, exc: BaseException) -> None:
        self.error = loading_error_text(exc)
        print(f"divcolor: {self.error}", file=sys.stderr)
        self.shell.show_failure(self.error)
        self.failed.emit(self.error)


def _trace(app: QApplication, launcher: Launcher) -> None:
    """``DIVCOLOR_STARTUP_TRACE``: print each startup milestone (and exit at the one named)."""
    stop = os.environ.get(TRACE_ENV, "")
    if not stop:
        return

    def milestone(name: str) -> None:
        print(f"divcolor-startup: {name} {time.time():.4f}", file=sys.stderr, flush=True)
        if name == stop or (name == "failed" and stop in MILESTONES):
            sys.stdout.flush()
            os._exit(0 if name == stop else 1)  # at once: a measurement, not a session (nothing to save)

    launcher.painted.connect(lambda: milestone("painted"))
    launcher.window_painted.connect(lambda win: milestone("ready"))
    launcher.failed.connect(lambda text: milestone("failed"))


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
    app = _application()
    problem = binding_problem()
    if problem is not None:
        print(f"divcolor: {problem}", file=sys.stderr)
        QMessageBox.critical(None, "divcolor cannot start", problem)
        return 1
    if screenshot:
        # a throwaway settings file: screenshots are reproducible and leave no recent-file trace
        settings = settings or Settings(Path(tempfile.mkdtemp(prefix="divcolor-shot-")) / "settings.ini")
        return _run_screenshot(app, image, screenshot, colorizer, settings)
    settings = settings if settings is not None else Settings()
    colours = theme.theme_named(settings.theme)  # the palette only: icons (qtawesome) come with the main window
    app.setStyle("Fusion")
    app.setPalette(theme.palette_for(colours))
    app.setStyleSheet(theme.stylesheet_for(colours))
    launcher = Launcher(settings, image, load=lambda: load_engine(colorizer))
    _trace(app, launcher)
    old_hook = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        """A bug in a slot becomes a dialog, not a silent nothing or a dead app."""
        traceback.print_exception(kind, value, tb)
        if launcher.window is not None:
            launcher.window.show_error("Unexpected error", value)
        else:
            QMessageBox.critical(None, "divcolor", error_text(value))

    def opened(win: MainWindow) -> None:
        import qtawesome as qta  # loaded with the main window by now

        app.setWindowIcon(qta.icon("mdi6.palette", color="#3d8bfd"))
        restored = win.autosave.offer_restore(win)
        if image and not restored:
            win.open_path(image)

    launcher.ready.connect(opened)
    sys.excepthook = hook
    try:
        launcher.start()
        code = app.exec()
    finally:
        sys.excepthook = old_hook
    if launcher.error is not None:
        code = code or 1
    if launcher.thread is not None and launcher.thread.is_alive():  # quit while loading
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # an import cannot be cancelled, and interpreter exit must not wait on it
    return finish_jobs(code)


def _run_screenshot(app: QApplication, image: str | None, out: str, colorizer: Colorizer | None, settings: Settings) -> int:
    """Screenshot mode: nobody watches the start, so the engine loads before the window."""
    try:
        colorizer = load_engine(colorizer)
    except (DivcolorError, ImportError) as e:
        print(f"divcolor: {loading_error_text(e)}", file=sys.stderr)
        return 1
    from .main_window import MainWindow  # after QApplication exists: widgets need it

    win = MainWindow(colorizer, settings)
    old_hook = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        traceback.print_exception(kind, value, tb)
        app.exit(1)

    sys.excepthook = hook
    try:
        return _screenshot(app, win, image, out)
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
