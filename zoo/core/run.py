"""The run loop: ``train`` (fit, test the best checkpoint, export), ``evaluate`` and ``predict``.

Every entry point (``tools/train.py``, ``tools/eval.py``, the ``hoi-zoo`` command, the tests) calls
these functions, so run directories, loggers, checkpoints, exact resume, progress output and
thread settings behave the same everywhere. ``run.mode`` (fit | test | predict) in a recipe picks
the function :func:`execute` runs.

A training run writes ``runs/<recipe>/<time>/`` with ``resolved.yaml``, ``checkpoints/``
(Lightning ``.ckpt``, written atomically), ``metrics.json`` (flat test metrics), ``figures/`` and
``export/`` (``model.safetensors`` + ``config.yaml`` for ``zoo.load``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.core import registry
from zoo.core.atomic import atomic_path, atomic_write_text
from zoo.core.callbacks import EpochLine, Figures, ZooStateCallback
from zoo.core.recipe import ConfigError, Recipe, RecipeError, locate

__all__ = ["train", "evaluate", "predict", "execute", "cli", "RunResult", "RUN_DIR_ENV", "apply_threads",
           "build_trainer", "build_components", "prepare_run_dir", "flat_metrics", "write_metrics", "print_metrics"]

RUN_DIR_ENV = "ZOO_RUN_DIR"  # inherited by launcher child processes (DDP), which re-run the script
THREADS_ENV = "ZOO_THREADS"  # overrides run.threads


@dataclass
class RunResult:
    """What a run produced: its directory, flat metrics, exit code and written files."""

    run_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    exit_code: int = 0
    export_dir: Path | None = None
    predictions: Path | None = None


def is_global_zero() -> bool:
    """Rank 0 before the Trainer exists (Lightning's launchers set these variables in children)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


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


def _find_resume(recipe: Recipe, resume: str) -> tuple[Path, Path]:
    """(run_dir, ckpt) for resume=last (newest run of this recipe with last.ckpt) or resume=PATH."""
    if resume == "last":
        base = Path(recipe["run"]["dir"]) / recipe.name
        cands = sorted(base.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise FileNotFoundError(f"resume=last: no run of recipe '{recipe.name}' with checkpoints/last.ckpt "
                                    f"under {base}")
        ck = cands[-1]
        return ck.parent.parent, ck
    p = Path(resume)
    if p.is_dir():
        ck = p / "checkpoints" / "last.ckpt"
        if not ck.is_file():
            raise FileNotFoundError(f"resume={resume}: {ck} not found")
        return p, ck
    if not p.is_file():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file or run directory")
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run_dir, p


def prepare_run_dir(recipe: Recipe) -> tuple[Path, Path | None, bool]:
    """Create (or, on resume, reuse) runs/<recipe>/<time>/; returns (run_dir, resume_ckpt, owns_env).

    The directory is published in $ZOO_RUN_DIR for the launcher's child processes; ``owns_env``
    says this call set it, so the caller clears it when the run returns.
    """
    resume_ckpt = None
    if os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
        if recipe.get("resume"):
            _, resume_ckpt = _find_resume(recipe, str(recipe["resume"]))
        return run_dir, resume_ckpt, False
    if recipe.get("resume"):
        run_dir, resume_ckpt = _find_resume(recipe, str(recipe["resume"]))
    else:
        name = recipe["run"].get("name") or time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(recipe["run"]["dir"]) / recipe.name / name
        n = 1
        while run_dir.exists():
            run_dir = run_dir.with_name(f"{name}-{n}")
            n += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = run_dir.resolve()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir, resume_ckpt, True


# --------------------------------------------------------------------------- logger


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_logger(recipe: Recipe, run_dir: Path, resume_ckpt: Path | None):
    """The recipe's logger: W&B (offline unless an API key is configured), CSV, or none."""
    cfg = recipe["logger"]
    name = cfg["name"]
    if name == "none":
        return False, None
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version=""), None
    from lightning.pytorch.loggers import WandbLogger

    offline = cfg.get("offline")
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not _wandb_has_key()
    id_file = run_dir / "wandb_id.txt"
    wandb_id = None
    if resume_ckpt is not None:
        meta = torch.load(resume_ckpt, map_location="cpu", weights_only=True).get("zoo", {})
        wandb_id = meta.get("wandb_id")
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
            ),
            ZooStateCallback(recipe, wandb_id),
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


def train(recipe: Recipe) -> RunResult:
    """Fit the recipe's system (resuming when ``resume`` is set), test the best checkpoint, write
    metrics.json and the export; returns the RunResult (exit code 130 when interrupted)."""
    apply_threads(recipe)
    _seed(recipe)
    run_dir, resume_ckpt, owns_env = prepare_run_dir(recipe)
    try:
        if is_global_zero():
            atomic_write_text(run_dir / "resolved.yaml", recipe.to_yaml())
        system, data = build_components(recipe)
        logger, wandb_id = build_logger(recipe, run_dir, resume_ckpt)
        extra = [Figures(run_dir / "figures")] if recipe["logger"].get("log_images", True) else []
        trainer = build_trainer(recipe, run_dir, logger, wandb_id, extra_callbacks=extra)
        failed = True
        try:
            result = _fit_test_export(recipe, run_dir, resume_ckpt, system, data, trainer)
            failed = result.exit_code != 0
            return result
        finally:
            finish_logger(logger, failed=failed)
    except ConfigError as e:
        raise locate(e, recipe, ("system",)) from None
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


def _fit_test_export(rec: Recipe, run_dir: Path, resume_ckpt, system, data, trainer) -> RunResult:
    trainer.fit(system, datamodule=data, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    if trainer.interrupted:
        print(f"interrupted; resume with: hoi-zoo train recipe={rec.name} resume={run_dir}", file=sys.stderr)
        return RunResult(run_dir, exit_code=130)
    metrics: dict[str, float] = {}
    if rec.get("test", True) and data is not None:
        ck = trainer.checkpoint_callback
        best = ck.best_model_path if ck is not None and ck.best_model_path else None
        trainer.test(system, datamodule=data, ckpt_path=best, weights_only=True)
        metrics = flat_metrics(trainer.callback_metrics)
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


def _system_for(recipe: Recipe, ckpt: str | None) -> LightningModule:
    """The model to evaluate: ``ckpt`` (export dir, .ckpt or registry name) rebuilt by the store, else the
    recipe's system (with whatever ``weights`` it names)."""
    if ckpt:
        from zoo.core import hub

        return hub.load(ckpt)
    return build_components(recipe)[0]


def evaluate(recipe: Recipe, ckpt: str | None = None, out: str | Path | None = None) -> RunResult:
    """Test ``ckpt`` (or the recipe's ``ckpt``, or the recipe's system as built) on the recipe's test split;
    writes the metrics as JSON to ``out`` (default: eval_metrics.json next to the checkpoint)."""
    apply_threads(recipe)
    _seed(recipe)
    ckpt = ckpt or recipe.get("ckpt")
    system = _system_for(recipe, ckpt)
    if recipe.get("data") is None:
        raise RecipeError(f"recipe '{recipe.name}' has no data section to evaluate on")
    data = registry.build("datamodule", recipe["data"], materialize=False)
    trainer = build_trainer(recipe, None, evaluation=True)
    try:
        trainer.test(system, datamodule=data)
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
        print_metrics(metrics, title=f"{recipe.name}: {ckpt or 'recipe system'}")
        print(f"metrics written to {dest}")
    return RunResult(dest.parent, metrics, 0)


def predict(recipe: Recipe, ckpt: str | None = None) -> RunResult:
    """Run the system's ``predict_step`` over the recipe's predict split and save the outputs to
    ``<run_dir>/predictions.pt`` (a list with one entry per batch)."""
    apply_threads(recipe)
    _seed(recipe)
    ckpt = ckpt or recipe.get("ckpt")
    run_dir, _, owns_env = prepare_run_dir(recipe)
    try:
        system = _system_for(recipe, ckpt)
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


def execute(recipe: Recipe) -> RunResult:
    """Run the recipe the way ``run.mode`` says: fit (train), test (evaluate) or predict."""
    mode = (recipe.get("run") or {}).get("mode", "fit")
    if mode == "test":
        return evaluate(recipe)
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
    extra = ["logger.name=none", "resume=null"] if command == "eval" else []
    try:
        rec = R.load(name, overrides + extra)
        if "--print" in flags:
            print(rec.to_yaml(), end="")
            return 0
        if command == "eval":
            if not rec.get("ckpt"):
                fail("eval needs ckpt=PATH (a .ckpt, an export directory, or a registry checkpoint name)")
            return evaluate(rec, out=out[0] if out else None).exit_code
        if command == "predict":
            return predict(rec).exit_code
        return execute(rec).exit_code
    except (RecipeError, FileNotFoundError, registry.RegistryError, hub.CheckpointError) as e:
        fail(str(e))
    return 2
