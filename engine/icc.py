"""Colour management: converting decoded pixels from their embedded ICC profile to sRGB.

Why this exists rather than just calling Pillow: Pillow's colour management (lcms through
PIL.ImageCms) only works on 8-bit images, so it would quantise a 16-bit photo to 8 bits (and
round 8-bit ones) on the way to sRGB. Matrix/TRC profiles (almost every RGB and grey profile:
Adobe RGB, ProPhoto, Display P3, camera and scanner profiles) are simple enough to apply
exactly, in float, from the profile's own tone curves and primaries, so we parse those
ourselves and keep the full precision. Table-based profiles (A2B0 ...) and CMYK still go
through lcms at 8 bits. A profile that cannot be used is ignored and sRGB assumed: slightly
wrong colours beat refusing the photo.

Used by :mod:`engine.io` and :mod:`engine.decode`; never imports Qt.
"""

from __future__ import annotations

import logging
import struct
from functools import lru_cache
from io import BytesIO
from typing import Callable

import numpy as np
from PIL import Image, ImageCms

from .pixels import quantize, to_unit

__all__ = ["cmyk_to_rgb", "shaper", "srgb_profile", "to_srgb"]

log = logging.getLogger(__name__)

_STRIP_PIXELS = 1 << 22  # convert in strips of about this many pixels (as engine.io does)


@lru_cache(maxsize=1)
def srgb_profile() -> ImageCms.ImageCmsProfile:
    """lcms's built-in sRGB profile, the target of every conversion."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def _srgb_to_xyz() -> np.ndarray:
    """sRGB's D50-adapted primaries as lcms stores them, so float and lcms paths agree."""
    tags = _icc_tags(srgb_profile().tobytes())
    return np.stack([_icc_xyz(tags[s]) for s in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)


def _profile(icc: bytes, name: str) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(BytesIO(icc))
    except Exception as exc:
        log.warning("%s: ignoring unreadable ICC profile (%s); assuming sRGB", name, exc)
        return None


def _unit(a: np.ndarray) -> np.ndarray:
    """Decoded samples (uint8, uint16 or float in [0, 1]) as float32 in [0, 1]."""
    if a.dtype == np.uint8:
        return to_unit(a, 255)
    if a.dtype == np.uint16:
        return to_unit(a, 65535)
    return np.asarray(a, dtype=np.float32)


def to_srgb(colour: np.ndarray, icc: bytes | None, name: str) -> np.ndarray:
    """Convert decoded pixels from their embedded profile's colour space to sRGB.

    ``colour`` may hold integer samples (uint8, uint16): they are returned untouched when no
    conversion is needed (no profile, or one as good as sRGB), else converted to float a strip
    at a time.
    """
    if not icc:
        return colour
    grey = colour.ndim == 2
    space = bytes(icc[16:20])
    if space != (b"GRAY" if grey else b"RGB "):
        log.warning("%s: ICC profile is for %r data, not these pixels; assuming sRGB", name, space)
        return colour
    exact = shaper(icc)
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
                out[y0 : y0 + rows] = np.nan_to_num(exact(_unit(colour[y0 : y0 + rows])))
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


def shaper(icc: bytes) -> Callable[[np.ndarray], np.ndarray] | None:
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
    source = colour
    colour = _unit(colour)
    grey = colour.ndim == 2
    try:
        xf = ImageCms.buildTransform(profile, srgb_profile(), "L" if grey else "RGB", "RGB")
        if grey:
            ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
            curve = np.asarray(ImageCms.applyTransform(ramp, xf)).reshape(256, 3).mean(axis=1)
            return np.interp(colour, np.linspace(0, 1, 256), curve / 255.0).astype(np.float32)
        q = quantize(colour, 8)
        out = np.asarray(ImageCms.applyTransform(Image.fromarray(q), xf))[..., :3]
    except Exception as exc:
        log.warning("%s: ICC conversion failed (%s); assuming sRGB", name, exc)
        return source
    if np.abs(out.astype(np.int16) - q).max() <= 1:
        return source  # an sRGB profile: keep the pixels exactly as stored
    return to_unit(out, 255)


def cmyk_to_rgb(im: Image.Image, icc: bytes | None, name: str) -> Image.Image:
    """CMYK through its embedded profile when there is one, else Pillow's naive formula."""
    if icc and icc[16:20] == b"CMYK":
        profile = _profile(icc, name)
        if profile is not None:
            try:
                return ImageCms.profileToProfile(im, profile, srgb_profile(), outputMode="RGB")
            except Exception as exc:
                log.warning("%s: CMYK conversion failed (%s); using a simple one", name, exc)
    return im.convert("RGB")
