"""The ``mixed`` datamodule: the mixing sampler hits its rates (binomial, 4 sigma), is a pure function of
(seed, epoch), resumes mid-epoch on the same order, and two DDP ranks (Lightning's wrapper, simulated) train on
one process's batches, one member per step; batches carry ``dataset``; the errors name the recipe key."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.core.batch import DataError
from zoo.data.mixing import MemberCollate, MixedDataModule, MixedDataset
from zoo.data.sampling import MixingSampler, ResumableLoader


def _members(sizes=(12, 7, 5)):
    """In-memory members: sample i of member m is {"id": 1000 m + i} (member 2's samples also carry "extra")."""
    out = []
    for m, n in enumerate(sizes):
        out.append([{"id": torch.tensor(1000 * m + i), **({"extra": torch.zeros(2)} if m == 2 else {})}
                    for i in range(n)])
    return out


def _loader(sampler, batch_size, sizes=(12, 7, 5)):
    ds = MixedDataset(_members(sizes), [False] * len(sizes))
    return ResumableLoader(ds, sampler=sampler, batch_size=batch_size,
                           collate_fn=MemberCollate(["a", "b", "c"][:len(sizes)], [None] * len(sizes)))


def test_sampler_hits_its_rates_within_four_sigma():
    rates = [9, 3, 1]
    p = np.array(rates, float) / sum(rates)
    for block in (1, 4):
        s = MixingSampler([50, 30, 20], rates, n=20000, seed=3, block=block)
        draws = len(s) // block  # members are drawn per block
        members = np.array([m for m, _, _ in s.order()[::block]])
        counts = np.bincount(members, minlength=3)
        tol = 4 * np.sqrt(draws * p * (1 - p))
        assert np.all(np.abs(counts - draws * p) <= tol), (block, counts, draws * p, tol)
    # a member's draws go through permutations of its samples: each sample taken as often as any other (+-1)
    keys = MixingSampler([50, 30, 20], rates, n=20000, seed=3).order()
    for m, n_m in enumerate((50, 30, 20)):
        per = np.bincount([i for mm, i, _ in keys if mm == m], minlength=n_m)
        assert per.max() - per.min() <= 1, m


def test_sampler_is_a_pure_function_of_seed_and_epoch():
    a, b = MixingSampler([12, 7, 5], [9, 3, 1], 64, seed=1, block=4), MixingSampler([12, 7, 5], [9, 3, 1], 64, seed=1, block=4)
    for epoch in (0, 5):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b) == a.order()
    a.set_epoch(0)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(MixingSampler([12, 7, 5], [9, 3, 1], 64, seed=2, block=4)) != first
    a.set_epoch(0)
    assert list(a) == first and all(e == 0 for _, _, e in first)
    assert len(MixingSampler([12, 7, 5], [1, 1, 1], 63, seed=0, block=4)) == 64  # whole blocks


def test_resume_mid_epoch_gives_the_remaining_order():
    full = _loader(MixingSampler([12, 7, 5], [9, 3, 1], 48, seed=4, block=4), 4)
    full.sampler.set_epoch(2)
    want = [(b["dataset"], b["id"].tolist()) for b in full]
    part = _loader(MixingSampler([12, 7, 5], [9, 3, 1], 48, seed=4, block=4), 4)
    part.sampler.set_epoch(2)
    it = iter(part)
    seen = [(b["dataset"], b["id"].tolist()) for b in (next(it), next(it), next(it))]
    state = part.state_dict()
    again = _loader(MixingSampler([12, 7, 5], [9, 3, 1], 48, seed=4, block=4), 4)
    again.sampler.set_epoch(2)
    again.load_state_dict(state)
    rest = [(b["dataset"], b["id"].tolist()) for b in again]
    assert state["batches"] == 3 and seen + rest == want
    # every batch is one member's, named by `dataset`, with that member's keys
    for name, ids in want:
        assert {i // 1000 for i in ids} == {"abc".index(name)}


def test_two_ranks_split_the_one_process_order():
    """Lightning's DDP wrapper (shuffle=True) around the sampler, in a ResumableLoader as Lightning re-creates it:
    each step the two rank batches of 4 hold one process's batch of 8, and both ranks see the same member."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    for epoch in (0, 3):
        single = _loader(MixingSampler([12, 7, 5], [9, 3, 1], 80, seed=5, block=8), 8)
        single.sampler.set_epoch(epoch)
        want = [(b["dataset"], sorted(b["id"].tolist())) for b in single]
        ranks = []
        for r in (0, 1):
            wrapped = DistributedSamplerWrapper(MixingSampler([12, 7, 5], [9, 3, 1], 80, seed=5, block=8),
                                                num_replicas=2, rank=r, shuffle=True, seed=0)
            loader = _loader(wrapped, 4)
            loader.sampler.set_epoch(epoch)
            ranks.append([(b["dataset"], b["id"].tolist()) for b in loader])
        got = [(a[0], sorted(a[1] + b[1])) for a, b in zip(*ranks, strict=True)]
        assert all(a[0] == b[0] for a, b in zip(*ranks, strict=True)), "one member per step on every rank"
        assert got == want, f"epoch {epoch}"
    assert len({name for name, _ in want}) > 1, "the members are mixed"


def test_member_collate_refuses_a_mixed_batch():
    with pytest.raises(RuntimeError, match=r"^mixed: a batch holds samples of members \['a', 'b'\]"):
        MemberCollate(["a", "b"], [None, None])([(0, {"x": torch.zeros(1)}), (1, {"x": torch.zeros(1)})])


@pytest.mark.parametrize("kw,message", [
    ({"rates": [9, 3, 1]}, "mixed: data.rates has 3 entries but data.datasets has 2; give one rate per dataset"),
    ({"rates": [9, 0]}, "mixed: data.rates[1] must be a positive number, got 0"),
    ({"rates": "9,-1"}, "mixed: data.rates[1] must be a positive number, got -1.0"),
    ({"rates": [1, "x"]}, "mixed: data.rates[1] must be a positive number, got 'x'"),
])
def test_rate_errors_name_the_key(kw, message):
    with pytest.raises(DataError) as e:
        MixedDataModule(datasets=[{"name": "damon", "root": "nowhere"}, {"name": "piad", "root": "nowhere"}], **kw)
    assert str(e.value) == message


def test_member_errors_name_the_key():
    with pytest.raises(DataError) as e:
        MixedDataModule(datasets=[{"name": "damon", "root": "a"}, {"root": "b"}])
    assert str(e.value) == "mixed: data.datasets[1] must be a datamodule sub-recipe with a 'name' key, got {'root': 'b'}"
    with pytest.raises(DataError) as e:
        MixedDataModule(datasets=[{"name": "damon", "root": "a"}, {"name": "damon", "root": "b"}])
    assert str(e.value) == ("mixed: data.datasets[1] is labelled 'damon' like data.datasets[0]; give one of them "
                            "another 'label'")
    with pytest.raises(DataError) as e:
        MixedDataModule(datasets=[])
    assert str(e.value) == "mixed: data.datasets must be a non-empty list of datamodule sub-recipes, got []"
    with pytest.raises(DataError) as e:  # a member's own error keeps its type and says which member it is
        MixedDataModule(datasets=[{"name": "damon", "root": "a", "batch_size": 0}])
    assert str(e.value) == "damon: batch_size must be positive, got 0"
    assert e.value.__notes__ == ["while building data.datasets[0] ('damon') of the mixed datamodule"]


@pytest.fixture
def mixed(synth, synth_piad):
    def build(**kw):
        return MixedDataModule(datasets=[
            {"name": "damon", "root": str(synth[1]), "image_size": 32, "seg_size": 16, "batch_size": 3},
            {"name": "piad", "root": str(synth_piad), "image_size": 32, "batch_size": 5, "load_images": False},
        ], **{"rates": [3, 1], "batch_size": 4, "seed": 1, **kw})
    return build


def test_mixed_datamodule_on_damon_and_piad(mixed):
    dm = mixed()
    dm.setup("fit")
    sizes = [len(m._loader_dataset(m.train_set)) for m in dm.members]
    loader = dm.train_dataloader()
    assert len(loader.sampler) == math.ceil(sum(sizes) / 4) * 4  # default: the members' training sizes
    seen = set()
    for batch in loader:
        seen.add(batch["dataset"])
        assert ("contact_label" in batch) == (batch["dataset"] == "damon")
        assert ("points" in batch) == (batch["dataset"] == "piad")
        assert len(next(v for v in batch.values() if isinstance(v, torch.Tensor))) == 4
    assert seen == {"damon", "piad"}
    # validation: member after member, each member's batch size, whole batches
    val = [(b["dataset"], len(b["index"]) if "index" in b else len(b["imgname"])) for b in dm.val_dataloader()]
    names = [n for n, _ in val]
    assert names == sorted(names, key=["damon", "piad"].index) and set(names) == {"damon", "piad"}
    assert max(n for d, n in val if d == "damon") <= 3 and max(n for d, n in val if d == "piad") <= 5
    assert sum(n for d, n in val if d == "piad") == len(dm.members[1].val_set)
    report = dm.data_report()
    assert report and all(k.startswith(("data/damon/", "data/piad/")) for k in report)
    assert report["data/damon/train/samples"] == float(len(dm.members[0].train_set))
    assert dm.name_keys == ()  # PIAD batches carry no imgname


def test_empty_member_error_names_the_key(mixed, monkeypatch):
    dm = mixed(samples_per_epoch=8)
    monkeypatch.setattr(dm.members[1], "_loader_dataset", lambda ds: [])
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    assert str(e.value) == ("mixed: data.datasets[1] ('piad') has no training sample; a mixed member needs at least "
                            "one (or drop it from data.datasets and data.rates)")


def test_rates_are_normalised_and_take_the_official_string():
    members = [{"name": "damon", "root": "a"}, {"name": "piad", "root": "b"}, {"name": "lemon", "root": "c"}]
    dm = MixedDataModule(datasets=members, rates="9,3,1", root="r")
    assert dm.rates == [9.0, 3.0, 1.0] and dm.labels == ["damon", "piad", "lemon"]
    assert MixingSampler([4, 4, 4], dm.rates, 8).probs.tolist() == [9 / 13, 3 / 13, 1 / 13]
    dm = MixedDataModule(datasets=[{"name": "damon"}, {"name": "damon", "label": "sem", "contact_mode": "semantic"}],
                         root="/data/mix")
    assert [m.hparams.root for m in dm.members] == ["/data/mix/damon", "/data/mix/sem"] and dm.rates == [1.0, 1.0]
