import math

import torch

from engine.color import AB_SCALE
from training.losses import (HIST_BIN, HIST_BINS, HIST_RANGE, ab_bins, compute_stats, grad_loss, mah_loss,
                             mdn_loss, pixel_weights)


def test_mdn_loss_is_closest_component_negative_log_likelihood():
    torch.manual_seed(0)
    log_pi = torch.log_softmax(torch.randn(5, 3), 1)
    mu, z, sigma = torch.randn(5, 3, 4), torch.randn(5, 4), 0.1
    expected = 0.0
    for i in range(5):
        d = [float(((z[i] - mu[i, m]) ** 2).sum()) for m in range(3)]
        m = min(range(3), key=d.__getitem__)
        expected += -float(log_pi[i, m]) + d[m] / (2 * sigma**2)
    assert math.isclose(float(mdn_loss(log_pi, mu, z, sigma)), expected / 5, rel_tol=1e-5)


def test_histogram_weights_favour_rare_colours_and_average_one():
    ab = torch.zeros(50, 2, 8, 8)
    ab[:5, 0] = 60 / AB_SCALE  # a rare reddish colour on 10% of the images
    stats = compute_stats(ab, k=3)
    w = pixel_weights(ab, stats)
    assert float(w[0, 0, 0]) > 2 * float(w[10, 0, 0])
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-4)


def test_ab_bins_brute_force():
    ab = torch.tensor([[-109.0, 0.0], [0.0, 109.9], [500.0, -500.0]]) / AB_SCALE
    bins = ab_bins(ab.T.reshape(1, 2, 1, 3))[0, 0]
    for k, (a, b) in enumerate(ab.tolist()):
        qa = min(max(int((a * AB_SCALE + HIST_RANGE) // HIST_BIN), 0), HIST_BINS - 1)
        qb = min(max(int((b * AB_SCALE + HIST_RANGE) // HIST_BIN), 0), HIST_BINS - 1)
        assert int(bins[k]) == qa * HIST_BINS + qb


def test_pca_components_orthonormal_and_mah_zero_at_truth():
    torch.manual_seed(0)
    base = torch.randn(3, 2 * 8 * 8)
    ab = (torch.randn(200, 3) @ base + 0.01 * torch.randn(200, 128)).view(200, 2, 8, 8)
    stats = compute_stats(ab, k=3)
    P = stats.pca_components
    torch.testing.assert_close(P @ P.T, torch.eye(3), atol=1e-4, rtol=0)
    assert float(mah_loss(ab[:4], ab[:4], stats)) == 0.0
    assert float(mah_loss(ab[:4] + 0.1, ab[:4], stats)) > 0


def test_grad_loss_ignores_constant_offsets():
    x = torch.randn(2, 2, 6, 6)
    assert float(grad_loss(x + 0.3, x)) < 1e-10
    assert float(grad_loss(x * 2, x)) > 0
