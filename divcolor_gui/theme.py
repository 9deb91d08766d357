"""Dark and light themes: one palette per theme, Fusion style, and icons recoloured to match.

The palette is defined in code (not a .qss file) so the installed package needs no data files,
and every widget — including the ones Qt draws itself — follows the same colours. A short
stylesheet adds only what a palette cannot express (gallery cards, section titles).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("dark", "light")


@dataclass(frozen=True)
class Theme:
    name: str
    window: str
    base: str
    alt_base: str
    text: str
    muted: str
    button: str
    highlight: str
    highlight_text: str
    border: str
    canvas: str  # the area around the photo
    icon: str
    icon_disabled: str


DARK = Theme(
    name="dark",
    window="#25272b",
    base="#1c1e21",
    alt_base="#2b2e33",
    text="#e6e6e6",
    muted="#9aa0a8",
    button="#2f3237",
    highlight="#3d8bfd",
    highlight_text="#ffffff",
    border="#3a3e44",
    canvas="#151618",
    icon="#d8dadd",
    icon_disabled="#5c6068",
)

LIGHT = Theme(
    name="light",
    window="#f0f1f3",
    base="#ffffff",
    alt_base="#f6f7f9",
    text="#1d1f23",
    muted="#5f6670",
    button="#e7e9ec",
    highlight="#1f6fe5",
    highlight_text="#ffffff",
    border="#c9cdd3",
    canvas="#d9dce0",
    icon="#33373d",
    icon_disabled="#a8adb4",
)


def theme_named(name: str) -> Theme:
    return LIGHT if name == "light" else DARK


def palette_for(t: Theme) -> QPalette:
    p = QPalette()
    c = QColor
    roles = {
        QPalette.ColorRole.Window: t.window,
        QPalette.ColorRole.WindowText: t.text,
        QPalette.ColorRole.Base: t.base,
        QPalette.ColorRole.AlternateBase: t.alt_base,
        QPalette.ColorRole.ToolTipBase: t.alt_base,
        QPalette.ColorRole.ToolTipText: t.text,
        QPalette.ColorRole.PlaceholderText: t.muted,
        QPalette.ColorRole.Text: t.text,
        QPalette.ColorRole.Button: t.button,
        QPalette.ColorRole.ButtonText: t.text,
        QPalette.ColorRole.BrightText: "#ff5555",
        QPalette.ColorRole.Highlight: t.highlight,
        QPalette.ColorRole.HighlightedText: t.highlight_text,
        QPalette.ColorRole.Link: t.highlight,
        QPalette.ColorRole.Mid: t.border,
        QPalette.ColorRole.Dark: t.canvas,
        QPalette.ColorRole.Midlight: t.alt_base,
        QPalette.ColorRole.Light: t.button,
        QPalette.ColorRole.Shadow: "#000000",
    }
    for role, colour in roles.items():
        p.setColor(role, c(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, c(t.icon_disabled))
    return p


def stylesheet_for(t: Theme) -> str:
    return f"""
    QToolTip {{ color: {t.text}; background: {t.alt_base}; border: 1px solid {t.border}; padding: 4px; }}
    QDockWidget::title {{ padding: 6px 8px; background: {t.window}; }}
    QLabel#sectionTitle {{ font-weight: 600; color: {t.text}; padding: 6px 2px 2px 2px; }}
    QLabel#hint {{ color: {t.muted}; }}
    QLabel#banner {{ color: {t.text}; background: {t.alt_base}; border: 1px solid {t.border};
                     border-radius: 6px; padding: 10px; }}
    QFrame#thumbnail {{ border: 2px solid transparent; border-radius: 4px; }}
    QFrame#thumbnail:hover {{ border: 2px solid {t.muted}; }}
    QFrame#thumbnail[selected="true"] {{ border: 2px solid {t.highlight}; }}
    QToolButton#swatch {{ border: 1px solid {t.border}; border-radius: 3px; }}
    QToolButton#swatch:hover {{ border: 2px solid {t.highlight}; }}
    QGraphicsView {{ background: {t.canvas}; border: none; }}
    QLabel#pendingTile {{ color: {t.muted}; background: {t.alt_base}; border: 1px dashed {t.border}; border-radius: 4px; }}
    QLabel#failedTile {{ color: {t.text}; background: {t.alt_base}; border: 1px solid #c0504d; border-radius: 4px;
                         padding: 4px; font-size: 11px; }}
    QWidget#emptyState {{ background: {t.canvas}; }}
    QLabel#emptyTitle {{ font-size: 20px; font-weight: 600; color: {t.text}; }}
    QToolButton#sampleButton {{ border: 1px solid {t.border}; border-radius: 6px; padding: 6px; background: {t.base}; }}
    QToolButton#sampleButton:hover {{ border: 2px solid {t.highlight}; }}
    QPushButton#primary {{ background: {t.highlight}; color: {t.highlight_text}; border-radius: 4px; padding: 6px 18px; }}
    QLabel#legend {{ color: #ffffff; background: rgba(0, 0, 0, 170); border-radius: 6px; padding: 6px 8px; }}
    QStatusBar QLabel {{ color: {t.muted}; padding: 0 6px; }}
    """


def apply_theme(app: QApplication, name: str) -> Theme:
    """Switch the whole application; callers re-create their icons afterwards."""
    import qtawesome as qta  # 0.3-0.7 s: not before the startup window is on screen (app.py)

    t = theme_named(name)
    app.setStyle("Fusion")
    app.setPalette(palette_for(t))
    app.setStyleSheet(stylesheet_for(t))
    qta.reset_cache()
    qta.set_defaults(color=t.icon, color_disabled=t.icon_disabled, color_active=t.icon, color_selected=t.highlight_text)
    return t
