#!/usr/bin/env python
"""Train a recipe, then test its best checkpoint (the same as `hoi-zoo train`).

    python tools/train.py recipe=deco/synthetic [key=value ...] [--print]

Writes runs/<recipe>/<time>/ with resolved.yaml, checkpoints/, metrics.json (flat test
metrics), figures/ and export/ (model.safetensors + config.yaml for zoo.load). `resume=last` or
`resume=PATH` continues an interrupted run (weights, optimiser, loops, RNG, W&B run id).
`run.mode=test` or `run.mode=predict` in the recipe (or on the command line) evaluates or
predicts instead of training.
"""
from __future__ import annotations

import sys

import _cli  # noqa: F401  (puts the checkout on sys.path)

from zoo.core.run import cli

if __name__ == "__main__":
    raise SystemExit(cli("train", sys.argv[1:], usage=__doc__))
