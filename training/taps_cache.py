"""Encode every training image once through the frozen grey encoder, then memory-map the maps.

The ImageNet encoder is frozen, so what it sees of an image never changes: running it at every
step of every head would cost the encoder's time (most of a step on a CPU) again and again.
Each image (and its mirror: flips are the heads' augmentation) is encoded once into fp16 arrays
under the platformdirs cache, one file per tap, and a head's step reads its rows. The key is the
encoder's weights (SHA-256), its input size, and the *content* of the L images given, so a
different data set, size, limit or order can never be served stale maps. Encoding resumes where
it stopped (rows done are counted in a side file after each chunk): a session's end costs a chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.files import atomic_write
from engine.models import encoder as E
from engine.models.backbone import encoder_input

from .cache import cache_dir

TAPS = ("s4", "s8", "s16", "s32", "pooled")


def _key(L: torch.Tensor, variant: str, size: int, flip: bool) -> str:
    h = hashlib.sha256()
    h.update(f"{E.weights_sha256(variant)}|{variant}|{size}|{int(flip)}|{tuple(L.shape)}".encode())
    h.update(L.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


class TapsStore:
    """The cached maps of one image set: rows indexable like the L they came from."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.arrays = {t: np.load(folder / f"{t}.npy", mmap_mode="r") for t in TAPS}

    def __len__(self) -> int:
        return len(self.arrays["pooled"])

    def rows(self, idx: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> E.Taps:
        """The taps of images ``idx`` as float32 tensors (sorted reads are fastest on a memmap)."""
        i = np.asarray(idx)
        return E.Taps(*(torch.from_numpy(np.ascontiguousarray(self.arrays[t][i])).to(device).float() for t in TAPS))


def encoded(L: torch.Tensor, variant: str, size: int, flip: bool = False, chunk: int = 64,
            device: torch.device | str = "cpu") -> TapsStore:
    """The encoder's maps of every image of ``L`` (N, 1, S, S), mirrored first if ``flip``;
    computed on first use (resumably), then read from the cache."""
    folder = cache_dir().parent / "taps" / _key(L, variant, size, flip)
    done_file = folder / "done.json"
    n = len(L)
    done = json.loads(done_file.read_text())["rows"] if done_file.exists() else 0
    if done >= n:
        return TapsStore(folder)
    net = E.load_shared(variant, device)
    folder.mkdir(parents=True, exist_ok=True)
    probe = net.features(encoder_input(L[:1].to(device), size))
    arrays = {}
    for t, x in zip(TAPS, probe):
        path = folder / f"{t}.npy"
        shape = (n, *x.shape[1:])
        if done and path.exists():
            arrays[t] = np.load(path, mmap_mode="r+")
        else:
            arrays[t] = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    t0, start = time.perf_counter(), done
    print(f"encoding {n} images{' (mirrored)' if flip else ''} through {variant} at {size} px into {folder} "
        f"(from row {done})", file=sys.stderr, flush=True)
    with torch.inference_mode():
        while done < n:
            x = L[done : done + chunk].to(device)
            if flip:
                x = x.flip(-1)
            taps = net.features(encoder_input(x, size))
            for t, v in zip(TAPS, taps):
                arrays[t][done : done + len(x)] = v.to(torch.float16).cpu().numpy()
            done += len(x)
            for a in arrays.values():
                a.flush()
            atomic_write(done_file, json.dumps({"rows": done, "of": n}))
            rate = (done - start) / (time.perf_counter() - t0)
            if (done // chunk) % 20 == 0 or done == n:
                print(f"  {done}/{n} encoded, {rate:.1f} img/s", file=sys.stderr, flush=True)
    del arrays
    return TapsStore(folder)


class EncodedSet:
    """Training images (one or several data sets) with their cached encoder maps, mirrored and
    not: a batch is (L, ab, taps) for indices and per-image flips, as ``LabSet.batch`` is."""

    def __init__(self, parts: list, variant: str, size: int, flips: bool = True, device: torch.device | str = "cpu"):
        self.parts = parts  # LabSets
        self.stores = [{f: encoded(p.L, variant, size, f) for f in ((False, True) if flips else (False,))} for p in parts]
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.flips = flips
        self.device = device

    def __len__(self) -> int:
        return int(self.starts[-1])

    def batch(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, E.Taps]:
        """L, ab (as LabSet gives them) and their taps, in the order of ``idx``."""
        idx = np.asarray(idx)
        flip = np.zeros(len(idx), bool) if flip is None else np.asarray(flip, bool)
        if flip.any() and not self.flips:
            raise ValueError("mirrored images were asked of a set encoded without its mirrors")
        part = np.searchsorted(self.starts, idx, side="right") - 1
        Ls, abs_, taps, order = [], [], [], []
        for p in np.unique(part):
            for f in (False, True):
                sel = np.nonzero((part == p) & (flip == f))[0]
                if not len(sel):
                    continue
                local = idx[sel] - self.starts[p]
                L, ab = self.parts[p].L[local], self.parts[p].ab[local]
                if f:
                    L, ab = L.flip(-1), ab.flip(-1)
                Ls.append(L)
                abs_.append(ab)
                taps.append(self.stores[p][f].rows(local))
                order.append(sel)
        inv = torch.from_numpy(np.argsort(np.concatenate(order)))
        t = E.Taps(*(torch.cat([x[k] for x in taps])[inv].to(self.device) for k in range(len(TAPS))))
        return torch.cat(Ls)[inv].to(self.device), torch.cat(abs_)[inv].to(self.device), t


class PlainSet:
    """A LabSet behind the same batch interface, for models whose grey network is not the frozen
    encoder (nothing to cache: their grey features train with them)."""

    def __init__(self, parts: list):
        self.lab = parts[0] if len(parts) == 1 else type(parts[0])(torch.cat([p.L for p in parts]), torch.cat([p.ab for p in parts]))

    def __len__(self) -> int:
        return len(self.lab)

    def batch(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, None]:
        L, ab = self.lab.batch(torch.as_tensor(np.asarray(idx)), None if flip is None else torch.as_tensor(np.asarray(flip)))
        return L, ab, None


def encoder_of(backbone: torch.nn.Module | None) -> tuple[str, int] | None:
    """(variant, input size) of the frozen encoder under ``backbone``, or None."""
    cfg = getattr(backbone, "cfg", None)
    return (cfg.encoder, cfg.encoder_size) if cfg is not None and getattr(cfg, "encoder", "") else None


def training_set(parts: list, backbone: torch.nn.Module | None, device: torch.device | str = "cpu",
                 flips: bool = True) -> EncodedSet | PlainSet:
    """The images a head trains on: with their cached encoder maps when it looks through the
    pretrained encoder, so that a step costs the head (and the small decoder) alone."""
    enc = encoder_of(backbone)
    return EncodedSet(parts, enc[0], enc[1], flips, device) if enc else PlainSet(parts)


def feeding(backbone: torch.nn.Module | None, taps: E.Taps | None):
    """Inside, ``backbone`` reads ``taps`` instead of running its encoder (a no-op without taps)."""
    return backbone.given(taps) if taps is not None and backbone is not None else contextlib.nullcontext()
