"""G-CRF colorization (Messaoud, Forsyth & Schwing, ECCV 2018): a VAE-MDN whose decoder output
is the unary term of a fully connected Gaussian CRF over the ab field.

    x = argmin ||(I - S) x||² + β ||H x - α||²   ⇔   ((I-S)ᵀ(I-S) + βHᵀH) x = βHᵀα

- Unary α: the VAE-MDN decoder conditioned on the code z and the grey image g (reused as is:
  grey encoder, decoder, MDN over z; the colour encoder only for training).
- HOC term: a fully convolutional embedding network maps the grey image to per-pixel
  embeddings A (D x P at the working grid), Ŝ = row-softmax(AᵀA / √D) without the diagonal
  (see :func:`engine.gcrf_solver.similarity` for why), S = diag(Ŝ, Ŝ): one Ŝ for a and b.
- Automatic colorization: H = I, α = the decoded sample, β = ``beta_test`` (5); one Ŝ for all
  n samples, solved together (:func:`engine.gcrf_solver.solve_cg`).
- Strokes (:class:`GCRFField`): H diagonal with per-pixel weights from the rasterised stroke
  coverage, α = the stroke colour there; the rest keeps the colorization the user picked.

Deviations from the paper, and why:
- Ŝ excludes the diagonal and is scaled by 1/√D: with the diagonal a confident pixel attends
  to itself only and stops propagating colour; the scale only sets the initial temperature.
- The embedding network also sees Fourier features of the pixel position and the frozen grey
  encoder's /2 and /4 features (its architecture is in the paper's supplement, which we do not
  have). Position lets AᵀA express locality (a shift-invariant kernel Σ cos(ω·Δ)); the grey
  features let it group pixels by what they are, not only by intensity.
- Strokes solve for the *change* δ to the picked colorization x₀ (weak unary δ → 0 everywhere,
  strong unary δ → stroke - x₀ under the stroke, HOC smoothness on δ) instead of re-solving x
  with a weak unary toward x₀: without strokes the result is then exactly x₀ (the paper's form
  would smooth the picked sample again), and a stroke recolours the region it belongs to.
- Training the HOC term (training/stages/gcrf.py) may solve on a coarser grid than inference
  (embeddings average-pooled), because backpropagating a dense 4096² system is slow on a CPU.
- MAP solve by Cholesky / conjugate gradients instead of LU: M is symmetric positive definite.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..color import AB_SCALE, guided_upsample_ab, recombine, rgb_to_lab
from ..gcrf_solver import GCRFSolver, attention_row, similarity, solve_cg
from .vae_mdn import VAEMDN, VAEMDNConfig

if TYPE_CHECKING:
    from ..colorizer import CancelToken, Colorization
    from ..io import Photo
    from ..strokes import Stroke

METHOD = "gcrf"
N_FREQ = 4  # Fourier frequencies of the position features: sin/cos(π f u), f = 1, 2, 4, 8


@dataclass
class GCRFConfig(VAEMDNConfig):
    """VAE-MDN's fields (the unary term and the MDN) plus the HOC term and the G-CRF weights."""

    embed_dim: int = 32  # D: length of each pixel's embedding
    embed_width: int = 32  # channels of the embedding network
    embed_grey_features: bool = True  # the embedding net also sees the grey encoder's features
    beta_train: float = 1.0  # β while training (paper: 1)
    beta_test: float = 5.0  # β for automatic colorization and under strokes (paper: 5)
    stroke_base: float = 0.1  # weak unary toward the picked colorization, as a fraction of beta_test
    exclude_self: bool = True  # mask Ŝ's diagonal (see engine.gcrf_solver.similarity)

    LABEL: ClassVar[str] = "G-CRF"

    def vae_config(self) -> VAEMDNConfig:
        names = {f.name for f in fields(VAEMDNConfig)}
        return VAEMDNConfig(**{k: v for k, v in asdict(self).items() if k in names})


def position_features(size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(4 N_FREQ, S, S): sin and cos of π f x and π f y for f = 1, 2, 4, 8, with x, y in (0, 1).

    Inner products of these are sums of cos(π f Δ): peaked at Δ = 0, so a linear map of them is
    enough for AᵀA to prefer nearby pixels. Positions are relative, so any grid size works.
    """
    u = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size
    chans = []
    for k in range(N_FREQ):
        a = math.pi * (2**k) * u
        for fn in (torch.sin, torch.cos):
            v = fn(a)
            chans.append(v[None, :].expand(size, size))  # varies along x (columns)
            chans.append(v[:, None].expand(size, size))  # varies along y (rows)
    return torch.stack(chans)


class EmbedNet(nn.Module):
    """Grey image (+ position, + frozen grey features) -> pixel embeddings A (B, D, S, S).

    Fully convolutional: a 1x1 mixing layer, four residual 3x3 layers with dilations 1, 2, 4, 8
    (receptive field 31 px), and a 1x1 output that also sees the position features directly.
    """

    def __init__(self, cfg: GCRFConfig):
        super().__init__()
        w, nf = cfg.embed_width, 4 * N_FREQ
        self.use_feats = cfg.embed_grey_features
        cin = 1 + nf + (3 * cfg.width if self.use_feats else 0)
        self.inp = nn.Conv2d(cin, w, 1)
        self.body = nn.ModuleList([nn.Conv2d(w, w, 3, padding=d, dilation=d) for d in (1, 2, 4, 8)])
        self.out = nn.Conv2d(w + nf, cfg.embed_dim, 1)

    def forward(self, grey: torch.Tensor, grey_feats: Sequence[torch.Tensor] | None) -> torch.Tensor:
        n, _, h, w = grey.shape
        pos = position_features(h, grey.device, grey.dtype)[None].expand(n, -1, -1, -1)
        parts = [grey, pos]
        if self.use_feats:
            assert grey_feats is not None, "this embedding network needs the grey encoder's features"
            for f in grey_feats[:2]:  # /2 and /4 scales
                parts.append(F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False))
        x = F.relu(self.inp(torch.cat(parts, dim=1)))
        for conv in self.body:
            x = x + F.relu(conv(x))
        return self.out(torch.cat([x, pos], dim=1))


class GCRF(VAEMDN):
    """The whole model; ``color_encoder`` is None in exported (inference-only) checkpoints."""

    INFERENCE_PARTS = ("grey_encoder", "decoder", "mdn", "embed")
    METHOD = METHOD
    CONFIG = GCRFConfig
    LABEL = "G-CRF"

    def __init__(self, cfg: GCRFConfig, with_color_encoder: bool = True):
        super().__init__(cfg, with_color_encoder)
        self.cfg: GCRFConfig = cfg
        self.embed = EmbedNet(cfg)

    # --- the HOC term -------------------------------------------------------------------------
    def embeddings(self, L: torch.Tensor, feats: Sequence[torch.Tensor] | None = None, grey: torch.Tensor | None = None) -> torch.Tensor:
        """L (B, 1, S, S) in [0, 100] -> A (B, D, S, S)."""
        if feats is None or grey is None:
            feats, grey = self.grey_features(L)
        return self.embed(grey, feats)

    def similarity(self, L: torch.Tensor) -> torch.Tensor:
        """Ŝ (B, P, P) of grey images L (B, 1, S, S), P = S² in row-major (y, x) order."""
        A = self.embeddings(L)
        return similarity(A.flatten(2).float(), self.cfg.exclude_self)

    def solve_automatic(self, unary: torch.Tensor, S_hat: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
        """G-CRF mean with H = I, β = beta_test: unary (n, 2, S, S), Ŝ (P, P) -> (n, 2, S, S)."""
        n, c, h, w = unary.shape
        rhs = unary.float().reshape(n * c, h * w).T  # (P, 2n): every sample's a and b at once
        beta = self.cfg.beta_test
        weights = torch.full((h * w,), beta, device=rhs.device)
        x = solve_cg(S_hat.float(), weights, beta * rhs, tol=tol, x0=rhs)  # warm start: the unary
        return x.T.reshape(n, c, h, w).to(unary.dtype)

    @torch.no_grad()
    def colorize(
        self,
        L: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        mode: str = "auto",
        return_unary: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """L (1, 1, S, S) in [0, 100] -> ab (n, 2, S, S) in ab/128 units: n G-CRF samples.

        Codes come from the MDN exactly as in VAE-MDN (``mode``/``temperature`` as there); each
        decoded field is the unary term of the G-CRF, and one Ŝ serves all n solves.
        """
        z = self.sample_codes(L, n, generator, temperature, mode)
        feats, grey = self.grey_features(L)
        unary = self.decoder(z, feats, grey)
        S_hat = similarity(self.embed(grey, feats).flatten(2).float(), self.cfg.exclude_self)[0]
        x = self.solve_automatic(unary, S_hat).clamp(-1, 1)
        return (x, unary) if return_unary else x

    @torch.no_grad()
    def field(self, L: torch.Tensor, max_rank: int = 600, check: Callable[[], None] | None = None) -> "GCRFField":
        """The per-image stroke field of grey image L (1, 1, S, S); ~2 s on a CPU core at 64x64."""
        A = self.embeddings(L)[0].float()
        return GCRFField.from_embeddings(
            A, self.cfg.beta_test * self.cfg.stroke_base, self.cfg.beta_test, exclude_self=self.cfg.exclude_self,
            max_rank=max_rank, check=check,
        )

    @torch.no_grad()
    def attention(self, L: torch.Tensor, x: int, y: int) -> torch.Tensor:
        """Row of Ŝ for grid pixel (column x, row y) of L (1, 1, S, S): an (S, S) map summing to 1."""
        A = self.embeddings(L)[0].float()
        s = A.shape[-1]
        return attention_row(A.flatten(1), _pixel_index(x, y, s), self.cfg.exclude_self).view(s, s)


def _pixel_index(x: int, y: int, size: int) -> int:
    x, y = int(x), int(y)
    if not (0 <= x < size and 0 <= y < size):
        raise ValueError(f"pixel ({x}, {y}) is outside the {size}x{size} grid")
    return y * size + x


def _as_tensor(a: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    return torch.as_tensor(a).to(device=device, dtype=dtype)


class GCRFField:
    """Stroke propagation on one image: cached Ŝ factorisation, millisecond updates.

    ``propagate(coverage, stroke_ab, base)`` returns base + δ where δ minimises

        ||(I - Ŝ) δ||² + w₀ ||δ||² + Σ_p β c_p (δ_p - (stroke_p - base_p))²

    (per channel): c = rasterised stroke coverage in [0, 1], w₀ = ``base_weight`` (the weak
    unary that keeps unstroked pixels at the picked colorization), β = ``stroke_weight``. The
    system matrix is M₀ + diag(β c) with M₀ = (I-Ŝ)ᵀ(I-Ŝ) + w₀ I fixed per image (it does not
    depend on the picked sample), so :class:`~engine.gcrf_solver.GCRFSolver` updates it by
    Woodbury on the stroked pixels only. Not thread-safe: one field per worker.
    """

    def __init__(
        self,
        S_hat: torch.Tensor,
        base_weight: float,
        stroke_weight: float,
        A: torch.Tensor | None = None,
        exclude_self: bool = True,
        max_rank: int = 600,
        check: Callable[[], None] | None = None,
        solver: GCRFSolver | None = None,
    ):
        """``solver``: a prebuilt :class:`GCRFSolver` for this Ŝ and ``base_weight`` (e.g. one
        sharing (I-Ŝ)ᵀ(I-Ŝ) with solvers of other weights); built here otherwise."""
        p = S_hat.shape[-1]
        self.size = int(round(math.sqrt(p)))
        if self.size * self.size != p:
            raise ValueError(f"Ŝ must be P x P with P a square number, got {p}")
        self.base_weight, self.stroke_weight = float(base_weight), float(stroke_weight)
        self.A = A
        self.S_hat = S_hat if A is None else None  # with embeddings, rows are recomputed in O(PD)
        self.exclude_self = exclude_self
        self.solver = solver or GCRFSolver(S_hat, self.base_weight, max_rank=max_rank, check=check)

    @classmethod
    def from_embeddings(
        cls, A: torch.Tensor, base_weight: float, stroke_weight: float, exclude_self: bool = True,
        max_rank: int = 600, check: Callable[[], None] | None = None,
    ) -> "GCRFField":
        """From embeddings A (D, S, S) or (D, P)."""
        A = A.flatten(1)
        return cls(similarity(A, exclude_self), base_weight, stroke_weight, A, exclude_self, max_rank, check)

    @torch.no_grad()
    def propagate(self, coverage: Any, stroke_ab: Any, base: Any) -> torch.Tensor:
        """coverage (S, S) in [0, 1], stroke_ab (2, S, S) and base (2, S, S) in ab/128 -> (2, S, S).

        numpy arrays (what :func:`engine.strokes.rasterize` returns) or tensors. Pixels with zero
        coverage keep ``base`` up to what the strokes propagate to them.
        """
        dev, dt = self.solver.device, self.solver.dtype
        s = self.size
        c = _as_tensor(coverage, dev, dt).reshape(-1).clamp(0, 1)
        t = _as_tensor(stroke_ab, dev, dt).reshape(2, -1).T
        b = _as_tensor(base, dev, dt).reshape(2, -1).T
        if c.shape[0] != s * s or t.shape[0] != s * s or b.shape[0] != s * s:
            raise ValueError(f"coverage, stroke_ab and base must be on the {s}x{s} grid")
        wc = self.stroke_weight * c
        delta = self.solver.solve(self.base_weight + wc, wc[:, None] * (t - b))
        return (b + delta).T.reshape(2, s, s).clamp(-1, 1)

    def propagate_strokes(self, strokes: Sequence[Any], image_size: tuple[int, int], base: Any) -> torch.Tensor:
        """Rasterise :class:`engine.strokes.Stroke` s (image coordinates, (W, H)) onto the grid, then propagate."""
        from ..strokes import rasterize

        cov, ab = rasterize(strokes, image_size, grid=(self.size, self.size))
        return self.propagate(cov, ab, base)

    @torch.no_grad()
    def attention(self, x: int, y: int) -> torch.Tensor:
        """Row of Ŝ for grid pixel (column x, row y): an (S, S) map that sums to one."""
        p = _pixel_index(x, y, self.size)
        if self.A is not None:
            row = attention_row(self.A, p, self.exclude_self)
        else:
            row = self.S_hat[p]
        return row.reshape(self.size, self.size)


class GCRFStrokeField:
    """The G-CRF as a stroke field on one full-resolution photo (``engine.propagate.StrokeField``).

    Implements that interface by duck typing (``method``, ``photo``, ``propagate``,
    ``attention``) rather than inheritance, so loading a G-CRF model does not import scipy.
    Register with the facade as ``FIELDS["gcrf"] = lambda c, photo: GCRFStrokeField(model, photo)``.

    The solve happens on the model grid (S x S, the photo's L area-resized, as for sampling);
    the *edit* δ = x - base is upsampled guided by the full-resolution L and added to the
    base's full-resolution ab, so wherever no stroke reaches the result is exactly the base the
    user sees. The per-photo :class:`GCRFField` (~2 s on a CPU core at 64x64) is built on the
    first ``propagate``, which reports progress and honours cancel; later calls take
    milliseconds plus the upsampling. Calls are serialised by a lock.
    """

    method = METHOD

    def __init__(self, model: GCRF, photo: "Photo", model_name: str = METHOD, max_rank: int = 600):
        self.model, self.photo, self.model_name, self.max_rank = model, photo, model_name, max_rank
        self.size = model.cfg.size
        self._lock = threading.RLock()
        self._A: torch.Tensor | None = None
        self._field: GCRFField | None = None
        self._base: tuple[object, torch.Tensor, torch.Tensor] | None = None

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _L_small(self) -> torch.Tensor:
        L = torch.from_numpy(np.ascontiguousarray(self.photo.L, dtype=np.float32))[None, None].to(self._device())
        return F.interpolate(L, size=(self.size, self.size), mode="area")

    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        """A (D, P) of the photo at the model grid, cached."""
        with self._lock:
            if self._A is None:
                self._A = self.model.embeddings(self._L_small())[0].float().flatten(1)
            return self._A

    def grid_field(self, check: Callable[[], None] | None = None) -> GCRFField:
        """The cached model-grid field (built on first use)."""
        with self._lock:
            if self._field is None:
                cfg = self.model.cfg
                self._field = GCRFField.from_embeddings(
                    self.embeddings(), cfg.beta_test * cfg.stroke_base, cfg.beta_test, cfg.exclude_self, self.max_rank, check
                )
            return self._field

    def _base_ab(self, base: "Colorization | None") -> tuple[torch.Tensor, torch.Tensor]:
        """(full-resolution ab/128 (2, H, W), its area average on the grid (2, S, S)) of the base."""
        W, H = self.photo.size
        with self._lock:
            if self._base is not None and self._base[0] is base:
                return self._base[1], self._base[2]
        if base is None:
            full = torch.zeros(2, H, W)
        else:
            if base.rgb.shape[:2] != (H, W):
                raise ValueError(f"the base colorization is {base.rgb.shape[1]}x{base.rgb.shape[0]}, the photo {W}x{H}")
            rgb = torch.from_numpy(np.ascontiguousarray(base.rgb, dtype=np.float32)).permute(2, 0, 1)
            full = rgb_to_lab(rgb)[1:] / AB_SCALE
        grid = F.interpolate(full[None], size=(self.size, self.size), mode="area")[0]
        with self._lock:
            self._base = (base, full, grid)
        return full, grid

    @torch.no_grad()
    def propagate(
        self,
        strokes: "Sequence[Stroke]",
        base: "Colorization | None" = None,
        cancel: "CancelToken | None" = None,
        progress: Callable[[float, str], None] | None = None,
    ) -> "Colorization":
        """The photo coloured by ``strokes`` over ``base`` (None: over grey)."""
        from ..colorizer import Colorization
        from ..strokes import rasterize

        report = progress or (lambda f, m: None)
        check = cancel.check if cancel is not None else (lambda: None)
        check()
        with self._lock:
            if self._field is None:
                report(0.05, "building the G-CRF field")
            field = self.grid_field(check)
            check()
            report(0.5, "solving")
            cov, tgt = rasterize(list(strokes), self.photo.size, (self.size, self.size))
            full, grid = self._base_ab(base)
            x = field.propagate(cov, tgt, grid.to(field.solver.device)).float().cpu()
        check()
        report(0.8, "upsampling")
        L = torch.from_numpy(np.ascontiguousarray(self.photo.L, dtype=np.float32))
        ab = full * AB_SCALE + guided_upsample_ab((x - grid)[None] * AB_SCALE, L)[0]
        rgb = recombine(L, ab[None])[0].permute(1, 2, 0).contiguous().numpy()
        report(1.0, "done")
        return Colorization(
            rgb=rgb.astype(np.float32, copy=False), ab_low=x, method=METHOD, model=self.model_name,
            index=base.index if base is not None else 0, seed=base.seed if base is not None else 0,
        )

    @torch.no_grad()
    def attention(self, x: float, y: float) -> np.ndarray:
        """Which pixels image point (x, y) draws its colour from: row of Ŝ, upsampled to the
        photo's (H, W) and scaled to [0, 1] (the GUI overlays it)."""
        W, H = self.photo.size
        s = self.size
        gx = min(s - 1, max(0, int(x * s / W)))
        gy = min(s - 1, max(0, int(y * s / H)))
        row = attention_row(self.embeddings(), gy * s + gx, self.model.cfg.exclude_self).view(1, 1, s, s).cpu()
        up = F.interpolate(row, size=(H, W), mode="bilinear", align_corners=False)[0, 0].clamp(min=0)
        return (up / up.max().clamp(min=1e-12)).numpy().astype(np.float32)
