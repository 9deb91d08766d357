"""The app's state without widgets: one photo being coloured, and the work done for it.

After napari's ``ViewerModel`` and krita-ai-diffusion's ``Model``: a :class:`Session` holds the
photo and its editing state (through :class:`~.document.Document`), the model chosen *for this
photo*, the gallery's batches and samples, the picked sample, the strokes with their undo stack,
the stroke field of (photo, model) and the jobs that compute all of this. It emits signals; the
views (window, gallery, canvas, panels) listen and draw. Nothing here imports QtWidgets, so tests
drive a Session directly, without a window.

Every engine call runs on a worker (:mod:`.jobs`): sampling, photo loading and export on
:class:`~.jobs.JobRunner` slots, the stroke field, propagation and attention on the latest-wins
lane, so the event loop never waits on torch.

The values it hands out (samples, batches, method plans, field state) and the pure rule of which
models a batch runs are in :mod:`.session_types`; writing the result to a file (export, one after
another on its own job slot) is in :mod:`.session_export`. What stays here is one state machine —
the photo, its model choice, gallery, strokes and field change together and their jobs answer
into the same state — so it is kept as one file rather than cut across that state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, Signal
from PySide6.QtGui import QUndoStack

from engine.colorizer import METHOD_LABELS, Colorizer, ModelInfo, ambiguity_map, default_model_name
from engine.errors import Cancelled, DivcolorError
from engine.io import Photo
from engine.models import model_class
from engine.strokes import Stroke, parse_strokes

from .commands import UNDO_LIMIT, AddStroke, ClearStrokes, EraseStrokes, PickSample
from .document import Document, SampleRef, batch_json, read_project
from .errors import error_text, is_out_of_memory
from .imaging import full_size, load_app_photo, qimage_from_rgb, strokes_to_view, thumbnail
from .jobs import JobContext, JobRunner, LatestWins, release_pool, reusable_samples
from .session_export import SessionExport
from .session_types import GENERAL, Batch, FieldState, MethodPlan, ModelChoice, Sample, model_choices, plan_batch

__all__ = ["Batch", "FieldState", "GENERAL", "MethodPlan", "ModelChoice", "Sample", "Session", "photo_key"]

THUMB_PIXELS = 300  # thumbnails are made on the worker at twice the gallery's 150 px


@dataclass
class _PhotoMemory:
    """What the session remembers per photo while the app is open."""

    choice: ModelChoice | None = None  # None: the default
    extra: dict[str, Any] = field(default_factory=dict)


def photo_key(photo: Photo | None) -> str:
    if photo is None:
        return ""
    return str(Path(photo.path).resolve()) if photo.path is not None else f"memory:{id(photo)}"


class Session(SessionExport, QObject):
    """The model layer of the app; see the module docstring."""

    models_changed = Signal(list)  # [ModelInfo]
    choice_changed = Signal(object)  # ModelChoice of the current photo
    photo_opened = Signal(object)  # Path of a photo or project just opened (recent files)
    gallery_cleared = Signal()
    batch_started = Signal(list)  # [MethodPlan] of the batch, with placeholders to show
    samples_added = Signal(str, list)  # method, [Sample]
    method_failed = Signal(str, str)  # method, error text for its tiles
    generation_finished = Signal(str, str)  # outcome (done | no-model | cancelled | failed), message
    field_changed = Signal(object)  # FieldState
    attention_available = Signal(bool)
    preview = Signal(object, object)  # rgb, QImage: a stroke being painted, not yet an edit
    message = Signal(str, int)  # status-bar text, milliseconds
    error = Signal(str, object, object)  # title, exception or text, path or None
    timing = Signal(str, float)  # what ("samples", "stroke"), seconds as the user waited them
    ready = Signal()  # photo shown and the gallery's first results in (or known absent)
    exported = Signal(str)
    exports_changed = Signal(int)  # exports still being written (the window waits for them on close)
    ambiguity = Signal(object)  # (h, w) float32 map in [0, 1] of where the gallery's samples disagree
    project_opened = Signal(object)  # Project (the window restores its gallery controls from it)

    def __init__(self, colorizer: Colorizer, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.colorizer = colorizer
        self.models: list[ModelInfo] = []
        self.models_listed = False  # until then a Generate waits for the listing
        self._generate_after_listing = False
        self._deferred_batch: Batch | None = None
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(4)
        self.sampling = JobRunner(self.pool, self)  # the gallery
        self.io = JobRunner(self.pool, self)  # photos and projects
        self.export_jobs = JobRunner(self.pool, self)  # exports, one after another: nothing else cancels them
        self.model_jobs = JobRunner(self.pool, self)  # listing and loading checkpoints
        self.live = LatestWins(self.pool, priority=("field", "propagate", "attention"), parent=self)
        self.doc = Document(self)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(UNDO_LIMIT)  # set while empty, as Qt requires
        self.seed, self.n, self.temperature = 0, 6, 1.0  # the gallery's controls: what Generate uses
        self.batches: list[Batch] = []  # of the current photo's gallery, in order
        self.samples: dict[str, list[Sample]] = {}  # method -> samples, in order of arrival
        self.field: Any = None  # StrokeField of (photo, model), once prepared
        self.field_state = FieldState()
        self._field_key: tuple[str, ModelChoice] | None = None
        self._memory: dict[str, _PhotoMemory] = {}
        self._awaiting_ready = False
        self._want_pick: tuple[str, int] | None = None  # (method, index) to pick in a fresh batch
        self._restoring = False  # a reopened project's gallery is being remade: its sample stays shown
        self.exporting: list[Path] = []  # files being written or waiting their turn, in order
        self._export_queue: list[Callable[[], None]] = []
        self._stroke_started: float | None = None  # when the user's latest edit asked for a result
        self._interrupted = False  # the last batch was cancelled: its finished samples may be reused
        self.doc.strokes_changed.connect(self._strokes_changed)
        self.doc.base_changed.connect(self._base_changed)

    # ==========================================================================================
    # models and the choice per photo
    # ==========================================================================================
    def refresh_models(self, then: Callable[[], None] | None = None) -> None:
        """List checkpoints off the event loop (reading them validates their metadata)."""

        def done(infos: list[ModelInfo]) -> None:
            first = not self.models_listed
            self.models, self.models_listed = infos, True
            self.models_changed.emit(infos)
            if self.doc.photo is not None:
                self.choice_changed.emit(self.choice)
                if first or self._field_key is None:
                    self._field_key = None
                    self.prepare_field()
            if self._generate_after_listing:
                self._generate_after_listing = False
                self.generate(append=False, batch=self._deferred_batch)
            if then:
                then()

        self.model_jobs.submit("Looking for models", lambda ctx: self.colorizer.available(), on_done=done)

    def model_choices(self) -> list[tuple[str, ModelChoice]]:
        """(label, choice) for every model the user can pick: the shipped families, then files."""
        return model_choices(self.models)

    @property
    def choice(self) -> ModelChoice:
        """The model chosen for the current photo: each photo keeps its own; a photo not yet
        given one gets the default (the general family, else the first model there is)."""
        mem = self._memory.get(photo_key(self.doc.photo))
        return mem.choice if mem is not None and mem.choice is not None else self.default_choice()

    def default_choice(self) -> ModelChoice:
        choices = [c for _, c in self.model_choices()]
        return GENERAL if GENERAL in choices or not choices else choices[0]

    def set_choice(self, choice: ModelChoice | None, regenerate: bool = True) -> None:
        """Choose the model for the current photo: new gallery, and strokes follow it."""
        choice = tuple(choice) if choice else GENERAL  # type: ignore[assignment]
        if self.doc.photo is None or choice == self.choice:
            return
        self._memory.setdefault(photo_key(self.doc.photo), _PhotoMemory()).choice = choice  # type: ignore[assignment]
        self.choice_changed.emit(self.choice)
        self.prepare_field()
        if regenerate and self.models:
            self.generate(append=False)

    def plan(self, choice: ModelChoice | None = None) -> list[MethodPlan]:
        """Which methods a batch runs for ``choice`` (the photo's by default): :func:`.session_types.plan_batch`."""
        return plan_batch(self.models, choice or self.choice)

    def load_model(self, path: str | Path) -> None:
        """Validate and register a user's checkpoint on a worker; then choose it for this photo."""
        p = Path(path)

        def done(info: ModelInfo) -> None:
            self.message.emit(f"Loaded {info.label} from {p.name}", 6000)
            choice = ("general", str(info.path))
            self.refresh_models(then=lambda: self.set_choice(choice) if self.doc.photo is not None else None)

        self.model_jobs.submit(
            f"Loading {p.name}", lambda ctx: self.colorizer.add_model(p), on_done=done,
            on_error=lambda e: self.error.emit("Cannot load model", e, p),
        )

    # ==========================================================================================
    # photos and projects
    # ==========================================================================================
    def open_photo(self, path: str | Path) -> None:
        p = Path(path)
        self.message.emit(f"Opening {p.name}…", 0)
        self.io.submit(
            f"Opening {p.name}", lambda ctx: load_app_photo(p),
            on_done=lambda photo: (self.photo_opened.emit(p), self.set_photo(photo)),
            on_error=lambda e: self.error.emit("Cannot open photo", e, p),
        )

    def set_photo(self, photo: Photo, generate: bool = True) -> None:
        """A new photo: forget the last one's gallery, strokes and history; start its own."""
        self.sampling.cancel()
        self.live.discard()
        self.field, self._field_key = None, None
        self.undo_stack.clear()
        self.batches, self.samples = [], {}
        self._want_pick = None
        self._restoring = False
        self.doc.set_photo(photo)
        self.gallery_cleared.emit()
        self.choice_changed.emit(self.choice)
        self._awaiting_ready = True
        self.prepare_field()
        if generate:
            self.generate(append=False)

    def open_project(self, path: str | Path) -> None:
        """Photo, model, every batch of the gallery, picked sample and strokes, as saved."""
        path = Path(path)
        colorizer = self.colorizer

        def job(ctx: JobContext):
            proj = read_project(path)
            ctx.progress(0.1, f"Opening {proj.photo.name}")
            photo = load_app_photo(proj.photo)
            strokes = strokes_to_view(parse_strokes(proj.strokes_json, full_size(photo)), photo)
            locks = [tuple(strokes_to_view(parse_strokes(j, full_size(photo)), photo)) if j else () for j in proj.batch_locks]
            base, warning, r = None, None, proj.sample
            if r is not None and proj.sample_lock:
                r = replace(r, locked=tuple(strokes_to_view(parse_strokes(proj.sample_lock, full_size(photo)), photo)))
            if r is not None:
                ctx.progress(0.3, "Recreating the chosen sample")
                try:
                    # each sample depends on (seed, index) alone: recreate just the picked one
                    base = colorizer.sample(
                        photo, r.method, 1, r.seed, r.temperature, r.family, r.checkpoint,
                        progress=lambda f, m: ctx.progress(0.3 + 0.7 * f, m), cancel=ctx.cancel_token, first=r.index,
                        strokes=r.locked or None,
                    )[0]
                except Cancelled:
                    raise
                except DivcolorError as e:
                    warning = f"The sample this project was built on could not be recreated: {e} The strokes are restored on the grey photo."
            return proj, photo, strokes, base, warning, r, locks

        def done(result) -> None:
            proj, photo, strokes, base, warning, ref, locks = result
            self.photo_opened.emit(path)
            self.set_photo(photo, generate=False)
            self._memory.setdefault(photo_key(photo), _PhotoMemory()).choice = (proj.family, proj.checkpoint)
            self.choice_changed.emit(self.choice)
            self.prepare_field()
            if base is not None:
                self.doc.set_base(base, ref)
            self.doc.set_strokes(strokes)
            self.doc.project_path = path
            self.undo_stack.clear()
            self.undo_stack.setClean()
            self.project_opened.emit(proj)
            if warning:
                self.error.emit("Project opened with changes", warning, None)
            batches = [Batch(*b, locked=lock) for b, lock in zip(proj.batches, locks)] or [
                Batch(proj.seed, proj.samples, proj.temperature)]
            self._restoring = base is not None
            self._regenerate(list(batches))

        self.message.emit(f"Opening project {path.name}…", 0)
        self.io.submit(f"Opening {path.name}", job, on_done=done, on_error=lambda e: self.error.emit("Cannot open project", e, path))

    def _regenerate(self, batches: list[Batch]) -> None:
        """Make a saved gallery again, batch by batch (the same seeds give the same samples)."""
        if not batches:
            return
        first, rest = batches[0], batches[1:]
        self.generate(append=bool(self.batches), batch=first, then=(lambda: self._regenerate(rest)) if rest else None)

    # ==========================================================================================
    # the gallery
    # ==========================================================================================
    def next_batch(self, seed: int, n: int, temperature: float, append: bool) -> Batch:
        """The batch a press of Generate (``append`` False) or More samples would make: More
        samples continues the seed's set after the samples already shown, so it never repeats
        one (each sample's randomness comes from (seed, index) alone).

        Lock and resample: with strokes on the photo, More samples adds samples locked to them
        (each is the seed's next sample with the strokes painted over it, see
        :meth:`engine.colorizer.Colorizer.sample`), so locked or not the indices continue
        after the ones shown and every press brings new draws."""
        locked = tuple(self.doc.strokes) if append else ()
        if append:
            first = sum(b.n for b in self.batches if b.seed == seed)
            if first == 0 and any(b.first == 0 for b in self.batches):
                first = 1  # sample 0 is the most likely colorization, the same for every seed: shown already
            return Batch(seed, n, temperature, first=first, locked=locked)
        return Batch(seed, n, temperature)

    def batches_json(self) -> list[dict[str, Any]]:
        """The gallery's batches as the project file stores them (locked strokes included)."""
        return [batch_json(b.seed, b.n, b.temperature, b.first, b.locked) for b in self.batches]

    def set_params(self, seed: int | None = None, n: int | None = None, temperature: float | None = None) -> None:
        """The gallery controls' values, used by the next Generate or More samples."""
        if seed is not None:
            self.seed = int(seed)
        if n is not None:
            self.n = int(n)
        if temperature is not None:
            self.temperature = float(temperature)

    def generate(self, append: bool = False, batch: Batch | None = None, then: Callable[[], None] | None = None) -> None:
        """Sample a batch per available method in the background; each method's samples
        appear as soon as they are ready. A fresh batch (not ``append``) replaces the gallery
        and the canvas moves to the same place in it (method and index) as soon as it arrives."""
        photo = self.doc.photo
        if photo is None:
            return
        if batch is None:
            batch = self.next_batch(self.seed, self.n, self.temperature, append)
        if not self.models_listed:  # the app just started: the listing is on its way
            self._generate_after_listing, self._deferred_batch = True, batch
            return
        family, checkpoint = self.choice
        plans = self.plan()
        # after a Cancel, Generate makes only the samples the cancelled batch had not finished
        reuse = reusable_samples(self.all_samples() if self._interrupted else (), batch.n)
        self._interrupted = False
        if not append:
            ref = self.doc.base_ref
            self._want_pick = (ref.method, ref.index) if ref is not None else None
            self.batches, self.samples = [], {}
            self.gallery_cleared.emit()
        self.batches.append(batch)
        self.batch_started.emit(plans)
        colorizer = self.colorizer
        runnable = [p.method for p in plans if p.available]
        t_start = time.perf_counter()

        def job(ctx: JobContext) -> int:
            for k, m in enumerate(runnable):
                label = METHOD_LABELS.get(m, m)
                # Methods whose batch costs about one sample (PIC's sequential sampler, G-CRF's
                # shared solve) get one call; others one per sample, each shown when ready.
                cls = model_class(m)
                chunks = [(batch.first, batch.n)] if cls is not None and cls.BATCH_AT_ONCE else [
                    (batch.first + j, 1) for j in range(batch.n)]
                for c, (first, count) in enumerate(chunks):
                    have = reuse.get(m, family, checkpoint, batch.seed, batch.temperature, batch.locked, first, count)
                    if have is not None:
                        ctx.publish((m, have, time.perf_counter() - t_start))
                        continue

                    def report(f: float, msg: str, k=k, c=c) -> None:
                        # one call per sample: say which ("VAE-MDN 2 of 6: done", not "VAE-MDN: done")
                        which = f" {c + 1} of {len(chunks)}" if len(chunks) > 1 else ""
                        ctx.progress((k + (c + f) / len(chunks)) / len(runnable), f"{label}{which}: {msg}")

                    try:
                        results = colorizer.sample(
                            photo, m, count, batch.seed, batch.temperature, family, checkpoint,
                            progress=report, cancel=ctx.cancel_token, first=first, strokes=batch.locked or None,
                        )
                    except (Cancelled, MemoryError):
                        raise
                    except Exception as e:  # one method failing must not hide the others' samples
                        if is_out_of_memory(e):
                            raise  # the others would run out too: one dialog that says what to do
                        ctx.publish((m, e, 0.0))
                        break
                    samples = [
                        Sample(r, SampleRef.of(r, family, checkpoint, batch.n, batch.locked),
                               qimage_from_rgb(thumbnail(r.rgb, THUMB_PIXELS)))
                        for r in results
                    ]
                    ctx.publish((m, samples, time.perf_counter() - t_start))
            return len(runnable)

        def published(item) -> None:
            method, samples, seconds = item
            if self.doc.photo is not photo:
                return
            if isinstance(samples, BaseException):
                self.method_failed.emit(method, error_text(samples))
                return
            self.samples.setdefault(method, []).extend(samples)
            self.samples_added.emit(method, samples)
            self.timing.emit("samples", seconds)
            self._pick_from_fresh_batch()
            self._maybe_ready()

        def done(count: int) -> None:
            if count == 0 and not any(p.available for p in plans):
                self.generation_finished.emit("no-model", "")
            else:
                self.generation_finished.emit("done", f"Samples ready in {time.perf_counter() - t_start:.1f} s")
            if then is None:  # the last of a project's batches: the picked sample may be in any
                self._pick_from_fresh_batch(final=True)
            self._maybe_ready(final=True)
            if then:
                then()

        def cancelled() -> None:
            self._interrupted = True
            self.generation_finished.emit("cancelled", "Generation cancelled. Press <b>Generate</b> (F5) to try again.")
            self._maybe_ready(final=True)

        def failed(e: BaseException) -> None:
            self.generation_finished.emit("failed", f"Could not generate samples: {error_text(e)}")
            self._maybe_ready(final=True)
            self.error.emit("Cannot colorize", e, None)

        self.sampling.submit("Generating samples", job, on_done=done, on_error=failed, on_cancel=cancelled, on_publish=published)

    def _pick_from_fresh_batch(self, final: bool = False) -> None:
        """The canvas shows a sample of the gallery it sits beside: in a fresh batch, the one at
        the place the user had picked (same method and index) once it arrives, and until then
        the batch's first sample as soon as it exists — never the old batch's. Not an undoable
        edit: it follows from Generate, like the gallery itself."""
        everything = self.all_samples()
        if not everything:
            return
        want = self._want_pick
        if want is not None:
            have = self.samples.get(want[0], [])
            if len(have) > want[1]:
                self._want_pick, self._restoring = None, False
                if self.doc.base_ref != have[want[1]].ref:  # (a recreated sample: same reference, another object)
                    self._show_sample(have[want[1]])
                return
            if not final and want[0] in {p.method for p in self.plan() if p.available}:
                if not self._restoring and not self._shows_a_sample_of(everything) and not self._base_is_coming():
                    self._show_sample(everything[0])  # meanwhile the new first sample, not the old batch's
                return  # the picked place is still coming
            self._want_pick, self._restoring = None, False
        if not self._shows_a_sample_of(everything):
            self._show_sample(everything[0])

    def _base_is_coming(self) -> bool:
        """The shown sample is one the gallery's batches make again (same seed, temperature, locks)."""
        r = self.doc.base_ref
        return r is not None and (r.family, r.checkpoint) == self.choice and any(b.seed == r.seed and b.temperature == r.temperature and b.locked == r.locked
                                     and b.first <= r.index < b.first + b.n for b in self.batches)

    def _shows_a_sample_of(self, samples: list[Sample]) -> bool:
        base, ref = self.doc.base, self.doc.base_ref
        # (a reopened project's sample is recreated: the same reference, another object)
        return base is not None and any(s.colorization is base or s.ref == ref for s in samples)

    def _show_sample(self, sample: Sample) -> None:
        if self.doc.base is not sample.colorization:
            self.doc.set_base(sample.colorization, sample.ref)

    def _maybe_ready(self, final: bool = False) -> None:
        if self._awaiting_ready and self.doc.photo is not None and (final or self.samples):
            self._awaiting_ready = False
            self.ready.emit()

    def all_samples(self) -> list[Sample]:
        return [s for ss in self.samples.values() for s in ss]

    def find(self, ref: SampleRef) -> Sample | None:
        return next((s for s in self.all_samples() if s.ref == ref), None)

    def cancel(self) -> None:
        self.sampling.cancel()

    def pick(self, sample: Sample) -> None:
        """Make a gallery sample the base (undoable)."""
        if self.doc.photo is None or sample.ref == self.doc.base_ref:
            return
        self.undo_stack.push(PickSample(self.doc, sample.colorization, sample.ref))

    def suggestions(self, x: float, y: float) -> list[tuple[int, int, int]]:
        """The colours the gallery's samples put at image pixel (x, y), most different first
        dropped: each at that pixel's own lightness, because that is how a stroke of it will look
        there (the photo's L is kept). Near-duplicates are merged."""
        out: list[tuple[int, int, int]] = []
        photo = self.doc.photo
        if photo is None:
            return out
        w, h = photo.size
        ix, iy = min(w - 1, max(0, int(x))), min(h - 1, max(0, int(y)))
        for s in self.all_samples():
            px = np.asarray(s.colorization.rgb[iy, ix], np.float32)
            c = tuple(int(v) for v in np.clip(np.rint(px * 255), 0, 255))
            if all(sum(abs(a - b) for a, b in zip(c, o)) > 24 for o in out):
                out.append(c)  # type: ignore[arg-type]
        return out

    # ==========================================================================================
    # strokes
    # ==========================================================================================
    def add_stroke(self, stroke: Stroke) -> None:
        if self.doc.photo is not None:
            self._stroke_started = time.perf_counter()
            self.undo_stack.push(AddStroke(self.doc, stroke))

    def erase_strokes(self, indices: list[int]) -> None:
        if indices:
            self._stroke_started = time.perf_counter()
            self.undo_stack.push(EraseStrokes(self.doc, indices))

    def clear_strokes(self) -> None:
        if self.doc.strokes:
            self.undo_stack.push(ClearStrokes(self.doc))

    def field_choice(self) -> tuple[str, str, str | None]:
        """(stroke method, family, checkpoint) for the current photo's model: its G-CRF — the
        chosen file if it is one, else the chosen family's — or Levin propagation when that
        family has no G-CRF."""
        family, checkpoint = self.choice
        if checkpoint is not None:
            info = next((i for i in self.models if str(i.path) == checkpoint), None)
            if info is not None and info.method == "gcrf":
                return "gcrf", family, checkpoint
        if any(i.name == default_model_name("gcrf", family) for i in self.models):
            return "gcrf", family, None
        return "levin", family, None

    def prepare_field(self) -> None:
        """Build the stroke field of (photo, model) in the background, and warm it on the
        picked sample, so the first stroke costs what later ones do. Until it is ready the
        views show a busy state; strokes made meanwhile wait for it (and say so)."""
        photo = self.doc.photo
        if photo is None:
            return
        key = (photo_key(photo), self.choice)
        method, family, checkpoint = self.field_choice()
        if self._field_key == key and self.field_state.state in ("preparing", "ready"):
            self._warm_field()
            return
        self._field_key = key
        self.field = None
        colorizer = self.colorizer
        base = self.doc.base
        name = "Levin propagation" if method == "levin" else f"G-CRF ({Path(checkpoint).name if checkpoint else default_model_name('gcrf', family)})"
        self._set_field_state(FieldState("preparing", name))
        t0 = time.perf_counter()

        def job(ctx: JobContext):
            f = colorizer.field(photo, method, family=family, checkpoint=checkpoint)
            f.propagate([], base, cancel=ctx.cancel_token)  # builds matrices and factorisations
            w, h = photo.size
            return f, f.attention(w / 2, h / 2) is not None

        def done(result) -> None:
            if self._field_key != key:
                return
            self.field, has_attention = result
            made = getattr(self.field, "method", method)  # what the engine really built says what it is
            shown = name if made == method else {"levin": "Levin propagation", "gcrf": "G-CRF"}.get(made, made)
            self._set_field_state(FieldState("ready", shown, seconds=time.perf_counter() - t0))
            self.attention_available.emit(has_attention)

        def failed(e: BaseException) -> None:
            if self._field_key != key:
                return
            self._set_field_state(FieldState("failed", name, error_text(e)))
            self.error.emit("Strokes unavailable", e, None)

        self.live.submit("field", job, done, on_error=failed)

    def _warm_field(self) -> None:
        """A newly picked base: precompute its part of the solve while the user looks."""
        field, base = self.field, self.doc.base
        if field is None or base is None or self.doc.strokes:
            return
        self.live.submit("warm", lambda ctx: field.propagate([], base, cancel=ctx.cancel_token), None, on_error=lambda e: None)

    def _set_field_state(self, state: FieldState) -> None:
        self.field_state = state
        self.field_changed.emit(state)

    def request_propagation(self, strokes: list[Stroke] | None = None, preview: bool = False) -> None:
        """Colour the photo from strokes over the base, latest request wins.

        Previews (while dragging) go to the ``preview`` signal; final results to the document.
        The time reported is the user's wait: from the edit to the result, field preparation
        included.
        """
        photo, base = self.doc.photo, self.doc.base
        if photo is None:
            return
        strokes = list(self.doc.strokes if strokes is None else strokes)
        revision = self.doc.revision
        if not strokes:
            self.live.discard("propagate")
            if preview:
                self.preview.emit(base.rgb if base is not None else None, None)
            return
        colorizer = self.colorizer
        method, family, checkpoint = self.field_choice()
        ready = self.field if self.field_state.state == "ready" else None
        started = self._stroke_started if not preview and self._stroke_started is not None else time.perf_counter()

        def job(ctx: JobContext):
            field = ready or colorizer.field(photo, method, family=family, checkpoint=checkpoint)
            c = field.propagate(strokes, base, cancel=ctx.cancel_token)
            return c.rgb, qimage_from_rgb(c.rgb)

        def done(result) -> None:
            rgb, image = result
            if self.doc.photo is not photo:
                return
            self.timing.emit("preview" if preview else "stroke", time.perf_counter() - started)
            if preview:
                self.preview.emit(rgb, image)
            elif revision == self.doc.revision:
                self._stroke_started = None
                self.doc.set_result(rgb, revision, image)

        self.live.submit("propagate", job, done)

    def _strokes_changed(self) -> None:
        if self.doc.strokes:
            self.request_propagation()
        else:
            self.live.discard("propagate")

    def _base_changed(self) -> None:
        if self.doc.strokes:
            self.request_propagation()
        elif self.field_state.state == "ready":
            self._warm_field()

    # ==========================================================================================
    # the ambiguity map
    # ==========================================================================================
    def request_ambiguity(self, max_side: int = 256) -> None:
        """Where the gallery's samples disagree ("where a stroke would help most"), computed on
        the live lane from every sample shown; the ``ambiguity`` signal brings the map (at most
        ``max_side`` pixels on its long side; the overlay stretches it over the photo)."""
        photo, samples = self.doc.photo, [s.colorization for s in self.all_samples()]
        if photo is None or not samples:
            return
        w, h = photo.size
        scale = min(1.0, max_side / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))

        def done(m: np.ndarray) -> None:
            if self.doc.photo is photo:
                self.ambiguity.emit(m)

        self.live.submit("ambiguity", lambda ctx: ambiguity_map(samples, size), done)

    # ==========================================================================================
    def is_idle(self) -> bool:
        """No job running and the document's result is that of its current strokes."""
        busy = self.sampling.busy or self.io.busy or self.export_jobs.busy or self.model_jobs.busy or self.live.busy
        return not busy and self.doc.result_is_current

    def close(self) -> None:
        """Cancel every job and stop listening to them; never wait long for one (jobs.py)."""
        self._export_queue.clear()
        for r in (self.sampling, self.io, self.export_jobs, self.model_jobs):
            r.close()
        self.live.close()
        release_pool(self.pool)
