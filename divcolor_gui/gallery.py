"""The sample gallery: diverse colorizations as thumbnails, one group per method.

Groups are created from whatever methods the engine reports (titles from
``engine.colorizer.METHOD_LABELS``), so a new method appears here with no code change. The
panel only displays and asks: the window runs the sampling job and feeds finished samples in
with :meth:`GalleryPanel.add_samples`. A click on a thumbnail picks that sample as the base;
with the eyedropper (or Alt+click) it picks the colour under the mouse from the full-size sample.
"""

from __future__ import annotations

import random

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QMouseEvent, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import qtawesome as qta

from engine.colorizer import METHOD_LABELS, Colorization

from .document import SampleRef
from .session import MethodPlan, Sample

THUMB = 150  # longer side of a thumbnail, in pixels
MORE_TIP = "Add more samples of this seed's set (Ctrl+M)"
LOCK_TIP = ("Lock and resample: new samples that keep your {n} stroke{s} and vary the rest (Ctrl+M). "
            "They replace the gallery; the canvas keeps your strokes.")
MAX_SEED = 2**31 - 1

__all__ = ["GalleryPanel", "MethodGroup", "Sample", "THUMB", "Thumbnail"]


class Thumbnail(QFrame):
    """A clickable preview that reports where it was clicked (for the eyedropper)."""

    clicked = Signal(object, float, float, bool)  # Sample, fx, fy in [0, 1], alt held

    def __init__(self, sample: Sample, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("thumbnail")
        self.sample = sample
        self.pixmap = QPixmap.fromImage(sample.thumb)
        self.setProperty("selected", False)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip(
            f"{METHOD_LABELS.get(sample.ref.method, sample.ref.method)} {sample.ref.label()}\n"
            f"model {sample.ref.model}\nClick: use as base · Alt+click: pick colour"
        )
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setFixedSize(self._size())

    def _size(self) -> QSize:
        return tile_size(self.pixmap.width(), self.pixmap.height())

    def set_selected(self, on: bool) -> None:
        self.setProperty("selected", on)
        self.style().unpolish(self)
        self.style().polish(self)
        self.update()

    def _image_rect(self) -> QRectF:
        return QRectF(self.rect()).adjusted(3, 3, -3, -3)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        super().paintEvent(event)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(self._image_rect(), self.pixmap, QRectF(self.pixmap.rect()))
        r = self._image_rect()
        tag = f"{self.sample.ref.index + 1}"
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(Qt.GlobalColor.black)
        p.setOpacity(0.55)
        box = QRectF(r.left() + 4, r.bottom() - 20, 10 + 7 * len(tag), 16)
        p.drawRoundedRect(box, 3, 3)
        p.setOpacity(1)
        p.setPen(Qt.GlobalColor.white)
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, tag)
        if self.sample.ref.locked:  # drawn to agree with the strokes (lock and resample)
            lock = QRectF(r.right() - 22, r.bottom() - 20, 18, 16)
            p.setPen(Qt.PenStyle.NoPen)
            p.setOpacity(0.55)
            p.drawRoundedRect(lock, 3, 3)
            p.setOpacity(1)
            qta.icon("mdi6.lock", color="white").paint(p, lock.adjusted(2, 1, -2, -1).toRect())
        p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton:
            return
        r = self._image_rect()
        pos: QPointF = event.position()
        fx = min(1.0, max(0.0, (pos.x() - r.left()) / max(r.width(), 1)))
        fy = min(1.0, max(0.0, (pos.y() - r.top()) / max(r.height(), 1)))
        alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
        self.clicked.emit(self.sample, fx, fy, alt)


def tile_size(w: int, h: int) -> QSize:
    """A tile for a picture of w x h: THUMB on its longer side, plus the 3 px frame."""
    s = THUMB / max(w, h, 1)
    return QSize(max(1, round(w * s)) + 6, max(1, round(h * s)) + 6)


LANDSCAPE = tile_size(3, 2)  # before the photo's shape is known


class PendingTile(QLabel):
    """Where a sample will appear, at its size (or, after a failure, why it did not)."""

    def __init__(self, text: str = "…", parent: QWidget | None = None, size: QSize = LANDSCAPE) -> None:
        super().__init__(text, parent)
        self.setObjectName("pendingTile")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setFixedSize(size)

    def fail(self, text: str) -> None:
        self.setObjectName("failedTile")
        self.setText(text)
        self.setToolTip(text)
        self.style().unpolish(self)
        self.style().polish(self)


class MethodGroup(QWidget):
    """A titled grid of one method's thumbnails; columns follow the panel's width.

    Tiles for samples still being made stand in until each sample arrives; a method that
    failed shows its error in its tiles; a method that cannot run for the chosen model says why.
    """

    def __init__(self, method: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.method = method
        self.title = QLabel(METHOD_LABELS.get(method, method))
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)  # "G-CRF · 2 samples, 4 coming" wraps in a narrow panel, never cut off
        self.note = QLabel()
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.grid = QGridLayout()
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 6)
        lay.addWidget(self.title)
        lay.addWidget(self.note)
        lay.addLayout(self.grid)
        self.thumbs: list[Thumbnail] = []
        self.pending: list[PendingTile] = []
        self.unavailable = False
        self._columns = 2
        self._avail = 2 * (THUMB + 10)  # the panel's width for tiles, in pixels
        self.tile = LANDSCAPE  # the size of this batch's tiles: the photo's shape, known from the start

    def add(self, thumb: Thumbnail) -> None:
        if self.pending:  # the sample takes its tile's place and size: nothing moves
            tile = self.pending.pop(0)
            self.grid.removeWidget(tile)
            tile.hide()
            tile.deleteLater()
            thumb.setFixedSize(tile.size())
        self.thumbs.append(thumb)
        self._relayout()

    def expect(self, n: int, tile: QSize | None = None) -> None:
        """n more samples are on their way: show a tile for each, at their size."""
        self.unavailable = False
        self.note.setVisible(False)
        if tile is not None:
            self.tile = tile
        self.pending.extend(PendingTile(size=self.tile) for _ in range(n))
        self._relayout()

    def fail(self, text: str) -> None:
        """The method failed: its waiting tiles show why."""
        if not self.pending:
            self.pending.append(PendingTile(size=self.tile))
        for t in self.pending:
            t.fail(text)
        self._relayout()

    def set_unavailable(self, reason: str) -> None:
        self.unavailable = True
        self.note.setText(reason)
        self.note.setVisible(True)
        self.title.setText(f"{METHOD_LABELS.get(self.method, self.method)}  ·  unavailable")
        self.title.setToolTip(reason)

    def set_width(self, avail: int) -> None:
        """Columns follow the panel's width: as many tiles (at their own width) as fit in a row."""
        self._avail = avail
        if self._fit_columns() != self._columns:
            self._relayout()

    def _fit_columns(self) -> int:
        tiles: list[QWidget] = [*self.thumbs, *self.pending]
        w = max((t.width() for t in tiles), default=THUMB + 6)
        gap = self.grid.spacing()
        return max(1, (self._avail + gap) // (w + gap))

    def _relayout(self) -> None:
        self._columns = self._fit_columns()
        tiles: list[QWidget] = [*self.thumbs, *self.pending]
        for t in tiles:
            self.grid.removeWidget(t)
        for i, t in enumerate(tiles):
            self.grid.addWidget(t, i // self._columns, i % self._columns)
            if self.isVisible() and not t.isVisible():
                t.show()  # now, not on the next turn of the event loop: no blank frame where a tile was
        if not self.unavailable:
            n = len(self.thumbs)
            coming = len(self.pending) if not any(p.objectName() == "failedTile" for p in self.pending) else 0
            locked = sum(1 for t in self.thumbs if t.sample.ref.locked)  # More, locked adds to the gallery
            lock = "locked " if locked == n and n else ""
            some = f", {locked} locked" if 0 < locked < n else ""
            # "2 of 6 samples" while they come: about as long as "6 samples", so the title (and the
            # grid under it) keeps its height as the batch fills in
            count = f"{n} of {n + coming} {lock}samples" if coming else f"{n} {lock}sample{'s' if n != 1 else ''}"
            self.title.setText(f"{METHOD_LABELS.get(self.method, self.method)}  ·  {count}{some}")
            self.title.setToolTip("Locked samples keep your strokes (lock and resample)" if locked else "")


class GalleryPanel(QWidget):
    """Seed, temperature and model controls; progress with Cancel; the grouped thumbnails."""

    generate_requested = Signal(bool)  # append ("more samples")?
    cancel_requested = Signal()
    sample_clicked = Signal(object)  # Sample
    color_picked = Signal(tuple)
    load_model_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.eyedropper = False
        self._locking = 0  # strokes on the photo: More samples locks them
        self.groups: dict[str, MethodGroup] = {}
        self.selected: Sample | None = None
        self._want: SampleRef | None = None  # ref of the base, to highlight when it arrives

        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Which trained models colour the photo")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(10)
        self.model_combo.addItem("Looking for models…", None)  # until the listing (a worker) answers
        self.model_combo.setEnabled(False)
        self.count = QSpinBox()
        self.count.setRange(1, 32)
        self.count.setValue(6)
        self.count.setToolTip("Colorizations per batch")
        self.seed = QSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed.setToolTip("Same seed, same colorizations")
        self.dice = QToolButton()
        self.dice.setToolTip("Random seed")
        self.dice.clicked.connect(lambda: self.seed.setValue(random.randint(0, 99_999)))
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 3.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setValue(1.0)
        self.temperature.setToolTip(
            "Lower: safer, more typical colours · higher: more varied.\n"
            "1.0 is each model's own setting (PIC: samples differ as much as they miss the photo)."
        )

        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setToolTip("Replace the gallery with a fresh batch (F5)")
        self.generate_btn.clicked.connect(lambda: self.generate_requested.emit(False))
        self.more_btn = QPushButton("More samples")
        self.more_btn.setToolTip(MORE_TIP)
        self.more_btn.clicked.connect(lambda: self.generate_requested.emit(True))

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress_text = QLabel()  # what is being made: wraps in a narrow panel, never cut off
        self.progress_text.setObjectName("hint")
        self.progress_text.setWordWrap(True)
        # two lines' room from the start, so a message that wraps does not push the grid down
        self.progress_text.setMinimumHeight(2 * self.progress_text.fontMetrics().lineSpacing())
        self.progress_text.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop generating (Esc)")
        self.cancel_btn.clicked.connect(self.cancel_requested.emit)
        self.progress_row = QWidget()
        pv = QVBoxLayout(self.progress_row)
        pv.setContentsMargins(0, 0, 0, 0)
        pv.setSpacing(2)
        pr = QHBoxLayout()
        pr.addWidget(self.progress, 1)
        pr.addWidget(self.cancel_btn)
        pv.addLayout(pr)
        pv.addWidget(self.progress_text)
        self.progress_row.setVisible(False)

        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        self.banner.linkActivated.connect(lambda _: self.load_model_requested.emit())
        self.banner.setVisible(False)

        # the faces model chosen for a photo without a face (divcolor_gui.faces_note)
        self.faces_note = QLabel()
        self.faces_note.setObjectName("facesNote")
        self.faces_note.setWordWrap(True)
        self.faces_note.setTextFormat(Qt.TextFormat.RichText)
        self.faces_note.linkActivated.connect(lambda _: self.choose_family("general"))
        self.faces_note.setVisible(False)

        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(4, 0, 4, 4)
        self.body_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(self.body)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.viewport().installEventFilter(self)

        for box in (self.seed, self.temperature):  # Enter in the box: a new batch with its value
            box.lineEdit().returnPressed.connect(self._enter_pressed)

        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", self.model_combo)
        form.addRow(self.faces_note)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.dice)
        form.addRow("Seed", seed_row)
        form.addRow("Temperature", self.temperature)
        form.addRow("Samples", self.count)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_btn)
        buttons.addWidget(self.more_btn)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress_row)
        lay.addWidget(self.banner)
        lay.addWidget(self.scroll, 1)
        self.set_can_generate(False)
        self.refresh_icons()

    def _enter_pressed(self) -> None:
        if self.generate_btn.isEnabled():
            self.generate_requested.emit(False)

    def refresh_icons(self) -> None:
        self.dice.setIcon(qta.icon("mdi6.dice-multiple"))
        self.generate_btn.setIcon(qta.icon("mdi6.refresh"))
        self.more_btn.setIcon(qta.icon("mdi6.lock-outline" if self._locking else "mdi6.plus-box-multiple"))
        self.cancel_btn.setIcon(qta.icon("mdi6.close-circle-outline"))

    # --- controls --------------------------------------------------------------------------------
    def set_model_choices(self, choices: list[tuple[str, tuple[str, str | None]]], current: tuple[str, str | None] | None = None) -> None:
        """``choices``: (label, (family, checkpoint path or None)). Keeps the current pick if it exists."""
        keep = current or self.model_choice()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, data in choices:
            self.model_combo.addItem(label, data)
        if not choices:
            self.model_combo.addItem("No model found", None)
        idx = next((i for i, (_, d) in enumerate(choices) if d == keep), 0)
        self.model_combo.setCurrentIndex(idx)
        self.model_combo.setEnabled(bool(choices))
        self.model_combo.blockSignals(False)

    def set_faces_note(self, text: str) -> None:
        """Say ``text`` under the Model box, with a link to the general model; "" hides it."""
        general = any(self.model_combo.itemData(i) and self.model_combo.itemData(i)[0] == "general"
                      for i in range(self.model_combo.count()))
        link = ' <a href="general">Use it</a>' if general else ""
        self.faces_note.setText(f"{text}{link}" if text else "")
        self.faces_note.setVisible(bool(text))

    def choose_family(self, family: str) -> None:
        """Pick the family's shipped model in the Model box (as the user would)."""
        for i in range(self.model_combo.count()):
            data = self.model_combo.itemData(i)
            if data and tuple(data) == (family, None):
                self.model_combo.setCurrentIndex(i)
                return

    def model_choice(self) -> tuple[str, str | None] | None:
        data = self.model_combo.currentData()
        return tuple(data) if data else None  # type: ignore[return-value]

    def set_locking(self, strokes: int) -> None:
        """With strokes on the photo, More samples locks them and resamples the rest: say so."""
        self.more_btn.setText("More, locked" if strokes else "More samples")
        self.more_btn.setIcon(qta.icon("mdi6.lock-outline" if strokes else "mdi6.plus-box-multiple"))
        self._locking = strokes
        self.more_btn.setToolTip(LOCK_TIP.format(n=strokes, s="s" if strokes != 1 else "") if strokes else MORE_TIP)

    def set_can_generate(self, on: bool) -> None:
        self.generate_btn.setEnabled(on)
        self.more_btn.setEnabled(on and bool(self.samples()))

    def set_busy(self, busy: bool) -> None:
        self.progress_row.setVisible(busy)
        if busy:
            self.progress.setValue(0)
            self.progress.setFormat("%p%")
            self.progress_text.setText("Starting…")

    def set_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(1000 * min(1.0, max(0.0, fraction))))
        self.progress_text.setText(message or "Working")

    def show_message(self, html: str | None) -> None:
        """A banner above the thumbnails (no model, cancelled, failed); None hides it."""
        self.banner.setVisible(bool(html))
        self.banner.setText(html or "")

    # --- content ---------------------------------------------------------------------------------
    def clear(self) -> None:
        for g in self.groups.values():
            g.setParent(None)
            g.deleteLater()
        self.groups.clear()
        self.selected = None
        self.more_btn.setEnabled(False)

    def samples(self) -> list[Sample]:
        return [t.sample for g in self.groups.values() for t in g.thumbs]

    def _group(self, method: str) -> MethodGroup:
        group = self.groups.get(method)
        if group is None:
            group = MethodGroup(method, self.body)
            self.groups[method] = group
            self.body_layout.insertWidget(self.body_layout.count() - 1, group)
            group.set_width(self._tiles_width())
        return group

    def begin_batch(self, plans: list[MethodPlan], n: int, photo_size: tuple[int, int] | None = None) -> None:
        """A batch started: a waiting tile per coming sample, at the photo's shape so that the
        grid does not move as samples arrive, and the reason for each method the chosen model
        cannot run."""
        tile = tile_size(*photo_size) if photo_size else None
        for p in plans:
            g = self._group(p.method)
            if p.available:
                g.expect(n, tile)
            else:
                g.set_unavailable(p.reason)

    def fail_method(self, method: str, text: str) -> None:
        self._group(method).fail(text)

    def add_samples(self, method: str, samples: list[Sample]) -> None:
        group = self._group(method)
        for s in samples:
            t = Thumbnail(s)
            t.clicked.connect(self._on_thumb_clicked)
            if self._want is not None and s.ref == self._want:
                t.set_selected(True)
                self.selected = s
            group.add(t)
        self.more_btn.setEnabled(self.generate_btn.isEnabled())

    def select(self, colorization: Colorization | None, ref: SampleRef | None = None) -> None:
        """Highlight the thumbnail of the current base (after a pick, undo, redo or a reopened
        project, whose regenerated sample is a different object with the same reference)."""
        self._want = ref if colorization is not None else None
        self.selected = None
        for g in self.groups.values():
            for t in g.thumbs:
                on = colorization is not None and (
                    t.sample.colorization is colorization or (ref is not None and t.sample.ref == ref)
                )
                t.set_selected(on)
                if on:
                    self.selected = t.sample

    def find(self, ref: SampleRef) -> Sample | None:
        return next((s for s in self.samples() if s.ref == ref), None)

    def _on_thumb_clicked(self, sample: Sample, fx: float, fy: float, alt: bool) -> None:
        if self.eyedropper or alt:
            rgb = sample.colorization.rgb
            h, w = rgb.shape[:2]
            px = np.asarray(rgb[min(h - 1, int(fy * h)), min(w - 1, int(fx * w))], np.float32)
            self.color_picked.emit(tuple(int(v) for v in np.clip(np.rint(px * 255), 0, 255)))
        else:
            self.sample_clicked.emit(sample)

    def _tiles_width(self) -> int:
        m = self.body_layout.contentsMargins()
        return self.scroll.viewport().width() - m.left() - m.right()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.scroll.viewport() and event.type() == QEvent.Type.Resize:
            # the viewport, not the panel: a scroll bar that comes or goes changes it alone
            for g in self.groups.values():
                g.set_width(self._tiles_width())
        return super().eventFilter(obj, event)
