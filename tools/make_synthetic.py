#!/usr/bin/env python
"""Write synthetic data in the real on-disk formats.

    python tools/make_synthetic.py body  --out DIR              # smplx-format synthetic body models
    python tools/make_synthetic.py damon --n N --out DIR --seed S  # DAMON-format contact data
    python tools/make_synthetic.py piad  --n N --out DIR --seed S [--settings Seen Unseen]  # PIAD-format affordance data
    python tools/make_synthetic.py lemon --n N --out DIR --seed S  # LEMON/3DIR-format human contact + object affordance
    python tools/make_synthetic.py scenes --n N --out DIR --seed S [--size 256] [--contact-files]  # human-object scene folders with gt object pose
"""
from __future__ import annotations

import sys

import _cli  # noqa: F401  (puts the checkout on sys.path)

GENERATORS = {
    "body": "zoo.body.synthetic",
    "damon": "zoo.data.synthetic.damon",
    "piad": "zoo.data.synthetic.piad",
    "lemon": "zoo.data.synthetic.lemon",
    "scenes": "zoo.data.synthetic.scenes",
}


def main(argv: list[str]) -> int:
    """Dispatch to the generator's own cli(args)."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in GENERATORS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return int(importlib.import_module(GENERATORS[argv[0]]).cli(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
