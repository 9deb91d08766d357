"""Brush controls: colour (picker, eyedropper, palette of the picked sample), radius, tools.

The palette holds the dominant colours of the sample the user picked, because the quickest way
to fix one region is usually to borrow a plausible colour the model already used elsewhere.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QColorDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

MAX_RADIUS = 200
SWATCHES_PER_ROW = 6
HINTS = "<table cellspacing=0 cellpadding=1>" + "".join(
    f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>"
    for k, v in (
        ('Drag', 'paint a colour hint'),
        ('Click', 'point hint'),
        ('Alt+click', 'pick a colour'),
        ('Wheel', 'zoom'),
        ('Space+drag', 'pan'),
        ('Hold \\', 'grey original'),
        ('[  ]', 'brush size'),
        ('Ctrl+Z', 'undo'),
    )
) + "</table>"


def color_icon(rgb: tuple[int, int, int], size: int = 22) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    return QIcon(pm)


class BrushPanel(QWidget):
    """Current colour and radius; emits changes, and shows tool buttons bound to window actions."""

    color_changed = Signal(tuple)
    radius_changed = Signal(float)

    def __init__(self, tool_actions: list[QAction], clear_action: QAction, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._color: tuple[int, int, int] = (192, 96, 58)

        tools = QHBoxLayout()
        tools.setSpacing(2)
        for a in tool_actions:
            b = QToolButton()
            b.setDefaultAction(a)
            b.setAutoRaise(True)
            tools.addWidget(b)
        tools.addStretch(1)

        self.color_btn = QToolButton()
        self.color_btn.setToolTip("Brush colour — click to choose")
        self.color_btn.setIconSize(self.color_btn.iconSize() * 1.6)
        self.color_btn.clicked.connect(self.choose_color)
        self.color_label = QLabel()
        self.color_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        crow = QHBoxLayout()
        crow.addWidget(self.color_btn)
        crow.addWidget(self.color_label, 1)

        self.radius_slider = QSlider(Qt.Orientation.Horizontal)
        self.radius_slider.setRange(1, MAX_RADIUS)
        self.radius_spin = QSpinBox()
        self.radius_spin.setRange(1, MAX_RADIUS)
        self.radius_spin.setSuffix(" px")
        self.radius_spin.setToolTip("Brush radius in photo pixels ([ and ] change it)")
        self.radius_slider.setToolTip(self.radius_spin.toolTip())
        self.radius_slider.valueChanged.connect(self.radius_spin.setValue)
        self.radius_spin.valueChanged.connect(self.radius_slider.setValue)
        self.radius_spin.valueChanged.connect(lambda v: self.radius_changed.emit(float(v)))
        rrow = QHBoxLayout()
        rrow.addWidget(self.radius_slider, 1)
        rrow.addWidget(self.radius_spin)

        self.palette_title = QLabel("Palette of the picked sample")
        self.palette_title.setObjectName("hint")
        self.palette_grid = QGridLayout()
        self.palette_grid.setSpacing(3)
        self.palette_grid.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.swatches: list[QToolButton] = []

        self.clear_btn = QToolButton()
        self.clear_btn.setDefaultAction(clear_action)
        self.clear_btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.count_label = QLabel("No strokes")
        self.count_label.setObjectName("hint")
        srow = QHBoxLayout()
        srow.addWidget(self.count_label, 1)
        srow.addWidget(self.clear_btn)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.addLayout(tools)
        lay.addLayout(crow)
        lay.addWidget(QLabel("Radius"))
        lay.addLayout(rrow)
        lay.addWidget(self.palette_title)
        lay.addLayout(self.palette_grid)
        lay.addLayout(srow)
        lay.addStretch(1)
        self.hints = QLabel(HINTS)
        self.hints.setObjectName("hint")
        self.hints.setWordWrap(True)
        self.hints.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.hints)
        self.set_palette([])

    # --- colour ----------------------------------------------------------------------------------
    @property
    def color(self) -> tuple[int, int, int]:
        return self._color

    def set_color(self, rgb: tuple[int, int, int]) -> None:
        rgb = tuple(int(v) for v in rgb)  # type: ignore[assignment]
        self._color = rgb
        self.color_btn.setIcon(color_icon(rgb, 28))
        self.color_label.setText("#%02X%02X%02X" % rgb)
        self.color_changed.emit(rgb)

    def choose_color(self) -> None:
        c = QColorDialog.getColor(QColor(*self._color), self, "Brush colour")
        if c.isValid():
            self.set_color((c.red(), c.green(), c.blue()))

    # --- radius ----------------------------------------------------------------------------------
    @property
    def radius(self) -> float:
        return float(self.radius_spin.value())

    def set_radius(self, r: float) -> None:
        self.radius_spin.setValue(int(round(min(MAX_RADIUS, max(1, r)))))

    # --- palette ---------------------------------------------------------------------------------
    def set_palette(self, colors: list[tuple[int, int, int]]) -> None:
        for b in self.swatches:
            self.palette_grid.removeWidget(b)
            b.deleteLater()
        self.swatches = []
        for i, c in enumerate(colors):
            b = QToolButton()
            b.setObjectName("swatch")
            b.setIcon(color_icon(c, 24))
            b.setIconSize(b.iconSize().expandedTo(b.iconSize()))
            b.setToolTip("Use #%02X%02X%02X" % c)
            b.clicked.connect(lambda _=False, c=c: self.set_color(c))
            self.palette_grid.addWidget(b, i // SWATCHES_PER_ROW, i % SWATCHES_PER_ROW)
            self.swatches.append(b)
        self.palette_title.setText(
            "Palette of the picked sample" if colors else "Palette: pick a sample to see its colours"
        )

    def set_stroke_count(self, n: int) -> None:
        self.count_label.setText("No strokes" if n == 0 else f"{n} stroke{'s' if n != 1 else ''}")
