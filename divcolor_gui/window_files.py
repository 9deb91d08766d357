"""The main window's files: open (dialog, recent files, drag and drop), projects, export, folders.

Every file dialog of the window is here, with the questions asked around them (unsaved strokes,
nothing to export yet); the reading and writing itself runs on the session's workers. A mixin of
:class:`~.main_window.MainWindow`, which holds the widgets and the session these methods read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFileDialog, QMessageBox, QProgressDialog

from engine.errors import DivcolorError
from engine.io import Photo

from .dialogs import fit_to_screen
from .document import PROJECT_SUFFIX, project_dict, write_project
from .settings import user_folder

IMAGE_FILTER = "Photos (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.bmp);;divcolor projects (*.divcolor);;All files (*)"
OPEN_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", PROJECT_SUFFIX}
EXPORT_FILTERS = {"PNG image (*.png)": ".png", "JPEG image (*.jpg *.jpeg)": ".jpg", "TIFF image (*.tif *.tiff)": ".tif"}


class WindowFiles:
    """Open, save, export and the batch folder dialog of :class:`~.main_window.MainWindow`."""

    _batch_dialog: Any
    _close_note: QProgressDialog | None = None  # shown while the window waits for an export to close
    _closing_after_export = False

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
        beside = user_folder(photo.path.parent) if photo.path else ""  # not a shipped sample's folder
        folder = Path(self.settings.last_export_dir or beside or self.settings.last_dir)
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

    # --- closing while an export is written -------------------------------------------------------
    def export_allows_close(self) -> bool:
        """Closing while an export is written asks: wait for it (a progress note, and the window
        closes once the file is written) or discard it and close now. Never dropped silently."""
        running = self.session.exporting
        if not running:
            return True
        if self._closing_after_export:
            return False  # already waiting for it
        names = ", ".join(p.name for p in running)
        box = QMessageBox(QMessageBox.Icon.Question, "An export is running",
                          f"{names} {'is' if len(running) == 1 else 'are'} still being written.\n\n"
                          "Wait for the export and close when it is written, or discard it and close now?",
                          QMessageBox.StandardButton.NoButton, self)
        wait = box.addButton("Wait", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard Export", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(wait)
        box.exec()
        if box.clickedButton() is discard:
            self.session.cancel_exports()
            return True
        if box.clickedButton() is wait:
            self._close_after_export(names)
        return False

    def _close_after_export(self, names: str) -> None:
        note = QProgressDialog(f"Writing {names}…\nThe window closes when it is written.", "Discard and Close", 0, 1000, self)
        note.setWindowTitle("Closing after the export")
        note.setAutoClose(False)
        note.setAutoReset(False)
        note.setMinimumDuration(0)
        note.canceled.connect(self._discard_export_and_close)
        self.session.export_jobs.progress.connect(self._close_note_progress)
        self.session.exports_changed.connect(self._export_ended_while_closing)
        self.session.error.connect(self._export_failed_while_closing)
        self._close_note = note
        self._closing_after_export = True
        note.show()

    def _close_note_progress(self, fraction: float, message: str) -> None:
        if self._close_note is not None:
            self._close_note.setValue(int(1000 * min(1.0, max(0.0, fraction))))

    def _stop_waiting_to_close(self) -> None:
        self._closing_after_export = False
        self.session.export_jobs.progress.disconnect(self._close_note_progress)
        self.session.exports_changed.disconnect(self._export_ended_while_closing)
        self.session.error.disconnect(self._export_failed_while_closing)
        note, self._close_note = self._close_note, None
        if note is not None:
            note.canceled.disconnect(self._discard_export_and_close)
            note.close()
            note.deleteLater()

    def _export_ended_while_closing(self, still_running: int) -> None:
        if still_running == 0 and self._closing_after_export:
            self._stop_waiting_to_close()
            QTimer.singleShot(0, self.close)  # written: the close the user asked for goes on

    def _export_failed_while_closing(self, title: str, exc: object, path: object) -> None:
        """The file could not be written: the window stays open (the error says why), and the
        user's strokes with it."""
        if self._closing_after_export and path is not None and Path(str(path)) in self.session.exporting:
            self._stop_waiting_to_close()
            self._discard_confirmed = False

    def _discard_export_and_close(self) -> None:
        self._stop_waiting_to_close()
        self.session.cancel_exports()
        self.close()

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
        self.settings.last_dir = str(path.parent)  # the next dialog starts where the user saved
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

    def load_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", self.settings.last_dir, "divcolor models (*.safetensors)")
        if path:
            self.load_model(path)

    def show_batch(self) -> None:
        from .batch_dialog import BatchDialog

        if self._batch_dialog is None:
            self._batch_dialog = BatchDialog(self.session, self.settings, self)
            fit_to_screen(self._batch_dialog)
        self._batch_dialog.show()
        self._batch_dialog.raise_()

