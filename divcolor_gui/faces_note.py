"""The note beside the gallery when the faces model is chosen for a photo without a face.

The faces models know LFW portraits only; on a street photo they paint skin tones everywhere,
and the app used to say nothing (issue 28). Whenever the photo, the model or the gallery's
batch changes, this checks the photo with :func:`engine.faces.shows_face` (a few ms, on a
worker of the session's pool, once per photo) and says :data:`NO_FACE` while the faces
model is chosen and no face was found; otherwise it says nothing ("").
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.faces import shows_face

from .jobs import JobContext, LatestWins

NO_FACE = "This photo has no faces: the general model fits better."
FACES = "faces"


class FacesNote(QObject):
    """Emits ``changed(text)`` with :data:`NO_FACE` or "" for the session's current photo."""

    changed = Signal(str)

    def __init__(self, session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.lane = LatestWins(session.pool, parent=self)
        self.text = ""
        self._answers: dict[int, tuple[object, bool | None]] = {}  # id(photo) -> (photo, has a face)
        session.batch_started.connect(self.refresh)
        session.choice_changed.connect(self.refresh)
        session.doc.photo_changed.connect(self.refresh)

    def _say(self, text: str) -> None:
        self.text = text
        self.changed.emit(text)

    def refresh(self, *_: object) -> None:
        photo = self.session.doc.photo
        if photo is None or self.session.choice[0] != FACES:
            self._say("")
            return
        known = self._answers.get(id(photo))
        if known is not None and known[0] is photo:
            self._say(NO_FACE if known[1] is False else "")
            return

        def check(ctx: JobContext) -> bool | None:
            return shows_face(photo.L)

        def done(face: bool | None) -> None:
            self._answers = {id(photo): (photo, face)}  # the current photo's answer is enough
            if self.session.doc.photo is photo:
                self.refresh()

        self.lane.submit("faces", check, on_done=done, on_error=lambda e: None)

    def close(self) -> None:
        self.lane.close()
