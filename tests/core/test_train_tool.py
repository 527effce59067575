"""tools/train.py end to end on the toy system: run dir, metrics.json, exact resume, DDP on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import train as train_tool  # noqa: E402

from zoo.core.run import RUN_DIR_ENV  # noqa: E402

EXTRA = os.environ.get("TOY_EXTRA", "").split()


def _train(monkeypatch, *args):
    monkeypatch.setenv(RUN_DIR_ENV, "")  # each call makes its own run dir; restored afterwards
    assert train_tool.main(["recipe=toy/base", *args, *EXTRA]) == 0
    return Path(os.environ[RUN_DIR_ENV])


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_fit_writes_run_dir_and_metrics(toy_env, monkeypatch):
    run = _train(monkeypatch, "logger=csv", "run.name=a")
    assert run == (toy_env.parent / "runs" / "toy" / "base" / "a").resolve()
    assert (run / "resolved.yaml").read_text().startswith("seed: 0")
    m = json.loads((run / "metrics.json").read_text())
    assert set(m) == {"test/acc", "test/loss"} and m["test/acc"] > 0.8
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "csv" / "metrics.csv").is_file()
    ck = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["zoo"]["name"] == "toy_linear" and ck["zoo"]["recipe_name"] == "toy/base"
    assert not list(run.rglob(".*.tmp*")), "no temporary files left behind"


def test_resume_equals_uninterrupted(toy_env, monkeypatch):
    full = _train(monkeypatch, "trainer.max_epochs=4", "run.name=full")
    part = _train(monkeypatch, "trainer.max_epochs=2", "run.name=part")
    w_part = _weights(part)
    resumed = _train(monkeypatch, "trainer.max_epochs=4", f"resume={part}")
    assert resumed == part.resolve()
    a, b = _weights(full), _weights(resumed)
    assert not torch.equal(w_part["net.weight"], b["net.weight"]), "resume must continue training"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between resumed and uninterrupted runs"
    ck = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["epoch"] == 3 and ck["global_step"] == 4 * 8


def test_resume_last_and_wandb_id_kept(toy_env, monkeypatch):
    first = _train(monkeypatch, "logger=wandb", "trainer.max_epochs=1", "run.name=w")
    wid = (first / "wandb_id.txt").read_text().strip()
    assert len(wid) >= 8 and list((first / "wandb").glob(f"offline-run-*-{wid}"))
    again = _train(monkeypatch, "logger=wandb", "trainer.max_epochs=2", "resume=last")
    assert again == first.resolve()
    assert (again / "wandb_id.txt").read_text().strip() == wid
    ck = torch.load(again / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["zoo"]["wandb_id"] == wid and ck["epoch"] == 1


def test_each_training_in_one_process_gets_its_own_wandb_run(toy_env, monkeypatch):
    import wandb

    a = _train(monkeypatch, "logger=wandb", "trainer.max_epochs=1", "run.name=wa")
    assert wandb.run is None, "the W&B run must be finished when train.main returns"
    b = _train(monkeypatch, "logger=wandb", "trainer.max_epochs=1", "run.name=wb")
    ida, idb = ((r / "wandb_id.txt").read_text().strip() for r in (a, b))
    assert ida != idb
    assert list((b / "wandb").glob(f"offline-run-*-{idb}")), "second training logged into the first one's run"


def test_resume_missing_is_clear(toy_env, monkeypatch, capsys):
    monkeypatch.setenv(RUN_DIR_ENV, "")
    with pytest.raises(SystemExit):
        train_tool.main(["recipe=toy/base", "resume=last"])
    assert "resume=last: no run of recipe 'toy/base' with checkpoints/last.ckpt" in capsys.readouterr().err


def test_print_shows_resolved_recipe(toy_env, capsys):
    assert train_tool.main(["recipe=toy/child", "--print", "system.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.5" in out and "max_epochs: 3" in out


def test_ddp_two_processes_on_cpu(toy_env):
    env = {**os.environ, RUN_DIR_ENV: "", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "recipe=toy/base", "trainer.devices=2",
           "trainer.strategy=ddp", "run.name=ddp", "logger=csv", *EXTRA]
    out = subprocess.run(cmd, cwd=toy_env.parent, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((toy_env.parent / "runs" / "toy" / "base").iterdir())
    assert [r.name for r in runs] == ["ddp"], "both ranks must share one run directory"
    m = json.loads((runs[0] / "metrics.json").read_text())
    assert m["test/acc"] > 0.8
    ck = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # 128 samples, per-rank batch 16 over 2 ranks -> 4 steps per epoch, 2 epochs
    assert ck["global_step"] == 8
