"""The run loop: ``train`` (fit, test the best checkpoint, export), ``evaluate`` and ``predict``.

Every entry point (``tools/train.py``, ``tools/eval.py``, the ``hoi-zoo`` command, the tests) calls
these functions, so run directories, loggers, checkpoints, exact resume, progress output and
thread settings behave the same everywhere. ``run.mode`` (fit | test | predict) in a recipe picks
the function :func:`execute` runs.

A training run writes ``runs/<recipe>/<time>/`` with ``resolved.yaml``, ``checkpoints/``
(Lightning ``.ckpt``, written atomically), ``history.csv`` (one row per epoch), ``metrics.json``
(flat test metrics and data counts), ``figures/`` and ``export/`` (``model.safetensors`` +
``config.yaml`` for ``zoo.load``). docs/runs.md says what survives which failure.

Exit codes: 0 done; 130 stopped by SIGINT (Ctrl-C) and 143 by SIGTERM, both after saving
``last.ckpt`` and printing the resume command; 2 bad input (recipe, data, checkpoint).
"""
from __future__ import annotations

import copy
import fnmatch
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo.core import registry
from zoo.core.atomic import atomic_path, atomic_write_text, clean_stale_temporaries
from zoo.core.batch import DataError
from zoo.core.callbacks import EpochLine, Figures, RescaleLR, StopCheckpoint, ZooStateCallback
from zoo.core.recipe import CLI, ConfigError, Recipe, RecipeError, locate

__all__ = ["train", "evaluate", "predict", "execute", "cli", "RunResult", "RUN_DIR_ENV", "apply_threads",
           "build_trainer", "build_components", "prepare_run_dir", "plan_resume", "ResumePlan", "flat_metrics",
           "write_metrics", "print_metrics", "print_eval_tables", "apply_convention", "EXIT_INTERRUPTED",
           "EXIT_TERMINATED"]

RUN_DIR_ENV = "ZOO_RUN_DIR"  # inherited by launcher child processes (DDP), which re-run the script
THREADS_ENV = "ZOO_THREADS"  # overrides run.threads
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2), as a shell reports a Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (128 + 15)


@dataclass
class RunResult:
    """What a run produced: its directory, flat metrics, exit code and written files."""

    run_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    exit_code: int = 0
    export_dir: Path | None = None
    predictions: Path | None = None


def is_global_zero() -> bool:
    """Rank 0 before the Trainer exists (Lightning's launchers set RANK / LOCAL_RANK in children; srun sets
    SLURM_PROCID in every task)."""
    rank = os.environ.get("RANK") or (os.environ.get("SLURM_PROCID") if _slurm_job() else None)
    return int(rank or os.environ.get("LOCAL_RANK", "0")) == 0


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename: never a torn .ckpt."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:  # noqa: D102
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


# --------------------------------------------------------------------------- threads


def busy_cores(interval: float = 0.5) -> float | None:
    """How many of the machine's cores are busy right now (from /proc/stat over ``interval`` seconds), or None
    where /proc/stat is not available."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
        return vals[3] + vals[4], sum(vals)  # idle + iowait, all

    try:
        idle0, total0 = read()
        time.sleep(interval)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def auto_threads(cores: int | None = None, busy: float | None = None) -> int:
    """Threads for the cores no other process is using: ``cores - round(busy)``, at least 1.

    Measured on a 2-core machine (docs/results.md): a tiny DECO step takes 0.30 s with 2 threads and 0.46 s
    with 1 when the machine is idle, but 0.76-0.90 s with 2 threads and 0.47-0.57 s with 1 when one other
    CPU-bound process runs, because two threads then fight the other process for the cores.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if busy is None:
        busy = busy_cores()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, cores - int(round(busy))))


def apply_threads(recipe: Recipe) -> int | None:
    """Set torch's intra-op threads from $ZOO_THREADS, else ``run.threads``; returns the value set (or None).

    ``auto`` takes the cores other processes leave idle (:func:`auto_threads`): on a busy 2-core machine
    torch's default (one thread per core) makes small CPU steps much slower than one thread.
    """
    env = os.environ.get(THREADS_ENV)
    value: Any = env if env not in (None, "") else (recipe.get("run") or {}).get("threads")
    if value is None:
        return None
    where = THREADS_ENV if env else "run.threads"
    if value == "auto":
        n = auto_threads()
        print(f"[run] {n} torch thread(s) ({where}=auto: the cores other processes leave idle)", flush=True)
    else:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{where} must be a positive integer or auto, got {value!r}") from None
        if n < 1:
            raise RecipeError(f"{where} must be a positive integer or auto, got {n}")
    torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------- run dir + resume

# Settings a resumed run may change. They take effect because the trainer, logger, loaders and
# test are built from the resumed recipe; each change is printed. The learning rate (LR_KEYS) is
# applied by rescaling the restored optimiser (RescaleLR). Any other change is refused: the
# checkpoint's weights, optimiser state and data order belong to the settings it was trained with.
APPLIED_ON_RESUME = (
    "resume", "ckpt", "trust", "test", "export", "description", "run.*", "logger.*",
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.min_epochs", "trainer.min_steps",
    "trainer.limit_*", "trainer.val_check_interval", "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps", "trainer.enable_*", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
    "trainer.strategy", "trainer.num_sanity_val_steps", "checkpoint.save_top_k", "checkpoint.save_last",
    "checkpoint.every_n_*", "data.num_workers", "data.pin_memory",
)
LR_KEYS = ("system.lr", "system.optim.lr")
_MISSING = object()


@dataclass
class ResumePlan:
    """What a resumed run continues: the run directory and checkpoint, the recipe it runs (the one
    recorded in the checkpoint with this command's changes), and those changes as (key, old, new)."""

    run_dir: Path
    ckpt: Path
    recipe: Recipe
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    lr_factor: float | None = None
    kept: list[str] = field(default_factory=list)  # keys whose recipe-file value changed; the run's value is kept


def _slurm_job() -> str | None:
    """The SLURM job id (``<array job>_<task>`` for array jobs) when running under SLURM, else None."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def _newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest of a run's checkpoints/last.ckpt and Lightning's SLURM hpc_ckpt_*.ckpt (pre-emption saves)."""
    cands = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def _find_resume(recipe: Recipe, resume: str) -> tuple[Path, Path]:
    """(run_dir, ckpt) for resume=last (newest run of this recipe with last.ckpt) or resume=PATH."""
    if resume == "last":
        base = Path(recipe["run"]["dir"]) / recipe.name
        cands = sorted(base.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise FileNotFoundError(f"resume=last: no run of recipe '{recipe.name}' with checkpoints/last.ckpt "
                                    f"under {base}")
        ck = cands[-1]
        return ck.parent.parent.resolve(), ck.resolve()
    p = Path(resume).expanduser()
    if p.is_dir():
        ck = _newest_checkpoint(p)
        if ck is None:
            raise FileNotFoundError(f"resume={resume}: {p / 'checkpoints' / 'last.ckpt'} not found")
        return p.resolve(), ck.resolve()
    if not p.is_file():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file or run directory")
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run_dir.resolve(), p.resolve()


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The zoo metadata, epoch and step of a Lightning checkpoint, read with ``weights_only=True`` (tensors are
    memory-mapped, not read)."""
    from zoo.core.hub import CheckpointError

    try:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            ck = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # noqa: BLE001 - named for the user
        raise CheckpointError(f"cannot resume from {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise CheckpointError(f"cannot resume from {path}: not a Lightning checkpoint (no 'state_dict')")
    return {"zoo": dict(ck.get("zoo") or {}), "epoch": ck.get("epoch"), "global_step": ck.get("global_step")}


def _get(tree: Any, path: tuple) -> Any:
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return _MISSING
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = copy.deepcopy(value)


def _leaves(tree: Any, path: tuple = ()) -> dict[tuple, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[tuple, Any] = {}
        for k, v in tree.items():
            out.update(_leaves(v, (*path, k)))
        return out
    return {path: tree}


def _show(v: Any) -> str:
    return "(not set)" if v is _MISSING else repr(v)


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def plan_resume(recipe: Recipe) -> ResumePlan:
    """Check a resume before anything is written, and work out the recipe the resumed run uses.

    The checkpoint's recorded system and recipe must be this recipe's (else a RecipeError naming
    both). The resumed run continues the recorded recipe; settings given on this command line
    that differ from it are applied when :data:`APPLIED_ON_RESUME` or :data:`LR_KEYS` allow it and
    refused otherwise, listing every difference. Values that changed in the recipe files since
    the run started are not taken: the run keeps its own (listed in ``kept``).
    """
    from zoo.core.recipe import dotted

    run_dir, ckpt = _find_resume(recipe, str(recipe["resume"]))
    zoo = read_checkpoint_meta(ckpt)["zoo"]
    want_sys = (recipe.get("system") or {}).get("name")
    have_sys, have_rec = zoo.get("name"), zoo.get("recipe_name")
    if (have_sys and want_sys and have_sys != want_sys) or (have_rec and have_rec != recipe.name):
        raise RecipeError(f"resume={recipe['resume']}: {ckpt} holds system '{have_sys}' trained by recipe "
                          f"'{have_rec}', but this run is recipe '{recipe.name}' (system '{want_sys}'); resume it "
                          f"with recipe={have_rec}, or drop resume= to start a new run. Nothing was written.")
    recorded = zoo.get("recipe")
    if not isinstance(recorded, dict):  # a checkpoint written without the run loop: nothing to compare with
        return ResumePlan(run_dir, ckpt, recipe)
    merged = copy.deepcopy(recorded)
    cli_paths = [p for p, src in recipe.sources.items() if src == CLI]
    changes: list[tuple[str, Any, Any]] = []
    refused: list[str] = []
    lr_factor = None
    for path in cli_paths:
        new, old = _get(recipe, path), _get(recorded, path)
        _set(merged, path, new)
        new_leaves = _leaves(new, path)
        old_leaves = _leaves(old, path) if old is not _MISSING else {}
        for leaf in sorted(set(new_leaves) | set(old_leaves), key=str):
            a, b = old_leaves.get(leaf, _MISSING), new_leaves.get(leaf, _MISSING)
            if a == b:
                continue
            key = dotted(leaf)
            if _matches(key, APPLIED_ON_RESUME):
                changes.append((key, a, b))
            elif key in LR_KEYS and isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b > 0:
                changes.append((key, a, b))
                lr_factor = (lr_factor or 1.0) * float(b) / float(a)
            else:
                refused.append(f"{key}: {_show(a)} -> {_show(b)}")
    if refused:
        raise RecipeError(
            f"resume={recipe['resume']}: this command changes settings {ckpt} was trained with, which a resumed "
            f"run cannot apply: {'; '.join(sorted(refused))}. Start a new run (drop resume=) or resume without changing "
            f"them (a resumed run applies changes to {', '.join(LR_KEYS)}, trainer.max_epochs/max_steps, "
            f"logger, run and the other keys listed in zoo.core.run.APPLIED_ON_RESUME). Nothing was written.")
    kept = sorted(key for k, v in _leaves(dict(recipe)).items()
                  if not _matches(key := dotted(k), APPLIED_ON_RESUME) and not any(k[:len(c)] == c for c in cli_paths)
                  and _get(recorded, k) != v)
    new_recipe = Recipe(merged)
    new_recipe.name = recipe.name
    new_recipe.sources = dict(recipe.sources)
    return ResumePlan(run_dir, ckpt, new_recipe, changes, lr_factor, kept)


def _report_plan(plan: ResumePlan) -> None:
    print(f"[resume] {plan.ckpt}", flush=True)
    for key, old, new in plan.changes:
        if key in ("resume",):
            continue
        note = " (optimiser learning rates rescaled)" if key in LR_KEYS else ""
        print(f"[resume] applying {key}: {_show(old)} -> {_show(new)}{note}", flush=True)
    if plan.kept:
        print(f"[resume] the recipe files changed since this run started; it keeps its own values for: "
              f"{', '.join(plan.kept)}", flush=True)


def _next_resume_index(run_dir: Path) -> int:
    n = 1
    while (run_dir / f"resolved.resume-{n}.yaml").exists() or (run_dir / "csv" / f"resume-{n}").exists():
        n += 1
    return n


def _clean_temporaries(recipe: Recipe) -> None:
    """Remove the temporary files that killed writers left in this recipe's runs (see atomic.clean_stale_temporaries)."""
    base = Path(recipe["run"]["dir"]) / recipe.name
    removed = clean_stale_temporaries(base, depth=3)
    if removed:
        print(f"[run] removed {len(removed)} temporary file(s) that killed writers left behind: "
              f"{', '.join(str(p) for p in removed[:5])}{' ...' if len(removed) > 5 else ''}", flush=True)


def prepare_run_dir(recipe: Recipe, plan: ResumePlan | None = None) -> tuple[Path, Path | None, bool]:
    """Create (or, on resume, reuse) runs/<recipe>/<name>/; returns (run_dir, resume_ckpt, owns_env).

    The directory is published in $ZOO_RUN_DIR for the launcher's child processes (rank > 0), the
    only processes that use an inherited value; ``owns_env`` says this call set it, so the caller
    clears it when the run returns. Under SLURM a run
    without ``run.name`` is named ``slurm-<job id>``, so a requeued job finds its own directory
    and resumes from its newest checkpoint.
    """
    if os.environ.get(RUN_DIR_ENV) and not is_global_zero():  # a launcher's child process (DDP rank > 0)
        return Path(os.environ[RUN_DIR_ENV]), plan.ckpt if plan else None, False
    if is_global_zero():
        _clean_temporaries(recipe)
    if plan is not None:
        run_dir, resume_ckpt = plan.run_dir, plan.ckpt
    else:
        resume_ckpt = None
        job = _slurm_job()
        name = recipe["run"].get("name") or (f"slurm-{job}" if job else time.strftime("%Y%m%d-%H%M%S"))
        run_dir = Path(recipe["run"]["dir"]) / recipe.name / name
        n = 1
        # every task of a SLURM job computes the same slurm-<job> directory, so it is never renamed
        while run_dir.exists() and not (job and not recipe["run"].get("name")):
            run_dir = run_dir.with_name(f"{name}-{n}")
            n += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = run_dir.resolve()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir, resume_ckpt, True


def _requeued_resume(recipe: Recipe) -> Recipe:
    """Under SLURM, a job requeued after pre-emption runs the same command again: when its run directory
    (``slurm-<job id>``) holds a checkpoint, resume from the newest one."""
    job = _slurm_job()
    if not job or recipe.get("resume") or recipe["run"].get("name"):
        return recipe
    run_dir = Path(recipe["run"]["dir"]) / recipe.name / f"slurm-{job}"
    if not run_dir.is_dir() or _newest_checkpoint(run_dir) is None:
        return recipe
    out = Recipe(copy.deepcopy(dict(recipe)))
    out.name, out.sources = recipe.name, dict(recipe.sources)
    out["resume"] = str(run_dir)
    if is_global_zero():
        print(f"[run] SLURM job {job} was requeued: resuming {run_dir.resolve()}", flush=True)
    return out


# --------------------------------------------------------------------------- logger


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_logger(recipe: Recipe, run_dir: Path, resume_ckpt: Path | None, csv_version: str = ""):
    """The recipe's logger: W&B (offline unless an API key is configured), CSV, or none.

    The CSV logger writes ``csv/metrics.csv``; a resumed run writes ``csv/<csv_version>/metrics.csv``
    beside it (Lightning's CSV logger would otherwise replace the file that holds the earlier epochs)."""
    cfg = recipe["logger"]
    name = cfg["name"]
    if name == "none":
        return False, None
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version=csv_version), None
    from lightning.pytorch.loggers import WandbLogger

    offline = cfg.get("offline")
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not _wandb_has_key()
    id_file = run_dir / "wandb_id.txt"
    wandb_id = None
    if resume_ckpt is not None:
        wandb_id = read_checkpoint_meta(resume_ckpt)["zoo"].get("wandb_id")
    if wandb_id is None and id_file.is_file():
        wandb_id = id_file.read_text().strip()
    if wandb_id is None:
        import secrets
        import string

        wandb_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if is_global_zero():
        atomic_write_text(id_file, wandb_id)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=cfg["project"], entity=cfg.get("entity"), save_dir=str(run_dir), offline=offline,
        id=wandb_id, resume="allow", tags=list(cfg.get("tags") or []),
        group=cfg.get("group"), job_type=cfg.get("job_type"),
        name=f"{recipe.name}/{run_dir.name}", config=dict(recipe),
    )
    return logger, wandb_id


def finish_logger(logger, failed: bool = False) -> None:
    """Close the logger's run. W&B keeps one run per process: unless it is finished, the next
    WandbLogger in the same process (a second training from Python, a sweep, a test session)
    silently logs into this one."""
    if type(logger).__name__ != "WandbLogger":
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


# --------------------------------------------------------------------------- trainer

# Trainer settings that make sense when only evaluating or predicting with a finished model.
_EVAL_TRAINER_KEYS = ("accelerator", "devices", "num_nodes", "precision", "deterministic", "limit_test_batches",
                      "limit_predict_batches", "inference_mode")


def _progress_mode(recipe: Recipe) -> str:
    mode = (recipe.get("run") or {}).get("progress", "auto")
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "line"
    return mode


def build_trainer(recipe: Recipe, run_dir: Path | None, logger=False, wandb_id: str | None = None,
                  extra_callbacks=(), evaluation: bool = False) -> Trainer:
    """A lightning.Trainer from the recipe: checkpointing and zoo state for training (``evaluation=False``),
    progress as ``run.progress`` says, atomic checkpoint writes where the strategy allows."""
    progress = _progress_mode(recipe)
    tcfg = dict(recipe.get("trainer") or {})
    callbacks: list = []
    if evaluation:
        strategy = str(tcfg.get("strategy", "auto"))
        tcfg = {k: v for k, v in tcfg.items() if k in _EVAL_TRAINER_KEYS}
        if not strategy.startswith(("deepspeed", "fsdp")):
            tcfg["strategy"] = strategy
        tcfg.update(enable_checkpointing=False)
    else:
        from lightning.pytorch.callbacks import ModelCheckpoint

        ck = recipe["checkpoint"]
        callbacks += [
            ModelCheckpoint(
                dirpath=str(run_dir / "checkpoints"), monitor=ck.get("monitor"), mode=ck.get("mode", "max"),
                save_top_k=ck.get("save_top_k", 1) if ck.get("monitor") else 1, save_last=ck.get("save_last", True),
                every_n_epochs=ck.get("every_n_epochs"), every_n_train_steps=ck.get("every_n_train_steps"),
                filename="best" if ck.get("monitor") else "epoch{epoch}-step{step}", auto_insert_metric_name=False,
                # after ZooStateCallback's on_train_epoch_end, so each checkpoint holds its epoch's history row
                save_on_train_epoch_end=True,
            ),
            ZooStateCallback(recipe, wandb_id, history_path=run_dir / "history.csv"),
            StopCheckpoint(run_dir / "checkpoints" / "last.ckpt"),
        ]
        if progress == "line":
            callbacks.append(EpochLine(monitor=ck.get("monitor")))
    callbacks += list(extra_callbacks)
    strategy = str(tcfg.get("strategy", "auto"))
    plugins = [] if evaluation or strategy.startswith(("deepspeed", "fsdp")) else [AtomicCheckpointIO()]
    tcfg.setdefault("enable_model_summary", False)
    return Trainer(logger=logger, callbacks=callbacks, default_root_dir=str(run_dir) if run_dir else None,
                   plugins=plugins or None, enable_progress_bar=progress == "bar", **tcfg)


def build_components(recipe: Recipe) -> tuple[LightningModule, Any]:
    """The system and datamodule named by the recipe, built but not materialized: Lightning calls the
    system's ``configure_model`` inside the strategy's context, where its parts are created and loaded."""
    system = registry.build("system", recipe["system"], materialize=False)
    data = registry.build("datamodule", recipe["data"], materialize=False) if recipe.get("data") is not None else None
    return system, data


def flat_metrics(metrics: dict, prefix: str = "test/") -> dict[str, float]:
    """Plain floats for the metrics whose key starts with prefix."""
    out = {}
    for k, v in metrics.items():
        if not k.startswith(prefix):
            continue
        out[k] = float(v.item() if hasattr(v, "item") else v)
    return dict(sorted(out.items()))


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    """metrics.json: a flat JSON object of the final test metrics."""
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def print_metrics(metrics: dict[str, float], title: str = "test metrics") -> None:
    """A small table on stdout."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.4f}")
    Console().print(t)


# --------------------------------------------------------------------------- entry points


def _seed(recipe: Recipe) -> None:
    import lightning as L

    L.seed_everything(recipe["seed"], workers=True, verbose=False)


class GracefulStop(Callback):
    """SIGINT and SIGTERM while a run trains: stop after the current batch, save ``last.ckpt``, exit 130 / 143.

    Lightning already turns SIGTERM into a stop at the next batch boundary (``SIGTERMException``);
    a first Ctrl-C is routed the same way (a KeyboardInterrupt could land in the middle of an
    optimiser step, and a checkpoint saved there would not resume exactly). A second Ctrl-C
    stops at once. Outside the training loop (building, testing, exporting) both signals stop
    the run at once with the same exit codes; nothing half-trained is saved then.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.trainer: Trainer | None = None
        self.in_loop = False
        self._previous: dict[int, Any] = {}

    # Lightning hooks: only inside the training loop is a graceful stop possible
    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        self.trainer, self.in_loop = trainer, True

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        self.in_loop = False

    def on_exception(self, trainer, pl_module, exception) -> None:  # noqa: D102
        self.in_loop = False

    def _request_stop(self) -> bool:
        if self.in_loop and self.trainer is not None:
            self.trainer._signal_connector.received_sigterm = True  # checked by Lightning after every batch
            return True
        return False

    def _on_int(self, signum, frame) -> None:
        if self.received == "INT":
            raise KeyboardInterrupt
        self.received = "INT"
        if not self._request_stop():
            raise KeyboardInterrupt
        print("\n[run] Ctrl-C: stopping after this batch and saving last.ckpt (Ctrl-C again stops at once)",
              file=sys.stderr, flush=True)

    def _on_term(self, signum, frame) -> None:
        # During fit Lightning's own SIGTERM handler runs first and calls this one after it.
        self.received = self.received or "TERM"
        if not self._request_stop():
            raise SystemExit(EXIT_TERMINATED)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig, fn in ((signal.SIGINT, self._on_int), (signal.SIGTERM, self._on_term)):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, fn)
        return self

    def __exit__(self, *exc) -> None:
        for sig, fn in self._previous.items():
            signal.signal(sig, fn)
        self._previous = {}

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.received == "INT" else EXIT_TERMINATED


def _resume_command(recipe: Recipe, run_dir: Path) -> str:
    """The command that resumes ``run_dir``: the training script that is running (tools/train.py), else
    tools/train.py of the checkout (e.g. when the demo was stopped), else the installed ``hoi-zoo train``."""
    from zoo.core.paths import repo_root

    script = sys.argv[0] if sys.argv else ""
    if Path(script).name == "train.py":
        head = f"python {script}"
    elif repo_root() is not None and (repo_root() / "tools" / "train.py").is_file():
        head = f"python {repo_root() / 'tools' / 'train.py'}"
    else:
        head = "hoi-zoo train"
    return f"{head} recipe={recipe.name} resume={run_dir}"


def train(recipe: Recipe) -> RunResult:
    """Fit the recipe's system (resuming when ``resume`` is set), test the best checkpoint, write
    metrics.json and the export; returns the RunResult (exit code 130 / 143 when stopped by
    SIGINT / SIGTERM, after saving last.ckpt)."""
    apply_threads(recipe)
    recipe = _requeued_resume(recipe)
    plan = plan_resume(recipe) if recipe.get("resume") else None  # checked before anything is written
    if plan is not None:
        recipe = plan.recipe
        if is_global_zero():
            _report_plan(plan)
    _seed(recipe)
    run_dir, resume_ckpt, owns_env = prepare_run_dir(recipe, plan)
    stop = GracefulStop()
    try:
        with stop:
            return _train_in(recipe, run_dir, resume_ckpt, plan, stop)
    except ConfigError as e:
        raise locate(e, recipe, ("system",)) from None
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


def _train_in(recipe: Recipe, run_dir: Path, resume_ckpt: Path | None, plan: ResumePlan | None,
              stop: GracefulStop) -> RunResult:
    suffix = f"resume-{_next_resume_index(run_dir)}" if plan is not None and is_global_zero() else ""
    if is_global_zero():
        # the first resolved.yaml stays; each resume writes its own beside it
        atomic_write_text(run_dir / (f"resolved.{suffix}.yaml" if suffix else "resolved.yaml"), recipe.to_yaml())
    system, data = build_components(recipe)
    logger, wandb_id = build_logger(recipe, run_dir, resume_ckpt, csv_version=suffix)
    extra: list = [stop]
    if recipe["logger"].get("log_images", True):
        extra.append(Figures(run_dir / "figures"))
    if plan is not None and plan.lr_factor is not None and plan.lr_factor != 1.0:
        lr = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in plan.changes if k in LR_KEYS)
        extra.append(RescaleLR(plan.lr_factor, note=f"learning rates x{plan.lr_factor:g} ({lr})"))
    trainer = build_trainer(recipe, run_dir, logger, wandb_id, extra_callbacks=extra)
    failed = True
    try:
        result = _fit_test_export(recipe, run_dir, resume_ckpt, system, data, trainer, stop)
        failed = result.exit_code != 0
        return result
    finally:
        finish_logger(logger, failed=failed)


def _stopped(rec: Recipe, run_dir: Path, trainer: Trainer, stop: GracefulStop) -> RunResult:
    name = "SIGINT (Ctrl-C)" if stop.received == "INT" else "SIGTERM"
    saved = next((c.saved for c in trainer.callbacks if isinstance(c, StopCheckpoint) and c.saved), None)
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    what = f"saved {saved}" if saved else ("nothing trained yet, nothing saved" if trainer.global_step == 0 else
                                           "last.ckpt is the last epoch's checkpoint")
    if is_global_zero():
        print(f"stopped by {name} at {where}; {what}.\nresume with: {_resume_command(rec, run_dir)}",
              file=sys.stderr, flush=True)
    return RunResult(run_dir, exit_code=stop.exit_code)


def _fit_test_export(rec: Recipe, run_dir: Path, resume_ckpt, system, data, trainer, stop: GracefulStop) -> RunResult:
    trust = bool(rec.get("trust", False))
    try:
        trainer.fit(system, datamodule=data, ckpt_path=str(resume_ckpt) if resume_ckpt else None,
                    weights_only=not trust)
    except SIGTERMException:
        return _stopped(rec, run_dir, trainer, stop)
    except SystemExit as exc:
        # Lightning answers a KeyboardInterrupt (a second Ctrl-C) with sys.exit(1)
        if isinstance(exc.__context__, KeyboardInterrupt) or stop.received == "INT":
            stop.received = "INT"
            return _stopped(rec, run_dir, trainer, stop)
        raise
    if stop.received:  # a signal that arrived as the last batch finished
        return _stopped(rec, run_dir, trainer, stop)
    metrics: dict[str, float] = {}
    if rec.get("test", True) and data is not None:
        ck = trainer.checkpoint_callback
        best = ck.best_model_path if ck is not None and ck.best_model_path else None
        trainer.test(system, datamodule=data, ckpt_path=best, weights_only=True)
        metrics = flat_metrics(trainer.callback_metrics)
    report = data.data_report() if data is not None and hasattr(data, "data_report") else {}
    metrics.update({k: float(v) for k, v in sorted(report.items())})
    export_dir = None
    if trainer.is_global_zero:
        write_metrics(run_dir / "metrics.json", metrics)
        if rec.get("export", True):
            from zoo.core import hub

            export_dir = hub.export(system, run_dir / "export", extra={"recipe": rec.name, "metrics": metrics},
                                    self_contained=rec.get("export") == "self_contained")
        if metrics:
            print_metrics(metrics, title=f"{rec.name}: test metrics")
        print(f"run directory: {run_dir}")
    return RunResult(run_dir, metrics, 0, export_dir)


def _system_for(recipe: Recipe, ckpt: str | None, what: str = "eval") -> LightningModule:
    """The model to evaluate: ``ckpt`` (export dir, .ckpt or registry name) rebuilt by the store, with this
    command's evaluation-time settings applied (:func:`check_eval_overrides`), else the recipe's system (with
    whatever ``weights`` it names)."""
    if ckpt:
        from zoo.core import hub

        system = hub.load(ckpt, trust=bool(recipe.get("trust", False)))
        apply = check_eval_overrides(recipe, system, ckpt, what)
        if apply:
            system.apply_eval_settings(apply)
        return system
    check_eval_overrides(recipe, None, None, what)
    return build_components(recipe)[0]


# What an evaluation uses from a recipe besides the system: everything else set on its command line is refused.
EVAL_KEYS = ("seed", "data.*", "run.*", "ckpt", "trust", "description", "test", "export", "convention")


def check_eval_overrides(recipe: Recipe, system: Any, ckpt: str | None, what: str = "eval") -> dict[str, Any]:
    """The system settings this evaluation's command line changes that apply to a loaded checkpoint.

    Settings named in the system's ``eval_settings`` (e.g. ``metrics``, with their thresholds and
    conventions) are returned to apply; other system settings that differ from the checkpoint's,
    trainer keys that evaluation does not use, and training-only sections (logger, checkpoint,
    resume) raise a RecipeError naming each of them, rather than being recorded and ignored.
    """
    from zoo.core.recipe import dotted

    hp: dict[str, Any] = {}
    if system is not None:
        hp = dict(getattr(system, "hparams", None) or system.__dict__.get("_zoo_config") or {})
    settings = tuple(getattr(system, "eval_settings", ()) or ())
    apply: dict[str, Any] = {}
    refused: list[str] = []
    leaves: list[tuple] = []
    for cli_path in (p for p, src in recipe.sources.items() if src == CLI):
        leaves += [leaf for leaf in _leaves(_get(recipe, cli_path), cli_path) if leaf not in leaves]
    seen: set[str] = set()
    for path in sorted(leaves, key=str):
        if path[0] == "system" and len(path) > 2:
            path = path[:2]  # a setting inside system.<name> changes system.<name>
        key = dotted(path)
        if key in seen:
            continue
        seen.add(key)
        if path[0] == "system" and system is not None and len(path) > 1:
            name = path[1]
            new = (recipe.get("system") or {}).get(name, _MISSING)
            if name == "name":
                if new != getattr(system, "_zoo_name", new):
                    refused.append(f"{key}={new} (the checkpoint holds system '{system._zoo_name}')")
                continue
            old = hp.get(name, _MISSING)
            if new == old:
                continue
            if name in settings:
                apply[name] = new
            else:
                refused.append(f"{key} (the checkpoint was trained with system.{name}={_show(old)})")
        elif path[0] == "system":
            continue  # no checkpoint: the system is built from the recipe, so every setting is used
        elif path[0] == "trainer" and len(path) > 1 and path[1] not in _EVAL_TRAINER_KEYS:
            refused.append(f"{key} (not used when evaluating)")
        elif path[0] in ("trainer",) or _matches(key, EVAL_KEYS):
            continue
        else:
            refused.append(f"{key} (not used when evaluating)")
    if refused:
        allowed = ", ".join(f"system.{k}" for k in settings) or "none"
        raise RecipeError(f"{what}: cannot apply {'; '.join(refused)}. Evaluation-time settings of "
                          f"{ckpt or 'this system'}: {allowed}; trainer keys used: {', '.join(_EVAL_TRAINER_KEYS)}. "
                          f"Drop them, or train a new model with them.")
    if apply and is_global_zero():
        for k, v in apply.items():
            print(f"[{what}] applying system.{k}: {_show(hp.get(k, _MISSING))} -> {_show(v)}", flush=True)
    return apply


def _eval_convention(recipe: Recipe) -> str | None:
    """The recipe's ``convention`` (None when unset); an unknown value is a RecipeError naming the allowed ones."""
    from zoo.core.recipe import EVAL_CONVENTIONS

    value = recipe.get("convention")
    if value is not None and value not in EVAL_CONVENTIONS:
        raise RecipeError(f"convention must be one of {', '.join(EVAL_CONVENTIONS)} (the metric rules of an "
                          f"evaluation; see zoo.metrics.conventions), got {value!r}")
    return value


def _refuse_convention(recipe: Recipe, what: str) -> None:
    if recipe.get("convention") is not None:
        raise RecipeError(f"{what}: convention={recipe['convention']} applies to evaluation only (tools/eval.py, "
                          f"run.mode=test); set the conventions of system.metrics to train with other rules")


def apply_convention(system: Any, data: Any, convention: str, what: str = "eval") -> list[dict]:
    """Set the metric rules of ``system`` for ``convention`` (deco | interactvlm | both; see
    :mod:`zoo.metrics.conventions`) through its ``apply_convention`` (the System base's), given the data's
    per-sample name keys (``data.name_keys``); returns the new metrics list."""
    if not callable(getattr(system, "apply_convention", None)) or \
            "metrics" not in tuple(getattr(system, "eval_settings", ()) or ()):
        raise RecipeError(f"{what}: convention={convention} needs a zoo System whose metrics can change at "
                          f"evaluation; {type(system).__qualname__} is not one")
    new = system.apply_convention(convention, tuple(getattr(data, "name_keys", ()) or ()))
    if is_global_zero():
        shown = ", ".join(f"{m.get('log_prefix', '')}{m['name']}" + (f" ({m['convention']})" if "convention" in m else "")
                          for m in new)
        print(f"[{what}] convention={convention}: metrics {shown or 'none'}", flush=True)
    return new


def evaluate(recipe: Recipe, ckpt: str | None = None, out: str | Path | None = None) -> RunResult:
    """Test ``ckpt`` (or the recipe's ``ckpt``, or the recipe's system as built) on the recipe's test split;
    writes the metrics as JSON to ``out`` (default: eval_metrics.json next to the checkpoint). Settings given
    on the command line are applied or refused (:func:`check_eval_overrides`); ``convention=deco|interactvlm|both``
    sets the rules of every metric (:func:`apply_convention`)."""
    apply_threads(recipe)
    _seed(recipe)
    ckpt = ckpt or recipe.get("ckpt")
    convention = _eval_convention(recipe)
    system = _system_for(recipe, ckpt)
    if recipe.get("data") is None:
        raise RecipeError(f"recipe '{recipe.name}' has no data section to evaluate on")
    if not ckpt and not getattr(system, "learned", True):
        # A fitting system's evaluation is its run: it gets a run directory (scenes written there, metrics.json).
        run_dir, _, owns_env = prepare_run_dir(recipe)
        try:
            return _evaluate_in(recipe, system, convention, run_dir / "metrics.json" if out is None else Path(out),
                                ckpt, run_dir)
        finally:
            if owns_env:
                os.environ.pop(RUN_DIR_ENV, None)
    return _evaluate_in(recipe, system, convention, out, ckpt, None)


def _evaluate_in(recipe: Recipe, system: LightningModule, convention: str | None, out: str | Path | None,
                 ckpt: str | None, run_dir: Path | None) -> RunResult:
    """The test pass of :func:`evaluate` and its outputs."""
    data = registry.build("datamodule", recipe["data"], materialize=False)
    if convention is not None:
        apply_convention(system, data, convention)
    trainer = build_trainer(recipe, None, evaluation=True)
    try:
        trainer.test(system, datamodule=data, verbose=False)  # print_eval_tables shows the values
    except ConfigError as e:
        raise locate(e, recipe, ("system",)) from None
    metrics = flat_metrics(trainer.callback_metrics)
    if out is not None:
        dest = Path(out)
    elif ckpt and Path(ckpt).exists():
        ck = Path(ckpt)
        dest = (ck if ck.is_dir() else ck.parent) / "eval_metrics.json"
    else:
        dest = Path(recipe["run"]["dir"]) / recipe.name / "eval_metrics.json"
    if trainer.is_global_zero:
        write_metrics(dest, metrics)
        print(f"[eval] {recipe.name}: {ckpt or 'the recipe system'}", flush=True)
        print_eval_tables(metrics, title=f"{recipe.name}" + (f", convention={convention}" if convention else ""))
        print(f"metrics written to {dest}")
        if run_dir is not None:
            atomic_write_text(run_dir / "resolved.yaml", recipe.to_yaml())
            print(f"run directory: {run_dir}")
    return RunResult(dest.parent, metrics, 0)


_CONVENTION_PREFIXES = ("deco/", "interactvlm/")
_ROW_GROUPS = ("damon_semantic/object/", "damon_semantic/category/")


def print_eval_tables(metrics: dict[str, float], title: str = "test metrics") -> None:
    """An evaluation's metrics on stdout: the values (one column per convention when keys carry ``deco/`` and
    ``interactvlm/`` prefixes), then the per-object and per-category rows of ``damon_semantic`` as tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    flat, rows = {}, {}
    for key, v in metrics.items():
        k = key.removeprefix("test/")
        prefix = next((p for p in _CONVENTION_PREFIXES if k.startswith(p)), "")
        rest = k[len(prefix):]
        group = next((g for g in _ROW_GROUPS if rest.startswith(g)), None)
        if group is None:
            flat.setdefault(rest, {})[prefix] = v
            continue
        name, _, col = rest[len(group):].rpartition("/")
        rows.setdefault((prefix, group.split("/")[1]), {}).setdefault(name, {})[col] = v
    cols = [p for p in _CONVENTION_PREFIXES if any(p in d for d in flat.values())]
    cols = [""] + cols if any("" in d for d in flat.values()) or not cols else cols
    t = Table(title=title)
    t.add_column("metric")
    for c in cols:
        t.add_column(c.rstrip("/") or "value", justify="right")
    for k, d in sorted(flat.items()):
        t.add_row(("test/" if cols == [""] else "") + k, *(f"{d[c]:.4f}" if c in d else "" for c in cols))
    console.print(t)
    for (prefix, group), table in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "object")):
        names = list(table)
        fields = [c for c in ("n", "f1", "precision", "recall", "fp_geo_cm") if any(c in table[n] for n in names)]
        t = Table(title=f"{prefix}damon_semantic per {group}")
        t.add_column(group)
        for c in fields:
            t.add_column(c, justify="right")
        for n in names:
            t.add_row(n, *(("" if c not in table[n] else f"{table[n][c]:.0f}" if c == "n" else f"{table[n][c]:.4f}")
                           for c in fields))
        console.print(t)


def predict(recipe: Recipe, ckpt: str | None = None) -> RunResult:
    """Run the system's ``predict_step`` over the recipe's predict split and save the outputs to
    ``<run_dir>/predictions.pt`` (a list with one entry per batch)."""
    apply_threads(recipe)
    _seed(recipe)
    ckpt = ckpt or recipe.get("ckpt")
    run_dir, _, owns_env = prepare_run_dir(recipe)
    try:
        system = _system_for(recipe, ckpt, "predict")
        data = registry.build("datamodule", recipe["data"], materialize=False) if recipe.get("data") else None
        trainer = build_trainer(recipe, run_dir, evaluation=True)
        try:
            outputs = trainer.predict(system, datamodule=data)
        except ConfigError as e:
            raise locate(e, recipe, ("system",)) from None
        dest = run_dir / "predictions.pt"
        if trainer.is_global_zero:
            atomic_write_text(run_dir / "resolved.yaml", recipe.to_yaml())
            with atomic_path(dest) as tmp:
                torch.save(outputs, tmp)
            print(f"predictions written to {dest}")
        return RunResult(run_dir, {}, 0, predictions=dest)
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


def _learned(recipe: Recipe) -> bool:
    """Whether the recipe's system trains weights (fitting systems, e.g. phosa, optimise per sample instead)."""
    name = (recipe.get("system") or {}).get("name")
    if not name:
        return True
    return bool(getattr(registry.lookup("system", name), "learned", True))


def execute(recipe: Recipe) -> RunResult:
    """Run the recipe the way ``run.mode`` says: fit (train), test (evaluate) or predict."""
    mode = (recipe.get("run") or {}).get("mode", "fit")
    if mode == "fit" and not _learned(recipe):
        raise RecipeError(f"recipe '{recipe.name}': system '{recipe['system']['name']}' optimises each sample on "
                          f"its own and has no weights to train; set run.mode=test (metrics on data with ground "
                          f"truth) or run.mode=predict (writes each scene), or use tools/reconstruct.py")
    if mode == "test":
        return evaluate(recipe)
    _refuse_convention(recipe, f"run.mode={mode}")
    if mode == "predict":
        return predict(recipe)
    return train(recipe)


# --------------------------------------------------------------------------- command line

FLAGS = {"train": {"--print"}, "eval": {"--print"}, "predict": {"--print"}}


def parse_args(argv: list[str], usage: str, flags: set[str] = frozenset()) -> tuple[str, list[str], set[str]]:
    """(recipe name, overrides, flags) from ``recipe=NAME key=value ... --flag``; exits with usage on error."""
    given = {a for a in argv if a.startswith("--")}
    rest = [a for a in argv if not a.startswith("--")]
    if "--help" in given or "-h" in argv:
        print(usage)
        raise SystemExit(0)
    unknown = sorted(given - set(flags))
    if unknown:
        fail(f"unknown flag(s) {', '.join(unknown)} (flags: {', '.join(sorted(flags)) or 'none'}, --help)")
    recipe = [a.partition("=")[2] for a in rest if a.startswith("recipe=")]
    if len(recipe) != 1 or not recipe[0]:
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    return recipe[0], [a for a in rest if not a.startswith("recipe=")], given


def fail(msg: str, code: int = 2) -> None:
    """Print an error for the user (no traceback) and exit."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def cli(command: str, argv: list[str], usage: str | None = None) -> int:
    """``train`` / ``eval`` / ``predict`` from command-line arguments; returns the exit code."""
    from zoo.core import hub
    from zoo.core import recipe as R

    usage = usage or f"usage: {command} recipe=NAME [key=value ...] [--print]"
    out = [a.partition("=")[2] for a in argv if a.startswith("out=")] if command == "eval" else []
    argv = [a for a in argv if not (command == "eval" and a.startswith("out="))]
    name, overrides, flags = parse_args(argv, usage, FLAGS.get(command, set()))
    try:
        rec = R.load(name, overrides)
        if "--print" in flags:
            print(rec.to_yaml(), end="")
            return 0
        if command == "eval":
            if not rec.get("ckpt") and _learned(rec):
                fail("eval needs ckpt=PATH (a .ckpt, an export directory, or a registry checkpoint name)")
            return evaluate(rec, out=out[0] if out else None).exit_code
        if command == "predict":
            _refuse_convention(rec, "predict")
            return predict(rec).exit_code
        return execute(rec).exit_code
    except (RecipeError, FileNotFoundError, registry.RegistryError, hub.CheckpointError, DataError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        print("\nstopped by SIGINT (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 2
