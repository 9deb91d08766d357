"""Pixels between the engine's float arrays and Qt's images, plus small display-only helpers.

Everything here is presentation: turning results into QImages (safe to build on worker
threads), showing a colour photo "greyed", the heat-map colours of the attention overlay and the
palette of a sample's dominant colours. No colorization logic lives here.

Big photos are *shown* through a preview: :func:`load_app_photo` gives the app a
:class:`PreviewPhoto` of at most :data:`PREVIEW_PIXELS` whose ``source`` is the full-resolution
photo. Gallery samples, strokes, the stroke field and the canvas all work on the preview (the
models see 64–128 px anyway), so a 48-megapixel scan opens in seconds and in a few hundred MB
instead of holding every sample at full size. Full resolution is touched once, at export, by the
engine's strip writer (:func:`export_full`). Strokes live in preview coordinates in the app and
in full-resolution coordinates in files (:func:`strokes_to_full` / :func:`strokes_to_view`), so
a project's strokes are the same file the CLI's ``--strokes`` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PySide6.QtGui import QImage

from engine.color import AB_SCALE, rgb_to_lab
from engine.colorizer import Colorization
from engine.io import Metadata, Photo, load_photo, save_colorizations
from engine.strokes import MAX_RADIUS, Stroke
from engine.types import CancelToken

PREVIEW_PIXELS = 2_000_000
"""The most pixels the app works on: larger photos get a preview this size (the canvas of a
1440x900 window shows ~1 MP) and a gallery of 16 samples per method stays near 1 GiB (each sample is a float image of this size)."""


@dataclass(eq=False)
class PreviewPhoto(Photo):
    """A downscaled stand-in for a big photo (see the module docstring); ``source`` is the
    full-resolution photo export writes from. Same path, bit depth, EXIF and greyness."""

    source: Photo | None = field(default=None, repr=False)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from preview to full-resolution pixel coordinates (>= 1)."""
        assert self.source is not None
        (W, H), (w, h) = self.source.size, self.size
        return W / w, H / h


def full_size(photo: Photo) -> tuple[int, int]:
    """(width, height) of the photo the user opened (not of its preview)."""
    return photo.source.size if isinstance(photo, PreviewPhoto) and photo.source is not None else photo.size


def preview_size(size: tuple[int, int], max_pixels: int | None = None) -> tuple[int, int]:
    """The (w, h) a photo of ``size`` is worked on at: itself up to ``max_pixels``, else scaled
    down, keeping the aspect ratio, to at most ``max_pixels``."""
    W, H = size
    max_pixels = PREVIEW_PIXELS if max_pixels is None else max_pixels
    if W * H <= max_pixels:
        return W, H
    s = math.sqrt(max_pixels / (W * H))
    return max(1, math.floor(W * s)), max(1, math.floor(H * s))


def _box(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a 2-D plane to (w, h) in float32, as the colorizer reduces L for the models
    (``F.interpolate(mode="area")``)."""
    w, h = size
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
        return F.interpolate(t, size=(h, w), mode="area")[0, 0].numpy()


def preview_photo(photo: Photo, max_pixels: int | None = None) -> Photo:
    """``photo`` itself when small enough, else a :class:`PreviewPhoto` of it.

    L is area-averaged from the full-resolution L (what the models would see of the original),
    and the pixels and alpha likewise; integer pixels stay integers (8-bit) or become floats.
    The full-resolution ``source`` keeps what export needs (L, alpha, bit depth, EXIF, path);
    its pixels, which nothing reads again, are dropped for a zero-byte placeholder of their
    shape (``size`` still works): up to 288 MB less for a 48-megapixel 16-bit colour scan.
    """
    size = preview_size(photo.size, max_pixels)
    if size == photo.size:
        return photo
    px = photo.pixels
    if px.dtype == np.uint8:
        small = np.asarray(Image.fromarray(px).resize(size, Image.Resampling.BOX))
    else:
        unit = 65535.0 if px.dtype == np.uint16 else 1.0
        planes = [px] if px.ndim == 2 else [px[..., c] for c in range(px.shape[2])]
        small = np.stack([_box(np.asarray(q, np.float32) / unit, size) for q in planes], axis=-1)
        small = np.clip(small[..., 0] if px.ndim == 2 else small, 0, 1)
    source = replace(photo, pixels=np.broadcast_to(np.zeros((), px.dtype), px.shape))
    return PreviewPhoto(
        L=np.clip(_box(photo.L, size), 0, 100),
        pixels=np.ascontiguousarray(small),
        alpha=None if photo.alpha is None else np.clip(_box(photo.alpha, size), 0, 1),
        bit_depth=photo.bit_depth,
        is_grey=photo.is_grey,
        path=photo.path,
        exif=photo.exif,
        source=source,
    )


def load_app_photo(path: str | Path, max_pixels: int | None = None) -> Photo:
    """What the app opens: the photo, or a preview of it when it is big (see the module doc)."""
    return preview_photo(load_photo(path), max_pixels)


def _scaled(strokes: Iterable[Stroke], sx: float, sy: float) -> list[Stroke]:
    r = math.sqrt(sx * sy)
    return [
        Stroke(s.color, min(MAX_RADIUS, s.radius * r), tuple((x * sx, y * sy) for x, y in s.points))
        for s in strokes
    ]


def strokes_to_full(strokes: Sequence[Stroke], photo: Photo) -> list[Stroke]:
    """Strokes drawn on the app's photo, in the full-resolution photo's pixel coordinates."""
    if not isinstance(photo, PreviewPhoto) or photo.source is None:
        return list(strokes)
    sx, sy = photo.scale
    return _scaled(strokes, sx, sy)


def strokes_to_view(strokes: Sequence[Stroke], photo: Photo) -> list[Stroke]:
    """Strokes in full-resolution coordinates (files), on the app's photo (its preview)."""
    if not isinstance(photo, PreviewPhoto) or photo.source is None:
        return list(strokes)
    sx, sy = photo.scale
    return _scaled(strokes, 1 / sx, 1 / sy)


def export_full(
    path: str | Path,
    photo: PreviewPhoto,
    rgb: np.ndarray,
    base: Colorization | None = None,
    metadata: Metadata | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write the result of a previewed photo at the original's full size, a strip at a time.

    With ``base`` (a sample, no strokes) its model-size ab is upsampled onto the original's L:
    exactly what ``divcolor colorize`` writes for that sample. Otherwise the chroma of ``rgb``
    (the result on the preview, strokes included) is: at preview resolution, chroma is far
    finer than anything the models or strokes change, and the luminance is the original's.
    Memory stays bounded (:func:`engine.io.save_colorizations`); ``cancel`` is checked per strip.
    """
    assert photo.source is not None
    if base is not None:
        ab_low = base.ab_low.detach().float().cpu()[None]
    else:
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
            ab_low = rgb_to_lab(t)[1:][None] / AB_SCALE
    return save_colorizations([path], photo.source, ab_low, [metadata], cancel=cancel)[0]


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W[, C]) -> contiguous uint8."""
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    return np.ascontiguousarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    """(H, W, 3) float or uint8 -> an RGB888 QImage that owns its pixels (thread-safe to build)."""
    a = to_uint8(rgb)
    if a.ndim == 2:
        a = np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    h, w = a.shape[:2]
    img = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return img.copy()  # detach from the numpy buffer, which may be freed


def qimage_from_rgba(rgba: np.ndarray) -> QImage:
    a = to_uint8(rgba)
    h, w = a.shape[:2]
    img = QImage(a.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return img.copy()


def thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """A uint8 copy whose longer side is ``size`` (area-averaged, so it looks like the photo)."""
    a = to_uint8(rgb)
    h, w = a.shape[:2]
    s = size / max(h, w)
    if s >= 1:
        return a
    im = Image.fromarray(a).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX)
    return np.asarray(im)


def grey_display(photo: Photo) -> np.ndarray:
    """The photo as the models see it: neutral grey with the photo's CIE L.

    Colour photos are accepted (users test on known photos) but their colour is dropped, so the
    canvas shows them greyed. For grey photos this is just their pixels.
    """
    if photo.is_grey:
        return photo.rgb
    L = photo.L.astype(np.float32)
    fy = (L + 16.0) / 116.0
    Y = np.where(L > 8.0, fy**3, L / 903.3)  # CIE L* -> relative luminance
    g = np.where(Y > 0.0031308, 1.055 * np.power(np.clip(Y, 0, 1), 1 / 2.4) - 0.055, 12.92 * Y)
    g = np.clip(g, 0, 1).astype(np.float32)
    return np.repeat(g[..., None], 3, axis=2)


# --- attention heat map -------------------------------------------------------------------------

# Anchors of a perceptually ordered dark-to-bright ramp (close to matplotlib's "inferno").
_HEAT_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    np.float32,
)


def _heat_lut() -> np.ndarray:
    x = np.linspace(0, 1, 256)
    xp = np.linspace(0, 1, len(_HEAT_ANCHORS))
    return np.stack([np.interp(x, xp, _HEAT_ANCHORS[:, c]) for c in range(3)], axis=1).astype(np.uint8)


HEAT_LUT = _heat_lut()


def heatmap_rgba(values: np.ndarray, max_alpha: float = 0.8) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 4) uint8: colour by value, low attention transparent.

    The map is normalised to its own maximum so that weak but structured attention is visible.
    """
    v = np.nan_to_num(np.asarray(values, np.float32))
    peak = float(v.max()) if v.size else 0.0
    if peak > 0:
        v = v / peak
    v = np.clip(v, 0, 1)
    idx = (v * 255).astype(np.uint8)
    rgba = np.empty(v.shape + (4,), np.uint8)
    rgba[..., :3] = HEAT_LUT[idx]
    rgba[..., 3] = (np.sqrt(v) * max_alpha * 255).astype(np.uint8)
    return rgba


# --- palette --------------------------------------------------------------------------------------


def dominant_colors(rgb: np.ndarray, k: int = 6, sample_size: int = 96) -> list[tuple[int, int, int]]:
    """A handful of the sample's dominant colours, most frequent first, for one-click brushes.

    Median cut (Pillow) on a small copy: fast enough to run on the GUI thread when a sample is
    picked. Near-duplicates are merged so the swatches are actually different.
    """
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // (4 * sample_size))  # cheap stride first: photos can be huge
    small = Image.fromarray(thumbnail(rgb[::step, ::step], sample_size))
    q = small.quantize(colors=max(k * 2, 2), method=Image.Quantize.MEDIANCUT)
    pal = np.array(q.getpalette()[: 3 * max(k * 2, 2)], np.int32).reshape(-1, 3)
    counts = np.bincount(np.asarray(q).ravel(), minlength=len(pal))
    order = np.argsort(-counts)
    out: list[tuple[int, int, int]] = []
    for i in order:
        if counts[i] == 0:
            break
        c = pal[i]
        if all(np.abs(c - np.array(o)).sum() > 40 for o in out):
            out.append((int(c[0]), int(c[1]), int(c[2])))
        if len(out) == k:
            break
    return out
