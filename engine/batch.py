"""A batch: which photos it takes (files, and folders' photos) and what each one's results are
named, so that no result replaces another or an input photo.

Shared by ``divcolor colorize`` (:mod:`engine.cli`) and the app's Colorize Folder; knows
nothing of models or pixels beyond asking Pillow whether a file is a photo.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

__all__ = ["IMAGE_SUFFIXES", "expand_inputs", "file_key", "folder_photos", "output_paths", "passed_over_note", "unique_photos"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}


def folder_photos(folder: Path) -> tuple[list[Path], list[str]]:
    """A folder's photos (sorted, not recursive) and the names of its other files.

    A photo is any file Pillow recognises by its content (a GIF, a JPEG named ``.heic``), as
    the same file given alone is colorized; files named like photos are taken without a look, so
    a damaged one is reported when it is loaded, not passed over. Hidden files (``.DS_Store``,
    part files) and subfolders are passed over and not named.
    """
    from .io import looks_like_photo  # Pillow: only when a folder is given

    photos: list[Path] = []
    others: list[str] = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        if f.suffix.lower() in IMAGE_SUFFIXES or looks_like_photo(f):
            photos.append(f)
        else:
            others.append(f.name)
    return photos, others


def passed_over_note(folder: Path, others: Sequence[str]) -> str:
    """One line naming the files of ``folder`` that are not photos (the first five)."""
    shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    many = len(others) > 1
    return (f"{folder}: passed over {len(others)} file{'s' if many else ''} that {'are' if many else 'is'} "
            f"not a photo divcolor can read: {shown}")


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files as given; folders become their photos (:func:`folder_photos`), with a note for each
    folder that held other files, naming them."""
    out: list[Path] = []
    notes: list[str] = []
    for s in inputs:
        p = Path(s).expanduser()
        if not p.is_dir():
            out.append(p)
            continue
        photos, others = folder_photos(p)
        out.extend(photos)
        if others:
            notes.append(passed_over_note(p, others))
    return out, notes


def file_key(p: Path) -> str:
    """The file a path names, for telling two names of one file apart. A link that loops has
    no file (Python 3.11's resolve() raises RuntimeError for it): its own absolute path stands in,
    and loading it says what is wrong."""
    try:
        return os.path.normcase(str(p.resolve()))
    except (OSError, RuntimeError):
        return os.path.normcase(os.path.abspath(p))


def unique_photos(files: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """Each photo once, even if named twice (a file and its folder)."""
    seen: set[str] = set()
    out, notes = [], []
    for f in files:
        key = file_key(f)
        if key in seen:
            notes.append(f"{f} was given more than once; colorizing it once")
            continue
        seen.add(key)
        out.append(f)
    return out, notes


def output_paths(
    files: Sequence[Path], outdir: Path, method: str, count: int, suffix: str = ".png"
) -> tuple[list[list[Path]], list[str]]:
    """The result paths of each photo, never two alike, and notes on the renamed ones.

    Normally ``<stem>_<method>_<k><suffix>``. Photos that share a stem (``photo.jpg`` and
    ``photo.png``, or the same name in two folders) get their extension and if need be a number
    in the name (``photo_jpg_…``, ``photo_png_…``, ``photo_png-2_…``), so one result never
    replaces another. Names are compared without case, as macOS and Windows do.
    """
    def fold(s: str) -> str:
        return s.casefold()

    stems = Counter(fold(f.stem) for f in files)
    bases = [f"{f.stem}_{f.suffix.lstrip('.').lower() or 'file'}" if stems[fold(f.stem)] > 1 else f.stem for f in files]
    taken: set[str] = set()
    result: list[list[Path]] = []
    notes: list[str] = []
    for f, base in zip(files, bases):
        candidate, i = base, 1
        while True:
            names = [f"{candidate}_{method}_{k}{suffix}" for k in range(count)]
            if not any(fold(n) in taken for n in names):
                break
            i += 1
            candidate = f"{base}-{i}"
        taken.update(fold(n) for n in names)
        result.append([outdir / n for n in names])
        if candidate != f.stem:
            notes.append(f"{f} shares its name with another photo: its results are named {candidate}_{method}_<k>{suffix}")
    return result, notes
