"""The one place the app remembers things between sessions.

A thin typed wrapper over an INI-format QSettings file in the platformdirs config folder, so
every key has one name, one type and one default, and tests can point it at a temporary file.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs
from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 10


def default_settings_path() -> Path:
    return Path(platformdirs.user_config_dir("divcolor", "divcolor")) / "divcolor.ini"


def pictures_dir() -> Path:
    """The user's Pictures folder (platformdirs), else their home: where file dialogs start."""
    p = Path(platformdirs.user_pictures_dir())
    return p if p.is_dir() else Path.home()


def is_app_folder(path: str | Path) -> bool:
    """A folder of the app's own files — the shipped samples and resources, anything installed
    in site-packages — which no file dialog should offer the user as theirs."""
    from .samples import samples_dir

    p = Path(path).resolve()
    if {"site-packages", "dist-packages"} & set(p.parts):
        return True
    app = samples_dir().resolve().parent
    return p == app or app in p.parents


def user_folder(path: str | Path | None) -> str:
    """``path`` if it is an existing folder of the user's, else ``""``."""
    if not path:
        return ""
    try:
        return str(path) if Path(path).is_dir() and not is_app_folder(path) else ""
    except OSError:
        return ""


class Settings:
    """Recent files, theme, last folder, brush and window state."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_settings_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # unwritable config folder: QSettings then keeps values for this session only
        self._q = QSettings(str(self.path), QSettings.Format.IniFormat)

    def sync(self) -> None:
        self._q.sync()

    # --- typed accessors ------------------------------------------------------------------------
    def _get(self, key: str, default, typ):
        value = self._q.value(key, default)
        if value is None:
            return default
        try:
            if typ is bool and isinstance(value, str):
                return value.lower() in ("1", "true", "yes")
            return typ(value)
        except (TypeError, ValueError):
            return default

    @property
    def recent_files(self) -> list[str]:
        value = self._q.value("recent/files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_recent(self, path: str | Path) -> list[str]:
        p = str(Path(path).resolve())
        files = [f for f in self.recent_files if f != p]
        files.insert(0, p)
        self._q.setValue("recent/files", files[:MAX_RECENT])
        return self.recent_files

    def remove_recent(self, path: str | Path) -> None:
        self._q.setValue("recent/files", [f for f in self.recent_files if f != str(path)])

    def clear_recent(self) -> None:
        self._q.setValue("recent/files", [])

    @property
    def theme(self) -> str:
        t = self._get("view/theme", "dark", str)
        return t if t in ("dark", "light") else "dark"

    @theme.setter
    def theme(self, value: str) -> None:
        self._q.setValue("view/theme", value)

    @property
    def last_dir(self) -> str:
        """The last folder the user opened or saved in; their Pictures folder before the first
        (or when that folder is gone). Never the app's own samples folder."""
        return user_folder(self._get("files/last_dir", "", str)) or str(pictures_dir())

    @last_dir.setter
    def last_dir(self, value: str | Path) -> None:
        if user_folder(value):  # opening a shipped sample does not make its folder the user's
            self._q.setValue("files/last_dir", str(value))

    @property
    def last_export_dir(self) -> str:
        """Where the last export went ("" before the first, or when it is gone): the next
        export starts there."""
        return user_folder(self._get("files/last_export_dir", "", str))

    @last_export_dir.setter
    def last_export_dir(self, value: str | Path) -> None:
        if user_folder(value):
            self._q.setValue("files/last_export_dir", str(value))

    @property
    def recent_colors(self) -> list[tuple[int, int, int]]:
        value = self._q.value("brush/recent_colors", [])
        if isinstance(value, str):
            value = [value]
        out = []
        for text in value or []:
            try:
                out.append(tuple(int(str(text)[i : i + 2], 16) for i in (1, 3, 5)))
            except ValueError:
                continue
        return out  # type: ignore[return-value]

    @recent_colors.setter
    def recent_colors(self, colors: list[tuple[int, int, int]]) -> None:
        self._q.setValue("brush/recent_colors", ["#%02x%02x%02x" % tuple(c) for c in colors])

    @property
    def brush_radius(self) -> float:
        return max(1.0, self._get("brush/radius", 8.0, float))

    @brush_radius.setter
    def brush_radius(self, value: float) -> None:
        self._q.setValue("brush/radius", float(value))

    @property
    def brush_color(self) -> tuple[int, int, int]:
        text = self._get("brush/color", "#c0603a", str)
        try:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            return (192, 96, 58)

    @brush_color.setter
    def brush_color(self, rgb: tuple[int, int, int]) -> None:
        self._q.setValue("brush/color", "#%02x%02x%02x" % tuple(rgb))

    @property
    def samples_per_batch(self) -> int:
        return min(32, max(1, self._get("gallery/samples", 6, int)))

    @samples_per_batch.setter
    def samples_per_batch(self, value: int) -> None:
        self._q.setValue("gallery/samples", int(value))

    @property
    def window_geometry(self) -> QByteArray | None:
        v = self._q.value("window/geometry")
        return v if isinstance(v, QByteArray) else None

    @window_geometry.setter
    def window_geometry(self, value: QByteArray) -> None:
        self._q.setValue("window/geometry", value)

    @property
    def window_state(self) -> QByteArray | None:
        v = self._q.value("window/state")
        return v if isinstance(v, QByteArray) else None

    @window_state.setter
    def window_state(self, value: QByteArray) -> None:
        self._q.setValue("window/state", value)
