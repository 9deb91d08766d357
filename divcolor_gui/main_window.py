"""The main window: actions, menus, docks, status bar, and the wiring between them.

Every user command is a QAction created in :meth:`MainWindow._create_actions` (icon, shortcut,
tooltip that shows the shortcut), so menus, toolbars and panels share one definition. The
window owns the engine facade (injected, so tests use a tiny model), the job runners and the
undo stack; widgets only display and emit. Nothing here blocks on the engine: photo loading,
sampling, model loading and export run on the thread pool; stroke propagation and attention go
through the latest-wins lane.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeyEvent,
    QKeySequence,
    QUndoStack,
)
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QToolBar,
    QWidget,
)

import qtawesome as qta

from engine.colorizer import METHOD_LABELS, Colorizer, ModelInfo
from engine.errors import Cancelled, DivcolorError
from engine.io import Photo, load_photo, save_image
from engine.strokes import Stroke, parse_strokes

from . import theme
from .brush_panel import BrushPanel
from .canvas import SHOW_ORIGINAL_KEY, CanvasPanel, Tool
from .commands import AddStroke, ClearStrokes, EraseStrokes, PickSample
from .document import PROJECT_SUFFIX, Document, SampleRef, project_dict, read_project, write_project
from .gallery import THUMB, GalleryPanel, Sample
from .imaging import dominant_colors, qimage_from_rgb, thumbnail
from .jobs import JobContext, JobRunner, LatestWins
from .models_dialog import ModelsDialog
from .overlay import AttentionOverlay
from .settings import Settings

log = logging.getLogger(__name__)

IMAGE_FILTER = "Photos (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.bmp);;divcolor projects (*.divcolor);;All files (*)"
OPEN_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", PROJECT_SUFFIX}
EXPORT_FILTERS = {"PNG image (*.png)": ".png", "JPEG image (*.jpg *.jpeg)": ".jpg", "TIFF image (*.tif *.tiff)": ".tif"}
FAMILY_LABELS = {"general": "General photos", "faces": "Faces"}


def error_text(exc: BaseException) -> str:
    """User-facing errors verbatim; anything else is a bug, said plainly with what to do."""
    if isinstance(exc, DivcolorError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "There is not enough memory for this. Close other programs, or use a smaller photo or fewer samples."
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}. Check the folder exists and you can write to it."
    return (
        f"Something went wrong inside divcolor ({type(exc).__name__}: {exc}). Your work is still open; "
        "try again, and please report this with the steps that led to it."
    )


class MainWindow(QMainWindow):
    """One photo at a time: canvas in the middle, brush panel left, sample gallery right."""

    photo_loaded = Signal()  # a photo is on the canvas
    gallery_finished = Signal()  # a sampling job ended (results, no model, cancelled or failed)
    ready = Signal()  # photo shown and the gallery's first results in (or known absent)
    result_updated = Signal()  # the canvas shows a new (final or preview) result
    exported = Signal(str)
    project_saved = Signal(str)
    models_changed = Signal(list)

    def __init__(
        self,
        colorizer: Colorizer | None = None,
        settings: Settings | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.colorizer = colorizer if colorizer is not None else Colorizer()
        self.settings = settings if settings is not None else Settings()
        self.models: list[ModelInfo] = []
        self.field: Any = None  # StrokeField of the current photo, built on the live lane
        self._field_photo: Photo | None = None  # the photo self.field belongs to
        self._awaiting_ready = False
        self._times: dict[str, float] = {}
        self._icons: dict[QAction, str] = {}
        self._models_dialog: ModelsDialog | None = None
        self._tool_before_eyedropper = Tool.BRUSH
        self._pending_choice: tuple[str, str | None] | None = None  # model to select once listed
        self.error_sink: Callable[[str, str], None] | None = None  # headless runs: errors go here, not to dialogs
        self.force_close = False  # close without asking (screenshot mode)
        self.setWindowTitle("divcolor[*]")
        self.setAcceptDrops(True)

        # --- state and workers ----------------------------------------------------------------
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(4)
        self.sampling = JobRunner(self.pool, self)  # the gallery
        self.io = JobRunner(self.pool, self)  # photos, projects, export
        self.model_jobs = JobRunner(self.pool, self)  # listing and loading checkpoints
        self.live = LatestWins(self.pool, priority=("field", "propagate", "attention"), parent=self)
        self.doc = Document(self)
        self.undo_stack = QUndoStack(self)

        # --- widgets ----------------------------------------------------------------------------
        self.canvas_panel = CanvasPanel(self)
        self.canvas = self.canvas_panel.view
        self.setCentralWidget(self.canvas_panel)
        self.overlay = AttentionOverlay(self.canvas, self.live, lambda: self.field, self)
        self.gallery = GalleryPanel()
        self._create_actions()
        self.brush = BrushPanel(
            [self.act["brush"], self.act["eraser"], self.act["eyedropper"], self.act["pan"]], self.act["clear"]
        )
        self.gallery_dock = self._dock("Samples", self.gallery, Qt.DockWidgetArea.RightDockWidgetArea, "gallery")
        self.brush_dock = self._dock("Brush", self.brush, Qt.DockWidgetArea.LeftDockWidgetArea, "brush")
        self.gallery_dock.setMinimumWidth(2 * THUMB + 64)
        self.brush_dock.setMinimumWidth(200)
        self._create_menus()
        self._create_toolbars()
        self._create_status_bar()
        self._connect()

        # --- restore ------------------------------------------------------------------------------
        self.brush.set_color(self.settings.brush_color)
        self.brush.set_radius(self.settings.brush_radius)
        self.gallery.count.setValue(self.settings.samples_per_batch)
        self.act["dark"].setChecked(self.settings.theme == "dark")
        self.apply_theme(self.settings.theme)
        self._rebuild_recent_menu()
        self.resize(1440, 900)
        if self.settings.window_geometry is not None:
            self.restoreGeometry(self.settings.window_geometry)
        if self.settings.window_state is not None:
            self.restoreState(self.settings.window_state)
        self._update_enabled()
        self.refresh_models()

    # ==========================================================================================
    # construction
    # ==========================================================================================
    def _action(
        self,
        key: str,
        text: str,
        icon: str | None = None,
        slot: Callable[..., Any] | None = None,
        shortcut: str | QKeySequence | list | None = None,
        tip: str | None = None,
        checkable: bool = False,
    ) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            a.setShortcuts([s if isinstance(s, QKeySequence) else QKeySequence(s) for s in seqs])
        a.setCheckable(checkable)
        self._set_tip(a, tip or text.replace("…", "").replace("&", ""))
        if icon:
            self._icons[a] = icon
        if slot is not None:
            (a.toggled if checkable else a.triggered).connect(slot)
        self.addAction(a)  # shortcuts work even when the action is in no visible toolbar
        self.act[key] = a
        return a

    @staticmethod
    def _set_tip(a: QAction, tip: str) -> None:
        keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        a.setToolTip(f"{tip} ({keys})" if keys else tip)
        a.setStatusTip(tip)

    def _create_actions(self) -> None:
        self.act: dict[str, QAction] = {}
        A = self._action
        # file
        A("open", "&Open…", "mdi6.folder-open", self.open_dialog, QKeySequence.StandardKey.Open, "Open a photo or a divcolor project")
        A("save", "&Save Project", "mdi6.content-save", self.save_project, QKeySequence.StandardKey.Save,
          "Save photo, chosen sample and strokes as a project")
        A("save_as", "Save Project &As…", "mdi6.content-save-edit", lambda: self.save_project(ask=True), "Ctrl+Shift+S")
        A("export", "&Export Image…", "mdi6.export", self.export_dialog, "Ctrl+E",
          "Export the coloured photo at full size (PNG, JPEG or TIFF)")
        A("quit", "&Quit", "mdi6.exit-to-app", self.close, QKeySequence.StandardKey.Quit)
        # edit
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for key, a, icon in (("undo", undo, "mdi6.undo"), ("redo", redo, "mdi6.redo")):
            self.act[key] = a
            self._icons[a] = icon
            self.addAction(a)
        self.undo_stack.indexChanged.connect(self._retip_undo)
        self._retip_undo()
        A("clear", "C&lear Strokes", "mdi6.delete-sweep", self.clear_strokes, "Ctrl+Shift+Delete", "Remove every stroke")
        # tools
        tools = QActionGroup(self)
        tools.setExclusive(True)
        for key, text, icon, sc, tip in (
            ("brush", "&Brush", "mdi6.brush", "B", "Brush: paint a colour hint; click for a point hint"),
            ("eraser", "&Eraser", "mdi6.eraser", "E", "Eraser: remove the strokes you drag over"),
            ("eyedropper", "Eye&dropper", "mdi6.eyedropper", "I",
             "Eyedropper: pick the brush colour from the canvas or any gallery sample (Alt+click with the brush)"),
            ("pan", "&Pan", "mdi6.hand-back-right", "H", "Pan: drag to move the view (or hold Space, or drag with the middle button)"),
        ):
            a = A(key, text, icon, None, sc, tip, checkable=True)
            a.setData(Tool(key))
            tools.addAction(a)
        self.act["brush"].setChecked(True)
        tools.triggered.connect(self._tool_triggered)
        A("bigger", "Bigger Brush", "mdi6.plus-circle-outline", lambda: self.brush.set_radius(self.brush.radius * 1.25 + 0.5), "]")
        A("smaller", "Smaller Brush", "mdi6.minus-circle-outline", lambda: self.brush.set_radius(self.brush.radius / 1.25), "[")
        A("color", "Brush &Colour…", "mdi6.palette", lambda: self.brush.choose_color(), "C", "Choose the brush colour")
        # view
        A("zoom_in", "Zoom &In", "mdi6.magnify-plus-outline", lambda: self.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        A("zoom_out", "Zoom &Out", "mdi6.magnify-minus-outline", lambda: self.canvas.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        A("fit", "&Fit to Window", "mdi6.fit-to-screen-outline", self.canvas.fit, "Ctrl+0")
        A("zoom_100", "&Actual Pixels (100%)", "mdi6.numeric-1-box-outline", self.canvas.zoom_100, "Ctrl+1")
        A("original", "Show &Original", "mdi6.compare", self.canvas.set_show_original, None,
          "Show the grey original instead of the result (or hold \\)", checkable=True)
        A("strokes", "Show &Strokes", "mdi6.vector-polyline", self.canvas.set_strokes_visible, "S",
          "Show or hide your strokes over the result", checkable=True)
        self.act["strokes"].setChecked(True)
        A("attention", "&Attention Map", "mdi6.blur", self._toggle_attention, "A", checkable=True)
        A("dark", "&Dark Theme", "mdi6.theme-light-dark", lambda on: self.set_theme("dark" if on else "light"), "Ctrl+Shift+T",
          "Switch between the dark and the light theme", checkable=True)
        # colorize
        A("generate", "&Generate Samples", "mdi6.refresh", lambda: self.generate(append=False), "F5",
          "Replace the gallery with a fresh batch of colorizations")
        A("more", "&More Samples", "mdi6.plus-box-multiple", lambda: self.generate(append=True), "Ctrl+M",
          "Add another batch with the next seed")
        A("cancel", "&Cancel", "mdi6.close-circle-outline", self.cancel_jobs, "Esc", "Stop generating samples")
        A("models", "&Models…", "mdi6.cube-outline", self.show_models, "Ctrl+Shift+M", "Loaded models and their training metadata")
        A("load_model", "&Load Model…", "mdi6.file-upload-outline", self.load_model_dialog, "Ctrl+Shift+L",
          "Add your own .safetensors model")
        # help
        A("shortcuts", "&Keyboard Shortcuts", "mdi6.keyboard-outline", self.show_shortcuts, "F1")
        A("about", "&About divcolor", "mdi6.information-outline", self.show_about)
        self._set_tip(self.act["attention"], self.overlay.reason)

    def _retip_undo(self, *_: object) -> None:
        """Undo/redo tooltips name the edit, like their menu text ("Undo Paint stroke (Ctrl+Z)")."""
        for key in ("undo", "redo"):
            a = self.act[key]
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            a.setToolTip(f"{a.text().replace('&', '')} ({keys})")

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea, name: str) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{name}")
        d.setWidget(widget)
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                      | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, d)
        return d

    def _create_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        f.addAction(self.act["open"])
        self.recent_menu = f.addMenu(qta.icon("mdi6.history"), "Open &Recent")
        f.addSeparator()
        for k in ("save", "save_as", "export"):
            f.addAction(self.act[k])
        f.addSeparator()
        f.addAction(self.act["quit"])
        e = mb.addMenu("&Edit")
        for k in ("undo", "redo"):
            e.addAction(self.act[k])
        e.addSeparator()
        e.addAction(self.act["clear"])
        t = mb.addMenu("&Tools")
        for k in ("brush", "eraser", "eyedropper", "pan"):
            t.addAction(self.act[k])
        t.addSeparator()
        for k in ("bigger", "smaller", "color"):
            t.addAction(self.act[k])
        v = mb.addMenu("&View")
        for k in ("zoom_in", "zoom_out", "fit", "zoom_100"):
            v.addAction(self.act[k])
        v.addSeparator()
        for k in ("original", "strokes", "attention"):
            v.addAction(self.act[k])
        v.addSeparator()
        v.addAction(self.act["dark"])
        v.addSeparator()
        v.addAction(self.gallery_dock.toggleViewAction())
        v.addAction(self.brush_dock.toggleViewAction())
        c = mb.addMenu("&Colorize")
        for k in ("generate", "more", "cancel"):
            c.addAction(self.act[k])
        c.addSeparator()
        for k in ("models", "load_model"):
            c.addAction(self.act[k])
        h = mb.addMenu("&Help")
        h.addAction(self.act["shortcuts"])
        h.addAction(self.act["about"])

    def _create_toolbars(self) -> None:
        tb = QToolBar("Main", self)
        tb.setObjectName("toolbar_main")
        tb.setIconSize(QSize(20, 20))
        tb.setMovable(False)
        groups = [
            ("open", "save", "export"),
            ("undo", "redo"),
            ("fit", "zoom_100", "zoom_in", "zoom_out"),
            ("original", "strokes", "attention"),
            ("generate", "more", "models"),
        ]
        for i, g in enumerate(groups):
            if i:
                tb.addSeparator()
            for k in g:
                tb.addAction(self.act[k])
        for k in ("open", "export", "generate"):  # the few that deserve a word next to the icon
            w = tb.widgetForAction(self.act[k])
            if w is not None:
                w.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        self.toolbar = tb

    def _create_status_bar(self) -> None:
        sb = self.statusBar()
        self.pixel_label = QLabel("")
        self.method_label = QLabel("")
        self.time_label = QLabel("")
        self.device_label = QLabel(self._device_text())
        self.device_label.setToolTip("Where the models run")
        for w in (self.pixel_label, self.method_label, self.time_label, self.device_label):
            sb.addPermanentWidget(w)

    def _device_text(self) -> str:
        d = self.colorizer.device
        return "Device: CPU" if d.type == "cpu" else f"Device: GPU ({d})"

    def _connect(self) -> None:
        c, g, d = self.canvas, self.gallery, self.doc
        c.stroke_preview.connect(self._stroke_preview)
        c.stroke_finished.connect(self.add_stroke)
        c.stroke_aborted.connect(self._show_doc_result)
        c.erase_preview.connect(self._erase_preview)
        c.erase_finished.connect(self.erase_strokes)
        c.color_picked.connect(self._color_picked)
        c.hovered.connect(self._hovered)
        c.show_original_changed.connect(self._sync_original_action)
        g.color_picked.connect(self._color_picked)
        g.sample_clicked.connect(self.pick_sample)
        g.generate_requested.connect(self.generate)
        g.cancel_requested.connect(self.sampling.cancel)
        g.load_model_requested.connect(self.load_model_dialog)
        g.count.valueChanged.connect(self._count_changed)
        g.model_combo.currentIndexChanged.connect(self._model_choice_changed)
        self.brush.color_changed.connect(self._brush_color_changed)
        self.brush.radius_changed.connect(self._brush_radius_changed)
        self.sampling.busy_changed.connect(self.gallery.set_busy)
        self.sampling.busy_changed.connect(self._update_enabled)
        self.sampling.progress.connect(self.gallery.set_progress)
        self.io.busy_changed.connect(self._update_enabled)
        self.io.progress.connect(self._io_progress)
        for runner in (self.sampling, self.io, self.model_jobs):
            runner.job_failed.connect(self._job_failed)
        self.live.job_failed.connect(self._job_failed)
        d.strokes_changed.connect(self._strokes_changed)
        d.base_changed.connect(self._base_changed)
        d.result_changed.connect(self._show_doc_result)
        self.undo_stack.cleanChanged.connect(self._clean_changed)
        self.overlay.availability_changed.connect(self._attention_availability)

    # --- small slots (bound methods, so Qt drops them with the window) -----------------------
    def _tool_triggered(self, a: QAction) -> None:
        self.set_tool(a.data())

    def _stroke_preview(self, s: Stroke) -> None:
        self.request_propagation(self.doc.strokes + [s], preview=True)

    def _erase_preview(self, indices: list[int]) -> None:
        drop = set(indices)
        self.request_propagation([s for i, s in enumerate(self.doc.strokes) if i not in drop], preview=True)

    def erase_strokes(self, indices: list[int]) -> None:
        if indices:
            self.undo_stack.push(EraseStrokes(self.doc, indices))

    def _model_choice_changed(self, _index: int) -> None:
        if self.doc.photo is not None and self.models:
            self.generate(append=False)

    def _count_changed(self, n: int) -> None:
        self.settings.samples_per_batch = n

    def _io_progress(self, fraction: float, message: str) -> None:
        if message:
            self.statusBar().showMessage(message)

    def _job_failed(self, exc: BaseException) -> None:
        self.show_error("divcolor", exc)

    # ==========================================================================================
    # theme, enabling, small UI helpers
    # ==========================================================================================
    def apply_theme(self, name: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply_theme(app, name)
        for a, icon in self._icons.items():
            a.setIcon(qta.icon(icon))
        self.recent_menu.setIcon(qta.icon("mdi6.history"))
        self.gallery.refresh_icons()
        self.brush.set_color(self.brush.color)  # re-render the swatch after a palette change

    def set_theme(self, name: str) -> None:
        self.settings.theme = name
        self.apply_theme(name)

    def _clean_changed(self, clean: bool) -> None:
        self.setWindowModified(not clean)

    def _update_enabled(self, *_: object) -> None:
        has_photo = self.doc.photo is not None
        for k in ("save", "save_as", "export", "clear", "fit", "zoom_100", "zoom_in", "zoom_out", "original"):
            self.act[k].setEnabled(has_photo)
        self.act["clear"].setEnabled(bool(self.doc.strokes))
        can_gen = has_photo and bool(self.models)
        self.act["generate"].setEnabled(can_gen)
        self.act["more"].setEnabled(can_gen and bool(self.gallery.groups))
        self.act["cancel"].setEnabled(self.sampling.busy)
        self.gallery.set_can_generate(can_gen)

    def show_error(self, title: str, exc: BaseException | str, path: str | Path | None = None) -> None:
        """Every failure ends here: a dialog that says what happened and what to do."""
        if isinstance(exc, BaseException) and not isinstance(exc, DivcolorError):
            log.error("%s", "".join(traceback.format_exception(exc)))
        text = exc if isinstance(exc, str) else error_text(exc)
        if path is not None and Path(path).name not in text:
            text = f"{Path(path).name}: {text}"
        self.statusBar().showMessage(text.split(". ")[0], 8000)
        if self.error_sink is not None:
            self.error_sink(title, text)
            return
        QMessageBox.critical(self, title, text)

    def _set_time(self, what: str, seconds: float) -> None:
        self._times[what] = seconds
        self.time_label.setText(" · ".join(f"{k} {v:.2f} s" for k, v in self._times.items()))

    # ==========================================================================================
    # files
    # ==========================================================================================
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open photo or project", self.settings.last_dir, IMAGE_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> None:
        """Open a photo or a project (by extension); errors arrive as dialogs."""
        p = Path(path)
        if not self.confirm_discard():
            return
        self.settings.last_dir = str(p.parent)
        if p.suffix.lower() == PROJECT_SUFFIX:
            self._open_project(p)
            return
        self.statusBar().showMessage(f"Opening {p.name}…")
        self.io.submit(
            f"Opening {p.name}",
            lambda ctx: load_photo(p),
            on_done=lambda photo: self._photo_opened(photo, p),
            on_error=lambda e: self._open_failed(p, e),
        )

    def _open_failed(self, p: Path, e: BaseException) -> None:
        if not p.exists():
            self.settings.remove_recent(str(p.resolve()))
            self._rebuild_recent_menu()
        self.show_error("Cannot open photo", e, p)

    def _photo_opened(self, photo: Photo, path: Path, generate: bool = True) -> None:
        self.settings.add_recent(path)
        self._rebuild_recent_menu()
        self.set_photo(photo, generate=generate)

    def set_photo(self, photo: Photo, generate: bool = True) -> None:
        """Show a new photo (greyed if it has colour) and start its gallery and stroke field."""
        self.sampling.cancel()
        self.live.discard()
        self.field, self._field_photo = None, None
        self.undo_stack.clear()
        self.doc.set_photo(photo)
        self.canvas.set_photo(self.doc.grey)
        self.canvas.setFocus()
        self.gallery.clear()
        self.gallery.show_message(None)
        self.brush.set_palette([])
        self.brush.set_stroke_count(0)
        self.overlay.reset()
        self.act["attention"].setChecked(False)
        name = photo.path.name if photo.path else "photo"
        self.setWindowTitle(f"{name}[*] — divcolor")
        self.setWindowModified(False)
        w, h = photo.size
        note = "" if photo.is_grey else " — a colour photo: its colours are ignored and shown greyed"
        self.statusBar().showMessage(f"{name}: {w} × {h}, {photo.bit_depth}-bit{note}", 10000)
        self._awaiting_ready = True
        self._build_field()
        self._update_enabled()
        self.photo_loaded.emit()
        if generate:
            self.generate(append=False)

    def _rebuild_recent_menu(self) -> None:
        m = self.recent_menu
        m.clear()
        files = self.settings.recent_files
        for i, f in enumerate(files):
            a = m.addAction(f"&{(i + 1) % 10} {Path(f).name}")
            a.setToolTip(f)
            a.setStatusTip(f)
            a.triggered.connect(lambda _=False, f=f: self.open_path(f))
        if files:
            m.addSeparator()
            m.addAction("Clear Recent Files", lambda: (self.settings.clear_recent(), self._rebuild_recent_menu()))
        else:
            a = m.addAction("No recent files")
            a.setEnabled(False)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        files = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_path(files[0])

    # --- export -------------------------------------------------------------------------------
    def export_dialog(self) -> None:
        photo = self.doc.photo
        if photo is None:
            return
        if self.doc.base is None and not self.doc.strokes:
            QMessageBox.information(
                self, "Nothing to export yet",
                "The photo has no colour yet. Pick a sample from the gallery or paint strokes, then export.",
            )
            return
        folder = Path(self.settings.last_dir)
        ext = ".tif" if photo.bit_depth == 16 else ".png"
        suggested = str(folder / f"{photo.stem}_colorized{ext}")
        filters = list(EXPORT_FILTERS)
        chosen = filters[2] if ext == ".tif" else filters[0]
        path, flt = QFileDialog.getSaveFileName(self, "Export colorized photo", suggested, ";;".join(filters), chosen)
        if not path:
            return
        p = Path(path)
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            p = p.with_suffix(EXPORT_FILTERS.get(flt, ".png"))
        self.export_to(p)

    def export_to(self, path: str | Path) -> None:
        """Write the current result at the photo's full size, alpha and bit depth (on a worker)."""
        photo, base, strokes = self.doc.photo, self.doc.base, list(self.doc.strokes)
        if photo is None:
            return
        p = Path(path)
        current = self.doc.result if self.doc.result_is_current else None
        field = self.field if self._field_photo is photo else None

        def job(ctx: JobContext) -> Path:
            rgb = current
            if rgb is None:
                if strokes:
                    ctx.progress(0.1, "Applying strokes")
                    rgb = (field or self.colorizer.field(photo)).propagate(strokes, base, cancel=ctx.cancel_token).rgb
                elif base is not None:
                    rgb = base.rgb
                else:
                    raise DivcolorError("There is nothing coloured to export yet. Pick a sample or paint strokes first.")
            ctx.progress(0.6, f"Writing {p.name}")
            try:
                return save_image(p, rgb, photo.alpha, photo.bit_depth)
            except ValueError as e:  # e.g. an unknown extension: the message is written for users
                raise DivcolorError(str(e)) from e

        def done(out: Path) -> None:
            self.settings.last_dir = str(out.parent)
            w, h = photo.size
            self.statusBar().showMessage(f"Exported {out.name} ({w} × {h}, {photo.bit_depth if out.suffix.lower() != '.jpg' else 8}-bit)", 8000)
            self.exported.emit(str(out))

        self.io.submit(f"Exporting {p.name}", job, on_done=done, on_error=lambda e: self.show_error("Export failed", e, p))

    # --- projects -------------------------------------------------------------------------------
    def save_project(self, ask: bool = False) -> bool:
        """Save photo path, picked sample, gallery settings and strokes; True when saved."""
        photo = self.doc.photo
        if photo is None:
            return False
        if photo.path is None:
            QMessageBox.information(self, "Cannot save project", "This photo has no file, so a project cannot refer to it. Export the image instead.")
            return False
        path = self.doc.project_path
        if path is None or ask:
            suggested = str((path or Path(self.settings.last_dir) / f"{photo.stem}{PROJECT_SUFFIX}"))
            chosen, _ = QFileDialog.getSaveFileName(self, "Save project", suggested, f"divcolor project (*{PROJECT_SUFFIX})")
            if not chosen:
                return False
            path = Path(chosen)
            if path.suffix.lower() != PROJECT_SUFFIX:
                path = path.with_name(path.name + PROJECT_SUFFIX)
        return self.save_project_to(path)

    def save_project_to(self, path: str | Path) -> bool:
        path = Path(path)
        choice = self.gallery.model_choice() or ("general", None)
        try:
            data = project_dict(
                self.doc, path, self.gallery.seed.value(), self.gallery.temperature.value(),
                self.gallery.count.value(), choice[0], choice[1],
            )
            write_project(path, data)
        except (OSError, DivcolorError) as e:
            self.show_error("Cannot save project", e, path)
            return False
        self.doc.project_path = path
        self.undo_stack.setClean()
        self.settings.add_recent(path)
        self._rebuild_recent_menu()
        self.statusBar().showMessage(f"Saved {path.name}", 6000)
        self.project_saved.emit(str(path))
        return True

    def _open_project(self, path: Path) -> None:
        colorizer = self.colorizer

        def job(ctx: JobContext):
            proj = read_project(path)
            ctx.progress(0.1, f"Opening {proj.photo.name}")
            photo = load_photo(proj.photo)
            strokes = parse_strokes(proj.strokes_json, photo.size)
            base, warning = None, None
            if proj.sample is not None:
                r = proj.sample
                ctx.progress(0.3, "Recreating the chosen sample")
                try:
                    results = colorizer.sample(
                        photo, r.method, r.n, r.seed, r.temperature, r.family, r.checkpoint,
                        progress=lambda f, m: ctx.progress(0.3 + 0.7 * f, m), cancel=ctx.cancel_token,
                    )
                    base = results[r.index] if r.index < len(results) else None
                except Cancelled:
                    raise
                except DivcolorError as e:
                    warning = f"The sample this project was built on could not be recreated: {e} The strokes are restored on the grey photo."
            return proj, photo, strokes, base, warning

        def done(result) -> None:
            proj, photo, strokes, base, warning = result
            self.settings.add_recent(path)
            self._rebuild_recent_menu()
            g = self.gallery
            g.seed.setValue(proj.seed)
            g.temperature.setValue(proj.temperature)
            g.count.setValue(proj.samples)
            self._pending_choice = (proj.family, proj.checkpoint)
            self._apply_model_choices()
            self.set_photo(photo, generate=False)
            if base is not None:
                self.doc.set_base(base, proj.sample)
            self.doc.set_strokes(strokes)
            self.doc.project_path = path
            self.undo_stack.clear()
            self.undo_stack.setClean()
            self.setWindowTitle(f"{path.name}[*] — divcolor")
            if warning:
                QMessageBox.warning(self, "Project opened with changes", warning)
            self.generate(append=False)  # the same seed brings back the same gallery

        self.statusBar().showMessage(f"Opening project {path.name}…")
        self.io.submit(f"Opening {path.name}", job, on_done=done, on_error=lambda e: self.show_error("Cannot open project", e, path))

    def confirm_discard(self) -> bool:
        """Ask before unsaved strokes (or unsaved changes to a project) are thrown away."""
        if self.doc.photo is None or self.undo_stack.isClean():
            return True
        if not self.doc.strokes and self.doc.project_path is None:
            return True
        box = QMessageBox.question(
            self,
            "Unsaved strokes",
            "Your strokes are not saved. Save them as a project before continuing?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        if box == QMessageBox.StandardButton.Save:
            return self.save_project()
        return box == QMessageBox.StandardButton.Discard

    # ==========================================================================================
    # models and the gallery
    # ==========================================================================================
    def refresh_models(self, then: Callable[[], None] | None = None) -> None:
        """List checkpoints off the event loop (reading them validates their metadata)."""

        def done(infos: list[ModelInfo]) -> None:
            self.models = infos
            self._apply_model_choices()
            self.models_changed.emit(infos)
            if self._models_dialog is not None:
                self._models_dialog.set_models(infos)
            if not infos:
                self._show_no_model()
            self._update_enabled()
            if then:
                then()

        self.model_jobs.submit("Looking for models", lambda ctx: self.colorizer.available(), on_done=done)

    def _apply_model_choices(self) -> None:
        choices: list[tuple[str, tuple[str, str | None]]] = []
        families = {i.family for i in self.models}
        for fam in ("general", "faces"):
            if fam in families:
                choices.append((FAMILY_LABELS[fam], (fam, None)))
        for i in self.models:
            if i.family not in ("general", "faces"):
                choices.append((f"{METHOD_LABELS.get(i.method, i.method)}: {i.path.name}", ("general", str(i.path))))
        self.gallery.set_model_choices(choices, self._pending_choice)

    def _show_no_model(self) -> None:
        self.gallery.show_message(
            "<b>No colorization model found.</b><br>divcolor looks in its <i>resources/models</i> folder and your "
            "data folder. <a href='load'>Load a model…</a> (a .safetensors file made by divcolor-train).<br><br>"
            "You can still open photos and paint strokes: they colour the photo by propagation."
        )
        self.statusBar().showMessage("No colorization model found — strokes still work", 10000)

    def generate(self, append: bool = False) -> None:
        """Sample a batch of colorizations per method in the background; results stream in."""
        photo = self.doc.photo
        if photo is None:
            return
        family, checkpoint = self.gallery.model_choice() or ("general", None)
        n = self.gallery.count.value()
        temperature = self.gallery.temperature.value()
        if not append:
            self.gallery.clear()
        seed = self.gallery.seed.value() + self.gallery.batches
        self.gallery.batches += 1
        self.gallery.show_message(None)
        colorizer = self.colorizer
        t_start = time.perf_counter()

        def job(ctx: JobContext) -> int:
            if checkpoint:
                methods = [colorizer.add_model(checkpoint).method]
            else:
                methods = colorizer.methods()
            if not methods:
                return 0
            for k, m in enumerate(methods):
                label = METHOD_LABELS.get(m, m)
                results = colorizer.sample(
                    photo, m, n, seed, temperature, family, checkpoint,
                    progress=lambda f, msg, k=k: ctx.progress((k + f) / len(methods), f"{label}: {msg}"),
                    cancel=ctx.cancel_token,
                )
                samples = [
                    Sample(c, SampleRef.of(c, family, checkpoint, n), qimage_from_rgb(thumbnail(c.rgb, 2 * THUMB)))
                    for c in results
                ]
                ctx.publish((m, samples, colorizer.last_seconds))
            return len(methods)

        def published(item) -> None:
            method, samples, seconds = item
            if self.doc.photo is not photo:
                return
            self.gallery.add_samples(method, samples)
            self._set_time("samples", seconds)
            if self.doc.base is None and samples:
                # first results: show one at once, as the starting point (not an undoable edit)
                self.doc.set_base(samples[0].colorization, samples[0].ref)
            else:
                self.gallery.select(self.doc.base, self.doc.base_ref)
            self._update_enabled()
            self._maybe_ready()

        def done(count: int) -> None:
            if count == 0:
                self._show_no_model()
            else:
                self.statusBar().showMessage(f"Samples ready in {time.perf_counter() - t_start:.1f} s", 5000)
            self._gallery_ended()

        def cancelled() -> None:
            self.gallery.show_message("Generation cancelled. Press <b>Generate</b> (F5) to try again.")
            self._gallery_ended()

        def failed(e: BaseException) -> None:
            self.gallery.show_message(f"Could not generate samples: {error_text(e)}")
            self._gallery_ended()
            self.show_error("Cannot colorize", e)

        self.sampling.submit("Generating samples", job, on_done=done, on_error=failed, on_cancel=cancelled, on_publish=published)
        self._update_enabled()

    def _gallery_ended(self) -> None:
        self._update_enabled()
        self.gallery_finished.emit()
        self._maybe_ready(final=True)

    def _maybe_ready(self, final: bool = False) -> None:
        if self._awaiting_ready and self.doc.photo is not None and (final or self.gallery.groups):
            self._awaiting_ready = False
            self.ready.emit()

    def cancel_jobs(self) -> None:
        self.sampling.cancel()

    def pick_sample(self, sample: Sample) -> None:
        """Make a gallery sample the base (undoable)."""
        if self.doc.photo is None or sample.ref == self.doc.base_ref:
            return
        self.undo_stack.push(PickSample(self.doc, sample.colorization, sample.ref))

    def show_models(self) -> None:
        if self._models_dialog is None:
            self._models_dialog = ModelsDialog(self)
            self._models_dialog.load_requested.connect(self.load_model_dialog)
        self._models_dialog.set_models(self.models)
        self._models_dialog.show()
        self._models_dialog.raise_()

    def load_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", self.settings.last_dir, "divcolor models (*.safetensors)")
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path) -> None:
        """Validate and register a user's checkpoint on a worker; then offer it in the gallery."""
        p = Path(path)

        def done(info: ModelInfo) -> None:
            self._pending_choice = ("general", str(info.path))
            self.statusBar().showMessage(f"Loaded {info.label} from {p.name}", 6000)
            self.refresh_models(then=lambda: (self._build_field(), self.generate(False) if self.doc.photo else None))

        self.model_jobs.submit(
            f"Loading {p.name}", lambda ctx: self.colorizer.add_model(p), on_done=done,
            on_error=lambda e: self.show_error("Cannot load model", e, p),
        )

    # ==========================================================================================
    # strokes and propagation
    # ==========================================================================================
    def set_tool(self, tool: Tool) -> None:
        if tool == Tool.EYEDROPPER and self.canvas.tool != Tool.EYEDROPPER:
            self._tool_before_eyedropper = self.canvas.tool
        self.canvas.set_tool(tool)
        self.gallery.eyedropper = tool == Tool.EYEDROPPER
        self.act[tool.value].setChecked(True)

    def add_stroke(self, stroke: Stroke) -> None:
        if self.doc.photo is not None:
            self.undo_stack.push(AddStroke(self.doc, stroke))

    def clear_strokes(self) -> None:
        if self.doc.strokes:
            self.undo_stack.push(ClearStrokes(self.doc))

    def _build_field(self) -> None:
        """Build (or fetch) the photo's stroke field on the live lane and learn whether it has
        attention maps, so the overlay can say so before the user tries."""
        photo = self.doc.photo
        if photo is None:
            return
        colorizer = self.colorizer

        def job(ctx: JobContext):
            field = colorizer.field(photo)
            w, h = photo.size
            return field, field.attention(w / 2, h / 2) is not None

        def done(result) -> None:
            if self.doc.photo is not photo:
                return
            self.field, has_attention = result
            self._field_photo = photo
            name = {"levin": "Levin propagation", "gcrf": "G-CRF"}.get(self.field.method, self.field.method)
            self.method_label.setText(f"Strokes: {name}")
            self.overlay.set_available(has_attention)

        self.live.submit("field", job, done, on_error=lambda e: self.show_error("Strokes unavailable", e))

    def request_propagation(self, strokes: list[Stroke] | None = None, preview: bool = False) -> None:
        """Colour the photo from strokes over the base, latest request wins.

        Previews (while dragging) go straight to the canvas; final results go to the document.
        """
        photo, base = self.doc.photo, self.doc.base
        if photo is None:
            return
        strokes = list(self.doc.strokes if strokes is None else strokes)
        revision = self.doc.revision
        if not strokes:
            self.live.discard("propagate")
            if preview:
                self.canvas.set_result(base.rgb if base is not None else None)
                self.result_updated.emit()
            return
        colorizer = self.colorizer
        # reuse the field built for this photo: asking the colorizer again re-lists its models
        field = self.field if self._field_photo is photo else None

        def job(ctx: JobContext):
            t0 = time.perf_counter()
            c = (field or colorizer.field(photo)).propagate(strokes, base, cancel=ctx.cancel_token)
            return c.rgb, qimage_from_rgb(c.rgb), time.perf_counter() - t0

        def done(result) -> None:
            rgb, image, seconds = result
            if self.doc.photo is not photo:
                return
            self._set_time("strokes", seconds)
            if preview:
                if not self.canvas.painting and self.doc.result_is_current:
                    return  # the drag ended and the final result is already shown
                self.canvas.set_result(rgb, image)
                self.result_updated.emit()
            elif revision == self.doc.revision:
                self.doc.set_result(rgb, revision, image)

        self.live.submit("propagate", job, done)

    def _strokes_changed(self) -> None:
        self.canvas.set_strokes(self.doc.strokes)
        self.brush.set_stroke_count(len(self.doc.strokes))
        self._update_enabled()
        if self.doc.strokes:
            self.request_propagation()
        else:
            self.live.discard("propagate")

    def _base_changed(self) -> None:
        base = self.doc.base
        self.gallery.select(base, self.doc.base_ref)
        self.brush.set_palette(dominant_colors(base.rgb) if base is not None else [])
        if self.doc.strokes:
            self.request_propagation()

    def _show_doc_result(self) -> None:
        self.canvas.set_result(self.doc.result, self.doc.result_image)
        self.result_updated.emit()

    def _color_picked(self, rgb: tuple[int, int, int]) -> None:
        self.brush.set_color(rgb)
        self.statusBar().showMessage("Brush colour #%02X%02X%02X" % tuple(rgb), 4000)
        if self.canvas.tool == Tool.EYEDROPPER:
            self.set_tool(self._tool_before_eyedropper if self._tool_before_eyedropper != Tool.EYEDROPPER else Tool.BRUSH)

    def _brush_color_changed(self, rgb: tuple[int, int, int]) -> None:
        self.canvas.set_brush(color=rgb)
        self.settings.brush_color = rgb

    def _brush_radius_changed(self, r: float) -> None:
        self.canvas.set_brush(radius=r)
        self.settings.brush_radius = r

    def _hovered(self, x: float, y: float) -> None:
        photo = self.doc.photo
        if photo is None or x < 0:
            self.pixel_label.setText("")
            return
        ix, iy = int(x), int(y)
        self.pixel_label.setText(f"x {ix}, y {iy} · L {photo.L[iy, ix]:.0f}")

    # --- compare and attention ---------------------------------------------------------------------
    def _sync_original_action(self, on: bool) -> None:
        a = self.act["original"]
        if a.isChecked() != on:
            a.blockSignals(True)
            a.setChecked(on)
            a.blockSignals(False)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == SHOW_ORIGINAL_KEY and not event.isAutoRepeat() and self.doc.photo is not None:
            self.canvas.set_show_original(True)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == SHOW_ORIGINAL_KEY and not event.isAutoRepeat():
            self.canvas.set_show_original(False)
            return
        super().keyReleaseEvent(event)

    def _toggle_attention(self, on: bool) -> None:
        self.overlay.set_enabled(on)
        if on and not self.overlay.available:
            self.statusBar().showMessage(self.overlay.reason, 8000)
            self.act["attention"].setChecked(False)
        elif on:
            self.statusBar().showMessage("Attention map: move the mouse over the photo", 5000)

    def _attention_availability(self, available: bool, reason: str) -> None:
        a = self.act["attention"]
        a.setEnabled(available)
        self._set_tip(a, reason)
        if not available and a.isChecked():
            a.setChecked(False)

    # ==========================================================================================
    # help, closing
    # ==========================================================================================
    def show_shortcuts(self) -> None:
        rows = []
        for a in self.act.values():
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            if keys:
                rows.append(f"<tr><td><b>{keys}</b></td><td>{a.text().replace('&', '')}</td></tr>")
        extra = [
            ("Hold \\", "Show the grey original"), ("Wheel", "Zoom about the cursor"),
            ("Space+drag / middle drag", "Pan"), ("Alt+click", "Pick a colour (canvas or gallery)"),
            ("Click", "Point hint"), ("Right click while painting", "Abandon the stroke"),
        ]
        rows += [f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in extra]
        QMessageBox.information(self, "Keyboard shortcuts", "<table cellpadding=3>" + "".join(rows) + "</table>")

    def show_about(self) -> None:
        QMessageBox.about(
            self, "About divcolor",
            "<b>divcolor</b> — diverse and controllable colorization of black-and-white photos.<br><br>"
            "Pick one of several plausible colorizations, then steer it with colour strokes.<br>"
            f"Models run on: {self._device_text().split(': ', 1)[1]}",
        )

    def is_idle(self) -> bool:
        """No job running and the canvas shows the result of the current strokes (tests use it)."""
        return not (self.sampling.busy or self.io.busy or self.model_jobs.busy or self.live.busy) and self.doc.result_is_current

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.force_close and not self.confirm_discard():
            event.ignore()
            return
        self.settings.window_geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        for r in (self.sampling, self.io, self.model_jobs):
            r.cancel_all()
        self.live.close()
        self.pool.waitForDone(5000)  # engine jobs check the cancel token; this is short
        event.accept()
