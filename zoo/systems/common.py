"""Pieces every system shares: batch-key checks with clear messages, and the validation / test
loop over torchmetrics metrics (accumulate per batch, log and reset per epoch, DDP-safe)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["BatchKeyError", "need", "EvalMetricsMixin"]


class BatchKeyError(KeyError):
    """A batch lacks a key the system needs (message names the key, the step and what was expected)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def need(batch: dict, key: str, owner: str, where: str, expected: str) -> Any:
    """``batch[key]``, or a BatchKeyError naming the system (``owner``), the step, the key, what was
    expected and the keys the batch has."""
    if key not in batch:
        raise BatchKeyError(f"{owner}.{where}: batch is missing key '{key}' (expected {expected}; "
                            f"batch keys: {sorted(batch)})")
    return batch[key]


class EvalMetricsMixin:
    """validation_step / test_step and their epoch ends for a LightningModule.

    The module sets ``val_metric``, ``test_metric`` (torchmetrics metrics returning a dict) and
    ``val_geo``, ``test_geo`` (an optional second metric, or None), names the metric shown in the
    progress bar in ``main_metric``, and implements ``eval_outputs(batch, stage) -> (pred,
    target)``, which runs the step (logging its losses) and returns what the metrics take.
    Metrics are computed even on ranks that saw no batch, so DDP's collective sync never hangs.
    """

    main_metric: str = "f1"

    def eval_outputs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _stage_metrics(self, stage: str):
        return (self.val_metric, self.val_geo) if stage == "val" else (self.test_metric, self.test_geo)

    def _eval_step(self, batch: dict, stage: str) -> None:
        pred, target = self.eval_outputs(batch, stage)
        for m in self._stage_metrics(stage):
            if m is not None:
                m.update(pred, target)

    def _eval_epoch_end(self, stage: str) -> None:
        metric, geo = self._stage_metrics(stage)
        if metric.update_count > 0 or self.trainer.world_size > 1:
            for k, v in metric.compute().items():
                self.log(f"{stage}/{k}", torch.as_tensor(v).float(), prog_bar=(k == self.main_metric))
            if geo is not None:
                for k, v in geo.compute().items():
                    self.log(f"{stage}/{k}", torch.as_tensor(v).float())
        for m in (metric, geo):
            if m is not None:
                m.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Logs the val losses and accumulates the val metrics."""
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Logs the epoch's val metrics."""
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """As validation_step, under test/."""
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        """Logs the test metrics."""
        self._eval_epoch_end("test")
