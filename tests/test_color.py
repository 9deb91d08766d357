import numpy as np
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


def test_recombine_equals_the_reference_conversion():
    """The fast in-place inference path must agree with the plain lab_to_rgb, dark pixels included."""
    g = torch.Generator().manual_seed(0)
    L = torch.rand(30, 40, generator=g) * 100
    L[:5] = torch.rand(5, 40, generator=g) * 4  # below the linear segment's threshold
    ab = (torch.rand(3, 2, 30, 40, generator=g) - 0.5) * 160
    ref = lab_to_rgb(torch.cat([L.expand(3, 1, 30, 40), ab], 1))
    torch.testing.assert_close(recombine(L, ab), ref, atol=1e-5, rtol=0)
