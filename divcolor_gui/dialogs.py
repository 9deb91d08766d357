"""Dialogs that fit the screen they open on.

At 150 % scaling a 1920x1080 screen is 1280x720 logical pixels: a dialog sized by its content
alone (the keyboard shortcuts were 830 px tall) puts its buttons off the screen. Long content
scrolls inside the dialog instead; :func:`fit_to_screen` sizes and places any dialog within the
available area of its screen.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

SCREEN_SHARE = 0.9  # of the available screen a dialog takes at most


def available_area(widget: QWidget) -> QRect:
    parent = widget.parentWidget()
    screen = (parent.screen() if parent is not None else None) or widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else QRect(0, 0, 1280, 720)


def fit_to_screen(dialog: QWidget) -> None:
    """Shrink ``dialog`` to the screen's available area (at most SCREEN_SHARE of it) and move it
    inside, centred on its parent where there is room."""
    avail = available_area(dialog)
    hint = dialog.sizeHint().expandedTo(dialog.size()) if not dialog.isVisible() else dialog.size()
    w = min(hint.width(), int(avail.width() * SCREEN_SHARE))
    h = min(hint.height(), int(avail.height() * SCREEN_SHARE))
    dialog.resize(max(w, 1), max(h, 1))
    parent = dialog.parentWidget()
    centre = parent.frameGeometry().center() if parent is not None and parent.isVisible() else avail.center()
    x = min(max(centre.x() - w // 2, avail.left()), avail.right() - w + 1)
    y = min(max(centre.y() - h // 2, avail.top()), avail.bottom() - h + 1)
    dialog.move(x, y)


class ScrollingTextDialog(QDialog):
    """Rich text that scrolls inside the dialog when it is taller than the screen, with Close."""

    def __init__(self, title: str, html: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.text = QLabel(html)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setContentsMargins(12, 8, 12, 8)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.text)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(buttons)
        self.buttons = buttons

    def sizeHint(self):  # noqa: N802
        """The whole text without scrolling (fit_to_screen caps it at the screen)."""
        hint = self.text.sizeHint()
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        m = self.layout().contentsMargins()
        return QSize(hint.width() + bar + m.left() + m.right(),
                     hint.height() + self.buttons.sizeHint().height() + self.layout().spacing() + m.top() + m.bottom())

    def show_fitted(self) -> None:
        fit_to_screen(self)
        self.show()
        self.raise_()
