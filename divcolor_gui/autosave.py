"""Autosave of the editing state, and recovery after a crash.

What a project file holds (photo path, chosen model, gallery batches, picked sample, strokes)
is written, debounced, to ``autosave-<pid>-<id>.divcolor`` in the user's state folder
(platformdirs), atomically (:func:`engine.files.atomic_write` through
:func:`~.document.write_project`), so a crash or a kill loses at most the last second of work.
Each running window holds a :class:`~PySide6.QtCore.QLockFile` beside its file; a clean close
deletes both. At the next start, an autosave whose lock is free (its process is gone: it
crashed or was killed) is offered back: "Restore unsaved work from <time>?".

The file *is* a project (same schema, plus an ``autosave`` entry the reader ignores), so
restoring is opening a project; afterwards the work counts as unsaved (the window asks before
closing), and the project it came from, if any, is again the one Save writes to.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import platformdirs
from PySide6.QtCore import QLockFile, QObject, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from engine.errors import DivcolorError
from engine.schema import read_json_file

from .document import project_dict, write_project
from .settings import Settings, default_settings_path

log = logging.getLogger(__name__)

AUTOSAVE_DELAY_MS = 1000  # debounce: a burst of strokes is one write, a second after the last
PREFIX, SUFFIX = "autosave-", ".divcolor"


def default_autosave_dir() -> Path:
    """Where autosaves live: the user's state folder (they are not settings, not documents)."""
    return Path(platformdirs.user_state_dir("divcolor", "divcolor")) / "autosave"


def autosave_dir(settings: Settings) -> Path:
    """The user's state folder; beside the settings file when that is not the user's (tests,
    screenshot runs), so those never touch a user's autosaves."""
    if Path(settings.path).resolve() == default_settings_path().resolve():
        return default_autosave_dir()
    return Path(settings.path).parent / "autosave"


def _lock_for(path: Path) -> QLockFile:
    lock = QLockFile(str(path.with_name(path.name + ".lock")))
    lock.setStaleLockTime(0)  # stale only when its process is gone, never by age
    return lock


@dataclass
class Recovery:
    """An autosave left behind by a window that did not close (it crashed or was killed)."""

    path: Path
    saved_at: float  # seconds since the epoch
    photo: str
    strokes: int
    project: str | None  # the project file that window was editing, if any
    _lock: QLockFile | None = None  # held while this recovery is being offered

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.saved_at).strftime("%d %b %Y, %H:%M")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.release()


def find_recoveries(folder: str | Path) -> list[Recovery]:
    """Autosaves in ``folder`` whose window is gone, newest first; each is locked for us until
    :meth:`Recovery.release` (so two windows starting together do not both restore it)."""
    found: list[Recovery] = []
    for path in Path(folder).glob(f"{PREFIX}*{SUFFIX}"):
        lock = _lock_for(path)
        if not lock.tryLock(0):
            continue  # its window is still open (or another window is offering it right now)
        try:
            data = read_json_file(path)
            meta = data.get("autosave") or {}
            strokes = (data.get("strokes") or {}).get("strokes") or []
            found.append(Recovery(
                path, float(meta.get("saved_at", path.stat().st_mtime)), Path(str(data.get("photo", "?"))).name,
                len(strokes), meta.get("project"), lock,
            ))
        except (OSError, DivcolorError, AttributeError, TypeError, ValueError) as e:
            log.info("ignoring unreadable autosave %s: %s", path.name, e)
            lock.unlock()
    return sorted(found, key=lambda r: -r.saved_at)


class Autosave(QObject):
    """Keeps one window's editing state on disk while it is open (see the module docstring)."""

    saved = Signal(str)  # path, after each write
    restored = Signal()

    def __init__(self, session: Any, folder: str | Path, delay_ms: int = AUTOSAVE_DELAY_MS,
                 settings: Settings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self.folder = Path(folder)
        self.path = self.folder / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._lock: QLockFile | None = None
        self._closed = False
        self._restoring: Recovery | None = None
        self._failed_once = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.flush)
        doc = session.doc
        for sig in (doc.photo_changed, doc.strokes_changed, doc.base_changed, session.batch_started,
                    session.choice_changed, session.undo_stack.cleanChanged):
            sig.connect(self.schedule)
        session.project_opened.connect(self._project_opened)

    # --- writing ---------------------------------------------------------------------------------
    def schedule(self, *_: object) -> None:
        """Something changed: write in ``delay_ms`` unless something changes again first."""
        if not self._closed:
            self._timer.start()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def state(self) -> dict[str, Any] | None:
        """The project JSON of the current state, or None when there is nothing to lose: no
        photo, a photo without a file, or a project saved with nothing changed since."""
        s, doc = self.session, self.session.doc
        photo = doc.photo
        if photo is None or photo.path is None:
            return None
        if doc.project_path is not None and s.undo_stack.isClean() and self._restoring is None:
            return None
        family, checkpoint = s.choice
        first = s.batches[0] if s.batches else None
        data = project_dict(
            doc, self.path, first.seed if first else s.seed, first.temperature if first else s.temperature,
            first.n if first else s.n, family, checkpoint,
        )
        data["photo_relative"] = None  # the autosave folder says nothing about where the photo is
        data["gallery"]["batches"] = s.batches_json()
        data["autosave"] = {
            "saved_at": time.time(), "pid": os.getpid(),
            "project": str(doc.project_path) if doc.project_path is not None else None,
        }
        return data

    def flush(self) -> Path | None:
        """Write the state now (or remove the file when there is nothing to keep)."""
        self._timer.stop()
        if self._closed:
            return None
        data = self.state()
        if data is None:
            self._remove_file()
            return None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self._lock is None:
                self._lock = _lock_for(self.path)
                self._lock.tryLock(0)
            write_project(self.path, data, self.session.doc.photo)
        except (OSError, DivcolorError) as e:  # autosave must never get in the way of the work
            if not self._failed_once:
                log.warning("divcolor: cannot autosave to %s (%s); your work is not backed up", self.folder, e)
                self._failed_once = True
            return None
        self.saved.emit(str(self.path))
        return self.path

    def discard(self) -> None:
        """A clean exit: remove the autosave and write no more."""
        self._timer.stop()
        self._closed = True
        self._remove_file()
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None

    def _remove_file(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass

    # --- recovering ------------------------------------------------------------------------------
    def recoveries(self) -> list[Recovery]:
        return find_recoveries(self.folder)

    def offer_restore(self, parent: QWidget | None = None) -> bool:
        """At start: if a window crashed, ask "Restore unsaved work from <time>?"; True when the
        user said yes (the work then opens in this window). A "no" deletes that autosave."""
        found = self.recoveries()
        if not found:
            return False
        rec, rest = found[0], found[1:]
        for r in rest:
            r.release()  # offered at a later start
        what = f"“{rec.photo}”" + (f" with {rec.strokes} stroke{'s' if rec.strokes != 1 else ''}" if rec.strokes else "")
        answer = QMessageBox.question(
            parent, "Restore unsaved work?",
            f"divcolor did not close properly last time.\n\nRestore unsaved work from {rec.when}? ({what})",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes,
        )
        if answer != QMessageBox.StandardButton.Yes:
            rec.delete()
            return False
        self.restore(rec)
        return True

    def restore(self, rec: Recovery) -> None:
        """Open a recovery in this window. It becomes this window's own autosave at once, so
        it is never lost in between and never offered twice."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.replace(rec.path, self.path)
        rec.release()
        if self._lock is None:
            self._lock = _lock_for(self.path)
            self._lock.tryLock(0)
        self._restoring = rec
        self.session.open_project(self.path)

    def _project_opened(self, _proj: object) -> None:
        rec, self._restoring = self._restoring, None
        doc = self.session.doc
        if rec is None or doc.project_path != self.path:
            return
        project = Path(rec.project) if rec.project else None
        doc.project_path = project if project is not None and project.is_file() else None
        if self.settings is not None:  # opening it listed the autosave file among the recent files
            self.settings.remove_recent(str(self.path.resolve()))
        self.session.undo_stack.resetClean()  # restored work is unsaved work
        self.schedule()
        self.restored.emit()

