"""File encoders: a streaming PNG encoder, and JPEG/TIFF writers that carry metadata.

Why hand-written PNG: Pillow cannot write a 16-bit RGB or RGBA PNG (it has no 16-bit colour
image mode to save), and it needs the whole image in memory, while a 100-megapixel scan's
result should be written a strip at a time. :class:`PngStream` takes rows as they are made
(8 or 16 bit, grey/grey+alpha/RGB/RGBA) and writes the iCCP, eXIf and XMP (iTXt) chunks the
export metadata asks for. JPEG goes through Pillow, with the XMP packet spliced in as an APP1
segment ourselves (Pillow's own ``xmp=`` only exists in recent versions); TIFF goes through
tifffile with the ICC profile (tag 34675), XMP (tag 700) and descriptive EXIF tags in IFD0.

Everything here takes already-quantised (H, W, C) pixels and an open binary file: choosing the
format, quantising and the atomic rename stay in :mod:`engine.save`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = ["IDAT_MAX", "Metadata", "PngStream", "deflater", "write_jpeg", "write_png", "write_png16", "write_tiff"]

IDAT_MAX = 1 << 23  # split the PNG stream into IDAT chunks of at most this many bytes
XMP_KEYWORD = b"XML:com.adobe.xmp"
JPEG_XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"
TIFF_LEVEL = 1  # zlib level for TIFF: level 6 is ~6x slower for ~7 % smaller photo files


@dataclass(frozen=True)
class Metadata:
    """What an output file carries besides pixels; every field optional (None: not written)."""

    icc: bytes | None = None  # the profile of the written pixels (sRGB for divcolor's results)
    exif: bytes | None = None  # b"Exif\0\0" + TIFF-structured EXIF, as Pillow's Exif.tobytes()
    xmp: str | None = None  # a complete XMP packet
    tiff_tags: tuple[tuple[int, str], ...] = ()  # (tag, text) for TIFF IFD0 (Make, Model, …)


def deflater(level: int | None = None):
    """A zlib compressor for PNG data. ``None``: the fast one. PNG's zlib at its default level
    (6) compresses filtered photo rows at ~17 MB/s of CPU, 68 s for the 8 results of a
    48-megapixel scan; ISA-L's deflate (the ``isal`` package) at its level 3 writes files of
    the size zlib's level 1 does (~7 % above level 6) at ~350 MB/s. Without ``isal``, zlib at
    level 1 (~110 MB/s). An int: the standard library's zlib at that level."""
    if level is None:
        try:
            from isal import isal_zlib
        except ImportError:
            return zlib.compressobj(1)
        return isal_zlib.compressobj(3)
    return zlib.compressobj(level)


def _png_chunk(fh: BinaryIO, tag: bytes, data: bytes) -> None:
    fh.write(struct.pack(">I", len(data)))
    fh.write(tag)
    fh.write(data)
    fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF))


class PngStream:
    """A PNG encoder that takes rows as they come, so memory does not grow with the image.

    Non-interlaced, big-endian samples, colour type 0 (grey), 4 (grey+alpha), 2 (RGB) or 6
    (RGBA) at 8 or 16 bits. Every row uses the "Up" filter (difference to the row above, on
    bytes), which costs one numpy subtraction and compresses photos much better than no filter.
    The zlib stream is split over IDAT chunks of at most ``IDAT_MAX`` bytes; ``level`` None
    compresses with the fast deflater (:func:`deflater`), an int with zlib at that level.
    """

    def __init__(
        self, fh: BinaryIO, width: int, height: int, channels: int, bit_depth: int,
        metadata: Metadata | None = None, level: int | None = None,
    ):
        if bit_depth not in (8, 16) or channels not in (1, 2, 3, 4):
            raise ValueError(f"PNG cannot hold {channels} channels at {bit_depth} bits")
        self.fh, self.width, self.height, self.channels, self.depth = fh, width, height, channels, bit_depth
        self.rows_done = 0
        self._prev: np.ndarray | None = None
        self._comp = deflater(level)
        self._pending = bytearray()
        colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
        fh.write(b"\x89PNG\r\n\x1a\n")
        _png_chunk(fh, b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
        m = metadata or Metadata()
        if m.icc:
            _png_chunk(fh, b"iCCP", b"ICC profile\x00\x00" + zlib.compress(m.icc))
        if m.exif:
            raw = m.exif[6:] if m.exif.startswith(b"Exif\x00\x00") else m.exif
            _png_chunk(fh, b"eXIf", raw)
        if m.xmp:
            _png_chunk(fh, b"iTXt", XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + m.xmp.encode("utf-8"))

    def write(self, rows: np.ndarray) -> None:
        """Append rows: (r, W, C) or (r, W) uint8/uint16 matching the header."""
        rows = np.asarray(rows)
        if rows.ndim == 2:
            rows = rows[..., None]
        r = rows.shape[0]
        if rows.shape[1:] != (self.width, self.channels) or self.rows_done + r > self.height:
            raise ValueError(f"rows of shape {rows.shape} do not fit a {self.width}x{self.height}x{self.channels} PNG")
        data = np.ascontiguousarray(rows, dtype=">u2" if self.depth == 16 else np.uint8).reshape(r, -1).view(np.uint8)
        prev = self._prev if self._prev is not None else np.zeros((1, data.shape[1]), np.uint8)
        lines = np.empty((r, data.shape[1] + 1), np.uint8)
        lines[:, 0] = 2  # filter type 2: Up
        np.subtract(data[:1], prev, out=lines[:1, 1:])
        np.subtract(data[1:], data[:-1], out=lines[1:, 1:])
        self._prev = data[-1:].copy()
        self._pending += self._comp.compress(lines.data)
        self.rows_done += r
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while len(self._pending) >= IDAT_MAX or (final and self._pending):
            _png_chunk(self.fh, b"IDAT", bytes(self._pending[:IDAT_MAX]))
            del self._pending[:IDAT_MAX]

    def close(self) -> None:
        """Finish the stream; every row must have been written."""
        if self.rows_done != self.height:
            raise ValueError(f"PNG has {self.height} rows but {self.rows_done} were written")
        self._pending += self._comp.flush()
        self._flush(final=True)
        _png_chunk(self.fh, b"IEND", b"")


def write_png16(fh: BinaryIO, pixels: np.ndarray, metadata: Metadata | None = None) -> None:
    """A whole (H, W, C) uint16 image as a 16-bit PNG (in blocks of rows, through PngStream)."""
    write_png(fh, pixels, 16, metadata)


def write_png(
    fh: BinaryIO, pixels: np.ndarray, bit_depth: int, metadata: Metadata | None = None, level: int | None = None
) -> None:
    """A whole (H, W, C) uint8/uint16 image as PNG, through :class:`PngStream`."""
    h, w, c = pixels.shape
    png = PngStream(fh, w, h, c, bit_depth, metadata, level)
    rows = max(1, (1 << 20) // max(1, w * c * (bit_depth // 8)))
    for y0 in range(0, h, rows):
        png.write(pixels[y0 : y0 + rows])
    png.close()


def _jpeg_with_xmp(data: bytes, xmp: str) -> bytes:
    """Insert an XMP APP1 segment after the JPEG's leading APPn segments (JFIF, EXIF, ICC)."""
    packet = xmp.encode("utf-8")
    if len(JPEG_XMP_ID) + len(packet) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one JPEG segment")
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    seg = b"\xff\xe1" + struct.pack(">H", len(JPEG_XMP_ID) + len(packet) + 2) + JPEG_XMP_ID + packet
    return data[:pos] + seg + data[pos:]


def write_jpeg(fh: BinaryIO, pixels: np.ndarray, quality: int = 95, metadata: Metadata | None = None) -> None:
    """8-bit (H, W, 1|3) pixels as baseline JPEG without chroma subsampling, with metadata."""
    from PIL import Image

    m = metadata or Metadata()
    im = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    kwargs: dict = {"quality": quality, "subsampling": 0}
    if m.icc:
        kwargs["icc_profile"] = m.icc
    if m.exif:
        kwargs["exif"] = m.exif
    if not m.xmp:
        im.save(fh, format="JPEG", **kwargs)
        return
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kwargs)
    del im
    fh.write(_jpeg_with_xmp(buf.getbuffer().tobytes(), m.xmp))


def write_tiff(fh: BinaryIO, pixels: np.ndarray, metadata: Metadata | None = None) -> None:
    """8- or 16-bit TIFF with unassociated alpha, deflate-compressed, via tifffile; the ICC
    profile, XMP packet and descriptive tags go into IFD0."""
    import tifffile

    m = metadata or Metadata()
    c = pixels.shape[2]
    kwargs: dict = {}
    if c in (2, 4):
        kwargs["extrasamples"] = ("unassalpha",)
    extratags = []
    if m.icc:
        extratags.append((34675, "B", len(m.icc), m.icc, True))
    if m.xmp:
        packet = m.xmp.encode("utf-8")
        extratags.append((700, "B", len(packet), packet, True))
    description = None
    for tag, text in m.tiff_tags:
        if tag == 270:
            description = text
        else:
            extratags.append((tag, "s", 0, text, True))
    data = pixels[..., 0] if c == 1 else pixels
    tifffile.imwrite(
        fh,
        data,
        photometric="rgb" if c >= 3 else "minisblack",
        planarconfig="contig" if c > 1 else None,
        compression="zlib",
        compressionargs={"level": TIFF_LEVEL},
        metadata=None,  # no tifffile JSON in ImageDescription
        description=description,
        software="divcolor" if metadata is not None else False,  # --no-metadata: no Software tag either
        extratags=extratags,
        **kwargs,
    )
