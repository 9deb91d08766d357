"""Batch augmentation in torch: crops, flips, and the ways old photographs are degraded.

The app's real input is a scanned historical print, not a clean desaturated JPEG: grain, soft
focus, faded or uneven contrast, compression blocks, dust and scratches. Degrading only the
grey input (the colour target stays clean) teaches the grey network to see through them.
All randomness comes from the generator passed in, so a resumed run replays the same batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crops(rgb: torch.Tensor, out: int, g: torch.Generator, min_scale: float = 0.6) -> torch.Tensor:
    """(N, 3, S, S) float -> (N, 3, out, out): a random square crop of side ∈ [min_scale, 1]·S
    at a random place, mirrored with p = 0.5, resampled bilinearly (area first when shrinking a lot)."""
    n, _, s, _ = rgb.shape
    if s >= 2 * out:  # bilinear sampling aliases beyond 2x; halve with an area filter first
        k = s // out // 2 * 2 if s // out >= 2 else 1
        rgb = F.avg_pool2d(rgb, k)
        s = rgb.shape[-1]
    scale = min_scale + (1 - min_scale) * torch.rand(n, generator=g)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    return F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gauss_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of (N, 1, H, W) with sigma (N,) in pixels, one grouped conv."""
    n = x.shape[0]
    r = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)
    y = x.reshape(1, n, *x.shape[-2:])
    y = F.pad(y, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=n)
    y = F.conv2d(y, k[:, None, :, None], groups=n)
    return y.reshape_as(x)


def degrade_L(L: torch.Tensor, g: torch.Generator, p: float = 0.6) -> torch.Tensor:
    """Old-photo damage on L (N, 1, H, W) in [0, 100]; each image is left clean with 1 - p.

    Each damaged image draws every kind independently: faded/low or high contrast, uneven
    exposure (a tilted gradient and vignetting), soft focus, film grain, JPEG-like 8x8 blocking,
    dust specks and a scratch.
    """
    n, _, h, w = L.shape
    u = lambda: torch.rand(n, generator=g)  # noqa: E731
    on = u() < p
    if not bool(on.any()):
        return L
    y = L.clone()

    def pick(q: float) -> torch.Tensor:
        return (on & (u() < q)).view(n, 1, 1, 1)

    # contrast and fading: stretch around the mean, lift the blacks
    m = y.mean((2, 3), keepdim=True)
    c = (0.45 + 0.8 * u()).view(n, 1, 1, 1)
    lift = (u() * 20).view(n, 1, 1, 1)
    y = torch.where(pick(0.6), (m + (y - m) * c) * (1 - lift / 100) + lift, y)
    # uneven exposure: linear gradient and vignette
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ang = u() * 2 * math.pi
    grad = (torch.cos(ang).view(n, 1, 1) * xx + torch.sin(ang).view(n, 1, 1) * yy)[:, None]
    vig = (xx**2 + yy**2)[None, None]
    y = torch.where(pick(0.4), y + (u() * 15).view(n, 1, 1, 1) * grad - (u() * 15).view(n, 1, 1, 1) * vig, y)
    # soft focus
    y = torch.where(pick(0.35), _gauss_blur(y, 0.3 + 1.2 * u()), y)
    # film grain, slightly correlated
    noise = torch.randn(y.shape, generator=g) * (1 + 5 * u()).view(n, 1, 1, 1)
    noise = _gauss_blur(noise, torch.full((n,), 0.6))
    y = torch.where(pick(0.5), y + noise, y)
    # JPEG-like blocking: pull each 8x8 block toward its mean
    if h % 8 == 0 and w % 8 == 0:
        blocks = F.interpolate(F.avg_pool2d(y, 8), scale_factor=8, mode="nearest")
        a = (0.15 + 0.35 * u()).view(n, 1, 1, 1)
        y = torch.where(pick(0.2), (1 - a) * y + a * blocks, y)
    # dust specks (white or black) and one vertical scratch
    specks = (torch.rand(y.shape, generator=g) < (0.002 * u()).view(n, 1, 1, 1)).float()
    tone = torch.where(torch.rand(y.shape, generator=g) < 0.5, 100.0, 0.0)
    y = torch.where(pick(0.3) & (specks > 0), tone, y)
    col = (u() * w).long().clamp(max=w - 1)
    scratch = torch.zeros(n, 1, 1, w, dtype=torch.bool)
    scratch[torch.arange(n), 0, 0, col] = True
    y = torch.where(pick(0.15) & scratch, (y + 40).clamp(max=100), y)
    return y.clamp(0, 100)
