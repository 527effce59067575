"""Samplers whose order is a pure function of (seed, epoch), so a resumed run sees the same
batches as an uninterrupted one. Lightning calls ``set_epoch`` on samplers that have it.

:class:`ResumableLoader` adds the position inside an epoch: Lightning stores its ``state_dict``
in every checkpoint (the fit loop's ``combined_loader`` state), so a run stopped mid-epoch
(SIGTERM, Ctrl-C, a SLURM pre-emption) resumes on the batch after the last one it trained on,
not at the start of a new shuffle."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochShuffleSampler", "MixingSampler", "PairSampler", "ResumableLoader", "pair_draw"]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of range(n) drawn from a generator seeded with seed + epoch."""

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.skip = 0  # samples of this epoch already trained on (set by ResumableLoader on resume)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch
        self.skip = 0

    def order(self) -> list[int]:
        """This epoch's permutation of range(n)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(self.order()[skip:])

    def __len__(self) -> int:
        return self.n


class PairSampler(EpochShuffleSampler):
    """Yields ``(index, epoch)`` keys, shuffled as EpochShuffleSampler or in order, so a dataset
    can draw per-epoch pairs as a pure function of its key (exact resume, any worker count)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        super().__init__(n, seed)
        self.shuffle = shuffle

    def __iter__(self):
        skip, self.skip = self.skip, 0
        order = self.order() if self.shuffle else list(range(self.n))
        return iter([(i, self.epoch) for i in order[skip:]])


class MixingSampler(EpochShuffleSampler):
    """Yields ``(member, index, epoch)`` keys over several datasets mixed by sampling rates.

    The epoch is cut into blocks of ``block`` consecutive positions (the global batch: batch size x
    processes); block ``j`` draws member ``m`` with probability ``rates[m] / sum(rates)`` and takes the
    member's next ``block`` samples. A member's samples come from a permutation of its range drawn per
    (seed, epoch, member, pass) and start over with a new permutation when a pass is used up, so a small
    member with a high rate repeats each sample evenly. The epoch's order is a pure function of (seed,
    epoch) (given sizes, rates, length and block), so :class:`ResumableLoader` resumes it mid-epoch, and under
    DDP :func:`_keep_epoch_order` deals it out unchanged: rank r takes positions r, r + N, ..., so every
    rank's batch of a step lies in the same block (one member, the same on every rank). ``n`` is rounded up
    to whole blocks, so no block (and no padded DDP tail) mixes members.
    """

    def __init__(self, sizes: list[int], rates: list[float], n: int, seed: int = 0, block: int = 1):
        if len(sizes) != len(rates) or not sizes:
            raise ValueError(f"MixingSampler: {len(sizes)} sizes but {len(rates)} rates")
        if any(int(s) <= 0 for s in sizes):
            raise ValueError(f"MixingSampler: every member needs a sample, got sizes {list(sizes)}")
        if any(not float(r) > 0 for r in rates):
            raise ValueError(f"MixingSampler: rates must be positive, got {list(rates)}")
        if int(block) <= 0 or int(n) <= 0:
            raise ValueError(f"MixingSampler: n and block must be positive, got n={n}, block={block}")
        self.sizes = [int(s) for s in sizes]
        r = np.asarray(rates, dtype=np.float64)
        self.probs = r / r.sum()
        self.block = int(block)
        super().__init__(-(-int(n) // self.block) * self.block, seed)

    def members(self) -> np.ndarray:
        """The member of each block of this epoch."""
        u = np.random.default_rng([self.seed, self.epoch, 0]).random(self.n // self.block)
        return np.minimum(np.searchsorted(np.cumsum(self.probs), u, side="right"), len(self.sizes) - 1)

    def order(self) -> list[tuple[int, int, int]]:
        """This epoch's ``(member, index, epoch)`` keys, ``n`` of them."""
        taken = [0] * len(self.sizes)
        perms: dict[tuple[int, int], np.ndarray] = {}
        out: list[tuple[int, int, int]] = []
        for m in self.members().tolist():
            n_m = self.sizes[m]
            for _ in range(self.block):
                k = taken[m]
                taken[m] += 1
                p = (m, k // n_m)
                if p not in perms:
                    perms[p] = np.random.default_rng([self.seed, self.epoch, 1 + m, p[1]]).permutation(n_m)
                out.append((m, int(perms[p][k % n_m]), self.epoch))
        return out


def pair_draw(n: int, seed: int, epoch: int, item: int) -> int:
    """Index in [0, n) of the partner drawn for ``item`` in ``epoch``, a pure function of (seed, epoch, item).

    PIAD and LEMON pair each image with a random cloud of its class this way, so a resumed
    run, and every DataLoader worker, draws the same pairs.
    """
    return int(np.random.default_rng([seed, epoch, item]).integers(n))


def _keep_epoch_order(sampler: Sampler) -> None:
    """Under DDP, Lightning wraps a training loader's sampler in a ``DistributedSamplerWrapper`` created with
    ``shuffle=True`` (Lightning-AI/pytorch-lightning#21447): the wrapper would permute the positions of this
    epoch's :class:`EpochShuffleSampler` order again with its own (seed, epoch) generator, so N processes
    would train on other batches than one. The order is already shuffled and a pure function of (seed,
    epoch), so the wrapper is made to deal it out as it is: rank r takes positions r, r + N, ..., and (when the
    split divides by N * b) each step's N per-rank batches of size b hold exactly the samples of one process's
    batch of size N * b (tests/integration/test_deco_ddp.py)."""
    from torch.utils.data import DistributedSampler

    inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)  # Lightning's _DatasetSamplerWrapper
    if isinstance(sampler, DistributedSampler) and isinstance(inner, EpochShuffleSampler):
        sampler.shuffle = False


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochShuffleSampler` that knows how many batches of the current
    epoch it has handed out, and can start an epoch after that many (Lightning's ``_Stateful``
    protocol: ``state_dict`` / ``load_state_dict``).

    The count is of batches yielded to the training loop (Lightning does not prefetch when the
    length is known, and worker prefetching happens below this count), so a checkpoint written
    at the end of batch k resumes at batch k + 1 of the same permutation.
    """

    def __init__(self, dataset, *, sampler: Sampler, **kwargs):
        # Lightning re-creates the loader with a DistributedSampler(Wrapper) under DDP: the position is then
        # still reported, but an interrupted epoch restarts from its first batch (with a warning).
        _keep_epoch_order(sampler)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._yielded = 0
        self._resume: dict | None = None

    def _epoch_sampler(self) -> EpochShuffleSampler | None:
        return self.sampler if isinstance(self.sampler, EpochShuffleSampler) else None

    def __iter__(self):
        sampler = self._epoch_sampler()
        start = 0
        if self._resume is not None:
            state, self._resume = self._resume, None
            if sampler is None:
                import warnings

                warnings.warn("ResumableLoader: the sampler was replaced (distributed training), so the interrupted "
                              "epoch restarts from its first batch", stacklevel=2)
            elif int(state.get("epoch", -1)) == sampler.epoch and int(state.get("seed", sampler.seed)) == sampler.seed:
                start = int(state.get("batches", 0))
        if sampler is not None:
            sampler.skip = start * int(self.batch_size or 1)
        self._yielded = start
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        """Where the current epoch stands: {epoch, seed, batches handed out}."""
        sampler = self._epoch_sampler()
        epoch, seed = (sampler.epoch, sampler.seed) if sampler is not None else (-1, -1)
        return {"epoch": int(epoch), "seed": int(seed), "batches": int(self._yielded)}

    def load_state_dict(self, state: dict) -> None:
        """Start the next iteration after ``state['batches']`` batches, if it is the same epoch and seed."""
        self._resume = dict(state)
