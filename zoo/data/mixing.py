"""``mixed``: several DataModules trained together, each drawn by a sampling rate (InteractVLM's ``9,3,1``).

The recipe lists the member DataModules, each a sub-recipe built through the registry, and one rate per
member (any positive numbers; they are normalised)::

    data:
      name: mixed
      datasets:
        - {name: damon, root: damon, contact_mode: binary}
        - {name: damon, root: damon, contact_mode: semantic, label: damon_semantic}
        - {name: piad, root: piad}
      rates: [9, 3, 1]
      batch_size: 8

Training. The official ``HybridDataset`` draws a dataset per *item* (``np.random.choice`` with ``p =
rates / sum``) and collates the items of one batch together, which works there because every dataset
returns the same tuple. Here members give batches with other keys (DAMON: contact labels and
segmentations; PIAD: point clouds and affordances), so a batch holds one member's samples: each global
batch (``batch_size`` x processes) draws its member with probability ``rate / sum`` (so the expected share
of samples per member is the official one) and takes that member's next samples (see
:class:`zoo.data.sampling.MixingSampler`). Every batch is the member's own collated batch plus the key
``dataset`` (a string: the member's label). The order is a pure function of (seed, epoch), so a run
resumes mid-epoch on the same batches (:class:`~zoo.data.sampling.ResumableLoader`), and N processes at
batch b train on the batches of one process at batch N·b. ``samples_per_epoch`` (default: the sum of
the members' training sizes) is rounded up to whole global batches.

Validation, test, predict: one loader that goes through the members in order, each in file order with
its own batch size and collate; an item of the loader is a whole member batch (``batch_size=None``), so
under DDP whole batches are dealt out to the ranks and no batch mixes members. The systems' steps take no
``dataloader_idx``, hence one loader rather than a list. Metrics that need a member's keys (DAMON's
``imgname``) see only batches of members that carry them only if every member does; ``name_keys`` is the
keys every member's batches carry.

A member's ``label`` (default: its registry name) names it in ``dataset`` and in :meth:`data_report`;
two members with the same label are an error. A member without a ``root`` gets ``<root>/<label>`` when
the mixed module has a ``root``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset, default_collate

from zoo.core.batch import DataError
from zoo.core.registry import register
from zoo.data.base import SplitDataModule
from zoo.data.sampling import MixingSampler, PairSampler, ResumableLoader

__all__ = ["MixedDataModule", "MixedDataset", "MemberCollate", "MemberBatches"]


class MixedDataset(Dataset):
    """The members' training datasets behind one index: key ``(member, index, epoch)`` from a MixingSampler
    gives ``(member, sample)``; members whose own sampler is a PairSampler (PIAD, LEMON) get ``(index, epoch)``."""

    def __init__(self, members: Sequence[Dataset], pair_keys: Sequence[bool]):
        self.members = list(members)
        self.pair_keys = list(pair_keys)

    def __len__(self) -> int:
        return sum(len(d) for d in self.members)

    def __getitem__(self, key) -> tuple[int, Any]:
        m, i, epoch = (int(k) for k in key)
        return m, self.members[m][(i, epoch) if self.pair_keys[m] else i]


class MemberCollate:
    """Collate ``(member, sample)`` items of one member with that member's collate, adding ``dataset``."""

    def __init__(self, labels: Sequence[str], collates: Sequence[Any]):
        self.labels = list(labels)
        self.collates = list(collates)

    def __call__(self, items: list[tuple[int, Any]]) -> dict[str, Any]:
        members = sorted({m for m, _ in items})
        if len(members) != 1:
            raise RuntimeError(f"mixed: a batch holds samples of members {[self.labels[m] for m in members]}; "
                               f"batches must be one member's (the sampler's block is the global batch size)")
        m = members[0]
        batch = (self.collates[m] or default_collate)([s for _, s in items])
        batch["dataset"] = self.labels[m]
        return batch


class MemberBatches(Dataset):
    """Evaluation: item j is the j-th whole batch of the members' datasets, in member then file order."""

    def __init__(self, members: Sequence[Dataset], batch_sizes: Sequence[int], collate: MemberCollate):
        self.members = list(members)
        self.collate = collate
        self.spans = [(m, s, min(s + b, len(d))) for m, (d, b) in enumerate(zip(self.members, batch_sizes, strict=True))
                      for s in range(0, len(d), b)]

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, j: int) -> dict[str, Any]:
        m, start, stop = self.spans[j]
        return self.collate([(m, self.members[m][i]) for i in range(start, stop)])


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _identity(batch: Any) -> Any:
    return batch


@register("datamodule", "mixed")
class MixedDataModule(SplitDataModule):
    """Member DataModules mixed by sampling rates for training; their val/test splits one after another.

    ``datasets``: member sub-recipes (``{name: damon, ...}``, each may add ``label``); ``rates``: one
    positive number per member (default: equal), normalised; ``samples_per_epoch``: training samples per
    epoch (default: the sum of the members' training sizes), rounded up to whole global batches;
    ``batch_size``, ``num_workers``, ``pin_memory``: of the training loader (evaluation uses each member's
    own batch size); ``seed``: of the mixing order (members keep their own seeds for splits and pairing);
    ``root``: parent folder of members without a root; ``world_size``: processes for the global batch
    (default: the trainer's, else 1). See the module docstring for the batch rule.
    """

    data_name = "mixed"

    def __init__(self, datasets: Sequence[Mapping[str, Any]], rates: Sequence[float] | None = None,
                 samples_per_epoch: int | None = None, batch_size: int = 8, num_workers: int = 0, seed: int = 0,
                 root: str | None = None, pin_memory: bool = False, world_size: int | None = None):
        super().__init__()
        from zoo.core import registry

        if isinstance(datasets, (str, bytes, Mapping)) or not isinstance(datasets, Sequence) or not datasets:
            raise DataError(f"mixed: data.datasets must be a non-empty list of datamodule sub-recipes, got {datasets!r}")
        if isinstance(rates, str):  # the official command line's "9,3,1"
            rates = [_number(r.strip()) for r in rates.split(",")]
        rates = [1.0] * len(datasets) if rates is None else list(rates)
        if len(rates) != len(datasets):
            raise DataError(f"mixed: data.rates has {len(rates)} entries but data.datasets has {len(datasets)}; "
                            f"give one rate per dataset")
        for i, r in enumerate(rates):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or r == float("inf"):
                raise DataError(f"mixed: data.rates[{i}] must be a positive number, got {r!r}")
        if batch_size <= 0:
            raise DataError(f"mixed: data.batch_size must be positive, got {batch_size}")
        if samples_per_epoch is not None and samples_per_epoch <= 0:
            raise DataError(f"mixed: data.samples_per_epoch must be positive or None, got {samples_per_epoch}")
        if seed < 0:
            raise DataError(f"mixed: data.seed must be non-negative, got {seed}")
        if world_size is not None and world_size <= 0:
            raise DataError(f"mixed: data.world_size must be positive or None, got {world_size}")
        self.save_hyperparameters()
        self.labels: list[str] = []
        self.members: list[SplitDataModule] = []
        for i, cfg in enumerate(datasets):
            where = f"data.datasets[{i}]"
            if not isinstance(cfg, Mapping) or "name" not in cfg:
                raise DataError(f"mixed: {where} must be a datamodule sub-recipe with a 'name' key, got {cfg!r}")
            cfg = dict(cfg)
            label = str(cfg.pop("label", cfg["name"]))
            if label in self.labels:
                raise DataError(f"mixed: {where} is labelled '{label}' like data.datasets[{self.labels.index(label)}]; "
                                f"give one of them another 'label'")
            if root is not None and "root" not in cfg:
                cfg["root"] = f"{root}/{label}"
            try:
                member = registry.build("datamodule", cfg, materialize=False)
            except Exception as e:
                e.add_note(f"while building {where} ('{label}') of the mixed datamodule")
                raise
            self.labels.append(label)
            self.members.append(member)
        self.rates = [float(r) for r in rates]
        self.train_set = self.val_set = self.test_set = None

    # -- set-up ----------------------------------------------------------------------------

    def _each(self, what: str, fn) -> None:
        for i, (label, member) in enumerate(zip(self.labels, self.members, strict=True)):
            try:
                fn(member)
            except Exception as e:
                e.add_note(f"while {what} data.datasets[{i}] ('{label}') of the mixed datamodule")
                raise

    def prepare_data(self) -> None:
        """Each member's prepare_data (writes synthetic data where a member asks for it)."""
        self._each("preparing", lambda m: m.prepare_data())

    def setup(self, stage: str | None = None) -> None:
        """Set up every member for ``stage``; for training, every member needs a training sample."""
        self._each(f"setting up ({stage})", lambda m: m.setup(stage))
        if stage in (None, "fit"):
            for i, (label, member) in enumerate(zip(self.labels, self.members, strict=True)):
                ds = member._loader_dataset(member.train_set)
                if ds is None or len(ds) == 0:
                    raise DataError(f"mixed: data.datasets[{i}] ('{label}') has no training sample; a mixed member "
                                    f"needs at least one (or drop it from data.datasets and data.rates)")

    @property
    def name_keys(self) -> tuple[str, ...]:
        """The per-sample name keys every member's batches carry."""
        keys = [tuple(getattr(m, "name_keys", ()) or ()) for m in self.members]
        return tuple(k for k in keys[0] if all(k in other for other in keys[1:]))

    def data_report(self) -> dict[str, float]:
        """The members' reports, ``data/<split>/...`` renamed ``data/<label>/<split>/...``."""
        out: dict[str, float] = {}
        for label, member in zip(self.labels, self.members, strict=True):
            report = member.data_report() if hasattr(member, "data_report") else {}
            for k, v in report.items():
                out[f"data/{label}/{k[5:]}" if k.startswith("data/") else f"{label}/{k}"] = v
        return out

    # -- loaders ---------------------------------------------------------------------------

    def _collate_all(self) -> MemberCollate:
        return MemberCollate(self.labels, [m._collate() for m in self.members])

    def _split(self, split: str) -> list[Dataset]:
        out = []
        for i, (label, member) in enumerate(zip(self.labels, self.members, strict=True)):
            ds = member._loader_dataset(getattr(member, f"{split}_set", None))
            if ds is None:
                raise RuntimeError(f"mixed: the {split} split of data.datasets[{i}] ('{label}') is not set up; call "
                                   f"setup() with the right stage first")
            out.append(ds)
        return out

    def world_size(self) -> int:
        """Processes sharing a training step: ``world_size`` if given, else the trainer's, else 1."""
        if self.hparams.world_size:
            return int(self.hparams.world_size)
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    def train_sampler(self) -> MixingSampler:
        """The training order over the members' training sets (set up for 'fit')."""
        sizes = [len(d) for d in self._split("train")]
        n = self.hparams.samples_per_epoch or sum(sizes)
        return MixingSampler(sizes, self.rates, n, self.hparams.seed, block=self.hparams.batch_size * self.world_size())

    def train_dataloader(self) -> DataLoader:
        """Batches of one member each, members drawn by rate, in an order fixed by (seed, epoch)."""
        h = self.hparams
        sets = self._split("train")
        pair = [isinstance(m._sampler(1), PairSampler) for m in self.members]
        return ResumableLoader(MixedDataset(sets, pair), sampler=self.train_sampler(), batch_size=h.batch_size,
                               num_workers=h.num_workers, pin_memory=h.pin_memory, collate_fn=self._collate_all(),
                               persistent_workers=h.num_workers > 0, drop_last=False)

    def _eval_loader(self, split: str) -> DataLoader:
        h = self.hparams
        batches = MemberBatches(self._split(split), [int(m.hparams.batch_size) for m in self.members],
                                self._collate_all())
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=h.num_workers, pin_memory=h.pin_memory,
                          collate_fn=_identity, persistent_workers=h.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        """Every member's validation batches, member after member, in file order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Every member's test batches, member after member, in file order."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self._eval_loader("test")

