"""What a colorized file says about itself: the original's EXIF, an ICC profile that matches
the pixels, and provenance instead of a watermark.

Archives keep the date, camera, captions and GPS position of a photo in its EXIF; a
colorization that dropped them would be a worse copy of the original. And a colorization must
not pass for an original: the XMP packet carries the IPTC ``DigitalSourceType``
``compositeWithTrainedAlgorithmicMedia`` (the original photo, altered by a trained model; for
Levin propagation, which uses no trained model, ``compositeSynthetic``: see
:func:`digital_source_type`) plus what is needed to reproduce the result — divcolor's version, the method, the model file's
SHA-256, the seed, the sample index, the temperature and a digest of the strokes. Viewers and
archive tools that read XMP (exiftool, digiKam, Adobe's) show it; nothing is drawn on the
pixels.

:func:`source_exif` is called by :mod:`engine.decode` when a photo is read; :func:`export_metadata`
by the CLI and the app when a result is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from xml.sax.saxutils import quoteattr

from PIL import Image

from .image_writers import Metadata

__all__ = [
    "DIGITAL_SOURCE_TYPE",
    "DIGITAL_SOURCE_TYPE_UNTRAINED",
    "digital_source_type",
    "Metadata",
    "divcolor_version",
    "export_metadata",
    "file_sha256",
    "provenance_xmp",
    "source_exif",
    "srgb_icc",
    "strokes_digest",
]

log = logging.getLogger(__name__)

_IPTC_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
DIGITAL_SOURCE_TYPE = _IPTC_SOURCE + "compositeWithTrainedAlgorithmicMedia"
"""A result of a trained model (VAE-MDN, PIC, G-CRF): the original photo with generated colour."""
DIGITAL_SOURCE_TYPE_UNTRAINED = _IPTC_SOURCE + "compositeSynthetic"
"""A result of Levin propagation: the original photo with colour an algorithm spread from the
user's strokes, no trained model involved. IPTC's vocabulary has no "composite with algorithmic
media"; ``compositeSynthetic`` ("a mix or composite of several elements, at least one of which
is synthetic") is its term for that, without the claim of a model trained on sampled data."""
UNTRAINED_METHODS = frozenset({"levin"})
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_DIVCOLOR = "https://divcolor.invalid/ns/xmp/1.0/"
"""divcolor's own XMP namespace (a URI is only a name; ``.invalid`` keeps it from pointing anywhere)."""

ORIENTATION, EXIF_IFD, GPS_IFD = 0x0112, 0x8769, 0x8825
_IFD0_KEEP = (
    270,  # ImageDescription (caption)
    271, 272,  # Make, Model
    282, 283, 296,  # XResolution, YResolution, ResolutionUnit
    305, 306,  # Software, DateTime
    315, 33432,  # Artist, Copyright
    0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F,  # Windows XPTitle, XPComment, XPAuthor, XPKeywords, XPSubject
)
_EXIF_DROP = (
    0xA002, 0xA003,  # PixelX/YDimension: of the stored, not the oriented image
    0x927C,  # MakerNote: vendor data with offsets into the original file
    0xA005,  # Interoperability IFD pointer
)
_TIFF_TEXT_TAGS = (270, 271, 272, 306, 315, 33432)


@lru_cache(maxsize=1)
def divcolor_version() -> str:
    """The installed divcolor's version (``pyproject.toml``), or ``"unknown"`` in a bare tree."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("divcolor")
    except Exception:  # PackageNotFoundError and broken installs alike
        return "unknown"


@lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    """The ICC profile of divcolor's output pixels (sRGB, the one lcms builds)."""
    from .icc import srgb_profile

    return srgb_profile().tobytes()


def source_exif(im: Image.Image, name: str = "") -> bytes | None:
    """The EXIF worth keeping from an opened photo, with the orientation reset to 1 (the
    pixels divcolor writes are already turned upright), or None when there is none.

    Kept: the descriptive IFD0 tags (caption, camera, date, artist, copyright, resolution),
    the whole EXIF sub-IFD (capture date, exposure, user comment) but pixel sizes and maker
    notes, and the GPS IFD. TIFF structure tags (strip offsets, bits per sample) are not EXIF
    and never copied.
    """
    try:
        src = im.getexif()
        out = Image.Exif()
        for tag in _IFD0_KEEP:
            value = src.get(tag)
            if value is None or (tag == 270 and isinstance(value, str) and value.startswith('{"shape"')):
                continue  # tifffile's own JSON in ImageDescription is not a caption
            out[tag] = value
        sub = {k: v for k, v in src.get_ifd(EXIF_IFD).items() if k not in _EXIF_DROP}
        if sub:
            out[EXIF_IFD] = sub
        gps = dict(src.get_ifd(GPS_IFD))
        if gps:
            out[GPS_IFD] = gps
        if not len(out):
            return None
        out[ORIENTATION] = 1
        return out.tobytes()
    except Exception as exc:  # a damaged EXIF block costs the metadata, never the photo
        log.warning("%s: EXIF not kept (%s)", name or "photo", exc)
        return None


def _exif_text_tags(exif: bytes | None) -> tuple[tuple[int, str], ...]:
    """IFD0 text tags of an EXIF block, for TIFF output (where EXIF lives in IFD0 itself)."""
    if not exif:
        return ()
    try:
        e = Image.Exif()
        e.load(exif)
        tags = []
        for tag in _TIFF_TEXT_TAGS:
            value = e.get(tag)
            if tag == 306 and not value:  # no DateTime: the capture date is the best stand-in
                value = e.get_ifd(EXIF_IFD).get(0x9003)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and value.strip("\x00 "):
                tags.append((tag, value.strip("\x00")))
        return tuple(tags)
    except Exception:
        return ()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (a model file: which weights made the result), cached per version."""
    p = Path(path)
    st = p.stat()
    return _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def strokes_digest(strokes: Iterable[Any] | None) -> str | None:
    """SHA-256 of the strokes in their canonical JSON form, or None when there are none: the
    same strokes always give the same digest, however the file was formatted."""
    strokes = list(strokes or [])
    if not strokes:
        return None
    from .strokes import strokes_to_json

    text = json.dumps(strokes_to_json(strokes), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digital_source_type(method: str) -> str:
    """The IPTC DigitalSourceType of a result made by ``method``: only a trained model's result
    may say it holds trained algorithmic media."""
    return DIGITAL_SOURCE_TYPE_UNTRAINED if method in UNTRAINED_METHODS else DIGITAL_SOURCE_TYPE


def provenance_xmp(
    *,
    method: str,
    model: str | None = None,
    model_sha256: str | None = None,
    seed: int | None = None,
    sample: int | None = None,
    temperature: float | None = None,
    strokes_sha256: str | None = None,
    version: str | None = None,
    when: datetime | None = None,
) -> str:
    """An XMP packet saying the file is a colorization by divcolor, and how to make it again."""
    version = version or divcolor_version()
    when = when or datetime.now(timezone.utc).replace(microsecond=0)
    fields = {
        "Version": version,
        "Method": method,
        "Model": model,
        "ModelSHA256": model_sha256,
        "Seed": seed,
        "Sample": sample,
        "Temperature": temperature,
        "StrokesSHA256": strokes_sha256,
    }
    attrs = [
        f"Iptc4xmpExt:DigitalSourceType={quoteattr(digital_source_type(method))}",
        f"xmp:CreatorTool={quoteattr(f'divcolor {version}')}",
        f"xmp:MetadataDate={quoteattr(when.isoformat())}",
    ]
    attrs += [f"divcolor:{k}={quoteattr(str(v))}" for k, v in fields.items() if v is not None]
    body = "\n    ".join(attrs)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{NS_IPTC_EXT}"\n'
        f'    xmlns:xmp="{NS_XMP}"\n'
        f'    xmlns:divcolor="{NS_DIVCOLOR}"\n'
        f"    {body}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


def export_metadata(
    exif: bytes | None,
    *,
    method: str,
    model: str | None = None,
    model_path: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    sample: int | None = None,
    temperature: float | None = None,
    strokes: Iterable[Any] | None = None,
) -> Metadata:
    """Everything a result file carries: the source's EXIF (``Photo.exif``), the sRGB profile
    of the written pixels, and the provenance XMP. Pass ``None`` to :func:`engine.save.save_image`
    instead to write a file without any metadata (``--no-metadata``)."""
    digest = None
    if model_path is not None:
        try:
            digest = file_sha256(model_path)
        except OSError:
            digest = None
    xmp = provenance_xmp(
        method=method, model=model, model_sha256=digest, seed=seed, sample=sample,
        temperature=temperature, strokes_sha256=strokes_digest(strokes),
    )
    return Metadata(icc=srgb_icc(), exif=exif, xmp=xmp, tiff_tags=_exif_text_tags(exif))
