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
    with pytest.raises(R.RecipeError, match=r"recipe 'toy/bsae' not found.*did you mean toy/base, toy/child\?"):
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
