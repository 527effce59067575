"""Contact and affordance metrics under real DDP: two gloo processes, each updating its own shard
(uneven sizes, an all-negative affordance sample on one rank), must compute exactly what one
process computes on all the data."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zoo.metrics.affordance import AffordanceMetrics
from zoo.metrics.contact import ContactPRF


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
    assert set(want) >= {"contact/f1", "affordance/auc", "affordance/sim", "affordance/mae", "affordance/aiou"}
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}")
        assert set(got) == set(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-12), f"rank {rank}: {k} {got[k]} != {want[k]}"
    # the shards alone give other values, so the test sees the synchronisation
    solo = AffordanceMetrics()
    solo.update(pred_a[SHARDS[0]], gt_a[SHARDS[0]])
    assert float(solo.compute()["sim"]) != pytest.approx(want["affordance/sim"], abs=1e-6)
