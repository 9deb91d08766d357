"""Painting on the canvas as strokes pile up: the cost of one mouse move while painting.

A move while painting adds a point to the live stroke and repaints the view (photo, finished
strokes, live stroke). Before issue 28 every repaint rebuilt every finished stroke's outline,
so a move cost 14-22 ms with no strokes and 80-93 ms with 8-20 in a soak; the canvas now
keeps each finished stroke's outline and draws them all into one view-sized pixmap, redrawn
only when they change, so a move should cost the same with 100 strokes as with none.

The real :class:`divcolor_gui.canvas.CanvasView` runs offscreen on a 1600x1200 photo in a
1200x800 view; each move is a mouse event sent to the viewport followed by a synchronous
repaint. The baseline, measured in the same run, is the same canvas with the pre-fix
painting (every outline rebuilt and drawn on each repaint). Rows: strokes on the canvas,
median ms per move, cached and baseline, and their ratio.

    python benchmarks/bench_canvas_strokes.py [--strokes 0 20 100] [--moves 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent, QPainter  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from divcolor_gui.canvas import CanvasView  # noqa: E402
from divcolor_gui.strokes_layer import StrokesItem  # noqa: E402
from engine.strokes import Stroke  # noqa: E402

PHOTO = (1200, 1600)  # rows, columns
VIEW = (1200, 800)


class Uncached(StrokesItem):
    """The pre-fix painting: every stroke's outline rebuilt and drawn on each repaint."""

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        items = list(enumerate(self.strokes)) + ([(-1, self.live)] if self.live is not None else [])
        for i, s in items:
            if s.points:
                self.draw_stroke(painter, s, self.shape_of(s), i in self.doomed)


def strokes(n: int, seed: int = 0) -> list[Stroke]:
    """n wandering strokes of 40 points each, radius 6-20, spread over the photo."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = rng.uniform((50, 50), (PHOTO[1] - 50, PHOTO[0] - 50))
        steps = rng.normal(0, 12, (40, 2)).cumsum(0)
        pts = np.clip(start + steps, 0, (PHOTO[1], PHOTO[0]))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        out.append(Stroke(color, float(rng.uniform(6, 20)), tuple(map(tuple, pts.round(2)))))
    return out


def make_canvas(uncached: bool) -> CanvasView:
    view = CanvasView()
    view.resize(*VIEW)
    view.show()
    yy, xx = np.mgrid[0 : PHOTO[0], 0 : PHOTO[1]]
    view.set_photo((0.5 + 0.4 * np.sin(xx / 40.0) * np.cos(yy / 55.0)).astype(np.float32))
    if uncached:
        old = view.strokes_item
        item = Uncached()
        item.size = old.size
        item.setZValue(10)
        view.scene().removeItem(old)
        view.scene().addItem(item)
        view.strokes_item = item
    QApplication.processEvents()
    return view


def send(view: CanvasView, kind: QEvent.Type, x: float, y: float) -> None:
    vp = view.viewport()
    pos = QPointF(view.mapFromScene(QPointF(x, y)))
    button = Qt.MouseButton.LeftButton
    ev = QMouseEvent(kind, pos, QPointF(vp.mapToGlobal(pos.toPoint())),
                     button if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton,
                     Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(vp, ev)


def per_move_ms(view: CanvasView, moves: int) -> float:
    """Median ms of one move (event + repaint) along a drag of ``moves`` moves."""
    view.viewport().repaint()
    x0, y0 = PHOTO[1] * 0.3, PHOTO[0] * 0.5
    send(view, QEvent.Type.MouseButtonPress, x0, y0)
    view.viewport().repaint()
    times = []
    for k in range(1, moves + 1):
        t = time.perf_counter()
        send(view, QEvent.Type.MouseMove, x0 + 6 * k, y0 + 20 * np.sin(k / 5))
        view.viewport().repaint()
        times.append(time.perf_counter() - t)
    send(view, QEvent.Type.MouseButtonRelease, x0 + 6 * moves, y0)
    view.set_strokes(view.strokes)  # the finished stroke is not kept: each drag starts alike
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strokes", type=int, nargs="+", default=[0, 20, 100])
    ap.add_argument("--moves", type=int, default=60, help="moves per drag (default 60)")
    ap.add_argument("--repeat", type=int, default=3, help="drags per row; the median is shown")
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])  # noqa: F841 (kept alive for the run)
    views = {False: make_canvas(False), True: make_canvas(True)}
    print(f"canvas {VIEW[0]}x{VIEW[1]}, photo {PHOTO[1]}x{PHOTO[0]}, {args.moves} moves per drag, "
          f"median of {args.repeat} drags, QT_QPA_PLATFORM={os.environ['QT_QPA_PLATFORM']}")
    print(f"\n{'strokes':>7} {'cached ms/move':>15} {'baseline ms/move':>17} {'baseline/cached':>16}")
    rows = []
    for n in args.strokes:
        ms = {}
        for uncached, view in views.items():
            view.set_strokes(strokes(n))
            ms[uncached] = statistics.median(per_move_ms(view, args.moves) for _ in range(args.repeat))
        rows.append((n, ms[False], ms[True]))
        print(f"{n:7d} {ms[False]:15.2f} {ms[True]:17.2f} {ms[True] / ms[False]:15.1f}x", flush=True)
    flat = max(r[1] for r in rows) / min(r[1] for r in rows)
    print(f"\ncached: the most strokes cost {flat:.2f}x the fewest (goal: about 1x, as with none)")


if __name__ == "__main__":
    main()
