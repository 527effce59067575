"""deco/synthetic through the real tools: loss goes down, resume is exact, export reloads, eval agrees."""
import csv
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import eval as eval_tool  # noqa: E402
import train as train_tool  # noqa: E402

FAST = ["trainer.limit_val_batches=1", "trainer.log_every_n_steps=1", "data.batch_size=8", "data.image_size=128"]


def _train(root, *args) -> Path:
    os.environ["ZOO_RUN_DIR"] = ""
    assert train_tool.main(["recipe=deco/synthetic", f"data.root={root}", *FAST, *args]) == 0
    return Path(os.environ["ZOO_RUN_DIR"])


def test_fit_loss_decreases_and_exports(synth, in_tmp):
    _, damon = synth
    run = _train(damon, "logger=csv", "trainer.max_epochs=4", "run.name=fit")
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 12
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.95 * first, f"training loss did not go down: {first:.3f} -> {last:.3f}"
    m = json.loads((run / "metrics.json").read_text())
    assert {"test/f1", "test/precision", "test/recall"} <= set(m) and 0.0 <= m["test/f1"] <= 1.0

    from PIL import Image

    figs = sorted((run / "figures").glob("contact_test_*.png"))
    assert len(figs) == 3
    img = Image.open(figs[0])
    assert img.width > img.height >= 256, "a grid of views: predicted row over ground-truth row"

    import zoo

    model = zoo.load(run / "export").eval()
    ck = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck["state_dict"][k]), f"export differs from best.ckpt at {k}"

    assert eval_tool.main(["recipe=deco/synthetic", f"data.root={damon}", f"ckpt={run / 'export'}",
                           "data.batch_size=8"]) == 0
    ev = json.loads((run / "export" / "eval_metrics.json").read_text())
    assert abs(ev["test/f1"] - m["test/f1"]) < 1e-5, "eval of the export must reproduce the run's test F1"


def test_resume_equals_uninterrupted(synth, in_tmp, same_last_checkpoint):
    _, damon = synth
    base = ["logger=none", "test=false", "export=false", "checkpoint.monitor=null"]
    full = _train(damon, *base, "trainer.max_epochs=3", "run.name=full")
    part = _train(damon, *base, "trainer.max_epochs=1", "run.name=part")
    resumed = _train(damon, *base, "trainer.max_epochs=3", f"resume={part}")
    same_last_checkpoint(full, resumed)
