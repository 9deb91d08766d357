"""Deterministic batches: step -> indices, independent of when the run was (re)started."""

from __future__ import annotations

import torch

from engine.errors import ConfigError

from .loop import Dist


class BatchSampler:
    """Per-epoch permutations seeded by (seed, epoch); each rank takes its own slice."""

    def __init__(self, n: int, batch_size: int, seed: int, ddp: Dist = Dist()):
        self.n, self.bs, self.seed, self.ddp = n, batch_size, seed, ddp
        self.global_bs = batch_size * ddp.world
        if n < self.global_bs:
            ranks = f" x {ddp.world} processes" if ddp.world > 1 else ""
            raise ConfigError(
                f"--batch-size {batch_size}{ranks} needs at least {self.global_bs} training images, but the data has {n}; "
                f"lower --batch-size to {max(1, n // ddp.world)} or less, or add images."
            )
        self.per_epoch = n // self.global_bs
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        start = i * self.global_bs + self.ddp.rank * self.bs
        return self._perm[start : start + self.bs]
