"""The sample photos shipped with the app (resources/samples), for a first run with nothing to open.

Their provenance and why each is public domain are in ``resources/samples/PROVENANCE.md``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIXES = {".jpg", ".jpeg", ".png"}
TITLES = {
    "samurai_1860s": "Samurai portrait, 1860s",
    "london_street_1900": "London street, c. 1900",
    "london_market_1890s": "London market, 1890s",
    "killarney_1910": "Killarney road, c. 1910",
}


def samples_dir() -> Path:
    """The installed ``divcolor_resources`` package's samples, or the source tree's."""
    try:
        return Path(str(resources.files("divcolor_resources") / "samples"))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "resources" / "samples"


def sample_photos(folder: Path | None = None) -> list[tuple[str, Path]]:
    """(title, path) of each sample photo, portraits first, in a stable order."""
    d = folder or samples_dir()
    if not d.is_dir():
        return []
    files = sorted((f for f in d.iterdir() if f.suffix.lower() in SUFFIXES), key=lambda f: (f.stem not in TITLES, list(TITLES).index(f.stem) if f.stem in TITLES else 0, f.name))
    return [(TITLES.get(f.stem, f.stem.replace("_", " ").capitalize()), f) for f in files]
