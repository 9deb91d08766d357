"""Seeds and per-sample randomness, shared by every sampling method.

Sample k of the set a seed names draws its randomness from its own generator, seeded from
(seed, k). So a set is reproducible sample by sample: asking for 4 or 8 samples gives the same
first 4, "more samples" continues the set at k = n, n+1, … without repeating any, and one
gallery entry can be recreated alone from (seed, index). Index 0 is the most likely
colorization (for mixture models the top mixture mean), drawn from nothing.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .types import Generators

__all__ = ["sample_seed", "sample_generators", "draw", "distinct_components", "SetGenerators"]

_MASK = (1 << 64) - 1


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of the set ``seed`` names (splitmix64 of both), so
    neighbouring seeds and indices give unrelated streams."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


class SetGenerators(list):
    """One generator per sample, for indices ``first`` … of the set ``seed``; they remember both,
    so that a choice made for the whole set (which mixture components its samples take, without
    repeating one) is the same whichever slice of the set is asked for."""

    def __init__(self, gens: Sequence[torch.Generator], seed: int, first: int):
        super().__init__(gens)
        self.seed, self.first = int(seed), int(first)

    def set_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator for the set's shared choices, unrelated to any sample's own stream."""
        return torch.Generator(device=device).manual_seed(sample_seed(self.seed, SET_INDEX))


SET_INDEX = 1 << 40  # no sample has this index


def sample_generators(seed: int, first: int, n: int, device: torch.device | str = "cpu") -> SetGenerators:
    """One generator per sample, for indices first .. first + n - 1 of the set ``seed``."""
    gens = [torch.Generator(device=device).manual_seed(sample_seed(seed, first + k)) for k in range(n)]
    return SetGenerators(gens, seed, first)


def draw(generator: Generators, n: int, fn: Callable[[torch.Generator | None, int], torch.Tensor]) -> torch.Tensor:
    """``fn(generator, m)`` draws m samples' randomness (leading dimension m). With one
    generator (or None) the n samples are drawn in one call; with a sequence, sample k is drawn
    from ``generator[k]`` alone, so it does not depend on n."""
    if generator is None or isinstance(generator, torch.Generator):
        return fn(generator, n)
    gens: Sequence[torch.Generator] = generator
    if len(gens) < n:
        raise ValueError(f"{n} samples need {n} generators, got {len(gens)}")
    if n == 0:
        return fn(None, 0)
    return torch.cat([fn(g, 1) for g in gens[:n]], dim=0)


def skip(generator: Generators, k: int) -> Generators:
    """The generators of samples k, k+1, … (a single generator is shared, so returned as is)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, SetGenerators):
        return SetGenerators(list(generator)[k:], generator.seed, generator.first + k)
    return list(generator)[k:]


def distinct_components(log_pi: torch.Tensor, count: int, generator: Generators, exclude: int | None = None,
                        start: int = 0) -> torch.Tensor:
    """Mixture components for ``count`` samples, none repeated while unused ones remain:
    Gumbel-top-k on ``log_pi`` (already divided by the temperature) without replacement, so the
    seed chooses which and likelier components come first; past the number of components the
    order starts over. ``exclude`` (the mode's component, sample 0) comes last.

    ``start`` is the first sample's place in that order. With :class:`SetGenerators` the order
    is the set's own, so "more samples" continues it."""
    if isinstance(generator, SetGenerators):
        g = generator.set_generator(log_pi.device)
    elif isinstance(generator, (list, tuple)) and generator:
        g = torch.Generator(device=log_pi.device).manual_seed(generator[0].initial_seed() ^ 0x5DEECE66D)
    else:
        g = generator
    u = torch.rand(log_pi.shape, generator=g, device=log_pi.device, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    keys = log_pi.double() - torch.log(-torch.log(u))
    if exclude is not None:
        keys[exclude] = -float("inf")
    order = torch.argsort(keys, descending=True)
    if exclude is not None:
        order = torch.cat([order[order != exclude], order.new_tensor([exclude])])
    return order[(torch.arange(count, device=order.device) + start) % len(order)]
