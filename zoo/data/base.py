"""What the zoo's DataModules share: the seeded train/val split of a training list, the
``max_samples`` cap, train/val/test/predict loaders whose training order is a pure function
of (seed, epoch), so interrupted runs resume on the same batches, and writing a synthetic
dataset where a recipe on synthetic data finds none (``synthesize``)."""
from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.data.sampling import EpochShuffleSampler

__all__ = ["SplitDataModule", "seeded_split", "check_synthesize", "synthesize_missing"]

LOCK_NAME = ".zoo-synthesize.lock"


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(val rows, train rows), each sorted, from a permutation of range(n) seeded by ``seed``.
    A positive fraction keeps at least one row on each side when n > 1."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def check_synthesize(data_name: str, generator: Callable, synthesize: dict | None,
                     reserved: Sequence[str] = ("out",)) -> dict | None:
    """``synthesize`` as a plain dict, checked against ``generator``'s keyword arguments (a typo fails at once)."""
    if synthesize is None:
        return None
    if not isinstance(synthesize, dict):
        raise TypeError(f"{data_name}: synthesize must be a dict of {generator.__name__} keyword arguments or None, "
                        f"got {type(synthesize).__name__}")
    allowed = [k for k in inspect.signature(generator).parameters if k not in reserved]
    bad = [k for k in synthesize if k not in allowed]
    if bad:
        raise ValueError(f"{data_name}: synthesize has unknown key(s) {bad}; {generator.__name__} takes "
                         f"{', '.join(allowed)} (the output folder is the DataModule's root)")
    return dict(synthesize)


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer at a time is then the caller's business
        yield
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def synthesize_missing(data_name: str, root: str | os.PathLike, required: Sequence[Path], write: Callable[[], Any],
                       message: str) -> bool:
    """Run ``write()`` (a generator writing under ``root``) when none of the ``required`` files exist; True if it ran.

    ``message`` is printed first, as one line. Another process writing the same ``root``
    (each node's rank 0, two runs) waits on a lock in ``root`` and then finds the files. The
    generators write ``required`` (their index files) last and every file atomically, so
    all of them present means the whole dataset is. Existing files are never overwritten:
    some but not all of ``required`` present is an error.
    """
    required = [Path(p) for p in required]
    if all(p.is_file() for p in required):
        return False
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / LOCK_NAME):
        present = [p for p in required if p.is_file()]
        if len(present) == len(required):
            return False  # another process wrote them while we waited
        if present:
            missing = [str(p) for p in required if not p.is_file()]
            raise FileExistsError(f"{data_name}: {root} holds an incomplete dataset ({', '.join(map(str, present))} "
                                  f"but not {', '.join(missing)}); synthesize never overwrites existing files: "
                                  f"delete the folder or complete it, then run again")
        print(message, flush=True)
        write()
        missing = [str(p) for p in required if not p.is_file()]
        if missing:
            raise RuntimeError(f"{data_name}: the synthetic data generator did not write {', '.join(missing)}")
    return True


class SplitDataModule(L.LightningDataModule):
    """Loaders over ``train_set`` / ``val_set`` / ``test_set`` (set by the subclass's setup).

    Subclasses name themselves in ``data_name`` (for errors), keep ``batch_size``, ``seed``,
    ``num_workers``, ``pin_memory``, ``drop_last`` and ``max_samples`` in their hparams, and may
    override ``_sampler`` (training order), ``_collate`` and ``_loader_dataset`` (a view of a split,
    e.g. DAMON's object-wise pairs). Validation, test and predict keep file order; predict uses
    the test split.

    A subclass that can write synthetic data keeps ``synthesize`` in its hparams and implements
    ``_synthesize()`` (write the data under its root if missing); ``prepare_data`` (rank 0,
    before setup) and the subclass's ``setup`` call :meth:`_ensure_data`, which runs it once.
    """

    data_name = "data"

    def _synthesize(self) -> None:
        """Write synthetic data where the split files are missing (only subclasses with ``synthesize``)."""

    def _ensure_data(self) -> None:
        """Write the synthetic data if ``synthesize`` is set and the split files are missing (once per module)."""
        if self.hparams.get("synthesize") is None or getattr(self, "_data_ensured", False):
            return
        self._synthesize()
        self._data_ensured = True

    def prepare_data(self) -> None:
        """Lightning calls this on rank 0 before ``setup``: writes synthetic data where ``synthesize`` asks for it."""
        self._ensure_data()

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
