"""The photo view: zoom, pan, before/after compare, and painting strokes in image coordinates.

The canvas shows pixels it is given and reports what the user did with the mouse as strokes,
erasures, picked colours and hovered positions — all in *image* pixel coordinates, which is
what the engine's strokes use. It never calls the engine and never mutates the document; the
main window turns its signals into undo commands and propagation requests.

Mouse: wheel zooms about the cursor; middle button, the Pan tool or Space+drag pans; left
button paints with the current tool (a click without moving leaves a point hint); Alt+click
picks a colour with any painting tool. Holding ``\\`` shows the grey original.
"""

from __future__ import annotations

import enum
import math

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGridLayout,
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QStackedLayout,
    QToolButton,
    QStyleOptionGraphicsItem,
    QVBoxLayout,
    QWidget,
)

from engine.strokes import Stroke

from .imaging import qimage_from_rgb
from .samples import sample_photos
from .strokes_layer import StrokesItem

SHOW_ORIGINAL_KEY = Qt.Key.Key_Backslash
MIN_ZOOM, MAX_ZOOM = 0.02, 32.0


class Tool(enum.Enum):
    BRUSH = "brush"
    ERASER = "eraser"
    EYEDROPPER = "eyedropper"
    PAN = "pan"


def segment_distance(points: np.ndarray, p: tuple[float, float]) -> float:
    """Distance from p to the polyline through ``points`` (N, 2); a single point is a dot."""
    q = np.asarray(p, np.float64)
    if len(points) == 1:
        return float(np.hypot(*(points[0] - q)))
    a, b = points[:-1], points[1:]
    ab = b - a
    t = np.clip(((q - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    closest = a + t[:, None] * ab
    return float(np.hypot(*(closest - q).T).min())


def strokes_hit(strokes: list[Stroke], p: tuple[float, float], radius: float) -> list[int]:
    """Indices of strokes whose painted area comes within ``radius`` of p."""
    hits = []
    for i, s in enumerate(strokes):
        pts = np.asarray(s.points, np.float64).reshape(-1, 2)
        if len(pts) and segment_distance(pts, p) <= radius + float(s.radius):
            hits.append(i)
    return hits


class ImageItem(QGraphicsItem):
    """The result with the original revealed left of a split line (before/after compare)."""

    def __init__(self) -> None:
        super().__init__()
        self.result = QPixmap()
        self.original = QPixmap()
        self.split = 0.0  # fraction of the width, from the left, that shows the original
        self.show_original = False

    def set_pixmaps(self, result: QPixmap | None = None, original: QPixmap | None = None) -> None:
        self.prepareGeometryChange()
        if result is not None:
            self.result = result
        if original is not None:
            self.original = original
        self.update()

    def boundingRect(self) -> QRectF:
        pm = self.original if not self.original.isNull() else self.result
        return QRectF(0, 0, pm.width(), pm.height())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, painter.worldTransform().m11() < 1.0)
        if self.show_original or self.result.isNull():
            painter.drawPixmap(0, 0, self.original)
            return
        painter.drawPixmap(0, 0, self.result)
        if self.split <= 0 or self.original.isNull():
            return
        w = self.original.width() * self.split
        h = self.original.height()
        painter.drawPixmap(QRectF(0, 0, w, h), self.original, QRectF(0, 0, w, h))
        pen = QPen(QColor(255, 255, 255, 220), 2)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.drawLine(QPointF(w, 0), QPointF(w, h))


class CanvasView(QGraphicsView):
    """Zoomable, pannable view of the photo that turns mouse gestures into image-space edits."""

    stroke_preview = Signal(object)  # Stroke being painted (for live propagation)
    stroke_finished = Signal(object)  # Stroke, on release
    stroke_aborted = Signal()
    erase_preview = Signal(list)  # indices of strokes the eraser has touched so far
    erase_finished = Signal(list)
    color_picked = Signal(tuple)  # (r, g, b) 0-255
    hovered = Signal(float, float)  # image coordinates; (-1, -1) when off the image
    zoom_changed = Signal(float)
    show_original_changed = Signal(bool)
    pressed_at = Signal(float, float)  # a left click on the photo with a painting tool (colour suggestions)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setMouseTracking(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # drops go to the main window, which opens the file
        self.viewport().setAcceptDrops(False)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

        self.image_item = ImageItem()
        self.strokes_item = StrokesItem()
        self.strokes_item.setZValue(10)
        self.cursor_item = QGraphicsEllipseItem()
        self.cursor_item.setZValue(100)
        pen = QPen(QColor(255, 255, 255, 230), 1.5)
        pen.setCosmetic(True)
        self.cursor_item.setPen(pen)
        self.cursor_item.setVisible(False)
        for item in (self.image_item, self.strokes_item, self.cursor_item):
            self.scene().addItem(item)

        self.tool = Tool.BRUSH
        self.brush_color: tuple[int, int, int] = (192, 96, 58)
        self.brush_radius = 8.0
        self.strokes: list[Stroke] = []
        self._rgb: np.ndarray | None = None  # what is displayed as the result, for eyedropper/tests
        self._grey: np.ndarray | None = None
        self._fit_mode = True
        self._live_points: list[tuple[float, float]] | None = None
        self._erasing: set[int] | None = None
        self._pan_from: QPointF | None = None
        self._space = False
        self._hover = False  # the mouse is over the view (Space then pans, whoever has focus)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
        self.empty_text = "Open a photo with Ctrl+O, or drop one here"
        self.busy_text = ""  # e.g. "Preparing G-CRF for strokes…", drawn over the photo

    # --- content -------------------------------------------------------------------------------
    @property
    def painting(self) -> bool:
        """A brush or eraser drag is in progress."""
        return self._live_points is not None or self._erasing is not None

    @property
    def has_image(self) -> bool:
        return self._grey is not None

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the photo in pixels; (0, 0) when empty."""
        return (0, 0) if self._grey is None else (self._grey.shape[1], self._grey.shape[0])

    def current_rgb(self) -> np.ndarray | None:
        """The pixels shown as the result (float or uint8, (H, W, 3)); the original if none."""
        return self._rgb if self._rgb is not None else self._grey

    def set_photo(self, grey: np.ndarray | None) -> None:
        """A new photo: show its greyed original, forget the result, fit it to the view."""
        self._grey = grey
        self._rgb = None
        pm = QPixmap.fromImage(qimage_from_rgb(grey)) if grey is not None else QPixmap()
        self.image_item.set_pixmaps(result=QPixmap(), original=pm)
        self.strokes_item.size = QRectF(0, 0, pm.width(), pm.height())
        self.set_strokes([])
        self.scene().setSceneRect(QRectF(0, 0, pm.width(), pm.height()))
        self._fit_mode = True
        self.fit()

    def set_result(self, rgb: np.ndarray | None, image: QImage | None = None) -> None:
        """Show a colorization (``image`` may be pre-converted on a worker thread)."""
        self._rgb = rgb
        if rgb is None:
            self.image_item.set_pixmaps(result=QPixmap())
            self.image_item.result = QPixmap()
        else:
            self.image_item.set_pixmaps(result=QPixmap.fromImage(image if image is not None else qimage_from_rgb(rgb)))
        self.viewport().update()

    def set_strokes(self, strokes: list[Stroke]) -> None:
        self.strokes = list(strokes)
        self.strokes_item.set_strokes(self.strokes)

    def set_strokes_visible(self, visible: bool) -> None:
        self.strokes_item.setVisible(visible)

    def set_split(self, fraction: float) -> None:
        self.image_item.split = min(1.0, max(0.0, fraction))
        self.image_item.update()

    def set_show_original(self, on: bool) -> None:
        if self.image_item.show_original != on:
            self.image_item.show_original = on
            self.image_item.update()
            self.show_original_changed.emit(on)

    def add_overlay(self, item: QGraphicsItem) -> None:
        """Layers owned by other widgets (the attention map) sit between image and strokes."""
        item.setZValue(5)
        self.scene().addItem(item)

    # --- tools ---------------------------------------------------------------------------------
    def set_tool(self, tool: Tool) -> None:
        self.tool = tool
        self._update_cursor()

    def set_brush(self, color: tuple[int, int, int] | None = None, radius: float | None = None) -> None:
        if color is not None:
            self.brush_color = tuple(int(c) for c in color)  # type: ignore[assignment]
        if radius is not None:
            self.brush_radius = float(radius)
            self._place_cursor(self.cursor_item.rect().center())

    def _update_cursor(self) -> None:
        shape = {
            Tool.BRUSH: Qt.CursorShape.CrossCursor,
            Tool.ERASER: Qt.CursorShape.CrossCursor,
            Tool.EYEDROPPER: Qt.CursorShape.PointingHandCursor,
            Tool.PAN: Qt.CursorShape.OpenHandCursor,
        }[self.tool]
        if self._space:
            shape = Qt.CursorShape.OpenHandCursor
        self.viewport().setCursor(shape)
        self.cursor_item.setVisible(self.has_image and self.tool in (Tool.BRUSH, Tool.ERASER) and not self._space)

    def _place_cursor(self, center: QPointF) -> None:
        r = self.brush_radius
        self.cursor_item.setRect(QRectF(center.x() - r, center.y() - r, 2 * r, 2 * r))

    # --- zoom ----------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        """Show the whole photo (and keep doing so on resize until the user zooms)."""
        self._fit_mode = True
        if self.has_image:
            self.fitInView(self.image_item.boundingRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.zoom)

    def zoom_100(self) -> None:
        self._fit_mode = False
        self.resetTransform()
        self.zoom_changed.emit(self.zoom)

    def zoom_by(self, factor: float) -> None:
        self._fit_mode = False
        target = min(MAX_ZOOM, max(MIN_ZOOM, self.zoom * factor))
        f = target / self.zoom
        self.scale(f, f)
        self.zoom_changed.emit(self.zoom)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if not self.has_image:
            return
        dy = event.angleDelta().y() or event.angleDelta().x()
        if dy:
            self.zoom_by(1.0015**dy)

    # --- mouse ---------------------------------------------------------------------------------
    def _image_pos(self, event: QMouseEvent) -> tuple[float, float]:
        p = self.mapToScene(event.position().toPoint())
        return float(p.x()), float(p.y())

    def _clamped(self, x: float, y: float) -> tuple[float, float]:
        w, h = self.image_size  # strokes live in [0, W] x [0, H] (pixel i spans [i, i + 1))
        return min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h))

    def _inside(self, x: float, y: float) -> bool:
        w, h = self.image_size
        return 0 <= x < w and 0 <= y < h

    def _stroke(self, points: list[tuple[float, float]]) -> Stroke:
        pts = tuple((round(x, 2), round(y, 2)) for x, y in points)
        return Stroke(color=tuple(self.brush_color), radius=float(self.brush_radius), points=pts)

    def pick_color(self, x: float, y: float) -> tuple[int, int, int] | None:
        img = self.current_rgb()
        if img is None or not self._inside(x, y):
            return None
        px = np.asarray(img[int(y), int(x)])
        if px.dtype != np.uint8:
            px = np.clip(np.rint(px * 255), 0, 255)
        return int(px[0]), int(px[1]), int(px[2])

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if not self.has_image:
            return super().mousePressEvent(event)
        b = event.button()
        if b == Qt.MouseButton.MiddleButton or (
            b == Qt.MouseButton.LeftButton and (self.tool == Tool.PAN or self._space)
        ):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if b != Qt.MouseButton.LeftButton:
            if b == Qt.MouseButton.RightButton and self._live_points is not None:
                self._live_points = None  # right click while painting: abandon the stroke
                self.strokes_item.set_strokes(self.strokes)
                self.stroke_aborted.emit()
            return
        x, y = self._image_pos(event)
        alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
        if self.tool == Tool.EYEDROPPER or (alt and self.tool in (Tool.BRUSH, Tool.ERASER)):
            c = self.pick_color(x, y)
            if c is not None:
                self.color_picked.emit(c)
            return
        if not self._inside(x, y):
            return
        self.pressed_at.emit(x, y)
        if self.tool == Tool.BRUSH:
            self._live_points = [(x, y)]
            s = self._stroke(self._live_points)
            self.strokes_item.set_strokes(self.strokes, live=s)
            self.stroke_preview.emit(s)
        elif self.tool == Tool.ERASER:
            self._erasing = set(strokes_hit(self.strokes, (x, y), self.brush_radius))
            self.strokes_item.set_strokes(self.strokes, doomed=self._erasing)
            self.erase_preview.emit(sorted(self._erasing))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self._hover = True
        x, y = self._image_pos(event)
        self._place_cursor(QPointF(x, y))
        if self._inside(x, y):
            self.hovered.emit(x, y)
        else:
            self.hovered.emit(-1.0, -1.0)
        if self._pan_from is not None:
            d = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(d.y()))
            return
        if self._live_points is not None:
            x, y = self._clamped(x, y)
            lx, ly = self._live_points[-1]
            if math.hypot(x - lx, y - ly) >= max(0.75, self.brush_radius * 0.25):
                self._live_points.append((x, y))
                s = self._stroke(self._live_points)
                self.strokes_item.set_strokes(self.strokes, live=s)
                self.stroke_preview.emit(s)
        elif self._erasing is not None:
            new = set(strokes_hit(self.strokes, (x, y), self.brush_radius)) - self._erasing
            if new:
                self._erasing |= new
                self.strokes_item.set_strokes(self.strokes, doomed=self._erasing)
                self.erase_preview.emit(sorted(self._erasing))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self._update_cursor()
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self._live_points is not None:
            s = self._stroke(self._live_points)
            self._live_points = None
            self.strokes_item.set_strokes(self.strokes)
            self.stroke_finished.emit(s)
        elif self._erasing is not None:
            hits = sorted(self._erasing)
            self._erasing = None
            self.strokes_item.set_strokes(self.strokes)
            if hits:
                self.erase_finished.emit(hits)
            else:
                self.erase_preview.emit([])

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        """Space held over the canvas means "pan", even when the keyboard focus is in a side
        panel (where Space would press a button or type into a field instead)."""
        t = event.type()
        if t in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and isinstance(event, QKeyEvent) \
                and event.key() == Qt.Key.Key_Space and isinstance(obj, QWidget) and obj.window() is self.window():
            if t == QEvent.Type.KeyPress and (self._hover or self.hasFocus()) and self.has_image:
                if not event.isAutoRepeat() and not self._space:
                    self._space = True
                    self._update_cursor()
                return True
            if t == QEvent.Type.KeyRelease and self._space:
                if not event.isAutoRepeat():
                    self._space = False
                    self._update_cursor()
                return True
        return False

    def leaveEvent(self, event) -> None:  # noqa: N802
        self._hover = False
        self.cursor_item.setVisible(False)
        self.hovered.emit(-1.0, -1.0)
        super().leaveEvent(event)

    def enterEvent(self, event) -> None:  # noqa: N802
        self._hover = True
        self._update_cursor()
        super().enterEvent(event)

    # --- keys ----------------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == SHOW_ORIGINAL_KEY and not event.isAutoRepeat():
            self.set_show_original(True)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == SHOW_ORIGINAL_KEY and not event.isAutoRepeat():
            self.set_show_original(False)
            return
        super().keyReleaseEvent(event)

    def set_busy(self, on: bool, text: str = "") -> None:
        """Say that strokes are not ready yet (the first stroke will wait for it)."""
        self.busy_text = text if on else ""
        self.viewport().update()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        if self.has_image and not self.busy_text:
            return
        painter.save()
        painter.resetTransform()
        f = painter.font()
        if not self.has_image:
            painter.setPen(self.palette().color(self.palette().ColorRole.PlaceholderText))
            f.setPointSizeF(f.pointSizeF() * 1.3)
            painter.setFont(f)
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
        else:
            painter.setFont(f)
            fm = painter.fontMetrics()
            w, h = fm.horizontalAdvance(self.busy_text) + 28, fm.height() + 12
            box = QRectF((self.viewport().width() - w) / 2, 12, w, h)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 170))
            painter.drawRoundedRect(box, h / 2, h / 2)
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, self.busy_text)
        painter.restore()


class EmptyState(QWidget):
    """What the canvas offers before any photo: the sample photos and "Open photo…"."""

    open_requested = Signal()
    sample_requested = Signal(object)  # Path

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("emptyState")
        title = QLabel("Colour a black-and-white photo")
        title.setObjectName("emptyTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text = QLabel("Open one of yours — or drop it here — or start with a historical photo:")
        text.setObjectName("hint")
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.open_btn = QPushButton("Open photo…")
        self.open_btn.setObjectName("primary")
        self.open_btn.setToolTip("Open a photo or a divcolor project (Ctrl+O)")
        self.open_btn.clicked.connect(self.open_requested.emit)
        grid = QGridLayout()
        grid.setSpacing(12)
        self.grid = grid
        self._columns = 0
        self.sample_buttons: list[QToolButton] = []
        for i, (name, path) in enumerate(sample_photos()):
            b = QToolButton()
            b.setObjectName("sampleButton")
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            b.setText(name)
            b.setToolTip(f"Open the sample photo {path.name}")
            pm = QPixmap(str(path))
            if not pm.isNull():
                b.setIcon(pm.scaled(QSize(150, 150), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
                b.setIconSize(QSize(150, 150))
            b.setProperty("path", str(path))
            b.clicked.connect(lambda _=False, p=path: self.sample_requested.emit(p))
            self.sample_buttons.append(b)
        self._reflow(len(self.sample_buttons))
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        lay.addWidget(title)
        lay.addWidget(text)
        lay.addSpacing(8)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addLayout(grid)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addSpacing(12)
        brow = QHBoxLayout()
        brow.addStretch(1)
        brow.addWidget(self.open_btn)
        brow.addStretch(1)
        lay.addLayout(brow)
        lay.addStretch(2)
        # The window must fit small screens (1280x720 at 150 % scaling): the photos wrap onto
        # more rows when the canvas is narrow instead of widening the whole window.
        self.setMinimumSize(240, 240)

    def _reflow(self, columns: int) -> None:
        columns = max(1, min(columns, len(self.sample_buttons) or 1))
        if columns == self._columns:
            return
        self._columns = columns
        for b in self.sample_buttons:
            self.grid.removeWidget(b)
        for i, b in enumerate(self.sample_buttons):
            self.grid.addWidget(b, i // columns, i % columns)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        each = max((b.sizeHint().width() for b in self.sample_buttons), default=1) + self.grid.spacing()
        self._reflow(max(1, (self.width() - 24) // each))


class CanvasPanel(QWidget):
    """The view plus its compare bar: a before/after split slider and the zoom readout.

    Before a photo is open it shows :class:`EmptyState` instead of the view.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = CanvasView(self)
        self.empty = EmptyState(self)
        self.split = QSlider(Qt.Orientation.Horizontal)
        self.split.setRange(0, 100)
        self.split.setValue(0)
        self.split.setToolTip(
            "Before/after: left of the handle is the grey original (before), right of it the result (after).\n"
            "Hold \\ to see the whole original."
        )
        self.split.valueChanged.connect(lambda v: self.view.set_split(v / 100))
        self.zoom_label = QLabel("")
        self.zoom_label.setObjectName("hint")
        self.zoom_label.setMinimumWidth(56)
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.view.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self.bar = QWidget()
        bar = QHBoxLayout(self.bar)
        bar.setContentsMargins(8, 2, 8, 4)
        before, after = QLabel("Before"), QLabel("After")
        before.setObjectName("hint")
        after.setObjectName("hint")
        bar.addWidget(before)
        bar.addWidget(self.split, 1)
        bar.addWidget(after)
        bar.addSpacing(12)
        bar.addWidget(self.zoom_label)
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.view)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(self.stack, 1)
        lay.addWidget(self.bar)
        self.show_empty(True)

    def show_empty(self, on: bool) -> None:
        self.stack.setCurrentWidget(self.empty if on else self.view)
        self.bar.setVisible(not on)
