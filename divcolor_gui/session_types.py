"""The values a :class:`~.session.Session` hands to its views, and which models a batch runs.

Plain data and pure rules, no state and no jobs: a gallery sample and the batch it came from, the
plan of a batch per method (run it, or why not), where the stroke field stands, and the model
choices a photo offers. The session holds these; the gallery and the window read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QImage

from engine.colorizer import METHOD_LABELS, Colorization, ModelInfo, default_model_name
from engine.strokes import Stroke

from .document import SampleRef

ModelChoice = tuple[str, "str | None"]  # (family, checkpoint path or None)
GENERAL: ModelChoice = ("general", None)
FAMILY_LABELS = {"general": "General photos", "faces": "Faces"}
FAMILY_TRAINED_ON = {"general": "general photos", "faces": "faces"}


@dataclass
class Sample:
    """One gallery entry: the full-resolution result, how to regenerate it, its thumbnail."""

    colorization: Colorization
    ref: SampleRef
    thumb: QImage


@dataclass(frozen=True)
class Batch:
    """One press of Generate or More samples: samples ``first`` .. ``first + n - 1`` of the
    set ``seed`` names — enough to make the same samples again. ``locked``: the strokes the
    samples were drawn to agree with (lock and resample), empty for free samples."""

    seed: int
    n: int
    temperature: float
    first: int = 0
    locked: tuple[Stroke, ...] = ()


@dataclass
class MethodPlan:
    """What a batch will do for one method: run it, or say why it cannot."""

    method: str
    available: bool
    reason: str = ""

    @property
    def label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)


@dataclass
class FieldState:
    """Where the stroke field of the current photo and model stands."""

    state: str = "none"  # none | preparing | ready | failed
    name: str = ""  # "G-CRF (gcrf_faces)", "Levin propagation"
    error: str = ""
    seconds: float = 0.0


def model_choices(models: list[ModelInfo]) -> list[tuple[str, ModelChoice]]:
    """(label, choice) for every model the user can pick: the shipped families, then files."""
    families = {i.family for i in models}
    out = [(FAMILY_LABELS[f], (f, None)) for f in ("general", "faces") if f in families]
    for i in models:
        if i.family not in ("general", "faces"):
            out.append((f"{METHOD_LABELS.get(i.method, i.method)}: {i.path.name}", ("general", str(i.path))))
    return out


def plan_batch(models: list[ModelInfo], choice: ModelChoice) -> list[MethodPlan]:
    """Which methods a batch runs for ``choice``, and those it cannot with the reason.

    A family choice runs each method that has a model *of that family*; a method trained
    only on another family is listed as unavailable rather than silently swapped in.
    """
    family, checkpoint = choice
    if checkpoint is not None:
        info = next((i for i in models if str(i.path) == checkpoint), None)
        return [MethodPlan(info.method if info else "?", info is not None, "" if info else "The model file is gone.")]
    names = {i.name for i in models}
    plans = []
    for method in _methods_in_order(models):
        if default_model_name(method, family) in names:
            plans.append(MethodPlan(method, True))
        else:
            others = sorted(i.family for i in models if i.method == method and i.family in FAMILY_LABELS)
            trained = " and ".join(FAMILY_TRAINED_ON[f] for f in others) or "other data"
            plans.append(MethodPlan(
                method, False,
                f"No {METHOD_LABELS.get(method, method)} model for {FAMILY_TRAINED_ON.get(family, family)}: "
                f"it was trained only on {trained}. Choose that model to use it.",
            ))
    return plans


def _methods_in_order(models: list[ModelInfo]) -> list[str]:
    order = list(METHOD_LABELS)
    found = {i.method for i in models if i.family in FAMILY_LABELS}
    return sorted(found, key=lambda m: order.index(m) if m in order else 99)
