"""Stroke propagation: from a few coloured strokes to a colorization of the whole photo.

A :class:`~engine.types.StrokeField` belongs to one photo and turns stroke sets into
colorizations, reusing whatever it can between calls (the GUI re-propagates on every stroke the
user paints). Two implement it here: :class:`LevinField` (classical, no checkpoint, the
fallback and the baseline) and :class:`GCRFStrokeField` (the G-CRF's learned affinities, with an
attention map). Both solve on a grid for the *edit* of a base colorization and hand the result
to :func:`render_edit`, the one place where a grid edit becomes full-resolution pixels.

Levin, Lischinski & Weiss 2004, "Colorization using optimization": neighbouring pixels with
similar luminance should have similar colour. Each pixel's chroma should equal the affinity-
weighted mean of its 3x3 neighbours', so with ``Lap = I - W`` (W row-normalised affinities)
the smoothness energy is ``|Lap U|^2``; strokes pin the pixels they cover.

DESIGN.md asks that "unstroked pixels keep the colorization the user picked": given a base
colorization B we smooth the *edit* ``U - B`` rather than U itself, and add a weak pull of U
toward B everywhere. Smoothing U would flatten the base's own colour detail all over the photo;
smoothing the edit leaves U = B exactly where no stroke reaches, and spreads each stroke's change
along similar luminance, fading with distance and stopping at edges.

This module never imports Qt.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from .color import AB_SCALE, guided_upsample_ab, recombine, rgb_to_lab
from .gcrf_solver import GCRFSolver, attention_row, normal_matrix, similarity
from .models.gcrf import METHOD as GCRF_METHOD, GCRF, GCRFField
from .strokes import Stroke, rasterize
from .types import CancelToken, Colorization, Hints, ProgressFn, StrokeField

if TYPE_CHECKING:
    from .io import Photo

__all__ = [
    "DEFAULT_MAX_SIDE", "GCRFStrokeField", "LevinField", "StrokeField", "base_ab", "render_edit", "solve_strokes_batch",
    "stroke_embeddings", "stroke_smoothness", "to_solve_grid",
]

DEFAULT_MAX_SIDE = 192
DEFAULT_MAX_CELLS = 160 * 160
"""Levin's solve grid: long side <= DEFAULT_MAX_SIDE and at most DEFAULT_MAX_CELLS cells. The
sparse factorisation, redone on every stroke edit, grows faster than the cell count; measured on
this project's busy 2-core CPU (factorise + solve both channels): 0.07 s at 128x85, 0.13 s at
160x107, 0.21 s at 192x128, 0.22 s at 160x160, 0.35 s at 192x192, 0.71 s at 256x256. The cell
budget keeps square photos (160x160) as fast as 3:2 ones (192x128). Detail comes back from the
full-resolution luminance in the guided upsampling."""

STROKE_WEIGHT = 1e3
"""Unary weight of a fully covered cell toward its stroke colour. The smoothness term's diagonal
is about 1, so 1e3 makes strokes practically hard constraints (within 0.1 %)."""

BASE_REACH = 0.1
"""How far a stroke's edit reaches through a uniform region before fading, as a fraction of the
solve grid's long side. It sets the weak pull toward the base colorization: the smoothness term
behaves like (3/8)²(ΔU)², so against a unary λ an edit decays over ℓ = (9/64/λ)^(1/4) cells, and
λ = (9/64)/ℓ⁴ makes the behaviour the same at every grid size. Farther reach recolours textured
regions more completely but leaks more across weak edges. Measured with one red stroke over a
sample (generated scenes: a textured disc and box on a texture, grey levels 0.08 apart; and
three bw_demo photos): at 0.25 the mean |Δab| outside the stroked object was 5.8 (inside 56)
and 50-70 % of the real photos changed by more than 5 ab units; at 0.1 it is 0.48 outside
(inside 41) and 14-25 %; 0.05 leaks less still but recolours the object only halfway."""

_LN100 = math.log(100.0)
_SIGMA_FLOOR = 2e-6  # floor on 2σ², in (L/100)^2: keeps flat regions' weights finite
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def base_ab(photo: "Photo", base: Colorization | None, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The base colorization's ab/128 at full resolution (2, H, W) and area-averaged on the
    (w, h) solve grid (2, h, w), float64; zeros for no base (grey).

    Taken from ``base.rgb`` rather than ``base.ab_low`` so that where no stroke reaches the
    result matches what the user sees, whatever resolution the base's method worked at.
    """
    W, H = photo.size
    w, h = grid
    if base is None:
        return torch.zeros(2, H, W, dtype=torch.float64), torch.zeros(2, h, w, dtype=torch.float64)
    if base.rgb.shape[:2] != (H, W):
        raise ValueError(f"the base colorization is {base.rgb.shape[1]}x{base.rgb.shape[0]}, the photo {W}x{H}")
    rgb = torch.from_numpy(np.ascontiguousarray(base.rgb, dtype=np.float32)).permute(2, 0, 1).double()
    full = rgb_to_lab(rgb)[1:] / AB_SCALE
    small = full if (h, w) == (H, W) else F.interpolate(full[None], size=(h, w), mode="area")[0]
    return full, small


def render_edit(photo: "Photo", full_base: torch.Tensor, grid_base: torch.Tensor, grid_result: torch.Tensor) -> np.ndarray:
    """Full-resolution RGB (H, W, 3) float32 of a stroke result solved on a grid.

    The *edit* (grid result minus the base on the grid) is upsampled guided by the photo's
    full-resolution L and added to the base's full-resolution ab, then recombined with that L:
    where no stroke reaches, the edit is 0 and the pixels are exactly the base the user picked
    (with no base, the base is 0 and this is the guided upsampling of the result itself).
    """
    L = torch.from_numpy(np.ascontiguousarray(photo.L, dtype=np.float32))
    edit = (grid_result.float() - grid_base.float())[None] * AB_SCALE
    with torch.no_grad():
        ab = full_base.float() * AB_SCALE + guided_upsample_ab(edit, L)[0]
        rgb = recombine(L, ab[None])[0].permute(1, 2, 0).contiguous().numpy()
    return rgb.astype(np.float32, copy=False)


class _BaseCache:
    """The last base's ab (full resolution and on the grid): re-propagating on every stroke of a
    drag reuses it instead of converting the base's pixels again."""

    def __init__(self) -> None:
        self._key: object = None
        self._value: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def get(self, photo: "Photo", base: Colorization | None, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            if self._value is not None and self._key is base:
                return self._value
        value = base_ab(photo, base, grid)
        with self._lock:
            self._key, self._value = base, value
        return value


def solve_size(image_size: tuple[int, int], max_side: int, max_cells: int | None = None) -> tuple[int, int]:
    """(w, h) of the grid a photo of ``image_size`` (W, H) is solved on: the photo scaled down
    (never up) until its long side is <= max_side and it has <= max_cells cells."""
    W, H = image_size
    scale = min(1.0, max_side / max(W, H))
    if max_cells is not None:
        scale = min(scale, math.sqrt(max_cells / (W * H)))
    return max(1, min(W, math.floor(W * scale + 0.5))), max(1, min(H, math.floor(H * scale + 0.5)))


def levin_weights(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affinities of each pixel to its 3x3 neighbours: (8, h, w) weights summing to 1 per pixel,
    and the (8, h, w) mask of neighbours inside the image (offsets in ``_OFFSETS`` order).

    w_rs ∝ exp(-(Y_r - Y_s)² / (2σ_r²)), with 2σ_r² = max(0.6·var_r, min_s (Y_r - Y_s)² / ln 100,
    2e-6): σ follows the local contrast (var_r over the 3x3 window including r) so weights adapt
    to texture; the second bound keeps the most similar neighbour at >= 1 % of e^0, so no pixel is
    cut off from all its neighbours; the floor keeps flat areas finite.
    """
    h, w = Y.shape
    pad = np.pad(Y.astype(np.float64), 1, constant_values=np.nan)
    nb = np.stack([pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _OFFSETS])
    valid = ~np.isnan(nb)
    win = np.concatenate([Y[None].astype(np.float64), nb])
    count = 1 + valid.sum(axis=0)
    mean = np.nansum(win, axis=0) / count
    var = np.nansum((win - mean) ** 2, axis=0) / count
    d2 = np.where(valid, (nb - Y) ** 2, np.inf)
    mind2 = d2.min(axis=0)
    mind2 = np.where(np.isfinite(mind2), mind2, 0.0)
    s = np.maximum(np.maximum(0.6 * var, mind2 / _LN100), _SIGMA_FLOOR)
    wts = np.where(valid, np.exp(-np.where(valid, d2, 0.0) / s), 0.0)
    total = wts.sum(axis=0)
    wts = wts / np.where(total > 0, total, 1.0)
    return wts, valid


def smoothness_matrix(Y: np.ndarray) -> sp.csc_matrix:
    """Q = (I - W)ᵀ(I - W) for the guide Y (h, w), the Hessian of the smoothness energy."""
    h, w = Y.shape
    n = h * w
    wts, valid = levin_weights(Y)
    idx = np.arange(n).reshape(h, w)
    pad = np.pad(idx, 1, constant_values=-1)
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [np.ones(n)]
    for k, (dy, dx) in enumerate(_OFFSETS):
        nbr = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        m = valid[k]
        rows.append(idx[m])
        cols.append(nbr[m])
        vals.append(-wts[k][m])
    lap = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return (lap.T @ lap).tocsc()


def dissection_order(h: int, w: int, leaf: int = 8) -> np.ndarray:
    """A nested-dissection ordering of an h x w grid for a 5x5 stencil (separators 2 wide).

    Eliminating the two halves before the separator between them keeps the factor's fill far
    below the natural order's; on these grids it factorises ~20 % faster than SuperLU's MMD.
    """
    idx = np.arange(h * w).reshape(h, w)
    out: list[np.ndarray] = []
    stack = [(0, h, 0, w, False)]
    while stack:  # iterative, post-order: parts first, then their separator
        y0, y1, x0, x1, emit = stack.pop()
        hh, ww = y1 - y0, x1 - x0
        if hh <= 0 or ww <= 0:
            continue
        if emit or hh * ww <= leaf * leaf or max(hh, ww) <= 6:
            out.append(idx[y0:y1, x0:x1].ravel())
        elif ww >= hh:
            m = x0 + (ww - 2) // 2
            stack += [(y0, y1, m, m + 2, True), (y0, y1, m + 2, x1, False), (y0, y1, x0, m, False)]
        else:
            m = y0 + (hh - 2) // 2
            stack += [(m, m + 2, x0, x1, True), (m + 2, y1, x0, x1, False), (y0, m, x0, x1, False)]
    return np.concatenate(out)


class LevinField:
    """Levin et al. 2004 propagation on one photo, solved on a grid of long side <= ``max_side``
    and <= ``max_cells`` cells (see DEFAULT_MAX_SIDE for why, and for timings).

    Cached per photo: the guide, the affinities assembled into the smoothness matrix, its
    dissection ordering and permuted form (together ~0.03 s); for the last stroke set (the
    costly part, ~0.2 s): the factorisation, shared by the a and b channels and by any
    base (the base only enters the right-hand side), so switching bases costs no refactorisation.
    Only one is kept because a factor takes tens of MB.
    """

    method = "levin"

    def __init__(
        self,
        photo: Photo,
        max_side: int = DEFAULT_MAX_SIDE,
        max_cells: int | None = DEFAULT_MAX_CELLS,
        stroke_weight: float = STROKE_WEIGHT,
        reach: float = BASE_REACH,
    ) -> None:
        if max_side < 1:
            raise ValueError("max_side must be at least 1")
        self.photo = photo
        self.grid = solve_size(photo.size, max_side, max_cells)  # (w, h)
        self.stroke_weight = float(stroke_weight)
        if reach <= 0:
            raise ValueError("reach must be positive")
        self.base_weight = (9.0 / 64.0) / (reach * max(self.grid)) ** 4  # λ, see BASE_REACH
        self._lock = threading.RLock()
        self._guide: np.ndarray | None = None
        self._Q: sp.csc_matrix | None = None
        self._perm: np.ndarray | None = None
        self._Qp: sp.csc_matrix | None = None
        self._factors: OrderedDict[bytes, spla.SuperLU] = OrderedDict()
        self._bases = _BaseCache()

    # --- per-photo work -------------------------------------------------------------------------
    @property
    def guide(self) -> np.ndarray:
        """The photo's L / 100 on the solve grid, (h, w) float64 (area-averaged)."""
        with self._lock:
            if self._guide is None:
                w, h = self.grid
                L = torch.from_numpy(self.photo.L).to(torch.float64)
                if (h, w) != tuple(L.shape):
                    L = F.interpolate(L[None, None], size=(h, w), mode="area")[0, 0]
                self._guide = (L / 100.0).numpy()
            return self._guide

    def _matrix(self) -> tuple[sp.csc_matrix, np.ndarray, sp.csc_matrix]:
        with self._lock:
            if self._Q is None:
                w, h = self.grid
                Q = smoothness_matrix(self.guide)
                perm = dissection_order(h, w)
                self._Qp = Q[perm][:, perm].tocsc()
                self._perm, self._Q = perm, Q
            return self._Q, self._perm, self._Qp

    def _factor(self, diag: np.ndarray) -> spla.SuperLU:
        """LU of Q + diag(diag) (in dissection order), cached by the diagonal's bytes."""
        key = hashlib.blake2b(diag.tobytes(), digest_size=16).digest()
        with self._lock:
            if key in self._factors:
                self._factors.move_to_end(key)
                return self._factors[key]
        _, perm, Qp = self._matrix()
        M = (Qp + sp.diags(diag[perm])).tocsc()
        lu = spla.splu(M, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        with self._lock:
            self._factors[key] = lu
            while len(self._factors) > 1:
                self._factors.popitem(last=False)
        return lu

    # --- solving -------------------------------------------------------------------------------
    def solve(
        self, coverage: np.ndarray, target_ab: np.ndarray, base_ab: np.ndarray | None = None
    ) -> np.ndarray:
        """Minimise, per chroma channel, on the solve grid::

            |(I - W)(U - B)|² + Σ_r μ·c_r (U_r - T_r)² + λ Σ_r (U_r - B_r)²

        with c the stroke coverage (h, w), T the strokes' ab (2, h, w), B the base ab (2, h, w)
        or 0 with λ = 0 when there is no base, μ = ``stroke_weight``, λ = ``base_weight``.
        Returns U (2, h, w) float64 in ab/128 units. Grey (no base, no strokes) is returned as 0.
        """
        w, h = self.grid
        n = h * w
        kappa = self.stroke_weight * np.asarray(coverage, np.float64).reshape(n)
        T = np.asarray(target_ab, np.float64).reshape(2, n)
        if base_ab is None:
            B, lam = np.zeros((2, n)), 0.0
        else:
            B, lam = np.asarray(base_ab, np.float64).reshape(2, n), self.base_weight
        if not kappa.any():
            return B.reshape(2, h, w).copy()  # nothing to propagate: the base (or grey) as is
        Q, perm, _ = self._matrix()
        diag = kappa + lam
        lu = self._factor(diag)
        rhs = kappa * T + lam * B
        if base_ab is not None:
            rhs = rhs + (Q @ B.T).T
        x = lu.solve(np.ascontiguousarray(rhs.T[perm]))
        U = np.empty_like(x)
        U[perm] = x
        return U.T.reshape(2, h, w)

    def propagate(
        self,
        strokes: Sequence[Stroke],
        base: Colorization | None = None,
        cancel: CancelToken | None = None,
        progress: ProgressFn | None = None,
    ) -> Colorization:
        """Solve at the grid for the edit of ``base`` and render it (:func:`render_edit`)."""
        report = progress or (lambda f, m: None)
        check = cancel.check if cancel is not None else (lambda: None)
        check()
        report(0.0, "rasterising strokes")
        coverage, target = rasterize(list(strokes), self.photo.size, self.grid, L=self.guide * 100.0)
        full, grid_base = self._bases.get(self.photo, base, self.grid)
        check()
        if self._Q is None and coverage.any():
            report(0.1, "building affinities")
            self._matrix()
            check()
        report(0.3, "solving")
        U = self.solve(coverage, target, grid_base.numpy() if base is not None else None)
        check()
        report(0.8, "upsampling")
        ab_low = torch.from_numpy(U)
        rgb = render_edit(self.photo, full, grid_base, ab_low)
        report(1.0, "done")
        return Colorization(
            rgb=rgb, ab_low=ab_low.float(), method=self.method, model="levin",
            index=base.index if base is not None else 0, seed=base.seed if base is not None else 0,
        )

    def attention(self, x: float, y: float) -> np.ndarray | None:
        """Levin's affinities are local (3x3): no attention map to show."""
        return None


STROKE_SHARPEN = 4.0
"""The stroke field multiplies the G-CRF's attention logits by this (Ŝ = row-softmax(k AᵀA/√D)).

The HOC term is trained on a coarser grid than the 64x64 one strokes are solved on (embeddings
average-pooled, see training/stages/gcrf_hoc.py), so at 64x64 each row's softmax runs over 4-16x
more pixels with similar logits and its mass spreads thin over the whole photo: a stroke then
leaked colour everywhere ("a red stroke on a bodice turns the hair auburn"). Measured on
generated two-object scenes (object and background 0.08 apart in grey level, textured): mean
|Δab| outside the stroked object 1.9 at k = 1 vs 0.28 at k = 4, with the same change inside
(29 vs 30) at the same weak unary; k = 8 gains little more."""

STROKE_BASE_MIN = 0.05
"""Floor on the weak unary toward the picked colorization (x β) under strokes. Export tunes
``stroke_base`` for PSNR with ten random true-colour points over the whole image, which rewards
colouring the whole photo from each point and picked 0.005 for the shipped general model; on
real photos one small stroke then changed 40-50 % of the picture by more than 5 ab units. With
0.05, :data:`STROKE_SHARPEN` and :data:`STROKE_LAPLACIAN` it changes 7-18 %, and the leak
outside the stroked object on the generated scenes drops from 7.5 to 0.33 while the object
still takes the colour (mean |Δab| inside 27)."""

STROKE_LAPLACIAN = 1.0
"""Weight of a first-order term δᵀ(D - W)δ, W = (Ŝ + Ŝᵀ)/2, added to the stroke field's
energy next to the paper's ||(I - Ŝ)δ||². The paper's term alone is second order: its
response to a stroke rings, so beyond the stroked region the edit turned to the *opposite*
colour (a red stroke on a flat grey photo made the far corner cyan, -12 ab units). With the
graph Laplacian the edit decays monotonically (measured: no pixel against the stroke's
direction), at the same leak for a slightly larger weak unary."""

STROKE_WEIGHT_GAIN = 4.0
"""Stroke unary weight as a multiple of β: covered pixels reach their stroke colour (at 1x,
the smoothness term held them back from it)."""

STROKE_GRID = 32
"""Side of the grid the G-CRF stroke field solves on (the model grid if smaller): the
embeddings are average-pooled onto it, as the HOC term was trained (``hoc_train_size`` 32).
A per-photo setup factorises a dense P x P matrix, P = side²: (I-Ŝ)ᵀ(I-Ŝ) is a P³ product, then
Cholesky and the inverse the stroke updates reuse. At the model's 64x64 (P = 4096) that took
1.7 s on an idle CPU core and up to 18 s on this project's loaded one, all before the first
stroke showed; at 32x32 (P = 1024) it is 64x less work. The edit is smooth (it spreads along
Ŝ), and the guided upsampling by the photo's full-resolution L puts its edges back."""

HINTS_ONLY_BASE = 1e-3
"""Weak unary toward grey (x β) when strokes are propagated with no base (hints-only mode):
nothing to keep, so colour should fill the region it belongs to; small but not 0, so far,
unrelated regions stay grey."""


def stroke_embeddings(model: GCRF, L: torch.Tensor, feats: Sequence[torch.Tensor], grey: torch.Tensor) -> torch.Tensor:
    """The stroke field's embeddings (B, D, S, S) at the model grid: the G-CRF's A scaled by
    √STROKE_SHARPEN (so AᵀA is sharpened by STROKE_SHARPEN)."""
    return model.embeddings(L, feats, grey).float() * STROKE_SHARPEN**0.5


def to_solve_grid(t: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, S, S) at the model grid area-averaged onto the g x g solve grid (unchanged if g >= S)."""
    return t if grid >= t.shape[-1] else F.adaptive_avg_pool2d(t, grid)


def stroke_smoothness(S: torch.Tensor) -> torch.Tensor:
    """The stroke field's smoothness matrix for Ŝ (..., P, P): (I-Ŝ)ᵀ(I-Ŝ) + STROKE_LAPLACIAN (D - W),
    W = (Ŝ + Ŝᵀ)/2. Batched; the field and training's solve in the loop build it here."""
    W = 0.5 * (S + S.transpose(-1, -2))
    KtK = normal_matrix(S)
    KtK.diagonal(dim1=-2, dim2=-1).add_(STROKE_LAPLACIAN * W.sum(-1))
    return KtK.sub_(STROKE_LAPLACIAN * W)


def solve_strokes_batch(
    KtK: torch.Tensor, coverage: torch.Tensor, hint_ab: torch.Tensor, base: torch.Tensor, prior: torch.Tensor,
    base_weight: float, stroke_weight: float,
) -> torch.Tensor:
    """The energy :meth:`GCRFField.propagate` minimises, for a batch and differentiable in
    ``prior`` (training puts the hint branch's unary through the solve, as the paper trains the
    unary): KtK (B, P, P) from :func:`stroke_smoothness`, coverage (B, g, g), hint_ab, base and
    prior (B, 2, g, g) ab/128 -> base + δ (B, 2, g, g). Dense Cholesky per image; M does not
    depend on ``prior``, so its backward is one more triangular solve pair."""
    b, _, g, _ = base.shape
    c = coverage.reshape(b, -1).to(KtK.dtype)
    wc = stroke_weight * c
    with torch.no_grad():
        M = KtK + torch.diag_embed(base_weight + wc)
        chol = torch.linalg.cholesky(M)
    flat = lambda t: t.reshape(b, 2, -1).transpose(1, 2).to(KtK.dtype)  # (B, P, 2)
    rhs = wc[..., None] * (flat(hint_ab) - flat(base)) + base_weight * flat(prior)
    delta = torch.cholesky_solve(rhs, chol)
    return (flat(base) + delta).transpose(1, 2).reshape(b, 2, g, g).clamp(-1, 1)


class GCRFStrokeField:
    """The G-CRF as a stroke field on one full-resolution photo (a :class:`StrokeField`).

    Strokes are rasterised at the model grid (S x S, the photo's L area-resized, as for
    sampling); the edit is solved on the :data:`STROKE_GRID` by a per-photo
    :class:`~engine.models.gcrf.GCRFField` (built on the first ``propagate``, which reports
    progress and honours cancel; later calls take milliseconds plus the upsampling).

    With a learned hint branch (``model.has_hint_branch``) the strokes first go through it: it
    turns the base (or grey, for hints alone) and the stroke map into a unary that already
    carries each stroke's colour over the region it belongs to, and the solve pulls toward that
    unary (weight ``hint_unary`` x β) instead of toward the base, with the strokes exact and Ŝ
    smoothing the edit along the image's structure. Calls are serialised by a lock.
    """

    method = GCRF_METHOD

    def __init__(
        self, model: GCRF, photo: "Photo", model_name: str = GCRF_METHOD, max_rank: int = 600, grid: int = STROKE_GRID,
    ):
        self.model, self.photo, self.model_name, self.max_rank = model, photo, model_name, max_rank
        self.size = model.cfg.size  # the model grid: strokes, the hint branch, the attention map
        self.grid = min(int(grid), self.size)  # the solve grid
        self._lock = threading.RLock()
        self._L: torch.Tensor | None = None
        self._A: torch.Tensor | None = None
        self._A_grid: torch.Tensor | None = None
        self._feats: tuple[list[torch.Tensor], torch.Tensor] | None = None
        self._field: GCRFField | None = None
        self._hints_only: GCRFField | None = None
        self._bases = _BaseCache()
        self._no_hint: torch.Tensor | None = None
        self._no_hint_key: object = None

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def L_small(self) -> torch.Tensor:
        """The photo's L area-resized to the model grid, (1, 1, S, S), cached."""
        with self._lock:
            if self._L is None:
                L = torch.from_numpy(np.ascontiguousarray(self.photo.L, dtype=np.float32))[None, None].to(self._device())
                self._L = F.interpolate(L, size=(self.size, self.size), mode="area")
            return self._L

    @torch.no_grad()
    def _model_embeddings(self) -> torch.Tensor:
        """A (1, D, S, S) at the model grid, scaled by √STROKE_SHARPEN (grey features cached too)."""
        with self._lock:
            if self._A is None:
                feats, grey = self._features()
                self._A = stroke_embeddings(self.model, self.L_small(), feats, grey)
            return self._A

    @torch.no_grad()
    def _features(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        with self._lock:
            if self._feats is None:
                self._feats = self.model.grey_features(self.L_small())
            return self._feats

    def embeddings(self) -> torch.Tensor:
        """A (D, P) of the photo at the model grid, scaled by √STROKE_SHARPEN: the attention map's."""
        return self._model_embeddings()[0].flatten(1)

    def grid_embeddings(self) -> torch.Tensor:
        """A (D, g²) average-pooled onto the solve grid (as the HOC term was trained), scaled alike."""
        with self._lock:
            if self._A_grid is None:
                self._A_grid = to_solve_grid(self._model_embeddings(), self.grid)[0].flatten(1)
            return self._A_grid

    @property
    def learned(self) -> bool:
        """Whether strokes go through the model's learned hint branch."""
        return bool(getattr(self.model, "has_hint_branch", False))

    def grid_field(self, check: Callable[[], None] | None = None, hints_only: bool = False) -> GCRFField:
        """The cached solve-grid field (built on first use): over a base (weak unary
        max(stroke_base, STROKE_BASE_MIN) x β, for locality), or for hints alone (weak unary
        HINTS_ONLY_BASE x β, or with a hint branch its ``hint_unary`` x β). Both share (I-Ŝ)ᵀ(I-Ŝ)."""
        with self._lock:
            cfg = self.model.cfg
            stroke_w = cfg.beta_test * STROKE_WEIGHT_GAIN
            if self._field is None:
                self._field = self._make_field(cfg.beta_test * max(cfg.stroke_base, STROKE_BASE_MIN), stroke_w, check)
            if not hints_only:
                return self._field
            if self._hints_only is None:  # same energy, another weak unary: share its matrix
                w0 = cfg.hint_unary if self.learned else HINTS_ONLY_BASE
                self._hints_only = self._make_field(cfg.beta_test * w0, stroke_w, check, self._field.solver.KtK)
            return self._hints_only

    def _make_field(
        self, base_w: float, stroke_w: float, check: Callable[[], None] | None, KtK: torch.Tensor | None = None
    ) -> GCRFField:
        """A grid field whose smoothness matrix is (I-Ŝ)ᵀ(I-Ŝ) + STROKE_LAPLACIAN (D - W)."""
        ex = self.model.cfg.exclude_self
        A = self.grid_embeddings()
        S = similarity(A, ex)
        if check is not None:
            check()
        if KtK is None:
            KtK = stroke_smoothness(S)
        solver = GCRFSolver(None, base_w, max_rank=self.max_rank, check=check, KtK=KtK)
        return GCRFField(S, base_w, stroke_w, A, ex, self.max_rank, check, solver=solver)

    def _to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """A (C, S, S) field at the model grid area-averaged onto the solve grid."""
        return to_solve_grid(t[None], self.grid)[0]

    @torch.no_grad()
    def solve_hints(
        self, coverage: torch.Tensor, hint_ab: torch.Tensor, base: torch.Tensor | None,
        check: Callable[[], None] | None = None, local: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stroke solve on grids: coverage (S, S) and hint ab (2, S, S) at the model grid,
        ``base`` (2, S, S) ab/128 at the model grid or None (hints alone) -> (result, base),
        both (2, g, g) at the solve grid. What ``propagate`` does between rasterising and
        rendering; evaluation calls it with Table 3's squares.

        ``local`` (the canvas): over a base, a hint branch's change is applied only as far as
        the strokes reach along Ŝ, so the rest of the picked sample stays. ``local=False``:
        the branch's whole answer for the base and the hints (what resampling with locked
        strokes does), pulled toward at the hints-alone weight."""
        learned_global = self.learned and base is not None and not local
        with self._lock:
            field = self.grid_field(check, hints_only=base is None or learned_global)
            dev = field.solver.device
            coverage = torch.as_tensor(coverage, dtype=torch.float32).to(dev)
            hint_ab = torch.as_tensor(hint_ab, dtype=torch.float32).to(dev)
            b_model = None if base is None else torch.as_tensor(base, dtype=torch.float32).to(dev)
            grid_base = torch.zeros(2, self.grid, self.grid, device=dev) if b_model is None else self._to_grid(b_model)
            if not bool((coverage > 0).any()):
                return grid_base.clone(), grid_base
            hints = Hints(coverage, hint_ab)
            on_grid = hints.resized((self.grid, self.grid))
            cov_g, tgt_g = on_grid.coverage, on_grid.ab
            prior = None
            if self.learned:
                feats, grey = self._features()
                if b_model is None:  # hints alone: the branch's colorization from them
                    prior = self._to_grid(self.model.hint_unary(feats, grey, None, hints)[0].float())
                elif learned_global:
                    alpha = self.model.hint_unary(feats, grey, b_model[None], hints)[0].float()
                    prior = self._to_grid(alpha) - grid_base
                else:  # over a base: what the hints change in the branch's answer, where the strokes reach
                    alpha = self.model.hint_unary(feats, grey, b_model[None], hints)[0].float()
                    change = self._to_grid(alpha - self._branch_without_hints(b_model))
                    ones = torch.ones_like(grid_base)
                    reach = field.propagate(cov_g, ones, torch.zeros_like(grid_base))[:1].clamp(0, 1)
                    prior = reach * change
            x = field.propagate(cov_g, tgt_g, grid_base, prior=prior)
            return x, grid_base

    @torch.no_grad()
    def _branch_without_hints(self, base: torch.Tensor) -> torch.Tensor:
        """The hint branch's answer for ``base`` (2, S, S) with no hints, cached for the last base.

        Over a base the solve pulls toward the branch's answer *minus* this: with MSE training the
        branch also nudges a sample toward the training set's mean everywhere, hints or not, and
        that would recolour the whole photo on the first stroke. The difference is what the
        hints themselves change, 0 where they say nothing."""
        key = (base.data_ptr(), tuple(base.shape), float(base.sum()))
        if self._no_hint_key != key:
            feats, grey = self._features()
            self._no_hint = self.model.hint_unary(feats, grey, base[None], None)[0].float()
            self._no_hint_key = key
        return self._no_hint

    @torch.no_grad()
    def propagate(
        self,
        strokes: Sequence[Stroke],
        base: Colorization | None = None,
        cancel: CancelToken | None = None,
        progress: ProgressFn | None = None,
    ) -> Colorization:
        """The photo coloured by ``strokes`` over ``base`` (None: over grey)."""
        report = progress or (lambda f, m: None)
        check = cancel.check if cancel is not None else (lambda: None)
        check()
        s = self.size
        with self._lock:
            if self._field is None:
                report(0.05, "building the G-CRF field")
            self.grid_field(check, hints_only=base is None)
            check()
            report(0.5, "solving")
            L_model = self.L_small()[0, 0].cpu().numpy()
            cov, tgt = rasterize(list(strokes), self.photo.size, (s, s), L=L_model)
            full, model_base = self._bases.get(self.photo, base, (s, s))
            x, grid_base = self.solve_hints(
                torch.from_numpy(cov), torch.from_numpy(tgt), None if base is None else model_base.float(), check
            )
            x, grid_base = x.cpu(), grid_base.cpu()
        check()
        report(0.8, "upsampling")
        rgb = render_edit(self.photo, full, grid_base, x)
        report(1.0, "done")
        return Colorization(
            rgb=rgb, ab_low=x.float(), method=self.method, model=self.model_name,
            index=base.index if base is not None else 0, seed=base.seed if base is not None else 0,
        )

    @torch.no_grad()
    def attention(self, x: float, y: float) -> np.ndarray:
        """Which pixels image point (x, y) draws its colour from: row of Ŝ at the model grid,
        upsampled to the photo's (H, W) and scaled to [0, 1] (the GUI overlays it)."""
        W, H = self.photo.size
        s = self.size
        gx = min(s - 1, max(0, int(x * s / W)))
        gy = min(s - 1, max(0, int(y * s / H)))
        row = attention_row(self.embeddings(), gy * s + gx, self.model.cfg.exclude_self).view(1, 1, s, s).cpu()
        up = F.interpolate(row, size=(H, W), mode="bilinear", align_corners=False)[0, 0].clamp(min=0)
        return (up / up.max().clamp(min=1e-12)).numpy().astype(np.float32)
