"""Sets of colorizations that are different colorizations: sample 0 the most likely, the others
from distinct mixture components (even when one component holds nearly all the weight), the
seed choosing which, temperature a distance from the most likely one, and a set that is the
same however it is asked for (all at once, or continued with "more samples")."""

from __future__ import annotations

import torch

from engine.models.vae_mdn import mixture_codes
from engine.sampling import distinct_components, sample_generators

M, D = 8, 6


def _mixture(dominant: bool = True):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(M, D, generator=g) * 3
    log_pi = torch.full((M,), -20.0) if dominant else torch.randn(M, generator=g)
    log_pi[2] = 0.0  # one component with ~all the weight
    return log_pi, mu


def _components(codes: torch.Tensor, mu: torch.Tensor) -> list[int]:
    return torch.cdist(codes, mu).argmin(1).tolist()


def test_a_dominant_component_still_gives_distinct_components():
    log_pi, mu = _mixture()
    codes = mixture_codes(log_pi, mu, 0.0, 6, sample_generators(1, 0, 6), 1.0, include_mode=True)
    comps = _components(codes, mu)
    assert comps[0] == 2  # the most likely colorization first
    assert len(set(comps)) == 6  # never the same component twice (the old draw gave 2,2,2,2,2,2)


def test_past_the_number_of_components_the_order_starts_over():
    log_pi, mu = _mixture(dominant=False)
    comp = distinct_components(log_pi, 2 * M, sample_generators(5, 0, 1), exclude=int(log_pi.argmax()))
    assert sorted(comp[:M].tolist()) == list(range(M)) and comp[:M].tolist() == comp[M:].tolist()
    assert comp[M - 1] == int(log_pi.argmax())  # the mode's own component comes last


def test_same_seed_same_set_and_more_samples_continue_it():
    log_pi, mu = _mixture(dominant=False)
    whole = mixture_codes(log_pi, mu, 0.1, 7, sample_generators(3, 0, 7), 1.0, True)
    again = mixture_codes(log_pi, mu, 0.1, 7, sample_generators(3, 0, 7), 1.0, True)
    head = mixture_codes(log_pi, mu, 0.1, 3, sample_generators(3, 0, 3), 1.0, True)
    more = mixture_codes(log_pi, mu, 0.1, 4, sample_generators(3, 3, 4), 1.0, False)
    torch.testing.assert_close(whole, again, rtol=0, atol=0)
    torch.testing.assert_close(whole, torch.cat([head, more]), rtol=0, atol=1e-6)
    assert len(set(_components(whole, mu))) == 7


def test_another_seed_changes_every_sample_after_the_first():
    log_pi, mu = _mixture(dominant=False)
    a = mixture_codes(log_pi, mu, 0.1, 5, sample_generators(1, 0, 5), 1.0, True)
    b = mixture_codes(log_pi, mu, 0.1, 5, sample_generators(2, 0, 5), 1.0, True)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert all(float((x - y).abs().max()) > 1e-3 for x, y in zip(a[1:], b[1:]))


def test_temperature_is_a_distance_from_the_most_likely_colorization():
    log_pi, mu = _mixture(dominant=True)  # the order barely depends on T here: compare distances
    top = mu[2]
    dist = {}
    for t in (0.5, 1.0, 1.5):
        codes = mixture_codes(log_pi, mu, 0.0, 5, sample_generators(4, 0, 5), t, True)
        torch.testing.assert_close(codes[0], top)
        dist[t] = (codes[1:] - top).norm(dim=1)
    torch.testing.assert_close(dist[0.5], 0.5 * dist[1.0])  # half as far, sample by sample
    torch.testing.assert_close(dist[1.5], 1.5 * dist[1.0])
