"""The Photo: one photo as every method and every export needs it, read once.

Built by :mod:`engine.io` (from a file or from pixels in memory), read by the methods (its L),
the app (its pixels) and :mod:`engine.save` (its L, alpha and bit depth for the result). A data
type only, so that every module can name it without importing the readers or the writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .pixels import samples_to_unit

__all__ = ["Photo"]


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
        unit = samples_to_unit(self.pixels)
        if unit.ndim == 2:
            return np.repeat(unit[..., None], 3, axis=2)
        return np.ascontiguousarray(unit, dtype=np.float32)

    @property
    def stem(self) -> str:
        """Base for output file names."""
        return self.path.stem if self.path is not None else "photo"
