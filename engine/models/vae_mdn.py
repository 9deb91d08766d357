"""VAE-MDN (Deshpande et al., CVPR 2017): a VAE embeds 64x64 ab fields in a d-dim code z; an
MDN predicts a Gaussian mixture P(z | grey); decoding mixture means or samples gives diverse
colorizations.

Deviations from the paper, and why:
- The decoder also receives features of the grey image through skip connections (the paper's
  "ours+skip" variant, §7): at CPU-trainable widths it puts colour edges where the luminance
  edges are, which a 1x1 code alone cannot.
- Grey features: the paper feeds the MDN conv-7 features of Zhang et al.'s colorization CNN.
  Ours come from the shared backbone (``engine.models.backbone``, that same kind of network,
  trained as an ab classifier) through a small trained adapter, when the config names one;
  older files use the VAE's own grey encoder, trained in the VAE stage. Either way the MDN stage
  freezes them and trains a small conv + FC head on top, as the paper holds its first layers fixed.
- Widths are ``width * (1, 2, 4, 8)`` instead of 128..1024, so small builds train on a CPU;
  ``width=128`` is the paper's network.
- The colour encoder is needed only for training; exported checkpoints omit it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sampling import SetGenerators, distinct_components, draw, skip
from ..types import CancelToken, Generators, Hints, ProgressFn
from .backbone import check_backbone
from .base import LoadableModel, ModelConfig

METHOD = "vae-mdn"


@dataclass
class VAEMDNConfig(ModelConfig):
    size: int = 64  # working resolution (square) of the ab field
    latent_dim: int = 64  # d: 64 for natural photos, 32 for faces
    width: int = 32  # base channel count; the paper's network is width=128
    grey_skip: bool = True  # "ours+skip": decoder sees grey-encoder features
    n_components: int = 8  # MDN mixture components
    mdn_sigma: float = 0.1  # fixed spherical standard deviation of each component
    mdn_hidden: int = 512  # MDN fully connected width
    dropout: float = 0.1  # on fully connected layers, as in the paper
    backbone: str = ""  # digest of the shared grey backbone this model looks through ("" = its own encoder)
    backbone_width: int = 0  # that backbone's width (sizes the adapter)
    backbone_bins: int = 0  # that backbone's number of ab classes

    LABEL: ClassVar[str] = "VAE-MDN"

    def validate(self) -> None:
        if self.backbone and (self.backbone_width <= 0 or self.backbone_bins <= 0):
            raise ValueError("a model on a backbone needs backbone_width and backbone_bins")


def _conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    """Conv -> ReLU -> BatchNorm (the paper's C_ReLU(k, s, n) -> B), zero-padded to keep size/stride."""
    if stride == 1 and k % 2 == 0:  # even kernel, "same" size: pad one more on the right/bottom
        pad = nn.ZeroPad2d((k // 2 - 1, k // 2, k // 2 - 1, k // 2))
        conv = nn.Conv2d(cin, cout, k, 1, 0)
        return nn.Sequential(pad, conv, nn.ReLU(inplace=True), nn.BatchNorm2d(cout))
    pad = (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU(inplace=True), nn.BatchNorm2d(cout))


def _grey_input(L: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> roughly zero-centred input for the networks."""
    return L / 50.0 - 1.0


class Encoder(nn.Module):
    """C(5,2,w)-B-C(5,2,2w)-B-C(5,2,4w)-B-C(4,2,8w)-B, as in §6.1; returns every scale."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        w = width
        self.blocks = nn.ModuleList(
            [_conv_bn(cin, w, 5, 2), _conv_bn(w, 2 * w, 5, 2), _conv_bn(2 * w, 4 * w, 5, 2), _conv_bn(4 * w, 8 * w, 4, 2)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats  # sizes /2, /4, /8, /16


class BackboneAdapter(nn.Module):
    """The grey encoder's four scales (/2, /4, /8, /16; widths w, 2w, 4w, 8w) made from the shared
    backbone's features instead of learned from scratch: the paper's "features of a colorization
    network" for the MDN, and the "+skip" features for the decoder. The /4 level also sees the
    backbone's ab class probabilities, the most direct statement of which colours belong where.
    Only these 1x1 / 3x3 projections are trained with the head; the backbone stays frozen."""

    def __init__(self, cfg: VAEMDNConfig):
        super().__init__()
        w, bw = cfg.width, cfg.backbone_width
        self.s2 = _conv_bn(2 * bw, w, 1, 1)
        self.s4 = _conv_bn(4 * bw + cfg.backbone_bins, 2 * w, 1, 1)
        self.s8 = _conv_bn(8 * bw, 4 * w, 1, 1)
        self.s16 = _conv_bn(8 * bw, 8 * w, 3, 2)

    def forward(self, f: Any) -> list[torch.Tensor]:
        probs = torch.softmax(f.logits.float(), dim=1).to(f.s4.dtype)
        return [self.s2(f.s2), self.s4(torch.cat([f.s4, probs], 1)), self.s8(f.s8), self.s16(f.s8)]


class ColorEncoder(nn.Module):
    """ab field -> (mu, logvar) of Q(z | C)."""

    def __init__(self, cfg: VAEMDNConfig):
        super().__init__()
        self.conv = Encoder(2, cfg.width)
        n = 8 * cfg.width * (cfg.size // 16) ** 2
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(n, 2 * cfg.latent_dim)

    def forward(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(ab)[-1].flatten(1)
        mu, logvar = self.fc(self.drop(h)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class Decoder(nn.Module):
    """z (+ grey features) -> ab in [-1, 1]: U(4)-C(4,1,8w)-B-U(2)-C(5,1,4w)-B-...-U(2)-C_tanh(5,1,2)."""

    def __init__(self, cfg: VAEMDNConfig):
        super().__init__()
        w, d = cfg.width, cfg.latent_dim
        self.skip = cfg.grey_skip
        self.base = cfg.size // 16
        s = (lambda c: c) if self.skip else (lambda c: 0)
        self.blocks = nn.ModuleList(
            [
                _conv_bn(d + s(8 * w), 8 * w, 4, 1),
                _conv_bn(8 * w + s(4 * w), 4 * w, 5, 1),
                _conv_bn(4 * w + s(2 * w), 2 * w, 5, 1),
                _conv_bn(2 * w + s(w), w, 5, 1),
            ]
        )
        self.out = nn.Conv2d(w + s(1), 2, 5, 1, 2)

    def forward(self, z: torch.Tensor, grey_feats: list[torch.Tensor] | None, grey: torch.Tensor | None) -> torch.Tensor:
        x = z[:, :, None, None].expand(-1, -1, self.base, self.base)
        skips = list(reversed(grey_feats)) if self.skip else [None] * 4  # /16, /8, /4, /2
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            if skips[i] is not None:
                x = torch.cat([x, _expand(skips[i], x.shape[0])], dim=1)
            x = block(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if self.skip:
            x = torch.cat([x, _expand(grey, x.shape[0])], dim=1)
        return torch.tanh(self.out(x))


def _expand(t: torch.Tensor, n: int) -> torch.Tensor:
    """Broadcast per-image grey features over n samples (batch of 1 -> n, or already n)."""
    return t if t.shape[0] == n else t.expand(n, *t.shape[1:])


class MDN(nn.Module):
    """Grey features (/8 and /16 scales of the frozen grey encoder) -> (log pi, mu) of P(z | G)."""

    def __init__(self, cfg: VAEMDNConfig):
        super().__init__()
        w, d, m = cfg.width, cfg.latent_dim, cfg.n_components
        self.m, self.d = m, d
        self.conv = nn.Sequential(
            _conv_bn(4 * w, 4 * w, 3, 1),
            _conv_bn(4 * w, 8 * w, 3, 2),
            _conv_bn(8 * w + 8 * w, 8 * w, 3, 1),
        )
        n = 8 * w * (cfg.size // 16) ** 2
        self.fc = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(n, cfg.mdn_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mdn_hidden, m * d + m),
        )

    def forward(self, grey_feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        f8, f16 = grey_feats[2], grey_feats[3]
        h = self.conv[1](self.conv[0](f8))
        h = self.conv[2](torch.cat([h, f16], dim=1)).flatten(1)
        out = self.fc(h)
        log_pi = F.log_softmax(out[:, : self.m], dim=1)
        mu = out[:, self.m :].view(-1, self.m, self.d)
        return log_pi, mu


class VAEMDN(LoadableModel):
    """The whole model. ``color_encoder`` is None in exported (inference-only) checkpoints."""

    METHOD = METHOD
    CONFIG = VAEMDNConfig
    LABEL = "VAE-MDN"
    INFERENCE_PARTS = ("grey_encoder", "decoder", "mdn")

    def __init__(self, cfg: VAEMDNConfig, with_color_encoder: bool = True):
        super().__init__()
        self.cfg = cfg
        self.grey_encoder = BackboneAdapter(cfg) if cfg.backbone else Encoder(1, cfg.width)
        self.backbone: nn.Module | None = None  # the shared backbone (attach_backbone); not in this model's files
        self.decoder = Decoder(cfg)
        self.mdn = MDN(cfg)
        self.color_encoder = ColorEncoder(cfg) if with_color_encoder else None
        self.meta: dict[str, Any] = {}

    @classmethod
    def for_inference(cls, cfg: VAEMDNConfig) -> "VAEMDN":
        return cls(cfg, with_color_encoder=False)  # the colour encoder is needed only to train

    def attach_backbone(self, backbone: nn.Module) -> None:
        """Look through ``backbone`` (shared, frozen); it must be the one this model was trained on."""
        check_backbone(self.LABEL, self.cfg.backbone, backbone)
        self.backbone = backbone.requires_grad_(False).eval()

    def grey_features(self, L: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        grey = _grey_input(L)
        if not self.cfg.backbone:
            return self.grey_encoder(grey), grey
        if self.backbone is None:
            raise RuntimeError("this model looks through a shared backbone: attach_backbone() first")
        with torch.no_grad():
            feats = self.backbone(L)
        return self.grey_encoder(feats), grey

    def decode(self, z: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        feats, grey = self.grey_features(L)
        return self.decoder(z, feats, grey)

    @torch.no_grad()
    def sample_codes(
        self,
        L: torch.Tensor,
        n: int,
        generator: Generators = None,
        temperature: float = 1.0,
        mode: str = "auto",
    ) -> torch.Tensor:
        """Codes for n colorizations of one image L (1, 1, S, S).

        ``"auto"``: the top mixture mean first (the most likely colorization), then draws from
        the mixture (:func:`mixture_codes`). ``"samples"``: draws only. ``"means"``: the mixture
        means in descending order of π (the paper's top-k, for evaluation), then draws beyond
        the number of components.
        """
        feats, _ = self.grey_features(L)
        log_pi, mu = self.mdn(feats)
        if mode == "means":
            k = min(n, self.cfg.n_components)
            top = mu[0, torch.argsort(log_pi[0], descending=True)[:k]]
            rest = mixture_codes(log_pi[0], mu[0], self.cfg.mdn_sigma, n - k, skip(generator, k), temperature, False)
            return torch.cat([top, rest])
        if mode not in ("auto", "samples"):
            raise ValueError(f"unknown mode {mode!r} (auto, samples or means)")
        return mixture_codes(log_pi[0], mu[0], self.cfg.mdn_sigma, n, generator, temperature, mode == "auto")

    @torch.no_grad()
    def colorize(
        self,
        L: torch.Tensor,
        n: int,
        generator: Generators = None,
        temperature: float = 1.0,
        mode: str = "auto",
    ) -> torch.Tensor:
        """L (1, 1, S, S) in [0, 100] -> ab (n, 2, S, S) in ab/128 units, n samples in one batch
        (``mode`` as in :meth:`sample_codes`; training's evaluation uses ``"means"``)."""
        z = self.sample_codes(L, n, generator, temperature, mode)
        return self.decode(z, L)

    @property
    def input_size(self) -> int:
        return self.cfg.size

    @torch.no_grad()
    def codes(
        self,
        L: torch.Tensor,
        n: int,
        generator: Generators,
        temperature: float,
        include_mode: bool,
        hints: Hints | None,
        feats: list[torch.Tensor] | None = None,
        grey: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The n codes :meth:`sample` decodes. With hints, each sample keeps, of
        ``HINT_CANDIDATES`` codes drawn for it (for the mode: of all mixture means), the one
        whose decoding agrees best with the hints, then refines it by a few gradient steps on z
        (:func:`refine_codes`): new samples honour what the user locked and vary elsewhere."""
        if feats is None or grey is None:
            feats, grey = self.grey_features(L)
        log_pi, mu = self.mdn(feats)
        log_pi, mu = log_pi[0], mu[0]
        sigma = self.cfg.mdn_sigma
        if hints is None or not hints.any or n == 0:
            return mixture_codes(log_pi, mu, sigma, n, generator, temperature, include_mode)
        h = hints.resized((self.cfg.size, self.cfg.size))
        cov, target = h.coverage.to(mu.device, mu.dtype), h.ab.to(mu.device, mu.dtype)
        chosen = []
        if include_mode:
            chosen.append(_best_agreeing(self, mu, feats, grey, cov, target))
        m = n - len(chosen)
        if m > 0:
            k = HINT_CANDIDATES
            cand = draw(skip(generator, len(chosen)), m,
                        lambda g, j: mixture_codes(log_pi, mu, sigma, j * k, g, temperature, False))
            err = torch.cat([_hint_error(self.decoder(c, feats, grey), cov, target) for c in cand.split(64)])
            best = err.view(m, k).argmin(1)
            chosen.append(cand.view(m, k, -1)[torch.arange(m, device=cand.device), best])
        z0 = torch.cat(chosen)
        return refine_codes(self.decoder, z0, feats, grey, cov, target, sigma * max(float(temperature), 1e-3))

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
        """L (1, 1, S, S) in [0, 100] -> ab (n, 2, S, S) in ab/128 units (see
        :class:`engine.types.SamplingModel`): sample 0 the top mixture mean when
        ``include_mode``, the rest drawn (a component by π^(1/T), z = μ + σ·T·ε)."""
        if cancel is not None:
            cancel.check()
        feats, grey = self.grey_features(L)
        z = self.codes(L, n, generator, temperature, include_mode, hints, feats, grey)
        return self.decoder(z, feats, grey)


HINT_CANDIDATES = 16
"""Codes drawn per sample when hints must be honoured; the best agreeing one is kept."""
REFINE_STEPS = 8
"""Gradient steps on a hinted sample's code (see :func:`refine_codes`)."""


def mixture_codes(
    log_pi: torch.Tensor, mu: torch.Tensor, sigma: float, n: int, generator: Generators, temperature: float,
    include_mode: bool,
) -> torch.Tensor:
    """n codes from the mixture (log π (M,), μ (M, d), spherical σ).

    With ``include_mode`` the first is the top mixture mean (the most likely colorization). The
    others take *distinct* components (:func:`engine.sampling.distinct_components`: Gumbel-top-k
    on log π / T without replacement, so a dominant component cannot fill the set with repeats
    of sample 0, and the seed chooses which), drawn as z = μ₀ + T·(μ_c − μ₀) + σ·T·ε around the
    top mean μ₀: T is the distance from the most likely colorization, so 0.5 halves every
    sample's departure from it and 1.5 goes half again as far; T = 1 is the paper's draw.
    With one generator per sample (:func:`engine.sampling.sample_generators`), sample k's noise
    comes from the k-th, and the components from the set's own order.
    """
    out = []
    top = int(torch.argmax(log_pi))
    if include_mode and n > 0:
        out.append(mu[top][None])
    m = n - len(out)
    if m > 0:
        t = max(float(temperature), 1e-3)
        gens = skip(generator, len(out))
        index = gens.first if isinstance(gens, SetGenerators) else len(out)  # of the first draw in its set
        after_mode = include_mode or index > 0  # a set's sample 0 is its mode: draws avoid its component
        comp = distinct_components(log_pi.float() / t, m, gens, top if after_mode else None, index - after_mode)
        eps = draw(gens, m, lambda g, j: torch.randn(j, mu.shape[1], generator=g, device=mu.device, dtype=mu.dtype))
        anchor = mu[top][None]
        out.append(anchor + t * (mu[comp] - anchor) + sigma * t * eps)
    return torch.cat(out) if out else mu[:0]


def _hint_error(ab: torch.Tensor, cov: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coverage-weighted mean squared ab error at the hinted pixels, per sample (n,)."""
    w = cov[None, None]
    return ((ab - target[None]) ** 2 * w).flatten(1).sum(1) / w.sum().clamp(min=1e-8)


def _best_agreeing(model: "VAEMDN", codes: torch.Tensor, feats, grey, cov, target) -> torch.Tensor:
    """The one code (1, d) of ``codes`` whose decoding best matches the hints."""
    err = _hint_error(model.decoder(codes, feats, grey), cov, target)
    return codes[torch.argmin(err)][None]


def refine_codes(
    decoder: nn.Module, z0: torch.Tensor, feats, grey, cov: torch.Tensor, target: torch.Tensor, spread: float,
    steps: int = REFINE_STEPS, lr: float = 0.05,
) -> torch.Tensor:
    """A few Adam steps on z towards decodings that match the hints, held near z0 by a
    Gaussian prior of standard deviation ``spread`` (the mixture's σ·T), so the code moves only
    as far as the hints ask and the sample keeps its own colours elsewhere."""
    feats = [f.detach() for f in feats]
    grey = grey.detach()
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            fit = _hint_error(decoder(z, feats, grey), cov, target).sum()
            prior = (((z - z0) / spread) ** 2).sum() / (2 * z.shape[1]) * 1e-2
            (z.grad,) = torch.autograd.grad(fit + prior, [z])  # the decoder's weights get no .grad
            opt.step()
    return z.detach()

MODEL = VAEMDN  # found by engine.models.registry()
