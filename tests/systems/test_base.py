"""The System base: composition through the registry and Parts tables, the optim sub-recipe (groups and
schedules), metrics from the recipe, and the errors bad recipes get (key, file, what was expected)."""
import math
from pathlib import Path

import pytest
import torch

from zoo.core import recipe as R
from zoo.core import registry, run
from zoo.systems.optim import build_optimizers, lr_factor

HERE = Path(__file__).resolve().parent

REGISTRY = """
components:
  system:
    toy_composed: {import: "composed:ToyComposed", summary: "backbone + head"}
  backbone:
    toy_mlp: {import: "composed:ToyMLP", summary: "one linear layer"}
  datamodule:
    toy_dict_blobs: {import: "composed:ToyDictBlobs", summary: "blobs as dict batches"}
  metric:
    contact_prf: {import: "zoo.metrics.contact:ContactPRF", summary: "contact P/R/F1"}
checkpoints: {}
"""

BASE = """\
seed: 0
system:
  name: toy_composed
  backbone: {extends: toy/backbone}
  head: {name: linear}
  optim: {name: adam, lr: 0.05}
  metrics: [{name: contact_prf, threshold: 0.5}]
data: {name: toy_dict_blobs, n: 128, batch_size: 16}
trainer: {accelerator: cpu, devices: 1, max_epochs: 3, log_every_n_steps: 1, num_sanity_val_steps: 0}
logger: {name: none}
checkpoint: {monitor: val/f1, mode: max}
run: {progress: none}
"""


@pytest.fixture
def env(zoo_files):
    return zoo_files(REGISTRY, {"toy/base": BASE, "toy/backbone": "# a fragment\nname: toy_mlp\nwidth: 8\nout_channels: 4\n",
                                "toy/noname": BASE.replace("head: {name: linear}", "head: {dim: 3}")}, HERE)


def test_composed_system_trains_and_reports_recipe_metrics(env):
    rec = R.load("toy/base")
    assert rec.source(("system", "backbone", "width")) == "recipes/toy/backbone.yaml"  # nested fragment
    assert rec.source(("system", "head", "name")) == "recipes/toy/base.yaml"
    res = run.train(rec)
    assert set(res.metrics) == {"test/bce", "test/loss", "test/precision", "test/recall", "test/f1"}
    # one "vertex" per sample: a negative predicted negative scores P=1, R=0, F1=0 (DECO's empty-prediction rule), so
    # a near-perfect classifier has precision ~1 and recall = F1 = the fraction of positive samples
    from composed import ToyDictBlobs

    positives = float(ToyDictBlobs().ds.y.mean())  # the test split is the whole set here
    assert res.metrics["test/precision"] > 0.97 and res.metrics["test/loss"] < 0.4
    assert abs(res.metrics["test/f1"] - positives) < 0.02 and abs(res.metrics["test/recall"] - positives) < 0.02
    import zoo

    model = zoo.load(res.export_dir)
    assert type(model.head).__name__ == "LinearHead" and model.backbone.fc.in_features == 8


def test_parts_table_swaps_the_head_by_name(env):
    m = registry.build("system", R.load("toy/base", ["system.head.name=mlp", "system.head.hidden=5"])["system"])
    assert type(m.head).__name__ == "MLPHead" and m.head.fc[0].out_features == 5
    m.configure_model()  # idempotent: built once
    assert type(m.head).__name__ == "MLPHead"


def test_sub_recipe_without_name(env):
    with pytest.raises(R.RecipeError) as e:
        R.load("toy/noname")
    assert str(e.value) == ("'system.head' (from recipes/toy/noname.yaml) is a head sub-recipe without a 'name' key "
                            "(it has dim); expected one of the heads: linear, mlp")


def test_component_of_the_wrong_kind(env):
    with pytest.raises(R.RecipeError) as e:
        R.load("toy/base", ["system.backbone.name=toy_dict_blobs"])
    assert str(e.value) == ("'system.backbone.name' (from command line): 'toy_dict_blobs' is a datamodule, not a "
                            "backbone (available backbones: toy_mlp)")
    with pytest.raises(R.RecipeError) as e:
        R.load("toy/base", ["system.metrics=[{name: toy_mlp}]"])
    assert str(e.value) == ("'system.metrics[0].name' (from command line): 'toy_mlp' is a backbone, not a metric "
                            "(available metrics: contact_prf)")
    with pytest.raises(R.RecipeError, match=r"^'system.head.name' \(from command line\): unknown head 'lineer'; "
                                            r"closest: linear \(available heads: linear, mlp\)$"):
        R.load("toy/base", ["system.head.name=lineer"])


def test_optim_sub_recipe_is_checked_strictly(env):
    with pytest.raises(R.RecipeError, match=r"^unknown key 'system.optim.lrr' \(from command line\); did you mean lr\? "
                                            r"Valid keys for 'system.optim' \(Optim\): betas, eps, groups, lr"):
        R.load("toy/base", ["system.optim.lrr=0.1"])
    with pytest.raises(R.RecipeError, match=r"'system.optim.schedule' \(from command line\) expects "
                                            r"Literal\['constant', 'linear', 'cosine', 'plateau'\], got str 'step'"):
        R.load("toy/base", ["system.optim.schedule=step"])
    with pytest.raises(R.RecipeError, match=r"unknown key 'system.optim.groups\[0\].lrr'"):
        R.load("toy/base", ["system.optim.groups=[{params: 'head.*', lrr: 1}]"])


def test_group_pattern_matching_nothing_names_key_and_file(env):
    with pytest.raises(R.RecipeError) as e:
        run.train(R.load("toy/base", ["system.optim.groups=[{params: 'lora_*', lr: 0.1}]"]))
    assert str(e.value).startswith(
        "'system.optim.groups[0].params' (from command line): pattern 'lora_*' matches no trainable parameter of "
        "toy_composed (names look like: backbone.fc.weight, backbone.fc.bias, head.fc.weight, head.fc.bias, ...")


def test_parameter_groups_get_their_own_settings(env):
    m = registry.build("system", R.load("toy/base", ["system.optim.groups=[{params: 'backbone.*', lr: 0.01}]"])["system"])
    opt = build_optimizers(m, m.hparams.optim)
    assert isinstance(opt, torch.optim.Adam)
    g0, g1 = opt.param_groups
    assert g0["lr"] == 0.05 and {id(p) for p in g0["params"]} == {id(p) for p in m.head.parameters()}
    assert g1["lr"] == 0.01 and {id(p) for p in g1["params"]} == {id(p) for p in m.backbone.parameters()}
    m.backbone.requires_grad_(False)  # frozen parameters are never optimised (and never matched)
    opt = build_optimizers(m, {"name": "sgd", "lr": 0.1})
    assert [len(g["params"]) for g in opt.param_groups] == [2]


def test_lr_schedules_hand_computed():
    assert [lr_factor(s, 2, 6, "linear") for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    cos = [lr_factor(s, 2, 6, "cosine") for s in range(2, 7)]
    assert cos == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0])
    assert lr_factor(4, 2, 6, "linear", min_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(100, 2, None, "linear") == 1.0 and lr_factor(0, 0, 6, "constant") == 1.0


def test_schedule_objects(env):
    m = registry.build("system", R.load("toy/base")["system"])
    out = build_optimizers(m, {"name": "adamw", "lr": 1.0, "schedule": "linear", "warmup_steps": 2, "total_steps": 6})
    sched = out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(out["optimizer"].param_groups[0]["lr"])
        out["optimizer"].step()
        sched.step()
    assert lrs == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25] and out["lr_scheduler"]["interval"] == "step"
    out = build_optimizers(m, {"name": "adam", "schedule": "plateau", "plateau_monitor": "val/f1"})
    assert isinstance(out["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert out["lr_scheduler"]["monitor"] == "val/f1"
    with pytest.raises(R.ConfigError, match=r"'optim.plateau_monitor': schedule 'plateau' needs the metric"):
        build_optimizers(m, {"name": "adam", "schedule": "plateau"})


def test_two_metrics_reporting_the_same_key_is_an_error(env):
    with pytest.raises(ValueError, match=r"metrics ContactPRF and ContactPRF both report 'precision'; keep one"):
        run.train(R.load("toy/base", ["system.metrics=[{name: contact_prf}, {name: contact_prf, threshold: 0.3}]",
                                      "trainer.max_epochs=1"]))


def test_base_declares_the_figures_hook(env):
    m = registry.build("system", R.load("toy/base")["system"])
    assert m.figures({"x": torch.zeros(2, 8)}, 3) == []
