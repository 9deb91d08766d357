"""*File ▸ Colorize folder…*: what ``divcolor colorize FOLDER -o OUTDIR`` does, from the app.

Every photo of a folder is coloured with the model chosen here and written as
``OUTDIR/<stem>_<method>_<k>.png`` at its own size, bit depth and alpha — the CLI's names
(:func:`engine.batch.output_paths`: photos sharing a stem get distinct names, so no result
replaces another), and never over an input photo. Each file carries the CLI's metadata (the
photo's EXIF, sRGB profile, provenance XMP: :func:`engine.metadata.export_metadata`). The work
runs on the session's thread pool with progress and Cancel; a photo that fails is reported in
the log and skipped, like the CLI does.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.batch import file_key, folder_photos, output_paths, passed_over_note
from engine.colorizer import METHOD_LABELS
from engine.errors import DivcolorError
from engine.io import load_photo
from engine.save import save_image
from engine.metadata import export_metadata

from .errors import error_text
from .jobs import JobContext, JobRunner
from .session import Session
from .settings import Settings

class BatchDialog(QDialog):
    """Input folder, output folder, model and method, samples per photo; Start / Cancel."""

    finished_batch = Signal(int, int)  # written photos, failed photos

    def __init__(self, session: Session, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Colorize folder")
        self.session = session
        self.settings = settings
        self.runner = JobRunner(session.pool, self)
        self.source = QLineEdit(settings.last_dir)
        self.out = QLineEdit(str(Path(settings.last_dir) / "colorized"))
        src_btn, out_btn = QPushButton("Choose…"), QPushButton("Choose…")
        src_btn.clicked.connect(lambda: self._choose(self.source, "Folder of photos"))
        out_btn.clicked.connect(lambda: self._choose(self.out, "Write the colorized photos to"))
        self.method = QComboBox()
        self.n = QSpinBox()
        self.n.setRange(1, 32)
        self.n.setValue(1)
        self.n.setToolTip("Colorizations per photo (<stem>_<method>_0.png, _1.png, …)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("Each photo is listed here as it is written; a photo that cannot be read is skipped.")
        self.start_btn = QPushButton("Start")
        self.start_btn.setDefault(True)
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.cancel_btn.setEnabled(False)
        close = QPushButton("Close")
        close.clicked.connect(self.close)

        form = QFormLayout()
        for label, edit, btn in (("Photos in", self.source, src_btn), ("Write to", self.out, out_btn)):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            row.addWidget(btn)
            form.addRow(label, row)
        form.addRow("Model", self.method)
        form.addRow("Samples per photo", self.n)
        form.addRow("Seed", self.seed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addStretch(1)
        buttons.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.progress)
        lay.addWidget(self.log, 1)
        lay.addLayout(buttons)
        self.resize(560, 420)
        self.runner.progress.connect(self._progress)
        session.models_changed.connect(lambda _: self._fill_methods())
        self._fill_methods()

    def _fill_methods(self) -> None:
        """One entry per (model, method) the session can run, e.g. "General photos · VAE-MDN"."""
        self.method.clear()
        for label, choice in self.session.model_choices():
            for plan in self.session.plan(choice):
                if plan.available:
                    self.method.addItem(f"{label} · {METHOD_LABELS.get(plan.method, plan.method)}", (choice, plan.method))

    def _choose(self, edit: QLineEdit, title: str) -> None:
        d = QFileDialog.getExistingDirectory(self, title, edit.text())
        if d:
            edit.setText(d)

    def start(self) -> None:
        data = self.method.currentData()
        src, out = Path(self.source.text()), Path(self.out.text())
        if data is None:
            self.log.appendPlainText("No model to colorize with: load one in Colorize ▸ Load Model….")
            return
        if not src.is_dir():
            self.log.appendPlainText(f"“{src}” is not a folder.")
            return
        (family, checkpoint), method = data
        n, seed = self.n.value(), self.seed.value()
        colorizer = self.session.colorizer

        def job(ctx: JobContext) -> tuple[int, int]:
            files, others = folder_photos(src)  # every file Pillow can open, as the CLI takes a folder
            if others:
                ctx.publish(f"note: {passed_over_note(src, others)}")
            if not files:
                raise DivcolorError(f"“{src}” holds no photos divcolor can read.")
            info = colorizer.resolve(method, family, checkpoint)
            plans, renamed = output_paths(files, out, info.method, n)  # no two results share a name
            for note in renamed:
                ctx.publish(f"note: {note}")
            inputs = {file_key(f) for f in files}
            out.mkdir(parents=True, exist_ok=True)
            ok = failed = 0
            for i, (f, paths) in enumerate(zip(files, plans)):
                ctx.check()
                ctx.progress(i / len(files), f"{f.name} ({i + 1} of {len(files)})")
                try:
                    clash = next((p for p in paths if file_key(p) in inputs), None)
                    if clash is not None:
                        raise DivcolorError(f"its result {clash.name} would overwrite an input photo; choose another output folder")
                    photo = load_photo(f)
                    results = colorizer.sample(
                        photo, method, n, seed, 1.0, family, checkpoint,
                        progress=lambda fr, m, i=i: ctx.progress((i + fr) / len(files), f"{f.name}: {m}"),
                        cancel=ctx.cancel_token,
                    )
                    for r, path in zip(results, paths):
                        meta = export_metadata(photo.exif, method=info.method, model=info.name, model_path=info.path,
                                               seed=seed, sample=r.index, temperature=1.0)
                        save_image(path, r.rgb, photo.alpha, photo.bit_depth, meta)
                    ok += 1
                    ctx.publish(f"{f.name}: {len(results)} written ({paths[0].name}…)")
                except (DivcolorError, OSError) as e:
                    failed += 1
                    ctx.publish(f"skipped {f.name}: {error_text(e)}")
            return ok, failed

        def done(result: tuple[int, int]) -> None:
            ok, failed = result
            self.log.appendPlainText(f"Done: {ok} photo{'s' if ok != 1 else ''} written to {out}" + (f", {failed} skipped." if failed else "."))
            self.progress.setValue(1000)
            self._busy(False)
            self.finished_batch.emit(ok, failed)

        def cancelled() -> None:
            self.log.appendPlainText("Cancelled. The photos written so far stay in the output folder.")
            self._busy(False)
            self.finished_batch.emit(-1, -1)

        def failed(e: BaseException) -> None:
            self.log.appendPlainText(error_text(e))
            self._busy(False)
            self.finished_batch.emit(0, -1)

        self.log.appendPlainText(f"Colorizing {src} → {out}")
        self._busy(True)
        self.runner.submit("Colorizing folder", job, on_done=done, on_error=failed, on_cancel=cancelled,
                           on_publish=self.log.appendPlainText)

    def _busy(self, on: bool) -> None:
        self.start_btn.setEnabled(not on)
        self.cancel_btn.setEnabled(on)

    def _progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(1000 * min(1.0, max(0.0, fraction))))
        self.progress.setFormat(f"{message} — %p%")

    def cancel(self) -> None:
        self.runner.cancel()
