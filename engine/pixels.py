"""Integer pixel values <-> float [0, 1]: one rounding rule for decoding, colour management and
export, so a value read, converted and written back lands where it started."""

from __future__ import annotations

import numpy as np


def to_unit(a: np.ndarray, scale: float) -> np.ndarray:
    """Integer pixels with full scale ``scale`` (255, 65535) -> float32 in [0, 1]."""
    return (np.asarray(a, dtype=np.float32) / np.float32(scale)).astype(np.float32, copy=False)


def quantize(a: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] -> uint8 or uint16, clipped and rounded to nearest."""
    top = 65535 if bit_depth == 16 else 255
    out = np.rint(np.clip(a, 0, 1) * np.float32(top))
    return out.astype(np.uint16 if bit_depth == 16 else np.uint8)


def samples_to_unit(a: np.ndarray) -> np.ndarray:
    """Decoded samples as stored (uint8, uint16 or float) -> float32 in [0, 1], NaN-free."""
    if a.dtype == np.uint8:
        return to_unit(a, 255)
    if a.dtype == np.uint16:
        return to_unit(a, 65535)
    f = np.nan_to_num(np.asarray(a, dtype=np.float32))
    return np.clip(f, 0, 1, out=f)


def array_to_unit(a: np.ndarray, what: str) -> np.ndarray:
    """Pixels a caller hands in (float [0, 1], uint8, uint16, bool) -> float32 clipped to [0, 1];
    anything else is a programming error (ValueError naming ``what``)."""
    if a.dtype == np.uint8:
        return to_unit(a, 255)
    if a.dtype == np.uint16:
        return to_unit(a, 65535)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what} must be a float, uint8 or uint16 array, got {a.dtype}")
    return np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1)


def colour_and_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels a caller hands in, checked and as float32 [0, 1]: (H, W) grey or (H, W, 3) colour
    (an (H, W, 1) plane counts as grey) and an optional (H, W) alpha. Wrong shapes are a
    programming error: ValueError."""
    arr = np.asarray(rgb)
    colour = array_to_unit(arr, "rgb")
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    if colour.ndim not in (2, 3) or (colour.ndim == 3 and colour.shape[2] != 3):
        raise ValueError(f"rgb must be (H, W) or (H, W, 3), got shape {arr.shape}")
    if colour.shape[0] == 0 or colour.shape[1] == 0:
        raise ValueError(f"rgb is empty (shape {arr.shape})")
    a = None
    if alpha is not None:
        a = array_to_unit(np.asarray(alpha), "alpha")
        if a.shape != colour.shape[:2]:
            raise ValueError(f"alpha shape {a.shape} does not match image {colour.shape[:2]}")
    return colour, a
