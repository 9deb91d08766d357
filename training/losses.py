"""Losses of the three methods' training stages (VAE-MDN §3.1 and §4 so far).

All colour fields are ab / 128, shaped (N, 2, S, S). Per-image sums, batch means: the paper's
weights (0.1 mah, 1e-3 grad, 1e-2 KL) are relative to per-image sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.color import AB_SCALE

HIST_BIN = 10.0  # ab units per histogram bin, as Zhang et al.
HIST_RANGE = 110.0  # ab in [-110, 110]
HIST_BINS = int(2 * HIST_RANGE / HIST_BIN)


@dataclass
class ColorStats:
    """Training-set statistics the decoder loss needs; saved in the checkpoint."""

    pca_mean: torch.Tensor  # (2*S*S,)
    pca_components: torch.Tensor  # (k, 2*S*S), orthonormal rows
    pca_sigma: torch.Tensor  # (k,) standard deviation along each component
    hist_weights: torch.Tensor  # (HIST_BINS, HIST_BINS) colourfulness weight per ab bin

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"stats.{k}": v for k, v in self.__dict__.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "ColorStats":
        return cls(**{k.removeprefix("stats."): v for k, v in t.items() if k.startswith("stats.")})


def ab_bins(ab: torch.Tensor) -> torch.Tensor:
    """(N, 2, S, S) ab/128 -> flat bin index (N, S, S)."""
    q = ((ab * AB_SCALE + HIST_RANGE) / HIST_BIN).floor().long().clamp(0, HIST_BINS - 1)
    return q[:, 0] * HIST_BINS + q[:, 1]


def compute_stats(ab: torch.Tensor, k: int = 20, smooth_sigma: float = 1.0, mix: float = 0.5, seed: int = 0) -> ColorStats:
    """PCA of whole colour fields and the rebalancing weights of the ab histogram.

    The weights follow Zhang et al.'s smoothed form w ∝ ((1-λ) p̃ + λ/Q)^-1 with E_p[w] = 1
    instead of a raw 1/H: a raw inverse explodes on colours seen a handful of times.
    """
    n = ab.shape[0]
    flat = ab.reshape(n, -1).double()
    mean = flat.mean(0)
    g = torch.Generator().manual_seed(seed)
    sub = flat[torch.randperm(n, generator=g)[: min(n, 8000)]] - mean
    # Top-k principal directions by randomized SVD: an exact SVD of an (8000, 8192) matrix
    # takes minutes on one core, this takes seconds and agrees on the leading components.
    torch.manual_seed(seed)
    _, s, v = torch.svd_lowrank(sub, q=k + 10, niter=6)
    comps = v[:, :k].T
    sigma = s[:k] / (sub.shape[0] - 1) ** 0.5
    # Fewer images than components (a dry run, a tiny fine-tune) leaves trailing σ at ~0, and
    # 1/σ² then blows L_mah up to 1e32 in one step; real data stays far above this floor.
    sigma = sigma.clamp_min(1e-3 * float(sigma[0]) + 1e-12)

    counts = torch.bincount(ab_bins(ab).flatten(), minlength=HIST_BINS**2).double().view(1, 1, HIST_BINS, HIST_BINS)
    p = counts / counts.sum()
    r = max(1, int(round(3 * smooth_sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g1 = torch.exp(-(x**2) / (2 * smooth_sigma**2))
    g1 = g1 / g1.sum()
    p_s = F.conv2d(F.conv2d(p, g1.view(1, 1, 1, -1), padding=(0, r)), g1.view(1, 1, -1, 1), padding=(r, 0))
    support = (counts > 0).double()
    w = 1.0 / ((1 - mix) * p_s + mix / HIST_BINS**2)
    w = w * support
    w = w / (w * p).sum()  # expected weight over training pixels = 1
    # Contiguous, as a resumed run loads them from its state file: a transposed PCA basis takes
    # another GEMM path whose fp32 rounding differs, and the resume would not be bit-exact.
    return ColorStats(*(t.float().contiguous() for t in (mean, comps, sigma, w.view(HIST_BINS, HIST_BINS))))


def pixel_weights(ab_true: torch.Tensor, stats: ColorStats) -> torch.Tensor:
    return stats.hist_weights.flatten()[ab_bins(ab_true)]  # (N, S, S)


def hist_loss(pred: torch.Tensor, true: torch.Tensor, stats: ColorStats) -> torch.Tensor:
    """L_hist (eq. 2): squared error weighted by the rarity of the true colour."""
    w = pixel_weights(true, stats)
    return (w * ((pred - true) ** 2).sum(1)).flatten(1).sum(1).mean()


def mah_loss(pred: torch.Tensor, true: torch.Tensor, stats: ColorStats) -> torch.Tensor:
    """L_mah: Mahalanobis distance along the top-k principal components plus the residual."""
    diff = (true - pred).flatten(1)
    proj = diff @ stats.pca_components.T  # (N, k)
    res = diff - proj @ stats.pca_components
    sig2 = stats.pca_sigma**2
    return ((proj**2 / sig2).sum(1) + (res**2).sum(1) / sig2[-1]).mean()


def grad_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """L_grad (eq. 3): match horizontal and vertical finite differences."""
    d = pred - true
    gh = d[..., :, 1:] - d[..., :, :-1]
    gv = d[..., 1:, :] - d[..., :-1, :]
    return (gh.pow(2).flatten(1).sum(1) + gv.pow(2).flatten(1).sum(1)).mean()


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


def vae_loss(
    pred: torch.Tensor, true: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, stats: ColorStats,
    w_mah: float = 0.1, w_grad: float = 1e-3, w_kl: float = 1e-2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_dec = L_hist + 0.1 L_mah + 1e-3 L_grad, plus 1e-2 KL (§3.1)."""
    lh, lm, lg, lk = hist_loss(pred, true, stats), mah_loss(pred, true, stats), grad_loss(pred, true), kl_loss(mu, logvar)
    total = lh + w_mah * lm + w_grad * lg + w_kl * lk
    return total, {"hist": lh.item(), "mah": lm.item(), "grad": lg.item(), "kl": lk.item()}


def mdn_loss(log_pi: torch.Tensor, mu: torch.Tensor, z: torch.Tensor, sigma: float) -> torch.Tensor:
    """Closest-component MDN loss (eq. 6): -log pi_m + |z - mu_m|^2 / (2 sigma^2)."""
    d2 = ((mu - z[:, None, :]) ** 2).sum(-1)  # (N, M)
    m = d2.argmin(1)
    idx = torch.arange(z.shape[0], device=z.device)
    return (-log_pi[idx, m] + d2[idx, m] / (2 * sigma**2)).mean()


# --- backbone: per-pixel classification over quantised ab (Zhang et al. 2016, §2.1-2.2) ------

SOFT_NEIGHBOURS = 5  # soft encoding: the 5 nearest bins ...
SOFT_SIGMA = 5.0  # ... weighted by a Gaussian of σ = 5 ab units


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = SOFT_NEIGHBOURS, sigma: float = SOFT_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """ab (N, 2, h, w) in Lab units, bins (Q, 2) -> (index (N, k, h, w), weight (N, k, h, w)).

    Spreading each target over its nearest bins (instead of one-hot) tells the classifier that
    neighbouring bins are nearly right, which keeps the predicted distribution smooth."""
    n, _, h, w = ab.shape
    x = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    d2 = torch.cdist(x, bins.to(x.dtype)).square()
    d2k, idx = d2.topk(k, dim=1, largest=False)
    wk = torch.softmax(-d2k / (2 * sigma**2), dim=1)
    shape = lambda t: t.view(n, h, w, k).permute(0, 3, 1, 2)  # noqa: E731
    return shape(idx), shape(wk)


def rebalance_weights(counts: torch.Tensor, bins: torch.Tensor, lam: float = 0.5, sigma: float = SOFT_SIGMA) -> torch.Tensor:
    """Per-bin loss weights w ∝ ((1-λ) p̃ + λ/Q)^-1 with E_p̃[w] = 1 (Zhang et al. eq. 4).

    p̃ is the empirical bin distribution smoothed by a Gaussian over ab. Without it the loss is
    dominated by the desaturated bins that cover most pixels, and predictions turn grey-brown."""
    p = counts.double() / counts.sum().clamp(min=1)
    d2 = torch.cdist(bins.double(), bins.double()).square()
    kern = torch.exp(-d2 / (2 * sigma**2))
    p_s = kern @ p
    p_s = p_s / p_s.sum()
    q = len(p)
    w = 1.0 / ((1 - lam) * p_s + lam / q)
    w = w / (p_s * w).sum()
    return w.float()


def rebalanced_ce(logits: torch.Tensor, idx: torch.Tensor, wk: torch.Tensor, class_w: torch.Tensor) -> torch.Tensor:
    """Soft-target cross entropy, each pixel weighted by the rebalancing weight of its nearest bin."""
    logp = F.log_softmax(logits.float(), dim=1)
    ce = -(logp.gather(1, idx) * wk).sum(1)
    return (class_w[idx[:, 0]] * ce).mean()
