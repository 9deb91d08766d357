"""Reading photos into the form every method needs, and writing results back out.

A photo is decoded exactly once, into a :class:`Photo`: full-resolution CIE L (what the models
condition on), the displayed sRGB pixels (after EXIF orientation and ICC conversion, so what the
user sees is what gets coloured) and enough about the source (alpha, bit depth) for export to
write the result back faithfully. Every way a file can fail to load becomes
:class:`~engine.errors.UnsupportedImage` with a message meant for the user.

This module never imports Qt and never unpickles or executes anything from a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .color import grey_to_L, rgb_to_lab
from .errors import UnsupportedImage

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_SAVE",
    "Photo",
    "load_photo",
    "photo_from_array",
    "save_image",
]

log = logging.getLogger(__name__)

MAX_PIXELS: int = 100_000_000
"""Refuse images with more pixels than this: a small file can declare a huge size (a
"decompression bomb") and exhaust memory. Pillow's own guard is ``Image.MAX_IMAGE_PIXELS``."""

SUPPORTED_SAVE = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

_JPEG_QUALITY = 95
_GREY_TOL = 1.0 / 255.0 + 1e-6  # R, G, B this close count as "no colour" (JPEG chroma noise)
_STRIP_PIXELS = 1 << 22  # colour conversion works in strips of about this many pixels
_IDAT_MAX = 1 << 23  # split the PNG stream into IDAT chunks of at most this many bytes
# Formats whose Pillow plugin runs an external program (EPS runs Ghostscript).
_EXCLUDED_FORMATS = frozenset({"EPS"})
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(eq=False)
class Photo:
    """One photo read once: what every method needs plus what export needs to write it back."""

    L: np.ndarray = field(repr=False)  # (H, W) float32, CIE L in [0, 100] at full resolution
    rgb: np.ndarray = field(repr=False)  # (H, W, 3) float32 sRGB in [0, 1]; R=G=B for grey
    alpha: np.ndarray | None = field(repr=False)  # (H, W) float32 in [0, 1] or None
    bit_depth: int  # 8 or 16
    is_grey: bool  # the source had no colour
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order Pillow and Qt use."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @property
    def stem(self) -> str:
        """Base for output file names."""
        return self.path.stem if self.path is not None else "photo"


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
        d = _decode(p)
        colour = _to_srgb(d.colour, d.icc, p.name)
    except UnsupportedImage:
        raise
    except Image.DecompressionBombError as exc:
        raise UnsupportedImage(_too_large_message(p.name, None)) from exc
    except Image.DecompressionBombWarning as exc:  # only raised when warnings are errors
        raise UnsupportedImage(_too_large_message(p.name, None)) from exc
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
    return _make_photo(colour, d.alpha, d.depth, d.grey, p)


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
    colour = _unit_float(arr, "rgb")
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    if colour.ndim not in (2, 3) or (colour.ndim == 3 and colour.shape[2] != 3):
        raise ValueError(f"rgb must be (H, W) or (H, W, 3), got shape {arr.shape}")
    if colour.shape[0] == 0 or colour.shape[1] == 0:
        raise ValueError(f"rgb is empty (shape {arr.shape})")
    a = None
    if alpha is not None:
        a = _unit_float(np.asarray(alpha), "alpha")
        if a.shape != colour.shape[:2]:
            raise ValueError(f"alpha shape {a.shape} does not match image {colour.shape[:2]}")
    return _make_photo(colour, a, bit_depth, colour.ndim == 2, None)


def _check_file(p: Path) -> None:
    """Catch the common non-image cases up front with specific, helpful messages."""
    name = p.name or str(p)
    if not p.exists():
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


def _check_size(width: int, height: int, name: str) -> None:
    """Refuse empty and oversized images before any pixel data is decoded."""
    if width <= 0 or height <= 0:
        raise UnsupportedImage(
            f"Cannot open “{name}”: the image has no pixels ({width} × {height}). "
            "The file is probably damaged; export it again."
        )
    if width * height > MAX_PIXELS:
        raise UnsupportedImage(_too_large_message(name, (width, height)))


def _too_large_message(name: str, size: tuple[int, int] | None) -> str:
    what = f"{size[0]} × {size[1]} pixels" if size else "larger than the safe limit"
    return (
        f"Cannot open “{name}”: the image is too large ({what}; the limit is "
        f"{MAX_PIXELS:,} pixels, a guard against “decompression bomb” files). Scale it down "
        "with another program and try again. (Developers: the limit is engine.io.MAX_PIXELS, "
        "and Pillow's Image.MAX_IMAGE_PIXELS also applies.)"
    )


def _detail(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@lru_cache(maxsize=1)
def _open_formats() -> tuple[str, ...]:
    """Every format Pillow can open, minus plugins that run external programs."""
    Image.init()
    return tuple(f for f in Image.OPEN if f not in _EXCLUDED_FORMATS)


def _open(p: Path, formats: tuple[str, ...] | None = None) -> Image.Image:
    return Image.open(p, formats=list(formats or _open_formats()))


@dataclass
class _Decoded:
    """Pixels as stored (after orientation), before colour management."""

    colour: np.ndarray  # (H, W) grey or (H, W, 3), float32 in [0, 1]
    alpha: np.ndarray | None
    depth: int
    grey: bool
    icc: bytes | None = None  # embedded profile still to be applied


def _decode(p: Path) -> _Decoded:
    """Decode every pixel of p, choosing the decoder that keeps full precision."""
    tiff = p.suffix.lower() in _TIFF_SUFFIXES
    try:
        im = _open(p)
    except UnidentifiedImageError as exc:
        if not tiff:
            raise
        try:  # e.g. float or 16-bit grey+alpha TIFFs that Pillow does not know
            return _decode_tifffile(p)
        except UnsupportedImage:
            raise
        except Exception:
            raise exc from None
    with im:
        _check_size(im.width, im.height, p.name)
        fmt = im.format
        passes = _wide_passes(im)
        if passes is None:
            im.load()  # full decode, so truncation is found now and not later
            return _decode_pillow(im, p.name)
    if fmt == "TIFF":
        try:
            return _decode_tifffile(p)
        except UnsupportedImage:
            raise
        except Exception as exc:  # e.g. LZW, which tifffile only decodes with imagecodecs
            log.info("%s: tifffile could not decode it (%s); using Pillow", p.name, exc)
    return _decode_two_pass(p, fmt, passes)


def _decode_pillow(im: Image.Image, name: str) -> _Decoded:
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
        alpha = _unit(arr[..., 1], 255) if mode == "LA" else _key_alpha(grey, transparency)
        return _Decoded(_unit(grey, 255), alpha, 8, True, icc)

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
            grey = _unit(np.clip(raw, 0, 65535), 65535)
        return _Decoded(grey, alpha, 16, True, icc)

    if mode == "CMYK":
        return _Decoded(_unit(np.asarray(_cmyk_to_rgb(im, icc, name)), 255), None, 8, False)

    if mode not in ("RGB", "RGBA"):
        try:
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        except ValueError:
            if mode != "LAB":
                raise
            lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
            im = ImageCms.profileToProfile(im, lab, _srgb_profile(), outputMode="RGB")
        mode, icc = im.mode, None  # a profile described the original colour space, not this one

    arr = np.asarray(im)
    alpha = _unit(arr[..., 3], 255) if mode == "RGBA" else _key_alpha(arr, transparency)
    return _Decoded(_unit(arr[..., :3], 255), alpha, 8, False, icc)


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


def _decode_two_pass(p: Path, fmt: str, passes: tuple[str, ...]) -> _Decoded:
    """Recover all 16 bits of colour PNGs and TIFFs with Pillow's own (C, fast) decoders.

    Pillow stores at most 8 bits per colour channel, but its unpackers can be told which byte
    of each 16-bit sample to keep: one decode keeping the high bytes (Pillow's own choice) and
    one keeping the other bytes give the samples exactly. For 16-bit grey+alpha PNG (4 bytes a
    pixel) the plain "RGBA" unpacker keeps all four bytes in one pass.
    """
    planes = []
    orientation, transparency, icc = 1, None, None
    for raw in passes:
        with _open(p, (fmt,)) as im:
            _check_size(im.width, im.height, p.name)
            im.tile = [_with_rawmode(t, raw) for t in im.tile]
            im.load()
            planes.append(np.asarray(im).astype(np.uint16))
            orientation = _exif_orientation(im)
            transparency = im.info.get("transparency")
            icc = im.info.get("icc_profile") or None
    if len(planes) == 1:  # grey+alpha PNG
        b = planes[0]
        arr = np.stack([b[..., 0] << 8 | b[..., 1], b[..., 2] << 8 | b[..., 3]], axis=-1)
    else:
        arr = planes[0] << 8 | planes[1]
    arr = _orient(arr, orientation)
    f = _unit(arr, 65535)
    if f.shape[2] == 2:
        grey, alpha = np.ascontiguousarray(f[..., 0]), np.ascontiguousarray(f[..., 1])
        return _Decoded(grey, alpha, 16, True, icc)
    if f.shape[2] == 4:
        alpha = np.ascontiguousarray(f[..., 3])
    else:
        alpha = _key_alpha(arr, transparency)  # PNG tRNS colour key
    return _Decoded(np.ascontiguousarray(f[..., :3]), alpha, 16, False, icc)


def _with_rawmode(tile, raw: str):
    args = (raw, *tile[3][1:]) if isinstance(tile[3], tuple) else raw
    if hasattr(tile, "_replace"):
        return tile._replace(args=args)
    return (*tile[:3], args)


def _decode_tifffile(p: Path) -> _Decoded:
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
    if arr.dtype == np.uint16:
        depth, f = 16, _unit(arr, 65535)
    elif arr.dtype == np.uint8:
        depth, f = 8, _unit(arr, 255)
    elif arr.dtype == np.bool_:
        depth, f = 8, arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        depth, f = 16, np.clip(np.nan_to_num(arr.astype(np.float32)), 0, 1)
    elif np.issubdtype(arr.dtype, np.unsignedinteger):
        depth, f = 16, _unit(arr, np.iinfo(arr.dtype).max)
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
    return _Decoded(colour, alpha, depth, grey, icc)


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


def _unit(a: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(a, dtype=np.float32) / np.float32(scale)).astype(np.float32, copy=False)


# --- colour management ------------------------------------------------------------------------
#
# Matrix/TRC profiles (almost every RGB and grey profile: Adobe RGB, ProPhoto, Display P3,
# camera and scanner profiles) are applied exactly, in float, from the profile's own curves and
# primaries: Pillow's colour management only works at 8 bits and would throw away the extra
# precision of 16-bit files (and round 8-bit ones). Table-based profiles and CMYK go through
# lcms (PIL.ImageCms) at 8 bits. A profile that cannot be used is ignored and sRGB assumed:
# slightly wrong colours beat refusing the photo.


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def _srgb_to_xyz() -> np.ndarray:
    """sRGB's D50-adapted primaries as lcms stores them, so float and lcms paths agree."""
    tags = _icc_tags(_srgb_profile().tobytes())
    return np.stack([_icc_xyz(tags[s]) for s in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)


def _profile(icc: bytes, name: str) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(BytesIO(icc))
    except Exception as exc:
        log.warning("%s: ignoring unreadable ICC profile (%s); assuming sRGB", name, exc)
        return None


def _to_srgb(colour: np.ndarray, icc: bytes | None, name: str) -> np.ndarray:
    """Convert decoded pixels from their embedded profile's colour space to sRGB."""
    if not icc:
        return colour
    grey = colour.ndim == 2
    space = bytes(icc[16:20])
    if space != (b"GRAY" if grey else b"RGB "):
        log.warning("%s: ICC profile is for %r data, not these pixels; assuming sRGB", name, space)
        return colour
    exact = _shaper(icc)
    if exact is None:
        return _lcms_8bit(colour, icc, name)
    if grey:
        probe = np.linspace(0, 1, 256, dtype=np.float32)
    else:
        v = np.linspace(0, 1, 7, dtype=np.float32)
        probe = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(49, 7, 3)
    try:
        if np.abs(exact(probe) - probe).max() <= 1.0 / 255:  # sRGB or as good as: keep pixels
            return colour
        out = np.empty_like(colour, dtype=np.float32)
        rows = max(1, _STRIP_PIXELS // max(colour.shape[1], 1))
        with np.errstate(all="ignore"):
            for y0 in range(0, colour.shape[0], rows):
                out[y0 : y0 + rows] = np.nan_to_num(exact(colour[y0 : y0 + rows]))
    except (ValueError, FloatingPointError, TypeError) as exc:
        log.warning("%s: ICC conversion failed (%s); assuming sRGB", name, exc)
        return colour
    return out


def _icc_tags(icc: bytes) -> dict[bytes, bytes]:
    if len(icc) < 132 or icc[36:40] != b"acsp":
        raise ValueError("not an ICC profile")
    (count,) = struct.unpack_from(">I", icc, 128)
    if count > 4096 or 132 + 12 * count > len(icc):
        raise ValueError("bad ICC tag table")
    tags = {}
    for i in range(count):
        sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        if offset + size > len(icc):
            raise ValueError("ICC tag outside the profile")
        tags[sig] = bytes(icc[offset : offset + size])
    return tags


def _icc_xyz(data: bytes) -> np.ndarray:
    if data[:4] != b"XYZ ":
        raise ValueError("not an XYZ tag")
    return np.array(struct.unpack_from(">3i", data, 8), dtype=np.float64) / 65536.0


def _icc_curve(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A tone curve (curv or para tag) as a vectorised function on [0, 1]."""
    kind = data[:4]
    if kind == b"curv":
        (n,) = struct.unpack_from(">I", data, 8)
        if n == 0:
            return lambda x: x
        if n == 1:
            gamma = struct.unpack_from(">H", data, 12)[0] / 256.0
            return lambda x: np.power(np.clip(x, 0, 1), gamma)
        table = np.frombuffer(data, ">u2", count=n, offset=12).astype(np.float64) / 65535.0
        grid = np.linspace(0.0, 1.0, n)
        return lambda x: np.interp(x, grid, table)
    if kind == b"para":
        (ftype,) = struct.unpack_from(">H", data, 8)
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}[ftype]
        p = list(np.frombuffer(data, ">i4", count=count, offset=12).astype(np.float64) / 65536.0)
        # Every type is "(a x + b)^g + top when x >= d, else c x + bottom" with some terms fixed.
        g, a, b = p[0], 1.0, 0.0
        c, d, top, bottom = 0.0, -1.0, 0.0, 0.0
        if ftype >= 1:
            a, b = p[1], p[2]
            d = -b / a if a else 0.0
        if ftype == 2:
            top = bottom = p[3]
        if ftype >= 3:
            c, d = p[3], p[4]
        if ftype == 4:
            top, bottom = p[5], p[6]

        def para(x: np.ndarray) -> np.ndarray:
            x = np.clip(x, 0, 1)
            high = np.power(np.maximum(a * x + b, 0.0), g) + top
            return np.clip(np.where(x >= d, high, c * x + bottom), 0, 1)

        return para
    raise ValueError(f"unsupported ICC curve type {kind!r}")


def _shaper(icc: bytes) -> Callable[[np.ndarray], np.ndarray] | None:
    """The exact float conversion to sRGB for a matrix/TRC or grey-TRC profile, else None."""
    try:
        if icc[20:24] != b"XYZ ":
            return None
        tags = _icc_tags(icc)
        if any(s in tags for s in (b"A2B0", b"A2B1", b"A2B2", b"D2B0")):  # lcms uses these
            return None
        if icc[16:20] == b"GRAY":
            curve = _icc_curve(tags[b"kTRC"])
            # Grey Y maps to the PCS white point, which sRGB maps to R = G = B = Y.
            return lambda g: _encode_srgb(curve(g))
        curves = [_icc_curve(tags[s]) for s in (b"rTRC", b"gTRC", b"bTRC")]
        primaries = np.stack([_icc_xyz(tags[s]) for s in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)
        to_srgb = np.linalg.solve(_srgb_to_xyz(), primaries).T.astype(np.float32)
    except (KeyError, ValueError, struct.error, np.linalg.LinAlgError):
        return None

    def convert(rgb: np.ndarray) -> np.ndarray:
        lin = np.stack([curves[i](rgb[..., i]) for i in range(3)], axis=-1).astype(np.float32)
        return _encode_srgb(lin @ to_srgb)

    return convert


def _encode_srgb(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0, 1)
    out = np.where(lin > 0.0031308, 1.055 * np.power(lin, 1 / 2.4) - 0.055, 12.92 * lin)
    return out.astype(np.float32)


def _lcms_8bit(colour: np.ndarray, icc: bytes, name: str) -> np.ndarray:
    """Table-based profiles: let lcms do it, at 8 bits (all Pillow's colour management offers)."""
    profile = _profile(icc, name)
    if profile is None:
        return colour
    grey = colour.ndim == 2
    try:
        xf = ImageCms.buildTransform(profile, _srgb_profile(), "L" if grey else "RGB", "RGB")
        if grey:
            ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
            curve = np.asarray(ImageCms.applyTransform(ramp, xf)).reshape(256, 3).mean(axis=1)
            return np.interp(colour, np.linspace(0, 1, 256), curve / 255.0).astype(np.float32)
        q = _quantize(colour, 8)
        out = np.asarray(ImageCms.applyTransform(Image.fromarray(q), xf))[..., :3]
    except Exception as exc:
        log.warning("%s: ICC conversion failed (%s); assuming sRGB", name, exc)
        return colour
    if np.abs(out.astype(np.int16) - q).max() <= 1:
        return colour  # an sRGB profile: keep the pixels exactly as stored
    return _unit(out, 255)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, name: str) -> Image.Image:
    """CMYK through its embedded profile when there is one, else Pillow's naive formula."""
    if icc and icc[16:20] == b"CMYK":
        profile = _profile(icc, name)
        if profile is not None:
            try:
                return ImageCms.profileToProfile(im, profile, _srgb_profile(), outputMode="RGB")
            except Exception as exc:
                log.warning("%s: CMYK conversion failed (%s); using a simple one", name, exc)
    return im.convert("RGB")


# --- building the Photo -----------------------------------------------------------------------


def _make_photo(
    colour: np.ndarray, alpha: np.ndarray | None, depth: int, grey_source: bool, path: Path | None
) -> Photo:
    """Normalise decoded pixels and compute full-resolution L once, for every method to share."""
    colour = np.array(colour, dtype=np.float32)  # one private copy, then work in place
    np.nan_to_num(colour, copy=False)
    np.clip(colour, 0, 1, out=colour)
    if colour.ndim == 3:
        if grey_source or float(np.ptp(colour, axis=2).max(initial=0.0)) <= _GREY_TOL:
            grey_source = True
            colour = colour.mean(axis=2, dtype=np.float32)
    if grey_source:
        grey = np.ascontiguousarray(colour, dtype=np.float32)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        rgb = np.ascontiguousarray(colour, dtype=np.float32)
    if alpha is not None:
        alpha = np.clip(np.ascontiguousarray(alpha, dtype=np.float32), 0, 1)
    return Photo(
        L=_lightness(rgb, grey_source),
        rgb=rgb,
        alpha=alpha,
        bit_depth=16 if depth == 16 else 8,
        is_grey=bool(grey_source),
        path=path,
    )


def _lightness(rgb: np.ndarray, grey: bool) -> np.ndarray:
    """CIE L of sRGB pixels with engine.color, in strips so huge photos do not spike memory."""
    h, w = rgb.shape[:2]
    out = np.empty((h, w), np.float32)
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    with torch.no_grad():
        for y0 in range(0, h, rows):
            strip = rgb[y0 : y0 + rows]
            if grey:
                L = grey_to_L(torch.from_numpy(np.ascontiguousarray(strip[..., 0])))
            else:
                L = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(strip.transpose(2, 0, 1))))[0]
            out[y0 : y0 + rows] = L.numpy()
    return np.clip(out, 0, 100, out=out)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_image(
    path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8
) -> Path:
    """Write a result as PNG, JPEG or TIFF (by extension), atomically.

    ``rgb`` is float (H, W, 3) or (H, W) in [0, 1]. ``bit_depth=16`` keeps 16-bit precision for
    PNG and TIFF (JPEG is always 8-bit, and drops alpha). The file appears complete or not at
    all: it is written next to the target and renamed over it. Returns the written path.
    """
    p = Path(path).expanduser()
    ext = p.suffix.lower()
    if ext not in SUPPORTED_SAVE:
        raise ValueError(
            f"Cannot save “{p.name}”: unknown file type “{p.suffix or '(none)'}”. "
            f"Use one of {', '.join(SUPPORTED_SAVE)}."
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    colour = _unit_float(np.asarray(rgb), "rgb")
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    if colour.ndim not in (2, 3) or (colour.ndim == 3 and colour.shape[2] != 3):
        raise ValueError(f"rgb must be (H, W) or (H, W, 3), got shape {colour.shape}")
    if colour.shape[0] == 0 or colour.shape[1] == 0:
        raise ValueError(f"cannot save an empty image (shape {colour.shape})")
    a = None
    if alpha is not None:
        a = _unit_float(np.asarray(alpha), "alpha")
        if a.shape != colour.shape[:2]:
            raise ValueError(f"alpha shape {a.shape} does not match image {colour.shape[:2]}")

    jpeg = ext in (".jpg", ".jpeg")
    if jpeg:
        bit_depth, a = 8, None
    planes = [colour[..., None] if colour.ndim == 2 else colour]
    if a is not None:
        planes.append(a[..., None])
    pixels = _quantize(np.concatenate(planes, axis=2), bit_depth)  # (H, W, C), C in 1..4

    if ext == ".png" and bit_depth == 16:

        def write(fh: BinaryIO) -> None:
            _write_png16(fh, pixels)

    elif ext in (".tif", ".tiff"):

        def write(fh: BinaryIO) -> None:
            _write_tiff(fh, pixels)

    else:

        def write(fh: BinaryIO) -> None:
            im = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
            if jpeg:
                im.save(fh, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
            else:
                im.save(fh, format="PNG", compress_level=6)

    p.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(p, write)
    return p


def _unit_float(a: np.ndarray, what: str) -> np.ndarray:
    """Accept float [0, 1], uint8 or uint16 pixels; return float32 clipped to [0, 1]."""
    if a.dtype == np.uint8:
        return _unit(a, 255)
    if a.dtype == np.uint16:
        return _unit(a, 65535)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what} must be a float, uint8 or uint16 array, got {a.dtype}")
    return np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1)


def _quantize(a: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 65535 if bit_depth == 16 else 255
    out = np.rint(np.clip(a, 0, 1) * np.float32(top))
    return out.astype(np.uint16 if bit_depth == 16 else np.uint8)


def _write_tiff(fh: BinaryIO, pixels: np.ndarray) -> None:
    """8- or 16-bit TIFF with unassociated alpha, deflate-compressed, via tifffile."""
    import tifffile

    c = pixels.shape[2]
    kwargs = {}
    if c in (2, 4):
        kwargs["extrasamples"] = ("unassalpha",)
    data = pixels[..., 0] if c == 1 else pixels
    tifffile.imwrite(
        fh,
        data,
        photometric="rgb" if c >= 3 else "minisblack",
        planarconfig="contig" if c > 1 else None,
        compression="zlib",
        **kwargs,
    )


def _png_chunk(fh: BinaryIO, tag: bytes, data: bytes) -> None:
    fh.write(struct.pack(">I", len(data)))
    fh.write(tag)
    fh.write(data)
    fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF))


def _write_png16(fh: BinaryIO, pixels: np.ndarray) -> None:
    """A minimal 16-bit PNG encoder, because Pillow cannot write 16-bit colour PNGs.

    Non-interlaced, filter type 0 on every row, big-endian samples; colour type 0 (grey),
    4 (grey+alpha), 2 (RGB) or 6 (RGBA). Rows are compressed in blocks and the stream is split
    over several IDAT chunks, so memory stays bounded for large images.
    """
    h, w, c = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    fh.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(fh, b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    comp = zlib.compressobj(6)
    pending = bytearray()
    row_bytes = w * c * 2
    rows = max(1, (1 << 20) // (row_bytes + 1))
    for y0 in range(0, h, rows):
        block = np.ascontiguousarray(pixels[y0 : y0 + rows], dtype=">u2")
        n = block.shape[0]
        lines = np.zeros((n, row_bytes + 1), np.uint8)  # column 0: filter type 0 (None)
        lines[:, 1:] = block.reshape(n, -1).view(np.uint8)
        pending += comp.compress(lines.tobytes())
        while len(pending) >= _IDAT_MAX:
            _png_chunk(fh, b"IDAT", bytes(pending[:_IDAT_MAX]))
            del pending[:_IDAT_MAX]
    pending += comp.flush()
    for start in range(0, len(pending), _IDAT_MAX):
        _png_chunk(fh, b"IDAT", bytes(pending[start : start + _IDAT_MAX]))
    _png_chunk(fh, b"IEND", b"")


def _new_file_mode(dest: Path) -> int:
    """Permissions for the finished file: the old file's, else what open() would have given."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(dest.stat().st_mode)
    return 0o666 & ~_umask()


@lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temporary file in dest's folder, then rename it over dest in one step."""
    mode = _new_file_mode(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)  # reopen by name: writers such as tifffile want a named file
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
