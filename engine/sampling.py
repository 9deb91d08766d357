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

__all__ = ["sample_seed", "sample_generators", "draw"]

_MASK = (1 << 64) - 1


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of the set ``seed`` names (splitmix64 of both), so
    neighbouring seeds and indices give unrelated streams."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def sample_generators(seed: int, first: int, n: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, for indices first .. first + n - 1 of the set ``seed``."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, first + k)) for k in range(n)]


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
    return list(generator)[k:]
