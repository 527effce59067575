#!/usr/bin/env python
"""Train a recipe, then test its best checkpoint.

    python tools/train.py recipe=deco/synthetic [key=value ...] [--print]

Writes runs/<recipe>/<time>/ with resolved.yaml, checkpoints/, metrics.json (flat test
metrics) and export/ (model.safetensors + config.yaml for zoo.load). `resume=last` or
`resume=PATH` continues an interrupted run (weights, optimiser, loops, RNG, W&B run id).
"""
from __future__ import annotations

import sys

from _cli import fail, split_args

USAGE = __doc__


def main(argv: list[str]) -> int:
    """Entry point; returns the process exit code."""
    name, overrides, flags = split_args(argv, USAGE)
    from zoo.core import recipe as R

    try:
        rec = R.load(name, overrides)
    except (R.RecipeError, FileNotFoundError) as e:
        fail(str(e))
    if "--print" in flags:
        print(rec.to_yaml(), end="")
        return 0

    import lightning as L

    from zoo.core import run

    L.seed_everything(rec["seed"], workers=True, verbose=False)
    try:
        run_dir, resume_ckpt = run.prepare_run_dir(rec)
    except FileNotFoundError as e:
        fail(str(e))
    if run.is_global_zero():
        run.write_text_atomic(run_dir / "resolved.yaml", rec.to_yaml())
    system, data = run.build_components(rec)
    logger, wandb_id = run.build_logger(rec, run_dir, resume_ckpt)
    extra = []
    if rec["logger"].get("log_images", True):
        from zoo.systems.callbacks import ContactFigures

        extra.append(ContactFigures(run_dir / "figures"))
    trainer = run.build_trainer(rec, run_dir, logger, wandb_id, extra_callbacks=extra)
    failed = True
    try:
        code = _fit_test_export(rec, run_dir, resume_ckpt, system, data, trainer)
        failed = code != 0
        return code
    finally:
        run.finish_logger(logger, failed=failed)


def _fit_test_export(rec, run_dir, resume_ckpt, system, data, trainer) -> int:
    """Fit (resuming from ``resume_ckpt``), test the best checkpoint, write metrics.json and the export."""
    from zoo.core import run

    trainer.fit(system, datamodule=data, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    if trainer.interrupted:
        print(f"interrupted; resume with: python tools/train.py recipe={rec.name} resume={run_dir}", file=sys.stderr)
        return 130
    metrics = {}
    if rec.get("test", True) and data is not None:
        ck = trainer.checkpoint_callback
        best = ck.best_model_path if ck is not None and ck.best_model_path else None
        trainer.test(system, datamodule=data, ckpt_path=best, weights_only=False)
        metrics = run.flat_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        run.write_metrics(run_dir / "metrics.json", metrics)
        if rec.get("export", True):
            from zoo.core import hub

            hub.export(system, run_dir / "export", extra={"recipe": rec.name, "metrics": metrics})
        if metrics:
            run.print_metrics(metrics, title=f"{rec.name}: test metrics")
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
