"""Linear algebra of the G-CRF (Messaoud et al. 2018, §3.2): similarity, solves, stroke updates.

The G-CRF's mean colour field x (a and b as two columns) minimises
``||(I - Ŝ) x||² + Σ_p w_p (x_p - α_p)²``, i.e. solves ``M x = w ⊙ α`` with
``M = (I - Ŝ)ᵀ(I - Ŝ) + diag(w)``; the paper's ``βHᵀH`` is ``diag(w)`` and ``βHᵀα`` is the
right-hand side. Ŝ is shared by both channels, so every solve here takes a (P, C) right-hand
side and factorises M once for all columns (C = 2 for one field, 2n for n samples).

Four tools, each for one job:

- :func:`similarity` builds Ŝ from pixel embeddings A.
- :func:`gcrf_solve` is the training solve: batched, direct (Cholesky), differentiable with
  an analytic backward that costs O(P²) instead of autograd's O(P³) through the factorisation.
- :func:`solve_cg` is the inference solve for automatic colorization (w = β = 5 everywhere): M
  is then well conditioned and ≤ 30 matrix-free Jacobi-preconditioned CG iterations (warm
  started at the unary) avoid forming ŜᵀŜ, a P³ product (~1.2 s at 64x64 on one CPU core).
  Not for weak weights: at w ≈ 0.1 CG needs ~100 iterations, each reading all of Ŝ twice
  (memory bound, ~30 ms at P = 4096 whatever the column count), which loses to Cholesky.
- :class:`GCRFSolver` is the interactive solve for strokes: M⁻¹ of the stroke-free system is
  computed once per image, then each stroke update (weights changed on k ≪ P pixels) is a
  Woodbury correction through a k x k system: O(k³ + Pk), a few milliseconds at 64x64.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["similarity", "attention_row", "normal_matrix", "system_matrix", "gcrf_solve", "solve_cg", "GCRFSolver"]


def similarity(A: torch.Tensor, exclude_self: bool = True) -> torch.Tensor:
    """Ŝ = row-softmax(AᵀA / √D) for embeddings A (..., D, P); returns (..., P, P).

    ``exclude_self`` masks the diagonal before the softmax. With the diagonal in, a pixel with
    a long embedding is most similar to itself (a·a ≥ a·b for a dominant norm), Ŝ_pp → 1, the
    row of I - Ŝ vanishes and that pixel drops out of the smoothness term: it neither receives
    nor passes on colour, which breaks stroke propagation exactly where embeddings are
    confident. Without it, each pixel's colour is predicted from the *other* pixels, as in
    Levin et al.'s x_p = Σ_{q≠p} w_pq x_q. The 1/√D temperature only makes the initial logits
    O(1) whatever D; the embedding network learns any other scale. Weights below
    ``TINY_WEIGHT`` are zeroed (see there: subnormal floats made the solves 10x slower).
    """
    d, p = A.shape[-2], A.shape[-1]
    A = A / d**0.25  # the 1/√D temperature, applied to the D x P factor rather than the P x P product
    logits = A.transpose(-1, -2) @ A
    if logits.requires_grad:
        logits = _FlushTinyGrad.apply(logits)
    if exclude_self and p > 1:
        eye = torch.eye(p, dtype=torch.bool, device=A.device)
        logits = logits.masked_fill(eye, float("-inf"))
    return _drop_tiny(torch.softmax(logits, dim=-1))


TINY_WEIGHT = 1e-12
"""Similarity weights below this are set to 0. A trained Ŝ is peaked, so most of a softmax row
underflows to subnormal floats (< 1.2e-38), and x86 CPUs compute on subnormals ~10x slower:
(I-Ŝ)ᵀ(I-Ŝ) of a trained 4096² Ŝ took 12.8 s instead of 1.2 s. Rows still sum to 1 within
P·1e-12, and products of weights ≥ 1e-12 cannot become subnormal."""


def _drop_tiny(S: torch.Tensor) -> torch.Tensor:
    return S.masked_fill(S.detach() < TINY_WEIGHT, 0.0)


class _FlushTinyGrad(torch.autograd.Function):
    """Identity whose backward zeroes gradients below 1e-30 in magnitude.

    The softmax's backward scales by Ŝ, so with a peaked trained Ŝ the logits' gradient is full
    of subnormals, and the P x P x D product that carries it to A ran 35x slower (236 ms instead
    of 6.4 ms per batch of 8 at P = 1024 on one core). Such gradients are 0 for any purpose.
    (torch.set_flush_denormal would not reach MKL's worker threads.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g.masked_fill(g.abs() < 1e-30, 0.0)


def attention_row(A: torch.Tensor, p: int, exclude_self: bool = True) -> torch.Tensor:
    """Row p of Ŝ for embeddings A (D, P), in O(PD) without forming Ŝ; sums to one."""
    A = A / A.shape[0] ** 0.25
    logits = A[:, p] @ A
    if exclude_self and A.shape[1] > 1:
        logits = logits.clone()
        logits[p] = float("-inf")
    return _drop_tiny(torch.softmax(logits, dim=0))


def normal_matrix(S_hat: torch.Tensor) -> torch.Tensor:
    """(I - Ŝ)ᵀ(I - Ŝ): the smoothness term's matrix, the P³ part of every direct solve."""
    K = torch.eye(S_hat.shape[-1], dtype=S_hat.dtype, device=S_hat.device) - S_hat
    return K.transpose(-1, -2) @ K


def system_matrix(S_hat: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """M = (I - Ŝ)ᵀ(I - Ŝ) + diag(w) for Ŝ (..., P, P), w (..., P)."""
    M = normal_matrix(S_hat)
    return M + torch.diag_embed(weights.to(M.dtype))


def _cholesky(M: torch.Tensor) -> torch.Tensor:
    """Cholesky factor; if M is numerically singular (no pixel weighted), add a tiny ridge."""
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info != 0).any()):
        ridge = 1e-6 * M.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=1e-12)
        L = torch.linalg.cholesky(M + ridge[..., None, None] * torch.eye(M.shape[-1], dtype=M.dtype, device=M.device))
    return L


def _pad_amount(p: int) -> int:
    """Extra rows/columns that keep the factorised matrix's side off multiples of 64.

    MKL's Cholesky is 2-5x slower when the leading dimension is a large power of two (cache-set
    aliasing): on this project's CPU, one core, P = 1024 takes 21 ms but P = 1040 4.4 ms, and
    P = 4096 0.45 s but 4112 0.23 s. Our grids are powers of two, so we pad.
    """
    return 16 if p >= 256 and p % 64 == 0 else 0


def _factor(M: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cholesky factor of M padded with an identity block (see :func:`_pad_amount`), and the pad.

    The padded matrix is block diagonal, so its factor is diag(chol(M), I) and solves with a
    zero-padded right-hand side give M⁻¹ rhs in the first P rows.
    """
    p = M.shape[-1]
    pad = _pad_amount(p)
    if pad:
        M = F.pad(M, (0, pad, 0, pad))
        M.diagonal(dim1=-2, dim2=-1)[..., p:] = 1.0
    return _cholesky(M), pad


def _factor_solve(rhs: torch.Tensor, L: torch.Tensor, pad: int) -> torch.Tensor:
    if not pad:
        return torch.cholesky_solve(rhs, L)
    p = rhs.shape[-2]
    return torch.cholesky_solve(F.pad(rhs, (0, 0, 0, pad)), L)[..., :p, :]


class _GCRFSolve(torch.autograd.Function):
    """x = M⁻¹ r with M = (I - Ŝ)ᵀ(I - Ŝ) + diag(w); batched over the leading dimension.

    Backward, with g = dL/dx and u = M⁻¹ g (M is symmetric):
    dL/dr = u, dL/dw = -Σ_c u ⊙ x, dL/dŜ = (K u) xᵀ + (K x) uᵀ with K = I - Ŝ.
    (From dL/dM = -u xᵀ and M = KᵀK: dL/dK = K(dL/dM + dL/dMᵀ), and dŜ = -dK.) All O(P² C),
    reusing the forward's Cholesky factor.
    """

    @staticmethod
    def forward(ctx, S_hat: torch.Tensor, weights: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        L, pad = _factor(system_matrix(S_hat, weights))
        x = _factor_solve(rhs, L, pad)
        ctx.pad = pad
        ctx.save_for_backward(S_hat, L, x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        S_hat, L, x = ctx.saved_tensors
        u = _factor_solve(g.contiguous(), L, ctx.pad)
        gS = gw = gr = None
        if ctx.needs_input_grad[0]:
            Ku = u - S_hat @ u
            Kx = x - S_hat @ x
            gS = Ku @ x.transpose(-1, -2) + Kx @ u.transpose(-1, -2)
        if ctx.needs_input_grad[1]:
            gw = -(u * x).sum(-1)
        if ctx.needs_input_grad[2]:
            gr = u
        return gS, gw, gr


def gcrf_solve(S_hat: torch.Tensor, weights: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Differentiable direct solve of ((I-Ŝ)ᵀ(I-Ŝ) + diag(w)) x = rhs.

    Shapes: Ŝ (B, P, P), w (B, P), rhs (B, P, C) -> x (B, P, C); an unbatched call
    (Ŝ (P, P), w (P,), rhs (P, C)) works too. Runs in float32 or float64 whatever autocast
    says, because Cholesky has no bf16/fp16 kernels and the factorisation needs the precision.
    """
    unbatched = S_hat.dim() == 2
    if unbatched:
        S_hat, weights, rhs = S_hat[None], weights[None], rhs[None]
    dtype = S_hat.dtype if S_hat.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(S_hat.device.type, enabled=False):
        x = _GCRFSolve.apply(S_hat.to(dtype), weights.to(dtype), rhs.to(dtype))
    return x[0] if unbatched else x


@torch.no_grad()
def solve_cg(
    S_hat: torch.Tensor,
    weights: torch.Tensor,
    rhs: torch.Tensor,
    tol: float = 1e-5,
    max_iter: int = 300,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Matrix-free preconditioned conjugate gradients for the same system (no autograd).

    Each iteration costs two (P, P) x (P, C) products, never ŜᵀŜ. With w = β ≥ 1 everywhere
    (automatic colorization) M's spectrum is bounded below by β and the solve converges to
    ``tol`` (relative residual, per column) in a few tens of iterations. Jacobi preconditioner:
    diag(M)_p = ||K[:, p]||² + w_p, which tames "hub" pixels that many rows attend to.
    Shapes as :func:`gcrf_solve`.
    """
    unbatched = S_hat.dim() == 2
    if unbatched:
        S_hat, weights, rhs = S_hat[None], weights[None], rhs[None]
        x0 = None if x0 is None else x0[None]
    w = weights.to(rhs.dtype)[..., None]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        kv = v - S_hat @ v
        # Ŝᵀ kv as (kvᵀ Ŝ)ᵀ: BLAS reads Ŝ row by row; a transposed Ŝ with a few columns on the
        # right was 15x slower (0.74 s vs 0.05 s at P = 4096, C = 2 on one core)
        return kv - (kv.transpose(-1, -2) @ S_hat).transpose(-1, -2) + w * v

    diag_s = S_hat.diagonal(dim1=-2, dim2=-1)
    inv_diag = 1.0 / ((S_hat * S_hat).sum(-2) - 2 * diag_s + 1 + weights)[..., None]
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - matvec(x) if x0 is not None else rhs.clone()
    z = inv_diag * r
    p = z.clone()
    rz = (r * z).sum(-2, keepdim=True)
    bnorm = rhs.norm(dim=-2, keepdim=True).clamp(min=1e-30)
    for _ in range(max_iter):
        if bool((r.norm(dim=-2, keepdim=True) <= tol * bnorm).all()):
            break
        Ap = matvec(p)
        alpha = rz / (p * Ap).sum(-2, keepdim=True).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        z = inv_diag * r
        rz_new = (r * z).sum(-2, keepdim=True)
        p = z + (rz_new / rz.clamp(min=1e-30)) * p
        rz = rz_new
    return x[0] if unbatched else x


class GCRFSolver:
    """Solves M(w) x = rhs for many weight vectors w that differ from a base on few pixels.

    Built once per image: M₀ = (I - Ŝ)ᵀ(I - Ŝ) + diag(w₀) is factorised and inverted (at
    64x64: ŜᵀŜ ≈ 1.2 s, Cholesky ≈ 0.25 s, inverse ≈ 0.4 s on one core). Then, for weights w
    that differ from w₀ on the k pixels E (the stroked ones), with d = w_E - w₀_E, Woodbury gives

        M(w)⁻¹ = M₀⁻¹ - Z (diag(1/d) + Z_E)⁻¹ Zᵀ,    Z = M₀⁻¹[:, E]  (rows of M₀⁻¹, by symmetry)

    so a solve is a k x k Cholesky plus O(Pk) products — no P² or P³ work. ``M₀⁻¹ rhs`` is
    itself updated incrementally: successive calls during a drag change rhs on a few rows, and
    only those rows' contribution is added to the cached product.

    When k exceeds ``max_rank`` the current weights become the new base: M₀⁻¹ is downdated with
    the same Woodbury term (2P²k flops, ~0.1 s at k = 600) instead of refactorised, and fully
    refactorised every ``refactor_every`` rebases so float rounding cannot accumulate.
    """

    def __init__(
        self,
        S_hat: torch.Tensor | None,
        base_weight: float | torch.Tensor,
        max_rank: int = 600,
        refactor_every: int = 8,
        check: Callable[[], None] | None = None,
        KtK: torch.Tensor | None = None,
    ):
        """``KtK``: (I-Ŝ)ᵀ(I-Ŝ) if already computed (shared by solvers with other base weights);
        then ``S_hat`` may be None."""
        ref = S_hat if S_hat is not None else KtK
        if ref is None or ref.dim() != 2 or ref.shape[0] != ref.shape[1]:
            raise ValueError(f"S_hat (or KtK) must be (P, P), got {None if ref is None else tuple(ref.shape)}")
        p = ref.shape[0]
        self.P = p
        self.dtype = ref.dtype if ref.dtype in (torch.float32, torch.float64) else torch.float32
        self.device = ref.device
        self.max_rank = int(max_rank)
        self.refactor_every = int(refactor_every)
        self._check = check or (lambda: None)
        base = torch.as_tensor(base_weight, dtype=self.dtype, device=self.device)
        self.base = base.expand(p).clone() if base.dim() == 0 else base.clone()
        if bool((self.base <= 0).any()):
            raise ValueError("base weights must be positive (M₀ must be invertible)")
        self._check()
        self.KtK = normal_matrix(S_hat.to(self.dtype)) if KtK is None else KtK.to(self.dtype)
        self._check()
        self.Minv = self._invert(self.base)
        self._rhs: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self.rebases = 0
        self._since_refactor = 0

    def _invert(self, weights: torch.Tensor) -> torch.Tensor:
        L, pad = _factor(self.KtK + torch.diag(weights))
        self._check()
        inv = torch.cholesky_inverse(L)
        return inv[: self.P, : self.P].contiguous() if pad else inv

    @torch.no_grad()
    def _apply_inverse(self, rhs: torch.Tensor) -> torch.Tensor:
        """M₀⁻¹ rhs, from the cached product when rhs changed on few rows."""
        if self._rhs is not None and self._rhs.shape == rhs.shape:
            rows = (rhs != self._rhs).any(-1).nonzero().flatten()
            if rows.numel() == 0:
                return self._y
            if rows.numel() <= self.P // 8:
                y = self._y + self.Minv.index_select(0, rows).T @ (rhs[rows] - self._rhs[rows])
                self._rhs, self._y = rhs.clone(), y
                return y
        y = self.Minv @ rhs
        self._rhs, self._y = rhs.clone(), y
        return y

    def _capacitance(self, E: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Z (k, P) and the factor (Cholesky if SPD, else the matrix itself) of diag(1/d) + Z_E."""
        Z = self.Minv.index_select(0, E)
        G = Z[:, E] + torch.diag(1.0 / d)
        if bool((d > 0).all()):
            Lg, info = torch.linalg.cholesky_ex(G)
            if int(info) == 0:
                return Z, Lg, True
        return Z, G, False

    @staticmethod
    def _solve_cap(F: torch.Tensor, spd: bool, b: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(b, F) if spd else torch.linalg.solve(F, b)

    @torch.no_grad()
    def solve(self, weights: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """x = M(w)⁻¹ rhs for weights (P,) ≥ 0 (M(w) must stay positive definite), rhs (P, C) or (P,)."""
        weights = weights.to(self.dtype).to(self.device).flatten()
        rhs = rhs.to(self.dtype).to(self.device)
        squeeze = rhs.dim() == 1
        if squeeze:
            rhs = rhs[:, None]
        if weights.shape[0] != self.P or rhs.shape[0] != self.P:
            raise ValueError(f"weights and rhs must have {self.P} rows, got {weights.shape[0]} and {rhs.shape[0]}")
        E = (weights != self.base).nonzero().flatten()
        if E.numel() > self.max_rank:
            self._rebase(weights, E)
            E = E[:0]
        y = self._apply_inverse(rhs)
        if E.numel() == 0:
            x = y.clone()
        else:
            Z, F, spd = self._capacitance(E, weights[E] - self.base[E])
            x = y - Z.T @ self._solve_cap(F, spd, y[E])
        return x[:, 0] if squeeze else x

    def _rebase(self, weights: torch.Tensor, E: torch.Tensor) -> None:
        """Make ``weights`` the new base: downdate M₀⁻¹ (or refactorise now and then)."""
        self.rebases += 1
        self._since_refactor += 1
        if self._since_refactor >= self.refactor_every:
            self.Minv = self._invert(weights)
            self._since_refactor = 0
        else:
            Z, F, spd = self._capacitance(E, weights[E] - self.base[E])
            if spd:
                V = torch.linalg.solve_triangular(F, Z, upper=False)  # (k, P): Zᵀ G⁻¹ Z = VᵀV
                self.Minv.addmm_(V.T, V, alpha=-1.0)
            else:
                self.Minv.addmm_(Z.T, torch.linalg.solve(F, Z), alpha=-1.0)
        self.base = weights.clone()
        self._rhs = self._y = None  # the cached product belonged to the old M₀⁻¹
