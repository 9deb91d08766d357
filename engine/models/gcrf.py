"""G-CRF colorization (Messaoud, Forsyth & Schwing, ECCV 2018): a VAE-MDN whose decoder output
is the unary term of a fully connected Gaussian CRF over the ab field.

    x = argmin ||(I - S) x||² + β ||H x - α||²   ⇔   ((I-S)ᵀ(I-S) + βHᵀH) x = βHᵀα

- Unary α: the VAE-MDN decoder conditioned on the code z and the grey image g (reused as is:
  grey encoder, decoder, MDN over z; the colour encoder only for training).
- HOC term: a fully convolutional embedding network maps the grey image to per-pixel
  embeddings A (D x P at the working grid), Ŝ = row-softmax(AᵀA / √D) without the diagonal
  (see :func:`engine.gcrf_solver.similarity` for why), S = diag(Ŝ, Ŝ): one Ŝ for a and b.
- Automatic colorization: H = I, α = the decoded sample, β = ``beta_auto`` (tuned on the train
  split at export; files without it: ``beta_test``, the paper's 5); one Ŝ for all n samples,
  solved together (:func:`engine.gcrf_solver.solve_cg`).
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
- Training the HOC term (training/stages/gcrf_hoc.py) may solve on a coarser grid than inference
  (embeddings average-pooled), because backpropagating a dense 4096² system is slow on a CPU.
- MAP solve by Cholesky / conjugate gradients instead of LU: M is symmetric positive definite.
- Learned propagation of hints (optional, ``hint_branch``; Zhang et al. 2017, which the paper's
  Table 3 competes with): :class:`HintNet` turns the hint map, its mask and a base (a sample,
  or nothing) into a corrected unary, so a hint on a shirt colours the shirt before the solve;
  the solve then makes the hints exact and smooths along Ŝ. Trained by ``gcrf-hints`` with
  the rest frozen; files without it load as before.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..gcrf_solver import GCRFSolver, attention_row, similarity, solve_cg
from ..types import CancelToken, Generators, Hints, ProgressFn
from .vae_mdn import VAEMDN, VAEMDNConfig

METHOD = "gcrf"
HINT_WEIGHT = 20.0
"""Weight of a fully hinted pixel's unary toward the hint, relative to β, when sampling with
hints: the sample there is 20/21 the hint and 1/21 its own decoding."""
N_FREQ = 4  # Fourier frequencies of the position features: sin/cos(π f u), f = 1, 2, 4, 8


@dataclass
class GCRFConfig(VAEMDNConfig):
    """VAE-MDN's fields (the unary term and the MDN) plus the HOC term and the G-CRF weights."""

    embed_dim: int = 32  # D: length of each pixel's embedding
    embed_width: int = 32  # channels of the embedding network
    embed_grey_features: bool = True  # the embedding net also sees the grey encoder's features
    beta_train: float = 1.0  # β while training (paper: 1)
    beta_test: float = 5.0  # β for automatic colorization and under strokes (paper: 5)
    beta_auto: float = 0.0  # β of the automatic colorization alone, tuned on train at export (0: beta_test)
    stroke_base: float = 0.1  # weak unary toward the picked colorization, as a fraction of beta_test
    exclude_self: bool = True  # mask Ŝ's diagonal (see engine.gcrf_solver.similarity)
    embed_cap: float = 0.0  # bound on each embedding's squared norm (Ŝ's logits); 0: unbounded (the paper)
    hint_branch: bool = False  # a learned hint branch (HintNet) corrects the unary from the hints
    hint_width: int = 10  # channels of the hint branch's first level (the shipped files' width)
    hint_unary: float = 0.001  # weak unary toward the hint branch's unary for hints alone, x beta_test (tuned on train)

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
        self.cap = float(cfg.embed_cap)

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
        a = self.out(torch.cat([x, pos], dim=1))
        return soft_cap_norm(a, self.cap) if self.cap > 0 else a


def soft_cap_norm(a: torch.Tensor, cap: float) -> torch.Tensor:
    """Each pixel's embedding (dim 1) rescaled so its squared norm stays below ``cap``:
    ||a|| -> √cap·tanh(||a||/√cap), the identity for small norms.

    A deviation from the paper's unbounded S = softmax(AᵀA): trained on the backbone's features,
    the faces embedding ran away (mean ||a||² 4 -> 370,000 in 600 steps), Ŝ became one-hot and
    every pixel copied one other pixel (speckle). The pre-backbone models that worked settled at
    ||a||² ≈ 60-75, below the shipped cap of 100."""
    r = math.sqrt(cap)
    norm = a.float().norm(dim=1, keepdim=True).clamp_min(1e-6)
    return a * (r * torch.tanh(norm / r) / norm).to(a.dtype)


HINT_CHANNELS = 7
"""The hint branch's per-pixel input: hint ab x coverage (2), coverage (1), base ab (2), whether
there is a base (1), grey (1)."""


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation)


class HintNet(nn.Module):
    """Learned propagation of hints (Zhang et al. 2017, "Real-time user-guided colorization"):
    the hint map, its mask and the base colorization in, a corrected unary out.

    A small U-Net over the grey encoder's four scales (so it sees what the backbone sees when
    the model has one): the hints are encoded down to /16 (the whole 64x64 image in the
    receptive field, so one hint on a shirt can reach the whole shirt), joined with the grey
    features at each scale, and decoded back to a change of the base's ab. The output layer
    starts at zero, so a fresh branch returns the base unchanged (fine-tuning starts from the
    model as it was). No normalisation layers: train and inference behave alike at batch 1.
    """

    def __init__(self, cfg: "GCRFConfig"):
        super().__init__()
        h, g = cfg.hint_width, cfg.width
        self.e1 = _conv(HINT_CHANNELS, h, 2)  # /2
        self.e2 = _conv(h + g, 2 * h, 2)  # /4 (+ grey /2)
        self.e3 = _conv(2 * h + 2 * g, 4 * h, 2)  # /8 (+ grey /4)
        self.e4 = _conv(4 * h + 4 * g, 4 * h, 2)  # /16 (+ grey /8)
        self.mid = nn.ModuleList([_conv(4 * h + 8 * g, 4 * h), _conv(4 * h, 4 * h), _conv(4 * h, 4 * h, dilation=2)])
        self.d3 = _conv(8 * h, 4 * h)  # /8
        self.d2 = _conv(4 * h + 2 * h, 2 * h)  # /4
        self.d1 = _conv(2 * h + h, h)  # /2
        self.out = _conv(h + HINT_CHANNELS, 2)  # /1
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, grey: torch.Tensor, feats: Sequence[torch.Tensor], base: torch.Tensor, has_base: torch.Tensor,
        coverage: torch.Tensor, hint_ab: torch.Tensor,
    ) -> torch.Tensor:
        """grey (1|n, 1, S, S), feats (1|n, …) per scale, base (n, 2, S, S) ab/128 (zeros where
        there is none), has_base (n,) 0/1, coverage (n, 1, S, S), hint_ab (n, 2, S, S)
        -> the unary (n, 2, S, S): base + the learned change, in [-1, 1]."""
        n = base.shape[0]
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
        f = [_expand_to(t, n) for t in feats]
        hb = has_base.to(base.dtype).view(n, 1, 1, 1)
        x0 = torch.cat([hint_ab * coverage, coverage, base * hb, hb.expand_as(coverage), _expand_to(grey, n)], 1)
        e1 = F.relu(self.e1(x0))
        e2 = F.relu(self.e2(torch.cat([e1, f[0]], 1)))
        e3 = F.relu(self.e3(torch.cat([e2, f[1]], 1)))
        e4 = F.relu(self.e4(torch.cat([e3, f[2]], 1)))
        m = F.relu(self.mid[0](torch.cat([e4, up(f[3], e4)], 1)))
        for conv in self.mid[1:]:
            m = m + F.relu(conv(m))
        d = F.relu(self.d3(torch.cat([up(m, e3), e3], 1)))
        d = F.relu(self.d2(torch.cat([up(d, e2), e2], 1)))
        d = F.relu(self.d1(torch.cat([up(d, e1), e1], 1)))
        change = self.out(torch.cat([up(d, x0), x0], 1))
        return (base * hb + change).clamp(-1, 1)


def _expand_to(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if t.shape[0] == n else t.expand(n, *t.shape[1:])


class GCRF(VAEMDN):
    """The whole model; ``color_encoder`` is None in exported (inference-only) checkpoints."""

    INFERENCE_PARTS = ("grey_encoder", "decoder", "mdn", "embed", "hint_net")
    METHOD = METHOD
    CONFIG = GCRFConfig
    LABEL = "G-CRF"
    # One Ŝ serves all n solves, and the CG solve reads all of Ŝ per iteration whatever the
    # column count (memory bound): 5 samples of a 480x600 photo in one call took 1.3 s, in five
    # calls 6.2 s (faces, one core).
    BATCH_AT_ONCE = True

    def __init__(self, cfg: GCRFConfig, with_color_encoder: bool = True):
        super().__init__(cfg, with_color_encoder)
        self.cfg: GCRFConfig = cfg
        self.embed = EmbedNet(cfg)
        # without the branch an empty module: files exported before it (no hint_net tensors) load
        self.hint_net: nn.Module = HintNet(cfg) if cfg.hint_branch else nn.Module()

    @property
    def has_hint_branch(self) -> bool:
        return isinstance(self.hint_net, HintNet)

    def hint_unary(
        self, feats: Sequence[torch.Tensor], grey: torch.Tensor, base: torch.Tensor | None, hints: Hints | None,
        n: int = 1,
    ) -> torch.Tensor:
        """The hint branch's unary (n, 2, S, S): ``base`` (n, 2, S, S) in ab/128 corrected by what
        ``hints`` say, or a colorization from the hints alone when ``base`` is None (Zhang et
        al.'s setting). Needs :attr:`has_hint_branch`; differentiable (training calls it)."""
        s = self.cfg.size
        dev, dt = grey.device, grey.dtype
        if base is None:
            base_t, has = torch.zeros(n, 2, s, s, device=dev, dtype=dt), torch.zeros(n, device=dev, dtype=dt)
        else:
            base_t, has = base.to(dt), torch.ones(base.shape[0], device=dev, dtype=dt)
            n = base.shape[0]
        if hints is not None and hints.any:
            h = hints.resized((s, s))
            cov = _expand_to(h.coverage.to(dev, dt).reshape(-1, 1, s, s), n)
            ab = _expand_to(h.ab.to(dev, dt).reshape(-1, 2, s, s), n)
        else:
            cov, ab = torch.zeros(n, 1, s, s, device=dev, dtype=dt), torch.zeros(n, 2, s, s, device=dev, dtype=dt)
        return self.hint_net(grey, feats, base_t, has, cov, ab)

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

    def solve_automatic(
        self, unary: torch.Tensor, S_hat: torch.Tensor, tol: float = 1e-5, hints: Hints | None = None
    ) -> torch.Tensor:
        """G-CRF mean with H = I, β = ``beta_auto`` (else beta_test): unary (n, 2, S, S), Ŝ (P, P)
        -> (n, 2, S, S). The HOC term is trained on a coarser grid than this solve runs on
        (``hoc_train_size`` 32 on a CPU), so the paper's β = 5 is not this grid's best: export
        tunes β on the train split, least best-of-5 error under a colourfulness bound (a small β
        smooths along Ŝ: faces .0498 at 5, .0411 at 0.02, but general photos lose their colour).

        With ``hints`` (on this grid), hinted pixels get a second, ``HINT_WEIGHT`` times
        stronger unary toward the hint colour: β(1 + HINT_WEIGHT·c) x = β unary + β HINT_WEIGHT c
        hint there, so every sample agrees with what the user locked (lock and resample)."""
        n, c, h, w = unary.shape
        rhs = unary.float().reshape(n * c, h * w).T  # (P, 2n): every sample's a and b at once
        beta = self.cfg.beta_auto or self.cfg.beta_test
        weights = torch.full((h * w,), beta, device=rhs.device)
        x0 = rhs
        rhs = beta * rhs
        if hints is not None and hints.any:
            hh = hints.resized((h, w))
            cov = hh.coverage.to(rhs.device).float().reshape(-1)
            target = hh.ab.to(rhs.device).float().reshape(2, -1).T.repeat(1, n)  # (P, 2n) like rhs
            extra = beta * HINT_WEIGHT * cov
            weights = weights + extra
            rhs = rhs + extra[:, None] * target
        x = solve_cg(S_hat.float(), weights, rhs, tol=tol, x0=x0)  # warm start: the unary
        return x.T.reshape(n, c, h, w).to(unary.dtype)

    @torch.no_grad()
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
    ) -> torch.Tensor:
        """L (1, 1, S, S) in [0, 100] -> ab (n, 2, S, S): n G-CRF samples (see
        :class:`engine.types.SamplingModel`). Codes as VAE-MDN's (with hints: the agreeing
        ones); each decoded field is the unary term (corrected by the hint branch, if the model
        has one), one Ŝ serves all n solves, and hints enter every solve as strong unaries."""
        if cancel is not None:
            cancel.check()
        feats, grey = self.grey_features(L)
        z = self.codes(L, n, generator, temperature, include_mode, hints, feats, grey)
        unary = self.decoder(z, feats, grey)
        if self.has_hint_branch and hints is not None and hints.any:
            unary = self.hint_unary(feats, grey, unary, hints)  # each sample's unary corrected by the hints
        S_hat = similarity(self.embed(grey, feats).flatten(2).float(), self.cfg.exclude_self)[0]
        return self.solve_automatic(unary, S_hat, hints=hints).clamp(-1, 1)

    @torch.no_grad()
    def colorize(
        self,
        L: torch.Tensor,
        n: int,
        generator: Generators = None,
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
    def propagate(self, coverage: Any, stroke_ab: Any, base: Any, prior: Any = None) -> torch.Tensor:
        """coverage (S, S) in [0, 1], stroke_ab (2, S, S) and base (2, S, S) in ab/128 -> (2, S, S).

        numpy arrays (what :func:`engine.strokes.rasterize` returns) or tensors. Pixels with zero
        coverage keep ``base`` up to what the strokes propagate to them. ``prior`` (2, S, S): the
        change the weak unary pulls toward instead of 0 (a learned hint branch's unary minus
        the base), so unstroked pixels take what the branch infers from the strokes.
        """
        dev, dt = self.solver.device, self.solver.dtype
        s = self.size
        c = _as_tensor(coverage, dev, dt).reshape(-1).clamp(0, 1)
        t = _as_tensor(stroke_ab, dev, dt).reshape(2, -1).T
        b = _as_tensor(base, dev, dt).reshape(2, -1).T
        if c.shape[0] != s * s or t.shape[0] != s * s or b.shape[0] != s * s:
            raise ValueError(f"coverage, stroke_ab and base must be on the {s}x{s} grid")
        wc = self.stroke_weight * c
        rhs = wc[:, None] * (t - b)
        if prior is not None:
            rhs = rhs + self.base_weight * _as_tensor(prior, dev, dt).reshape(2, -1).T
        delta = self.solver.solve(self.base_weight + wc, rhs)
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

MODEL = GCRF  # found by engine.models.registry()
