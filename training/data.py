"""Training data: the prepared ``.npz`` shards of ../shared/data and plain folders of images.

Everything is decoded once into memory as Lab at the working size: at 64x64 the largest
training set (natural64, 10k images) takes ~500 MB as float32, and decoding per step would cost
more CPU than the network on a 2-core machine.
"""

from __future__ import annotations

import glob
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.color import AB_SCALE, rgb_to_lab

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def shard_paths(data: str | Path, split: str) -> list[Path]:
    """Resolve ``--data`` to shard files.

    ``data`` is a ``.npz`` file, or a prefix such as ``../shared/data/lfw64`` that names
    ``lfw64_<split>_*.npz`` (always globbed and sorted: a split may grow more shards).
    """
    p = Path(data)
    if p.suffix == ".npz":
        return [p]
    return [Path(s) for s in sorted(glob.glob(str(p.parent / f"{p.name}_{split}_*.npz")))]


def _decode_shard(path: Path) -> list[np.ndarray]:
    z = np.load(path, allow_pickle=False)
    jpeg, off = z["jpeg"], z["offsets"]
    return [
        np.asarray(Image.open(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes())).convert("RGB"))
        for i in range(len(off) - 1)
    ]


def _folder_images(folder: Path, split: str, test_fraction: float = 0.1) -> list[Path]:
    """A plain folder: use ``folder/<split>/`` if present, else a fixed hash split of the files."""
    sub = folder / split
    root = sub if sub.is_dir() else folder
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if sub.is_dir():
        return files
    import zlib

    in_test = lambda f: (zlib.crc32(str(f.relative_to(root)).encode()) % 1000) < test_fraction * 1000
    return [f for f in files if in_test(f) == (split == "test")]


def load_rgb(data: str | Path, split: str, size: int, limit: int | None = None) -> np.ndarray:
    """All images of a split as uint8 (N, size, size, 3)."""
    p = Path(data)
    out: list[np.ndarray] = []
    if p.is_dir():
        for f in _folder_images(p, split):
            img = Image.open(f)
            img = img.convert("RGB")
            img = _center_square(img).resize((size, size), Image.LANCZOS)
            out.append(np.asarray(img))
            if limit and len(out) >= limit:
                break
    else:
        paths = shard_paths(p, split)
        if not paths:
            raise FileNotFoundError(f"no shards match {p.parent / (p.name + '_' + split + '_*.npz')}")
        for s in paths:
            for img in _decode_shard(s):
                if img.shape[0] != size or img.shape[1] != size:
                    img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
                out.append(img)
                if limit and len(out) >= limit:
                    break
            if limit and len(out) >= limit:
                break
    if not out:
        raise FileNotFoundError(f"no images found for split '{split}' in {p}")
    return np.stack(out)


def _center_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


@dataclass
class LabSet:
    """L in [0, 100] as (N, 1, S, S) and ab / 128 as (N, 2, S, S), float32."""

    L: torch.Tensor
    ab: torch.Tensor

    def __len__(self) -> int:
        return self.L.shape[0]

    def batch(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        L, ab = self.L[idx], self.ab[idx]
        if flip is not None and bool(flip.any()):
            L = torch.where(flip[:, None, None, None], L.flip(-1), L)
            ab = torch.where(flip[:, None, None, None], ab.flip(-1), ab)
        return L, ab


def to_lab(rgb: np.ndarray, chunk: int = 1024) -> LabSet:
    Ls, abs_ = [], []
    for i in range(0, len(rgb), chunk):
        x = torch.from_numpy(rgb[i : i + chunk]).permute(0, 3, 1, 2).float() / 255.0
        lab = rgb_to_lab(x)
        Ls.append(lab[:, :1].contiguous())
        abs_.append((lab[:, 1:] / AB_SCALE).contiguous())
    return LabSet(torch.cat(Ls), torch.cat(abs_))


def load_lab(data: str | Path, split: str, size: int, limit: int | None = None) -> LabSet:
    return to_lab(load_rgb(data, split, size, limit))


def describe(data: str | Path, split: str, n: int) -> dict:
    """What a checkpoint records about its training data."""
    p = Path(data)
    return {"path": p.name if not p.is_dir() else str(p.name) + "/", "split": split, "images": int(n)}


def resize_lab(lab: LabSet, size: int) -> LabSet:
    if lab.L.shape[-1] == size:
        return lab
    return LabSet(
        F.interpolate(lab.L, size=(size, size), mode="area"), F.interpolate(lab.ab, size=(size, size), mode="area")
    )
