"""registry.yaml and the @register decorators agree both ways; lookups are lazy and helpful."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.core import registry

ROOT = Path(__file__).resolve().parents[2]


def _decorated() -> dict[tuple[str, str], str]:
    """Every @register(kind, name) in zoo/ found by reading the source: (kind, name) -> module:Class."""
    found = {}
    for py in (ROOT / "zoo").rglob("*.py"):
        mod = ".".join(py.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(py.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", "")) == "register":
                    kind, name = (a.value for a in d.args[:2])
                    assert (kind, name) not in found, f"{kind} '{name}' registered twice in source"
                    found[(kind, name)] = f"{mod}:{node.name}"
    return found


def test_yaml_and_decorators_agree_both_ways():
    registry.index(reload=True)
    yaml_entries = {(k, n): e["import"] for k, es in registry.index()["components"].items() for n, e in (es or {}).items()}
    decorated = _decorated()
    assert set(yaml_entries) - set(decorated) == set(), "in registry.yaml but not decorated"
    assert set(decorated) - set(yaml_entries) == set(), "decorated but missing from registry.yaml"
    for key, imp in yaml_entries.items():
        assert decorated[key] == imp, f"{key}: registry.yaml says {imp}, source says {decorated[key]}"
    live = registry.import_all()
    for (kind, name), imp in yaml_entries.items():
        cls = live[kind][name]
        assert f"{cls.__module__}:{cls.__qualname__}" == imp
        assert registry.index()["components"][kind][name]["summary"].strip()


def test_unknown_name_lists_closest(toy_env):
    with pytest.raises(registry.RegistryError, match=r"unknown system 'toy_lin'; closest: toy_linear, "
                                                     r"toy_other \(available systems: toy_linear, toy_other\)"):
        registry.get("system", "toy_lin")
    with pytest.raises(registry.RegistryError, match=r"unknown component kind 'sytem'; did you mean system"):
        registry.get("sytem", "toy_linear")


def test_duplicate_registration_is_an_error(toy_env):
    cls = registry.get("system", "toy_linear")
    with pytest.raises(registry.RegistryError, match=r"duplicate system 'toy_linear': already registered by "
                                                     r"toy_components.ToyLinear"):
        @registry.register("system", "toy_linear")
        class Other:  # noqa: F841
            pass
    assert registry.get("system", "toy_linear") is cls


def test_build_from_subrecipe(toy_env):
    m = registry.build("system", {"name": "toy_linear", "in_dim": 3})
    assert m.net.in_features == 3 and m._zoo_name == "toy_linear" and m._zoo_kind == "system"
    with pytest.raises(registry.RegistryError, match="needs a 'name' key"):
        registry.build("system", {"in_dim": 3})


def test_import_zoo_is_light():
    code = ("import sys, zoo, zoo.core.registry, zoo.core.recipe; "
            "heavy = [m for m in ('transformers', 'diffusers', 'segment_anything', 'pytorch3d', 'torch') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_register_rejects_a_class_missing_its_kinds_method(toy_env):
    import torch

    with pytest.raises(registry.RegistryError) as e:
        @registry.register("lifter", "toy_no_forward")
        class NoForward(torch.nn.Module):  # noqa: F841 - nn.Module.forward is only a placeholder
            pass
    assert str(e.value) == ("cannot register test_registry.test_register_rejects_a_class_missing_its_kinds_method."
                            "<locals>.NoForward as lifter 'toy_no_forward': it does not implement "
                            "forward, required by the lifter interface (zoo.core.interfaces.Lifter says what each "
                            "takes and returns)")
    with pytest.raises(registry.RegistryError, match=r"does not implement encoder_frozen, required by the localizer"):
        @registry.register("localizer", "toy_half")
        class Half:  # noqa: F841 - encode/decode present, the cache flag missing
            embed_dim = 8

            def encode(self, images):
                return images

            def decode(self, embeddings, prompts, output_size=None):
                return embeddings
    assert "toy_no_forward" not in registry.registered()["lifter"]


def test_interfaces_cover_every_kind():
    from zoo.core.interfaces import INTERFACES

    assert set(INTERFACES) == set(registry.KINDS)
    assert all(INTERFACES[k].required and INTERFACES[k].__doc__ for k in registry.KINDS)


def test_wrong_kind_names_the_kind_it_is(toy_env):
    with pytest.raises(registry.RegistryError, match=r"^'toy_blobs' is a datamodule, not a system "
                                                     r"\(available systems: toy_linear, toy_other\)$"):
        registry.get("system", "toy_blobs")


def test_build_records_constructor_arguments_and_materializes(toy_env):
    m = registry.build("datamodule", {"name": "toy_blobs", "n": 32, "batch_size": 8})
    assert m._zoo_config == {"n": 32, "batch_size": 8}
    calls = []

    class Parts:
        def configure_model(self):
            calls.append("configure")

        def load_pretrained(self):
            calls.append("load")

    registry.materialize(Parts())
    assert calls == ["configure", "load"]
    table = registry.Parts("surface", {"body": dict})
    with pytest.raises(registry.RegistryError, match=r"unknown surface 'bdy'; closest: body \(available surfaces: body\)"):
        registry.build(table, {"name": "bdy"})
