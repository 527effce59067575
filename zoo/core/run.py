"""Run glue shared by tools/train.py and tools/eval.py: run directories, loggers, the Trainer,
atomic checkpoints, exact resume and the final metrics file."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.core import registry
from zoo.core.recipe import Recipe

RUN_DIR_ENV = "ZOO_RUN_DIR"  # shared with DDP child processes, which re-run the script


def is_global_zero() -> bool:
    """Rank 0 before the Trainer exists (Lightning's launchers set these variables in children)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file so that readers never see a partial file."""
    _atomic_bytes(Path(path), text.encode())


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename: never a torn .ckpt."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:  # noqa: D102
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


class ZooStateCallback(Callback):
    """Stores what exact resume needs beyond Lightning's own state: RNG states, the component's
    registry identity and the W&B run id."""

    def __init__(self, recipe: Recipe | None = None, wandb_id: str | None = None):
        self.recipe = recipe
        self.wandb_id = wandb_id

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: D102
        checkpoint["zoo"] = {
            "kind": getattr(pl_module, "_zoo_kind", "system"),
            "name": getattr(pl_module, "_zoo_name", None),
            "recipe": dict(self.recipe) if self.recipe is not None else None,
            "recipe_name": getattr(self.recipe, "name", None),
            "wandb_id": self.wandb_id,
        }
        # Plain tensors, ints and lists only, so the checkpoint loads with torch.load(weights_only=True).
        np_state = np.random.get_state()
        py_state = random.getstate()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]],
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: D102
        rng = checkpoint.get("rng_states")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))


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


def prepare_run_dir(recipe: Recipe) -> tuple[Path, Path | None]:
    """Create (or, on resume, reuse) runs/<recipe>/<time>/ and return (run_dir, resume_ckpt)."""
    resume_ckpt = None
    if os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
        if recipe.get("resume"):
            _, resume_ckpt = _find_resume(recipe, str(recipe["resume"]))
        return run_dir, resume_ckpt
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
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    return run_dir, resume_ckpt


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
        meta = torch.load(resume_ckpt, map_location="cpu", weights_only=False).get("zoo", {})
        wandb_id = meta.get("wandb_id")
    if wandb_id is None and id_file.is_file():
        wandb_id = id_file.read_text().strip()
    if wandb_id is None:
        import secrets
        import string

        wandb_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if is_global_zero():
        write_text_atomic(id_file, wandb_id)
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


def build_trainer(recipe: Recipe, run_dir: Path, logger, wandb_id: str | None, extra_callbacks=()) -> Trainer:
    """A lightning.Trainer from the recipe's trainer section, with checkpointing and zoo state."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    tcfg = dict(recipe.get("trainer") or {})
    ck = recipe["checkpoint"]
    callbacks = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"), monitor=ck.get("monitor"), mode=ck.get("mode", "max"),
            save_top_k=ck.get("save_top_k", 1) if ck.get("monitor") else 1, save_last=ck.get("save_last", True),
            every_n_epochs=ck.get("every_n_epochs"), every_n_train_steps=ck.get("every_n_train_steps"),
            filename="best" if ck.get("monitor") else "epoch{epoch}-step{step}", auto_insert_metric_name=False,
        ),
        ZooStateCallback(recipe, wandb_id),
        *extra_callbacks,
    ]
    strategy = str(tcfg.get("strategy", "auto"))
    plugins = []
    if not strategy.startswith(("deepspeed", "fsdp")):
        plugins.append(AtomicCheckpointIO())
    tcfg.setdefault("enable_model_summary", False)
    return Trainer(logger=logger, callbacks=callbacks, default_root_dir=str(run_dir), plugins=plugins or None,
                   **tcfg)


def build_components(recipe: Recipe) -> tuple[LightningModule, Any]:
    """The system and datamodule named by the recipe."""
    system = registry.build("system", recipe["system"])
    data = registry.build("datamodule", recipe["data"]) if recipe.get("data") is not None else None
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
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def print_metrics(metrics: dict[str, float], title: str = "test metrics") -> None:
    """A small table on stdout."""
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k, v in metrics.items():
            t.add_row(k, f"{v:.4f}")
        Console().print(t)
    except ImportError:  # pragma: no cover - rich is a dependency, keep a plain fallback
        for k, v in metrics.items():
            print(f"{k:30s} {v:.4f}")
