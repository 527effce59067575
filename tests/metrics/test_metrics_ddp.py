"""Contact and affordance metrics under real DDP: two gloo processes, each updating its own shard
(uneven sizes, an all-negative affordance sample on one rank), must compute exactly what one
process computes on all the data. The DAMON tables too, whose rows are gathered (``cat``): with an
image's entries split between the ranks, and with one rank that saw no entry at all."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zoo.metrics.affordance import AffordanceMetrics
from zoo.metrics.contact import ContactPRF, DamonBinaryContact, DamonSemanticContact


def _data():
    g = torch.Generator().manual_seed(7)
    pred_c = torch.rand(9, 50, generator=g)
    gt_c = (torch.rand(9, 50, generator=g) > 0.7).float()
    gt_c[4] = 0.0  # a sample with no contact
    pred_a = torch.rand(9, 64, generator=g)
    gt_a = torch.rand(9, 64, generator=g) ** 3
    gt_a[2] = 0.0  # an object with no affordance (AUC undefined for it)
    return pred_c, gt_c, pred_a, gt_a


SHARDS = [slice(0, 3), slice(3, 9)]  # uneven on purpose
IMAGES = ["i0", "i1", "i1", "i1", "i2", "i3", "i3", "i4", "i5"]  # i1's entries on both ranks
OBJECTS = ["chair", "cup", "bed", "chair", "bench", "cup", "bottle", "skis", "tie"]
DAMON_SHARDS = {"split": SHARDS, "idle": [slice(0, 0), slice(0, 9)]}  # rank 0 of "idle" never updates


def _damon(sl: slice) -> dict[str, float]:
    pred_c, gt_c, _, _ = _data()
    b, s = DamonBinaryContact(), DamonSemanticContact()
    if sl.stop > sl.start:
        b.update(pred_c[sl], gt_c[sl], imgname=IMAGES[sl])
        s.update(pred_c[sl], gt_c[sl], object_name=OBJECTS[sl])
    return {k: float(v) for m in (b, s) for k, v in m.compute().items()}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pred_c, gt_c, pred_a, gt_a = _data()
        s = SHARDS[rank]
        c, a = ContactPRF(0.5), AffordanceMetrics()
        c.update(pred_c[s], gt_c[s])
        a.update(pred_a[s], gt_a[s])
        res = {f"contact/{k}": float(v) for k, v in c.compute().items()}
        res.update({f"affordance/{k}": float(v) for k, v in a.compute().items()})
        res.update({f"{case}/{k}": v for case, shards in DAMON_SHARDS.items() for k, v in _damon(shards[rank]).items()})
        torch.save(res, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_process_gloo_equals_single_process(tmp_path):
    out = str(tmp_path / "res")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, start_method="spawn", join=True)
    pred_c, gt_c, pred_a, gt_a = _data()
    c, a = ContactPRF(0.5), AffordanceMetrics()
    c.update(pred_c, gt_c)
    a.update(pred_a, gt_a)
    want = {f"contact/{k}": float(v) for k, v in c.compute().items()}
    want.update({f"affordance/{k}": float(v) for k, v in a.compute().items()})
    want.update({f"{case}/{k}": v for case in DAMON_SHARDS for k, v in _damon(slice(0, 9)).items()})
    assert set(want) >= {"contact/f1", "affordance/auc", "affordance/sim", "affordance/mae", "affordance/aiou",
                         "split/damon_binary/f1", "idle/damon_semantic/object/chair/f1"}
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}")
        assert set(got) == set(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-12), f"rank {rank}: {k} {got[k]} != {want[k]}"
    # the shards alone give other values, so the test sees the synchronisation
    solo = AffordanceMetrics()
    solo.update(pred_a[SHARDS[0]], gt_a[SHARDS[0]])
    assert float(solo.compute()["sim"]) != pytest.approx(want["affordance/sim"], abs=1e-6)
    solo_damon = _damon(SHARDS[1])
    assert solo_damon["damon_binary/images"] != want["split/damon_binary/images"]
