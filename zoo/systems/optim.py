"""The ``optim:`` sub-recipe every system shares: optimiser, parameter groups and learning-rate schedule.

::

    optim:
      name: adamw            # adam | adamw | sgd
      lr: 3.0e-4
      betas: [0.9, 0.95]     # adam / adamw (null: torch's default 0.9, 0.999)
      weight_decay: 0.0
      schedule: linear       # constant | linear | cosine | plateau
      warmup_steps: 100      # linear warm-up from lr/warmup_steps (step-wise schedules)
      total_steps: null      # end of the decay; null = the trainer's estimated optimiser steps
      groups:                # optional: parameters by fnmatch pattern on their names, own settings
        - {params: "rll.lifter.*", lr: 1.0e-3}

``linear`` decays linearly to ``min_lr_ratio * lr`` at ``total_steps`` after the warm-up (DeepSpeed's
WarmupDecayLR, which InteractVLM uses); ``cosine`` follows half a cosine instead; ``plateau`` multiplies
the lr by ``plateau_factor`` after ``plateau_patience`` validation epochs without improvement of
``plateau_monitor`` (DECO's schedule). Only trainable parameters (``requires_grad``) are optimised;
each one goes to the first group whose pattern matches its name, the rest to the base settings.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from zoo.core.recipe import ConfigError

__all__ = ["Optim", "ParamGroup", "parse_optim", "build_optimizers", "lr_factor"]


@dataclass
class ParamGroup:
    """Parameters whose names match ``params`` (an fnmatch pattern or a list of them), with their own settings."""

    params: str | list[str]
    lr: float | None = None
    weight_decay: float | None = None
    betas: list[float] | None = None


@dataclass
class Optim:
    """Optimiser and schedule settings (see the module docstring)."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    betas: list[float] | None = None
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    schedule: Literal["constant", "linear", "cosine", "plateau"] = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None
    min_lr_ratio: float = 0.0
    plateau_monitor: str | None = None
    plateau_mode: Literal["min", "max"] = "max"
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    groups: list[ParamGroup] = field(default_factory=list)


def parse_optim(cfg: dict | Optim | None) -> Optim:
    """An :class:`Optim` from its sub-recipe; unknown keys and bad values raise ConfigError naming the key."""
    if isinstance(cfg, Optim):
        return cfg
    cfg = dict(cfg or {})
    known = {f.name for f in dataclasses.fields(Optim)}
    for key in cfg:
        if key not in known:
            raise ConfigError(("optim", key), f"unknown optimiser setting; valid keys: {', '.join(sorted(known))}")
    groups = []
    gknown = {f.name for f in dataclasses.fields(ParamGroup)}
    for i, g in enumerate(cfg.pop("groups", None) or []):
        if not isinstance(g, dict) or "params" not in g:
            raise ConfigError(("optim", "groups", i), f"a parameter group needs a 'params' pattern, got {g!r}")
        for key in g:
            if key not in gknown:
                raise ConfigError(("optim", "groups", i, key), f"unknown group setting; valid: {', '.join(sorted(gknown))}")
        groups.append(ParamGroup(**g))
    opt = Optim(**cfg, groups=groups)
    if opt.lr <= 0:
        raise ConfigError(("optim", "lr"), f"must be positive, got {opt.lr}")
    if opt.warmup_steps < 0:
        raise ConfigError(("optim", "warmup_steps"), f"must be >= 0, got {opt.warmup_steps}")
    if opt.betas is not None and len(opt.betas) != 2:
        raise ConfigError(("optim", "betas"), f"must be two numbers, got {opt.betas}")
    if opt.schedule == "plateau" and opt.plateau_monitor is None:
        raise ConfigError(("optim", "plateau_monitor"), "schedule 'plateau' needs the metric to watch, e.g. val/f1")
    return opt


def lr_factor(step: int, warmup: int, total: int | None, schedule: str, min_ratio: float = 0.0) -> float:
    """The lr multiplier at optimiser step ``step`` (0-based) for the step-wise schedules."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total is None or total <= warmup:
        return 1.0
    if schedule == "linear":
        decay = max(0.0, (total - step) / (total - warmup))
    else:  # cosine
        progress = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return decay if not min_ratio else min_ratio + (1.0 - min_ratio) * decay


def _groups(module: torch.nn.Module, opt: Optim, owner: str) -> list[dict[str, Any]]:
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError(("optim",), f"{owner} has no trainable parameter to optimise")
    taken: set[str] = set()
    groups: list[dict[str, Any]] = []
    for i, g in enumerate(opt.groups):
        patterns = [g.params] if isinstance(g.params, str) else list(g.params)
        params = [p for n, p in named if n not in taken and any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
        if not params:
            sample = ", ".join(n for n, _ in named[:4])
            raise ConfigError(("optim", "groups", i, "params"),
                              f"pattern {g.params!r} matches no trainable parameter of {owner} (names look like: "
                              f"{sample}, ...; a parameter already claimed by an earlier group is not matched again)")
        taken.update(n for n, p in named if any(p is q for q in params))
        spec: dict[str, Any] = {"params": params}
        for key in ("lr", "weight_decay"):
            if getattr(g, key) is not None:
                spec[key] = getattr(g, key)
        if g.betas is not None:
            spec["betas"] = tuple(g.betas)
        groups.append(spec)
    rest = [p for n, p in named if n not in taken]
    if rest or not groups:
        groups.insert(0, {"params": rest})
    return groups


def build_optimizers(module: Any, cfg: dict | Optim | None) -> Any:
    """What ``configure_optimizers`` returns for ``module`` (a LightningModule) under ``cfg``."""
    opt = parse_optim(cfg)
    groups = _groups(module, opt, f"{getattr(module, '_zoo_name', type(module).__name__)}")
    if opt.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    else:
        cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
        kw: dict[str, Any] = {"lr": opt.lr, "eps": opt.eps, "weight_decay": opt.weight_decay}
        if opt.betas is not None:
            kw["betas"] = tuple(opt.betas)
        optimizer = cls(groups, **kw)
    if opt.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=opt.plateau_mode, factor=opt.plateau_factor,
                                                           patience=opt.plateau_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "monitor": opt.plateau_monitor,
                                                         "interval": "epoch"}}
    if opt.schedule == "constant" and not opt.warmup_steps:
        return optimizer
    total = opt.total_steps
    trainer = getattr(module, "_trainer", None)
    if total is None and trainer is not None:
        est = trainer.estimated_stepping_batches
        total = int(est) if est is not None and math.isfinite(est) else None
    warm, schedule, ratio = int(opt.warmup_steps), opt.schedule, float(opt.min_lr_ratio)

    def factor(step: int) -> float:
        return lr_factor(step, warm, total, schedule, ratio)

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
