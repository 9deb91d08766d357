"""The papers' quality figures, computed the same way for every method.

Colour fields are ab / 128 (the models' units), shaped (K, 2, H, W) for K samples.
- error of best (Deshpande et al. Table 3): for each image, the smallest over samples of the
  mean per-pixel Euclidean ab error; lower means one sample is close to the truth.
- variance (Table 3): per-pixel variance across samples, averaged over pixels and channels;
  a proxy for diversity.
- pairwise SSIM (Messaoud et al. Table 2): mean SSIM between every pair of samples' RGB
  images; high means the samples share structure even when their colours differ.
- colourfulness (Hasler and Süsstrunk 2003): how vivid an RGB image looks, compared with the
  ground truth's; a model that plays safe with sepia or grey scores low on it while its error
  can still look fine.
- the baselines every table needs beside a method: grey (ab = 0) and the flat true-mean tint
  (each photo painted in its own mean ab, an oracle no method can know); a method whose best
  sample is not clearly below the tint has learned a cast, not where colours belong.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from skimage.metrics import structural_similarity


def error_of_best(samples: torch.Tensor, truth: torch.Tensor) -> float:
    """Smallest over samples of the mean per-pixel Euclidean ab error (``samples[:1]`` gives one
    colorization's own error)."""
    err = ((samples - truth[None]) ** 2).sum(1).sqrt().flatten(1).mean(1)
    return float(err.min())


def error_of_best_l1(samples: torch.Tensor, truth: torch.Tensor) -> float:
    """Like error_of_best but with the mean absolute error over pixels and both channels."""
    return float((samples - truth[None]).abs().flatten(1).mean(1).min())


def variance(samples: torch.Tensor) -> float:
    return float(samples.var(0, unbiased=False).mean())


def pairwise_ssim(rgb: torch.Tensor) -> float:
    """rgb: (K, 3, H, W) in [0, 1]."""
    imgs = [r.permute(1, 2, 0).cpu().numpy().astype(np.float64) for r in rgb]
    vals = [
        structural_similarity(a, b, channel_axis=2, data_range=1.0, win_size=7 if min(a.shape[:2]) >= 7 else 3)
        for a, b in itertools.combinations(imgs, 2)
    ]
    return float(np.mean(vals)) if vals else 1.0


def psnr(pred: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(((pred - truth) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def grey_baseline(truth: torch.Tensor) -> torch.Tensor:
    """The "no colour" answer for a truth (2, H, W): ab = 0 everywhere, shaped (1, 2, H, W)."""
    return torch.zeros_like(truth)[None]


def flat_tint_baseline(truth: torch.Tensor) -> torch.Tensor:
    """The oracle flat tint for a truth (2, H, W): every pixel painted in the photo's own mean ab,
    shaped (1, 2, H, W). No method sees the truth, so beating this means knowing where colours go."""
    return truth.mean((-2, -1), keepdim=True).expand_as(truth)[None].clone()


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Süsstrunk (2003) colourfulness M of each image in ``rgb`` (K, 3, H, W), sRGB in
    [0, 1], on their 0..255 scale: with rg = R - G and yb = (R + G) / 2 - B over the pixels,
    M = sqrt(σ_rg² + σ_yb²) + 0.3 sqrt(μ_rg² + μ_yb²) (population σ). Returns (K,) float64.

    Their perceptual scale for orientation: 0 not colourful, ~15 slightly, ~33 moderately,
    ~45 averagely, ~59 quite, ~82 highly, ~109 extremely colourful."""
    x = rgb.double() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    sigma = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
    mu = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return sigma + 0.3 * mu
