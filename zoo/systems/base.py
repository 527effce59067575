"""The System base every method subclasses (DECO, MV-Loc, InteractVLM, ...).

A system composes registered parts it receives as sub-recipes, and the base owns what every
system repeats:

* composition: :meth:`System.build_part` builds a sub-recipe through the registry (a kind, or a
  :class:`zoo.core.registry.Parts` table listed in ``subcomponents``). Parts are created in
  :meth:`System.build`, which ``configure_model`` calls once, inside the strategy's initialisation
  context (so DeepSpeed / FSDP can shard large parts as they are created); then each part's
  pretrained weights load, then the system's own ``weights`` (build first, load second);
* the optimiser and LR schedule from the ``optim:`` sub-recipe (zoo.systems.optim);
* evaluation metrics from the ``metrics:`` list of registered metrics, updated in validation / test
  and logged per epoch as ``val/<key>`` / ``test/<key>`` (DDP-safe: computed on every rank). An
  entry's ``log_prefix`` (e.g. ``deco/``) goes before its keys, so two entries that report the
  same keys (two thresholds, two conventions) can sit in one list. A metric whose ``update`` needs
  more of the batch than :meth:`System.metric_inputs` declares the batch keys in a ``batch_keys``
  class attribute (e.g. ``("imgname",)``); they are passed by keyword
  (:meth:`System.metric_batch_inputs`);
* loss logging (``train/<term>`` per step, ``val/<term>`` / ``test/<term>`` per epoch);
* the ``figures(batch, n)`` hook the run loop's figure callback calls.

A subclass implements :meth:`build`, :meth:`step` (batch -> losses and outputs),
:meth:`metric_inputs` (what the metrics' ``update`` takes), ``predict_step`` and, if it draws any,
:meth:`figures`; its constructor takes ``optim`` and ``metrics`` (and optionally ``weights``) and
calls ``self.save_hyperparameters()``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from zoo.core import registry
from zoo.core.batch import BatchKeyError
from zoo.core.hub import Pretrained
from zoo.core.interfaces import System as SystemInterface
from zoo.systems.optim import build_optimizers

__all__ = ["System"]


_WHERE = {"train": "training_step", "val": "validation_step", "test": "test_step", "predict": "predict_step"}


class System(Pretrained, SystemInterface, L.LightningModule):
    """Base LightningModule of every zoo system (see the module docstring)."""

    subcomponents: ClassVar[dict[str, Any]] = {"metrics": "metric"}
    # Hyper-parameters that change how a trained model is evaluated, not what it learned: ``tools/eval.py``
    # applies overrides of these to a loaded checkpoint (apply_eval_settings) and refuses any other.
    eval_settings: ClassVar[tuple[str, ...]] = ("metrics",)
    # False for fitting systems (zoo.systems.fitting): they optimise per sample and evaluate without a checkpoint.
    learned: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._built = False

    # ----------------------------------------------------------------- to implement
    def build(self) -> None:
        """Create the system's modules from its hyper-parameters (called once, by ``configure_model``)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement build()")

    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], Any]:
        """Forward and losses for ``stage`` (train / val / test): ({"loss": total, <term>: value, ...}, outputs)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement step(batch, stage)")

    def metric_inputs(self, batch: dict, out: Any) -> tuple:
        """The positional arguments of every metric's ``update`` for a batch and its outputs."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement metric_inputs(batch, out)")

    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, Any]]:
        """PNG-ready (name, uint8 (H, W, 3)) figures for the first ``n`` samples of a test batch ([]: none)."""
        return []

    def batch_size(self, batch: dict, out: Any) -> int:
        """Samples in the batch (for logging): the first tensor's leading size."""
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.ndim > 0:
                return int(v.shape[0])
        return 1

    @staticmethod
    def where(stage: str) -> str:
        """The Lightning hook name of a stage, for error messages."""
        return _WHERE.get(stage, f"{stage}_step")

    # ----------------------------------------------------------------- composition
    def build_part(self, key: str, cfg: Any = None, **extra: Any) -> Any:
        """Build hyper-parameter ``key`` (or ``cfg``) through the registry kind or Parts table that
        ``subcomponents[key]`` names, and materialize it (its deferred modules, then its pretrained
        weights). Call it from :meth:`build`, which runs inside ``configure_model``."""
        kind = self.subcomponents[key]
        return registry.build(kind, self.hparams[key] if cfg is None else cfg, materialize=True, **extra)

    def configure_model(self) -> None:
        """Create the metrics and the parts (once; parts load their pretrained weights as they are built),
        then load the system's own ``weights`` if the recipe names any."""
        if self._built:
            return
        self._build_metrics()
        self.build()
        self._built = True
        self.load_pretrained()

    def apply_eval_settings(self, settings: dict[str, Any]) -> None:
        """Change evaluation-time hyper-parameters (``eval_settings``) of a built system: the hparams
        record the new values, and the metrics are rebuilt when ``metrics`` changes."""
        bad = sorted(set(settings) - set(self.eval_settings))
        if bad:
            raise ValueError(f"{type(self).__qualname__}: {', '.join(bad)} cannot be changed after training "
                             f"(evaluation-time settings: {', '.join(self.eval_settings) or 'none'})")
        for key, value in settings.items():
            self.hparams[key] = value
            cfg = self.__dict__.get("_zoo_config")
            if isinstance(cfg, dict):
                cfg[key] = value
        if "metrics" in settings and self._built:
            device = next((t.device for t in self.parameters()), torch.device("cpu"))
            self._build_metrics()
            self.val_metrics.to(device)
            self.test_metrics.to(device)

    def apply_convention(self, convention: str, name_keys: tuple[str, ...] = ()) -> list[dict]:
        """Evaluate under ``convention`` (deco | interactvlm | both): every metric of ``metrics`` gets that
        convention's rules, and the DAMON summaries the data's per-sample ``name_keys`` allow are added
        (:mod:`zoo.metrics.conventions`); applied as an evaluation-time setting. Returns the new list."""
        from zoo.metrics.conventions import metrics_for_convention

        new = metrics_for_convention([dict(m) for m in self.hparams.get("metrics") or []], convention, name_keys)
        self.apply_eval_settings({"metrics": new})
        return new

    def _build_metrics(self) -> None:
        """``val_metrics`` / ``test_metrics`` from ``hparams.metrics``; each entry's ``log_prefix`` (not a
        constructor argument) is kept in ``metric_prefixes``."""
        cfgs = [dict(c) for c in self.hparams.metrics or []]
        self.metric_prefixes = [str(c.pop("log_prefix", "") or "") for c in cfgs]
        self.val_metrics = nn.ModuleList([self.build_part("metrics", c) for c in cfgs])
        self.test_metrics = nn.ModuleList([self.build_part("metrics", c) for c in cfgs])

    def pretrained_keys(self) -> set[str]:
        """State keys a whole-system weights file must provide: all but those its parts loaded themselves."""
        own = set(self.state_dict())
        for prefix, mod in self.named_modules():
            rec = mod.__dict__.get("_zoo_weights") if mod is not self else None
            if rec:
                own -= {f"{prefix}.{k}" for k in rec["keys"]}
        return own

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """Optimiser and schedule from the ``optim:`` sub-recipe (zoo.systems.optim)."""
        return build_optimizers(self, self.hparams.optim)

    def log_losses(self, losses: dict[str, torch.Tensor], stage: str, batch_size: int) -> None:
        """``<stage>/<term>`` for every loss term: per step in training, per epoch (synced) otherwise."""
        on_step = stage == "train"
        for k, v in losses.items():
            self.log(f"{stage}/{k}", v, prog_bar=(k == "loss"), on_step=on_step, on_epoch=not on_step,
                     batch_size=batch_size, sync_dist=not on_step)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; logs train/loss and its terms."""
        losses, out = self.step(batch, "train")
        self.log_losses(losses, "train", self.batch_size(batch, out))
        return losses["loss"]

    # ----------------------------------------------------------------- evaluation
    def _metrics(self, stage: str) -> nn.ModuleList:
        return self.val_metrics if stage == "val" else self.test_metrics

    def metric_batch_inputs(self, metric: Any, batch: dict, stage: str = "test") -> dict[str, Any]:
        """The keyword arguments of ``metric.update`` beyond :meth:`metric_inputs`: the batch entries named
        in the metric's ``batch_keys`` (none for most metrics). A missing key is a BatchKeyError naming it."""
        keys = tuple(getattr(metric, "batch_keys", ()) or ())
        missing = [k for k in keys if k not in batch]
        if missing:
            raise BatchKeyError(f"{type(self).__qualname__}.{self.where(stage)}: metric {type(metric).__name__} needs "
                            f"batch key(s) {', '.join(map(repr, missing))}, which this data's batches do not carry "
                            f"(they have {', '.join(sorted(map(str, batch)))}); DAMON batches carry 'imgname', and "
                            f"'object_name' with data.contact_mode=semantic")
        return {k: batch[k] for k in keys}

    def _eval_step(self, batch: dict, stage: str) -> None:
        losses, out = self.step(batch, stage)
        self.log_losses(losses, stage, self.batch_size(batch, out))
        inputs = self.metric_inputs(batch, out)
        for m in self._metrics(stage):
            m.update(*inputs, **self.metric_batch_inputs(m, batch, stage))

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self._metrics(stage)
        prefixes = getattr(self, "metric_prefixes", None) or [""] * len(metrics)
        main = getattr(metrics[0], "main_key", None) if len(metrics) else None
        logged: dict[str, str] = {}
        for m, prefix in zip(metrics, prefixes, strict=True):
            # Computed on every rank (even one that saw no batch), so DDP's collective sync never hangs.
            if m.update_count > 0 or self.trainer.world_size > 1:
                for k, v in m.compute().items():
                    key = f"{stage}/{prefix}{k}"
                    if key in logged:
                        raise ValueError(f"{type(self).__qualname__}: metrics {logged[key]} and {type(m).__name__} "
                                         f"both report '{prefix}{k}'; keep one of them in system.metrics, or give "
                                         f"one a log_prefix")
                    logged[key] = type(m).__name__
                    self.log(key, torch.as_tensor(v).float(), prog_bar=(k == main and m is metrics[0]))
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
