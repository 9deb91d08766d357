"""Pixels between the engine's float arrays and Qt's images, plus small display-only helpers.

Everything here is presentation: turning results into QImages (safe to build on worker
threads), showing a colour photo "greyed", the heat-map colours of the attention overlay and the
palette of a sample's dominant colours. No colorization logic lives here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage

from engine.io import Photo


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
