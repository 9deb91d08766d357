"""The session's export: the current result written at the photo's full size, one file after another.

A mixin of :class:`~.session.Session` (which creates ``export_jobs``, ``exporting`` and the
queue in its ``__init__``). Exports have their own job slot, so opening a photo or a project
never cancels one, and a second export waits for the first; ``exporting`` lists what is still
to be written, so the window can ask before closing (issue 28 item 2). The file carries the
same metadata the CLI writes (:mod:`engine.metadata`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.errors import DivcolorError
from engine.files import sweep_unfinished
from engine.io import Photo, save_image
from engine.metadata import export_metadata
from engine.strokes import Stroke

from .document import SampleRef
from .imaging import PreviewPhoto, export_full, full_size, strokes_to_full
from .jobs import JobContext, JobRunner

if TYPE_CHECKING:
    from engine.colorizer import Colorizer


class SessionExport:
    """Export of :class:`~.session.Session`: see the module docstring."""

    colorizer: "Colorizer"
    export_jobs: JobRunner
    exporting: list[Path]
    _export_queue: list[Callable[[], None]]

    def export(self, path: str | Path) -> None:
        """Write the current result at the photo's full size, alpha and bit depth (on a worker)."""
        photo, base, strokes = self.doc.photo, self.doc.base, list(self.doc.strokes)
        if photo is None:
            return
        p = Path(path)
        current = self.doc.result if self.doc.result_is_current else None
        field = self.field
        method, family, checkpoint = self.field_choice()
        colorizer = self.colorizer
        ref = self.doc.base_ref

        def job(ctx: JobContext) -> Path:
            sweep_unfinished(p.parent)  # what an export killed here left half-written (as the CLI does)
            rgb = current
            if rgb is None:
                if strokes:
                    ctx.progress(0.1, "Applying strokes")
                    f = field or colorizer.field(photo, method, family=family, checkpoint=checkpoint)
                    rgb = f.propagate(strokes, base, cancel=ctx.cancel_token).rgb
                elif base is not None:
                    rgb = base.rgb
                else:
                    raise DivcolorError("There is nothing coloured to export yet. Pick a sample or paint strokes first.")
            ctx.progress(0.6, f"Writing {p.name}")
            # the strokes' digest is of the strokes as files hold them: full-resolution coordinates
            meta = self._export_metadata(photo, ref, strokes_to_full(strokes, photo), (method, family, checkpoint))
            try:
                if isinstance(photo, PreviewPhoto):  # a big photo: full size only now, a strip at a time
                    return export_full(p, photo, rgb, None if strokes else base, meta, cancel=ctx.cancel_token)
                return save_image(p, rgb, photo.alpha, photo.bit_depth, meta)
            except ValueError as e:  # e.g. an unknown extension: the message is written for users
                raise DivcolorError(str(e)) from e

        def done(out: Path) -> None:
            w, h = full_size(photo)
            depth = photo.bit_depth if out.suffix.lower() not in (".jpg", ".jpeg") else 8
            self.message.emit(f"Exported {out.name} ({w} × {h}, {depth}-bit)", 8000)
            self.exported.emit(str(out))

        def failed(e: BaseException) -> None:
            self.error.emit("Export failed", e, p)
            self._export_ended(p)

        def start() -> None:
            self.export_jobs.submit(f"Exporting {p.name}", job, on_done=lambda out: (done(out), self._export_ended(p)),
                                    on_error=failed, on_cancel=lambda: self._export_ended(p))

        self.exporting.append(p)
        self.exports_changed.emit(len(self.exporting))
        if self.export_jobs.busy:
            self._export_queue.append(start)  # after the one being written: an export never cancels another
        else:
            start()

    def _export_ended(self, path: Path) -> None:
        if path in self.exporting:
            self.exporting.remove(path)
        if self._export_queue:
            self._export_queue.pop(0)()
        self.exports_changed.emit(len(self.exporting))

    def cancel_exports(self) -> None:
        """Discard every export not yet written (the user chose to, e.g. when closing)."""
        self._export_queue.clear()
        self.exporting[1:] = []
        self.export_jobs.cancel()

    def _export_metadata(self, photo: Photo, ref: SampleRef | None, strokes: list[Stroke],
                         field: tuple[str, str, str | None]):
        """What the CLI writes too (engine.metadata): the photo's EXIF, the sRGB profile and the
        provenance XMP — the picked sample's method, model file digest, seed, index and
        temperature, and the strokes' digest; with strokes only (no sample), the stroke method."""
        if ref is not None:
            method, model, family, checkpoint = ref.method, ref.model, ref.family, ref.checkpoint
            seed, index, temperature = ref.seed, ref.index, ref.temperature
        else:
            method, family, checkpoint = field
            model, seed, index, temperature = None, None, None, None
        model_path = None
        if method != "levin":
            try:
                info = self.colorizer.resolve(method, family, checkpoint)
                model_path, model = info.path, model or info.name
            except DivcolorError:
                pass  # a model gone since: the file still says which method and seed made it
        return export_metadata(photo.exif, method=method, model=model, model_path=model_path, seed=seed,
                               sample=index, temperature=temperature, strokes=strokes or None)

