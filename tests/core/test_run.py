"""The run loop (zoo.core.run) on the toy system: run dir, metrics.json, exact resume, W&B, the command
line, test / predict modes, progress lines, threads, DDP on CPU."""
import json
import os
import re
from pathlib import Path

import pytest
import torch

from zoo.core import recipe as R
from zoo.core import run
from zoo.core.callbacks import format_duration
from zoo.core.run import RUN_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
EXTRA = os.environ.get("TOY_EXTRA", "").split()


def _train(*args) -> Path:
    res = run.train(R.load("toy/base", [*args, *EXTRA]))
    assert res.exit_code == 0
    assert RUN_DIR_ENV not in os.environ, "the run directory must not leak into the next training"
    return res.run_dir


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_fit_writes_run_dir_and_metrics(toy_env):
    res = run.train(R.load("toy/base", ["logger=csv", "run.name=a"]))
    run_dir = res.run_dir
    assert run_dir == (toy_env.parent / "runs" / "toy" / "base" / "a").resolve()
    assert (run_dir / "resolved.yaml").read_text().startswith("seed: 0")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m) == {"test/acc", "test/loss"} and m["test/acc"] > 0.8 and m == res.metrics
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert res.export_dir == run_dir / "export" and (res.export_dir / "model.safetensors").is_file()
    ck = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["zoo"]["name"] == "toy_linear" and ck["zoo"]["recipe_name"] == "toy/base"
    assert not list(run_dir.rglob(".*.tmp*")), "no temporary files left behind"


def test_two_trainings_in_one_process_get_their_own_run_dirs(toy_env):
    a = _train("logger=none", "trainer.max_epochs=1", "run.name=same")
    b = _train("logger=none", "trainer.max_epochs=1", "run.name=same")
    assert a != b and b.name == "same-1" and (a / "metrics.json").is_file() and (b / "metrics.json").is_file()


def test_resume_equals_uninterrupted(toy_env):
    full = _train("trainer.max_epochs=4", "run.name=full")
    part = _train("trainer.max_epochs=2", "run.name=part")
    w_part = _weights(part)
    resumed = _train("trainer.max_epochs=4", f"resume={part}")
    assert resumed == part.resolve()
    a, b = _weights(full), _weights(resumed)
    assert not torch.equal(w_part["net.weight"], b["net.weight"]), "resume must continue training"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between resumed and uninterrupted runs"
    ck = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 3 and ck["global_step"] == 4 * 8


def test_resume_last_and_wandb_id_kept(toy_env):
    first = _train("logger=wandb", "trainer.max_epochs=1", "run.name=w")
    wid = (first / "wandb_id.txt").read_text().strip()
    assert len(wid) >= 8 and list((first / "wandb").glob(f"offline-run-*-{wid}"))
    again = _train("logger=wandb", "trainer.max_epochs=2", "resume=last")
    assert again == first.resolve()
    assert (again / "wandb_id.txt").read_text().strip() == wid
    ck = torch.load(again / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["zoo"]["wandb_id"] == wid and ck["epoch"] == 1


def test_each_training_in_one_process_gets_its_own_wandb_run(toy_env):
    import wandb

    a = _train("logger=wandb", "trainer.max_epochs=1", "run.name=wa")
    assert wandb.run is None, "the W&B run must be finished when train returns"
    b = _train("logger=wandb", "trainer.max_epochs=1", "run.name=wb")
    ida, idb = ((r / "wandb_id.txt").read_text().strip() for r in (a, b))
    assert ida != idb
    assert list((b / "wandb").glob(f"offline-run-*-{idb}")), "second training logged into the first one's run"


def test_cli_resume_missing_is_clear(toy_env, capsys):
    with pytest.raises(SystemExit) as e:
        run.cli("train", ["recipe=toy/base", "resume=last"])
    assert e.value.code == 2
    assert "error: resume=last: no run of recipe 'toy/base' with checkpoints/last.ckpt" in capsys.readouterr().err


def test_cli_print_shows_resolved_recipe(toy_env, capsys):
    assert run.cli("train", ["recipe=toy/child", "--print", "system.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.5" in out and "max_epochs: 3" in out
    assert not (toy_env.parent / "runs").exists(), "--print must not start a run"


def test_cli_unknown_flag_stops_before_training(toy_env, capsys):
    with pytest.raises(SystemExit) as e:
        run.cli("train", ["recipe=toy/base", "--prnt"])
    assert e.value.code == 2
    assert "error: unknown flag(s) --prnt (flags: --print, --help)" in capsys.readouterr().err
    assert not (toy_env.parent / "runs").exists()


def test_eval_test_and_predict_modes_reuse_the_export(toy_env):
    res = run.train(R.load("toy/base", ["logger=none", "run.name=e"]))
    ev = run.evaluate(R.load("toy/base", [f"ckpt={res.export_dir}"]))
    assert ev.metrics == res.metrics, "evaluating the export must reproduce the run's test metrics"
    assert json.loads((res.export_dir / "eval_metrics.json").read_text()) == res.metrics
    mode_test = run.execute(R.load("toy/base", ["run.mode=test", f"ckpt={res.export_dir}"]))
    assert mode_test.metrics == res.metrics
    pred = run.execute(R.load("toy/base", ["run.mode=predict", f"ckpt={res.export_dir}", "run.name=p"]))
    outs = torch.load(pred.predictions, weights_only=True)
    assert isinstance(outs, list) and len(outs) == 2 and outs[0].shape == (64,)  # 128 samples, batches of 64
    assert float(outs[0].min()) >= 0.0 and float(outs[0].max()) <= 1.0


def test_epoch_lines_when_output_is_not_a_terminal(toy_env, capsys):
    _train("logger=none", "run.progress=line", "trainer.max_epochs=3", "test=false", "export=false")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 3, lines
    pat = r"epoch (\d)/3 \| train/loss \d+\.\d{4} \| val/f1 -?\d+\.\d{4} \| \d+\.\d s/epoch \| ETA \d+s"
    assert all(re.fullmatch(pat, ln) for ln in lines), lines
    assert [re.fullmatch(pat, ln).group(1) for ln in lines] == ["1", "2", "3"]
    assert lines[-1].endswith("ETA 0s")


def test_format_duration_hand_computed():
    assert [format_duration(s) for s in (0, 59.4, 75.2, 3599, 3725)] == ["0s", "59s", "1m15s", "59m59s", "1h02m"]


def test_threads_from_recipe_and_environment(toy_env, monkeypatch):
    n = torch.get_num_threads()
    try:
        assert run.apply_threads(R.load("toy/base", ["run.threads=1"])) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("ZOO_THREADS", "2")
        assert run.apply_threads(R.load("toy/base", ["run.threads=1"])) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("ZOO_THREADS", "two")
        with pytest.raises(R.RecipeError, match=r"ZOO_THREADS must be a positive integer or auto, got 'two'"):
            run.apply_threads(R.load("toy/base"))
        monkeypatch.delenv("ZOO_THREADS")
        with pytest.raises(R.RecipeError, match=r"run.threads must be a positive integer or auto, got 0"):
            run.apply_threads(R.load("toy/base", ["run.threads=0"]))
        assert run.apply_threads(R.load("toy/base")) is None
    finally:
        torch.set_num_threads(n)


def test_auto_threads_take_the_idle_cores(toy_env, capsys):
    assert [run.auto_threads(2, b) for b in (0.0, 0.4, 0.6, 1.0, 1.7, 2.0)] == [2, 2, 1, 1, 1, 1]
    assert run.auto_threads(16, 3.2) == 13 and run.auto_threads(4, 9.0) == 1
    busy = run.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
    n = torch.get_num_threads()
    try:
        got = run.apply_threads(R.load("toy/base", ["run.threads=auto"]))
        assert 1 <= got <= (os.cpu_count() or 1) and torch.get_num_threads() == got
        assert f"[run] {got} torch thread(s) (run.threads=auto" in capsys.readouterr().out
    finally:
        torch.set_num_threads(n)
