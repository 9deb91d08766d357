"""PIC (Royer, Kolesnikov, Lampert, BMVC 2017): a conditional PixelCNN++ over the chroma of a
photo, conditioned on an embedding g(L) of its grey image; sampling it gives true samples of
the joint distribution of colours, so its colorizations are the most varied of the three.

Deviations from the paper, and why:
- g(L) follows Table 1's pattern (stem, strided convs to the chroma resolution, then dilated
  gated residual blocks at rates 2 and 4) with widths ``embed_width * (1, 2, 4, …)`` and
  ``embed_blocks`` blocks per stage, so a small build trains on a CPU.
- The CPU build models 32x32 chroma under a 64-px L (x2) rather than the paper's 128-px L
  (x4): the same chroma grid at a quarter of g(L)'s cost; ``--preset paper`` restores x4.
- Plain convolutions, no weight normalisation: at our sizes Adam trains them as well and the
  exported file stays a plain state dict.

Sampling is sequential over the chroma pixels in raster order. ``sample_naive`` reruns the
whole decoder per pixel (the reference); ``sample_cached`` keeps every layer's activations and,
per pixel, computes only the one output each layer of the horizontal (down-right) stream gains,
and the vertical (down) stream once per row: the fast-generation idea of caching what earlier
steps computed. Both draw all their randomness up front from one generator, so with the same
seed they produce identical samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sampling import draw
from ..types import CancelToken, Generators, Hints, ProgressFn
from .backbone import check_backbone
from .base import LoadableModel, ModelConfig

METHOD = "pic"
LEVELS = 256  # chroma values are quantised to 256 levels over [-1, 1] (ab / 128)
N_PARAMS = 6  # per mixture component: logit, mean a, mean b, log-scale a, log-scale b, coeff b|a


@dataclass
class PICConfig(ModelConfig):
    size: int = 64  # working size (square) of L
    subsample: int = 2  # chroma is modelled at size // subsample (paper: 2 at 32 px, 4 at 128 px)
    embed_width: int = 16  # g(L) base width (paper: 32 for CIFAR-10, 64 for ILSVRC)
    embed_blocks: int = 1  # gated residual blocks per g(L) stage (paper: 2-3)
    embed_dim: int = 48  # channels of g(L), projected into each decoder block's bias
    width: int = 48  # decoder channels (paper: 160)
    n_blocks: int = 4  # gated residual blocks per decoder stream (paper: 4)
    n_mix: int = 10  # logistic mixture components (paper: 10)
    backbone: str = ""  # digest of the shared grey backbone g(L) is made from ("" = its own network)
    backbone_width: int = 0
    backbone_bins: int = 0

    LABEL: ClassVar[str] = "PIC"

    def validate(self) -> None:
        if self.backbone and (self.backbone_width <= 0 or self.backbone_bins <= 0):
            raise ValueError("a model on a backbone needs backbone_width and backbone_bins")
        if self.subsample not in (1, 2, 4, 8) or self.size % self.subsample:
            raise ValueError(f"subsample {self.subsample} must be 1, 2, 4 or 8 and divide size {self.size}")

    @property
    def chroma_size(self) -> int:
        return self.size // self.subsample


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """PixelCNN++'s non-linearity: ELU of x and of -x, stacked (doubles the channels)."""
    return F.elu(torch.cat([x, -x], dim=1))


# --- g(L): the embedding network ------------------------------------------------------------

class GatedBlock(nn.Module):
    """Gated residual block, not causal (for g): x + a * sigmoid(b), [a, b] = conv(conv(x))."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(2 * c, c, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv2(concat_elu(self.conv1(concat_elu(x)))).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class Embedding(nn.Module):
    """g(L): grey image at ``size`` -> (embed_dim, chroma, chroma) features."""

    def __init__(self, cfg: PICConfig):
        super().__init__()
        w, n = cfg.embed_width, cfg.embed_blocks
        layers: list[nn.Module] = [nn.Conv2d(1, w, 3, padding=1), *[GatedBlock(w) for _ in range(n)]]
        c = w
        for _ in range(int(math.log2(cfg.subsample))):
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), *[GatedBlock(2 * c) for _ in range(n)]]
            c *= 2
        top = 2 * c
        for dilation in (2, 4):
            layers += [nn.Conv2d(c, top, 3, padding=1), *[GatedBlock(top, dilation) for _ in range(n)]]
            c = top
        layers.append(nn.Conv2d(c, cfg.embed_dim, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.net(L / 50.0 - 1.0)


class BackboneEmbedding(nn.Module):
    """g(L) made from the shared backbone: its three feature scales and ab class probabilities,
    resampled to the chroma grid, projected and refined by gated blocks. Replaces the paper's
    ResNet g(L), which a CPU budget cannot train to know what things are; only this head is
    trained with PIC, the backbone stays frozen."""

    def __init__(self, cfg: PICConfig):
        super().__init__()
        bw, c = cfg.backbone_width, 4 * cfg.embed_width
        self.size = cfg.chroma_size
        self.proj = nn.Conv2d(2 * bw + 4 * bw + cfg.backbone_bins + 8 * bw, c, 1)
        self.blocks = nn.Sequential(*[GatedBlock(c, 1 + i % 2) for i in range(max(1, cfg.embed_blocks))])
        self.out = nn.Conv2d(c, cfg.embed_dim, 3, padding=1)

    def forward(self, f: Any) -> torch.Tensor:
        def fit(t: torch.Tensor) -> torch.Tensor:
            if t.shape[-1] > self.size:
                return F.adaptive_avg_pool2d(t, self.size)
            if t.shape[-1] < self.size:
                return F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)
            return t

        probs = torch.softmax(f.logits.float(), dim=1).to(f.s4.dtype)
        x = torch.cat([fit(f.s2), fit(torch.cat([f.s4, probs], 1)), fit(f.s8)], 1)
        return self.out(self.blocks(self.proj(x)))


# --- f: the conditional PixelCNN++ decoder ------------------------------------------------

class CausalConv(nn.Module):
    """A kh x (left+1+right) convolution whose output at (i, j) sees input rows i-kh+1..i and
    columns j-left..j+right: "down-shifted" when left == right, "down-right" when right == 0."""

    def __init__(self, cin: int, cout: int, kh: int, left: int, right: int):
        super().__init__()
        self.kh, self.left, self.right = kh, left, right
        self.conv = nn.Conv2d(cin, cout, (kh, left + 1 + right))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.left, self.right, self.kh - 1, 0)))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class CausalGatedBlock(nn.Module):
    """Gated residual block of one stream; g(L) biases its first convolution; the horizontal
    stream also receives the vertical stream's output through a 1x1 convolution."""

    def __init__(self, c: int, cond_dim: int, kh: int, left: int, right: int, aux: bool):
        super().__init__()
        self.conv1 = CausalConv(2 * c, c, kh, left, right)
        self.conv2 = CausalConv(2 * c, 2 * c, kh, left, right)
        self.cond = nn.Conv2d(cond_dim, c, 1, bias=False)
        self.aux = nn.Conv2d(2 * c, c, 1) if aux else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(concat_elu(x)) + self.cond(cond)
        if self.aux is not None:
            h = h + self.aux(concat_elu(aux))
        a, b = self.conv2(concat_elu(h)).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class Decoder(nn.Module):
    """PixelCNN++ without down/up-sampling (as in PIC): a vertical stream that sees the rows above
    and a horizontal stream that also sees the pixels to the left, 3 input channels (a, b, ones:
    so the network knows where the zero padding is)."""

    def __init__(self, cfg: PICConfig):
        super().__init__()
        c, e = cfg.width, cfg.embed_dim
        self.u0 = CausalConv(3, c, 2, 1, 1)  # then down_shift
        self.ul0_up = CausalConv(3, c, 1, 1, 1)  # then down_shift
        self.ul0_left = CausalConv(3, c, 2, 0, 0)  # then right_shift
        self.u_blocks = nn.ModuleList([CausalGatedBlock(c, e, 2, 1, 1, aux=False) for _ in range(cfg.n_blocks)])
        self.ul_blocks = nn.ModuleList([CausalGatedBlock(c, e, 2, 1, 0, aux=True) for _ in range(cfg.n_blocks)])
        self.out = nn.Conv2d(c, N_PARAMS * cfg.n_mix, 1)

    def forward(self, ab: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ab (B, 2, h, w) in [-1, 1], cond = g(L) (B, E, h, w) -> mixture parameters per pixel."""
        x = torch.cat([ab, torch.ones_like(ab[:, :1])], dim=1)
        u = down_shift(self.u0(x))
        ul = down_shift(self.ul0_up(x)) + right_shift(self.ul0_left(x))
        for ub, ulb in zip(self.u_blocks, self.ul_blocks):
            u = ub(u, cond)
            ul = ulb(ul, cond, u)
        return self.out(F.elu(ul))


# --- the discretised logistic mixture -----------------------------------------------------

def split_params(p: torch.Tensor, n_mix: int) -> tuple[torch.Tensor, ...]:
    """(B, 6M, ...) -> logits, mean_a, mean_b, log_s_a, log_s_b, coeff, each (B, M, ...)."""
    logit, ma, mb, sa, sb, co = p.split(n_mix, dim=1)
    return logit, ma, mb, sa.clamp(min=-7.0), sb.clamp(min=-7.0), torch.tanh(co)


def _bin_log_prob(x: torch.Tensor, mean: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """log P(x's bin) under a logistic discretised to LEVELS bins on [-1, 1]; the end bins take
    the tails (Salimans et al. 2017)."""
    half = 1.0 / (LEVELS - 1)
    c = x - mean
    inv_s = torch.exp(-log_s)
    plus, minus = inv_s * (c + half), inv_s * (c - half)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the bottom bin
    log_one_minus_cdf_min = -F.softplus(minus)  # log(1 - sigmoid(minus)): the top bin
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * c
    log_pdf_mid = mid - log_s - 2.0 * F.softplus(mid) + math.log(2 * half)  # when delta underflows
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


def mixture_log_prob(ab: torch.Tensor, params: torch.Tensor, n_mix: int) -> torch.Tensor:
    """log p(a, b) per pixel, (B, h, w), for quantised ab (B, 2, h, w); b's mean depends on a."""
    logit, ma, mb, sa, sb, co = split_params(params, n_mix)
    a, b = ab[:, :1], ab[:, 1:2]
    lp = _bin_log_prob(a, ma, sa) + _bin_log_prob(b, mb + co * a, sb)
    return torch.logsumexp(lp + F.log_softmax(logit, dim=1), dim=1)


def quantize(ab: torch.Tensor) -> torch.Tensor:
    """ab / 128 -> the centre of its bin among LEVELS levels on [-1, 1]."""
    return torch.round((ab.clamp(-1, 1) + 1) * ((LEVELS - 1) / 2)) * (2 / (LEVELS - 1)) - 1


@dataclass
class Noise:
    """All the randomness of one sampling run, drawn up front: per pixel, Gumbel noise to pick a
    component and two uniforms for the logistic draws of a and b."""

    gumbel: torch.Tensor  # (B, h, w, M)
    uniform: torch.Tensor  # (B, h, w, 2)

    @classmethod
    def draw(cls, n: int, h: int, w: int, n_mix: int, generator: Generators, device, dtype) -> "Noise":
        """One generator for all n samples, or one per sample (sample k then depends on k alone)."""
        u = draw(generator, n, lambda g, m: torch.rand(m, h, w, n_mix + 2, generator=g, device=device, dtype=torch.float64))
        u = u.clamp(1e-6, 1 - 1e-6)
        return cls((-torch.log(-torch.log(u[..., :n_mix]))).to(dtype), u[..., n_mix:].to(dtype))


def sample_pixel(params: torch.Tensor, gumbel: torch.Tensor, uniform: torch.Tensor, n_mix: int, temperature: float) -> torch.Tensor:
    """One pixel's (a, b) for each of B samples from its (B, 6M) parameters. Temperature divides
    the component logits and multiplies the logistic scales (T -> 0: the most likely modes)."""
    logit, ma, mb, sa, sb, co = split_params(params, n_mix)
    t = max(float(temperature), 1e-3)
    k = torch.argmax(logit / t + gumbel, dim=1, keepdim=True)
    pick = lambda v: v.gather(1, k)[:, 0]
    logistic = torch.log(uniform) - torch.log1p(-uniform)
    a = quantize(pick(ma) + torch.exp(pick(sa)) * t * logistic[:, 0])
    b = quantize(pick(mb) + pick(co) * a + torch.exp(pick(sb)) * t * logistic[:, 1])
    return torch.stack([a, b], dim=1)


# --- the model ------------------------------------------------------------------------------

HINT_CLAMP = 0.5
"""Chroma pixels whose hint coverage reaches this are clamped to the hint while sampling."""


@dataclass
class Clamp:
    """Pixels fixed while sampling (lock and resample): ``mask`` (h, w) bool, ``ab`` (2, h, w)
    quantised. Later pixels are sampled conditioned on them, as on any already drawn pixel."""

    mask: torch.Tensor
    ab: torch.Tensor

    @classmethod
    def from_hints(cls, hints: Hints, size: int, device, dtype) -> "Clamp":
        h = hints.resized((size, size))
        return cls((h.coverage >= HINT_CLAMP).to(device), quantize(h.ab.to(device, dtype)))

    def apply(self, ab: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """ab (n, 2) of pixel (i, j): the hint there if clamped."""
        if bool(self.mask[i, j]):
            return self.ab[:, i, j].expand_as(ab)
        return ab


class PIC(LoadableModel):
    METHOD = METHOD
    CONFIG = PICConfig
    LABEL = "PIC"
    INFERENCE_PARTS = ("embedding", "decoder")
    REPORTS_PROGRESS = True  # sampling is sequential: most of a run's time, reported per row
    BATCH_AT_ONCE = True  # each row's step serves all n samples

    def __init__(self, cfg: PICConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = BackboneEmbedding(cfg) if cfg.backbone else Embedding(cfg)
        self.backbone: nn.Module | None = None  # the shared backbone (attach_backbone); not in this model's files
        self.decoder = Decoder(cfg)
        self.meta: dict[str, Any] = {}

    def attach_backbone(self, backbone: nn.Module) -> None:
        """Look through ``backbone`` (shared, frozen); it must be the one this model was trained on."""
        check_backbone(self.LABEL, self.cfg.backbone, backbone)
        self.backbone = backbone.requires_grad_(False).eval()

    def condition(self, L: torch.Tensor) -> torch.Tensor:
        """g(L): (B, embed_dim, chroma, chroma), from the model's own network or the shared backbone."""
        if not self.cfg.backbone:
            return self.embedding(L)
        if self.backbone is None:
            raise RuntimeError("this model looks through a shared backbone: attach_backbone() first")
        with torch.no_grad():
            feats = self.backbone(L)
        return self.embedding(feats)

    @property
    def sampling_temperature(self) -> float:
        """The temperature the file was calibrated to (``divcolor-train export``): the user's 1.0,
        where samples differ from one another as much as from the photo, short of neon colour."""
        return float(self.meta.get("sampling", {}).get("temperature", 1.0))

    def internal_temperature(self, user: float) -> float:
        """The mixture temperature that gives the user's ``temperature``.

        Every method means the same by it: how far the samples of a set spread from one another,
        relative to the default (VAE-MDN and G-CRF scale their codes' departures by T, so their
        spread is linear in T). A PixelCNN's spread is not: each pixel's draw compounds along the
        raster, and 2.5 x the calibrated temperature is noise. So the export measures PIC's
        spread over a grid of temperatures on the training split (``spread_curve``: user T ->
        internal T) and this interpolates it, held at the ends. Files without a curve multiply."""
        curve = self.meta.get("sampling", {}).get("spread_curve")
        if not curve:
            return float(user) * self.sampling_temperature
        users, internals = zip(*sorted((float(u), float(t)) for u, t in curve))
        u = float(user)
        if u <= users[0]:  # below the curve: toward the modes in proportion (0 stays the mode)
            return internals[0] * u / users[0]
        for (u0, t0), (u1, t1) in zip(zip(users, internals), zip(users[1:], internals[1:])):
            if u <= u1:
                return t0 + (t1 - t0) * (u - u0) / (u1 - u0)
        return internals[-1]

    def chroma_target(self, ab: torch.Tensor) -> torch.Tensor:
        """Full-size ab / 128 (B, 2, S, S) -> the quantised, subsampled chroma the model predicts."""
        s = self.cfg.chroma_size
        if ab.shape[-1] != s:
            ab = F.interpolate(ab, size=(s, s), mode="area")
        return quantize(ab)

    def log_prob(self, L: torch.Tensor, ab_q: torch.Tensor) -> torch.Tensor:
        """Total log-likelihood (nats) of each image's quantised chroma, (B,)."""
        params = self.decoder(ab_q, self.condition(L))
        return mixture_log_prob(ab_q, params, self.cfg.n_mix).flatten(1).sum(1)

    # --- sampling ---------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.cfg.size

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
        """L (1, 1, S, S) in [0, 100] -> n samples of ab / 128, (n, 2, S/sub, S/sub), in one batch.

        ``temperature`` is the user's: :meth:`internal_temperature` maps it to the mixture's.
        ``include_mode`` is accepted for the common interface: PIC only draws samples (its
        pixelwise means are greyish, paper §4.4). ``hints`` (on L's grid) clamp the chroma
        pixels they cover while sampling, so the rest is drawn conditioned on them."""
        cond = self.condition(L).expand(n, -1, -1, -1)
        s = self.cfg.chroma_size
        noise = Noise.draw(n, s, s, self.cfg.n_mix, generator, L.device, cond.dtype)
        clamp = Clamp.from_hints(hints, s, L.device, cond.dtype) if hints is not None and hints.any else None
        return self.sample_cached(cond, noise, self.internal_temperature(temperature), progress, cancel, clamp)

    def colorize(
        self, L: torch.Tensor, n: int, generator: Generators = None, temperature: float = 1.0, mode: str = "samples",
        progress: ProgressFn | None = None, cancel: CancelToken | None = None,
    ) -> torch.Tensor:
        """The call form evaluation uses for every method (``mode`` as VAE-MDN's; PIC only draws)."""
        return self.sample(L, n, generator=generator, temperature=temperature, progress=progress, cancel=cancel)

    @torch.no_grad()
    def sample_naive(
        self, cond: torch.Tensor, noise: Noise, temperature: float = 1.0, rows: int | None = None, clamp: Clamp | None = None
    ) -> torch.Tensor:
        """Reference sampler: the whole decoder once per pixel (slow; for tests and benchmarks).
        ``rows`` stops after that many rows (the rest stays zero): every step costs the same, so
        a benchmark can time a few rows and scale."""
        n, _, h, w = cond.shape
        ab = torch.zeros(n, 2, h, w, device=cond.device, dtype=cond.dtype)
        for i in range(h if rows is None else min(rows, h)):
            for j in range(w):
                params = self.decoder(ab, cond)[:, :, i, j]
                v = sample_pixel(params, noise.gumbel[:, i, j], noise.uniform[:, i, j], self.cfg.n_mix, temperature)
                ab[:, :, i, j] = v if clamp is None else clamp.apply(v, i, j)
        return ab

    @torch.no_grad()
    def sample_cached(
        self,
        cond: torch.Tensor,
        noise: Noise,
        temperature: float = 1.0,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        clamp: Clamp | None = None,
    ) -> torch.Tensor:
        """Fast sampler, identical in result to ``sample_naive`` (see the module docstring)."""
        return _CachedSampler(self.decoder, cond, self.cfg.n_mix).run(noise, temperature, progress, cancel, clamp)


class _CachedSampler:
    """Per-layer activation buffers for one sampling run.

    Buffers hold each convolution's *input* (after concat_elu) for the whole chroma grid, with
    PT rows of zero padding above and PL / PR columns left / right, matching the zero padding of
    the full convolutions, so a window of a buffer is exactly what the full network would see.
    """

    PT, PL, PR = 2, 1, 1

    def __init__(self, dec: Decoder, cond: torch.Tensor, n_mix: int):
        self.dec, self.n_mix = dec, n_mix
        n, _, h, w = cond.shape
        self.n, self.h, self.w = n, h, w
        c = dec.out.in_channels
        kw = dict(device=cond.device, dtype=cond.dtype)
        buf = lambda ch: torch.zeros(n, ch, h + self.PT, w + self.PL + self.PR, **kw)
        self.x = buf(3)
        self.x[:, 2, self.PT :, self.PL : self.PL + w] = 1.0  # the ones channel, zero in the padding
        nb = len(dec.u_blocks)
        self.u_in, self.u_mid = [buf(2 * c) for _ in range(nb)], [buf(2 * c) for _ in range(nb)]
        self.ul_in, self.ul_mid = [buf(2 * c) for _ in range(nb)], [buf(2 * c) for _ in range(nb)]
        self.u_raw = [torch.zeros(n, c, h, w, **kw) for _ in range(nb + 1)]  # block inputs/outputs
        self.u_aux = [torch.zeros(n, 2 * c, h, w, **kw) for _ in range(nb)]  # concat_elu(u_k out)
        self.u_bias = [b.cond(cond) for b in dec.u_blocks]
        self.ul_bias = [b.cond(cond) for b in dec.ul_blocks]
        self.ul_aux = [b.aux for b in dec.ul_blocks]
        # Weights flattened once for per-pixel matrix products.
        self.flat: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _window(self, buf: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        """Rows r0..r1 and columns c0..c1 (inclusive, image coordinates, may reach the padding)."""
        return buf[:, :, r0 + self.PT : r1 + self.PT + 1, c0 + self.PL : c1 + self.PL + 1]

    def _pixel(self, conv: CausalConv, buf: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """conv's output at (i, j) from buf: (n, cout)."""
        key = id(conv)
        if key not in self.flat:
            wgt = conv.conv.weight
            self.flat[key] = (wgt.flatten(1).t().contiguous(), conv.conv.bias)
        wt, bias = self.flat[key]
        win = self._window(buf, i - conv.kh + 1, i, j - conv.left, j + conv.right)
        return torch.addmm(bias, win.reshape(self.n, -1), wt)

    def _row(self, conv: CausalConv, buf: torch.Tensor, i: int) -> torch.Tensor:
        """conv's output on the whole row i: (n, cout, w)."""
        win = self._window(buf, i - conv.kh + 1, i, -conv.left, self.w - 1 + conv.right)
        return F.conv2d(win, conv.conv.weight, conv.conv.bias)[:, :, 0]

    def _set(self, buf: torch.Tensor, i: int, j: int | slice, value: torch.Tensor) -> None:
        if isinstance(j, slice):
            buf[:, :, i + self.PT, self.PL : self.PL + self.w] = value
        else:
            buf[:, :, i + self.PT, j + self.PL] = value

    def _vertical_row(self, i: int) -> None:
        """The down stream on row i: it sees only rows above, all sampled by now."""
        dec = self.dec
        u = self._row(dec.u0, self.x, i - 1) if i >= 1 else torch.zeros_like(self.u_raw[0][:, :, 0])
        self.u_raw[0][:, :, i] = u
        for k, blk in enumerate(dec.u_blocks):
            self._set(self.u_in[k], i, slice(None), concat_elu(u))
            h = self._row(blk.conv1, self.u_in[k], i) + self.u_bias[k][:, :, i]
            self._set(self.u_mid[k], i, slice(None), concat_elu(h))
            a, b = self._row(blk.conv2, self.u_mid[k], i).chunk(2, dim=1)
            u = u + a * torch.sigmoid(b)
            self.u_raw[k + 1][:, :, i] = u
            self.u_aux[k][:, :, i] = concat_elu(u)

    def _horizontal_pixel(self, i: int, j: int) -> torch.Tensor:
        """The down-right stream at (i, j) -> mixture parameters (n, 6M)."""
        dec = self.dec
        x = torch.zeros_like(self.u_raw[0][:, :, 0, 0])
        if i >= 1:
            x = x + self._pixel(dec.ul0_up, self.x, i - 1, j)
        if j >= 1:
            x = x + self._pixel(dec.ul0_left, self.x, i, j - 1)
        for k, blk in enumerate(dec.ul_blocks):
            self._set(self.ul_in[k], i, j, concat_elu(x))
            aux = self.u_aux[k][:, :, i, j]
            h = self._pixel(blk.conv1, self.ul_in[k], i, j) + self.ul_bias[k][:, :, i, j]
            h = h + F.linear(aux, blk.aux.weight[:, :, 0, 0], blk.aux.bias)
            self._set(self.ul_mid[k], i, j, concat_elu(h))
            a, b = self._pixel(blk.conv2, self.ul_mid[k], i, j).chunk(2, dim=1)
            x = x + a * torch.sigmoid(b)
        return F.linear(F.elu(x), dec.out.weight[:, :, 0, 0], dec.out.bias)

    def run(
        self, noise: Noise, temperature: float, progress: ProgressFn | None, cancel: CancelToken | None, clamp: Clamp | None = None
    ) -> torch.Tensor:
        out = torch.zeros(self.n, 2, self.h, self.w, device=self.x.device, dtype=self.x.dtype)
        for i in range(self.h):
            if cancel is not None:
                cancel.check()
            self._vertical_row(i)
            for j in range(self.w):
                params = self._horizontal_pixel(i, j)
                ab = sample_pixel(params, noise.gumbel[:, i, j], noise.uniform[:, i, j], self.n_mix, temperature)
                if clamp is not None:
                    ab = clamp.apply(ab, i, j)
                out[:, :, i, j] = ab
                self.x[:, :2, i + self.PT, j + self.PL] = ab
            if progress is not None:
                progress((i + 1) / self.h, f"sampling row {i + 1} of {self.h}")
        return out

MODEL = PIC  # found by engine.models.registry()
