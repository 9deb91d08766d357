"""Hand-written file encoders for what Pillow cannot write.

Pillow cannot write a 16-bit RGB or RGBA PNG (it has no 16-bit colour image mode to save), so a
result exported at 16 bits would silently lose precision. :func:`write_png16` is a small
16-bit PNG encoder (numpy + zlib) used for every 16-bit PNG, grey included, so there is one
path; :func:`write_tiff` writes 8- or 16-bit TIFF with unassociated alpha through tifffile.
Both take already-quantised (H, W, C) pixels and an open binary file: choosing the format,
quantising and the atomic rename stay in :func:`engine.io.save_image`.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["IDAT_MAX", "write_png16", "write_tiff"]

IDAT_MAX = 1 << 23  # split the PNG stream into IDAT chunks of at most this many bytes


def write_tiff(fh: BinaryIO, pixels: np.ndarray) -> None:
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


def write_png16(fh: BinaryIO, pixels: np.ndarray) -> None:
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
        while len(pending) >= IDAT_MAX:
            _png_chunk(fh, b"IDAT", bytes(pending[:IDAT_MAX]))
            del pending[:IDAT_MAX]
    pending += comp.flush()
    for start in range(0, len(pending), IDAT_MAX):
        _png_chunk(fh, b"IDAT", bytes(pending[start : start + IDAT_MAX]))
    _png_chunk(fh, b"IEND", b"")
