"""The editing state of one photo, free of widgets (napari-style model layer).

A :class:`Document` holds the photo, the colorization the user picked as a base, the strokes
and the result currently shown. Widgets observe its signals; undo commands mutate it. The
project file (a small JSON) is how this state survives a restart: the photo path, which sample
was picked (enough to regenerate it bit for bit: method, model, seed, batch size, index,
temperature) and the strokes in the engine's JSON form.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from engine.colorizer import Colorization
from engine.errors import ConfigError, DivcolorError
from engine.files import atomic_write
from engine.io import Photo
from engine.strokes import Stroke, parse_strokes, strokes_to_json
from engine.schema import check_project, read_json_file

from .imaging import full_size, grey_display, strokes_to_full

PROJECT_SUFFIX = ".divcolor"
PROJECT_FORMAT = "divcolor-project"
PROJECT_VERSION = 1


class ProjectError(DivcolorError):
    """A project file is unreadable or not a divcolor project."""


@dataclass(frozen=True)
class SampleRef:
    """Everything needed to regenerate one gallery sample exactly (same seed, same result).

    ``locked``: the strokes the sample was drawn to agree with (lock and resample); empty for
    a free sample. They are part of its identity: the same seed and index give another sample
    under other strokes.
    """

    method: str
    model: str
    family: str
    checkpoint: str | None
    seed: int
    n: int
    index: int
    temperature: float
    locked: tuple[Stroke, ...] = ()

    @classmethod
    def of(cls, c: Colorization, family: str, checkpoint: str | None, n: int,
           locked: tuple[Stroke, ...] = ()) -> "SampleRef":
        return cls(c.method, c.model, family, checkpoint, int(c.seed), int(n), int(c.index), float(c.temperature),
                   tuple(locked))

    def label(self) -> str:
        lock = f" · {len(self.locked)} stroke{'s' if len(self.locked) != 1 else ''} locked" if self.locked else ""
        return f"#{self.index + 1} · seed {self.seed} · T {self.temperature:g}{lock}"

    def to_json(self) -> dict[str, Any]:
        """The project file's form: the strokes (if any) in the engine's strokes JSON."""
        d = asdict(replace(self, locked=()))
        d.pop("locked")
        if self.locked:
            d["locked"] = strokes_to_json(self.locked)
        return d


class Document(QObject):
    """One photo being coloured. Signals tell views what changed; nothing here draws."""

    photo_changed = Signal()
    strokes_changed = Signal()
    base_changed = Signal()
    result_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.photo: Photo | None = None
        self.grey: np.ndarray | None = None  # what the models see, for display and compare
        self.base: Colorization | None = None
        self.base_ref: SampleRef | None = None
        self.strokes: list[Stroke] = []
        self.result: np.ndarray | None = None  # (H, W, 3) float, what the canvas shows
        self.result_image: QImage | None = None  # the same pixels as a QImage, when a worker made one
        self.result_for: int = -1  # revision of (base, strokes) the result belongs to
        self.revision = 0  # bumps on every change of base or strokes
        self.project_path: Path | None = None

    # --- photo ---------------------------------------------------------------------------------
    def set_photo(self, photo: Photo | None) -> None:
        self.photo = photo
        self.grey = grey_display(photo) if photo is not None else None
        self.base = None
        self.base_ref = None
        self.strokes = []
        self.result = None
        self.result_image = None
        self.project_path = None
        self.revision += 1
        self.result_for = self.revision
        self.photo_changed.emit()

    # --- edits (called by undo commands) ------------------------------------------------------
    def set_strokes(self, strokes: list[Stroke]) -> None:
        self.strokes = list(strokes)
        self.revision += 1
        self.strokes_changed.emit()
        self._maybe_plain_result()

    def set_base(self, base: Colorization | None, ref: SampleRef | None) -> None:
        self.base = base
        self.base_ref = ref
        self.revision += 1
        self.base_changed.emit()
        self._maybe_plain_result()

    def _maybe_plain_result(self) -> None:
        """Without strokes the result is just the base: no propagation job needed."""
        if not self.strokes:
            self.set_result(self.base.rgb if self.base is not None else None, self.revision)

    def set_result(self, rgb: np.ndarray | None, revision: int, image: QImage | None = None) -> None:
        self.result = rgb
        self.result_image = image
        self.result_for = revision
        self.result_changed.emit()

    @property
    def result_is_current(self) -> bool:
        return self.result_for == self.revision

    def displayed(self) -> np.ndarray | None:
        """The image the canvas shows: the result, else the greyed photo."""
        if self.result is not None:
            return self.result
        return self.grey

    def exportable(self) -> np.ndarray | None:
        """What export writes: the coloured result; None while there is nothing coloured."""
        return self.result


# --- project files ------------------------------------------------------------------------------


@dataclass
class Project:
    photo: Path
    sample: SampleRef | None
    strokes_json: dict[str, Any]  # parsed once the photo is loaded, against its size
    seed: int
    temperature: float
    samples: int
    family: str
    checkpoint: str | None
    batches: list[tuple[int, int, float, int]] = field(default_factory=list)  # (seed, n, temperature, first) per gallery batch
    batch_locks: list[dict[str, Any] | None] = field(default_factory=list)  # per batch: the strokes JSON it was locked to
    sample_lock: dict[str, Any] | None = None  # the picked sample's locked strokes (JSON), parsed against the photo


def project_dict(
    doc: Document, project_path: Path, seed: int, temperature: float, samples: int, family: str, checkpoint: str | None
) -> dict[str, Any]:
    """The JSON written to a project file. Paths are stored absolute and relative to the file,
    so a project moved together with its photo still opens."""
    assert doc.photo is not None and doc.photo.path is not None
    photo = Path(doc.photo.path).resolve()
    try:
        rel = os.path.relpath(photo, project_path.resolve().parent)
    except ValueError:  # other drive on Windows
        rel = None
    return {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "photo": str(photo),
        "photo_relative": rel,
        "sample": doc.base_ref.to_json() if doc.base_ref is not None else None,
        "gallery": {"seed": seed, "temperature": temperature, "samples": samples, "family": family, "checkpoint": checkpoint},
        "strokes": strokes_to_json(doc.strokes),
    }


def write_project(path: Path, data: dict[str, Any], photo: Photo | None = None) -> None:
    """Write ``data`` atomically. Given the app's ``photo``, strokes drawn on a big photo's
    preview are stored in the full-resolution photo's coordinates (files always are)."""
    if photo is not None:
        data = project_strokes_to_full(data, photo)
    atomic_write(path, json.dumps(data, indent=2))


def project_strokes_to_full(data: dict[str, Any], photo: Photo) -> dict[str, Any]:
    """``data`` with every strokes list (the strokes, the picked sample's and each batch's
    locked strokes) in full-resolution coordinates; ``data`` itself when no scaling is needed."""
    if full_size(photo) == photo.size:
        return data

    def scaled(j: Any) -> Any:
        return strokes_to_json(strokes_to_full(parse_strokes(j), photo)) if j else j

    out = json.loads(json.dumps(data))  # a deep copy of plain JSON
    out["strokes"] = scaled(out.get("strokes"))
    if isinstance(out.get("sample"), dict) and out["sample"].get("locked"):
        out["sample"]["locked"] = scaled(out["sample"]["locked"])
    for b in (out.get("gallery") or {}).get("batches") or []:
        if isinstance(b, dict) and b.get("locked"):
            b["locked"] = scaled(b["locked"])
    return out


def read_project(path: Path) -> Project:
    """Parse and check a project file; ProjectError says what is wrong in words."""
    try:  # one engine-side schema: types, ranges, strokes, JSON size and depth (engine.schema)
        data = check_project(read_json_file(path), PROJECT_VERSION, parse_strokes=parse_strokes)
    except ConfigError as e:
        raise ProjectError(f"“{Path(path).name}” cannot be opened: {e}.") from e
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise ProjectError(f"“{Path(path).name}” is not a divcolor project file.")
    if int(data.get("version", 0)) > PROJECT_VERSION:
        raise ProjectError(
            f"“{Path(path).name}” was saved by a newer divcolor (project version {data.get('version')}). Update divcolor to open it."
        )
    base = Path(path).resolve().parent
    candidates = [base / data["photo_relative"]] if data.get("photo_relative") else []
    candidates.append(Path(data.get("photo", "")))
    photo = next((c for c in candidates if c.is_file()), None)
    if photo is None:
        raise ProjectError(
            f"The photo of “{Path(path).name}” is missing (was {data.get('photo')}). Put it back there, or next to the project file."
        )
    sample, sample_lock = None, None
    if data.get("sample"):
        fields = dict(data["sample"])
        sample_lock = _lock_json(fields.pop("locked", None), path)
        try:
            sample = SampleRef(**fields)
        except TypeError as e:
            raise ProjectError(f"“{Path(path).name}” has a malformed sample entry ({e}).") from e
    g = data.get("gallery") or {}
    batches, locks = [], []
    for b in g.get("batches") or []:
        try:
            batches.append((int(b["seed"]), int(b["n"]), float(b["temperature"]), int(b.get("first", 0))))
        except (KeyError, TypeError, ValueError) as e:
            raise ProjectError(f"“{Path(path).name}” has a malformed gallery batch ({e}).") from e
        locks.append(_lock_json(b.get("locked"), path))
    strokes = data.get("strokes") or {"version": 1, "strokes": []}
    if not isinstance(strokes, dict):
        raise ProjectError(f"“{Path(path).name}” has a malformed strokes entry.")
    return Project(
        photo=photo,
        sample=sample,
        strokes_json=strokes,
        seed=int(g.get("seed", 0)),
        temperature=float(g.get("temperature", 1.0)),
        samples=int(g.get("samples", 6)),
        family=str(g.get("family", "general")),
        checkpoint=g.get("checkpoint"),
        batches=batches,
        batch_locks=locks,
        sample_lock=sample_lock,
    )


def _lock_json(value: Any, path: Path) -> dict[str, Any] | None:
    """A batch's or sample's locked strokes: the strokes JSON, checked now (its points are
    checked against the photo once it is loaded)."""
    if not value:
        return None
    try:
        if not parse_strokes(value):
            return None
    except DivcolorError as e:
        raise ProjectError(f"“{Path(path).name}” has malformed locked strokes ({e}).") from e
    return value


def batch_json(seed: int, n: int, temperature: float, first: int, locked: tuple[Stroke, ...] = ()) -> dict[str, Any]:
    """One gallery batch as the project file stores it."""
    d: dict[str, Any] = {"seed": seed, "n": n, "temperature": temperature, "first": first}
    if locked:
        d["locked"] = strokes_to_json(locked)
    return d
