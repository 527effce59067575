#!/usr/bin/env python
"""Evaluate a checkpoint on a recipe's test split.

    python tools/eval.py recipe=deco/synthetic ckpt=PATH|NAME [key=value ...]

ckpt may be a Lightning .ckpt, an exported directory (model.safetensors + config.yaml)
or a checkpoint name from registry.yaml. Prints the metrics and writes them as JSON
next to the checkpoint (or to out=FILE).
"""
from __future__ import annotations

import sys
from pathlib import Path

from _cli import fail, split_args

USAGE = __doc__


def main(argv: list[str]) -> int:
    """Entry point; returns the process exit code."""
    out = [a.partition("=")[2] for a in argv if a.startswith("out=")]
    argv = [a for a in argv if not a.startswith("out=")]
    name, overrides, _ = split_args(argv, USAGE)
    from zoo.core import recipe as R

    try:
        rec = R.load(name, overrides + ["logger.name=none", "resume=null"])
    except (R.RecipeError, FileNotFoundError) as e:
        fail(str(e))
    if not rec.get("ckpt"):
        fail("eval needs ckpt=PATH (a .ckpt, an export directory, or a registry checkpoint name)")
    import lightning as L

    from zoo.core import hub, registry, run

    L.seed_everything(rec["seed"], workers=True, verbose=False)
    try:
        system = hub.load(rec["ckpt"])
    except (FileNotFoundError, ValueError, registry.RegistryError) as e:
        fail(str(e))
    data = registry.build("datamodule", rec["data"])
    tcfg = {k: v for k, v in (rec.get("trainer") or {}).items()
            if k in ("accelerator", "devices", "precision", "limit_test_batches")}
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False, **tcfg)
    trainer.test(system, datamodule=data)
    metrics = run.flat_metrics(trainer.callback_metrics)
    ck = Path(rec["ckpt"])
    dest = Path(out[0]) if out else (ck if ck.is_dir() else ck.parent) / "eval_metrics.json"
    if trainer.is_global_zero:
        run.write_metrics(dest, metrics)
        run.print_metrics(metrics, title=f"{rec.name}: {rec['ckpt']}")
        print(f"metrics written to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
