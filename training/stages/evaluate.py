"""``divcolor-train eval``: the papers' metrics on a test split, printed and saved as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from engine import metrics as M
from engine.color import AB_SCALE, guided_upsample_ab, recombine
from engine.colorizer import load_model

from .. import data as D


def contact_sheet(rows: list[list[torch.Tensor]], path: str | Path, scale: int = 2) -> Path:
    """Save rows of (3, S, S) RGB tensors as one PNG: look at results, not only at numbers."""
    from PIL import Image

    grid = torch.cat([torch.cat(r, dim=2) for r in rows], dim=1)
    img = (grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(img)
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return Path(path)


@torch.no_grad()
def evaluate(
    checkpoint: Path, data: str, split: str = "test", n_samples: int = 5, limit: int = 0, seed: int = 0,
    sheet: str | Path | None = None, sheet_rows: int = 12, quiet: bool = False,
) -> dict:
    """eob / variance / pairwise SSIM over ``n_samples`` per image, as in the papers' tables.

    Methods that predict chroma below the working size (PIC) are upsampled to it with the
    engine's guided upsampler, as the app does, and compared there."""
    model = load_model(checkpoint)
    size = model.cfg.size
    lab = D.load_lab(data, split, size, limit or None)
    eob, eob_l1, var, ssim = [], [], [], []
    rows: list[list[torch.Tensor]] = []
    t0 = time.time()
    for i in range(len(lab)):
        L, ab = lab.L[i : i + 1], lab.ab[i]
        g = torch.Generator().manual_seed(seed + i)
        samples = model.colorize(L, n_samples, generator=g, mode="means").float()
        if samples.shape[-1] != size:
            samples = guided_upsample_ab(samples * AB_SCALE, L[0, 0]) / AB_SCALE
        eob.append(M.error_of_best(samples, ab))
        eob_l1.append(M.error_of_best_l1(samples, ab))
        var.append(M.variance(samples))
        rgb = recombine(L[0, 0], samples * AB_SCALE)
        ssim.append(M.pairwise_ssim(rgb))
        if sheet and len(rows) < sheet_rows:
            # grey input | ground truth | the samples
            truth = recombine(L[0, 0], ab[None] * AB_SCALE)[0]
            rows.append([recombine(L[0, 0], torch.zeros(1, 2, size, size))[0], truth, *rgb])
    result = {
        "method": model.meta.get("method"),
        "checkpoint": Path(checkpoint).name,
        "data": f"{Path(data).name} {split} ({len(lab)} images, {size}x{size})",
        "samples": n_samples,
        "error_of_best": round(float(np.mean(eob)), 5),
        "error_of_best_l1": round(float(np.mean(eob_l1)), 5),
        "variance": round(float(np.mean(var)), 6),
        "pairwise_ssim": round(float(np.mean(ssim)), 4),
        "units": "ab/128; error_of_best = mean per-pixel Euclidean ab error of the best sample; "
        "error_of_best_l1 = mean absolute error over pixels and both channels; variance = per-pixel "
        "variance across samples, averaged",
        "seconds": round(time.time() - t0, 1),
    }
    if sheet:
        result["contact_sheet"] = str(contact_sheet(rows, sheet))
    if not quiet:
        print(json.dumps(result, indent=2))
    return result
