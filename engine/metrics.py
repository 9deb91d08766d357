"""The papers' quality figures, computed the same way for every method.

Colour fields are ab / 128 (the models' units), shaped (K, 2, H, W) for K samples.
- error of best (Deshpande et al. Table 3): for each image, the smallest over samples of the
  mean per-pixel Euclidean ab error; lower means one sample is close to the truth.
- variance (Table 3): per-pixel variance across samples, averaged over pixels and channels;
  a proxy for diversity.
- pairwise SSIM (Messaoud et al. Table 2): mean SSIM between every pair of samples' RGB
  images; high means the samples share structure even when their colours differ.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from skimage.metrics import structural_similarity


def error_of_best(samples: torch.Tensor, truth: torch.Tensor) -> float:
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
