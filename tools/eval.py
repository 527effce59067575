#!/usr/bin/env python
"""Evaluate a checkpoint on a recipe's test split (the same as `hoi-zoo eval`).

    python tools/eval.py recipe=deco/synthetic ckpt=PATH|NAME [convention=deco|interactvlm|both]
                         [key=value ...] [out=FILE]

ckpt may be a Lightning .ckpt, an exported directory (model.safetensors + config.yaml; frozen
parts it references are fetched from the checkpoint store) or a checkpoint name from
registry.yaml. Prints the metrics and writes them as JSON next to the checkpoint (or to out=FILE).

convention= sets the rules of every metric of the system (zoo/metrics/conventions.py):
  deco         contact metrics with DECO's rules (empty prediction: P = 1; mean over images),
               affordance metrics with IAGNet's; no DAMON summary.
  interactvlm  contact and affordance metrics with InteractVLM's rules (empty prediction or GT:
               P = R = F1 = 0; single-class affordance GT dropped), plus its DAMON tables when the
               data carries the names: damon_binary (imgname: per-image union over objects, F1
               averaged per image, P and R pooled) and, with data.contact_mode=semantic,
               damon_semantic (object_name: per-object and per-category rows, weighted F1).
  both         both sets from one pass, logged as test/deco/... and test/interactvlm/... and
               printed side by side.
Without it the metrics run as the checkpoint was trained (system.metrics=[...] changes them).
"""
from __future__ import annotations

import sys

import _cli  # noqa: F401  (puts the checkout on sys.path)

from zoo.core.run import cli

if __name__ == "__main__":
    raise SystemExit(cli("eval", sys.argv[1:], usage=__doc__))
