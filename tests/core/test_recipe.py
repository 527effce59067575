"""Strict recipes: extends, overrides, env interpolation, errors naming key, file and suggestions."""
import re

import pytest

from zoo.core import recipe as R


def test_extends_and_overrides_merge(toy_env):
    rec = R.load("toy/child", ["system.in_dim=8", "trainer.max_epochs=5", "seed=0"])
    assert rec["system"] == {"name": "toy_linear", "in_dim": 8, "lr": 0.05}
    assert rec["trainer"]["max_epochs"] == 5
    assert rec["trainer"]["accelerator"] == "cpu"  # inherited from the base
    assert rec["seed"] == 0
    assert rec.name == "toy/child"
    assert rec.source(("system", "lr")).endswith("toy/child.yaml")
    assert rec.source(("system", "in_dim")) == "command line"
    assert rec["logger"]["project"] == "hoi-zoo"  # schema defaults filled in


def test_env_interpolation(toy_env, monkeypatch):
    monkeypatch.setenv("TOY_N", "64")
    rec = R.load("toy/base", ["data.n=${oc.env:TOY_N,32}", "run.name=${oc.env:TOY_UNSET,fallback}"])
    assert rec["data"]["n"] == 64  # coerced to the annotated int
    assert rec["run"]["name"] == "fallback"


def test_unknown_yaml_key_names_key_file_and_suggestion(toy_env):
    (toy_env / "toy" / "typo.yaml").write_text("extends: toy/base\nsystem: {lrr: 0.3}\n")
    with pytest.raises(R.RecipeError) as e:
        R.load("toy/typo")
    msg = str(e.value)
    assert "unknown key 'system.lrr'" in msg
    assert "toy/typo.yaml" in msg
    assert "did you mean lr?" in msg


def test_unknown_cli_key_suggests_nearest(toy_env):
    with pytest.raises(R.RecipeError, match=re.escape("unknown key 'data.batch_sise' (from command line); "
                                                      "did you mean batch_size?")):
        R.load("toy/base", ["data.batch_sise=4"])


def test_unknown_trainer_and_top_level_keys(toy_env):
    with pytest.raises(R.RecipeError, match=r"unknown key 'trainer.max_epoch' \(from command line\); "
                                            r"did you mean max_epochs"):
        R.load("toy/base", ["trainer.max_epoch=3"])
    with pytest.raises(R.RecipeError, match=r"unknown key 'sead' \(from command line\); did you mean seed\?"):
        R.load("toy/base", ["sead=1"])
    with pytest.raises(R.RecipeError, match=r"'trainer.logger' .* is set by the run tool"):
        R.load("toy/base", ["trainer.logger=true"])


def test_type_errors(toy_env):
    with pytest.raises(R.RecipeError, match=r"'system.lr' \(from command line\) expects float, got str 'fast'"):
        R.load("toy/base", ["system.lr=fast"])
    with pytest.raises(R.RecipeError, match=r"'system.optimizer' .* expects Literal\['sgd', 'adam'\]"):
        R.load("toy/base", ["system.optimizer=rmsprop"])
    with pytest.raises(R.RecipeError, match=r"'system.in_dim' .* expects int, got float 2.5"):
        R.load("toy/base", ["system.in_dim=2.5"])
    with pytest.raises(R.RecipeError, match=r"'trainer.strategy' .* presets: auto, ddp"):
        R.load("toy/base", ["trainer.strategy=horovod"])
    R.load("toy/base", ["system.lr=1", "system.hidden=[4,4]"])  # int is a valid float; list[int] ok


def test_unknown_component_name_lists_closest(toy_env):
    with pytest.raises(R.RecipeError, match=r"unknown system 'toy_linaer'; closest: toy_linear"):
        R.load("toy/base", ["system.name=toy_linaer"])


def test_missing_recipe_and_bad_override(toy_env):
    with pytest.raises(R.RecipeError, match=r"recipe 'toy/bsae' not found.*did you mean toy/base, (.+, )?toy/child\?"):
        R.load("toy/bsae")
    with pytest.raises(R.RecipeError, match=r"override 'seed' is not of the form key=value"):
        R.load("toy/base", ["seed"])


def test_extends_cycle(toy_env):
    (toy_env / "toy" / "a.yaml").write_text("extends: toy/b\n")
    (toy_env / "toy" / "b.yaml").write_text("extends: toy/a\n")
    with pytest.raises(R.RecipeError, match="extends itself in a cycle"):
        R.load("toy/a")


def test_logger_shorthand_and_print_roundtrip(toy_env):
    import yaml

    rec = R.load("toy/base", ["logger=csv"])
    assert rec["logger"]["name"] == "csv"
    again = yaml.safe_load(rec.to_yaml())
    assert again["system"] == rec["system"] and again["logger"]["name"] == "csv"


def test_env_values_are_coerced_for_every_typed_key(toy_env, monkeypatch):
    """`trainer.max_epochs=${oc.env:EPOCHS}` used to fail with "got '3'": only system/data keys were coerced."""
    monkeypatch.setenv("EPOCHS", "3")
    monkeypatch.setenv("CLIP", "0.5")
    monkeypatch.setenv("TOPK", "2")
    monkeypatch.setenv("NO", "false")
    monkeypatch.setenv("SEED", "7")
    monkeypatch.setenv("THREADS", "4")
    rec = R.load("toy/base", ["trainer.max_epochs=${oc.env:EPOCHS}", "trainer.gradient_clip_val=${oc.env:CLIP}",
                              "checkpoint.save_top_k=${oc.env:TOPK}", "checkpoint.save_last=${oc.env:NO}",
                              "logger.log_images=${oc.env:NO}", "run.threads=${oc.env:THREADS}",
                              "seed=${oc.env:SEED}", "test=${oc.env:NO}", "export=${oc.env:NO}",
                              "trust=${oc.env:NO}"])
    assert rec["trainer"]["max_epochs"] == 3 and type(rec["trainer"]["max_epochs"]) is int
    assert rec["trainer"]["gradient_clip_val"] == 0.5
    assert rec["checkpoint"]["save_top_k"] == 2 and rec["checkpoint"]["save_last"] is False
    assert rec["logger"]["log_images"] is False and rec["run"]["threads"] == 4
    assert rec["seed"] == 7 and rec["test"] is False and rec["export"] is False and rec["trust"] is False
    monkeypatch.setenv("EPOCHS", "three")
    with pytest.raises(R.RecipeError, match=re.escape("'trainer.max_epochs' (from command line) expects "
                                                      "Optional[int], got str 'three'")):
        R.load("toy/base", ["trainer.max_epochs=${oc.env:EPOCHS}"])


def test_trust_is_a_top_level_bool(toy_env):
    assert R.load("toy/base")["trust"] is False
    assert R.load("toy/base", ["trust=true"])["trust"] is True
    with pytest.raises(R.RecipeError, match=re.escape("'trust' (from command line) expects bool, got str 'maybe'")):
        R.load("toy/base", ["trust=maybe"])
    with pytest.raises(R.RecipeError, match=re.escape("'test' (from command line) expects bool, got int 3")):
        R.load("toy/base", ["test=3"])


def test_yaml11_number_strings_get_a_hint(toy_env, monkeypatch):
    """PyYAML (YAML 1.1) reads `lr: 1e-3` as the string '1e-3'; the type error says so and how to write it."""
    (toy_env / "toy" / "sci.yaml").write_text("extends: toy/base\nsystem: {lr: 1e-3}\n")
    with pytest.raises(R.RecipeError) as e:
        R.load("toy/sci")
    assert str(e.value) == ("'system.lr' (from recipes/toy/sci.yaml) expects float, got str '1e-3' (a string: "
                            "YAML 1.1 reads 1e-3 without a dot as a string; write 1.0e-3)")
    (toy_env / "toy" / "sci.yaml").write_text("extends: toy/base\ntrainer: {gradient_clip_val: 1.0e5}\n")
    with pytest.raises(R.RecipeError) as e:
        R.load("toy/sci")
    assert str(e.value) == ("'trainer.gradient_clip_val' (from recipes/toy/sci.yaml) expects Union[int, float, "
                            "NoneType], got str '1.0e5' (a string: YAML 1.1 reads 1.0e5 with an unsigned exponent "
                            "as a string; write 1.0e+5)")
    (toy_env / "toy" / "sci.yaml").write_text("extends: toy/base\nsystem: {lr: 1.0e-3}\n")
    assert R.load("toy/sci")["system"]["lr"] == 0.001  # the hinted spelling works
    monkeypatch.setenv("LR", "5e-4")  # env values go through the same YAML reading
    with pytest.raises(R.RecipeError, match=re.escape("got str '5e-4' (a string: YAML 1.1 reads 5e-4 without a dot "
                                                      "as a string; write 5.0e-4)")):
        R.load("toy/base", ["system.lr=${oc.env:LR}"])
    monkeypatch.setenv("DIM", "1e3")
    with pytest.raises(R.RecipeError, match=r"'system.in_dim' \(from command line\) expects int, got str '1e3'$"):
        R.load("toy/base", ["system.in_dim=${oc.env:DIM}"])  # no hint: an int key
