"""The engine's shared vocabulary: results, cancel tokens, progress callbacks, hints, and the
interfaces that models and stroke fields implement.

A leaf: it imports nothing of the engine but ``engine.errors`` (itself a leaf), so any engine
module can import it without creating an import circle (colorizer, models and propagation all speak these types; none of them has to
import another to name a Colorization or a StrokeField). Never imports Qt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch

from .errors import Cancelled

__all__ = [
    "Cancelled",
    "CancelToken",
    "Colorization",
    "Generators",
    "Hints",
    "ProgressFn",
    "SamplingModel",
    "StrokeField",
]

ProgressFn = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)``; called from the worker thread doing the job."""

Generators = Optional[Union[torch.Generator, Sequence[torch.Generator]]]
"""What a model's ``sample`` takes as randomness: one generator for the whole batch, or one per
sample (so sample k is the same whatever n is, and "more samples" can continue a set)."""


class CancelToken:
    """Shared between the caller (who cancels) and the engine (which checks between steps)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("Cancelled.")


@dataclass
class Colorization:
    """One full-resolution result and what is needed to reproduce or refine it."""

    rgb: np.ndarray  # (H, W, 3) float32 sRGB in [0, 1], luminance = the photo's
    ab_low: torch.Tensor  # (2, h, w) ab / 128 at the method's working size (S x S for the models)
    method: str
    model: str  # model name (file stem)
    index: int  # position in the seed's set: 0 is the most likely colorization, then draws
    seed: int
    temperature: float = 1.0


@dataclass
class Hints:
    """What strokes say, on a grid: ``coverage`` (h, w) in [0, 1] (how much of each cell the user
    painted) and ``ab`` (2, h, w) in ab/128 units (the colour there). Models take hints on the
    grid of the L they are given and resample them to their own output grid."""

    coverage: torch.Tensor
    ab: torch.Tensor

    def resized(self, size: tuple[int, int]) -> "Hints":
        """The hints on an (h, w) grid: coverage area-averaged, ab averaged by coverage (0 where
        nothing is covered: so is the numerator). Also for a batch: coverage (B, H, W), ab (B, 2, H, W)."""
        h, w = size
        if tuple(self.coverage.shape[-2:]) == (h, w):
            return self
        dt = self.ab.dtype if self.ab.is_floating_point() else torch.float32
        H, W = self.coverage.shape[-2:]
        c = self.coverage.to(dt).reshape(-1, 1, H, W)
        ab = self.ab.to(dt).reshape(-1, 2, H, W)
        c2 = torch.nn.functional.interpolate(c, size=(h, w), mode="area")
        ab2 = torch.nn.functional.interpolate(ab * c, size=(h, w), mode="area") / c2.clamp(min=1e-8)
        lead = self.coverage.shape[:-2]
        return Hints(c2.reshape(*lead, h, w), ab2.reshape(*lead, 2, h, w))

    @property
    def any(self) -> bool:
        return bool((self.coverage > 0).any())


@runtime_checkable
class SamplingModel(Protocol):
    """What every colorization method offers the facade (VAE-MDN, G-CRF, PIC).

    ``sample`` turns one grey image L (1, 1, S, S) in [0, 100] into n colorizations, ab/128
    (n, 2, s, s) at the method's output grid. ``generator``: one for the batch or one per sample.
    ``include_mode``: sample 0 is the most likely colorization (for mixture models the top
    mixture mean), the rest are draws; without it every sample is a draw (a continued set).
    ``hints`` (on L's grid) lock what the user decided: samples agree with them there.
    ``temperature`` widens (> 1) or narrows (< 1) the draws.
    """

    METHOD: ClassVar[str]
    LABEL: ClassVar[str]
    cfg: Any
    meta: dict[str, Any]

    def sample(
        self,
        L: torch.Tensor,
        n: int,
        *,
        generator: Generators = None,
        temperature: float = 1.0,
        include_mode: bool = True,
        hints: Hints | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> torch.Tensor: ...

    @property
    def input_size(self) -> int:
        """Side of the square L the model works on."""
        ...


@runtime_checkable
class StrokeField(Protocol):
    """Turns stroke sets on one photo into colorizations; created by ``Colorizer.field``.

    Implementations (Levin's propagation, the G-CRF) cache per-photo work (affinities, matrices,
    factorisations) so repeated calls with a growing stroke set stay interactive.
    """

    method: str
    photo: Any  # engine.io.Photo

    def propagate(
        self,
        strokes: Sequence[Any],
        base: Colorization | None = None,
        cancel: CancelToken | None = None,
        progress: ProgressFn | None = None,
    ) -> Colorization:
        """The photo coloured by ``strokes`` over ``base`` (None: strokes alone decide, over grey)."""
        ...

    def attention(self, x: float, y: float) -> np.ndarray | None:
        """Which pixels image point (x, y) draws its colour from: an (H, W) map in [0, 1] at
        full resolution, or None for methods that have no such notion."""
        ...
