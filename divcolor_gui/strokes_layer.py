"""The strokes layer of the canvas: the user's hints drawn over the result, each finished stroke
built once and all of them kept in one view-sized picture (canvas.py holds the view around it)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPainterPathStroker, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from engine.strokes import Stroke


class StrokesItem(QGraphicsItem):
    """The user's hints drawn translucently over the result, with an outline so they stay
    visible on any colour. Strokes about to be erased are drawn faded and dashed.

    Painting must not slow down as strokes pile up (issue 28: each mouse move cost 14-22 ms
    with no strokes and 80-93 ms with 8-20, every stroke's outline rebuilt on each repaint).
    So each finished stroke's outline is built once (:meth:`outline`, kept while the stroke
    is on the canvas), and the finished strokes are drawn together into one pixmap the size
    of the view (:attr:`layer`), redrawn only when they change or the view zooms or scrolls.
    A repaint while painting blits that pixmap and draws the one stroke being painted, so a
    move costs the same with 100 strokes as with none (benchmarks/bench_canvas_strokes.py).
    """

    def __init__(self) -> None:
        super().__init__()
        self.strokes: list[Stroke] = []
        self.live: Stroke | None = None
        self.doomed: set[int] = set()
        self.size = QRectF()
        self._outlines: dict[Stroke, QPainterPath] = {}
        self.layer = QPixmap()  # the finished strokes as the view shows them
        self._layer_key: tuple | None = None
        self._version = 0  # bumped whenever the finished strokes or their looks change
        self.layer_renders = 0  # how often the finished strokes were drawn into the layer
        self._reach = 0.0  # the widest radius, which sets the bounding rect

    def set_strokes(self, strokes: list[Stroke], live: Stroke | None = None, doomed: set[int] | None = None) -> None:
        strokes, doomed = list(strokes), set(doomed or ())
        if strokes != self.strokes or doomed != self.doomed:
            self.strokes, self.doomed = strokes, doomed
            self._version += 1
            kept = {s: self._outlines[s] for s in strokes if s in self._outlines}
            self._outlines = kept  # outlines of strokes no longer shown are let go
        self.live = live
        reach = max([float(s.radius) for s in self.strokes + ([live] if live else [])] or [0.0])
        if reach != self._reach:
            self.prepareGeometryChange()
            self._reach = reach
        self.update()

    def boundingRect(self) -> QRectF:
        r = self._reach
        return self.size.adjusted(-r - 2, -r - 2, r + 2, r + 2)

    @staticmethod
    def shape_of(s: Stroke) -> QPainterPath:
        """The area a stroke paints: a disc for a point hint, else the polyline widened."""
        pts = [QPointF(float(x), float(y)) for x, y in s.points]
        path = QPainterPath(pts[0])
        if len(pts) == 1:
            r = float(s.radius)
            out = QPainterPath()
            out.addEllipse(pts[0], r, r)
            return out
        for p in pts[1:]:
            path.lineTo(p)
        stroker = QPainterPathStroker()
        stroker.setWidth(2 * float(s.radius))
        stroker.setCapStyle(Qt.PenCapStyle.RoundCap)
        stroker.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        return stroker.createStroke(path).simplified()

    def outline(self, s: Stroke) -> QPainterPath:
        """:meth:`shape_of` a finished stroke, built once while it is on the canvas."""
        path = self._outlines.get(s)
        if path is None:
            path = self._outlines[s] = self.shape_of(s)
        return path

    @staticmethod
    def draw_stroke(painter: QPainter, s: Stroke, shape: QPainterPath, doomed: bool = False) -> None:
        c = QColor(*[int(v) for v in s.color])
        c.setAlpha(50 if doomed else 170)
        outline = QPen(QColor(0, 0, 0, 110) if c.lightness() > 110 else QColor(255, 255, 255, 140), 1)
        outline.setCosmetic(True)
        if doomed:
            outline.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(outline)
        painter.setBrush(QBrush(c))
        painter.drawPath(shape)

    def _draw_layer(self, painter: QPainter) -> None:
        """Blit the finished strokes, drawing them into :attr:`layer` first if they or the
        view's transform or size changed since the last time."""
        device = painter.device()
        t = painter.worldTransform()
        dpr = float(device.devicePixelRatio())
        key = (self._version, t.m11(), t.m12(), t.m21(), t.m22(), t.dx(), t.dy(), device.width(), device.height(), dpr)
        if key != self._layer_key or self.layer.isNull():
            layer = QPixmap(max(1, round(device.width() * dpr)), max(1, round(device.height() * dpr)))
            layer.setDevicePixelRatio(dpr)
            layer.fill(Qt.GlobalColor.transparent)
            p = QPainter(layer)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.setTransform(t)
            for i, s in enumerate(self.strokes):
                if s.points:
                    self.draw_stroke(p, s, self.outline(s), i in self.doomed)
            p.end()
            self.layer, self._layer_key = layer, key
            self.layer_renders += 1
        painter.save()
        painter.resetTransform()
        painter.drawPixmap(0, 0, self.layer)
        painter.restore()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.strokes:
            self._draw_layer(painter)
        if self.live is not None and self.live.points:
            self.draw_stroke(painter, self.live, self.shape_of(self.live))
