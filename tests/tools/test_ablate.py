"""tools/ablate.py on the toy system: a 2 x 2 grid in this process with its tables checked against the runs'
metrics.json files, a 1 x 2 grid through submitit's LocalExecutor, bad input (exit 2 before anything runs)
and a failing cell (recorded, the others still run, exit 1)."""
import csv
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOY_DIR = ROOT / "tests" / "core"  # toy_components.py
sys.path.insert(0, str(ROOT / "tools"))

import ablate  # noqa: E402

REGISTRY = """
components:
  system:
    toy_linear: {import: "toy_components:ToyLinear", summary: "toy logistic regression"}
  datamodule:
    toy_blobs: {import: "toy_components:ToyBlobs", summary: "toy blobs"}
"""
TOY = """\
seed: 0
system: {name: toy_linear, in_dim: 8, lr: 0.1}
data: {name: toy_blobs, n: 64, batch_size: 16}
trainer: {accelerator: cpu, devices: 1, max_epochs: 1, log_every_n_steps: 1, num_sanity_val_steps: 0}
logger: {name: csv, tags: [mine]}
checkpoint: {monitor: val/f1, mode: max}
export: false
run: {progress: none, threads: 1}
"""


@pytest.fixture
def toy(zoo_files, monkeypatch):
    """The toy recipe toy/abl in a temporary registry; child processes (submitit) find the toy components too."""
    zoo_files(REGISTRY, {"toy/abl": TOY}, TOY_DIR)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TOY_DIR), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("ZOO_THREADS", "1")


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_grid_in_process_tables_match_the_runs(toy, tmp_path, capsys):
    out = tmp_path / "abl"
    code = ablate.main(["recipe=toy/abl", "--grid", "system.lr=0.1,0.5", "--seeds", "0,1", "--in-process",
                        "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    runs = _csv(out / "runs.csv")
    assert [(r["system.lr"], r["seed"], r["status"]) for r in runs] == \
        [("0.1", "0", "ok"), ("0.1", "1", "ok"), ("0.5", "0", "ok"), ("0.5", "1", "ok")]
    assert list(runs[0]) == ["cell", "system.lr", "seed", "status", "exit_code", "run_dir", "test/acc", "test/loss"]
    # every run has its own directory, named after its cell, with the seed and grid value it ran with
    raw = {}
    for r in runs:
        run_dir = Path(r["run_dir"])
        assert run_dir == out / "runs" / "toy" / "abl" / f"system.lr={r['system.lr']},seed={r['seed']}"
        resolved = (run_dir / "resolved.yaml").read_text()
        assert f"seed: {r['seed']}\n" in resolved and f"lr: {r['system.lr']}\n" in resolved
        assert "- ablate:abl" in resolved and "- mine" in resolved  # W&B tags: the recipe's and the ablation's
        raw[(r["system.lr"], int(r["seed"]))] = json.loads((run_dir / "metrics.json").read_text())
        assert float(r["test/acc"]) == raw[(r["system.lr"], int(r["seed"]))]["test/acc"]
    # the per-cell table: mean and sample std (ddof=1) over the two seeds, computed here from metrics.json
    table = _csv(out / "ablation.csv")
    assert list(table[0]) == ["system.lr", "n_seeds", "failed", "pending", "test/acc mean", "test/acc std",
                              "test/loss mean", "test/loss std"]
    assert [(t["system.lr"], t["n_seeds"], t["failed"]) for t in table] == [("0.1", "2", "0"), ("0.5", "2", "0")]
    md = (out / "ablation.md").read_text()
    assert "| system.lr | test/acc | test/loss | n_seeds | failed |" in md
    for t in table:
        for m in ("test/acc", "test/loss"):
            xs = [raw[(t["system.lr"], s)][m] for s in (0, 1)]
            mean, std = (xs[0] + xs[1]) / 2, abs(xs[0] - xs[1]) / 2 ** 0.5
            assert float(t[f"{m} mean"]) == pytest.approx(mean, abs=1e-12)
            assert float(t[f"{m} std"]) == pytest.approx(std, abs=1e-12)
            assert f"{mean:.4f} ± {std:.4f}" in md.split(f"| {t['system.lr']} |")[1].splitlines()[0]
    assert md.split("\n", 2)[2] in printed  # the table is printed
    # --collect on the folder rebuilds the same tables; --metrics picks the columns
    assert ablate.main(["--collect", str(out), "--metrics", "test/acc"]) == 0
    assert list(_csv(out / "ablation.csv")[0])[-2:] == ["test/acc mean", "test/acc std"]


def test_submitit_local_executor(toy, tmp_path, capsys):
    """One job through submitit's LocalExecutor (a fresh Python process, ~10 s of imports; one job keeps the
    test short). A single seed: the table shows the value, without a standard deviation."""
    pytest.importorskip("submitit")
    out = tmp_path / "sub"
    code = ablate.main(["recipe=toy/abl", "--grid", "system.optimizer=adam", "--seeds", "3",
                        "--executor", "submitit-local", "--slurm", "time=5", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    runs = _csv(out / "runs.csv")
    assert [(r["system.optimizer"], r["seed"], r["status"]) for r in runs] == [("adam", "3", "ok")]
    manifest = json.loads((out / "ablation.json").read_text())
    job = manifest["cells"][0]["job_id"]
    assert (out / "submitit" / f"{job}_0_result.pkl").is_file()  # it ran as a submitit job
    m = json.loads((Path(runs[0]["run_dir"]) / "metrics.json").read_text())
    assert float(runs[0]["test/acc"]) == m["test/acc"] and "seed: 3\n" in (Path(runs[0]["run_dir"]) / "resolved.yaml").read_text()
    row = _csv(out / "ablation.csv")[0]
    assert (row["n_seeds"], row["test/acc std"]) == ("1", "") and float(row["test/acc mean"]) == m["test/acc"]
    assert f"| adam | {m['test/acc']:.4f} | {m['test/loss']:.4f} | 1 | 0 |" in (out / "ablation.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["recipe=toy/nope"], "recipe 'toy/nope' not found"),
    (["recipe=toy/abl", "--grid", "system.lrr=0.1,0.2"], "--grid system.lrr: unknown key 'system.lrr'"),
    (["recipe=toy/abl", "--grid", "system.lr"], "--grid 'system.lr' is not of the form KEY=value1,value2"),
    (["recipe=toy/abl", "--grid", "system.lr="], "--grid system.lr: empty value in ''"),
    (["recipe=toy/abl", "--grid", "system.lr=0.1,,0.2"], "--grid system.lr: empty value in '0.1,,0.2'"),
    (["recipe=toy/abl", "--seeds", "0,x"], "--seeds '0,x': 'x' is not an integer"),
    (["recipe=toy/abl", "--grid", "seed=1,2"], "--grid seed: the ablation sets seed itself (use --seeds)"),
    (["recipe=toy/abl", "--grid", "system.lr=0.1,fast"], "--grid system.lr: "),
    (["recipe=toy/abl", "--executor", "pbs"], "--executor pbs: must be one of local, slurm, submitit-local"),
])
def test_bad_input_exits_2_before_anything_runs(toy, tmp_path, capsys, args, message):
    assert ablate.main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_failed_cell_is_recorded_and_the_others_run(toy, tmp_path, capsys):
    out = tmp_path / "fail"
    # in_dim=4 passes the recipe checks but cannot multiply the data's 8 features: that run fails while training
    code = ablate.main(["recipe=toy/abl", "--grid", "system.in_dim=4,8", "--in-process", "--out", str(out)])
    assert code == 1
    runs = {r["system.in_dim"]: r for r in _csv(out / "runs.csv")}
    assert runs["4"]["status"] == "failed" and runs["4"]["exit_code"] == "1" and runs["4"]["test/acc"] == ""
    assert runs["8"]["status"] == "ok" and float(runs["8"]["test/acc"]) >= 0
    result = json.loads((out / "cells" / "system.in_dim=4,seed=0.json").read_text())
    assert result["exit_code"] == 1 and result["error"].startswith("RuntimeError")
    table = {t["system.in_dim"]: t for t in _csv(out / "ablation.csv")}
    assert (table["4"]["n_seeds"], table["4"]["failed"], table["4"]["test/acc mean"]) == ("0", "1", "")
    md = (out / "ablation.md").read_text()
    assert "| 4 | — | — | 0 | 1 |" in md and "1 run(s) failed: system.in_dim=4,seed=0 (exit 1)" in md


def test_grid_values_and_names():
    assert ablate.split_values("[4,8],[16],'a,b'") == ["[4,8]", "[16]", "'a,b'"]
    assert ablate.safe_name("system.hidden=[4,8],seed=0") == "system.hidden=_4,8_,seed=0"
    cells = ablate.make_cells({"a": ["x/y", "x_y"]}, [0])
    assert [c.name for c in cells] == ["a=x_y,seed=0", "a=x_y,seed=0-1"]  # unique after sanitising
    assert ablate._minutes("1-02:30:00") == 1590 and ablate._minutes("90") == 90 and ablate._gigabytes("64G") == 64
    assert ablate.parse_slurm(["gpus_per_node=4", "partition=gpu", "account=x"]) == {
        "gpus_per_node": 4, "tasks_per_node": 4, "slurm_partition": "gpu", "slurm_account": "x"}
