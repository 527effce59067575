"""What the zoo's DataModules share: the seeded train/val split of a training list, the
``max_samples`` cap, and train/val/test/predict loaders whose training order is a pure function
of (seed, epoch), so interrupted runs resume on the same batches."""
from __future__ import annotations

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.data.sampling import EpochShuffleSampler

__all__ = ["SplitDataModule", "seeded_split"]


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(val rows, train rows), each sorted, from a permutation of range(n) seeded by ``seed``.
    A positive fraction keeps at least one row on each side when n > 1."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


class SplitDataModule(L.LightningDataModule):
    """Loaders over ``train_set`` / ``val_set`` / ``test_set`` (set by the subclass's setup).

    Subclasses name themselves in ``data_name`` (for errors), keep ``batch_size``, ``seed``,
    ``num_workers``, ``pin_memory``, ``drop_last`` and ``max_samples`` in their hparams, and may
    override ``_sampler`` (training order), ``_collate`` and ``_loader_dataset`` (a view of a split,
    e.g. DAMON's object-wise pairs). Validation, test and predict keep file order; predict uses
    the test split.
    """

    data_name = "data"

    def _cap(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.hparams.max_samples is None else rows[: self.hparams.max_samples]

    def _sampler(self, n: int) -> Sampler:
        return EpochShuffleSampler(n, self.hparams.seed)

    def _collate(self):
        return None

    def _loader_dataset(self, ds: Dataset | None) -> Dataset | None:
        return ds

    def _loader(self, ds: Dataset | None, shuffle: bool, name: str) -> DataLoader:
        ds = self._loader_dataset(ds)
        if ds is None:
            raise RuntimeError(f"{self.data_name}: the {name} split is not set up; call setup() with the right stage first")
        h = self.hparams
        return DataLoader(ds, batch_size=h.batch_size, sampler=self._sampler(len(ds)) if shuffle else None,
                          num_workers=h.num_workers, pin_memory=h.pin_memory, drop_last=h.drop_last and shuffle,
                          collate_fn=self._collate(), persistent_workers=h.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches, in an order fixed by (seed, epoch)."""
        return self._loader(self.train_set, True, "train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches in file order."""
        return self._loader(self.val_set, False, "val")

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order."""
        return self._loader(self.test_set, False, "test")

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self._loader(self.test_set, False, "test")
