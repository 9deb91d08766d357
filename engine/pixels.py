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
