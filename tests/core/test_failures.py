"""Runs never lose data, stop with the right exit code and use every setting they report (issue 8):
resume checks before anything is written, kept histories, run directories per training, stale
temporaries, SIGTERM / SIGINT / SIGKILL / SLURM pre-emption on real training processes, changed
settings on resume and at evaluation time."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo.core import recipe as R
from zoo.core import run
from zoo.core.atomic import clean_stale_temporaries
from zoo.core.callbacks import read_history
from zoo.core.recipe import RecipeError
from zoo.core.run import RUN_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TRAIN = str(ROOT / "tools" / "train.py")
# 128 samples in batches of 16: 8 steps per epoch
STEPS_PER_EPOCH = 8


def _ckpt(run_dir: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _ckpt(a)["state_dict"], _ckpt(b)["state_dict"]
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs from the uninterrupted run"


def _epochs(run_dir: Path) -> list[int]:
    return [int(r["epoch"]) for r in read_history(run_dir / "history.csv")]


def _proc(toy_env, *args, env=None, wait=True, timeout=240):
    e = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    e.pop(RUN_DIR_ENV, None)
    cmd = [sys.executable, TRAIN, "recipe=toy/base", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=toy_env.parent, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=toy_env.parent, env=e, capture_output=True, text=True, timeout=timeout)


def _runs(toy_env) -> Path:
    return toy_env.parent / "runs" / "toy" / "base"


def _uninterrupted(epochs: int) -> Path:
    """The same training without interruption, in this process (the same numbers as a subprocess)."""
    res = run.train(R.load("toy/base", [f"trainer.max_epochs={epochs}", "run.name=full", "logger=csv"]))
    assert res.exit_code == 0
    return res.run_dir


def _resume_here(run_dir: Path, *args) -> run.RunResult:
    res = run.train(R.load("toy/base", [f"resume={run_dir}", *args]))
    assert res.exit_code == 0
    return res


# --------------------------------------------------------------------------- 1. resume from another recipe


def test_resume_from_another_recipe_is_refused_before_touching_the_run(toy_env, capsys):
    a = run.train(R.load("toy/base", ["logger=csv", "run.name=a"])).run_dir
    before = {p: p.read_bytes() for p in [a / "resolved.yaml", a / "csv" / "metrics.csv", a / "history.csv"]}
    listing = sorted(p.relative_to(a) for p in a.rglob("*"))
    with pytest.raises(SystemExit) as e:
        run.cli("train", ["recipe=toy/other", f"resume={a}/checkpoints/last.ckpt", "logger=csv"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert ("holds system 'toy_linear' trained by recipe 'toy/base', but this run is recipe 'toy/other' "
            "(system 'toy_other'); resume it with recipe=toy/base") in err
    assert "Nothing was written." in err
    assert {p: p.read_bytes() for p in before} == before, "the old run's files must be untouched"
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == listing
    assert RUN_DIR_ENV not in os.environ


# --------------------------------------------------------------------------- 2. history kept on resume


def test_resumed_run_keeps_history_and_first_resolved_yaml(toy_env):
    part = run.train(R.load("toy/base", ["logger=csv", "run.name=p"])).run_dir  # 2 epochs
    first_csv = (part / "csv" / "metrics.csv").read_text()
    first_yaml = (part / "resolved.yaml").read_text()
    res = run.train(R.load("toy/base", ["logger=csv", "trainer.max_epochs=4", f"resume={part}"]))
    assert res.exit_code == 0 and res.run_dir == part
    assert (part / "csv" / "metrics.csv").read_text() == first_csv, "the metrics logged before must survive"
    resumed_csv = (part / "csv" / "resume-1" / "metrics.csv").read_text()
    assert "val/f1" in resumed_csv.splitlines()[0]
    assert (part / "resolved.yaml").read_text() == first_yaml and "max_epochs: 2" in first_yaml
    assert "max_epochs: 4" in (part / "resolved.resume-1.yaml").read_text()
    assert _epochs(part) == [0, 1, 2, 3]
    steps = [int(r["step"]) for r in read_history(part / "history.csv")]
    assert steps == [8, 16, 24, 32]


# --------------------------------------------------------------------------- 3. one run directory per training


def test_an_inherited_run_dir_is_only_used_by_launcher_children(toy_env, monkeypatch, tmp_path):
    stale = tmp_path / "someone-elses-run"
    monkeypatch.setenv(RUN_DIR_ENV, str(stale))
    res = run.train(R.load("toy/base", ["trainer.max_epochs=1", "run.name=x"]))
    assert res.run_dir == (_runs(toy_env) / "x").resolve() and not stale.exists()
    assert RUN_DIR_ENV not in os.environ, "cleared when training returns"
    b = run.train(R.load("toy/base", ["trainer.max_epochs=1", "run.name=x"]))
    assert b.run_dir.name == "x-1" and (res.run_dir / "export" / "model.safetensors").is_file()


# --------------------------------------------------------------------------- 4. stale temporaries


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from zoo.core.atomic import _host

    ck = tmp_path / "r" / "checkpoints"
    ck.mkdir(parents=True)
    dead = ck / f".last.ckpt.zoo{_dead_pid()}@{_host()}.ab12cd34.tmp"
    live = ck / f".last.ckpt.zoo{os.getpid()}@{_host()}.ef56gh78.tmp"
    other_host = ck / f".last.ckpt.zoo{_dead_pid()}@elsewhere-node.ij90kl12.tmp"
    legacy_old, legacy_new = ck / ".best.ckpt.abcd_123.tmp", ck / ".best.ckpt.wxyz_789.tmp"
    keep = ck / "last.ckpt"
    for f in (dead, live, other_host, legacy_old, legacy_new, keep):
        f.write_bytes(b"x")
    os.utime(legacy_old, (time.time() - 2 * 86400,) * 2)
    removed = clean_stale_temporaries(tmp_path, depth=3)
    assert sorted(removed) == sorted([dead, legacy_old])
    assert live.exists() and other_host.exists() and legacy_new.exists() and keep.exists()


# --------------------------------------------------------------------------- 5. signals on real processes


@pytest.mark.parametrize("sig,code", [("TERM", 143), ("INT", 130)])
def test_signal_mid_epoch_saves_prints_resume_and_resumes_exactly(toy_env, sig, code):
    full = _uninterrupted(3)
    stopped = _proc(toy_env, "trainer.max_epochs=3", "run.name=cut", "logger=csv", env={"TOY_SIGNAL_AT": f"{sig}:11"})
    cut = (_runs(toy_env) / "cut").resolve()
    assert stopped.returncode == code, stopped.stderr[-2000:]
    name = "SIGTERM" if sig == "TERM" else "SIGINT (Ctrl-C)"
    assert f"stopped by {name} at epoch 1, step 12; saved {cut / 'checkpoints' / 'last.ckpt'}" in stopped.stderr
    assert f"resume with: python {TRAIN} recipe=toy/base resume={cut}" in stopped.stderr
    assert not (cut / "metrics.json").exists() and not (cut / "export").exists()
    ck = _ckpt(cut)
    assert ck["global_step"] == 12 and ck["epoch"] == 1, "saved after the batch it was stopped in (mid-epoch)"
    assert _epochs(cut) == [0]
    _resume_here(cut)
    _same_weights(full, cut)
    assert _ckpt(cut)["global_step"] == 3 * STEPS_PER_EPOCH
    assert _epochs(cut) == [0, 1, 2]
    assert json.loads((cut / "metrics.json").read_text()) == json.loads((full / "metrics.json").read_text())


def test_sigkill_during_a_checkpoint_write_then_resume(toy_env, tmp_path, capsys):
    """SIGKILL while the epoch-2 checkpoint is being written: last.ckpt stays the epoch-1 one, the torn
    temporary is removed at the next start, and the resumed run ends equal to an uninterrupted one."""
    full = _uninterrupted(4)
    mark = tmp_path / "writing"
    hook = tmp_path / "hook"
    hook.mkdir()
    # sitecustomize runs at interpreter start: the write of epoch 2's last.ckpt stops after torch.save,
    # before the rename, until the process is killed.
    (hook / "sitecustomize.py").write_text(
        "import os, time\n"
        "import zoo.core.run as r\n"
        "from zoo.core.atomic import atomic_path\n"
        "import torch\n"
        "_orig = r.AtomicCheckpointIO.save_checkpoint\n"
        "def save(self, checkpoint, path, storage_options=None):\n"
        "    if str(path).endswith('last.ckpt') and checkpoint['epoch'] == 2:\n"
        "        with atomic_path(path) as tmp:\n"
        "            torch.save(checkpoint, tmp)\n"
        "            open(os.environ['MARK'], 'w').write(str(tmp))\n"
        "            time.sleep(120)\n"
        "    return _orig(self, checkpoint, path, storage_options)\n"
        "r.AtomicCheckpointIO.save_checkpoint = save\n")
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{HERE}{os.pathsep}{ROOT}", "MARK": str(mark)}
    p = _proc(toy_env, "trainer.max_epochs=4", "run.name=killed", env=env, wait=False)
    try:
        for _ in range(600):
            if mark.exists() and mark.read_text():
                break
            if p.poll() is not None:
                pytest.fail(f"training ended before the checkpoint write: {p.communicate()[1][-2000:]}")
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    killed = (_runs(toy_env) / "killed").resolve()
    torn = Path(mark.read_text())
    assert torn.exists() and torn.parent == killed / "checkpoints", "the killed write leaves its temporary"
    assert _ckpt(killed)["global_step"] == 2 * STEPS_PER_EPOCH, "last.ckpt is still the previous, complete one"
    assert _epochs(killed) == [0, 1, 2], "history.csv was written before the checkpoint that never landed"
    _resume_here(killed)
    assert "removed 1 temporary file(s) that killed writers left behind" in capsys.readouterr().out
    assert not torn.exists()
    _same_weights(full, killed)
    assert _epochs(killed) == [0, 1, 2, 3], "every epoch exactly once"


def test_slurm_preemption_requeues_and_the_requeued_job_resumes(toy_env, tmp_path, monkeypatch, capsys):
    """SIGUSR1 (SLURM's warning before pre-emption) under Lightning's SLURM environment: the hpc
    checkpoint is saved and the job requeued (a fake scontrol records the call and, as the real one
    does, terminates the job); the requeued job runs the same command and resumes its own directory."""
    full = _uninterrupted(3)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nkill -TERM $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    first = _proc(toy_env, "trainer.max_epochs=3", env={**slurm, "TOY_SIGNAL_AT": "USR1:10"})
    assert first.returncode == 143, first.stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    job_dir = (_runs(toy_env) / "slurm-4242").resolve()
    assert (job_dir / "hpc_ckpt_1.ckpt").is_file() and (job_dir / "checkpoints" / "last.ckpt").is_file()
    for k, v in {**slurm, "SLURM_RESTART_COUNT": "1"}.items():  # the requeued job: the same command again
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(toy_env.parent)
    again = run.train(R.load("toy/base", ["trainer.max_epochs=3", "logger=csv"]))
    assert again.exit_code == 0 and again.run_dir == job_dir
    assert f"SLURM job 4242 was requeued: resuming {job_dir}" in capsys.readouterr().out
    assert sorted(p.name for p in _runs(toy_env).iterdir()) == ["full", "slurm-4242"]
    _same_weights(full, job_dir)
    assert _epochs(job_dir) == [0, 1, 2]


# --------------------------------------------------------------------------- 11. settings changed on resume


def test_resume_applies_a_new_lr_and_says_so(toy_env, capsys):
    part = run.train(R.load("toy/base", ["run.name=p"])).run_dir
    lr_before = _ckpt(part)["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr_before == pytest.approx(0.1)
    res = run.train(R.load("toy/base", ["trainer.max_epochs=3", "system.lr=0.5", f"resume={part}"]))
    out = capsys.readouterr().out
    assert "[resume] applying system.lr: 0.1 -> 0.5 (optimiser learning rates rescaled)" in out
    assert "[resume] applying trainer.max_epochs: 2 -> 3" in out
    ck = _ckpt(res.run_dir)
    assert ck["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.5)
    assert ck["hyper_parameters"]["lr"] == pytest.approx(0.5)
    assert "lr: 0.5" in (part / "resolved.resume-1.yaml").read_text()


def test_resume_refuses_changes_it_cannot_apply_listing_them(toy_env):
    part = run.train(R.load("toy/base", ["run.name=p"])).run_dir
    listing = sorted(p.relative_to(part) for p in part.rglob("*"))
    with pytest.raises(RecipeError) as e:
        run.train(R.load("toy/base", ["system.optimizer=adam", "data.batch_size=32", f"resume={part}"]))
    msg = str(e.value)
    assert "this command changes settings" in msg
    assert "data.batch_size: 16 -> 32; system.optimizer: (not set) -> 'adam'" in msg
    assert sorted(p.relative_to(part) for p in part.rglob("*")) == listing


def test_resume_keeps_the_runs_own_settings_when_the_recipe_file_changed(toy_env, capsys):
    part = run.train(R.load("toy/base", ["run.name=p", "system.lr=0.2"])).run_dir
    # resuming without repeating system.lr continues with the run's value, not the recipe's 0.1
    res = run.train(R.load("toy/base", ["trainer.max_epochs=3", f"resume={part}"]))
    assert _ckpt(res.run_dir)["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.2)
    assert "it keeps its own values for: system.lr" in capsys.readouterr().out


# --------------------------------------------------------------------------- 12. evaluation-time settings


def test_eval_refuses_overrides_it_cannot_apply(toy_env, capsys):
    exp = run.train(R.load("toy/base", ["run.name=e"])).export_dir
    with pytest.raises(SystemExit) as e:
        run.cli("eval", ["recipe=toy/base", f"ckpt={exp}", "system.lr=0.5", "trainer.max_epochs=9"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert ("eval: cannot apply system.lr (the checkpoint was trained with system.lr=0.1); trainer.max_epochs "
            "(not used when evaluating)") in err
    assert not (exp / "eval_metrics.json").exists()


# --------------------------------------------------------------------------- 10. file modes


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_run_files_honour_the_umask(toy_env, umask, mode):
    old = os.umask(umask)
    try:
        res = run.train(R.load("toy/base", ["trainer.max_epochs=1", f"run.name=m{umask:o}"]))
    finally:
        os.umask(old)
    files = [res.export_dir / "model.safetensors", res.export_dir / "config.yaml", res.run_dir / "metrics.json",
             res.run_dir / "checkpoints" / "last.ckpt", res.run_dir / "resolved.yaml", res.run_dir / "history.csv"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(mode) for f in files}


# --------------------------------------------------------------------------- the zoo's loaders resume mid-epoch


def test_resumable_loader_continues_the_same_permutation():
    from torch.utils.data import TensorDataset

    from zoo.data.sampling import EpochShuffleSampler, ResumableLoader

    ds = TensorDataset(torch.arange(50))

    def loader():
        return ResumableLoader(ds, batch_size=8, sampler=EpochShuffleSampler(50, seed=3))

    full = loader()
    full.sampler.set_epoch(2)
    whole = [b[0].tolist() for b in full]
    assert len(whole) == 7 and sorted(sum(whole, [])) == list(range(50))
    first = loader()
    first.sampler.set_epoch(2)
    it = iter(first)
    head = [next(it)[0].tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 2, "seed": 3, "batches": 3}
    again = loader()
    again.load_state_dict(state)
    again.sampler.set_epoch(2)
    tail = [b[0].tolist() for b in again]
    assert head + tail == whole, "the resumed epoch continues where the checkpoint left it"
    assert [b[0].tolist() for b in again] == whole, "the next iteration is a whole epoch again"
    other = loader()
    other.load_state_dict({"epoch": 1, "seed": 3, "batches": 3})
    other.sampler.set_epoch(2)
    assert [b[0].tolist() for b in other] == whole, "a position from another epoch is not applied"
