"""engine.io, engine.decode, engine.save: reading every kind of photo the GUI may be given, and writing results back."""

from __future__ import annotations

import io as stdio
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps
from skimage.color import rgb2lab

from engine import decode as edecode
from engine import icc as icc_mod
from engine import image_writers
from engine import io as eio
from engine import save as esave
from engine.errors import UnsupportedImage
from engine.files import atomic_write

RNG = np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_rng() -> None:
    """Same pixels whichever tests run, in whatever order."""
    global RNG
    RNG = np.random.default_rng(1234)


def _rand_u8(h: int, w: int, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _rand_u16(h: int, w: int, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, 65536, shape, dtype=np.uint16)


def _q8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _q16(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 65535).astype(np.uint16)


# --- round trips -------------------------------------------------------------------------------


def test_grey_round_trip(tmp_path: Path) -> None:
    grey = RNG.random((12, 17), dtype=np.float32)
    out = esave.save_image(tmp_path / "g.png", grey)
    assert out == tmp_path / "g.png"
    ph = eio.load_photo(out)
    assert ph.is_grey and ph.bit_depth == 8 and ph.alpha is None
    assert ph.size == (17, 12) and ph.stem == "g" and ph.path == out
    assert ph.rgb.shape == (12, 17, 3) and ph.rgb.dtype == np.float32
    assert np.array_equal(ph.rgb, np.repeat(ph.rgb[..., :1], 3, axis=2))  # R = G = B
    assert np.array_equal(_q8(ph.rgb[..., 0]), _q8(grey))
    assert ph.L.shape == (12, 17) and ph.L.dtype == np.float32


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_rgb_round_trip(tmp_path: Path, ext: str) -> None:
    u8 = _rand_u8(16, 24)
    u8[..., 0] = np.linspace(0, 255, 24, dtype=np.uint8)  # definitely colourful
    ph = eio.load_photo(esave.save_image(tmp_path / f"c{ext}", u8.astype(np.float32) / 255))
    assert not ph.is_grey and ph.bit_depth == 8 and ph.size == (24, 16)
    if ext == ".jpg":  # lossy, but 4:4:4 at quality 95 stays close even on noise
        assert np.abs(ph.rgb - u8 / 255).mean() < 0.05
    else:
        assert np.array_equal(_q8(ph.rgb), u8)


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_rgba_round_trip(tmp_path: Path, ext: str) -> None:
    rgb = _rand_u8(10, 14) / 255
    alpha = np.linspace(0, 1, 14, dtype=np.float32)[None, :].repeat(10, 0)
    ph = eio.load_photo(esave.save_image(tmp_path / f"a{ext}", rgb, alpha))
    if ext == ".jpg":
        assert ph.alpha is None  # JPEG has no alpha
        return
    assert ph.alpha is not None and ph.alpha.shape == (10, 14)
    assert np.array_equal(_q8(ph.alpha), _q8(alpha))
    assert np.array_equal(_q8(ph.rgb), _q8(rgb))


@pytest.mark.parametrize(("fmt", "ext"), [("WEBP", ".webp"), ("BMP", ".bmp"), ("GIF", ".gif")])
def test_other_formats(tmp_path: Path, fmt: str, ext: str) -> None:
    u8 = _rand_u8(7, 9)
    im = Image.fromarray(u8)
    if fmt == "GIF":
        im = im.quantize(256)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    im.save(tmp_path / f"x{ext}", format=fmt, **kwargs)
    ph = eio.load_photo(tmp_path / f"x{ext}")
    assert ph.size == (9, 7)
    assert np.array_equal(_q8(ph.rgb), np.asarray(im.convert("RGB")))


def test_grey_alpha_round_trip_8_and_16_bit(tmp_path: Path) -> None:
    grey = RNG.random((9, 11), dtype=np.float32)
    alpha = RNG.random((9, 11), dtype=np.float32)
    ph8 = eio.load_photo(esave.save_image(tmp_path / "la8.png", grey, alpha))
    assert ph8.is_grey and ph8.bit_depth == 8
    assert np.array_equal(_q8(ph8.alpha), _q8(alpha))
    ph16 = eio.load_photo(esave.save_image(tmp_path / "la16.png", grey, alpha, bit_depth=16))
    assert ph16.is_grey and ph16.bit_depth == 16
    assert np.array_equal(_q16(ph16.rgb[..., 0]), _q16(grey))
    assert np.array_equal(_q16(ph16.alpha), _q16(alpha))


def test_16bit_grey_png(tmp_path: Path) -> None:
    u16 = _rand_u16(13, 7, None)
    Image.fromarray(u16).save(tmp_path / "pil16.png")  # Pillow's own I;16 writer
    ph = eio.load_photo(tmp_path / "pil16.png")
    assert ph.is_grey and ph.bit_depth == 16
    assert np.array_equal(_q16(ph.rgb[..., 0]), u16)

    ph2 = eio.load_photo(esave.save_image(tmp_path / "ours16.png", u16 / 65535.0, bit_depth=16))
    assert ph2.bit_depth == 16 and np.array_equal(_q16(ph2.rgb[..., 0]), u16)
    with Image.open(tmp_path / "ours16.png") as im:
        assert im.mode.startswith("I") and np.array_equal(np.asarray(im).astype(np.uint16), u16)


def test_16bit_rgb_tiff(tmp_path: Path) -> None:
    u16 = _rand_u16(9, 12)
    ph = eio.load_photo(esave.save_image(tmp_path / "c16.tif", u16 / 65535.0, bit_depth=16))
    assert ph.bit_depth == 16 and not ph.is_grey
    assert np.array_equal(_q16(ph.rgb), u16)
    # big-endian, uncompressed, as some scanners write them
    tifffile.imwrite(tmp_path / "mm.tif", u16, photometric="rgb", byteorder=">")
    assert np.array_equal(_q16(eio.load_photo(tmp_path / "mm.tif").rgb), u16)


def test_16bit_rgba_tiff_without_tifffile_decoder(tmp_path: Path, monkeypatch) -> None:
    """When tifffile cannot decode (e.g. LZW without imagecodecs), Pillow still gives 16 bits."""
    u16 = _rand_u16(8, 10, 4)
    tifffile.imwrite(
        tmp_path / "z.tif", u16, photometric="rgb", compression="zlib", extrasamples=("unassalpha",)
    )

    def no_tifffile(p: Path):
        raise KeyError("requires the 'imagecodecs' package")

    monkeypatch.setattr(edecode, "_decode_tifffile", no_tifffile)
    ph = eio.load_photo(tmp_path / "z.tif")
    assert ph.bit_depth == 16
    assert np.array_equal(_q16(ph.rgb), u16[..., :3])
    assert np.array_equal(_q16(ph.alpha), u16[..., 3])


@pytest.mark.parametrize("with_alpha", [False, True])
def test_handwritten_16bit_rgb_png(tmp_path: Path, monkeypatch, with_alpha: bool) -> None:
    # exercise a stream split over many IDAT chunks
    monkeypatch.setattr(image_writers, "IDAT_MAX", 97)
    u16 = _rand_u16(11, 9, 4 if with_alpha else 3)
    alpha = u16[..., 3] / 65535.0 if with_alpha else None
    p = esave.save_image(tmp_path / "c16.png", u16[..., :3] / 65535.0, alpha, bit_depth=16)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (w, h, depth, colour_type) == (9, 11, 16, 6 if with_alpha else 2)
    assert data[-12:] == struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    assert data.count(b"IDAT") > 3
    # Independent check: Pillow verifies every CRC and keeps the high byte of each sample.
    with Image.open(p) as im:
        assert im.mode == ("RGBA" if with_alpha else "RGB")
        assert np.array_equal(np.asarray(im), (u16 >> 8).astype(np.uint8))
    ph = eio.load_photo(p)
    assert ph.bit_depth == 16
    assert np.array_equal(_q16(ph.rgb), u16[..., :3])
    if with_alpha:
        assert np.array_equal(_q16(ph.alpha), u16[..., 3])
    else:
        assert ph.alpha is None


# --- orientation, colour management, odd modes ------------------------------------------------


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize(("orientation", "corner"), [(6, "top-right"), (8, "bottom-left")])
def test_exif_rotated_jpeg(tmp_path: Path, orientation: int, corner: str) -> None:
    a = np.full((20, 40, 3), 20, np.uint8)  # 40 wide, 20 high; bright top-left corner
    a[:6, :6] = 240
    Image.fromarray(a).save(tmp_path / "r.jpg", quality=95, exif=_exif(orientation))
    ph = eio.load_photo(tmp_path / "r.jpg")
    assert ph.size == (20, 40)
    top_right, bottom_left = ph.rgb[:4, -4:].mean(), ph.rgb[-4:, :4].mean()
    bright, dark = (top_right, bottom_left) if corner == "top-right" else (bottom_left, top_right)
    assert bright > 0.8 and dark < 0.2
    assert ph.rgb[:4, :4].mean() < 0.2  # the stored top-left is no longer there


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_orientation_matches_exif_transpose(tmp_path: Path, orientation: int) -> None:
    u8 = _rand_u8(3, 5)
    with Image.open(stdio.BytesIO(_png_bytes(u8, exif=_exif(orientation)))) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    tifffile.imwrite(
        tmp_path / "o.tif", u8.astype(np.uint16) * 257, photometric="rgb",
        extratags=[(274, "H", 1, orientation, False)],
    )
    ph = eio.load_photo(tmp_path / "o.tif")
    assert ph.bit_depth == 16 and np.array_equal(_q8(ph.rgb), expected)


def _oriented(a: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored pixels ``a`` with an EXIF orientation (numpy, no Pillow)."""
    return {
        1: a, 2: a[:, ::-1], 3: a[::-1, ::-1], 4: a[::-1], 5: a.swapaxes(0, 1),
        6: np.rot90(a, -1), 7: a[::-1, ::-1].swapaxes(0, 1), 8: np.rot90(a, 1),
    }[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "LA"])
@pytest.mark.parametrize("compression", [None, "tiff_deflate"])
def test_rotated_tiff_every_mode_and_compression(tmp_path: Path, orientation: int, mode: str, compression) -> None:
    """Uncompressed TIFFs rotated by EXIF (5–8) came out as diagonal streaks: Pillow memory-maps
    them with the rotated size. Reference: numpy's own rotation of the stored pixels."""
    yy, xx = np.mgrid[0:13, 0:29]  # odd sizes: a wrong stride shows at once
    rgb = np.dstack([xx * 8, yy * 19, (xx * 3 + yy * 5) % 256]).astype(np.uint8)
    stored = {"L": rgb[..., 0], "RGB": rgb, "RGBA": np.dstack([rgb, 255 - rgb[..., :1]]),
              "I;16": rgb[..., 1].astype(np.uint16) * 257, "LA": np.dstack([rgb[..., 0], rgb[..., 1]])}[mode]
    im = Image.fromarray(stored, "LA") if mode == "LA" else Image.fromarray(stored)
    kw = {"compression": compression} if compression else {}
    im.save(tmp_path / "r.tif", exif=_exif(orientation), **kw)
    ph = eio.load_photo(tmp_path / "r.tif")
    want = _oriented(stored, orientation).astype(np.float64) / (65535 if mode == "I;16" else 255)
    colour = want[..., 0] if mode in ("L", "LA", "I;16") and want.ndim == 3 else want
    if colour.ndim == 2:
        np.testing.assert_allclose(ph.rgb[..., 0], colour if colour.ndim == 2 else colour, atol=1e-6)
    else:
        np.testing.assert_allclose(ph.rgb, colour[..., :3], atol=1e-6)
    if mode in ("RGBA", "LA"):
        np.testing.assert_allclose(ph.alpha, want[..., -1], atol=1e-6)


def _png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = stdio.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


_D50 = (0.9642, 1.0, 0.8249)
_ADOBE_D50 = np.array(  # Adobe RGB (1998) primaries, D50-adapted as stored in ICC profiles
    [[0.60974, 0.20528, 0.14919], [0.31111, 0.62567, 0.06322], [0.01947, 0.06087, 0.74457]]
)
_ADOBE_GAMMA = 563 / 256  # exactly representable as a u8Fixed8 and as an s15Fixed16


def _icc_tags(b: bytes) -> dict[bytes, tuple[int, int]]:
    n = struct.unpack(">I", b[128:132])[0]
    return {
        bytes(b[132 + 12 * i : 136 + 12 * i]): struct.unpack(">II", b[136 + 12 * i : 144 + 12 * i])
        for i in range(n)
    }


def _xyz_tag(v) -> bytes:
    return b"XYZ " + bytes(4) + struct.pack(">3i", *np.rint(np.asarray(v) * 65536).astype(int))


def _build_icc(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """A minimal ICC v2 display profile (header, tag table, tag data), as editors write them."""
    text = b"divcolor test profile\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    tags = [
        (b"desc", desc),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
        (b"wtpt", _xyz_tag(_D50)),
        *tags,
    ]
    table, blobs = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += struct.pack(">4sII", sig, offset + len(blobs), len(data))
        blobs += data
    header = bytearray(128)
    header[8:12] = bytes([2, 0x10, 0, 0])
    header[12:24] = b"mntr" + space + b"XYZ "
    header[36:40] = b"acsp"
    header[68:80] = _xyz_tag(_D50)[8:]
    body = struct.pack(">I", len(tags)) + table + blobs
    header[0:4] = struct.pack(">I", 128 + len(body))
    return bytes(header) + body


def _trc(kind: str) -> bytes:
    if kind == "gamma":
        return b"curv" + bytes(4) + struct.pack(">IH", 1, round(_ADOBE_GAMMA * 256))
    if kind == "table":
        table = np.rint(np.linspace(0, 1, 1024) ** _ADOBE_GAMMA * 65535).astype(">u2")
        return b"curv" + bytes(4) + struct.pack(">I", 1024) + table.tobytes()
    assert kind == "para"
    return b"para" + bytes(4) + struct.pack(">HHi", 0, 0, round(_ADOBE_GAMMA * 65536))


def _adobe_like(kind: str) -> bytes:
    trc = _trc(kind)
    prim = [(s, _xyz_tag(_ADOBE_D50[:, j])) for j, s in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))]
    return _build_icc(b"RGB ", prim + [(b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc)])


def _srgb_lcms() -> tuple[bytes, np.ndarray]:
    """lcms's own sRGB profile and its D50-adapted primaries (as columns)."""
    b = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tags = _icc_tags(b)
    cols = []
    for sig in (b"rXYZ", b"gXYZ", b"bXYZ"):
        off = tags[sig][0]
        cols.append(np.array(struct.unpack(">3i", b[off + 8 : off + 20])) / 65536)
    return b, np.stack(cols, axis=1)


def _srgb_with_adobe_primaries() -> bytes:
    """lcms's sRGB profile (parametric type-3 curves) with Adobe RGB's primaries patched in."""
    b = bytearray(_srgb_lcms()[0])
    tags = _icc_tags(b)
    for j, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ")):
        off = tags[sig][0]
        b[off : off + 20] = _xyz_tag(_ADOBE_D50[:, j])
    b[84:100] = bytes(16)  # the profile ID no longer matches: zero means "not computed"
    return bytes(b)


def _srgb_decode(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)


def _srgb_encode(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0, 1)
    return np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)


def _expected_from_adobe(rgb: np.ndarray, linearize) -> np.ndarray:
    """The conversion done by hand: source curve, Adobe primaries, inverse sRGB primaries."""
    to_srgb = np.linalg.inv(_srgb_lcms()[1]) @ _ADOBE_D50
    return _srgb_encode(linearize(rgb) @ to_srgb.T)


def _lcms_to_srgb(u8: np.ndarray, icc: bytes) -> np.ndarray:
    src = ImageCms.ImageCmsProfile(stdio.BytesIO(icc))
    out = ImageCms.profileToProfile(Image.fromarray(u8), src, ImageCms.createProfile("sRGB"))
    return np.asarray(out)


_WIDE_PROFILES = {
    "gamma": (lambda: _adobe_like("gamma"), lambda x: x**_ADOBE_GAMMA),
    "table": (lambda: _adobe_like("table"), lambda x: x**_ADOBE_GAMMA),
    "para": (lambda: _adobe_like("para"), lambda x: x**_ADOBE_GAMMA),
    "para3": (_srgb_with_adobe_primaries, _srgb_decode),
}


@pytest.mark.parametrize("kind", sorted(_WIDE_PROFILES))
def test_wide_gamut_icc_profile(tmp_path: Path, kind: str) -> None:
    make, linearize = _WIDE_PROFILES[kind]
    icc = make()
    u8 = _rand_u8(8, 8)
    (tmp_path / "w.png").write_bytes(_png_bytes(u8, icc_profile=icc))
    ph = eio.load_photo(tmp_path / "w.png")
    assert np.abs(ph.rgb - _expected_from_adobe(u8 / 255.0, linearize)).max() < 0.2 / 255
    assert np.abs(ph.rgb - u8 / 255.0).max() > 10 / 255  # it really was converted
    assert np.abs(ph.rgb * 255 - _lcms_to_srgb(u8, icc)).max() <= 1.0  # and lcms agrees

    u16 = _rand_u16(8, 8)  # 16-bit data keeps its precision through the conversion
    tifffile.imwrite(tmp_path / "w16.tif", u16, photometric="rgb", iccprofile=icc)
    ph16 = eio.load_photo(tmp_path / "w16.tif")
    assert ph16.bit_depth == 16
    assert np.abs(ph16.rgb - _expected_from_adobe(u16 / 65535.0, linearize)).max() < 0.2 / 255


def test_srgb_and_broken_profiles_leave_pixels_alone(tmp_path: Path) -> None:
    u8 = _rand_u8(8, 8)
    for name, icc in [
        ("srgb.png", _srgb_lcms()[0]),
        ("broken.png", b"not a profile" * 20),
        ("grey_profile_on_rgb.png", _build_icc(b"GRAY", [(b"kTRC", _trc("gamma"))])),
    ]:
        (tmp_path / name).write_bytes(_png_bytes(u8, icc_profile=icc))
        assert np.array_equal(_q8(eio.load_photo(tmp_path / name).rgb), u8), name


def test_grey_icc_profile(tmp_path: Path) -> None:
    grey = _rand_u8(6, 9, None)
    icc = _build_icc(b"GRAY", [(b"kTRC", _trc("gamma"))])
    (tmp_path / "g.png").write_bytes(_png_bytes(grey, icc_profile=icc))
    ph = eio.load_photo(tmp_path / "g.png")
    assert ph.is_grey
    expected = _srgb_encode((grey / 255.0) ** _ADOBE_GAMMA)
    assert np.abs(ph.rgb[..., 1] - expected).max() < 0.2 / 255


def test_table_based_profiles_go_through_lcms(tmp_path: Path, monkeypatch) -> None:
    u8 = _rand_u8(8, 8)
    icc = _adobe_like("gamma")
    (tmp_path / "w.png").write_bytes(_png_bytes(u8, icc_profile=icc))
    monkeypatch.setattr(icc_mod, "shaper", lambda icc: None)  # as for a profile with A2B0 tables
    ph = eio.load_photo(tmp_path / "w.png")
    assert np.array_equal(_q8(ph.rgb), _lcms_to_srgb(u8, icc))


def test_palette_cmyk_and_bilevel(tmp_path: Path) -> None:
    u8 = _rand_u8(10, 10)
    pal = Image.fromarray(u8).quantize(16)
    pal.save(tmp_path / "p.png")
    ph = eio.load_photo(tmp_path / "p.png")
    assert np.array_equal(_q8(ph.rgb), np.asarray(pal.convert("RGB"))) and ph.alpha is None

    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    pht = eio.load_photo(tmp_path / "pt.png")
    idx = np.asarray(pal)
    assert pht.alpha is not None and np.array_equal(pht.alpha == 0, idx == 0)

    cmyk = np.zeros((4, 6, 4), np.uint8)
    cmyk[:, :3, 0] = 255  # cyan on the left, white on the right
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "k.jpg", quality=100)
    phk = eio.load_photo(tmp_path / "k.jpg")
    assert not phk.is_grey
    assert np.allclose(phk.rgb[1, 0], [0, 1, 1], atol=0.05)
    assert np.allclose(phk.rgb[1, 5], 1, atol=0.05)

    Image.fromarray(u8[..., 0] > 127).save(tmp_path / "b.png")  # mode "1"
    phb = eio.load_photo(tmp_path / "b.png")
    assert phb.is_grey and set(np.unique(phb.rgb)) <= {0.0, 1.0}


def test_lightness_matches_skimage(tmp_path: Path) -> None:
    Image.fromarray(_rand_u8(16, 16)).save(tmp_path / "c.png")
    Image.fromarray(_rand_u8(16, 16, None)).save(tmp_path / "g.png")
    for name in ("c.png", "g.png"):
        ph = eio.load_photo(tmp_path / name)
        assert np.allclose(ph.L, rgb2lab(ph.rgb.astype(np.float64))[..., 0], atol=2e-3)


def test_grey_detection() -> None:
    grey = _rand_u8(6, 6, None)
    assert eio.photo_from_array(np.stack([grey] * 3, axis=-1)).is_grey
    near = np.stack([grey, grey, grey], axis=-1).astype(np.int16)
    near[..., 0] = np.clip(near[..., 0] + 1, 0, 255)  # JPEG-style chroma noise: still grey
    ph = eio.photo_from_array(near.astype(np.uint8))
    assert ph.is_grey and np.array_equal(ph.rgb[..., 0], ph.rgb[..., 2])
    assert not eio.photo_from_array(_rand_u8(6, 6)).is_grey


def test_photo_from_array() -> None:
    ph = eio.photo_from_array(_rand_u16(4, 5))
    assert ph.bit_depth == 16 and ph.size == (5, 4) and ph.stem == "photo" and ph.path is None
    ph = eio.photo_from_array(np.full((3, 3), 0.5, np.float32), alpha=np.ones((3, 3)))
    assert ph.is_grey and ph.alpha.dtype == np.float32
    assert np.allclose(ph.L, rgb2lab(np.full((3, 3, 3), 0.5))[..., 0], atol=2e-3)
    with pytest.raises(ValueError):
        eio.photo_from_array(np.zeros((3, 3, 2)))
    with pytest.raises(ValueError):
        eio.photo_from_array(np.zeros((3, 3, 3)), alpha=np.zeros((2, 3)))


# --- errors ------------------------------------------------------------------------------------


def _jpeg_bytes() -> bytes:
    buf = stdio.BytesIO()
    Image.fromarray(_rand_u8(64, 64)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    "case", ["missing", "directory", "empty", "garbage", "truncated", "truncated16"]
)
def test_unreadable_inputs(tmp_path: Path, case: str) -> None:
    if case == "missing":
        p = tmp_path / "nope.png"
    elif case == "directory":
        p = tmp_path / "holiday_photos"
        p.mkdir()
    elif case == "empty":
        p = tmp_path / "empty.jpg"
        p.write_bytes(b"")
    elif case == "garbage":
        p = tmp_path / "random.jpg"
        p.write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "truncated":
        p = tmp_path / "half.jpg"
        data = _jpeg_bytes()
        p.write_bytes(data[: len(data) // 2])
    else:  # 16-bit colour PNGs take a different decoding path
        p = esave.save_image(tmp_path / "half16.png", _rand_u16(32, 32), bit_depth=16)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedImage) as info:
        eio.load_photo(p)
    assert p.name in str(info.value)
    if case in ("garbage", "truncated", "truncated16"):
        assert info.value.__cause__ is not None


def test_too_many_pixels(tmp_path: Path, monkeypatch) -> None:
    esave.save_image(tmp_path / "big.png", np.zeros((10, 12, 3)))
    tifffile.imwrite(tmp_path / "big16.tif", _rand_u16(10, 12), photometric="rgb")
    monkeypatch.setattr(edecode, "MAX_PIXELS", 100)
    for name in ("big.png", "big16.tif"):
        with pytest.raises(UnsupportedImage) as info:
            eio.load_photo(tmp_path / name)
        assert name in str(info.value) and "MAX_IMAGE_PIXELS" in str(info.value)


# --- saving ------------------------------------------------------------------------------------


def test_save_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.gif"):
        esave.save_image(tmp_path / "x.gif", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError):
        esave.save_image(tmp_path / "x.png", np.zeros((2, 2, 3)), bit_depth=12)


def test_save_creates_folders_and_is_atomic(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a" / "b" / "out.png"
    esave.save_image(target, np.full((4, 4, 3), 0.25))
    before = target.read_bytes()

    def crash(fh, pixels, metadata=None):
        fh.write(b"\x89PNG half written")
        raise RuntimeError("disk unplugged")

    monkeypatch.setattr(esave, "write_png16", crash)  # the name save_image calls
    with pytest.raises(RuntimeError, match="disk unplugged"):
        esave.save_image(target, np.full((4, 4, 3), 0.75), bit_depth=16)
    assert target.read_bytes() == before  # old file intact
    assert os.listdir(target.parent) == ["out.png"]  # no temporary left behind


def test_every_atomic_write_writes_and_keeps_nothing_alive(tmp_path: Path) -> None:
    """The writer is called on every save (nothing memoised): the same destination and writer
    twice must give the second content, and the writer (which holds the pixels) is not kept."""
    import gc
    import weakref

    target, calls = tmp_path / "out.bin", []

    def write(fh) -> None:
        calls.append(1)
        fh.write(bytes([len(calls)]))

    atomic_write(target, write)
    atomic_write(target, write)
    assert target.read_bytes() == b"\x02" and len(calls) == 2
    ref = weakref.ref(write)
    del write
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize(("mode", "dtype", "channels"), [("L", np.uint8, 1), ("RGB", np.uint8, 3), ("I;16", np.uint16, 1)])
def test_photo_keeps_samples_compact_and_makes_float_rgb_on_demand(tmp_path: Path, mode, dtype, channels) -> None:
    """A big scan must not be held as float: the Photo keeps decoded samples as stored, and the
    float (H, W, 3) view exists only once something asks for it (the models need only L)."""
    arr = _rand_u8(9, 11, None if channels == 1 else 3)
    if dtype == np.uint16:
        arr = arr.astype(np.uint16) * 257 + 3
    Image.fromarray(arr).save(tmp_path / "p.png")
    ph = eio.load_photo(tmp_path / "p.png")
    assert ph.pixels.dtype == dtype and ph.pixels.nbytes == arr.nbytes
    assert "rgb" not in vars(ph)  # not made yet
    top = 65535 if dtype == np.uint16 else 255
    expected = arr.astype(np.float32) / np.float32(top)
    expected = np.repeat(expected[..., None], 3, axis=2) if channels == 1 else expected
    assert ph.rgb.dtype == np.float32 and np.array_equal(ph.rgb, expected)
    assert ph.rgb is ph.rgb  # made once
    np.testing.assert_allclose(ph.L, rgb2lab(expected.astype(np.float64))[..., 0], atol=2e-3)


@pytest.mark.parametrize("isal", [True, False])
def test_png_results_decode_with_and_without_the_fast_deflater(tmp_path: Path, monkeypatch, isal: bool) -> None:
    """PNGs are compressed with ISA-L's deflate when the isal package is there and with zlib
    (level 1) when it is not: either way a standard PNG that Pillow reads back exactly."""
    import sys
    import zlib

    from engine.image_writers import deflater

    if not isal:
        monkeypatch.setitem(sys.modules, "isal", None)
        assert type(deflater()) is type(zlib.compressobj(1))
    else:
        pytest.importorskip("isal")
        assert type(deflater()).__module__.startswith("isal")
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    u8[:, :20] = 77  # compressible and incompressible parts
    esave.save_image(tmp_path / "r.png", u8)
    with Image.open(tmp_path / "r.png") as im:
        assert np.array_equal(np.asarray(im), u8)
