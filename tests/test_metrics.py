"""engine.metrics against hand-computed cases and slow, obviously correct loops."""

import math

import numpy as np
import pytest
import torch

from engine import metrics as M


def _colourfulness_by_hand(img: np.ndarray) -> float:
    """Hasler & Süsstrunk 2003 written out pixel by pixel (img (H, W, 3) in 0..255)."""
    rg, yb = [], []
    for row in img:
        for r, g, b in row:
            rg.append(float(r) - float(g))
            yb.append(0.5 * (float(r) + float(g)) - float(b))
    n = len(rg)
    mu_rg, mu_yb = sum(rg) / n, sum(yb) / n
    var_rg = sum((x - mu_rg) ** 2 for x in rg) / n
    var_yb = sum((x - mu_yb) ** 2 for x in yb) / n
    return math.sqrt(var_rg + var_yb) + 0.3 * math.sqrt(mu_rg**2 + mu_yb**2)


def test_colourfulness_matches_the_formula_written_out():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 7, 5, 3)).astype(np.float64)
    got = M.colourfulness(torch.from_numpy(imgs / 255.0).permute(0, 3, 1, 2).float())
    want = [_colourfulness_by_hand(x) for x in imgs]
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_colourfulness_of_known_images():
    grey = torch.full((1, 3, 4, 4), 0.5)
    assert float(M.colourfulness(grey)[0]) == pytest.approx(0.0, abs=1e-9)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0  # rg = 255, yb = 127.5 everywhere: no spread, only the mean term
    assert float(M.colourfulness(red)[0]) == pytest.approx(0.3 * math.hypot(255, 127.5))
    half = torch.zeros(1, 3, 2, 2)
    half[:, 0, 0] = 1.0  # top row red, bottom row black: rg is 255 or 0, yb 127.5 or 0
    sd = math.sqrt(127.5**2 + 63.75**2)
    assert float(M.colourfulness(half)[0]) == pytest.approx(sd + 0.3 * math.hypot(127.5, 63.75))
    # a more colourful image scores higher: the scale is what the report compares against the truth
    assert float(M.colourfulness(red * 0.5 + 0.25)[0]) < float(M.colourfulness(red)[0])


def test_baselines_on_a_tiny_image_with_a_known_mean():
    truth = torch.zeros(2, 2, 2)
    truth[0] = torch.tensor([[0.4, 0.0], [0.0, 0.0]])  # a: mean 0.1
    truth[1] = torch.tensor([[0.2, 0.2], [-0.2, -0.2]])  # b: mean 0.0
    tint = M.flat_tint_baseline(truth)
    assert tint.shape == (1, 2, 2, 2)
    assert torch.allclose(tint[0, 0], torch.full((2, 2), 0.1)) and torch.allclose(tint[0, 1], torch.zeros(2, 2))
    grey = M.grey_baseline(truth)
    assert grey.shape == (1, 2, 2, 2) and not grey.any()
    # grey: L1 = mean |truth| over 8 values; L2 = mean per-pixel sqrt(a² + b²)
    assert M.error_of_best_l1(grey, truth) == pytest.approx((0.4 + 4 * 0.2) / 8)
    assert M.error_of_best(grey, truth) == pytest.approx((math.hypot(0.4, 0.2) + 3 * 0.2) / 4)
    # tint: a is off by |a - 0.1| = .3, .1, .1, .1; b by .2 each
    assert M.error_of_best_l1(tint, truth) == pytest.approx((0.3 + 3 * 0.1 + 4 * 0.2) / 8)
    assert M.error_of_best(tint, truth) == pytest.approx((math.hypot(0.3, 0.2) + 3 * math.hypot(0.1, 0.2)) / 4)
    # the oracle tint is the best flat colour under L2-squared: any other flat colour does worse
    other = tint + 0.05
    assert float(((other - truth) ** 2).mean()) > float(((tint - truth) ** 2).mean())


def test_error_of_best_picks_the_closest_sample_and_first_sample_is_its_own():
    truth = torch.zeros(2, 3, 3)
    samples = torch.stack([torch.full((2, 3, 3), 0.3), torch.full((2, 3, 3), 0.1), torch.full((2, 3, 3), -0.2)])
    assert M.error_of_best_l1(samples, truth) == pytest.approx(0.1)
    assert M.error_of_best(samples, truth) == pytest.approx(math.hypot(0.1, 0.1))
    assert M.error_of_best_l1(samples[:1], truth) == pytest.approx(0.3)
    assert M.variance(samples) == pytest.approx(float(np.var([0.3, 0.1, -0.2])))
