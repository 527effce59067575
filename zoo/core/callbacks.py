"""Callbacks the run loop attaches to every run: exact-resume state and the metrics history, saving
``last.ckpt`` when a run is stopped by a signal, changed learning rates on resume, figures, and
per-epoch progress lines."""
from __future__ import annotations

import csv
import io
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from lightning import Callback

from zoo.core.atomic import atomic_write_image, atomic_write_text

__all__ = ["ZooStateCallback", "StopCheckpoint", "RescaleLR", "Figures", "EpochLine", "format_duration",
           "history_rows", "read_history"]


class ZooStateCallback(Callback):
    """Stores what exact resume needs beyond Lightning's own state: RNG states, the component's
    registry identity and recipe, the W&B run id, and the metrics history.

    The history is one row per finished training epoch (epoch, step and every logged scalar),
    kept in each checkpoint and written to ``history_path`` (CSV) after every epoch. A resumed
    run starts from the rows of the checkpoint it resumes, so the file lists every epoch exactly
    once whatever was lost with the process (rows written after the last checkpoint are
    dropped and written again when those epochs are trained again).
    """

    def __init__(self, recipe: dict | None = None, wandb_id: str | None = None, history_path: str | Path | None = None):
        self.recipe = recipe
        self.wandb_id = wandb_id
        self.history_path = Path(history_path) if history_path is not None else None
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        # Runs before ModelCheckpoint saves (monitoring callbacks come last), so the row is in that checkpoint.
        if trainer.sanity_checking:
            return
        row: dict[str, float] = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        for key, value in sorted(trainer.callback_metrics.items()):
            try:
                v = float(value.item() if hasattr(value, "item") else value)
            except (TypeError, ValueError, RuntimeError):
                continue
            row[key] = v
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        if self.history_path is not None and trainer.is_global_zero:
            atomic_write_text(self.history_path, history_csv(self.history))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: D102
        checkpoint["zoo"] = {
            "kind": getattr(pl_module, "_zoo_kind", "system"),
            "name": getattr(pl_module, "_zoo_name", None),
            "recipe": dict(self.recipe) if self.recipe is not None else None,
            "recipe_name": getattr(self.recipe, "name", None),
            "wandb_id": self.wandb_id,
            "history": [dict(r) for r in self.history],
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
        continue_cut_epoch(checkpoint)
        self.history = [dict(r) for r in (checkpoint.get("zoo") or {}).get("history") or []]
        if self.history_path is not None and trainer.is_global_zero:
            atomic_write_text(self.history_path, history_csv(self.history))
        rng = checkpoint.get("rng_states")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))


def continue_cut_epoch(checkpoint: dict) -> bool:
    """Make a checkpoint written when ``trainer.max_steps`` ended training mid-epoch resume *inside* that epoch.

    Lightning counts an epoch cut short by max_steps as processed, so resuming such a checkpoint with a larger
    max_steps (continuing a step-based run, e.g. a text-to-3D one) starts the next epoch: the rest of the cut
    epoch's batches are never drawn and the samplers' epoch is off by one. A checkpoint saved mid-epoch on a
    signal (StopCheckpoint) has the epoch started but not processed, which Lightning resumes mid-epoch. When the
    epoch was processed but its last batch never ran, this marks it unprocessed again, so both resume alike; when
    max_steps fell on the epoch's last batch, it marks the epoch completed, so the next one starts in full.
    Returns whether the checkpoint was changed (it is changed in place, before Lightning restores its loops)."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    ep, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    if not isinstance(ep, dict) or not isinstance(batches, dict):
        return False
    total, current = ep.get("total") or {}, ep.get("current") or {}
    cut = all(d.get("processed") == d.get("started") and d.get("completed") == d.get("processed", 0) - 1
              for d in (total, current))
    if not cut or int((batches.get("current") or {}).get("completed", 0)) == 0:
        return False
    if batches.get("is_last_batch", False):
        # max_steps fell on the epoch's last batch: that epoch is over (its validation ran); start the next one
        # cleanly, where Lightning would treat the restart as "on epoch end" and then skip a whole epoch
        for d in (total, current):
            d["completed"] = d["processed"]
        batches["current"] = {k: 0 for k in batches["current"]}
        batches["is_last_batch"] = False
        return True
    for d in (total, current):
        d["processed"] -= 1
    return True


def history_csv(rows: list[dict[str, float]]) -> str:
    """CSV text of history rows: epoch, step, then every other key in sorted order; blank where a row has none."""
    keys = ["epoch", "step"] + sorted({k for r in rows for k in r} - {"epoch", "step"})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        out = []
        for k in keys:
            v = r.get(k)
            out.append("" if v is None else (str(int(v)) if k in ("epoch", "step") else repr(float(v))))
        w.writerow(out)
    return buf.getvalue()


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a history.csv as dicts of floats (blank cells left out)."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


history_rows = read_history


class StopCheckpoint(Callback):
    """Saves ``last.ckpt`` when the fit stops on SIGTERM or a first Ctrl-C.

    The run loop turns SIGINT into the same graceful stop Lightning uses for SIGTERM: the
    flag is checked after each training batch, so the checkpoint holds a finished batch and the
    loader position (ResumableLoader); a resumed run continues with the next batch. ``path`` is
    the checkpoint to write; ``saved`` is set once written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.saved: Path | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:  # noqa: D102
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking and trainer.global_step > 0:
            trainer.save_checkpoint(str(self.path), weights_only=False)  # the full state, for exact resume
            self.saved = self.path


class RescaleLR(Callback):
    """On resume with a changed learning rate: multiply every optimiser group's lr (and the LR schedulers'
    base lrs) by ``factor`` once the checkpoint's optimiser state is restored, so the recorded lr is the one used."""

    def __init__(self, factor: float, note: str = ""):
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"RescaleLR: factor must be a positive number, got {factor}")
        self.factor = factor
        self.note = note

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * self.factor
                if "initial_lr" in group:
                    group["initial_lr"] = group["initial_lr"] * self.factor
        for cfg in trainer.lr_scheduler_configs:
            sched = cfg.scheduler
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * self.factor for lr in sched.base_lrs]
            if hasattr(sched, "_last_lr"):
                sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        if self.note and trainer.is_global_zero:
            print(f"[resume] {self.note}", flush=True)


class Figures(Callback):
    """On the first test batch, write the system's ``figures(batch, n)`` (the ``system`` interface,
    zoo.core.interfaces.System) as ``<out_dir>/test_<name>.png`` and log them to W&B under
    ``test/figures`` when the logger is a WandbLogger. A missing file the figures need (e.g. the body
    model) skips them with a printed note instead of failing the test."""

    def __init__(self, out_dir: str | Path, n: int = 3):
        self.out_dir = Path(out_dir)
        self.n = n
        self.paths: list[Path] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        if batch_idx != 0 or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        try:
            with torch.no_grad():
                figs = pl_module.figures(batch, self.n)
        except FileNotFoundError as e:
            print(f"note: figures skipped: {str(e).splitlines()[0]}")
            return
        paths = [atomic_write_image(self.out_dir / f"test_{name}.png", img) for name, img in figs]
        self.paths.extend(paths)
        logger = trainer.logger
        if figs and logger is not None and type(logger).__name__ == "WandbLogger":
            logger.log_image(key="test/figures", images=[img for _, img in figs], caption=[p.name for p in paths])


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class EpochLine(Callback):
    """One line per training epoch, for logs and output that is not a terminal::

        epoch 3/40 | train/loss 0.4120 | val/f1 0.5331 | 11.8 s/epoch | ETA 7m04s

    The metrics shown are ``train/loss`` and the checkpoint's monitored metric (when logged); the ETA
    comes from the mean epoch time so far and max_epochs (or max_steps).
    """

    def __init__(self, monitor: str | None = None, stream: TextIO | None = None):
        self.monitor = monitor
        self.stream = stream
        self._times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._start = time.perf_counter()

    def _value(self, metrics: dict, key: str) -> str | None:
        v = metrics.get(key)
        if v is None:
            return None
        try:
            return f"{key} {float(v):.4f}"
        except (TypeError, ValueError):
            return None

    def line(self, trainer: Any) -> str:
        """The progress line for the epoch that just ended."""
        dt = time.perf_counter() - self._start
        self._times.append(dt)
        mean = sum(self._times) / len(self._times)
        epoch = trainer.current_epoch + 1
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        parts = [f"epoch {epoch}/{total}" if total else f"epoch {epoch}"]
        metrics = trainer.callback_metrics
        for key in ("train/loss", self.monitor):
            text = self._value(metrics, key) if key else None
            if text:
                parts.append(text)
        parts.append(f"{dt:.1f} s/epoch")
        remaining = None
        if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.num_training_batches:
            steps_left = trainer.max_steps - trainer.global_step
            remaining = max(steps_left, 0) / max(float(trainer.num_training_batches), 1.0) * mean
        if total:
            by_epochs = (total - epoch) * mean
            remaining = by_epochs if remaining is None else min(remaining, by_epochs)
        if remaining is not None:
            parts.append(f"ETA {format_duration(remaining)}")
        return " | ".join(parts)

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        if not trainer.is_global_zero:
            return
        print(self.line(trainer), file=self.stream or sys.stdout, flush=True)
