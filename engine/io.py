"""Reading photos into the form every method needs, and writing results back out.

A photo is decoded exactly once, into a :class:`Photo`: full-resolution CIE L (what the models
condition on), the displayed sRGB pixels (after EXIF orientation and ICC conversion, so what the
user sees is what gets coloured) and enough about the source (alpha, bit depth) for export to
write the result back faithfully. Every way a file can fail to load becomes
:class:`~engine.errors.UnsupportedImage` with a message meant for the user.

ICC colour management lives in :mod:`engine.icc` and the hand-written 16-bit PNG and TIFF
encoders in :mod:`engine.image_writers`; this module decodes, orients, builds the Photo and
writes files atomically.

This module never imports Qt and never unpickles or executes anything from a file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import struct
import queue
import sys
import threading
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .color import AB_SCALE, StripUpsampler, grey_to_L, linear_to_srgb, rgb_to_lab
from .errors import UnsupportedImage
from .files import atomic_write
from .icc import cmyk_to_rgb, srgb_profile, to_srgb
from .metadata import source_exif
from .pixels import quantize, to_unit
from .image_writers import Metadata, PngStream, write_jpeg, write_png, write_png16, write_tiff

if TYPE_CHECKING:
    from .types import CancelToken

__all__ = [
    "MAX_PIXELS",
    "Metadata",
    "save_colorizations",
    "SUPPORTED_SAVE",
    "Photo",
    "load_photo",
    "looks_like_photo",
    "photo_from_L",
    "photo_from_array",
    "save_image",
]

log = logging.getLogger(__name__)

MAX_PIXELS: int = 160_000_000
"""Refuse images that claim more pixels than this: a small file can declare a huge size (a
"decompression bomb") and exhaust memory. Real archive scans reach 60–150 megapixels and are
colorized (a strip at a time, see :func:`save_colorizations`); Pillow's own guard
(``Image.MAX_IMAGE_PIXELS``, an error at twice its value) still applies below ours."""

SUPPORTED_SAVE = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Pillow warns (with its own file path) about anything over Image.MAX_IMAGE_PIXELS (89 MP):
# every real large scan. Sizes are checked here against MAX_PIXELS before decoding, with a
# message for people, so that warning only adds noise to the user's terminal.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_JPEG_QUALITY = 95
_GREY_TOL = 1.0 / 255.0 + 1e-6  # R, G, B this close count as "no colour" (JPEG chroma noise)
_STRIP_PIXELS = 1 << 22  # colour conversion works in strips of about this many pixels
# Formats whose Pillow plugin runs an external program (EPS runs Ghostscript).
_EXCLUDED_FORMATS = frozenset({"EPS"})
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(eq=False)
class Photo:
    """One photo read once: what every method needs plus what export needs to write it back.

    The sRGB pixels are kept as decoded (``pixels``: uint8, uint16 or float32; (H, W) for grey)
    and ``rgb`` makes the float (H, W, 3) view on first use: the models only need ``L``, so the
    CLI colorizes a 100-megapixel scan without ever holding a float copy of its pixels.
    """

    L: np.ndarray = field(repr=False)  # (H, W) float32, CIE L in [0, 100] at full resolution
    pixels: np.ndarray = field(repr=False)  # (H, W) grey or (H, W, 3) sRGB, uint8/uint16/float32 [0, 1]
    alpha: np.ndarray | None = field(repr=False)  # (H, W) float32 in [0, 1] or None
    bit_depth: int  # 8 or 16
    is_grey: bool  # the source had no colour
    path: Path | None = None
    exif: bytes | None = field(default=None, repr=False)  # the source's EXIF, orientation already applied

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order Pillow and Qt use."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @cached_property
    def rgb(self) -> np.ndarray:
        """(H, W, 3) float32 sRGB in [0, 1]; R = G = B for grey. Made once, on first use."""
        unit = _float_unit(self.pixels)
        if unit.ndim == 2:
            return np.repeat(unit[..., None], 3, axis=2)
        return np.ascontiguousarray(unit, dtype=np.float32)

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
        colour = to_srgb(d.colour, d.icc, p.name)
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
        with _open(p):
            return True
    except Image.DecompressionBombError:
        return True
    except Exception:
        return False


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


@contextlib.contextmanager
def _open(p: Path, formats: tuple[str, ...] | None = None) -> Iterator[Image.Image]:
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
class _Decoded:
    """Pixels as stored (after orientation), before colour management."""

    colour: np.ndarray  # (H, W) grey or (H, W, 3), float32 in [0, 1]
    alpha: np.ndarray | None
    depth: int
    grey: bool
    icc: bytes | None = None  # embedded profile still to be applied
    exif: bytes | None = None  # EXIF worth keeping (engine.metadata.source_exif), orientation reset


def _decode(p: Path) -> _Decoded:
    """Decode every pixel of p, choosing the decoder that keeps full precision."""
    tiff = p.suffix.lower() in _TIFF_SUFFIXES
    opened = contextlib.ExitStack()
    try:
        im = opened.enter_context(_open(p))
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
        alpha = to_unit(arr[..., 1], 255) if mode == "LA" else _key_alpha(grey, transparency)
        return _Decoded(grey, alpha, 8, True, icc)

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
        return _Decoded(grey, alpha, 16, True, icc)

    if mode == "CMYK":
        return _Decoded(np.asarray(cmyk_to_rgb(im, icc, name)), None, 8, False)

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
    return _Decoded(arr[..., :3], alpha, 8, False, icc)


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
    orientation, transparency, icc, exif = 1, None, None, None
    for raw in passes:
        with _open(p, (fmt,)) as im:
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
        return _Decoded(arr[..., 0], to_unit(arr[..., 1], 65535), 16, True, icc, exif)
    if arr.shape[2] == 4:
        alpha = to_unit(arr[..., 3], 65535)
    else:
        alpha = _key_alpha(arr, transparency)  # PNG tRNS colour key
    return _Decoded(arr[..., :3], alpha, 16, False, icc, exif)


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
    n = 3 if photometric == 2 else 1
    if arr.dtype in (np.uint8, np.uint16) and photometric != 0 and arr.shape[2] in (n, n + 1):
        if arr.shape[2] == n or not (extras and extras[0] == 1):  # no premultiplied alpha to undo
            arr = _orient(arr, orientation)
            top = 255 if arr.dtype == np.uint8 else 65535
            alpha = to_unit(arr[..., n], top) if arr.shape[2] > n else None
            colour = arr[..., 0] if n == 1 else arr[..., :3]
            return _Decoded(colour, alpha, 16 if top == 65535 else 8, n == 1, icc)
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


# --- building the Photo -----------------------------------------------------------------------


def _float_unit(a: np.ndarray) -> np.ndarray:
    """Samples as stored (uint8, uint16 or float) -> float32 in [0, 1], NaN-free."""
    if a.dtype == np.uint8:
        return to_unit(a, 255)
    if a.dtype == np.uint16:
        return to_unit(a, 65535)
    f = np.nan_to_num(np.asarray(a, dtype=np.float32))
    return np.clip(f, 0, 1, out=f)


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
        colour = _float_unit(colour)  # a private float copy
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    if colour.ndim == 3 and not grey_source:
        spread = 0.0
        for y0 in starts:
            strip = colour[y0 : y0 + rows]
            spread = max(spread, float(np.ptp(_float_unit(strip), axis=2).max(initial=0.0)))
            if spread > _GREY_TOL:
                break
        grey_source = spread <= _GREY_TOL
    if colour.ndim == 3 and grey_source:  # colour channels carrying grey: keep their mean
        grey = np.empty((h, w), np.float32)
        for y0 in starts:
            grey[y0 : y0 + rows] = _float_unit(colour[y0 : y0 + rows]).mean(axis=2, dtype=np.float32)
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
            strip = _float_unit(pixels[y0 : y0 + rows])
            if strip.ndim == 2:
                L = grey_to_L(torch.from_numpy(np.ascontiguousarray(strip)))
            else:
                L = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(strip.transpose(2, 0, 1))))[0]
            out[y0 : y0 + rows] = L.numpy()
    return np.clip(out, 0, 100, out=out)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


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


def _unit_float(a: np.ndarray, what: str) -> np.ndarray:
    """Accept float [0, 1], uint8 or uint16 pixels; return float32 clipped to [0, 1]."""
    if a.dtype == np.uint8:
        return to_unit(a, 255)
    if a.dtype == np.uint16:
        return to_unit(a, 65535)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what} must be a float, uint8 or uint16 array, got {a.dtype}")
    return np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1)

