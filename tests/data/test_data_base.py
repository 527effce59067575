"""The shared DataModule pieces: seeded split, samplers, loaders of splits not set up."""
import numpy as np
import pytest

from zoo.data.base import seeded_split
from zoo.data.damon import DamonDataModule
from zoo.data.lemon import LemonDataModule
from zoo.data.piad import PiadDataModule
from zoo.data.sampling import EpochShuffleSampler, PairSampler


def test_seeded_split_sizes_disjoint_and_reproducible():
    val, train = seeded_split(10, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert sorted(np.concatenate([val, train]).tolist()) == list(range(10))
    assert list(val) == sorted(val) and list(train) == sorted(train)
    v2, t2 = seeded_split(10, 0.2, seed=0)
    assert np.array_equal(val, v2) and np.array_equal(train, t2)
    assert len({tuple(seeded_split(10, 0.2, seed=k)[0]) for k in range(5)}) > 1, "the seed must matter"


def test_seeded_split_keeps_one_row_each_side():
    assert [len(x) for x in seeded_split(3, 0.01, 0)] == [1, 2]   # rounds to 0, kept at 1
    assert [len(x) for x in seeded_split(3, 0.99, 0)] == [2, 1]   # rounds to 3, kept at n - 1
    assert [len(x) for x in seeded_split(5, 0.0, 0)] == [0, 5]
    assert [len(x) for x in seeded_split(1, 0.5, 0)] == [0, 1]    # one row: nothing to hold out


def test_pair_sampler_keys_follow_epoch_shuffle():
    s, base = PairSampler(6, seed=4), EpochShuffleSampler(6, seed=4)
    for epoch in (0, 3):
        s.set_epoch(epoch)
        base.set_epoch(epoch)
        assert list(s) == [(i, epoch) for i in base]
    ordered = PairSampler(4, seed=4, shuffle=False)
    ordered.set_epoch(2)
    assert list(ordered) == [(0, 2), (1, 2), (2, 2), (3, 2)] and len(ordered) == 4


@pytest.mark.parametrize("cls, name", [(DamonDataModule, "damon"), (PiadDataModule, "piad"), (LemonDataModule, "lemon")])
def test_loader_before_setup_names_module_and_split(cls, name, tmp_path):
    dm = cls(str(tmp_path))
    with pytest.raises(RuntimeError, match=rf"^{name}: the val split is not set up; call setup\(\) with the right stage first$"):
        dm.val_dataloader()
