"""Painting stays as cheap with many strokes as with none, and the undo history is bounded
(issue 28, item 19).

Nothing here is timed: a move's cost is what it does. With 100 finished strokes on the canvas
a drag must build no finished stroke's outline and draw no finished stroke again (before, each
repaint rebuilt and drew all of them), and what the canvas shows must be what the pre-fix
painting showed (the reference below, drawn stroke by stroke).
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent, QPainter
from PySide6.QtWidgets import QApplication

from engine.strokes import Stroke

from divcolor_gui.canvas import CanvasView
from divcolor_gui.strokes_layer import StrokesItem
from divcolor_gui.commands import UNDO_LIMIT

from conftest import WAIT_MS


def many_strokes(n: int, w: int = 400, h: int = 300, seed: int = 0) -> list[Stroke]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        start = rng.uniform((20, 20), (w - 20, h - 20))
        pts = np.clip(start + rng.normal(0, 6, (12, 2)).cumsum(0), 0, (w, h))
        pts = pts[:1] if k % 10 == 0 else pts  # some point hints too
        out.append(Stroke(tuple(int(v) for v in rng.integers(0, 256, 3)), float(rng.uniform(3, 12)),
                          tuple(map(tuple, pts.round(2)))))
    return out


@pytest.fixture
def canvas(qtbot):
    view = CanvasView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.show()
    qtbot.waitExposed(view, timeout=WAIT_MS)
    yy, xx = np.mgrid[0:300, 0:400]
    view.set_photo((0.5 + 0.3 * np.sin(xx / 17.0) * np.cos(yy / 23.0)).astype(np.float32))
    return view


def send(view: CanvasView, kind: QEvent.Type, x: float, y: float) -> None:
    vp = view.viewport()
    pos = QPointF(view.mapFromScene(QPointF(x, y)))
    left = Qt.MouseButton.LeftButton
    ev = QMouseEvent(kind, pos, QPointF(vp.mapToGlobal(pos.toPoint())),
                     Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else left,
                     Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else left,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(vp, ev)


def test_a_move_while_painting_draws_no_finished_stroke_again(canvas, monkeypatch):
    canvas.set_strokes(many_strokes(100))
    canvas.viewport().repaint()
    built: list[Stroke] = []
    real = StrokesItem.shape_of
    monkeypatch.setattr(StrokesItem, "shape_of", staticmethod(lambda s: (built.append(s), real(s))[1]))
    item = canvas.strokes_item
    renders = item.layer_renders
    finished = set(canvas.strokes)
    send(canvas, QEvent.Type.MouseButtonPress, 50, 150)
    for k in range(1, 31):
        send(canvas, QEvent.Type.MouseMove, 50 + 8 * k, 150 + 10 * np.sin(k / 4))
        canvas.viewport().repaint()
    assert item.live is not None and len(item.live.points) > 20, "the drag painted a live stroke"
    assert item.layer_renders == renders, "the finished strokes were drawn again during the drag"
    assert not finished & set(built), "a finished stroke's outline was rebuilt during the drag"
    with_stroke = []
    canvas.stroke_finished.connect(with_stroke.append)
    send(canvas, QEvent.Type.MouseButtonRelease, 290, 150)
    canvas.set_strokes(canvas.strokes + with_stroke)  # as the window does after the edit
    built.clear()
    canvas.viewport().repaint()
    assert item.layer_renders == renders + 1 and built == with_stroke, "only the new stroke's outline is built"
    canvas.set_strokes(canvas.strokes[:50])  # erased: the others' outlines are let go
    assert len(item._outlines) <= 50


def grab(view: CanvasView) -> np.ndarray:
    img = view.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    return np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3].copy()


class Reference(StrokesItem):
    """The pre-fix painting: each stroke's outline built and drawn straight onto the view."""

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for i, s in list(enumerate(self.strokes)) + ([(-1, self.live)] if self.live is not None else []):
            self.draw_stroke(painter, s, self.shape_of(s), i in self.doomed)


@pytest.mark.parametrize("zoom", [1.0, 2.5])
def test_the_cached_strokes_look_as_before(canvas, zoom):
    strokes = many_strokes(30)
    canvas.zoom_by(zoom)
    canvas.set_strokes(strokes)
    canvas.strokes_item.set_strokes(strokes, live=strokes[3], doomed={1, 7})
    cached = grab(canvas)
    ref = Reference()
    ref.size = canvas.strokes_item.size
    ref.setZValue(10)
    canvas.scene().removeItem(canvas.strokes_item)
    canvas.scene().addItem(ref)
    ref.set_strokes(strokes, live=strokes[3], doomed={1, 7})
    want = grab(canvas)
    diff = np.abs(cached.astype(int) - want.astype(int))
    assert (want != grab_without_strokes(canvas, ref)).any(), "the strokes are on the picture"
    assert np.percentile(diff, 99.9) <= 3 and diff.mean() < 0.2


def grab_without_strokes(canvas: CanvasView, item: StrokesItem) -> np.ndarray:
    item.setVisible(False)
    out = grab(canvas)
    item.setVisible(True)
    return out


def test_the_undo_history_keeps_the_last_edits_only(qtbot, colorizer, photo_path):
    from divcolor_gui.session import Session

    s = Session(colorizer)
    try:
        with qtbot.waitSignal(s.models_changed, timeout=WAIT_MS):
            s.refresh_models()
        with qtbot.waitSignal(s.ready, timeout=WAIT_MS):
            s.open_photo(photo_path)
        qtbot.waitUntil(s.is_idle, timeout=WAIT_MS)
        edits = UNDO_LIMIT + 30
        for k in range(edits):
            s.add_stroke(Stroke((200, 40, 30), 3.0, ((5.0 + k % 100, 10.0),)))
        assert len(s.doc.strokes) == edits
        assert s.undo_stack.count() == UNDO_LIMIT, "the history stops at the limit"
        while s.undo_stack.canUndo():
            s.undo_stack.undo()
        assert len(s.doc.strokes) == edits - UNDO_LIMIT, "the oldest edits were let go, the newest undone"
        qtbot.waitUntil(s.is_idle, timeout=WAIT_MS)
    finally:
        s.close()
