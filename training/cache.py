"""Decode the JPEG shards once into uint8 arrays on disk, then memory-map them.

Decoding 40k JPEGs costs ~1 CPU-minute; a multi-hour run restarted a dozen times would pay it
every time, and holding float32 Lab for 100k images would need ~5 GB. A uint8 array (12 KiB per
64x64 image) read through ``np.load(mmap_mode="r")`` costs nothing to reopen, and Lab is made
per batch in torch, which is cheaper than the network by two orders of magnitude.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import platformdirs
from PIL import Image

from engine.files import atomic_write

from . import data as D


def cache_dir() -> Path:
    """Where decoded shards live (``DIVCOLOR_CACHE`` overrides, e.g. for tests)."""
    env = os.environ.get("DIVCOLOR_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("divcolor")) / "shards"


def _key(shard: Path, size: int) -> str:
    st = shard.stat()
    h = hashlib.sha256(f"{shard.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}".encode()).hexdigest()[:12]
    return f"{shard.stem}-{size}-{h}.npy"


def _decode(shard: Path, size: int) -> np.ndarray:
    imgs = []
    for img in D._decode_shard(shard):
        if size and (img.shape[0] != size or img.shape[1] != size):
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
        imgs.append(img)
    return np.stack(imgs)


def cached_shard(shard: Path, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8, memory-mapped; decoded and written on first use (size 0: as stored)."""
    path = cache_dir() / _key(shard, size)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"decoding {shard.name} once into {path}", file=sys.stderr, flush=True)
        arr = _decode(shard, size)
        atomic_write(path, lambda f: np.save(f, arr))
    return np.load(path, mmap_mode="r")


def cached_split(data: str | Path, split: str, size: int, limit: int = 0) -> np.ndarray:
    """All shards of one split at ``size`` (or a folder of images, decoded without a cache)."""
    p = Path(data)
    if p.is_dir():
        return D.load_rgb(p, split, size, limit or None)
    paths = D.shard_paths(p, split)
    if not paths:
        raise FileNotFoundError(f"no shards match {p.parent / (p.name + '_' + split + '_*.npz')}")
    parts, n = [], 0
    for s in paths:
        arr = cached_shard(s, size)
        if limit:
            arr = arr[: limit - n]
        parts.append(arr)
        n += len(arr)
        if limit and n >= limit:
            break
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
