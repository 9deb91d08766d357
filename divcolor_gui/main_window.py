"""The main window: builds the views, creates the actions and wires both to the session.

The state and the work (photo, model per photo, gallery batches, strokes, undo, stroke field,
jobs) live in :class:`~.session.Session`, which has no widgets. This module only builds views
(canvas, gallery, brush panel, overlay, dialogs), turns user commands into session calls and
session signals into what the views show. Every user command is a QAction created in
:meth:`MainWindow._create_actions` (icon, shortcut, tooltip that shows the shortcut), so menus,
toolbars and panels share one definition.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeyEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QToolBar,
    QWidget,
)

import qtawesome as qta

from engine.colorizer import Colorizer, ModelInfo
from engine.errors import DivcolorError
from engine.io import Photo
from engine.strokes import Stroke, displayed_color

from . import theme
from .autosave import Autosave, autosave_dir
from .brush_panel import BrushPanel
from .canvas import SHOW_ORIGINAL_KEY, CanvasPanel, Tool
from .document import PROJECT_SUFFIX, project_dict, write_project
from .errors import error_text
from .gallery import THUMB, GalleryPanel, Sample
from .imaging import dominant_colors, full_size
from .models_dialog import ModelsDialog
from .overlay import AMBIGUITY_NEEDS, AMBIGUITY_TIP, AmbiguityOverlay, AttentionOverlay
from .samples import sample_photos
from .session import FieldState, MethodPlan, Session
from .settings import Settings

__all__ = ["MainWindow", "error_text"]

log = logging.getLogger(__name__)

IMAGE_FILTER = "Photos (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.bmp);;divcolor projects (*.divcolor);;All files (*)"
OPEN_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", PROJECT_SUFFIX}
EXPORT_FILTERS = {"PNG image (*.png)": ".png", "JPEG image (*.jpg *.jpeg)": ".jpg", "TIFF image (*.tif *.tiff)": ".tif"}
DEFAULT_SIZE = (1440, 900)
SCREEN_SHARE = 0.92  # of the available screen a first window takes at most


def available_geometry(widget: QWidget) -> QRect:
    """The usable part of the screen the window is on (without panels and docks)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else QRect(0, 0, *DEFAULT_SIZE)


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
        self.settings = settings if settings is not None else Settings()
        self.session = Session(colorizer if colorizer is not None else Colorizer(), self)
        self.autosave = Autosave(self.session, autosave_dir(self.settings), settings=self.settings, parent=self)
        self.autosave.restored.connect(self._rebuild_recent_menu)
        self._times: dict[str, float] = {}
        self._icons: dict[QAction, str] = {}
        self._models_dialog: ModelsDialog | None = None
        self._batch_dialog: Any = None
        self._tool_before_eyedropper = Tool.BRUSH
        self.error_sink: Callable[[str, str], None] | None = None  # headless runs: errors go here, not to dialogs
        self.force_close = False  # close without asking (screenshot mode)
        self._shown_once = False
        self.fit_screen = True  # screenshots turn it off to grab an exact size on any screen
        self.setWindowTitle("divcolor[*]")
        self.setAcceptDrops(True)

        # --- widgets ----------------------------------------------------------------------------
        self.canvas_panel = CanvasPanel(self)
        self.canvas = self.canvas_panel.view
        self.setCentralWidget(self.canvas_panel)
        self.overlay = AttentionOverlay(self.canvas, self.live, lambda: self.session.field, self)
        self.ambiguity = AmbiguityOverlay(self.canvas, self)
        self._hover_L: float | None = None  # lightness of the pixel under the cursor (stroke preview swatch)
        self.gallery = GalleryPanel()
        self._create_actions()
        self.brush = BrushPanel(
            [self.act["brush"], self.act["eraser"], self.act["eyedropper"], self.act["pan"]], self.act["clear"]
        )
        self.gallery_dock = self._dock("Samples", self.gallery, Qt.DockWidgetArea.RightDockWidgetArea, "gallery")
        self.brush_dock = self._dock("Brush", self.brush, Qt.DockWidgetArea.LeftDockWidgetArea, "brush")
        self.gallery_dock.setMinimumWidth(THUMB + 48)
        self.brush_dock.setMinimumWidth(170)
        self._create_menus()
        self._create_toolbars()
        self._create_status_bar()
        self._connect()

        # --- restore ------------------------------------------------------------------------------
        self.brush.set_color(self.settings.brush_color)
        self.brush.set_radius(self.settings.brush_radius)
        self.brush.set_recent(self.settings.recent_colors)
        self.gallery.count.setValue(self.settings.samples_per_batch)
        self.session.set_params(self.gallery.seed.value(), self.gallery.count.value(), self.gallery.temperature.value())
        self.act["dark"].setChecked(self.settings.theme == "dark")
        self.apply_theme(self.settings.theme)
        self._rebuild_recent_menu()
        self.place_on_screen()
        if self.settings.window_state is not None:
            self.restoreState(self.settings.window_state)
        self._update_enabled()
        self.session.refresh_models()

    # --- the session's parts, under the names views and tests use ---------------------------------
    @property
    def colorizer(self) -> Colorizer:
        return self.session.colorizer

    @property
    def doc(self):
        return self.session.doc

    @property
    def undo_stack(self):
        return self.session.undo_stack

    @property
    def live(self):
        return self.session.live

    @property
    def sampling(self):
        return self.session.sampling

    @property
    def io(self):
        return self.session.io

    @property
    def model_jobs(self):
        return self.session.model_jobs

    @property
    def models(self) -> list[ModelInfo]:
        return self.session.models

    @property
    def field(self) -> Any:
        return self.session.field

    # ==========================================================================================
    # construction
    # ==========================================================================================
    def place_on_screen(self) -> None:
        """Open where the user left the window, or at 1440x900 — never larger than the screen.

        At 150 % scaling a 1920x1080 screen is 1280x720 logical pixels: a fixed 1440x900 window
        ran off it. The saved geometry is clamped too (the screen may have changed since).
        """
        avail = available_geometry(self)
        saved = self.settings.window_geometry
        if saved is not None and self.restoreGeometry(saved):
            self.clamp_to_screen()
            return
        w = min(DEFAULT_SIZE[0], int(avail.width() * SCREEN_SHARE))
        h = min(DEFAULT_SIZE[1], int(avail.height() * SCREEN_SHARE))
        self.resize(w, h)
        if w >= 1100:  # room for two columns of samples beside a large canvas
            self.resizeDocks([self.gallery_dock], [2 * THUMB + 64], Qt.Orientation.Horizontal)
        fw, fh = self.frameGeometry().width(), self.frameGeometry().height()
        self.move(avail.left() + max(0, (avail.width() - fw) // 2), avail.top() + max(0, (avail.height() - fh) // 2))

    def clamp_to_screen(self) -> None:
        """Move and shrink the window, frame included, into the screen's available area."""
        if self.isMaximized() or self.isFullScreen():
            return
        avail = available_geometry(self)
        g, f = self.geometry(), self.frameGeometry()
        dx, dy = g.left() - f.left(), g.top() - f.top()
        dw, dh = f.width() - g.width(), f.height() - g.height()
        fw, fh = min(f.width(), avail.width()), min(f.height(), avail.height())
        fx = min(max(f.x(), avail.left()), avail.right() - fw + 1)
        fy = min(max(f.y(), avail.top()), avail.bottom() - fh + 1)
        if (fx, fy, fw, fh) != (f.x(), f.y(), f.width(), f.height()):
            self.setGeometry(fx + dx, fy + dy, fw - dw, fh - dh)

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._shown_once:  # the frame's size is known once the window exists
            self._shown_once = True
            if self.fit_screen:
                self.clamp_to_screen()

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
          "Save photo, chosen model, gallery, picked sample and strokes as a project")
        A("save_as", "Save Project &As…", "mdi6.content-save-edit", lambda: self.save_project(ask=True), "Ctrl+Shift+S")
        A("export", "&Export Image…", "mdi6.export", self.export_dialog, "Ctrl+E",
          "Export the coloured photo at full size (PNG, JPEG or TIFF)")
        A("batch", "Colori&ze Folder…", "mdi6.folder-multiple-image", self.show_batch,
          "Ctrl+Shift+B", "Colorize every photo of a folder into another folder, as `divcolor colorize` does")
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
        A("ambiguity", "Am&biguity Map", "mdi6.map-marker-question-outline", self._toggle_ambiguity, "D",
          AMBIGUITY_TIP, checkable=True)
        A("dark", "&Dark Theme", "mdi6.theme-light-dark", lambda on: self.set_theme("dark" if on else "light"), "Ctrl+Shift+T",
          "Switch between the dark and the light theme", checkable=True)
        # colorize
        A("generate", "&Generate Samples", "mdi6.refresh", lambda: self.generate(append=False), "F5",
          "Replace the gallery with a fresh batch of colorizations")
        A("more", "&More Samples", "mdi6.plus-box-multiple", lambda: self.generate(append=True), "Ctrl+M",
          "Add another batch of the seed's set; with strokes, new samples that keep them (lock and resample)")
        A("cancel", "&Cancel", "mdi6.close-circle-outline", self.cancel_jobs, "Esc", "Stop generating samples")
        A("models", "&Models…", "mdi6.cube-outline", self.show_models, "Ctrl+Shift+M", "The models, what they were trained on and how good they are")
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
        self.sample_menu = f.addMenu(qta.icon("mdi6.image-multiple-outline"), "Open Sa&mple")
        for name, path in sample_photos():
            a = self.sample_menu.addAction(name)
            a.setToolTip(str(path))
            a.setData(str(path))
            a.triggered.connect(lambda _=False, p=path: self.open_path(p))
        if self.sample_menu.isEmpty():
            self.sample_menu.addAction("No sample photos installed").setEnabled(False)
        self.recent_menu = f.addMenu(qta.icon("mdi6.history"), "Open &Recent")
        f.addSeparator()
        for k in ("save", "save_as", "export"):
            f.addAction(self.act[k])
        f.addSeparator()
        f.addAction(self.act["batch"])
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
        for k in ("original", "strokes", "attention", "ambiguity"):
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
            ("original", "strokes", "attention", "ambiguity"),
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
        self.method_label.setToolTip("What your strokes are propagated with, and whether it is ready")
        self.time_label = QLabel("")
        self.time_label.setToolTip("How long you waited: samples from Generate to the last one, strokes from release to result")
        self.device_label = QLabel(self._device_text())
        self.device_label.setToolTip("Where the models run")
        for w in (self.pixel_label, self.method_label, self.time_label, self.device_label):
            # as wide as their text while there is room, but never widening the window
            w.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
            w.setMinimumWidth(1)
            sb.addPermanentWidget(w)

    def _device_text(self) -> str:
        d = self.colorizer.device
        return "Device: CPU" if d.type == "cpu" else f"Device: GPU ({d})"

    def _connect(self) -> None:
        c, g, d, s = self.canvas, self.gallery, self.doc, self.session
        c.stroke_preview.connect(self._stroke_preview)
        c.stroke_finished.connect(self.add_stroke)
        c.stroke_aborted.connect(self._show_doc_result)
        c.erase_preview.connect(self._erase_preview)
        c.erase_finished.connect(self.erase_strokes)
        c.color_picked.connect(self._color_picked)
        c.pressed_at.connect(self._suggest_at)
        c.hovered.connect(self._hovered)
        c.show_original_changed.connect(self._sync_original_action)
        self.canvas_panel.empty.open_requested.connect(self.open_dialog)
        self.canvas_panel.empty.sample_requested.connect(self.open_path)
        g.color_picked.connect(self._color_picked)
        g.sample_clicked.connect(self.pick_sample)
        g.generate_requested.connect(self.generate)
        g.cancel_requested.connect(self.cancel_jobs)
        g.load_model_requested.connect(self.load_model_dialog)
        g.count.valueChanged.connect(self._count_changed)
        g.seed.valueChanged.connect(lambda v: self.session.set_params(seed=v))
        g.temperature.valueChanged.connect(lambda v: self.session.set_params(temperature=v))
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
        d.photo_changed.connect(self._photo_changed)
        d.strokes_changed.connect(self._strokes_changed)
        d.base_changed.connect(self._base_changed)
        d.result_changed.connect(self._show_doc_result)
        s.models_changed.connect(self._models_changed)
        s.choice_changed.connect(self._choice_changed)
        s.photo_opened.connect(self._photo_opened)
        s.gallery_cleared.connect(self._gallery_cleared)
        s.batch_started.connect(self._batch_started)
        s.samples_added.connect(self._samples_added)
        s.method_failed.connect(self.gallery.fail_method)
        s.generation_finished.connect(self._generation_finished)
        s.field_changed.connect(self._field_changed)
        s.attention_available.connect(lambda on: self.overlay.set_available(on))
        s.preview.connect(self._preview)
        s.message.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        s.error.connect(self.show_error)
        s.timing.connect(self._set_time)
        s.ready.connect(self.ready.emit)
        s.exported.connect(self._exported)
        s.ambiguity.connect(self.ambiguity.set_map)
        s.project_opened.connect(self._project_opened)
        self.undo_stack.cleanChanged.connect(self._clean_changed)
        self.overlay.availability_changed.connect(self._attention_availability)

    # --- small slots (bound methods, so Qt drops them with the window) -----------------------
    def _tool_triggered(self, a: QAction) -> None:
        self.set_tool(a.data())

    def _stroke_preview(self, s: Stroke) -> None:
        self.session.request_propagation(self.doc.strokes + [s], preview=True)

    def _erase_preview(self, indices: list[int]) -> None:
        drop = set(indices)
        self.session.request_propagation([s for i, s in enumerate(self.doc.strokes) if i not in drop], preview=True)

    def _preview(self, rgb, image) -> None:
        if not self.canvas.painting and self.doc.result_is_current and rgb is not None and image is not None:
            return  # the drag ended and the final result is already shown
        self.canvas.set_result(rgb, image)
        self.result_updated.emit()

    def erase_strokes(self, indices: list[int]) -> None:
        self.session.erase_strokes(indices)

    def _model_choice_changed(self, _index: int) -> None:
        choice = self.gallery.model_choice()
        if choice is not None and self.doc.photo is not None:
            self.session.set_choice(choice, regenerate=False)
            if self.models:
                self.generate(append=False)

    def _choice_changed(self, choice) -> None:
        self.gallery.set_model_choices(self.session.model_choices(), choice)

    def _models_changed(self, infos: list[ModelInfo]) -> None:
        self.gallery.set_model_choices(self.session.model_choices(), self.session.choice if self.doc.photo else None)
        if self._models_dialog is not None:
            self._models_dialog.set_models(infos)
        if not infos:
            self._show_no_model()
        self._update_enabled()
        self.models_changed.emit(infos)

    def _count_changed(self, n: int) -> None:
        self.settings.samples_per_batch = n
        self.session.set_params(n=n)

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
        self.sample_menu.setIcon(qta.icon("mdi6.image-multiple-outline"))
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
        self.act["more"].setEnabled(can_gen and bool(self.session.samples))
        amb = len(self.session.all_samples()) >= 2 or self.act["ambiguity"].isChecked()
        self.act["ambiguity"].setEnabled(amb)
        self._set_tip(self.act["ambiguity"], AMBIGUITY_TIP.rstrip(" (D).") if amb else AMBIGUITY_NEEDS)
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
        """Ask about unsaved work first, then for the file (not the other way round)."""
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open photo or project", self.settings.last_dir, IMAGE_FILTER)
        if path:
            self.open_path(path, confirmed=True)

    def open_path(self, path: str | Path, confirmed: bool = False) -> None:
        """Open a photo or a project (by extension); errors arrive as dialogs."""
        p = Path(path)
        if not confirmed and not self.confirm_discard():
            return
        self.settings.last_dir = str(p.parent)
        if p.suffix.lower() == PROJECT_SUFFIX:
            self.session.open_project(p)
        else:
            self.session.open_photo(p)

    def _photo_opened(self, path: Path) -> None:
        self.settings.add_recent(path)
        self._rebuild_recent_menu()

    def set_photo(self, photo: Photo, generate: bool = True) -> None:
        """Show a new photo (greyed if it has colour) and start its gallery and stroke field."""
        self.session.set_photo(photo, generate=generate)

    def _photo_changed(self) -> None:
        photo = self.doc.photo
        self.canvas_panel.show_empty(photo is None)
        self.canvas.set_photo(self.doc.grey)
        if photo is None:
            return
        self.canvas.setFocus()
        self.brush.set_palette([])
        self.brush.set_suggestions([])
        self.brush.set_stroke_count(0)
        self.overlay.reset()
        self.act["attention"].setChecked(False)
        self.act["ambiguity"].setChecked(False)
        self.ambiguity.reset()
        name = photo.path.name if photo.path else "photo"
        self.setWindowTitle(f"{name}[*] — divcolor")
        self.setWindowModified(False)
        w, h = full_size(photo)  # the photo's own size; big ones are worked on through a preview
        note = "" if photo.is_grey else " — a colour photo: its colours are ignored and shown greyed"
        if (w, h) != photo.size:
            note += f" — shown and edited at {photo.size[0]} × {photo.size[1]}, exported at full size"
        self.statusBar().showMessage(f"{name}: {w} × {h}, {photo.bit_depth}-bit{note}", 10000)
        self._update_enabled()
        self.photo_loaded.emit()

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
    def export_suggestion(self) -> Path:
        """``<last export folder>/<stem>_colorized.png`` (``.tif`` for 16-bit photos)."""
        photo = self.doc.photo
        assert photo is not None
        folder = Path(self.settings.last_export_dir or (photo.path.parent if photo.path else self.settings.last_dir))
        ext = ".tif" if photo.bit_depth == 16 else ".png"
        return folder / f"{photo.stem}_colorized{ext}"

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
        suggested = self.export_suggestion()
        filters = list(EXPORT_FILTERS)
        chosen = filters[2] if suggested.suffix == ".tif" else filters[0]
        path, flt = QFileDialog.getSaveFileName(self, "Export colorized photo", str(suggested), ";;".join(filters), chosen)
        if not path:
            return
        p = Path(path)
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            p = p.with_suffix(EXPORT_FILTERS.get(flt, ".png"))
        self.export_to(p)

    def export_to(self, path: str | Path) -> None:
        """Write the current result at the photo's full size, alpha and bit depth (on a worker)."""
        self.session.export(path)

    def _exported(self, out: str) -> None:
        self.settings.last_export_dir = str(Path(out).parent)
        self.exported.emit(out)

    # --- projects -------------------------------------------------------------------------------
    def save_project(self, ask: bool = False) -> bool:
        """Save photo path, model, gallery batches, picked sample and strokes; True when saved."""
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
        family, checkpoint = self.session.choice
        batches = self.session.batches
        first = batches[0] if batches else None
        try:
            data = project_dict(
                self.doc, path,
                first.seed if first else self.gallery.seed.value(),
                first.temperature if first else self.gallery.temperature.value(),
                first.n if first else self.gallery.count.value(),
                family, checkpoint,
            )
            data["gallery"]["batches"] = self.session.batches_json()
            write_project(path, data, self.doc.photo)
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

    def _project_opened(self, proj) -> None:
        g = self.gallery
        for w, v in ((g.seed, proj.seed), (g.temperature, proj.temperature), (g.count, proj.samples)):
            w.setValue(v)
        named = self.doc.project_path or (self.doc.photo.path if self.doc.photo is not None else None)
        self.setWindowTitle(f"{Path(named).name if named else 'divcolor'}[*] — divcolor")

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
        self.session.refresh_models(then)

    def _show_no_model(self) -> None:
        self.gallery.show_message(
            "<b>No colorization model found.</b><br>divcolor looks in its <i>resources/models</i> folder and your "
            "data folder. <a href='load'>Load a model…</a> (a .safetensors file made by divcolor-train).<br><br>"
            "You can still open photos and paint strokes: they colour the photo by propagation."
        )
        self.statusBar().showMessage("No colorization model found — strokes still work", 10000)

    def generate(self, append: bool = False) -> None:
        """A fresh gallery (or, with ``append``, one more batch) from the gallery's settings."""
        self.gallery.show_message(None)
        self.session.generate(append=append)
        self._update_enabled()

    def _gallery_cleared(self) -> None:
        self.ambiguity.reset()
        self.gallery.clear()
        self.gallery.show_message(None)
        self._update_enabled()

    def _batch_started(self, plans: list[MethodPlan]) -> None:
        batch = self.session.batches[-1]
        self.gallery.begin_batch(plans, batch.n)

    def _samples_added(self, method: str, samples: list[Sample]) -> None:
        self.gallery.add_samples(method, samples)
        self.gallery.select(self.doc.base, self.doc.base_ref)
        if self.act["ambiguity"].isChecked():
            self.session.request_ambiguity()
        self._update_enabled()

    def _generation_finished(self, outcome: str, message: str) -> None:
        if outcome == "no-model":
            self._show_no_model()
        elif outcome in ("cancelled", "failed"):
            self.gallery.show_message(message)
            for grp in self.gallery.groups.values():
                if grp.pending and outcome == "cancelled":
                    grp.fail("Cancelled")
        elif message:
            self.statusBar().showMessage(message, 5000)
        self._update_enabled()
        self.gallery_finished.emit()

    def cancel_jobs(self) -> None:
        self.session.cancel()

    def pick_sample(self, sample: Sample) -> None:
        """Make a gallery sample the base (undoable)."""
        self.session.pick(sample)

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
        self.session.load_model(path)

    def show_batch(self) -> None:
        from .batch_dialog import BatchDialog

        if self._batch_dialog is None:
            self._batch_dialog = BatchDialog(self.session, self.settings, self)
        self._batch_dialog.show()
        self._batch_dialog.raise_()

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
            self.session.add_stroke(stroke)
            self.brush.add_recent(stroke.color)
            self.settings.recent_colors = self.brush.recent

    def clear_strokes(self) -> None:
        self.session.clear_strokes()

    def request_propagation(self, strokes: list[Stroke] | None = None, preview: bool = False) -> None:
        self.session.request_propagation(strokes, preview)

    def _field_changed(self, state: FieldState) -> None:
        if state.state == "preparing":
            self.method_label.setText(f"Strokes: preparing {state.name}…")
            self.canvas.set_busy(True, f"Preparing {state.name} for strokes…")
        elif state.state == "ready":
            self.method_label.setText(f"Strokes: {state.name}")
            self.canvas.set_busy(False)
            self._set_time("strokes ready", state.seconds)
        elif state.state == "failed":
            self.method_label.setText(f"Strokes: {state.name} unavailable")
            self.canvas.set_busy(False)
        else:
            self.method_label.setText("")
            self.canvas.set_busy(False)

    def _strokes_changed(self) -> None:
        self.canvas.set_strokes(self.doc.strokes)
        self.brush.set_stroke_count(len(self.doc.strokes))
        self.gallery.set_locking(len(self.doc.strokes))
        self._update_enabled()

    def _base_changed(self) -> None:
        base = self.doc.base
        self.gallery.select(base, self.doc.base_ref)
        self.brush.set_palette(dominant_colors(base.rgb) if base is not None else [])

    def _show_doc_result(self) -> None:
        self.canvas.set_result(self.doc.result, self.doc.result_image)
        self.result_updated.emit()

    def _suggest_at(self, x: float, y: float) -> None:
        """Offer the colours the gallery's samples give this spot (at its own lightness)."""
        self.brush.set_suggestions(self.session.suggestions(x, y))

    def _color_picked(self, rgb: tuple[int, int, int]) -> None:
        self.brush.set_color(rgb)
        self.statusBar().showMessage("Brush colour #%02X%02X%02X" % tuple(rgb), 4000)
        if self.canvas.tool == Tool.EYEDROPPER:
            self.set_tool(self._tool_before_eyedropper if self._tool_before_eyedropper != Tool.EYEDROPPER else Tool.BRUSH)

    def _brush_color_changed(self, rgb: tuple[int, int, int]) -> None:
        self.canvas.set_brush(color=rgb)
        self.settings.brush_color = rgb
        if self._hover_L is not None:
            self.brush.set_preview(displayed_color(rgb, self._hover_L), self._hover_L)

    def _brush_radius_changed(self, r: float) -> None:
        self.canvas.set_brush(radius=r)
        self.settings.brush_radius = r

    def _hovered(self, x: float, y: float) -> None:
        photo = self.doc.photo
        if photo is None or x < 0:
            self.pixel_label.setText("")
            self._hover_L = None
            self.brush.set_preview(None)
            return
        ix, iy = int(x), int(y)
        L = float(photo.L[iy, ix])
        self.pixel_label.setText(f"x {ix}, y {iy} · L {L:.0f}")
        self._hover_L = L  # the stroke preview: the brush colour at this pixel's lightness
        self.brush.set_preview(displayed_color(self.brush.color, L), L)

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
        if on and self.act["ambiguity"].isChecked():
            self.act["ambiguity"].setChecked(False)  # one heat map at a time
        self.overlay.set_enabled(on)
        if on and not self.overlay.available:
            self.statusBar().showMessage(self.overlay.reason, 8000)
            self.act["attention"].setChecked(False)
        elif on:
            self.statusBar().showMessage("Attention map: move the mouse over the photo", 5000)

    def _toggle_ambiguity(self, on: bool) -> None:
        """Where the gallery's samples disagree: where a stroke would help most."""
        if on and len(self.session.all_samples()) < 2:
            self.statusBar().showMessage(AMBIGUITY_NEEDS, 8000)
            self.act["ambiguity"].setChecked(False)
            return
        if on and self.act["attention"].isChecked():
            self.act["attention"].setChecked(False)
        self.ambiguity.set_enabled(on)
        if on:
            self.session.request_ambiguity()
            self.statusBar().showMessage("Ambiguity map: bright where the samples disagree — paint a stroke there", 6000)

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
        return self.session.is_idle()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.force_close and not self.confirm_discard():
            event.ignore()
            return
        self.settings.window_geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        if self._batch_dialog is not None:
            self._batch_dialog.cancel()
        self.autosave.discard()  # a clean exit: nothing to recover next time
        self.session.close()
        event.accept()
