"""Results out: a colorization written as PNG, JPEG or TIFF at the photo's size, bit depth and
transparency, whole or not at all.

:func:`save_image` writes one image held in memory; :func:`save_colorizations` writes a
photo's samples from their model-size colour, upsampled onto the full-resolution L a strip at
a time, so a 100-megapixel scan never exists as a float image. The encoders themselves are in
:mod:`engine.image_writers`, the atomic rename in :mod:`engine.files`; what a result says
about itself (EXIF, ICC, provenance) comes from :mod:`engine.metadata`.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Sequence

import numpy as np
import torch

from .color import AB_SCALE, StripUpsampler
from .files import atomic_write
from .image_writers import Metadata, PngStream, write_jpeg, write_png, write_png16, write_tiff
from .pixels import colour_and_alpha, quantize

if TYPE_CHECKING:
    from .photo import Photo
    from .types import CancelToken

__all__ = ["Metadata", "RESULT_STRIP_PIXELS", "SUPPORTED_SAVE", "save_colorizations", "save_image"]

SUPPORTED_SAVE = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_JPEG_QUALITY = 95
_TIFF_SUFFIXES = (".tif", ".tiff")


def save_image(
    path: str | Path,
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    metadata: Metadata | None = None,
) -> Path:
    """Write a result as PNG, JPEG or TIFF (by extension), atomically.

    ``rgb`` is float (H, W, 3) or (H, W) in [0, 1]. ``bit_depth=16`` keeps 16-bit precision for
    PNG and TIFF (JPEG is always 8-bit, and drops alpha). ``metadata`` (see
    :func:`engine.metadata.export_metadata`) is written in the format's own places; None writes
    none. The file appears complete or not at all (:func:`engine.files.atomic_write`).
    """
    p = Path(path).expanduser()
    ext = _save_ext(p)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    colour, a = colour_and_alpha(rgb, alpha)

    if ext in _JPEG_SUFFIXES:
        bit_depth, a = 8, None
    planes = [colour[..., None] if colour.ndim == 2 else colour]
    if a is not None:
        planes.append(a[..., None])
    pixels = quantize(np.concatenate(planes, axis=2), bit_depth)  # (H, W, C), C in 1..4

    def write(fh: BinaryIO) -> None:
        _encode(fh, ext, pixels, bit_depth, metadata)

    atomic_write(p, write)
    return p


_JPEG_SUFFIXES = (".jpg", ".jpeg")
RESULT_STRIP_PIXELS = 1 << 21
"""Pixels per strip when results are upsampled and written (:func:`save_colorizations`)."""


def _save_ext(p: Path) -> str:
    ext = p.suffix.lower()
    if ext not in SUPPORTED_SAVE:
        raise ValueError(
            f"Cannot save “{p.name}”: unknown file type “{p.suffix or '(none)'}”. "
            f"Use one of {', '.join(SUPPORTED_SAVE)}."
        )
    return ext


def _encode(fh: BinaryIO, ext: str, pixels: np.ndarray, bit_depth: int, metadata: Metadata | None) -> None:
    """A whole quantised (H, W, C) image in the format ``ext`` names."""
    if ext == ".png":
        if bit_depth == 16:
            write_png16(fh, pixels, metadata)
        else:
            write_png(fh, pixels, 8, metadata)
    elif ext in _TIFF_SUFFIXES:
        write_tiff(fh, pixels, metadata)
    else:
        write_jpeg(fh, pixels, _JPEG_QUALITY, metadata)


def save_colorizations(
    paths: Sequence[str | Path],
    photo: Photo,
    ab_low: torch.Tensor,
    metadata: Sequence[Metadata | None] | None = None,
    *,
    strip_rows: int | None = None,
    cancel: CancelToken | None = None,
    threads: int | None = None,
) -> list[Path]:
    """Upsample each low-resolution ab (``ab_low[k]``, ab/128 at the model's size) onto the
    photo's full-resolution L and write it to ``paths[k]``, a strip of rows at a time.

    The pixels of ``Colorizer.upsample`` followed by :func:`save_image`, to within one level
    (:meth:`engine.color.StripUpsampler.quantized`; tests hold them to that), but no
    full-size float image ever exists: PNG is encoded strip by strip; JPEG and TIFF gather the
    quantised strips (1–2 bytes a sample) and encode once. This is what lets a 100-megapixel
    scan be colorized in bounded memory. The guided filter's coefficients and the row weights
    are computed once for all samples, and the samples are written on ``threads`` threads
    (default: torch's thread count, one per core), each colouring and compressing its own file
    (numpy and the compressors release the GIL). ``strip_rows`` overrides the strip height
    (tests use a small one). A failure stops the other files and is raised; no file is left
    half-written.
    """
    if len(paths) > ab_low.shape[0]:
        raise ValueError(f"{len(paths)} paths for {ab_low.shape[0]} colorizations")
    metas = list(metadata) if metadata is not None else [None] * len(paths)
    targets = [Path(path).expanduser() for path in paths]
    exts = [_save_ext(p) for p in targets]  # every name checked before anything is written
    if not targets:
        return []
    H, W = photo.L.shape
    rows = strip_rows or max(1, RESULT_STRIP_PIXELS // W)
    with torch.no_grad():
        up = StripUpsampler(ab_low[: len(targets)].detach().float().cpu() * AB_SCALE, torch.from_numpy(photo.L))
    workers = max(1, min(len(targets), threads or torch.get_num_threads()))
    spare = (threads or torch.get_num_threads()) > workers  # a core for compressing while colouring
    stop = threading.Event()

    def one(k: int) -> Path:
        p, ext = targets[k], exts[k]
        jpeg = ext in _JPEG_SUFFIXES
        depth = 8 if jpeg else photo.bit_depth
        alpha = None if jpeg else photo.alpha
        channels = 3 if alpha is None else 4
        dtype = np.uint16 if depth == 16 else np.uint8

        def strips() -> Iterator[tuple[int, np.ndarray]]:
            for y0 in range(0, H, rows):
                if stop.is_set():
                    raise _Stopped
                if cancel is not None:
                    cancel.check()
                y1 = min(H, y0 + rows)
                px = np.empty((y1 - y0, W, channels), dtype)
                up.quantized(k, y0, y1, depth, out=px)
                if alpha is not None:
                    px[..., 3] = quantize(alpha[y0:y1], depth)
                yield y0, px

        def write(fh: BinaryIO) -> None:
            if ext == ".png":
                png = PngStream(fh, W, H, channels, depth, metas[k])
                if spare:
                    _pipelined(strips(), lambda item: png.write(item[1]))
                else:
                    for _, px in strips():
                        png.write(px)
                png.close()
                return
            full = np.empty((H, W, channels), dtype)
            for y0, px in strips():
                full[y0 : y0 + px.shape[0]] = px
            _encode(fh, ext, full, depth, metas[k])

        try:
            atomic_write(p, write)
        except BaseException:
            stop.set()
            raise
        return p

    if workers == 1:
        return [one(k) for k in range(len(targets))]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="divcolor-export") as pool:
        futures = [pool.submit(one, k) for k in range(len(targets))]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C in this thread: the writers stop too, leaving no file
            stop.set()
            raise
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, _Stopped)]
    if real or errors:
        raise (real or errors)[0]
    return [f.result() for f in futures]


class _Stopped(Exception):
    """Another file of the same photo failed; this one stops too (its temp file is removed)."""


_DONE = object()


def _pipelined(items: Iterator, consume: Callable[[object], None]) -> None:
    """``consume`` every item on a worker thread while the next one is produced: zlib releases
    the GIL, so compressing strip k overlaps the colour maths of strip k + 1. Order is kept,
    at most two items wait, and the first error (either side) is raised here."""
    pending: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def work() -> None:
        while (item := pending.get()) is not _DONE:
            if not errors:
                try:
                    consume(item)
                except BaseException as exc:  # handed to the caller below
                    errors.append(exc)

    worker = threading.Thread(target=work, name="divcolor-encode", daemon=True)
    worker.start()
    try:
        for item in items:
            if errors:
                break
            pending.put(item)
    finally:
        pending.put(_DONE)
        worker.join()
    if errors:
        raise errors[0]
