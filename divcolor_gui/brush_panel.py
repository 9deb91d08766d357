"""Brush controls: colour (picker, eyedropper, suggestions, palette, recent), radius, tools.

Three rows of one-click colours, because the quickest way to fix a region is usually to borrow
a plausible colour: *suggestions* are the colours the gallery's samples put at the spot last
clicked, each already at that pixel's lightness (what a stroke of it will really look like
there); the *palette* holds the dominant colours of the picked sample; *recent* the colours
last painted with.
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
MAX_RECENT = 6
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
        # The stroke preview: a stroke keeps each pixel's own lightness, so the picked colour
        # looks darker on a dark coat and paler on a white shirt. This swatch shows it at the
        # lightness of the pixel under the cursor (engine.strokes.displayed_color).
        self.here_swatch = QLabel()
        self.here_swatch.setObjectName("hereSwatch")
        self.here_swatch.setFixedSize(28, 28)
        self.here_swatch.setFrameShape(QLabel.Shape.Box)  # an empty frame until the cursor is on the photo
        self.here_label = QLabel("On the photo: hover it")
        self.here_label.setObjectName("hint")
        self.here_label.setWordWrap(True)
        tip = "What a stroke of this colour looks like on the pixel under the cursor (it keeps that pixel's lightness)"
        self.here_swatch.setToolTip(tip)
        self.here_label.setToolTip(tip)
        self.here_color: tuple[int, int, int] | None = None
        crow = QHBoxLayout()
        crow.addWidget(self.color_btn)
        crow.addWidget(self.color_label, 1)
        hrow = QHBoxLayout()
        hrow.addWidget(self.here_swatch)
        hrow.addWidget(self.here_label, 1)

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

        self.suggest_title = QLabel("Suggestions: click the photo")
        self.suggest_title.setObjectName("hint")
        self.suggest_title.setWordWrap(True)
        self.suggest_title.setToolTip("The colours the gallery's samples give the spot you last clicked, at that pixel's lightness")
        self.suggest_grid = QGridLayout()
        self.suggest_grid.setSpacing(3)
        self.suggest_grid.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.suggestions: list[QToolButton] = []
        self.recent_title = QLabel("Recent colours")
        self.recent_title.setObjectName("hint")
        self.recent_title.setWordWrap(True)
        self.recent_grid = QGridLayout()
        self.recent_grid.setSpacing(3)
        self.recent_grid.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.recent_buttons: list[QToolButton] = []
        self.recent: list[tuple[int, int, int]] = []
        self.palette_title = QLabel("Palette of the picked sample")
        self.palette_title.setObjectName("hint")
        self.palette_title.setWordWrap(True)
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
        lay.addLayout(hrow)
        lay.addWidget(QLabel("Radius"))
        lay.addLayout(rrow)
        lay.addWidget(self.suggest_title)
        lay.addLayout(self.suggest_grid)
        lay.addWidget(self.palette_title)
        lay.addLayout(self.palette_grid)
        lay.addWidget(self.recent_title)
        lay.addLayout(self.recent_grid)
        lay.addLayout(srow)
        lay.addStretch(1)
        self.hints = QLabel(HINTS)
        self.hints.setObjectName("hint")
        self.hints.setWordWrap(True)
        self.hints.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.hints)
        self.suggestion_colors: list[tuple[int, int, int]] = []
        self.set_palette([])
        self.set_recent([])

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

    def set_preview(self, rgb: tuple[int, int, int] | None, lightness: float | None = None) -> None:
        """The brush colour as it will look on the hovered pixel (None: not over the photo)."""
        self.here_color = tuple(int(v) for v in rgb) if rgb is not None else None  # type: ignore[assignment]
        if self.here_color is None:
            self.here_swatch.setPixmap(QPixmap())
            self.here_swatch.setStyleSheet("")
            self.here_label.setText("On the photo: hover it")
            return
        pm = QPixmap(28, 28)
        pm.fill(QColor(*self.here_color))
        self.here_swatch.setPixmap(pm)
        self.here_label.setText(f"On this pixel (L {lightness:.0f})" if lightness is not None else "On this pixel")

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
    def _fill(self, grid: QGridLayout, buttons: list[QToolButton], colors: list[tuple[int, int, int]]) -> list[QToolButton]:
        """Replace a row of swatches: one button per colour, a click makes it the brush colour."""
        for b in buttons:
            grid.removeWidget(b)
            b.deleteLater()
        out = []
        for i, c in enumerate(colors):
            b = QToolButton()
            b.setObjectName("swatch")
            b.setIcon(color_icon(c, 24))
            b.setToolTip("Use #%02X%02X%02X" % tuple(c))
            b.setProperty("rgb", "#%02X%02X%02X" % tuple(c))
            b.clicked.connect(lambda _=False, c=c: self.set_color(c))
            grid.addWidget(b, i // SWATCHES_PER_ROW, i % SWATCHES_PER_ROW)
            out.append(b)
        return out

    def set_suggestions(self, colors: list[tuple[int, int, int]]) -> None:
        self.suggestions = self._fill(self.suggest_grid, self.suggestions, colors[: 2 * SWATCHES_PER_ROW])
        self.suggestion_colors = list(colors[: 2 * SWATCHES_PER_ROW])
        self.suggest_title.setText("Samples' colours here (at its lightness)" if colors else "Suggestions: click the photo")

    def set_recent(self, colors: list[tuple[int, int, int]]) -> None:
        self.recent = [tuple(int(v) for v in c) for c in colors][:MAX_RECENT]  # type: ignore[misc]
        self.recent_buttons = self._fill(self.recent_grid, self.recent_buttons, self.recent)
        self.recent_title.setVisible(bool(self.recent))

    def add_recent(self, rgb: tuple[int, int, int]) -> None:
        c = tuple(int(v) for v in rgb)
        self.set_recent([c] + [r for r in self.recent if r != c])  # type: ignore[list-item]

    def set_palette(self, colors: list[tuple[int, int, int]]) -> None:
        self.swatches = self._fill(self.palette_grid, self.swatches, colors)
        self.palette_title.setText(
            "Palette of the picked sample" if colors else "Palette: pick a sample to see its colours"
        )

    def set_stroke_count(self, n: int) -> None:
        self.count_label.setText("No strokes" if n == 0 else f"{n} stroke{'s' if n != 1 else ''}")
