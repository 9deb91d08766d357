"""Every edit the user can undo, as a QUndoCommand on the :class:`~.document.Document`.

Commands store what they need to go both ways (the stroke, the removed strokes with their
positions, the previous base) rather than re-deriving it, so undo is exact no matter what ran
in between. The document emits its signals and the window schedules propagation from there.
"""

from __future__ import annotations

from PySide6.QtGui import QUndoCommand

from engine.colorizer import Colorization
from engine.strokes import Stroke

from .document import Document, SampleRef

UNDO_LIMIT = 100
"""Edits the undo history keeps (the oldest go first). Without a limit it grew for as long as
the app ran (issue 28): a stroke is small, but a picked sample holds its full-size
colorization, which a long session of picks kept alive after the gallery moved on. 100 is
more than the 20-50 steps image editors keep by default, and a stroke edit is one step."""


class AddStroke(QUndoCommand):
    """A painted stroke, or a single click (a one-point hint)."""

    def __init__(self, doc: Document, stroke: Stroke) -> None:
        super().__init__("Point hint" if len(stroke.points) == 1 else "Paint stroke")
        self.doc = doc
        self.stroke = stroke

    def redo(self) -> None:
        self.doc.set_strokes(self.doc.strokes + [self.stroke])

    def undo(self) -> None:
        strokes = list(self.doc.strokes)
        # the stroke is the last one unless something odd happened; remove by identity
        for i in range(len(strokes) - 1, -1, -1):
            if strokes[i] is self.stroke:
                del strokes[i]
                break
        self.doc.set_strokes(strokes)


class EraseStrokes(QUndoCommand):
    """Strokes touched by the eraser, removed together; undo puts each back where it was."""

    def __init__(self, doc: Document, indices: list[int]) -> None:
        n = len(indices)
        super().__init__(f"Erase {n} stroke{'s' if n != 1 else ''}")
        self.doc = doc
        self.removed = [(i, doc.strokes[i]) for i in sorted(set(indices))]

    def redo(self) -> None:
        drop = {i for i, _ in self.removed}
        self.doc.set_strokes([s for i, s in enumerate(self.doc.strokes) if i not in drop])

    def undo(self) -> None:
        strokes = list(self.doc.strokes)
        for i, s in self.removed:  # ascending, so earlier insertions keep later indices right
            strokes.insert(i, s)
        self.doc.set_strokes(strokes)


class ClearStrokes(QUndoCommand):
    def __init__(self, doc: Document) -> None:
        super().__init__("Clear strokes")
        self.doc = doc
        self.old = list(doc.strokes)

    def redo(self) -> None:
        self.doc.set_strokes([])

    def undo(self) -> None:
        self.doc.set_strokes(self.old)


class PickSample(QUndoCommand):
    """Make a gallery sample the base that strokes refine."""

    def __init__(self, doc: Document, sample: Colorization, ref: SampleRef) -> None:
        super().__init__(f"Pick sample {ref.label()}")
        self.doc = doc
        self.new = (sample, ref)
        self.old = (doc.base, doc.base_ref)

    def redo(self) -> None:
        self.doc.set_base(*self.new)

    def undo(self) -> None:
        self.doc.set_base(*self.old)
