"""Recipes: YAML files composed with ``extends:``, overridden with ``key=value``, checked strictly.

A recipe names registered components and their constructor arguments::

    extends: [base/default]
    system: {name: deco, backbone: hrnet_w32}
    data:   {name: damon, root: "${oc.env:DAMON_ROOT,damon}"}
    trainer: {max_epochs: 30}

Every key, from a YAML file or the command line, is checked before anything heavy
runs: unknown keys stop the run naming the key, the file it came from and the nearest
valid keys; values are type-checked against the component constructor's signature.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

from zoo.core import registry
from zoo.core.paths import recipes_dir

CLI = "command line"


class RecipeError(ValueError):
    """A recipe that cannot run: unknown key, wrong type, missing file, bad override."""


def recipes_root() -> Path:
    """Where named recipes live: $ZOO_RECIPES, else the checkout's recipes/, else the packaged copy."""
    return recipes_dir()


def recipe_path(name: str, relative_to: Path | None = None) -> Path:
    """Resolve a recipe name (``deco/synthetic``), a relative path or an absolute path to a file."""
    cands = []
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        cands += [p] if p.is_absolute() else [Path.cwd() / p]
        if relative_to is not None:
            cands.insert(0, relative_to.parent / p)
        cands.append(recipes_root() / p)
    else:
        if relative_to is not None and name.startswith("."):
            cands.append(relative_to.parent / f"{name}.yaml")
        cands.append(recipes_root() / f"{name}.yaml")
    for c in cands:
        if c.is_file():
            return c.resolve()
    known = sorted(str(q.relative_to(recipes_root()).with_suffix("")) for q in recipes_root().rglob("*.yaml"))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    where = f" (extended from {relative_to})" if relative_to else ""
    raise RecipeError(f"recipe '{name}' not found{where}: looked for {', '.join(map(str, cands))}{hint}")


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


def _same_constructor(old: Any, new: Any) -> bool:
    """Whether two component names of one registry kind are classes sharing one constructor (e.g. the VLM
    families, which all take BaseVLM's arguments): then swapping the name keeps the other arguments."""
    if not isinstance(old, str) or not isinstance(new, str):
        return False
    for kind in registry.KINDS:
        names = registry.names(kind)
        if old in names and new in names:
            try:
                a, b = registry.get(kind, old), registry.get(kind, new)
            except Exception:  # noqa: BLE001 - an unimportable class: fall back to replacing
                return False
            return a.__init__ is b.__init__
    return False


def _merge(base: dict, over: dict, src: dict, over_src: str, prefix: tuple = ()) -> None:
    """Merge ``over`` into ``base`` in place, recording in ``src`` which file set each key path."""
    for k, v in over.items():
        path = prefix + (k,)
        b = base.get(k)
        replace = not (isinstance(b, dict) and isinstance(v, dict))
        # A component dict that changes its `name` replaces the base's arguments wholesale: they belong
        # to a different constructor (unless both names share one, as the VLM families do).
        if not replace and "name" in v and "name" in b and v["name"] != b["name"]:
            replace = not _same_constructor(b["name"], v["name"])
        if replace:
            base[k] = copy.deepcopy(v)
            for key in [p for p in src if p[: len(path)] == path]:
                del src[key]
            _mark(v, src, over_src, path)
        else:
            _merge(b, v, src, over_src, path)


def _mark(v: Any, src: dict, source: str, path: tuple) -> None:
    src[path] = source
    if isinstance(v, dict):
        for k, x in v.items():
            _mark(x, src, source, path + (k,))


def _extends_list(ext: Any, where: str) -> list:
    if isinstance(ext, str):
        ext = [ext]
    if not isinstance(ext, list):
        raise RecipeError(f"{where}: 'extends' must be a recipe name or a list of them, got {ext!r}")
    return ext


def _load_parents(ext: list, path: Path, stack: tuple[Path, ...]) -> tuple[dict, dict]:
    merged: dict = {}
    src: dict = {}
    for parent in ext:
        pdata, psrc = _load_file(recipe_path(str(parent), relative_to=path), stack + (path,))
        _merge(merged, pdata, src, "", ())
        src.update(psrc)
    return merged, src


def _expand_nested(node: Any, path: Path, stack: tuple[Path, ...], prefix: tuple, frag_src: dict) -> Any:
    """Replace every mapping below the top level that has an ``extends:`` key by the merge of the named
    fragments with the mapping's own keys on top (e.g. ``backbone: {extends: base/backbone/tiny}``).
    ``frag_src`` receives the fragment file of each key that came from a fragment."""
    if isinstance(node, list):
        return [_expand_nested(x, path, stack, prefix + (i,), frag_src) for i, x in enumerate(node)]
    if not isinstance(node, dict):
        return node
    own = {k: _expand_nested(v, path, stack, prefix + (k,), frag_src) for k, v in node.items() if k != "extends"}
    if "extends" not in node:
        return own
    where = f"{_pretty(path)}: '{'.'.join(map(str, prefix))}'"
    base, base_src = _load_parents(_extends_list(node["extends"], where), path, stack)
    own_src: dict = {}
    _merge(base, own, own_src, "own", ())
    for rel, source in base_src.items():
        if rel not in own_src:
            frag_src[prefix + rel] = source
    return base


def _load_file(path: Path, stack: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise RecipeError(f"recipe extends itself in a cycle: {chain}")
    data = _read_yaml(path)
    ext = _extends_list(data.pop("extends", None) or [], str(path))
    merged, src = _load_parents(ext, path, stack)
    frag_src: dict = {}
    data = _expand_nested(data, path, stack, (), frag_src)
    _merge(merged, data, src, str(_pretty(path)), ())
    src.update(frag_src)
    return merged, src


def _pretty(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def parse_overrides(overrides: list[str]) -> dict:
    """Parse ``a.b=value`` overrides in OmegaConf's grammar into a nested dict."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    out: dict = {}
    for ov in overrides:
        if "=" not in ov:
            raise RecipeError(f"override '{ov}' is not of the form key=value ({CLI})")
        key, _, value = ov.partition("=")
        if not key or any(not part for part in key.split(".")):
            raise RecipeError(f"override '{ov}' has an empty key ({CLI})")
        try:
            conf = OmegaConf.from_dotlist([f"{key}={value}"])
            parsed = OmegaConf.to_container(conf, resolve=False)
        except OmegaConfBaseException as e:
            raise RecipeError(f"override '{ov}' cannot be parsed: {e} ({CLI})") from None
        _merge(out, parsed, {}, CLI)
    return out


def _resolve(cfg: dict) -> dict:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except OmegaConfBaseException as e:
        raise RecipeError(f"recipe interpolation failed: {e}") from None


class Recipe(dict):
    """A resolved recipe (a plain nested dict) with the file each key came from."""

    name: str
    sources: dict

    def source(self, path: tuple) -> str:
        """The file (or 'command line') that set a key path, or its nearest parent."""
        for i in range(len(path), 0, -1):
            s = self.sources.get(tuple(path[:i]))
            if s:
                return s
        return "defaults"

    def to_yaml(self) -> str:
        """The resolved recipe as YAML text."""
        import yaml

        return yaml.safe_dump(dict(self), sort_keys=False, default_flow_style=False)


def load(name: str, overrides: list[str] | None = None, validate: bool = True) -> Recipe:
    """Load a recipe by name or path, apply CLI overrides, resolve interpolations, check strictly."""
    path = recipe_path(name)
    merged, src = _load_file(path)
    cli = _cli_paths_from_cwd(parse_overrides(list(overrides or [])))
    _merge(merged, cli, src, CLI)
    rec = Recipe(_apply_defaults(_resolve(merged)))
    rec.name = _recipe_name(path)
    rec.sources = src
    if validate:
        check(rec)
    return rec


_PATH_KEY = re.compile(r"^(root|.*_(dir|root|path|file))$")


def _cli_paths_from_cwd(cli: dict) -> dict:
    """Relative data paths typed on the command line (``data.root=my/damon``, ``data.<x>_dir=...``) are taken
    from the working directory, as a shell user expects; relative paths in recipe files resolve under the
    data home instead (zoo.core.paths.resolve_data_path)."""
    data = cli.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if (isinstance(value, str) and _PATH_KEY.match(str(key)) and value and "${" not in value
                    and not os.path.isabs(os.path.expanduser(value))):
                data[key] = os.path.abspath(os.path.expanduser(value))
    return cli


def _recipe_name(path: Path) -> str:
    try:
        return str(path.relative_to(recipes_root().resolve()).with_suffix(""))
    except ValueError:
        return path.stem


# --------------------------------------------------------------------------- schema

# Top-level keys a recipe may hold, with their defaults. Component sections (system, data)
# are checked against constructor signatures; trainer against lightning.Trainer.
TOP_LEVEL: dict[str, Any] = {
    "seed": 0,
    "system": None,
    "data": None,
    "trainer": {},
    "logger": {},
    "checkpoint": {},
    "run": {},
    "resume": None,
    "test": True,
    "export": True,
    "ckpt": None,
    "trust": False,
    "description": "",
    "convention": None,
}
# The values of ``convention``: the metric rules of an evaluation (zoo.metrics.conventions says what each sets).
EVAL_CONVENTIONS = ("deco", "interactvlm", "both")
# Types of the plain top-level keys (the sections above have their own schemas). ``trust``: whether
# ``ckpt``/``resume`` files that hold objects torch.load(weights_only=True) refuses may be unpickled in
# full (zoo.core.hub.load(..., trust=...)); only for files the user trusts.
TOP_LEVEL_TYPES: dict[str, Any] = {
    "seed": int,
    "test": bool,
    "export": bool | Literal["self_contained"],
    "trust": bool,
    "convention": Literal[EVAL_CONVENTIONS] | None,  # evaluation only (zoo.metrics.conventions)
}
# Keys a metric entry of a system's ``metrics`` list may hold besides its constructor arguments (read by
# zoo.systems.base.System): ``log_prefix`` goes before the names of the values it logs.
METRIC_ENTRY_KEYS: dict[str, Any] = {"log_prefix": str}
LOGGER_KEYS: dict[str, Any] = {
    "name": (Literal["wandb", "csv", "none"], "wandb"),
    "project": (str, "hoi-zoo"),
    "entity": (str | None, None),
    "offline": (bool | None, None),
    "tags": (list, []),
    "group": (str | None, None),      # W&B run group (tools/ablate.py groups an ablation's runs)
    "job_type": (str | None, None),
    "log_images": (bool, True),
}
CHECKPOINT_KEYS: dict[str, Any] = {
    "monitor": (str | None, None),
    "mode": (Literal["min", "max"], "max"),
    "save_top_k": (int, 1),
    "save_last": (bool, True),
    "every_n_epochs": (int | None, None),
    "every_n_train_steps": (int | None, None),
}
RUN_KEYS: dict[str, Any] = {
    "dir": (str, "runs"),
    "name": (str | None, None),
    "mode": (Literal["fit", "test", "predict"], "fit"),
    "threads": (int | Literal["auto"] | None, None),
    "progress": (Literal["auto", "bar", "line", "none"], "auto"),
}
# Trainer arguments the run tool owns; a recipe may not set them (the hint says what to use instead).
TRAINER_OWNED = {
    "logger": "the recipe's logger section", "callbacks": "the recipe's checkpoint and logger sections",
    "default_root_dir": "run.dir and run.name", "plugins": "trainer.strategy and trainer.precision",
    "enable_checkpointing": "the recipe's checkpoint section", "enable_progress_bar": "run.progress (auto|bar|line|none)",
}
STRATEGY_PRESETS = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "deepspeed_stage_2",
                    "deepspeed_stage_3", "deepspeed_stage_2_offload", "deepspeed_stage_3_offload", "fsdp")


def _apply_defaults(cfg: dict) -> dict:
    out = copy.deepcopy(TOP_LEVEL)
    out.update(cfg)
    for key, schema in (("logger", LOGGER_KEYS), ("checkpoint", CHECKPOINT_KEYS), ("run", RUN_KEYS)):
        sec = out.get(key)
        if isinstance(sec, str):  # logger=csv shorthand
            sec = {"name": sec}
        if sec is None or sec is False:
            sec = {"name": "none"} if key == "logger" else {}
        if isinstance(sec, dict):
            out[key] = {**{k: copy.deepcopy(v[1]) for k, v in schema.items()}, **sec}
    return out


# --------------------------------------------------------------------------- checking


def _fail_unknown(rec: Recipe, path: tuple, valid: list[str], what: str) -> None:
    key = dotted(path)
    close = difflib.get_close_matches(str(path[-1]), valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise RecipeError(
        f"unknown key '{key}' (from {rec.source(path)}){hint} Valid keys for {what}: {', '.join(sorted(valid))}"
    )


def type_ok(value: Any, ann: Any) -> bool:
    """Whether a YAML value fits a constructor annotation (lenient where the annotation is exotic)."""
    if ann is inspect.Parameter.empty or ann is Any:
        return True
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if ann is type(None) or ann is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in args)
    if origin is Literal:
        return value in args
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann in (list, tuple) or origin in (list, tuple, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if args and args[-1] is not Ellipsis and origin is list:
            return all(type_ok(v, args[0]) for v in value)
        if args and origin is tuple and Ellipsis not in args and len(args) == len(value):
            return all(type_ok(v, a) for v, a in zip(value, args, strict=True))
        return True
    if ann is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(ann, type):
        if ann.__module__ in ("pathlib", "os"):
            return isinstance(value, str)
        return isinstance(value, ann) or isinstance(value, (dict, str))
    return True  # forward refs, protocols, torch types: not checkable from YAML


def _coerce(value: Any, ann: Any) -> Any:
    """Strings from ${oc.env:...} interpolation become numbers/bools when the annotation wants one."""
    if isinstance(value, str) and not type_ok(value, ann):
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if not isinstance(parsed, str) and type_ok(parsed, ann):
            return parsed
    return value


_NUMBER = re.compile(r"([-+]?)(\d[\d_]*)?(?:\.(\d[\d_]*)?)?(?:[eE]([-+]?)(\d+))?")
_SPECIAL_FLOATS = {"inf": ".inf", "+inf": ".inf", "-inf": "-.inf", "infinity": ".inf", "+infinity": ".inf",
                   "-infinity": "-.inf", "nan": ".nan"}


def _string_number_hint(value: Any, ann: Any) -> str:
    """For a string that Python reads as a number the annotation accepts, a note that YAML 1.1 (PyYAML)
    read it as a string and how to write it so it is a number; else ''."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return ""
    if not type_ok(number, ann):
        return ""
    import yaml

    try:
        if not isinstance(yaml.safe_load(text), str):
            return ""  # YAML reads it as a number: _coerce has already tried it
    except yaml.YAMLError:
        return ""
    if text.lower() in _SPECIAL_FLOATS:
        return f" (a string: YAML 1.1 reads {text} as a string; write {_SPECIAL_FLOATS[text.lower()]})"
    m = _NUMBER.fullmatch(text)
    if not m or not m.group(5):
        return ""
    sign, whole, frac, esign, exp = m.groups()
    fix = f"{sign}{whole or '0'}.{frac or '0'}e{esign or '+'}{exp}"
    why = " and ".join(w for w, bad in (("without a dot", "." not in text), ("with an unsigned exponent", not esign))
                       if bad)
    return f" (a string: YAML 1.1 reads {text}{' ' + why if why else ''} as a string; write {fix})"


def _type_error(rec: Recipe, path: tuple, value: Any, ann: Any) -> RecipeError:
    """The error for a value that does not fit its annotation, naming key, file, type and value."""
    return RecipeError(f"'{dotted(path)}' (from {rec.source(path)}) expects {_ann_text(ann)}, "
                       f"got {type(value).__name__} {value!r}{_string_number_hint(value, ann)}")


def _ann_text(ann: Any) -> str:
    if ann is inspect.Parameter.empty:
        return "any"
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def signature_schema(cls: type) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """Constructor parameters of a class, their resolved annotations, and whether it takes **kwargs."""
    sig = inspect.signature(cls.__init__)
    params = {n: p for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL,)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    params = {n: p for n, p in params.items() if p.kind != p.VAR_KEYWORD}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {n: p.annotation for n, p in params.items()}
    return params, hints, var_kw


def dotted(path: tuple) -> str:
    """``('system', 'metrics', 1, 'name')`` -> ``system.metrics[1].name``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _label(kind: str | registry.Parts) -> str:
    return kind.label if isinstance(kind, registry.Parts) else kind


def _choices(kind: str | registry.Parts) -> str:
    names = sorted(kind) if isinstance(kind, registry.Parts) else registry.names(kind)
    return ", ".join(names) or "none"


def _dataclass_in(ann: Any) -> type | None:
    """The dataclass an annotation names (directly or as ``X | None``), if any."""
    if dataclasses.is_dataclass(ann) and isinstance(ann, type):
        return ann
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        for a in typing.get_args(ann):
            if dataclasses.is_dataclass(a) and isinstance(a, type):
                return a
    return None


def _list_item(ann: Any) -> Any:
    """The element annotation of ``list[X]`` (also inside ``| None``), or None."""
    for a in (ann, *typing.get_args(ann)):
        if typing.get_origin(a) is list and typing.get_args(a):
            return typing.get_args(a)[0]
    return None


def _check_dataclass(rec: Recipe, path: tuple, value: dict, dc: type) -> dict:
    """Check a mapping against a dataclass's fields (unknown keys, types, nested dataclasses)."""
    fields = {f.name: f for f in dataclasses.fields(dc)}
    hints = typing.get_type_hints(dc)
    for key in list(value):
        if key not in fields:
            _fail_unknown(rec, path + (key,), list(fields), f"'{dotted(path)}' ({dc.__name__})")
        value[key] = check_value(rec, path + (key,), value[key], hints[key])
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in value]  # type: ignore[misc]
    if missing:
        raise RecipeError(f"'{dotted(path)}' (from {rec.source(path)}) is missing required key(s): {', '.join(missing)} "
                          f"({dc.__name__})")
    return value


def check_value(rec: Recipe, path: tuple, value: Any, ann: Any) -> Any:
    """Coerce and check one value against its annotation; mappings are checked against dataclass
    annotations field by field (lists of them item by item). Returns the (coerced) value."""
    dc = _dataclass_in(ann)
    if dc is not None and isinstance(value, dict):
        return _check_dataclass(rec, path, value, dc)
    item = _list_item(ann)
    if item is not None and isinstance(value, list) and _dataclass_in(item) is not None:
        return [check_value(rec, path + (i,), v, item) for i, v in enumerate(value)]
    value = _coerce(value, ann)
    if not type_ok(value, ann):
        raise _type_error(rec, path, value, ann)
    return value


def check_component(rec: Recipe, section: tuple, kind: str | registry.Parts) -> None:
    """Check a sub-recipe {name: ..., **kwargs} against the constructor of the class it names.

    ``kind`` is a registry kind or a :class:`zoo.core.registry.Parts` table. Arguments the class
    lists in ``subcomponents`` (argument -> kind or Parts) are checked recursively, as one
    sub-recipe or a list of them; mappings whose annotation is a dataclass are checked field by field.
    """
    cfg = _get(rec, section)
    where = dotted(section)
    label = _label(kind)
    if cfg is None:
        raise RecipeError(f"recipe has no '{where}' section (a {label} sub-recipe with a 'name' key)")
    if not isinstance(cfg, dict):
        raise RecipeError(f"'{where}' (from {rec.source(section)}) must be a {label} sub-recipe: a mapping with a "
                          f"'name' key ({label}s: {_choices(kind)}), got {cfg!r}")
    if "name" not in cfg:
        raise RecipeError(f"'{where}' (from {rec.source(section)}) is a {label} sub-recipe without a 'name' key "
                          f"(it has {', '.join(map(str, cfg)) or 'no keys'}); expected one of the {label}s: "
                          f"{_choices(kind)}")
    try:
        cls = registry.lookup(kind, cfg["name"])
    except registry.RegistryError as e:
        raise RecipeError(f"'{where}.name' (from {rec.source(section + ('name',))}): {e}") from None
    params, hints, var_kw = signature_schema(cls)
    subs: dict[str, Any] = getattr(cls, "subcomponents", {}) or {}
    for key, value in cfg.items():
        if key == "name":
            continue
        path = section + (key,)
        if kind == "metric" and key in METRIC_ENTRY_KEYS and key not in params:
            cfg[key] = check_value(rec, path, value, METRIC_ENTRY_KEYS[key])
            continue
        if key not in params:
            if var_kw:
                continue
            _fail_unknown(rec, path, ["name", *params], f"{label} '{cfg['name']}'")
        if key in subs and isinstance(value, dict):
            check_component(rec, path, subs[key])
            continue
        if key in subs and isinstance(value, list):
            for i in range(len(value)):
                check_component(rec, path + (i,), subs[key])
            continue
        cfg[key] = check_value(rec, path, value, hints.get(key, params[key].annotation))
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in cfg]
    if missing:
        raise RecipeError(f"'{where}' ({label} '{cfg['name']}', from {rec.source(section)}) is missing required "
                          f"key(s): {', '.join(missing)}")


class ConfigError(RecipeError):
    """A setting that passed the recipe schema but cannot be used once the component is built (e.g. an
    optimiser group pattern that matches no parameter). ``key`` is its path inside the component's
    sub-recipe; :func:`locate` adds the section and the file it came from."""

    def __init__(self, key: tuple, message: str):
        super().__init__(f"'{dotted(tuple(key))}': {message}")
        self.key = tuple(key)
        self.message = message


def locate(err: ConfigError, rec: Recipe, section: tuple) -> RecipeError:
    """``err`` as a RecipeError naming the full key path and the recipe file that set it."""
    path = tuple(section) + err.key
    return RecipeError(f"'{dotted(path)}' (from {rec.source(path)}): {err.message}")


def _check_section(rec: Recipe, key: str, schema: dict) -> None:
    sec = rec.get(key)
    if not isinstance(sec, dict):
        raise RecipeError(f"'{key}' (from {rec.source((key,))}) must be a mapping, got {sec!r}")
    for k, v in sec.items():
        if k not in schema:
            _fail_unknown(rec, (key, k), list(schema), f"'{key}'")
        sec[k] = check_value(rec, (key, k), v, schema[k][0])


def check_trainer(rec: Recipe) -> None:
    """Check trainer keys against lightning.Trainer's signature (minus the keys the run tool owns)."""
    from lightning import Trainer

    sec = rec.get("trainer") or {}
    if not isinstance(sec, dict):
        raise RecipeError(f"'trainer' (from {rec.source(('trainer',))}) must be a mapping")
    params, hints, _ = signature_schema(Trainer)
    valid = [p for p in params if p not in TRAINER_OWNED]
    for k, v in sec.items():
        if k not in valid:
            if k in TRAINER_OWNED:
                raise RecipeError(f"'trainer.{k}' (from {rec.source(('trainer', k))}) is set by the run tool; "
                                  f"use {TRAINER_OWNED[k]} instead")
            _fail_unknown(rec, ("trainer", k), valid, "trainer (lightning.Trainer arguments)")
        if k == "strategy" and isinstance(v, str) and v not in STRATEGY_PRESETS:
            raise RecipeError(f"'trainer.strategy' (from {rec.source(('trainer', k))}) is '{v}'; "
                              f"presets: {', '.join(STRATEGY_PRESETS)}")
        sec[k] = check_value(rec, ("trainer", k), v, hints.get(k, params[k].annotation))


def check(rec: Recipe) -> None:
    """Strictly check a resolved recipe; raises RecipeError naming the first problem."""
    for k in rec:
        if k not in TOP_LEVEL:
            _fail_unknown(rec, (k,), list(TOP_LEVEL), "a recipe's top level")
    check_component(rec, ("system",), "system")
    if rec.get("data") is not None:
        check_component(rec, ("data",), "datamodule")
    check_trainer(rec)
    _check_section(rec, "logger", LOGGER_KEYS)
    _check_section(rec, "checkpoint", CHECKPOINT_KEYS)
    _check_section(rec, "run", RUN_KEYS)
    for k, ann in TOP_LEVEL_TYPES.items():
        if k not in rec:
            continue
        value = _coerce(rec[k], ann)
        if not type_ok(value, ann):
            if k == "export":
                raise RecipeError(f"'export' (from {rec.source(('export',))}) expects true, false or "
                                  f"self_contained, got {value!r}")
            if k == "convention":
                raise RecipeError(f"'convention' (from {rec.source(('convention',))}) must be one of "
                                  f"{', '.join(EVAL_CONVENTIONS)} (the metric rules of an evaluation), got {value!r}")
            raise _type_error(rec, (k,), value, ann)
        rec[k] = value


def _get(d: Any, path: tuple) -> Any:
    for k in path:
        if isinstance(d, list) and isinstance(k, int):
            d = d[k] if 0 <= k < len(d) else None
        elif isinstance(d, dict):
            d = d.get(k)
        else:
            return None
    return d
