#!/usr/bin/env python
"""Benchmarks (`make bench`): prints a table and writes runs/bench/latest.json, a list of
{name, value, unit, target}. Ratios are measured in one run on this machine.

Figures: damon DataModule samples/s; the zoo's DECO training step (Lightning Trainer) vs. the
same modules in a plain PyTorch loop (target ratio <= 1.10); contact metric update cost per
sample.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import _cli  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench" / "latest.json"


def _data(tmp: Path) -> Path:
    from zoo.body.synthetic import write_synthetic_body_models
    from zoo.data.synthetic_damon import cli as make_damon

    body = write_synthetic_body_models(tmp / "body_models")
    os.environ["ZOO_BODY_MODELS"] = str(body)
    root = tmp / "damon"
    if not (root / "hot_dca_test.npz").is_file():
        make_damon(["--n", "96", "--out", str(root), "--seed", "0", "--model-dir", str(body)])
    return root


def bench_datamodule(root: Path) -> list[dict]:
    """Samples/s through the damon DataModule (decode + DECO preprocessing), cold cache."""
    from zoo.core import registry

    dm = registry.build("datamodule", {"name": "damon", "root": str(root), "batch_size": 16, "cache": False})
    dm.setup("fit")
    n = 0
    t = time.perf_counter()
    for batch in dm.train_dataloader():
        n += batch["image"].shape[0]
    dt = time.perf_counter() - t
    return [{"name": "damon_datamodule_samples_per_s", "value": n / dt, "unit": "samples/s", "target": None}]


def bench_train_step(root: Path, steps: int = 20) -> list[dict]:
    """Seconds per DECO (tiny) training step: Lightning Trainer vs. a plain PyTorch loop."""
    import lightning as L
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry

    rec = R.load("deco/synthetic", [f"data.root={root}"])
    dm = registry.build("datamodule", {**rec["data"], "batch_size": 8})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batches = [batch] * steps

    def plain() -> float:
        L.seed_everything(0, verbose=False)
        system = registry.build("system", rec["system"])
        opt = system.configure_optimizers()
        opt = opt["optimizer"] if isinstance(opt, dict) else (opt[0][0] if isinstance(opt, tuple) else opt)
        system.train()
        for i, b in enumerate(batches[:3]):  # warm-up
            loss = system.training_step(b, i)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        t = time.perf_counter()
        for i, b in enumerate(batches):
            loss = system.training_step(b, i)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - t) / steps

    class Timer(L.Callback):
        def __init__(self):
            self.t = None

        def on_train_batch_start(self, trainer, *a):
            if trainer.global_step == 3:
                self.t = time.perf_counter()

        def on_train_end(self, trainer, *a):
            self.dt = (time.perf_counter() - self.t) / steps

    def zoo() -> float:
        L.seed_everything(0, verbose=False)
        system = registry.build("system", rec["system"])
        timer = Timer()
        tr = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 3, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                       num_sanity_val_steps=0, limit_val_batches=0)
        tr.fit(system, train_dataloaders=torch.utils.data.DataLoader(batches + batches[:3], batch_size=None))
        return timer.dt

    p = min(plain() for _ in range(2))
    z = min(zoo() for _ in range(2))
    return [
        {"name": "deco_train_step_plain_s", "value": p, "unit": "s/step", "target": None},
        {"name": "deco_train_step_zoo_s", "value": z, "unit": "s/step", "target": None},
        {"name": "deco_train_step_zoo_vs_plain_ratio", "value": z / p, "unit": "ratio", "target": "<= 1.10"},
    ]


def bench_metrics(n: int = 512) -> list[dict]:
    """Microseconds per sample for ContactPRF and GeodesicError updates (V = 6890)."""
    import torch

    from zoo.metrics.contact import ContactPRF, GeodesicError

    g = torch.Generator().manual_seed(0)
    pred = torch.rand(n, 6890, generator=g)
    gt = (torch.rand(n, 6890, generator=g) > 0.97).float()
    out = []
    m = ContactPRF()
    t = time.perf_counter()
    for i in range(0, n, 32):
        m.update(pred[i:i + 32], gt[i:i + 32])
    m.compute()
    out.append({"name": "contact_prf_update_us_per_sample", "value": (time.perf_counter() - t) / n * 1e6,
                "unit": "us/sample", "target": None})
    geo = torch.rand(6890, 6890, generator=g)
    geo = (geo + geo.T) / 2  # a valid distance matrix: symmetric, zero diagonal
    geo.fill_diagonal_(0)
    m = GeodesicError(geo)
    pred = (torch.rand(64, 6890, generator=g) > 0.97).float()
    t = time.perf_counter()
    for i in range(0, 64, 16):
        m.update(pred[i:i + 16], gt[i:i + 16])
    m.compute()
    out.append({"name": "geodesic_error_update_us_per_sample", "value": (time.perf_counter() - t) / 64 * 1e6,
                "unit": "us/sample", "target": None})
    return out


def main() -> int:
    """Run every benchmark, print the table, write runs/bench/latest.json."""
    import tempfile

    torch_threads = os.environ.get("BENCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    cache = ROOT / "runs" / "bench" / "data"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory():
        root = _data(cache)
        rows = bench_datamodule(root) + bench_train_step(root) + bench_metrics()
    from zoo.core.run import write_text_atomic

    write_text_atomic(OUT, json.dumps(rows, indent=2) + "\n")
    print(f"{'name':45s} {'value':>12s} {'unit':>10s}  target")
    for r in rows:
        print(f"{r['name']:45s} {r['value']:12.4g} {r['unit']:>10s}  {r['target'] or ''}")
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
