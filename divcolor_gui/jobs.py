"""Running engine work off the event loop.

Two policies, because the app has two kinds of work:

* :class:`JobRunner` — long, user-visible jobs (generating the gallery, loading a photo,
  exporting). One at a time per runner; starting a new one cancels the old one, whose late
  signals are then ignored. Progress and a cancel token are handed to the job function.
* :class:`LatestWins` — the live lane (stroke propagation while dragging, attention under the
  cursor), after krita-ai-diffusion: at most one job runs, and each *key* has at most one
  pending request. A newer request replaces the pending one, so stale work is dropped and never
  queued. Jobs in one lane never run concurrently, which also means the engine's stroke field
  is only ever touched from one thread at a time.

Job functions run on a QThreadPool thread and take a :class:`JobContext`. They must not touch
widgets; they return plain data (numpy arrays, QImages — which are safe off the GUI thread).
Results arrive on the GUI thread through queued signals, so the event loop never waits on torch.

Shutting down never waits on torch either. Closing a runner cancels its jobs and *detaches*
them: a detached job still runs to its next cancel check but emits nothing, so a job that
outlives its window (an export mid-strip when the user quits) cannot touch deleted Qt objects
(the old ``RuntimeError: Signal source has been deleted`` at exit). :func:`release_pool` gives
a session's pool a short grace and then lets it go without blocking, and :func:`wait_for_jobs`
is what the app's exit path uses to bound how long a stuck job can keep the process alive.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot

from engine.errors import Cancelled

from .errors import user_facing

if TYPE_CHECKING:  # engine.types imports torch: app.py imports this module before the window shows
    from engine.types import CancelToken

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]

# Every job whose run() has started and not ended, process-wide: the exit path waits on these.
_running: set["Job"] = set()
_running_cv = threading.Condition()
# Pools let go of while a job still ran: kept alive here, because destroying a QThreadPool
# blocks until its threads end (which is exactly the hang release_pool avoids).
_released_pools: list[QThreadPool] = []


def running_jobs() -> list[str]:
    """Names of the jobs running right now, in every pool (tests and the exit path use it)."""
    with _running_cv:
        return sorted(j.name for j in _running)


def wait_for_jobs(timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for every running job to end; True when none is left.

    Jobs are cancelled before this is called, so it normally returns at their next cancel check;
    a job stuck in one long uninterruptible call is what the timeout is for.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    with _running_cv:
        while _running:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _running_cv.wait(left)
    return True


def cancel_every_job() -> None:
    """Cancel and detach every running job (the app is going away: their results have no
    window to go to)."""
    with _running_cv:
        jobs = list(_running)
    for job in jobs:
        job.cancel()
        job.detach()


def release_pool(pool: QThreadPool, grace_ms: int = 300) -> bool:
    """Give ``pool``'s (cancelled) jobs ``grace_ms`` to end; if some still run, take the pool
    from its parent and keep it alive here, so that deleting the window does not block on them.
    True when the pool was idle within the grace."""
    if pool.waitForDone(grace_ms):
        return True
    log.info("closing with %d job(s) still ending: %s", pool.activeThreadCount(), ", ".join(running_jobs()))
    pool.setParent(None)
    _released_pools.append(pool)
    return False


class JobContext:
    """What a job function may use from its worker thread: progress, cancel, partial results."""

    def __init__(self, job: "Job", token: CancelToken) -> None:
        self._job = job
        self.cancel_token = token

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def check(self) -> None:
        """Raise :class:`engine.errors.Cancelled` if the user cancelled."""
        self.cancel_token.check()

    def progress(self, fraction: float, message: str = "") -> None:
        self._job.emit("progress", float(fraction), str(message))

    def publish(self, obj: Any) -> None:
        """Hand a partial result to the GUI thread (e.g. the first method's samples)."""
        self._job.emit("published", obj)


class _JobSignals(QObject):
    """Lives on the GUI thread, so emits from the worker are queued to it.

    Every signal carries its job, so receivers connect bound methods (which Qt disconnects when
    the receiver is destroyed) instead of lambdas that could outlive the window.
    """

    progress = Signal(object, float, str)
    published = Signal(object, object)
    finished = Signal(object, object)
    failed = Signal(object, object)
    cancelled = Signal(object)

    def __init__(self, job: "Job") -> None:
        super().__init__()
        self.job = job


class Job:
    """One call of ``fn(ctx)`` on a pool thread; outcome reported by exactly one signal.

    A plain Python object (the pool runs its bound ``run``), so no C++ runnable can be deleted
    while Python still refers to it.
    """

    def __init__(self, name: str, fn: Callable[[JobContext], Any]) -> None:
        self.name = name
        self.fn = fn
        from engine.types import CancelToken  # torch: loaded by then (jobs start after the engine)

        self.token = CancelToken()
        self.signals = _JobSignals(self)
        self.detached = False  # set from the GUI thread; read by the worker before each emit

    def cancel(self) -> None:
        self.token.cancel()

    def detach(self) -> None:
        """Nobody listens any more (the runner closed): emit nothing from now on."""
        self.detached = True

    def emit(self, name: str, *args: Any) -> None:
        """Emit one of :class:`_JobSignals` unless detached. A job can outlive the objects its
        signals lead to (the app quitting mid-export); then its news is dropped, not raised."""
        if self.detached:
            return
        try:
            getattr(self.signals, name).emit(self, *args)
        except RuntimeError:  # the signals object is already deleted: the app is shutting down
            self.detached = True

    def run(self) -> None:  # worker thread
        with _running_cv:
            _running.add(self)
        try:
            self._run()
        finally:
            with _running_cv:
                _running.discard(self)
                _running_cv.notify_all()

    def _run(self) -> None:
        ctx = JobContext(self, self.token)
        try:
            if self.token.cancelled:
                raise Cancelled("Cancelled.")
            result = self.fn(ctx)
        except Cancelled:
            self.emit("cancelled")
        except BaseException as exc:  # every failure must reach the GUI as a dialog, not vanish
            log.debug("job %s failed:\n%s", self.name, traceback.format_exc())
            if self.token.cancelled:
                self.emit("cancelled")
            else:
                # out of memory becomes a sentence, and its traceback (frames holding the big
                # arrays that did not fit) is dropped here, so the memory is free again at once
                self.emit("failed", user_facing(exc))
        else:
            if self.token.cancelled:
                self.emit("cancelled")
            else:
                self.emit("finished", result)


@dataclass
class _Handlers:
    on_done: Callback | None = None
    on_error: Callback | None = None
    on_cancel: Callable[[], None] | None = None
    on_publish: Callback | None = None


class JobRunner(QObject):
    """A single slot for long jobs: submitting cancels whatever was running.

    ``busy_changed`` and ``progress`` drive a progress bar with a Cancel button. Cancel frees
    the slot at once (``on_cancel`` runs before :meth:`cancel` returns): the job stops at its
    next check in the background and whatever it still reports is ignored, so the UI never
    waits for a big photo's current step to end.
    """

    busy_changed = Signal(bool)
    progress = Signal(float, str)
    job_failed = Signal(object)  # exceptions not handled by an on_error callback

    def __init__(self, pool: QThreadPool, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = pool
        self._current: Job | None = None
        self._handlers: dict[int, _Handlers] = {}
        self._alive: set[Job] = set()  # keep Python wrappers alive until their run() ends
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current_name(self) -> str | None:
        return self._current.name if self._current else None

    def submit(
        self,
        name: str,
        fn: Callable[[JobContext], Any],
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        on_cancel: Callable[[], None] | None = None,
        on_publish: Callback | None = None,
    ) -> Job:
        job = Job(name, fn)
        if self._closed:  # the window is closing: nothing new starts
            job.cancel()
            job.detach()
            return job
        if self._current is not None:
            self._current.cancel()
        self._handlers[id(job)] = _Handlers(on_done, on_error, on_cancel, on_publish)
        job.signals.progress.connect(self._on_progress)
        job.signals.published.connect(self._on_published)
        job.signals.finished.connect(self._on_finished)
        job.signals.failed.connect(self._on_failed)
        job.signals.cancelled.connect(self._on_cancelled)
        was_busy = self.busy
        self._current = job
        self._alive.add(job)
        self._pool.start(job.run)
        if not was_busy:
            self.busy_changed.emit(True)
        self.progress.emit(0.0, name)
        return job

    @Slot()
    def cancel(self) -> None:
        """Stop the running job: the slot is free (and ``on_cancel`` has run) when this returns;
        the job itself ends at its next cancel check, unheard."""
        job = self._current
        if job is None:
            return
        job.cancel()
        h = self._end(job)
        if h and h.on_cancel:
            h.on_cancel()

    def cancel_all(self) -> None:
        for job in list(self._alive):
            job.cancel()

    def close(self) -> None:
        """The owner is going away: cancel every job, hear nothing more from them, start none."""
        self._closed = True
        for job in list(self._alive):
            job.cancel()
            job.detach()
        self._alive.clear()
        self._handlers.clear()
        self._current = None

    # --- outcomes, on the GUI thread ---------------------------------------------------------
    def _on_progress(self, job: Job, fraction: float, message: str) -> None:
        if job is self._current:
            self.progress.emit(fraction, message)

    def _on_published(self, job: Job, obj: Any) -> None:
        h = self._handlers.get(id(job))
        if job is self._current and h and h.on_publish:
            h.on_publish(obj)

    def _end(self, job: Job) -> _Handlers | None:
        """Forget a job's handlers; return them only if it is still the one the user waits for."""
        h = self._handlers.pop(id(job), None)
        if job is not self._current:
            return None
        self._current = None
        self.busy_changed.emit(False)
        return h

    def _on_finished(self, job: Job, result: Any) -> None:
        self._alive.discard(job)
        h = self._end(job)
        if h and h.on_done:
            h.on_done(result)

    def _on_failed(self, job: Job, exc: BaseException) -> None:
        self._alive.discard(job)
        h = self._end(job)
        if h is None:
            return
        if h.on_error:
            h.on_error(exc)
        else:
            self.job_failed.emit(exc)

    def _on_cancelled(self, job: Job) -> None:
        self._alive.discard(job)
        h = self._end(job)
        if h and h.on_cancel:
            h.on_cancel()


class ReusableSamples:
    """Gallery samples that a new batch may show again instead of recomputing them.

    Each sample depends on (method, model, seed, temperature, locked strokes, index) alone, so
    pressing Generate after a Cancel (or with the same settings again) makes only the samples
    that are missing: the ones the cancelled batch finished are reused as they are.
    """

    def __init__(self, samples: Iterable[Any], n: int) -> None:
        self._by_key: dict[tuple, Any] = {}
        for s in samples:
            r = s.ref
            self._by_key[(r.method, r.family, r.checkpoint, r.seed, r.temperature, tuple(r.locked), r.index)] = (
                replace(s, ref=replace(r, n=n)) if r.n != n else s
            )

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, method: str, family: str, checkpoint: str | None, seed: int, temperature: float,
            locked: tuple, first: int, count: int) -> list[Any] | None:
        """Samples ``first`` .. ``first + count - 1`` if every one of them is at hand, else None."""
        out = [self._by_key.get((method, family, checkpoint, seed, temperature, tuple(locked), i))
               for i in range(first, first + count)]
        return None if any(s is None for s in out) else out


def reusable_samples(samples: Iterable[Any], n: int) -> ReusableSamples:
    """What :meth:`Session.generate` may reuse of ``samples`` for a batch of ``n``."""
    return ReusableSamples(samples, n)


@dataclass
class _Request:
    key: str
    fn: Callable[[JobContext], Any]
    on_done: Callback | None
    on_error: Callback | None


class LatestWins(QObject):
    """A serial lane where the newest request per key wins; stale requests are dropped.

    ``dropped`` counts requests replaced before they ran (tests and the status bar use it).
    """

    idle = Signal()
    job_failed = Signal(object)

    def __init__(self, pool: QThreadPool, priority: tuple[str, ...] = (), parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = pool
        self._priority = priority
        self._pending: dict[str, _Request] = {}
        self._running: tuple[Job, _Request] | None = None
        self._closed = False
        self.dropped = 0
        self.completed = 0

    @property
    def busy(self) -> bool:
        return self._running is not None or bool(self._pending)

    def submit(
        self,
        key: str,
        fn: Callable[[JobContext], Any],
        on_done: Callback | None = None,
        on_error: Callback | None = None,
    ) -> None:
        if self._closed:
            return
        if key in self._pending:
            self.dropped += 1
        self._pending[key] = _Request(key, fn, on_done, on_error)
        self._start_next()

    def discard(self, key: str | None = None) -> None:
        """Forget pending requests (all, or one key) and cancel the running one if it matches."""
        keys = [key] if key else list(self._pending)
        for k in keys:
            if self._pending.pop(k, None) is not None:
                self.dropped += 1
        if self._running and (key is None or self._running[1].key == key):
            self._running[0].cancel()

    def close(self) -> None:
        """The owner is going away: drop pending requests, cancel and detach the running one."""
        self._closed = True
        self.discard()
        if self._running is not None:
            self._running[0].detach()
            self._running = None

    def _start_next(self) -> None:
        if self._running is not None or not self._pending:
            return
        order = [k for k in self._priority if k in self._pending] + [k for k in self._pending if k not in self._priority]
        req = self._pending.pop(order[0])
        job = Job(req.key, req.fn)
        job.signals.finished.connect(self._finished)
        job.signals.failed.connect(self._failed)
        job.signals.cancelled.connect(self._cancelled)
        self._running = (job, req)
        self._pool.start(job.run)

    def _finished(self, job: Job, result: Any) -> None:
        self._done(job, result, None)

    def _failed(self, job: Job, exc: BaseException) -> None:
        self._done(job, None, exc)

    def _cancelled(self, job: Job) -> None:
        self._done(job, None, None, cancelled=True)

    def _done(self, job: Job, result: Any, exc: BaseException | None, cancelled: bool = False) -> None:
        if self._running is None or self._running[0] is not job:
            return
        req = self._running[1]
        self._running = None
        self.completed += 1
        if not cancelled and not self._closed:
            if exc is not None:
                if req.on_error:
                    req.on_error(exc)
                else:
                    self.job_failed.emit(exc)
            elif req.on_done:
                req.on_done(result)
        self._start_next()
        if self._running is None:
            self.idle.emit()
