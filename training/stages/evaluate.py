"""``divcolor-train eval``: the papers' metrics on a test split, printed and saved as JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine import metrics as M
from engine.color import AB_SCALE, recombine
from engine.colorizer import load_model

from .. import data as D


@torch.no_grad()
def evaluate(checkpoint: Path, data: str, split: str = "test", n_samples: int = 5, limit: int = 0, seed: int = 0) -> dict:
    """eob / variance / pairwise SSIM over ``n_samples`` per image, as in the papers' tables."""
    model = load_model(checkpoint)
    size = model.cfg.size
    lab = D.load_lab(data, split, size, limit or None)
    eob, var, ssim = [], [], []
    t0 = time.time()
    for i in range(len(lab)):
        L, ab = lab.L[i : i + 1], lab.ab[i]
        g = torch.Generator().manual_seed(seed + i)
        samples = model.colorize(L, n_samples, generator=g, mode="means")
        eob.append(M.error_of_best(samples, ab))
        var.append(M.variance(samples))
        ssim.append(M.pairwise_ssim(recombine(L[0, 0], samples * AB_SCALE)))
    result = {
        "method": model.meta.get("method"),
        "checkpoint": Path(checkpoint).name,
        "data": f"{Path(data).name} {split} ({len(lab)} images, {size}x{size})",
        "samples": n_samples,
        "error_of_best": round(float(np.mean(eob)), 5),
        "variance": round(float(np.mean(var)), 6),
        "pairwise_ssim": round(float(np.mean(ssim)), 4),
        "units": "ab/128; eob = mean per-pixel Euclidean ab error of the best sample",
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    return result
