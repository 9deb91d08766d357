"""From a photo file to its pixels as stored: the decoder that keeps every bit, the size guard,
EXIF orientation, transparency keys.

:mod:`engine.io` builds the :class:`~engine.io.Photo` from what this returns (colour management
by :mod:`engine.icc` comes between). Three decoders, chosen per file: Pillow for what it decodes
at full precision (8-bit, 16-bit and float grey), two Pillow passes that recover all 16 bits of
colour PNGs and TIFFs, and tifffile for the TIFFs Pillow cannot read (float colour, 16-bit
grey+alpha). Nothing here unpickles or runs anything from a file, and formats whose Pillow
plugin runs an external program (EPS) are never opened.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import UnsupportedImage
from .icc import cmyk_to_rgb, srgb_profile
from .metadata import source_exif
from .pixels import to_unit

__all__ = ["MAX_PIXELS", "Decoded", "decode_file", "open_image", "too_large_message"]

log = logging.getLogger(__name__)

MAX_PIXELS: int = 160_000_000
"""Refuse images that claim more pixels than this: a small file can declare a huge size (a
"decompression bomb") and exhaust memory. Real archive scans reach 60–150 megapixels and are
colorized (a strip at a time, see :func:`engine.save.save_colorizations`); Pillow's own guard
(``Image.MAX_IMAGE_PIXELS``, an error at twice its value) still applies below ours."""

# Pillow warns (with its own file path) about anything over Image.MAX_IMAGE_PIXELS (89 MP):
# every real large scan. Sizes are checked here against MAX_PIXELS before decoding, with a
# message for people, so that warning only adds noise to the user's terminal.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Formats whose Pillow plugin runs an external program (EPS runs Ghostscript).
_EXCLUDED_FORMATS = frozenset({"EPS"})
_TIFF_SUFFIXES = (".tif", ".tiff")


def _check_size(width: int, height: int, name: str) -> None:
    """Refuse empty and oversized images before any pixel data is decoded."""
    if width <= 0 or height <= 0:
        raise UnsupportedImage(
            f"Cannot open “{name}”: the image has no pixels ({width} × {height}). "
            "The file is probably damaged; export it again."
        )
    if width * height > MAX_PIXELS:
        raise UnsupportedImage(too_large_message(name, (width, height)))


def too_large_message(name: str, size: tuple[int, int] | None) -> str:
    what = f"{size[0]} × {size[1]} pixels" if size else "larger than the safe limit"
    return (
        f"Cannot open “{name}”: the image is too large ({what}; the limit is "
        f"{MAX_PIXELS:,} pixels, a guard against “decompression bomb” files). Scale it down "
        "with another program and try again. (Developers: the limit is engine.decode.MAX_PIXELS, "
        "and Pillow's Image.MAX_IMAGE_PIXELS also applies.)"
    )


@lru_cache(maxsize=1)
def _open_formats() -> tuple[str, ...]:
    """Every format Pillow can open, minus plugins that run external programs."""
    Image.init()
    return tuple(f for f in Image.OPEN if f not in _EXCLUDED_FORMATS)


@contextlib.contextmanager
def open_image(p: Path, formats: tuple[str, ...] | None = None) -> Iterator[Image.Image]:
    """Open p for Pillow through a file object we own, never by name.

    By name, Pillow memory-maps uncompressed single-strip images (grey, RGBA, 16-bit grey, …),
    and for TIFFs with EXIF orientation 5–8 (rotated 90°) recent Pillow lays the mapped rows out
    with the *rotated* size: the photo decodes as diagonal streaks, silently. Through a file
    object the same data goes through the ordinary decoder and comes out right, on every Pillow
    version we test (see ``pillow`` in pyproject.toml).
    """
    with open(p, "rb") as fh, Image.open(fh, formats=list(formats or _open_formats())) as im:
        yield im


@dataclass
class Decoded:
    """Pixels as stored (after orientation), before colour management."""

    colour: np.ndarray  # (H, W) grey or (H, W, 3), float32 in [0, 1]
    alpha: np.ndarray | None
    depth: int
    grey: bool
    icc: bytes | None = None  # embedded profile still to be applied
    exif: bytes | None = None  # EXIF worth keeping (engine.metadata.source_exif), orientation reset


def decode_file(p: Path) -> Decoded:
    """Decode every pixel of p, choosing the decoder that keeps full precision."""
    tiff = p.suffix.lower() in _TIFF_SUFFIXES
    opened = contextlib.ExitStack()
    try:
        im = opened.enter_context(open_image(p))
    except UnidentifiedImageError as exc:
        if not tiff:
            raise
        try:  # e.g. float or 16-bit grey+alpha TIFFs that Pillow does not know
            return _decode_tifffile(p)
        except UnsupportedImage:
            raise
        except Exception:
            raise exc from None
    with opened:
        _check_size(im.width, im.height, p.name)
        fmt = im.format
        passes = _wide_passes(im)
        if passes is None:
            im.load()  # full decode, so truncation is found now and not later
            exif = source_exif(im, p.name)
            decoded = _decode_pillow(im, p.name)
            decoded.exif = exif
            return decoded
        exif = source_exif(im, p.name) if fmt == "TIFF" else None
    if fmt == "TIFF":
        try:
            decoded = _decode_tifffile(p)
            decoded.exif = exif
            return decoded
        except UnsupportedImage:
            raise
        except Exception as exc:  # e.g. LZW, which tifffile only decodes with imagecodecs
            log.info("%s: tifffile could not decode it (%s); using Pillow", p.name, exc)
    return _decode_two_pass(p, fmt, passes)


def _decode_pillow(im: Image.Image, name: str) -> Decoded:
    """Everything Pillow decodes at full precision: 8-bit modes, 16-bit grey, float grey."""
    icc = im.info.get("icc_profile") or None
    try:
        im = ImageOps.exif_transpose(im)
    except Exception as exc:  # broken EXIF block: show the pixels as stored
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", name, exc)
    mode = im.mode
    transparency = im.info.get("transparency")

    if mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or transparency is not None) else "RGB")
        mode, transparency = im.mode, None
    elif mode == "1":
        im, mode = im.convert("L"), "L"
    elif mode == "La":
        im, mode = im.convert("LA"), "LA"
    elif mode == "RGBa":
        im, mode = im.convert("RGBA"), "RGBA"
    elif mode == "RGBX":
        im, mode = im.convert("RGB"), "RGB"

    if mode in ("L", "LA"):
        arr = np.asarray(im)
        grey = arr[..., 0] if arr.ndim == 3 else arr
        alpha = to_unit(arr[..., 1], 255) if mode == "LA" else _key_alpha(grey, transparency)
        return Decoded(grey, alpha, 8, True, icc)

    if mode.startswith("I;16") or mode in ("I", "F"):
        raw = np.asarray(im)
        alpha = _key_alpha(raw, transparency)
        if mode == "F":
            grey = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
            peak = float(grey.max()) if grey.size else 0.0
            if peak > 1.0:  # integer data stored as float: guess its range
                grey = grey / np.float32(255.0 if peak <= 255.0 else 65535.0)
            grey = np.clip(grey, 0, 1).astype(np.float32)
        else:
            grey = raw if raw.dtype == np.uint16 else np.clip(raw, 0, 65535).astype(np.uint16)
        return Decoded(grey, alpha, 16, True, icc)

    if mode == "CMYK":
        return Decoded(np.asarray(cmyk_to_rgb(im, icc, name)), None, 8, False)

    if mode not in ("RGB", "RGBA"):
        try:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        except ValueError:
            if mode != "LAB":
                raise
            lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
            im = ImageCms.profileToProfile(im, lab, srgb_profile(), outputMode="RGB")
        mode, icc = im.mode, None  # a profile described the original colour space, not this one

    arr = np.asarray(im)
    alpha = to_unit(arr[..., 3], 255) if mode == "RGBA" else _key_alpha(arr, transparency)
    return Decoded(arr[..., :3], alpha, 8, False, icc)


def _wide_passes(im: Image.Image) -> tuple[str, ...] | None:
    """For a 16-bit colour PNG or TIFF (which Pillow reduces to 8 bits per channel), the raw
    modes of the decodes that together recover every bit; None for everything else."""
    if im.format not in ("PNG", "TIFF") or not im.tile:
        return None
    raws = {t[3][0] if isinstance(t[3], tuple) else t[3] for t in im.tile}
    if len(raws) != 1:
        return None
    raw = raws.pop()
    if im.format == "PNG" and raw == "LA;16B":  # grey+alpha, 4 bytes a pixel
        return ("RGBA",)
    m = re.fullmatch(r"(RGBA?);16([LBN])", str(raw))
    if m is None:
        return None
    native = "L" if sys.byteorder == "little" else "B"
    other = {"L": "B", "B": "L", "N": "B" if native == "L" else "L"}[m[2]]
    return (raw, f"{m[1]};16{other}")


def _decode_two_pass(p: Path, fmt: str, passes: tuple[str, ...]) -> Decoded:
    """Recover all 16 bits of colour PNGs and TIFFs with Pillow's own (C, fast) decoders.

    Pillow stores at most 8 bits per colour channel, but its unpackers can be told which byte
    of each 16-bit sample to keep: one decode keeping the high bytes (Pillow's own choice) and
    one keeping the other bytes give the samples exactly. For 16-bit grey+alpha PNG (4 bytes a
    pixel) the plain "RGBA" unpacker keeps all four bytes in one pass.
    """
    planes = []
    orientation, transparency, icc, exif = 1, None, None, None
    for raw in passes:
        with open_image(p, (fmt,)) as im:
            _check_size(im.width, im.height, p.name)
            im.tile = [_with_rawmode(t, raw) for t in im.tile]
            im.load()
            planes.append(np.asarray(im).astype(np.uint16))
            orientation = _exif_orientation(im)
            transparency = im.info.get("transparency")
            icc = im.info.get("icc_profile") or None
            exif = source_exif(im, p.name)
    if len(planes) == 1:  # grey+alpha PNG
        b = planes[0]
        arr = np.stack([b[..., 0] << 8 | b[..., 1], b[..., 2] << 8 | b[..., 3]], axis=-1)
    else:
        arr = planes[0] << 8 | planes[1]
    arr = _orient(arr, orientation)
    if arr.shape[2] == 2:
        return Decoded(arr[..., 0], to_unit(arr[..., 1], 65535), 16, True, icc, exif)
    if arr.shape[2] == 4:
        alpha = to_unit(arr[..., 3], 65535)
    else:
        alpha = _key_alpha(arr, transparency)  # PNG tRNS colour key
    return Decoded(arr[..., :3], alpha, 16, False, icc, exif)


def _with_rawmode(tile, raw: str):
    args = (raw, *tile[3][1:]) if isinstance(tile[3], tuple) else raw
    if hasattr(tile, "_replace"):
        return tile._replace(args=args)
    return (*tile[:3], args)


def _decode_tifffile(p: Path) -> Decoded:
    """TIFFs Pillow cannot decode at full precision (16-bit and float colour, grey+alpha)."""
    import tifffile  # only needed for these files

    with tifffile.TiffFile(p) as tf:
        if not tf.pages:
            raise UnidentifiedImageError(f"no image in {p.name}")
        page = tf.pages[0]
        _check_size(int(page.imagewidth), int(page.imagelength), p.name)
        photometric = int(page.photometric)
        if photometric not in (0, 1, 2):  # miniswhite, minisblack, rgb
            raise UnidentifiedImageError(f"unsupported TIFF photometric {photometric}")
        arr = page.asarray()
        axes = page.axes
        extras = [int(e) for e in (page.extrasamples or ())]
        tags = page.tags
        orientation = int(tags[274].value) if 274 in tags else 1
        icc = bytes(tags[34675].value) if 34675 in tags else None

    if "S" in axes and axes.index("S") != len(axes) - 1:
        arr = np.moveaxis(arr, axes.index("S"), -1)
    if arr.ndim > 3:
        arr = arr.reshape(arr.shape[-3:])  # leading length-1 axes (pages, depth)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] > 4:
        raise UnidentifiedImageError(f"unsupported TIFF layout {axes} {arr.shape}")
    n = 3 if photometric == 2 else 1
    if arr.dtype in (np.uint8, np.uint16) and photometric != 0 and arr.shape[2] in (n, n + 1):
        if arr.shape[2] == n or not (extras and extras[0] == 1):  # no premultiplied alpha to undo
            arr = _orient(arr, orientation)
            top = 255 if arr.dtype == np.uint8 else 65535
            alpha = to_unit(arr[..., n], top) if arr.shape[2] > n else None
            colour = arr[..., 0] if n == 1 else arr[..., :3]
            return Decoded(colour, alpha, 16 if top == 65535 else 8, n == 1, icc)
    if arr.dtype == np.uint16:
        depth, f = 16, to_unit(arr, 65535)
    elif arr.dtype == np.uint8:
        depth, f = 8, to_unit(arr, 255)
    elif arr.dtype == np.bool_:
        depth, f = 8, arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        depth, f = 16, np.clip(np.nan_to_num(arr.astype(np.float32)), 0, 1)
    elif np.issubdtype(arr.dtype, np.unsignedinteger):
        depth, f = 16, to_unit(arr, np.iinfo(arr.dtype).max)
    else:
        raise UnidentifiedImageError(f"unsupported TIFF sample type {arr.dtype}")
    f = _orient(f, orientation)
    n = 3 if photometric == 2 else 1
    if f.shape[2] < n:
        raise UnidentifiedImageError("TIFF has fewer samples than its colour space needs")
    colour, alpha = f[..., :n], None
    if f.shape[2] > n:
        alpha = np.ascontiguousarray(f[..., n])
        if extras and extras[0] == 1:  # associated (premultiplied) alpha
            safe = np.maximum(alpha, 1e-8)[..., None]
            colour = np.where(alpha[..., None] > 0, colour / safe, 0)
    if photometric == 0:
        colour = 1.0 - colour
    colour = np.clip(colour, 0, 1).astype(np.float32)
    grey = n == 1
    colour = np.ascontiguousarray(colour[..., 0] if grey else colour)
    return Decoded(colour, alpha, depth, grey, icc)


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an (H, W, ...) array exactly as ImageOps.exif_transpose."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, -1)
    elif orientation == 7:
        a = a[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        a = np.rot90(a, 1)
    return np.ascontiguousarray(a)


def _key_alpha(arr: np.ndarray, key) -> np.ndarray | None:
    """Alpha from a tRNS-style colour key: fully transparent exactly where pixels equal it."""
    if key is None or isinstance(key, bytes):
        return None
    try:
        if arr.ndim == 3:
            if not isinstance(key, tuple) or len(key) < arr.shape[2]:
                return None
            hit = np.all(arr == np.asarray(key[: arr.shape[2]], dtype=arr.dtype), axis=-1)
        else:
            if not isinstance(key, int):
                return None
            hit = arr == key
    except (TypeError, ValueError, OverflowError):
        return None
    return np.where(hit, 0.0, 1.0).astype(np.float32) if hit.any() else None
