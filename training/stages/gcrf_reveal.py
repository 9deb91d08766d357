"""Revealed-point hints on one image, as Table 3 gives them (N random 7x7 squares revealing
their mean true ab), and their solves: the paper-form G-CRF stroke system, the app's stroke
field, Levin et al.'s propagation. Shared by the export's tuning (``gcrf_export``) and the
evaluation (``gcrf_eval``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from engine import metrics as M
from engine.color import AB_SCALE, guided_upsample_ab, recombine
from engine.gcrf_solver import GCRFSolver, normal_matrix
from engine.models.gcrf import GCRF, GCRFField

from .. import data as D


class ImageHintSolver:
    """Solves the stroke (δ) system of :class:`engine.models.gcrf.GCRFField` for one image
    under many hint sets and a few weak-unary weights, as evaluation and tuning need.

    (I-Ŝ)ᵀ(I-Ŝ) is formed once per image (~1.2 s at 64x64 on one core); each weak-unary weight
    gets one Cholesky inverse (~0.6 s); each hint set is then a Woodbury solve (milliseconds,
    no rebasing), whatever its hint weight. Conjugate gradients would need ~100 memory-bound
    iterations (~3 s) per solve at these weak weights. Call with one weak-unary weight at a
    time: only the last inverse is kept.
    """

    def __init__(self, S_hat: torch.Tensor, stroke_weight: float):
        self.S_hat, self.stroke_weight = S_hat.float(), float(stroke_weight)
        self.KtK = normal_matrix(self.S_hat)
        self._solver: GCRFSolver | None = None
        self._base_weight = 0.0

    def __call__(
        self, coverage: torch.Tensor, target: torch.Tensor, base: torch.Tensor, base_weight: float,
        stroke_weight: float | None = None,
    ) -> torch.Tensor:
        """coverage (S, S), target and base (2, S, S) in ab/128 -> (2, S, S); ``stroke_weight``
        overrides the hint weight given at construction."""
        if self._solver is None or self._base_weight != float(base_weight):
            self._solver = None  # free the previous inverse first
            p = self.KtK.shape[0]
            self._solver = GCRFSolver(None, float(base_weight), max_rank=p, KtK=self.KtK)
            self._base_weight = float(base_weight)
        sw = self.stroke_weight if stroke_weight is None else float(stroke_weight)
        field = GCRFField(self.S_hat, float(base_weight), sw, solver=self._solver)
        return field.propagate(coverage, target, base)


def random_squares(rng: np.random.Generator, n: int, size: int, patch: int) -> list[tuple[int, int]]:
    """n top-left corners of patch x patch squares inside a size x size image."""
    hi = max(1, size - patch + 1)
    return [(int(rng.integers(0, hi)), int(rng.integers(0, hi))) for _ in range(n)]


def reveal_squares(ab: torch.Tensor, corners: list[tuple[int, int]], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Table 3's hints: each square reveals its *mean* ground-truth ab on all its pixels.

    ab (2, H, W) -> coverage (H, W) in {0, 1}, target ab (2, H, W) (later squares win).
    """
    cov = torch.zeros(ab.shape[-2:])
    tgt = torch.zeros_like(ab)
    for y, x in corners:
        sl = (slice(y, y + patch), slice(x, x + patch))
        cov[sl] = 1.0
        tgt[(slice(None), *sl)] = ab[(slice(None), *sl)].mean(dim=(1, 2), keepdim=True)
    return cov, tgt


def to_grid(cov: torch.Tensor, tgt: torch.Tensor, grid: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted coverage and mean hint colour on a coarser grid (as strokes.rasterize);
    ``grid`` is a side or (h, w)."""
    if tuple(cov.shape[-2:]) == ((grid, grid) if isinstance(grid, int) else tuple(grid)):
        return cov, tgt
    c = F.adaptive_avg_pool2d(cov[None, None], grid)[0, 0]
    t = F.adaptive_avg_pool2d((tgt * cov)[None], grid)[0] / c.clamp(min=1e-8)
    return c, torch.where(c > 0, t, torch.zeros_like(t))


class LevinBaseline:
    """Levin et al. (2004) on one test image, through ``engine.propagate.LevinField``.

    Points only (no base colorization): the pure propagation that Table 3 compares against.
    The field is built once per image and solves each hint set on its own grid (the full
    128x128 image with the default limits), upsampled guided by L when the grid is coarser.
    """

    def __init__(self, L: torch.Tensor, ab: torch.Tensor):
        from engine.io import photo_from_array
        from engine.propagate import LevinField

        rgb = recombine(L, ab[None] * AB_SCALE)[0].permute(1, 2, 0).numpy()
        self.L = L
        self.field = LevinField(photo_from_array(np.ascontiguousarray(rgb)))

    def __call__(self, coverage: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w, h = self.field.grid
        c, t = to_grid(coverage, target, (h, w))
        U = torch.from_numpy(self.field.solve(c.double().numpy(), t.double().numpy(), None)).float()
        if (h, w) != tuple(self.L.shape):
            U = guided_upsample_ab(U[None] * AB_SCALE, self.L)[0] / AB_SCALE
        return U


def evenly_spaced(lab: D.LabSet, limit: int) -> D.LabSet:
    """``limit`` evenly spaced images: shards are in source order (grouped by class), so a
    limited run still covers every class."""
    if not limit or limit >= len(lab):
        return lab
    idx = torch.linspace(0, len(lab) - 1, limit).round().long()
    return D.LabSet(lab.L[idx], lab.ab[idx])


class RevealImage:
    """One Table 3 image: its hint sets (nested: the first N of the drawn squares, so curves
    are monotone in information), its Ŝ and automatic colorization at the model grid, and
    PSNR of a grid-sized ab field guided-upsampled to the image."""

    def __init__(self, model: GCRF, L: torch.Tensor, ab: torch.Tensor, points: tuple[int, ...], patch: int, seed: int):
        size, g = L.shape[-1], model.cfg.size
        self.L, self.ab, self.g = L, ab, g
        self.model, self.Lg = model, F.interpolate(L, size=(g, g), mode="area")
        self.truth = recombine(L[0, 0], ab[None] * AB_SCALE)
        corners = random_squares(np.random.default_rng(seed), max(points), size, patch)
        self.hints = [reveal_squares(ab, corners[:n], patch) for n in points]

    @functools.cached_property
    def solve(self) -> "ImageHintSolver":
        """The paper-form hint solver at the model grid (models without a hint branch)."""
        return ImageHintSolver(self.model.similarity(self.Lg)[0], self.model.cfg.beta_test)

    @functools.cached_property
    def field(self):
        """The app's stroke field on this image (grey photo at its size): what the canvas solves."""
        from engine.io import photo_from_array
        from engine.propagate import GCRFStrokeField

        grey = (self.L[0, 0] / 100.0).clamp(0, 1).numpy()  # any grey image with this L: only L is read
        photo = photo_from_array(np.ascontiguousarray(grey))
        photo.L = self.L[0, 0].numpy().astype(np.float32)  # exact L, not a round trip through sRGB
        return GCRFStrokeField(self.model, photo)

    def app_fields(self, base: torch.Tensor | None, local: bool = True) -> list[torch.Tensor]:
        """The app's result for every hint set at full size (ab/128, (2, H, W)): the solve-grid
        edit guided-upsampled onto the base (upsampled from the model grid), as ``render_edit``.
        ``local``: see :meth:`engine.propagate.GCRFStrokeField.solve_hints`."""
        full_base = self.upsample(base) if base is not None else torch.zeros_like(self.ab)
        out = []
        for c, t in self.hints:
            x, gb = self.field.solve_hints(*to_grid(c, t, self.g), base, local=local)
            out.append(full_base + self.upsample(x.cpu() - gb.cpu()))
        return out

    def branch_fields(self, base: torch.Tensor | None) -> list[torch.Tensor]:
        """The hint branch's unary alone (no solve), at the model grid: what the solve adds."""
        feats, grey = self.model.grey_features(self.Lg)
        out = []
        for c, t in self.hints:
            from engine.types import Hints

            out.append(self.model.hint_unary(feats, grey, None if base is None else base[None], Hints(*to_grid(c, t, self.g)))[0])
        return out

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """ab/128 (2, s, s) -> (2, H, W), guided by the image's L."""
        if x.shape[-1] == self.L.shape[-1]:
            return x
        return guided_upsample_ab(x[None].float() * AB_SCALE, self.L[0, 0])[0] / AB_SCALE

    @functools.cached_property
    def base(self) -> torch.Tensor:
        """The automatic colorization (top MDN mode) at the grid; only the "over its colorization"
        curve needs it, so hints-only tuning never decodes it."""
        return self.model.colorize(self.Lg, 1, mode="means")[0].float()

    @property
    def grey(self) -> torch.Tensor:
        return torch.zeros(2, self.g, self.g)

    def rgb(self, x: torch.Tensor) -> torch.Tensor:
        """ab (2, s, s) at the grid or the image size -> RGB (1, 3, H, W) with the image's L."""
        full = x[None] * AB_SCALE if x.shape[-1] == self.L.shape[-1] else guided_upsample_ab(x[None] * AB_SCALE, self.L[0, 0])
        return recombine(self.L[0, 0], full)

    def gcrf_fields(self, base: torch.Tensor, base_weight: float, hint_weight: float | None = None) -> list[torch.Tensor]:
        return [self.solve(*to_grid(c, t, self.g), base, base_weight, hint_weight) for c, t in self.hints]

    def levin_fields(self) -> list[torch.Tensor]:
        levin = LevinBaseline(self.L[0, 0], self.ab)
        return [levin(c, t) for c, t in self.hints]

    def curve(self, fields: list[torch.Tensor]) -> list[float]:
        return [M.psnr(self.rgb(x), self.truth) for x in fields]

    def gcrf_curve(self, base: torch.Tensor, base_weight: float, hint_weight: float | None = None) -> list[float]:
        return self.curve(self.gcrf_fields(base, base_weight, hint_weight))

    def hint_overlay(self, k: int) -> torch.Tensor:
        """The grey image with hint set k's squares painted in their colours, (3, H, W)."""
        cov, tgt = self.hints[k]
        return recombine(self.L[0, 0], (tgt * cov)[None] * AB_SCALE)[0]
