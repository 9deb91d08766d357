"""Training data: the prepared ``.npz`` shards of ../shared/data and plain folders of images.

Everything is decoded once into memory as Lab at the working size: at 64x64 the largest
training set (natural64, 10k images) takes ~500 MB as float32, and decoding per step would cost
more CPU than the network on a 2-core machine.
"""

from __future__ import annotations

import glob
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.color import AB_SCALE, rgb_to_lab
from engine.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# Bad images (truncated, corrupt, not images at all) are skipped and named; above this share of
# the images read the data is more likely wrong than dusty, and the run stops instead.
MAX_BAD_FRACTION = 0.01
SHOW_BAD = 20  # bad images named on the terminal (all of them go into the run's metadata up to 200)


class DataNotFound(DataError, FileNotFoundError):
    """No images or shards where ``--data`` points (a FileNotFoundError for callers that
    fall back when, e.g., a train split is missing)."""


BadList = list[tuple[str, str]]
# (data, split) -> the bad images skipped when it was last read; describe() records them.
_SKIPPED: dict[tuple[str, str], BadList] = {}


def _reason(e: BaseException) -> str:
    """One short line for a decode failure, without library paths."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:100]


def _decode_image(source, name: str, bad: BadList) -> Image.Image | None:
    """Open and fully decode one image as RGB; a failure is recorded in ``bad``, not raised.

    Pillow raises many types for damaged files (OSError "image file is truncated", SyntaxError,
    ValueError, DecompressionBombError, …): whatever decoding one image raises, that image
    is bad, so everything but running out of memory is caught here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings name library paths; the reason is what counts
            with Image.open(source) as img:
                return img.convert("RGB")
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any decode failure makes this one image bad
        bad.append((name, _reason(e)))
        return None


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as fh:
        start = fh.read(512)
    try:
        start.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in start


def _open_shard(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A shard's JPEG bytes, offsets and ids, checked: a corrupt or fake .npz is a DataError.

    What is not a zip archive is refused before NumPy sees it: NumPy takes any other file for
    a pickle and answers with a cut-off sentence about loading it "unsafely"."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e}); check --data and its permissions.") from e
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        what = "an empty file" if not head else "a text file" if _looks_like_text(path) else "some other file"
        raise DataError(
            f"{path} is not an image shard: it is {what}, while a shard (.npz) is a zip archive of NumPy arrays; "
            "give --data a folder of images or shards prepared as ../shared/data/README describes."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            jpeg, off = np.asarray(z["jpeg"]), np.asarray(z["offsets"])
            ids = np.asarray(z["ids"]) if "ids" in z.files else None
    except KeyError as e:
        raise DataError(f"{path} is an .npz file but not a divcolor shard (no {e} array); prepare it as ../shared/data/README describes.") from e
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, npy and pickle-refusal errors alike
        why = "it holds Python objects, which divcolor never loads" if "pickle" in str(e) else _reason(e)
        raise DataError(f"{path} is not a readable image shard ({why}); re-create it or check --data.") from e
    ok = (
        jpeg.ndim == 1 and jpeg.dtype == np.uint8 and off.ndim == 1 and len(off) >= 1
        and np.issubdtype(off.dtype, np.integer) and off[0] == 0 and off[-1] == len(jpeg)
        and bool(np.all(np.diff(off) >= 0))
    )
    if not ok:
        raise DataError(f"{path} has inconsistent 'jpeg'/'offsets' arrays (damaged shard); re-create it or check --data.")
    if ids is not None and len(ids) != len(off) - 1:
        ids = None
    return jpeg, off, ids


def _decode_shard(path: Path, bad: BadList | None = None) -> list[np.ndarray]:
    """The images of one shard as uint8 arrays, bad ones skipped and appended to ``bad``.

    Without ``bad`` the shard is judged alone: its bad images are named on stderr, and a
    DataError is raised above MAX_BAD_FRACTION.
    """
    own = bad is None
    bad = [] if bad is None else bad
    first_bad = len(bad)
    jpeg, off, ids = _open_shard(path)
    out = []
    for i in range(len(off) - 1):
        label = f"{path.name}[{i}]" + (f" ({_id_text(ids[i])})" if ids is not None else "")
        img = _decode_image(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes()), label, bad)
        if img is not None:
            out.append(np.asarray(img))
    if own:
        check_bad(bad[first_bad:], len(off) - 1, str(path))
    return out


def _id_text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def check_bad(bad: BadList, total: int, where: str) -> None:
    """Name the skipped images on stderr; stop with a DataError if there are too many."""
    if not bad:
        return
    share = len(bad) / max(total, 1)
    listed = "; ".join(f"{n}: {r}" for n, r in bad[:SHOW_BAD]) + (f"; and {len(bad) - SHOW_BAD} more" if len(bad) > SHOW_BAD else "")
    if share > MAX_BAD_FRACTION:
        raise DataError(
            f"{len(bad)} of {total} images in {where} could not be read ({100 * share:.1f} %, more than the "
            f"{100 * MAX_BAD_FRACTION:g} % divcolor skips): {listed}. Fix or remove them, or check that --data is right."
        )
    print(f"skipping {len(bad)} of {total} images in {where} that could not be read: {listed}", file=sys.stderr, flush=True)


def shard_paths(data: str | Path, split: str) -> list[Path]:
    """Resolve ``--data`` to shard files.

    ``data`` is a ``.npz`` file, or a prefix such as ``../shared/data/lfw64`` that names
    ``lfw64_<split>_*.npz`` (always globbed and sorted: a split may grow more shards).
    """
    p = Path(data)
    if p.suffix == ".npz":
        return [p]
    return [Path(s) for s in sorted(glob.glob(str(p.parent / f"{p.name}_{split}_*.npz")))]


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
    """All images of a split as uint8 (N, size, size, 3).

    Images that cannot be decoded are skipped and named (stderr, and the run's metadata via
    ``describe``); more than MAX_BAD_FRACTION of them stops with a DataError.
    """
    p = Path(data)
    out: list[np.ndarray] = []
    bad: BadList = []
    if p.is_dir():
        for f in _folder_images(p, split):
            img = _decode_image(f, str(f), bad)
            if img is None:
                continue
            img = _center_square(img).resize((size, size), Image.LANCZOS)
            out.append(np.asarray(img))
            if limit and len(out) >= limit:
                break
    else:
        paths = shard_paths(p, split)
        if not paths:
            raise DataNotFound(f"no shards match {p.parent / (p.name + '_' + split + '_*.npz')}")
        for s in paths:
            for img in _decode_shard(s, bad):
                if img.shape[0] != size or img.shape[1] != size:
                    img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
                out.append(img)
                if limit and len(out) >= limit:
                    break
            if limit and len(out) >= limit:
                break
    check_bad(bad, len(out) + len(bad), str(p))
    _SKIPPED[(str(p), split)] = bad
    if not out:
        raise DataNotFound(f"no images found for split '{split}' in {p}")
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


def mix(data: str | Path) -> list[tuple[str, int]]:
    """A training stage's ``--data``: one set, or several separated by commas, each drawn as often
    as its ``*K`` says (default 1). Why weights: the photos a family is judged on (natural128's
    Imagenette) are a tenth of its data (natural64's Tiny ImageNet), and a decoder fine-tuned on
    them guessed their colours 15 % better (L1 .0822 vs .0972): ``natural64,natural128*4`` gives
    them a share of batches near 30 % without dropping the variety of the large set."""
    out: list[tuple[str, int]] = []
    for part in (q.strip() for q in str(data).split(",")):
        if not part:
            continue
        name, star, k = part.rpartition("*")
        if star and k.isdigit() and int(k) >= 1:
            out.append((name.strip(), int(k)))
        elif star and not Path(part).exists():
            raise DataError(f"--data {part!r}: the weight after '*' must be a whole number of at least 1")
        else:
            out.append((part, 1))
    if not out:
        raise DataNotFound(f"--data {str(data)!r} names no data set")
    return out


def load_parts(data: str | Path, split: str, size: int, limit: int | None = None) -> list[LabSet]:
    """The sets of a ``--data`` mix (:func:`mix`), each as often as its weight: a repeated set
    is the same object, so its images take their memory (and their cached encoder maps) once."""
    out: list[LabSet] = []
    for name, k in mix(data):
        out += [load_lab(name, split, size, limit)] * k
    return out


def load_lab(data: str | Path, split: str, size: int, limit: int | None = None) -> LabSet:
    """The images of one set, or of a mix's sets once each (``limit`` per set), in order: what an
    export tunes on when its run trained on a mix."""
    sets = mix(data)
    if len(sets) == 1:
        return to_lab(load_rgb(sets[0][0], split, size, limit))
    parts = [to_lab(load_rgb(name, split, size, limit)) for name, _ in sets]
    return LabSet(torch.cat([p.L for p in parts]), torch.cat([p.ab for p in parts]))


def describe(data: str | Path, split: str, n: int) -> dict:
    """What a checkpoint records about its training data (``n`` images as training draws them;
    a mix also lists its sets)."""
    sets = mix(data)
    if len(sets) > 1 or sets[0][1] > 1:
        named = [{**describe(name, split, 0), "weight": k} for name, k in sets]
        for d in named:
            d.pop("images")
        return {"path": ",".join(d["path"] + (f"*{d['weight']}" if d["weight"] > 1 else "") for d in named),
                "split": split, "images": int(n), "sets": named}
    p = Path(sets[0][0])
    d = {"path": p.name if not p.is_dir() else str(p.name) + "/", "split": split, "images": int(n)}
    bad = _SKIPPED.get((str(p), split))
    if bad:
        d["skipped_images"] = len(bad)
        d["skipped"] = [f"{name}: {why}" for name, why in bad[:200]]
    return d


def resize_lab(lab: LabSet, size: int) -> LabSet:
    if lab.L.shape[-1] == size:
        return lab
    return LabSet(
        F.interpolate(lab.L, size=(size, size), mode="area"), F.interpolate(lab.ab, size=(size, size), mode="area")
    )
