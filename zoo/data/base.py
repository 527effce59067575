"""What the zoo's DataModules share: the seeded train/val split of a training list, the
``max_samples`` cap, train/val/test/predict loaders whose training order is a pure function
of (seed, epoch), so interrupted runs resume on the same batches, and writing a synthetic
dataset where a recipe on synthetic data finds none (``synthesize``)."""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.core.batch import DataError
from zoo.data.sampling import EpochShuffleSampler, ResumableLoader

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
        raise DataError(f"{data_name}: synthesize has unknown key(s) {bad}; {generator.__name__} takes "
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

    ``setup`` checks every file a split will read before the first step (any stage). With ``skip_bad``
    in the hparams, a subclass screens samples with :meth:`_screen` and records the counts with
    :meth:`_count_skipped`, which fails when skipping leaves nothing or more than ``max_skip_fraction``;
    :meth:`data_report` returns the counts as flat metrics.
    """

    data_name = "data"
    # Per-sample name keys of a batch (lists of strings such as ``imgname``), which metrics may ask for
    # (their ``batch_keys``); an evaluation's ``convention=interactvlm`` adds the DAMON summaries they allow.
    name_keys: tuple[str, ...] = ()

    # -- bad samples: counts, limits, report ------------------------------------------------

    def _screen(self, items: Sequence[Any], check: Callable[[Any], None]) -> tuple[list[Any], list[tuple[Any, str]]]:
        """(items whose ``check`` passed, (item, problem) for the others). ``check`` raises ValueError,
        FileNotFoundError or KeyError naming the file; without ``skip_bad`` the first one propagates."""
        good, bad = [], []
        for item in items:
            try:
                check(item)
            except (ValueError, FileNotFoundError, KeyError) as e:
                if not self.hparams.get("skip_bad", False):
                    raise
                bad.append((item, str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)))
                continue
            good.append(item)
        return good, bad

    def _count_skipped(self, split: str, file: str | os.PathLike, total: int, problems: Sequence[str],
                       what: str = "samples") -> None:
        """Record that ``len(problems)`` of ``total`` ``what`` of ``split`` (read from ``file``) were skipped as bad,
        for :meth:`data_report`; raise a ValueError when that leaves none, or when more than the hparam
        ``max_skip_fraction`` of them were skipped."""
        n_bad = len(problems)
        self.__dict__.setdefault("_skip_counts", {})[(split, what)] = (total - n_bad, n_bad)
        if not n_bad:
            return
        limit = float(self.hparams.get("max_skip_fraction", 1.0))
        head = f"{self.data_name}: {n_bad} of {total} {what.replace('_', ' ')} of the {split} split ({file}) are bad"
        if n_bad >= total:
            raise DataError(f"{head}: skip_bad=true leaves none. First: {problems[0]}")
        if n_bad / total > limit:
            raise DataError(f"{head} ({n_bad / total:.0%}), more than max_skip_fraction={limit:g} allows with "
                            f"skip_bad=true (fix the data, or raise data.max_skip_fraction). First: {problems[0]}")

    def _drop_bad(self, split: str, list_file: str, items: list[int], check: Callable[[int], None],
                  what: str = "samples") -> list[int]:
        """``items`` (0-based list rows) whose ``check`` passes. The others (``skip_bad``) are appended to
        ``self.skipped`` as (list file, row, problem), counted in ``self.num_skipped``, logged as one warning
        and recorded with :meth:`_count_skipped` (which fails past the limits)."""
        good, bad = self._screen(items, check)
        self.skipped.extend((str(list_file), i, problem) for i, problem in bad)
        self.num_skipped += len(bad)
        if bad:
            logging.getLogger(type(self).__module__).warning(
                "%s: skipped %d bad %s of %s (%s split); first: %s", self.data_name, len(bad),
                what.replace("_", " "), list_file, split, bad[0][1])
        self._count_skipped(split, list_file, len(items), [p for _, p in bad], what)
        return good

    def _check_paired(self, train: Any, val: Any) -> None:
        """Check the train and val datasets of a paired (image, point cloud) list (PIAD, LEMON): parse every point
        file an image of either split may be paired with (its class's pool), drop the bad ones from the pools,
        then check every image row. The datasets provide ``labels``, ``rows``, ``by_class``, ``point_list``,
        ``image_list``, ``check_point(j)``, ``check_row(r)`` and ``drop_points(bad)``."""
        classes = {train.labels[r][0] for ds in (train, val) for r in ds.rows.tolist()}
        used = sorted(j for c in classes for j in train.by_class.get(c, []))
        good = self._drop_bad("train", train.point_list, used, train.check_point, "point_files")
        bad = set(used) - set(good)
        for name, ds in (("train", train), ("val", val)):
            ds.drop_points(bad)
            ds.rows = np.asarray(self._drop_bad(name, ds.image_list, ds.rows.tolist(), ds.check_row), dtype=np.int64)

    def data_report(self) -> dict[str, float]:
        """Counts of the splits set up, as flat metrics: ``data/<split>/samples`` (kept) and
        ``data/<split>/skipped`` (dropped by ``skip_bad``), and ``data/<split>/<what>`` /
        ``data/<split>/skipped_<what>`` for other screened files (PIAD's and LEMON's ``point_files``)."""
        out: dict[str, float] = {}
        for (split, what), (kept, skipped) in self.__dict__.get("_skip_counts", {}).items():
            tail = "skipped" if what == "samples" else f"skipped_{what}"
            out[f"data/{split}/{what}"] = float(kept)
            out[f"data/{split}/{tail}"] = float(skipped)
        return out

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
        kw = dict(batch_size=h.batch_size, num_workers=h.num_workers, pin_memory=h.pin_memory,
                  collate_fn=self._collate(), persistent_workers=h.num_workers > 0)
        if shuffle:  # resumable mid-epoch: Lightning stores the loader's position in every checkpoint
            return ResumableLoader(ds, sampler=self._sampler(len(ds)), drop_last=h.drop_last, **kw)
        return DataLoader(ds, **kw)

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
