"""Fitting systems: per-sample optimisation (PHOSA, contact-guided reconstruction) on the System base.

A learned system trains weights with ``fit``; a fitting system has no weights to train. For every
input sample it creates a fresh *state* (the tensors it optimises, e.g. an object's 6D rotation,
translation and log-scale), then runs its *stages* in order — each with its own optimiser, step count
and learning rate per state tensor — against an *objective* (a dict of weighted loss terms), and
turns the final state into a *result* (the object placed in the camera frame, its pose and scale).

It runs under the run loop like any system, with gradients enabled inside the evaluation loops
(Lightning's inference mode is switched off around the optimisation; the inputs are cloned out of it):

* ``run.mode: test`` (``tools/eval.py recipe=phosa/default``): fits every test sample and updates the
  ``metrics:`` with (results, samples); the final objective terms are logged as ``test/<term>``;
* ``run.mode: predict`` / ``tools/reconstruct.py``: fits every sample and writes its outputs
  (:func:`zoo.systems.scene_io.write_scene`) under ``<run dir>/scenes/<name>/``.

Batches are ``{"samples": [sample dict, ...], "name": [...]}`` (the ``hoi_scenes`` DataModule). The
samples of a batch are optimised together by one optimiser: their states are disjoint and Adam's update
is element-wise, so this equals fitting each alone, and a renderer can draw them in one call.

A subclass implements :meth:`initial_state` (may itself run a search, as PHOSA's rotation search),
:meth:`objective` and :meth:`result`, and lists its stage names in ``STAGES``; the ``stages:`` recipe
entry gives each stage's steps and per-tensor learning rates::

    stages:
      - {name: joint, steps: 400, lr: {rot6d: 1.0e-3, translation: 1.0e-3, log_scale: 1.0e-3}}
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from zoo.core.batch import BatchKeyError
from zoo.core.recipe import ConfigError
from zoo.systems.base import System

__all__ = ["FittingSystem", "Stage", "parse_stages", "clone_sample"]


@dataclass
class Stage:
    """One optimisation stage: ``steps`` Adam steps on the state tensors named in ``lr`` (name -> lr)."""

    name: str
    steps: int
    lr: dict[str, float] = field(default_factory=dict)
    optimizer: str = "adam"


def parse_stages(system: str, stages: list[dict] | None, allowed: tuple[str, ...], tensors: tuple[str, ...]
                 ) -> list[Stage]:
    """Check a ``stages:`` recipe list against the system's stage names and state tensors."""
    out = []
    for i, raw in enumerate(stages or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(("stages", i), f"{system}: a stage must be a mapping with name, steps and lr, got {raw!r}")
        extra = sorted(set(raw) - {"name", "steps", "lr", "optimizer"})
        if extra:
            raise ConfigError(("stages", i), f"{system}: unknown key(s) {', '.join(extra)} (a stage has name, steps, "
                                             f"lr, optimizer)")
        name = str(raw["name"])
        if name not in allowed:
            raise ConfigError(("stages", i, "name"), f"unknown stage '{name}' ({system} has stages "
                                                     f"{', '.join(allowed)})")
        steps = raw.get("steps", 0)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ConfigError(("stages", i, "steps"), f"must be an integer >= 0, got {steps!r}")
        lr = raw.get("lr") or {}
        if isinstance(lr, int | float):
            lr = {t: float(lr) for t in tensors}
        if not isinstance(lr, dict):
            raise ConfigError(("stages", i, "lr"), f"must be a number or a mapping state tensor -> lr, got {lr!r}")
        bad = sorted(set(lr) - set(tensors))
        if bad:
            raise ConfigError(("stages", i, "lr"), f"unknown state tensor(s) {', '.join(bad)} ({system} optimises "
                                                   f"{', '.join(tensors)})")
        for k, v in lr.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0 or math.isinf(v):
                raise ConfigError(("stages", i, "lr", k), f"must be a finite number >= 0, got {v!r}")
        opt = str(raw.get("optimizer", "adam"))
        if opt not in ("adam", "adamw", "sgd"):
            raise ConfigError(("stages", i, "optimizer"), f"must be adam, adamw or sgd, got {opt!r}")
        out.append(Stage(name, steps, {k: float(v) for k, v in lr.items() if v > 0}, opt))
    return out


def clone_sample(sample: dict) -> dict:
    """A copy of a sample whose tensors are ordinary (not inference-mode) tensors, usable in autograd."""
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sample.items()}


class FittingSystem(System):
    """Base of per-sample optimisation systems (see the module docstring)."""

    learned: ClassVar[bool] = False
    STAGES: ClassVar[tuple[str, ...]] = ()
    STATE: ClassVar[tuple[str, ...]] = ()  # the state tensors a stage may optimise
    eval_settings: ClassVar[tuple[str, ...]] = ("metrics", "stages", "progress")

    # ----------------------------------------------------------------- to implement
    def initial_state(self, sample: dict, index: int) -> dict[str, torch.Tensor]:
        """Fresh state tensors (leaf tensors; requires_grad is set by the stages) for one sample."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement initial_state(sample, index)")

    def objective(self, state: dict[str, torch.Tensor], sample: dict, stage: str) -> dict[str, torch.Tensor]:
        """{"loss": weighted total, <term>: unweighted value, ...} for one sample's state in ``stage``."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement objective(state, sample, stage)")

    def result(self, state: dict[str, torch.Tensor], sample: dict) -> dict[str, Any]:
        """The fitting result of one sample (zoo.systems.scene_io documents its keys)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement result(state, sample)")

    # ----------------------------------------------------------------- the loop
    def build(self) -> None:
        """Fitting systems own no trained modules; subclasses build their renderer here."""

    def stage_list(self) -> list[Stage]:
        """The recipe's stages, checked."""
        return parse_stages(type(self).__name__, self.hparams.get("stages"), self.STAGES, self.STATE)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Fitting systems have nothing to train: an error that says how to run them."""
        raise RuntimeError(f"{type(self).__name__} optimises each sample on its own and has no weights to train: "
                          f"run it with run.mode=test (tools/eval.py, metrics on data with ground truth) or "
                          f"run.mode=predict / tools/reconstruct.py (writes each scene)")

    def configure_optimizers(self) -> Any:
        """Each stage builds its own optimiser per batch (:meth:`fit_samples`); Lightning gets none."""
        return None

    def batch_size(self, batch: dict, out: Any) -> int:
        """Samples in a ``{"samples": [...]}`` batch."""
        return len(batch.get("samples") or []) or 1

    def _optimizer(self, stage: Stage, groups: list[dict]) -> torch.optim.Optimizer:
        if stage.optimizer == "sgd":
            return torch.optim.SGD(groups)
        if stage.optimizer == "adamw":
            return torch.optim.AdamW(groups, weight_decay=0.0)  # no decay of pose parameters
        return torch.optim.Adam(groups)

    def run_stage(self, stage: Stage, states: list[dict[str, torch.Tensor]], samples: list[dict],
                  bar: Any = None) -> list[dict[str, torch.Tensor]]:
        """``stage.steps`` optimiser steps on the sum of the samples' objectives; returns the last terms."""
        groups = []
        for st in states:
            for key, lr in stage.lr.items():
                t = st[key]
                t.requires_grad_(True)
                groups.append({"params": [t], "lr": lr})
        terms: list[dict[str, torch.Tensor]] = []
        if not groups or stage.steps == 0:
            with torch.no_grad():
                return [self.objective(st, s, stage.name) for st, s in zip(states, samples, strict=True)]
        opt = self._optimizer(stage, groups)
        for _ in range(stage.steps):
            opt.zero_grad(set_to_none=True)
            terms = [self.objective(st, s, stage.name) for st, s in zip(states, samples, strict=True)]
            total = sum(t["loss"] for t in terms)
            if not torch.isfinite(total):
                bad = [s.get("name", str(i)) for i, (t, s) in enumerate(zip(terms, samples, strict=True))
                       if not torch.isfinite(t["loss"])]
                raise FloatingPointError(f"{type(self).__name__}: stage {stage.name}: the objective is not finite "
                                         f"for sample(s) {', '.join(map(str, bad))}")
            total.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
        for st in states:
            for t in st.values():
                if isinstance(t, torch.Tensor):
                    t.requires_grad_(False)
        with torch.no_grad():
            return [self.objective(st, s, stage.name) for st, s in zip(states, samples, strict=True)]

    def fit_samples(self, samples: list[dict]) -> tuple[list[dict], list[dict[str, float]]]:
        """Fit every sample of a batch: (results, final objective terms as floats)."""
        stages = self.stage_list()
        with torch.inference_mode(False), torch.enable_grad():
            samples = [clone_sample(s) for s in samples]
            states = [self.initial_state(s, i) for i, s in enumerate(samples)]
            bar = self._step_bar(sum(s.steps for s in stages), samples)
            terms = None
            try:
                for stage in stages:
                    terms = self.run_stage(stage, states, samples, bar)
            finally:
                if bar is not None:
                    bar.close()
            if terms is None:
                with torch.no_grad():
                    terms = [self.objective(st, s, "final") for st, s in zip(states, samples, strict=True)]
            with torch.no_grad():
                results = [self.result(st, s) for st, s in zip(states, samples, strict=True)]
        final = [{k: float(v.detach()) for k, v in t.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
                 for t in terms]
        for r, f in zip(results, final, strict=True):
            r["objective"] = f
        return results, final

    def _step_bar(self, total: int, samples: list[dict]):
        if not self.hparams.get("progress") or total == 0:
            return None
        from tqdm.auto import tqdm

        names = ", ".join(str(s.get("name", "?")) for s in samples)
        return tqdm(total=total, desc=f"fitting {names}", leave=False, position=1, dynamic_ncols=True)

    # ----------------------------------------------------------------- run-loop hooks
    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], Any]:
        """Fit a batch; losses = the mean final objective terms over its samples."""
        samples = batch.get("samples")
        if not samples:
            raise BatchKeyError(f"{type(self).__name__}.{self.where(stage)}: a batch must carry 'samples' (a list of "
                              f"scene dicts, as the hoi_scenes DataModule yields), got keys {sorted(batch)}")
        results, final = self.fit_samples(samples)
        keys = sorted(set().union(*final))
        losses = {k: torch.tensor(sum(f.get(k, 0.0) for f in final) / len(final)) for k in keys}
        return losses, (results, samples)

    def metric_inputs(self, batch: dict, out: Any) -> tuple:
        """(results, samples) for every reconstruction metric's update."""
        results, samples = out
        return results, samples

    def _eval_step(self, batch: dict, stage: str) -> None:
        losses, out = self.step(batch, stage)
        self.log_losses(losses, stage, self.batch_size(batch, out))
        for m in self._metrics(stage):
            m.update(*self.metric_inputs(batch, out))
        self._write(out[0], out[1])

    def predict_step(self, batch: dict, batch_idx: int = 0) -> list[dict]:
        """Fit the batch and write each scene (when a run directory is set); returns JSON-able summaries."""
        _, (results, samples) = self.step(batch, "predict")
        written = self._write(results, samples)
        from zoo.systems.scene_io import summary

        return [summary(r, s) | ({"folder": str(w)} if w else {})
                for r, s, w in zip(results, samples, written, strict=True)]

    def _write(self, results: list[dict], samples: list[dict]) -> list:
        """Write scene outputs under ``<run dir>/scenes`` when the run loop set a run directory."""
        from zoo.core.run import RUN_DIR_ENV

        root = os.environ.get(RUN_DIR_ENV)
        if not root or not self.hparams.get("write", True):
            return [None] * len(results)
        from zoo.systems.scene_io import write_scene

        out = []
        for r, s in zip(results, samples, strict=True):
            try:
                out.append(write_scene(os.path.join(root, "scenes"), r, s))
            except (OSError, ValueError) as e:  # a figure that cannot be written loses no fitting result
                warnings.warn(f"{type(self).__name__}: could not write the outputs of {s.get('name')}: {e}",
                              stacklevel=2)
                out.append(None)
        return out

    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, Any]]:
        """Fitting systems write their per-scene pictures with the results (scene_io), none here."""
        return []
