#!/usr/bin/env python
"""The quick-start demo (`make demo`): train and test DECO (recipe deco/synthetic) on the CPU, compare it
with the best constant predictor, and draw predicted vs. ground-truth contact on the body.

The recipe writes what it needs first when it is missing (a synthetic body model in smplx's format
and 700 synthetic DAMON-format samples, seeded), so this is the recipe's own first run:

    python tools/demo.py [--data DIR] [--n N] [--threads T] [overrides for the recipe ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _cli  # noqa: F401  (puts the checkout on sys.path)

RECIPE = "deco/synthetic"
# Intra-op threads for the demo: the cores other processes leave idle. On an idle 2-core machine two
# threads are 1.6x faster than one; with one other CPU-bound process, two threads are 1.3-1.9x slower than
# one (docs/results.md, "Threads").
DEMO_THREADS = "auto"


def constant_baseline(root: Path) -> dict[str, float]:
    """The strongest constant predictor: the per-vertex training-set contact frequency for every image, at
    the threshold that scores best on the test split (zoo.metrics.baselines.constant_contact_f1)."""
    import numpy as np

    from zoo.metrics.baselines import constant_contact_f1

    train = np.load(root / "hot_dca_trainval.npz", allow_pickle=True)["contact_label"]
    test = np.load(root / "hot_dca_test.npz", allow_pickle=True)["contact_label"]
    return constant_contact_f1(train, test)


def main(argv: list[str]) -> int:
    """Run the demo end to end; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", help="where the synthetic body models and data are (or get written)")
    ap.add_argument("--n", type=int, default=700, help="number of synthetic DAMON samples written when none exist")
    ap.add_argument("--threads", default=DEMO_THREADS, help="torch intra-op threads: a number or auto (run.threads)")
    args, overrides = ap.parse_known_args(argv)
    t0 = time.time()
    data = Path(args.data).resolve()
    damon = data / "damon_synthetic"
    os.environ.setdefault("ZOO_BODY_MODELS", str(data / "body_models"))
    os.environ.setdefault("WANDB_MODE", "offline")

    from zoo.core import recipe as R
    from zoo.core import run

    rec = R.load(RECIPE, [f"data.root={damon}", f"data.synthesize.n={args.n}", f"run.threads={args.threads}",
                          *overrides])
    print(f"[demo] training {RECIPE} ({rec['trainer']['max_epochs']} epochs)", flush=True)
    res = run.train(rec)
    if res.exit_code:
        return res.exit_code
    base = constant_baseline(damon)
    figs = sorted((res.run_dir / "figures").glob("test_contact_*.png"))
    f1 = res.metrics.get("test/f1", float("nan"))
    print(f"\n[demo] test F1 {f1:.3f} vs. best constant predictor {base['f1']:.3f} (training frequency per "
          f"vertex, threshold {base['threshold']:.2f} chosen on the test split; margin {f1 - base['f1']:+.3f}; "
          f"target >= +0.15)")
    print(f"[demo] contact figures (predicted vs. ground truth, 4 views): {', '.join(map(str, figs)) or 'none'}")
    print(f"[demo] metrics: {res.run_dir / 'metrics.json'}; exported model: {res.export_dir}")
    print(f"[demo] total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
