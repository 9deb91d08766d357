"""Photos in: a file (or pixels in memory) read once into the :class:`Photo` every method needs.

A photo is decoded exactly once, into a :class:`Photo`: full-resolution CIE L (what the models
condition on), the displayed sRGB pixels (after EXIF orientation and ICC conversion, so what the
user sees is what gets coloured) and enough about the source (alpha, bit depth, EXIF) for export
to write the result back faithfully. Every way a file can fail to load becomes
:class:`~engine.errors.UnsupportedImage` with a message meant for the user.

Where the rest lives: the :class:`Photo` type in :mod:`engine.photo`; decoding a file's pixels
(the decoder that keeps every bit, orientation, the size guard) in :mod:`engine.decode`; ICC
colour management in :mod:`engine.icc`; writing results in :mod:`engine.save` (its names are
still importable from here for the app's modules).

This module never imports Qt and never unpickles or executes anything from a file.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .color import grey_to_L, linear_to_srgb, rgb_to_lab
from .decode import decode_file, open_image, too_large_message
from .errors import UnsupportedImage
from .icc import to_srgb
from .photo import Photo
from .pixels import colour_and_alpha, samples_to_unit, to_unit

# The app's modules import the writers from here; new code imports engine.save.
from .save import SUPPORTED_SAVE, Metadata, save_colorizations, save_image

__all__ = [
    "Photo",
    "load_photo",
    "looks_like_photo",
    "photo_from_L",
    "photo_from_array",
    # engine.save's, for the app's modules that still import them from here
    "Metadata",
    "SUPPORTED_SAVE",
    "save_colorizations",
    "save_image",
]

_GREY_TOL = 1.0 / 255.0 + 1e-6  # R, G, B this close count as "no colour" (JPEG chroma noise)
_STRIP_PIXELS = 1 << 22  # colour conversion works in strips of about this many pixels


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_photo(path: str | Path) -> Photo:
    """Decode a photo file completely, so later steps never meet a half-readable image.

    Raises UnsupportedImage (with the file name and what to do) for anything that cannot be read.
    """
    p = Path(path).expanduser()
    _check_file(p)
    try:
        d = decode_file(p)
        colour = to_srgb(d.colour, d.icc, p.name)
    except UnsupportedImage:
        raise
    except Image.DecompressionBombError as exc:
        raise UnsupportedImage(too_large_message(p.name, None)) from exc
    except Image.DecompressionBombWarning as exc:  # only raised when warnings are errors
        raise UnsupportedImage(too_large_message(p.name, None)) from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImage(
            f"Cannot open “{p.name}”: it is not an image, or not in a format divcolor can "
            "read. Use a JPEG, PNG, TIFF, WebP or BMP file."
        ) from exc
    except PermissionError as exc:
        raise UnsupportedImage(
            f"Cannot open “{p.name}”: you do not have permission to read it. "
            "Copy it somewhere you can read, or change its permissions."
        ) from exc
    except MemoryError as exc:
        raise UnsupportedImage(
            f"Cannot open “{p.name}”: there is not enough memory to decode it. "
            "Close other programs or use a smaller version of the photo."
        ) from exc
    except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as exc:
        raise UnsupportedImage(
            f"Cannot read “{p.name}”: the file is damaged or incomplete ({_detail(exc)}). "
            "Copy, download or export it again and retry."
        ) from exc
    except Exception as exc:  # any other decoder failure is still the file's fault
        raise UnsupportedImage(
            f"Cannot read “{p.name}”: decoding failed ({_detail(exc)}). "
            "Try converting it to PNG or JPEG with another program."
        ) from exc
    return _make_photo(colour, d.alpha, d.depth, d.grey, p, d.exif)


def photo_from_array(
    rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8
) -> Photo:
    """Wrap pixels that are already in memory (tests, GUI paste) as a Photo, without a file.

    ``rgb`` is (H, W) grey or (H, W, 3) colour: float in [0, 1], uint8 or uint16 (uint16 implies
    16-bit). Bad input is a programming error, so this raises ValueError, not UnsupportedImage.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    arr = np.asarray(rgb)
    if arr.dtype == np.uint16:
        bit_depth = 16
    colour, a = colour_and_alpha(arr, alpha)
    return _make_photo(colour, a, bit_depth, colour.ndim == 2, None)


def photo_from_L(L: np.ndarray) -> Photo:
    """A grey photo whose L is exactly ``L`` (H, W) (0–100): a photo as the models see it.

    The CLI samples on the photo's L reduced to the model's size with this, then upsamples and
    writes at full size itself, so no full-size colorization is ever held in memory.
    """
    L = np.clip(np.asarray(L, dtype=np.float32), 0, 100)
    with torch.no_grad():
        t = torch.from_numpy(L)
        y = torch.where(t > 8, ((t + 16) / 116) ** 3, t / (24389 / 27))
        grey = linear_to_srgb(y.clamp(0, 1)).clamp(0, 1).numpy().astype(np.float32)
    return Photo(L=np.ascontiguousarray(L), pixels=grey, alpha=None, bit_depth=8, is_grey=True)


def _check_file(p: Path) -> None:
    """Catch the common non-image cases up front with specific, helpful messages."""
    name = p.name or str(p)
    if not p.exists():
        if p.is_symlink():
            raise UnsupportedImage(_broken_link_message(p, name))
        raise UnsupportedImage(
            f"Cannot open “{name}”: the file does not exist. Check the name and folder, "
            "or choose the file again."
        )
    if p.is_dir():
        raise UnsupportedImage(
            f"Cannot open “{name}”: it is a folder, not an image file. "
            "Choose an image inside it."
        )
    if not p.is_file():  # FIFOs, devices: opening could block forever
        raise UnsupportedImage(
            f"Cannot open “{name}”: it is not a regular file. Choose an image file instead."
        )
    try:
        empty = p.stat().st_size == 0
    except OSError as exc:
        raise UnsupportedImage(f"Cannot open “{name}”: {_detail(exc)}.") from exc
    if empty:
        raise UnsupportedImage(
            f"Cannot open “{name}”: the file is empty (0 bytes). It was probably not fully "
            "copied or downloaded; get a fresh copy."
        )


def _broken_link_message(p: Path, name: str) -> str:
    """Why a symbolic link leads to no file: it loops (``a -> a``, ``a -> b -> a``), or its
    target is gone. Python 3.11 reports a loop as RuntimeError from resolve() and as "does not
    exist" from exists(): neither says what to fix."""
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return (
                f"Cannot open “{name}”: it is a symbolic link that leads back to itself (a link loop), "
                "so there is no photo behind it. Remove the link or point it at a photo."
            )
    try:
        target = os.readlink(p)
    except OSError:
        target = "a file"
    return (
        f"Cannot open “{name}”: it is a link to “{target}”, which does not exist. "
        "Point the link at the photo, or choose the photo itself."
    )


def looks_like_photo(path: str | Path) -> bool:
    """Whether Pillow recognises the file's content as an image it can open (the header only,
    nothing decoded): how a folder's photos are told from its other files, whatever their names
    (a GIF, or a JPEG named ``.heic``). Damaged or oversized images still count: loading them
    says what is wrong."""
    p = Path(path)
    try:
        if not p.is_file():  # FIFOs, devices: opening could block forever
            return False
        with open_image(p):
            return True
    except Image.DecompressionBombError:
        return True
    except Exception:
        return False


def _detail(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- building the Photo -----------------------------------------------------------------------


def _strips(h: int, w: int):
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    return range(0, h, rows), rows


def _make_photo(
    colour: np.ndarray, alpha: np.ndarray | None, depth: int, grey_source: bool, path: Path | None,
    exif: bytes | None = None,
) -> Photo:
    """Normalise decoded pixels and compute full-resolution L once, for every method to share.

    Integer samples are kept as they are (1 or 2 bytes each) and converted to float a strip at
    a time, never as a whole: a 48-megapixel grey scan then costs 48 MB of pixels plus 192 MB
    of L instead of over a gigabyte of float copies.
    """
    h, w = colour.shape[:2]
    starts, rows = _strips(h, w)
    if colour.dtype not in (np.uint8, np.uint16):
        colour = samples_to_unit(colour)  # a private float copy
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    if colour.ndim == 3 and not grey_source:
        spread = 0.0
        for y0 in starts:
            strip = colour[y0 : y0 + rows]
            spread = max(spread, float(np.ptp(samples_to_unit(strip), axis=2).max(initial=0.0)))
            if spread > _GREY_TOL:
                break
        grey_source = spread <= _GREY_TOL
    if colour.ndim == 3 and grey_source:  # colour channels carrying grey: keep their mean
        grey = np.empty((h, w), np.float32)
        for y0 in starts:
            grey[y0 : y0 + rows] = samples_to_unit(colour[y0 : y0 + rows]).mean(axis=2, dtype=np.float32)
        colour = grey
    pixels = np.ascontiguousarray(colour)
    if alpha is not None:
        alpha = np.clip(np.ascontiguousarray(alpha, dtype=np.float32), 0, 1)
    return Photo(
        L=_lightness(pixels),
        pixels=pixels,
        alpha=alpha,
        bit_depth=16 if depth == 16 else 8,
        is_grey=bool(grey_source),
        path=path,
        exif=exif,
    )


@lru_cache(maxsize=2)
def _grey_L_table(bit_depth: int) -> np.ndarray:
    """L of every 8- or 16-bit grey level, by the same float32 conversion as the strips."""
    top = 65535 if bit_depth == 16 else 255
    levels = to_unit(np.arange(top + 1), top)
    with torch.no_grad():
        return np.clip(grey_to_L(torch.from_numpy(levels)).numpy(), 0, 100).astype(np.float32)


def _lightness(pixels: np.ndarray) -> np.ndarray:
    """CIE L of sRGB pixels with engine.color, in strips so huge photos do not spike memory.

    Integer grey (most scans of black-and-white photos) goes through a table of its 256 or
    65536 levels: the same values, at the cost of one lookup per pixel."""
    h, w = pixels.shape[:2]
    out = np.empty((h, w), np.float32)
    if pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16):
        table = _grey_L_table(16 if pixels.dtype == np.uint16 else 8)
        starts, rows = _strips(h, w)
        for y0 in starts:  # take() makes its indices intp: 8 bytes a pixel, so a strip at a time
            table.take(pixels[y0 : y0 + rows], out=out[y0 : y0 + rows])
        return out
    starts, rows = _strips(h, w)
    with torch.no_grad():
        for y0 in starts:
            strip = samples_to_unit(pixels[y0 : y0 + rows])
            if strip.ndim == 2:
                L = grey_to_L(torch.from_numpy(np.ascontiguousarray(strip)))
            else:
                L = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(strip.transpose(2, 0, 1))))[0]
            out[y0 : y0 + rows] = L.numpy()
    return np.clip(out, 0, 100, out=out)
