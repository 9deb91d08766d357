"""Results keep the photo's EXIF, carry an ICC profile that matches their pixels and state their
provenance in XMP; --no-metadata strips it all. Everything is read back with Pillow."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.cli import main
from engine.metadata import (DIGITAL_SOURCE_TYPE, DIGITAL_SOURCE_TYPE_UNTRAINED, divcolor_version, srgb_icc,
                             strokes_digest)

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
GPS = {1: "N", 2: (41.0, 53.0, 24.0), 3: "E", 4: (12.0, 29.0, 0.0)}


def _source(path: Path, orientation: int = 6) -> Path:
    """A JPEG as a camera or an archive writes it: caption, camera, dates, GPS, rotated 90°."""
    yy, xx = np.mgrid[0:24, 0:40]
    grey = ((xx * 6 + yy * 2) % 256).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[270] = "Grandma Rosa in Rome, 1950"
    exif[271], exif[272] = "Leica", "IIIf"
    exif[306] = "2001:02:03 04:05:06"
    exif[EXIF_IFD] = {0x9003: "1950:06:07 08:09:10", 0x9286: b"ASCII\x00\x00\x00scanned by the archive"}
    exif[GPS_IFD] = GPS
    Image.fromarray(grey).save(path, quality=95, exif=exif)
    return path


def _xmp(im: Image.Image, fmt: str) -> str:
    if fmt == "tiff":
        raw = im.tag_v2.get(700, b"")
    elif fmt == "png":
        raw = im.info.get("XML:com.adobe.xmp", "")
    else:
        raw = im.info.get("xmp", b"")
    return raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)


def _run(tmp_path: Path, tiny_model, fmt: str, *extra: str) -> list[Path]:
    out = tmp_path / f"out_{fmt}"
    rc = main(["colorize", str(tmp_path / "photo.jpg"), "-o", str(out), "-n", "2", "--seed", "11", "--format", fmt,
               "--checkpoint", str(tiny_model), "--device", "cpu", "-q", *extra])
    assert rc == 0
    return sorted(out.iterdir())


@pytest.mark.parametrize("fmt", ["png", "jpg", "tiff"])
def test_results_keep_exif_match_their_icc_and_state_provenance(tmp_path, tiny_model, fmt):
    _source(tmp_path / "photo.jpg")
    results = _run(tmp_path, tiny_model, fmt)
    assert [p.suffix for p in results] == [{"png": ".png", "jpg": ".jpg", "tiff": ".tif"}[fmt]] * 2
    model_hash = hashlib.sha256(Path(tiny_model).read_bytes()).hexdigest()
    for k, path in enumerate(results):
        with Image.open(path) as im:
            im.load()
            assert im.size == (24, 40)  # the orientation was applied to the pixels ...
            icc = im.info.get("icc_profile")
            assert icc == srgb_icc()
            assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
            xmp = _xmp(im, fmt)
            assert DIGITAL_SOURCE_TYPE in xmp and "Iptc4xmpExt:DigitalSourceType" in xmp
            for field in (f'Version="{divcolor_version()}"', 'Method="vae-mdn"', f'ModelSHA256="{model_hash}"',
                          'Seed="11"', f'Sample="{k}"', 'Temperature="1.0"'):
                assert field in xmp, field
            if fmt == "tiff":  # TIFF keeps the descriptive tags in its own IFD0
                tags = im.tag_v2
                assert tags[270] == "Grandma Rosa in Rome, 1950" and tags[271] == "Leica" and tags[272] == "IIIf"
                assert tags[306] == "2001:02:03 04:05:06"
                continue
            exif = im.getexif()
            assert exif.get(0x0112) == 1  # ... so it is reset, not applied twice
            assert exif[270] == "Grandma Rosa in Rome, 1950" and exif[271] == "Leica" and exif[272] == "IIIf"
            assert exif[306] == "2001:02:03 04:05:06"
            sub = exif.get_ifd(EXIF_IFD)
            assert sub[0x9003] == "1950:06:07 08:09:10" and sub[0x9286].endswith(b"scanned by the archive")
            gps = exif.get_ifd(GPS_IFD)
            assert gps[1] == "N" and tuple(float(v) for v in gps[2]) == GPS[2] and gps[3] == "E"


@pytest.mark.parametrize("fmt", ["png", "jpg", "tiff"])
def test_no_metadata_strips_it_all(tmp_path, tiny_model, fmt):
    _source(tmp_path / "photo.jpg")
    for path in _run(tmp_path, tiny_model, fmt, "--no-metadata"):
        with Image.open(path) as im:
            im.load()
            assert "icc_profile" not in im.info and not _xmp(im, fmt)
            if fmt == "tiff":
                assert not {270, 271, 272, 305, 306, 700, 34675} & set(im.tag_v2)
            else:
                assert "exif" not in im.info and not len(im.getexif())


def test_16_bit_results_and_stroke_provenance(tmp_path):
    from engine.io import load_photo

    yy, xx = np.mgrid[0:20, 0:30]
    exif = Image.Exif()
    exif[271] = "Hasselblad"
    Image.fromarray((xx * 2000 + yy * 30).astype(np.uint16)).save(tmp_path / "p16.png", exif=exif)
    strokes = {"version": 1, "strokes": [{"color": "#C04020", "radius": 4, "points": [[5, 5], [20, 10]]}]}
    (tmp_path / "s.json").write_text(json.dumps(strokes))
    assert main(["colorize", str(tmp_path / "p16.png"), "-o", str(tmp_path / "o"), "--method", "levin",
                 "--strokes", str(tmp_path / "s.json"), "--device", "cpu", "-q"]) == 0
    out = tmp_path / "o" / "p16_levin_0.png"
    assert load_photo(out).bit_depth == 16
    with Image.open(out) as im:
        im.load()
        assert im.getexif()[271] == "Hasselblad" and im.info["icc_profile"] == srgb_icc()
        xmp = _xmp(im, "png")
    from engine.strokes import load_strokes

    assert f'StrokesSHA256="{strokes_digest(load_strokes(tmp_path / "s.json"))}"' in xmp
    assert 'Method="levin"' in xmp and "ModelSHA256" not in xmp  # Levin needs no model file
    # Issue 28 item 5: Levin uses no trained model, so it must not claim trained algorithmic media.
    assert "compositeWithTrainedAlgorithmicMedia" not in xmp and "TrainedAlgorithmic" not in xmp
    assert f'Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE_UNTRAINED}"' in xmp
    assert DIGITAL_SOURCE_TYPE_UNTRAINED == "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic"


def test_a_broken_exif_block_costs_the_metadata_not_the_photo(tmp_path, tiny_model):
    yy, xx = np.mgrid[0:16, 0:16]
    Image.fromarray((xx * 9).astype(np.uint8)).save(tmp_path / "photo.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    for path in _run(tmp_path, tiny_model, "jpg"):
        with Image.open(path) as im:
            assert im.size == (16, 16) and DIGITAL_SOURCE_TYPE in _xmp(im, "jpg")
