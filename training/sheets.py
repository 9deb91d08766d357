"""Pictures of results to look at: contact sheets (rows of tiles) and demo sheets (the models on
real historical photos, which have no ground truth). Every stage's evaluation calls these; this
module calls no stage.

Sheets are written for reading, at the size a reader sees them (:data:`SHEET_WIDTH`, the width
of a rendered Markdown page) and as JPEG unless the name asks for PNG: a sheet in
``docs/results/`` is a few hundred KB, not a few MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.color import AB_SCALE, rgb_to_lab
from engine.files import atomic_write

if TYPE_CHECKING:
    from engine.models.backbone import Backbone

DEMO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
SHEET_WIDTH = 896  # px: what a rendered Markdown page shows without scaling (7 tiles of 128 px)
SHEET_QUALITY = 85


def save_sheet(img: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 picture at a reader's size: no wider than :data:`SHEET_WIDTH`
    and no taller than twice that (Lanczos), as JPEG q85, or PNG where ``path`` ends in .png."""
    from PIL import Image

    im = Image.fromarray(img)
    s = min(1.0, SHEET_WIDTH / im.width, 2 * SHEET_WIDTH / im.height)
    if s < 1.0:
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    path = Path(path)
    if path.suffix.lower() == ".png":
        return atomic_write(path, lambda f: im.save(f, "PNG"))
    return atomic_write(path, lambda f: im.save(f, "JPEG", quality=SHEET_QUALITY, optimize=True))


def contact_sheet(rows: list[list[torch.Tensor]], path: str | Path, scale: int = 2) -> Path:
    """Save rows of (3, H, W) RGB tensors as one image: look at results, not only at numbers.
    Tiles of a row share a height; rows of different widths are padded with white. Small tiles
    are first enlarged ``scale`` times (nearest: pixels stay pixels), then the sheet is written
    by :func:`save_sheet` at a reader's size."""
    lines = [torch.cat(r, dim=2) for r in rows]
    width = max(x.shape[-1] for x in lines)
    grid = torch.cat([F.pad(x, (0, width - x.shape[-1]), value=1.0) for x in lines], dim=1)
    img = (grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    return save_sheet(img, path)


@torch.no_grad()
def demo_sheet(model: Backbone, folder: Path, dest: Path | None, height: int = 192) -> dict[str, Any]:
    """The backbone's best guesses on real historical photos (no ground truth): mean chroma, and a
    sheet of grey | colorized pairs to look at."""
    from PIL import Image

    from engine.color import grey_to_L, guided_upsample_ab, lab_to_rgb

    chroma, tiles = [], []
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in DEMO_SUFFIXES)
    for f in files:
        im = Image.open(f).convert("L")
        im = im.resize((max(1, round(im.width * height / im.height)), height), Image.LANCZOS)
        L = grey_to_L(torch.from_numpy(np.asarray(im, np.float32) / 255.0))[None, None]
        small = F.interpolate(L, size=(model.cfg.size,) * 2, mode="area")
        ab = model.annealed_mean(model(small).logits) * AB_SCALE
        ab = guided_upsample_ab(ab, L[0, 0])
        chroma.append(float(ab.norm(dim=1).mean()))
        tiles.append(torch.cat([lab_to_rgb(torch.cat([L[0], torch.zeros_like(ab[0])])), lab_to_rgb(torch.cat([L[0], ab[0]]))], 2))
    out: dict[str, Any] = {"demo_photos": len(files), "demo_mean_chroma": round(float(np.mean(chroma)), 2) if chroma else 0.0}
    if dest is not None and tiles:
        rows, row, width = [], [], 0
        for t in tiles:  # rows of about 1600 px
            if row and width + t.shape[-1] > 1600:
                rows.append(row)
                row, width = [], 0
            row.append(t)
            width += t.shape[-1]
        rows.append(row)
        w = max(sum(t.shape[-1] for t in r) for r in rows)
        grid = torch.cat([F.pad(torch.cat(r, 2), (0, w - sum(t.shape[-1] for t in r)), value=1.0) for r in rows], 1)
        arr = (grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        out["demo_sheet"] = str(save_sheet(arr, dest))
    return out


@torch.no_grad()
def demo_samples(checkpoint: Path, folder: Path, dest: Path | None, n_samples: int = 5, seed: int = 0,
                 height: int = 128) -> dict[str, Any]:
    """The method on real photos without ground truth (``bw_demo/``), through the app's own path
    (the engine facade: working size, guided upsampling, the photo's L): the mean chroma of the
    samples, and a sheet with one row per photo, grey | samples 0..n-1 (sample 0 the most likely)."""
    from PIL import Image

    from engine.colorizer import Colorizer
    from engine.io import photo_from_array

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in DEMO_SUFFIXES)
    colorizer = Colorizer(device="cpu")
    info = colorizer.add_model(checkpoint)
    chroma, rows = [], []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("L")
            im = im.resize((max(1, round(im.width * height / im.height)), height), Image.LANCZOS)
            grey = np.asarray(im, np.float32) / 255.0
        photo = photo_from_array(grey)
        out = colorizer.sample(photo, info.method, n=n_samples, seed=seed, checkpoint=info.path)
        rgb = torch.from_numpy(np.stack([o.rgb for o in out])).permute(0, 3, 1, 2).float()
        chroma.append(float(rgb_to_lab(rgb)[:, 1:].norm(dim=1).mean()))
        grey_rgb = torch.from_numpy(grey)[None].expand(3, -1, -1)
        rows.append([grey_rgb, *rgb])
    out: dict[str, Any] = {"demo_photos": len(files),
                           "demo_mean_chroma": round(float(np.mean(chroma)), 2) if chroma else 0.0,
                           "demo_note": "mean Lab chroma sqrt(a²+b²) of the samples (0..~130), photos at "
                           f"{height} px high, seed {seed}, the app's sampling"}
    if dest is not None and rows:
        out["demo_sheet"] = str(contact_sheet(rows, dest, scale=1))
        out["demo_sheet_columns"] = f"grey | {n_samples} samples (the first is the most likely)"
    return out
