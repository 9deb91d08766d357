"""Heat-map overlays on the canvas: the attention of the hovered pixel, and the ambiguity map.

**Attention** — which pixels the hovered pixel draws its colour from.

For a G-CRF model the engine returns row p of its pixel-affinity matrix as an (h, w) map; we
show it as a translucent heat map over the photo, following the cursor through the live
(latest-wins) lane so moving the mouse never queues work. Classical propagation (Levin) has no
such map — ``field.attention`` returns None — and then the overlay disables itself and says
why, rather than showing something made up.

**Ambiguity** — where the gallery's samples disagree (``engine.colorizer.ambiguity_map``): the
places where the models are unsure, so where a stroke would help most. It needs two samples.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QPen, QPixmap, QTransform
from PySide6.QtWidgets import QFrame, QGraphicsEllipseItem, QGraphicsItem, QGraphicsPixmapItem, QHBoxLayout, QLabel, QVBoxLayout

from .canvas import CanvasView
from .imaging import HEAT_LUT, heatmap_rgba, qimage_from_rgb, qimage_from_rgba
from .jobs import JobContext, LatestWins

UNAVAILABLE = "Attention maps need a G-CRF model. Load one with Models → Load model… (the classical propagation has none)."
NO_PHOTO = "Attention map of the pixel under the cursor (open a photo first)."
AVAILABLE = "Show which pixels the pixel under the cursor takes its colour from (A)."


LEGEND_TEXT = "Attention of the ringed pixel: it takes its colour from the bright places"
AMBIGUITY_TEXT = "Where the samples disagree: bright is where a stroke would help most"
AMBIGUITY_TIP = "Show where the gallery's samples disagree: where a stroke would help most (D)."
AMBIGUITY_NEEDS = "The ambiguity map compares the gallery's samples: generate at least two first."


class Legend(QFrame):
    """What the heat map's colours mean, in a corner of the canvas while the map is on."""

    def __init__(self, parent, text: str = LEGEND_TEXT, ends: tuple[str, str] = ("none", "most")) -> None:
        super().__init__(parent)
        self.setObjectName("legendBox")
        self.setStyleSheet("QFrame#legendBox { background: rgba(0, 0, 0, 170); border-radius: 6px; } QLabel { color: white; }")
        ramp = np.repeat(HEAT_LUT[None, :, :], 10, axis=0)
        bar = QLabel()
        bar.setPixmap(QPixmap.fromImage(qimage_from_rgb(ramp)).scaled(160, 10))
        self.text = QLabel(text)
        self.text.setWordWrap(True)
        self.text.setMaximumWidth(260)
        low, high = ends
        ends_row = QHBoxLayout()
        ends_row.setContentsMargins(0, 0, 0, 0)
        ends_row.addWidget(QLabel(low))
        ends_row.addStretch(1)
        ends_row.addWidget(QLabel(high))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(3)
        lay.addWidget(self.text)
        lay.addWidget(bar)
        lay.addLayout(ends_row)
        self.setVisible(False)
        parent.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Resize:
            self.place()
        return False

    def place(self) -> None:
        self.adjustSize()
        p = self.parentWidget()
        self.move(10, p.height() - self.height() - 10)


class AttentionOverlay(QObject):
    """Owns the heat-map layer on the canvas and keeps it in step with the cursor."""

    availability_changed = Signal(bool, str)  # available, tooltip explaining the state
    shown = Signal(int, int)  # pixel whose map is on screen (tests and status bar)

    def __init__(self, canvas: CanvasView, lane: LatestWins, field: Callable[[], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.canvas = canvas
        self.lane = lane
        self._field = field  # returns the current StrokeField (built on the lane) or None
        self.item = QGraphicsPixmapItem()
        self.item.setOpacity(0.85)
        self.item.setVisible(False)
        self.item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        canvas.add_overlay(self.item)
        # the pixel whose map is shown: a small ring that stays the same size at any zoom
        self.marker = QGraphicsEllipseItem(-6, -6, 12, 12)
        pen = QPen(QColor(255, 255, 255, 230), 2)
        pen.setCosmetic(True)
        self.marker.setPen(pen)
        self.marker.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.marker.setVisible(False)
        canvas.add_overlay(self.marker)
        self.marker.setZValue(6)
        self.legend = Legend(canvas)
        self.enabled = False
        self.available = False
        self.reason = NO_PHOTO
        self._token = 0
        canvas.hovered.connect(self.on_hover)

    def set_available(self, available: bool, reason: str | None = None) -> None:
        self.available = available
        self.reason = reason or (AVAILABLE if available else UNAVAILABLE)
        if not available:
            self._hide()
        self.availability_changed.emit(available, self.reason)

    def _hide(self) -> None:
        self.item.setVisible(False)
        self.marker.setVisible(False)
        self.legend.setVisible(False)

    def reset(self) -> None:
        """A new photo: nothing to show until its stroke field says whether it has attention."""
        self._token += 1
        self._hide()
        self.item.setPixmap(QPixmap())
        self.set_available(False, NO_PHOTO)

    def set_enabled(self, on: bool) -> None:
        self.enabled = on and self.available
        if not self.enabled:
            self.lane.discard("attention")
            self._hide()

    def on_hover(self, x: float, y: float) -> None:
        if not (self.enabled and self.available):
            return
        if x < 0 or y < 0:
            self._hide()
            return
        self.request(int(x), int(y))

    def request(self, x: int, y: int) -> None:
        field = self._field()
        if field is None:
            return
        token = self._token

        def job(ctx: JobContext):
            m = field.attention(x, y)
            if m is None:
                return None
            m = np.asarray(m, np.float32)
            return qimage_from_rgba(heatmap_rgba(m)), m.shape

        def done(result) -> None:
            if token != self._token:
                return  # a different photo by now
            if result is None:
                self.set_available(False, UNAVAILABLE)
                return
            img, (h, w) = result
            self.item.setPixmap(QPixmap.fromImage(img))
            iw, ih = self.canvas.image_size
            self.item.setTransform(QTransform.fromScale(iw / max(w, 1), ih / max(h, 1)))
            self.item.setVisible(self.enabled)
            self.marker.setPos(x + 0.5, y + 0.5)
            self.marker.setVisible(self.enabled)
            self.legend.setVisible(self.enabled)
            self.legend.place()
            self.legend.raise_()
            self.shown.emit(x, y)

        self.lane.submit("attention", job, done)


class AmbiguityOverlay(QObject):
    """The ambiguity map as a translucent heat map over the photo, with its legend.

    The window hands it maps (computed by the session on a worker) with :meth:`set_map`; it
    shows the latest while it is on. Off, or with fewer than two samples, nothing is drawn.
    """

    shown = Signal()  # a map is on screen (tests, screenshots)

    def __init__(self, canvas: CanvasView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.canvas = canvas
        self.item = QGraphicsPixmapItem()
        self.item.setOpacity(0.85)
        self.item.setVisible(False)
        self.item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        canvas.add_overlay(self.item)
        self.legend = Legend(canvas, AMBIGUITY_TEXT, ("samples agree", "disagree"))
        self.enabled = False
        self.map: np.ndarray | None = None

    def set_enabled(self, on: bool) -> None:
        self.enabled = on
        self._show()

    def reset(self) -> None:
        """A new photo or gallery: the old map no longer describes it."""
        self.map = None
        self.item.setPixmap(QPixmap())
        self._show()

    def set_map(self, m: np.ndarray) -> None:
        self.map = np.asarray(m, np.float32)
        h, w = self.map.shape
        self.item.setPixmap(QPixmap.fromImage(qimage_from_rgba(heatmap_rgba(self.map))))
        iw, ih = self.canvas.image_size
        self.item.setTransform(QTransform.fromScale(iw / max(w, 1), ih / max(h, 1)))
        self._show()

    def _show(self) -> None:
        on = self.enabled and self.map is not None
        self.item.setVisible(on)
        self.legend.setVisible(on)
        if on:
            self.legend.place()
            self.legend.raise_()
            self.shown.emit()
