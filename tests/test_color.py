import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import color as skcolor

from engine.color import grey_to_L, guided_upsample_ab, lab_to_rgb, recombine, rgb_to_lab


def test_rgb_to_lab_matches_skimage():
    rgb = np.random.default_rng(0).random((4, 9, 11, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    ref = np.stack([skcolor.rgb2lab(x) for x in rgb])
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_lab_to_rgb_matches_skimage_in_gamut():
    rgb = np.random.default_rng(1).random((7, 5, 3))
    lab = skcolor.rgb2lab(rgb)
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, skcolor.lab2rgb(lab), atol=1e-5)
    np.testing.assert_allclose(ours, rgb, atol=1e-5)


def test_lab_is_differentiable_and_float32_batched():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    rgb_to_lab(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_grey_to_L_equals_L_of_grey_rgb():
    g = torch.rand(6, 6, dtype=torch.float64)
    L = rgb_to_lab(g.expand(3, 6, 6))[0]
    torch.testing.assert_close(grey_to_L(g), L)


def _step_scene(size=256):
    """Left half dark, right half bright; truth: blue on the left, orange on the right."""
    L = torch.full((size, size), 30.0)
    L[:, size // 2 :] = 80.0
    ab = torch.zeros(1, 2, size, size)
    ab[:, 0, :, : size // 2], ab[:, 1, :, : size // 2] = 10.0, -50.0
    ab[:, 0, :, size // 2 :], ab[:, 1, :, size // 2 :] = 30.0, 60.0
    return L, ab


def test_guided_upsampling_keeps_colour_edges_on_luminance_edges():
    L, ab_true = _step_scene()
    ab_low = F.interpolate(ab_true, size=(16, 16), mode="area")
    guided = guided_upsample_ab(ab_low, L)
    bilinear = F.interpolate(ab_low, size=L.shape, mode="bilinear", align_corners=False)
    err_g = (guided - ab_true).abs().mean()
    err_b = (bilinear - ab_true).abs().mean()
    assert err_g < 0.5 * err_b
    # right next to the edge the guided result already has the right side's colour
    assert abs(float(guided[0, 1, 128, 126]) - (-50.0)) < 10 and abs(float(guided[0, 1, 128, 129]) - 60.0) < 10


def test_guided_upsampling_preserves_flat_colour():
    L = torch.rand(100, 140) * 100
    ab_low = torch.tensor([12.0, -7.0]).view(1, 2, 1, 1).expand(3, 2, 8, 8).contiguous()
    out = guided_upsample_ab(ab_low, L)
    assert out.shape == (3, 2, 100, 140)
    torch.testing.assert_close(out, ab_low[:, :, :1, :1].expand_as(out), atol=1e-3, rtol=0)


def test_recombine_keeps_input_luminance():
    L = torch.linspace(20, 80, 50).view(1, 50).expand(40, 50)
    ab = torch.full((2, 2, 40, 50), 8.0)
    rgb = recombine(L, ab)
    L_back = rgb_to_lab(rgb)[:, 0]
    assert (L_back - L).abs().max() < 0.5


def _in_gamut(lab: np.ndarray) -> np.ndarray:
    """(..., 3) Lab -> mask of colours whose linear sRGB lies inside [0, 1] (with a margin)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xyz = skcolor.lab2xyz(lab.reshape(-1, 1, 3)).reshape(lab.shape)
    lin = xyz @ skcolor.colorconv.rgb_from_xyz.T
    return np.all((lin > 1e-4) & (lin < 1 - 1e-4), -1)


def test_recombine_equals_the_reference_conversion_in_gamut():
    """The fast in-place inference path must agree with the plain lab_to_rgb, dark pixels included."""
    g = torch.Generator().manual_seed(0)
    L = torch.rand(30, 40, generator=g) * 100
    L[:5] = torch.rand(5, 40, generator=g) * 4  # below the linear segment's threshold
    ab = (torch.rand(3, 2, 30, 40, generator=g) - 0.5) * 160
    lab = torch.cat([L.expand(3, 1, 30, 40), ab], 1)
    inside = torch.from_numpy(_in_gamut(lab.permute(0, 2, 3, 1).double().numpy()))[:, None]
    assert 0.05 < inside.float().mean() < 0.95  # both kinds of pixel are tested
    ref = lab_to_rgb(lab)
    torch.testing.assert_close(recombine(L, ab) * inside, ref * inside, atol=1e-5, rtol=0)


def test_recombine_out_of_gamut_keeps_luminance_exactly_against_skimage():
    """Strong chroma at every L: skimage reads back the input's L (chroma is what gives way),
    in-gamut colours are skimage's own lab2rgb, and hue keeps its quadrant."""
    rng = np.random.default_rng(3)
    L = rng.random((24, 32)) * 100
    L[0, :4] = [100.0, 99.5, 0.0, 0.3]
    ab = (rng.random((2, 2, 24, 32)) - 0.5) * 220
    rgb = recombine(torch.from_numpy(L).float(), torch.from_numpy(ab).float()).permute(0, 2, 3, 1).numpy()
    for k in range(2):
        back = skcolor.rgb2lab(rgb[k].astype(np.float64))
        np.testing.assert_allclose(back[..., 0], L, atol=0.02)
        lab = np.dstack([L, ab[k].transpose(1, 2, 0)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns about the out-of-gamut pixels
            ref = skcolor.lab2rgb(lab)
        inside = _in_gamut(lab)
        np.testing.assert_allclose(rgb[k][inside], ref[inside], atol=1e-4)
        moved = ~inside & (L > 1) & (L < 99)
        assert moved.sum() > 50
        same_quadrant = (np.sign(back[..., 1]) == np.sign(ab[k, 0])) | (np.abs(back[..., 1]) < 0.5)
        assert same_quadrant[moved].mean() > 0.97


def test_white_photo_stays_white_and_8_bit_luminance_is_within_rounding():
    """The audit's case: an all-white photo with a slight predicted cast came out (244, 255, 253)."""
    L = torch.full((8, 8), 100.0)
    ab = torch.tensor([-9.0, -4.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8).contiguous()
    rgb8 = np.rint(recombine(L, ab)[0].permute(1, 2, 0).numpy() * 255)
    assert (rgb8 == 255).all()
    g = torch.Generator().manual_seed(1)
    L = torch.rand(40, 40, generator=g) * 100
    ab = (torch.rand(1, 2, 40, 40, generator=g) - 0.5) * 200
    rgb8 = np.rint(recombine(L, ab)[0].permute(1, 2, 0).numpy() * 255) / 255
    assert np.abs(skcolor.rgb2lab(rgb8)[..., 0] - L.numpy()).max() < 0.5  # one 8-bit step at most


# --- the export kernel (StripUpsampler.quantized): what the CLI writes ---------------------------


def _lab_case(seed, shape=(24, 32), spread=160.0, n=2):
    rng = np.random.default_rng(seed)
    L = rng.random(shape) * 100
    L[0, :6] = [100.0, 99.5, 0.0, 0.3, 4.0, 7.9]  # white, black, the linear segment of Lab
    L[1] = np.linspace(0, 10, shape[1])
    ab = (rng.random((n, 2) + shape) - 0.5) * spread
    return L, ab


def _quantized(L, ab, depth=8):
    from engine.color import StripUpsampler

    up = StripUpsampler.of_ab(torch.from_numpy(ab).float(), torch.from_numpy(L).float())
    return [up.quantized(k, 0, L.shape[0], depth) for k in range(ab.shape[0])]


@pytest.mark.parametrize("depth", [8, 16])
def test_export_kernel_equals_skimage_in_gamut(depth):
    L, ab = _lab_case(0)
    top = 65535 if depth == 16 else 255
    for k, q in enumerate(_quantized(L, ab, depth)):
        lab = np.dstack([L, ab[k].transpose(1, 2, 0)])
        inside = _in_gamut(lab)
        assert 0.1 < inside.mean() < 0.9
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.rint(skcolor.lab2rgb(lab) * top)
        diff = np.abs(q.astype(np.int64) - ref)[inside]
        assert diff.max() <= (1 if depth == 8 else 3)
        assert (diff == 0).mean() > (0.99 if depth == 8 else 0.5)


def test_export_kernel_out_of_gamut_keeps_luminance_and_white_stays_white():
    L, ab = _lab_case(3, spread=220.0)
    for k, q in enumerate(_quantized(L, ab)):
        back = skcolor.rgb2lab(q / 255.0)
        assert np.abs(back[..., 0] - L).max() < 0.5  # one 8-bit step at most
        moved = ~_in_gamut(np.dstack([L, ab[k].transpose(1, 2, 0)])) & (L > 1) & (L < 99)
        same_quadrant = (np.sign(back[..., 1]) == np.sign(ab[k, 0])) | (np.abs(back[..., 1]) < 1)
        assert moved.sum() > 50 and same_quadrant[moved].mean() > 0.95
    white = np.full((6, 9), 100.0)
    cast = np.broadcast_to(np.array([-9.0, -4.0]).reshape(1, 2, 1, 1), (1, 2, 6, 9)).copy()
    assert (_quantized(white, cast)[0] == 255).all()  # the audit's (244, 255, 253)


def test_export_kernel_agrees_with_recombine_and_strips_do_not_matter():
    from engine.color import StripUpsampler

    g = torch.Generator().manual_seed(4)
    L = torch.rand(61, 47, generator=g) * 100
    ab_low = (torch.rand(3, 2, 8, 8, generator=g) - 0.5) * 150
    up = StripUpsampler(ab_low, L)
    ref = (up.rgb(0, 61).permute(0, 2, 3, 1).numpy() * 255).round()
    for k in range(3):
        whole = up.quantized(k, 0, 61)
        diff = np.abs(whole.astype(int) - ref[k])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005
        strips = np.concatenate([up.quantized(k, y, min(61, y + 5)) for y in range(0, 61, 5)])
        assert np.array_equal(strips, whole)


def test_srgb_table_is_the_exact_8_bit_rounding_of_the_formula():
    from engine.color import _encode_srgb

    x = np.linspace(0, 1, 1 << 20, dtype=np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(2)).clip(0, 1)])
    out = np.empty((1, x.size, 3), np.uint8)
    _encode_srgb(np.broadcast_to(x, (3, 1, x.size)).copy(), out, 8)
    xd = x.astype(np.float64)
    srgb = np.where(xd <= 0.0031308, 12.92 * xd, 1.055 * np.maximum(xd, 0.0031308) ** (1 / 2.4) - 0.055)
    assert np.array_equal(out[0, :, 0], np.rint(srgb * 255).astype(np.uint8))
