"""The main window: builds the views and wires them to the session; coordinates what they show.

The state and the work (photo, model per photo, gallery batches, strokes, undo, stroke field,
jobs) live in :class:`~.session.Session`, which has no widgets. The window is three files, each
of one purpose:

- this module: the widgets (canvas, gallery, brush panel, overlays, docks), the window's place on
  the screen, and the coordination between them — session signals turned into what the gallery,
  canvas and overlays show, and gallery/canvas/brush events turned into session calls;
- :mod:`.window_actions`: every user command as a QAction created in one place (icon, shortcut,
  tooltip that shows the shortcut), the menus, toolbar and status bar built from them, which of
  them are enabled, the theme, the shortcut and about boxes;
- :mod:`.window_files`: the file dialogs and what they lead to — open (recent files, drag and
  drop), projects, export, the folder batch.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QRect, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeyEvent
from PySide6.QtWidgets import QMainWindow, QMessageBox, QWidget

from engine.colorizer import Colorizer, ModelInfo
from engine.errors import DivcolorError
from engine.strokes import Stroke, displayed_color

from .autosave import Autosave, autosave_dir
from .brush_panel import BrushPanel
from .canvas import SHOW_ORIGINAL_KEY, CanvasPanel, Tool
from .dialogs import fit_to_screen
from .errors import error_text
from .faces_note import FacesNote
from .gallery import THUMB, GalleryPanel, Sample
from .imaging import dominant_colors, full_size
from .models_dialog import ModelsDialog
from .overlay import AMBIGUITY_NEEDS, AmbiguityOverlay, AttentionOverlay
from .session import FieldState, MethodPlan, Session
from .settings import Settings
from .window_actions import WindowActions
from .window_files import WindowFiles

__all__ = ["MainWindow", "error_text"]

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1440, 900)
SCREEN_SHARE = 0.92  # of the available screen a first window takes at most


def available_geometry(widget: QWidget) -> QRect:
    """The usable part of the screen the window is on (without panels and docks)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else QRect(0, 0, *DEFAULT_SIZE)


class MainWindow(WindowActions, WindowFiles, QMainWindow):
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
        self._discard_confirmed = False  # the close already asked about unsaved strokes
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
        s.export_jobs.busy_changed.connect(self._update_enabled)
        s.export_jobs.progress.connect(self._io_progress)
        for runner in (self.sampling, self.io, s.export_jobs, self.model_jobs):
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
        self.faces_check = FacesNote(s, self)  # "this photo has no faces" beside the gallery
        self.faces_check.changed.connect(g.set_faces_note)
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
    # errors and small UI helpers
    # ==========================================================================================
    def _clean_changed(self, clean: bool) -> None:
        self.setWindowModified(not clean)

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
    # the photo on show
    # ==========================================================================================
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
        self.gallery.set_locking(0)  # a new photo has no strokes: More samples is plain again
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
        photo = self.doc.photo
        self.gallery.begin_batch(plans, batch.n, photo.size if photo is not None else None)

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
            fit_to_screen(self._models_dialog)
        self._models_dialog.set_models(self.models)
        self._models_dialog.show()
        self._models_dialog.raise_()

    def load_model(self, path: str | Path) -> None:
        """Validate and register a user's checkpoint on a worker; then offer it in the gallery."""
        self.session.load_model(path)

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
    # closing
    # ==========================================================================================
    def is_idle(self) -> bool:
        """No job running and the canvas shows the result of the current strokes (tests use it)."""
        return self.session.is_idle()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.force_close and not (self._discard_confirmed or self.confirm_discard()):
            event.ignore()
            return
        if not self.force_close and not self.export_allows_close():
            self._discard_confirmed = self._closing_after_export  # asked once, not again at the close
            event.ignore()
            return
        self.settings.window_geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        if self._batch_dialog is not None:
            self._batch_dialog.cancel()
        self.autosave.discard()  # a clean exit: nothing to recover next time
        self.faces_check.close()
        self.session.close()
        event.accept()
