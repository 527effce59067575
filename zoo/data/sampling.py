"""Samplers whose order is a pure function of (seed, epoch), so a resumed run sees the same
batches as an uninterrupted one. Lightning calls ``set_epoch`` on samplers that have it."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler", "PairSampler", "pair_draw"]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of range(n) drawn from a generator seeded with seed + epoch."""

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class PairSampler(EpochShuffleSampler):
    """Yields ``(index, epoch)`` keys, shuffled as EpochShuffleSampler or in order, so a dataset
    can draw per-epoch pairs as a pure function of its key (exact resume, any worker count)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        super().__init__(n, seed)
        self.shuffle = shuffle

    def __iter__(self):
        order = super().__iter__() if self.shuffle else iter(range(self.n))
        return iter([(i, self.epoch) for i in order])


def pair_draw(n: int, seed: int, epoch: int, item: int) -> int:
    """Index in [0, n) of the partner drawn for ``item`` in ``epoch``, a pure function of (seed, epoch, item).

    PIAD and LEMON pair each image with a random cloud of its class this way, so a resumed
    run, and every DataLoader worker, draws the same pairs.
    """
    return int(np.random.default_rng([seed, epoch, item]).integers(n))
