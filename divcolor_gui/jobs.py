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
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot

from engine.colorizer import CancelToken
from engine.errors import Cancelled

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]


class JobContext:
    """What a job function may use from its worker thread: progress, cancel, partial results."""

    def __init__(self, signals: "_JobSignals", token: CancelToken) -> None:
        self._signals = signals
        self.cancel_token = token

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def check(self) -> None:
        """Raise :class:`engine.errors.Cancelled` if the user cancelled."""
        self.cancel_token.check()

    def progress(self, fraction: float, message: str = "") -> None:
        self._signals.progress.emit(self._signals.job, float(fraction), str(message))

    def publish(self, obj: Any) -> None:
        """Hand a partial result to the GUI thread (e.g. the first method's samples)."""
        self._signals.published.emit(self._signals.job, obj)


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
        self.token = CancelToken()
        self.signals = _JobSignals(self)

    def cancel(self) -> None:
        self.token.cancel()

    def run(self) -> None:  # worker thread
        ctx = JobContext(self.signals, self.token)
        try:
            if self.token.cancelled:
                raise Cancelled("Cancelled.")
            result = self.fn(ctx)
        except Cancelled:
            self.signals.cancelled.emit(self)
        except BaseException as exc:  # every failure must reach the GUI as a dialog, not vanish
            log.debug("job %s failed:\n%s", self.name, traceback.format_exc())
            self.signals.failed.emit(self, exc)
        else:
            if self.token.cancelled:
                self.signals.cancelled.emit(self)
            else:
                self.signals.finished.emit(self, result)


@dataclass
class _Handlers:
    on_done: Callback | None = None
    on_error: Callback | None = None
    on_cancel: Callable[[], None] | None = None
    on_publish: Callback | None = None


class JobRunner(QObject):
    """A single slot for long jobs: submitting cancels whatever was running.

    ``busy_changed`` and ``progress`` drive a progress bar with a Cancel button.
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
        if self._current is not None:
            self._current.cancel()
        job = Job(name, fn)
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
        """Ask the running job to stop; it reports ``cancelled`` at its next check."""
        if self._current is not None:
            self._current.cancel()

    def cancel_all(self) -> None:
        for job in self._alive:
            job.cancel()

    # --- outcomes, on the GUI thread ---------------------------------------------------------
    def _on_progress(self, job: Job, fraction: float, message: str) -> None:
        if job is self._current:
            self.progress.emit(fraction, message)

    def _on_published(self, job: Job, obj: Any) -> None:
        h = self._handlers.get(id(job))
        if job is self._current and h and h.on_publish:
            h.on_publish(obj)

    def _end(self, job: Job) -> _Handlers | None:
        """Forget a job; return its handlers only if it is still the one the user waits for."""
        self._alive.discard(job)
        h = self._handlers.pop(id(job), None)
        if job is not self._current:
            return None
        self._current = None
        self.busy_changed.emit(False)
        return h

    def _on_finished(self, job: Job, result: Any) -> None:
        h = self._end(job)
        if h and h.on_done:
            h.on_done(result)

    def _on_failed(self, job: Job, exc: BaseException) -> None:
        h = self._end(job)
        if h is None:
            return
        if h.on_error:
            h.on_error(exc)
        else:
            self.job_failed.emit(exc)

    def _on_cancelled(self, job: Job) -> None:
        h = self._end(job)
        if h and h.on_cancel:
            h.on_cancel()


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
        self._closed = True
        self.discard()

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
