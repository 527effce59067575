#!/usr/bin/env python
"""Evaluate a checkpoint on a recipe's test split (the same as `hoi-zoo eval`).

    python tools/eval.py recipe=deco/synthetic ckpt=PATH|NAME [key=value ...] [out=FILE]

ckpt may be a Lightning .ckpt, an exported directory (model.safetensors + config.yaml; frozen
parts it references are fetched from the checkpoint store) or a checkpoint name from
registry.yaml. Prints the metrics and writes them as JSON next to the checkpoint (or to out=FILE).
"""
from __future__ import annotations

import sys

import _cli  # noqa: F401  (puts the checkout on sys.path)

from zoo.core.run import cli

if __name__ == "__main__":
    raise SystemExit(cli("eval", sys.argv[1:], usage=__doc__))
