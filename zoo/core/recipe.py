"""Recipes: YAML files composed with ``extends:``, overridden with ``key=value``, checked strictly.

A recipe names registered components and their constructor arguments::

    extends: [base/default]
    system: {name: deco, backbone: hrnet_w32}
    data:   {name: damon, root: "${oc.env:DAMON_ROOT,data/damon}"}
    trainer: {max_epochs: 30}

Every key, from a YAML file or the command line, is checked before anything heavy
runs: unknown keys stop the run naming the key, the file it came from and the nearest
valid keys; values are type-checked against the component constructor's signature.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

from zoo.core import registry

CLI = "command line"


class RecipeError(ValueError):
    """A recipe that cannot run: unknown key, wrong type, missing file, bad override."""


def recipes_root() -> Path:
    """Where named recipes live: $ZOO_RECIPES, else recipes/ at the repository root."""
    env = os.environ.get("ZOO_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "recipes"


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


def _merge(base: dict, over: dict, src: dict, over_src: str, prefix: tuple = ()) -> None:
    """Merge ``over`` into ``base`` in place, recording in ``src`` which file set each key path."""
    for k, v in over.items():
        path = prefix + (k,)
        b = base.get(k)
        replace = not (isinstance(b, dict) and isinstance(v, dict))
        # A component dict that changes its `name` replaces the base's arguments wholesale:
        # they belong to a different constructor.
        if not replace and "name" in v and "name" in b and v["name"] != b["name"]:
            replace = True
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


def _load_file(path: Path, stack: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise RecipeError(f"recipe extends itself in a cycle: {chain}")
    data = _read_yaml(path)
    ext = data.pop("extends", None) or []
    if isinstance(ext, str):
        ext = [ext]
    if not isinstance(ext, list):
        raise RecipeError(f"{path}: 'extends' must be a recipe name or a list of them")
    merged: dict = {}
    src: dict = {}
    for parent in ext:
        pdata, psrc = _load_file(recipe_path(str(parent), relative_to=path), stack + (path,))
        _merge(merged, pdata, src, "", ())
        src.update(psrc)
    _merge(merged, data, src, str(_pretty(path)), ())
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
    cli = parse_overrides(list(overrides or []))
    _merge(merged, cli, src, CLI)
    rec = Recipe(_apply_defaults(_resolve(merged)))
    rec.name = _recipe_name(path)
    rec.sources = src
    if validate:
        check(rec)
    return rec


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
    "description": "",
}
LOGGER_KEYS: dict[str, Any] = {
    "name": (Literal["wandb", "csv", "none"], "wandb"),
    "project": (str, "hoi-zoo"),
    "entity": (typing.Optional[str], None),
    "offline": (typing.Optional[bool], None),
    "tags": (list, []),
    "log_images": (bool, True),
}
CHECKPOINT_KEYS: dict[str, Any] = {
    "monitor": (typing.Optional[str], None),
    "mode": (Literal["min", "max"], "max"),
    "save_top_k": (int, 1),
    "save_last": (bool, True),
    "every_n_epochs": (typing.Optional[int], None),
    "every_n_train_steps": (typing.Optional[int], None),
}
RUN_KEYS: dict[str, Any] = {
    "dir": (str, "runs"),
    "name": (typing.Optional[str], None),
}
# Trainer arguments the run tool owns; a recipe may not set them.
TRAINER_OWNED = {"logger", "callbacks", "default_root_dir", "plugins", "enable_checkpointing"}
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
    key = ".".join(map(str, path))
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
            return all(type_ok(v, a) for v, a in zip(value, args))
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


def check_component(rec: Recipe, section: tuple, kind: str) -> None:
    """Check a component sub-recipe {name: ..., **kwargs} against its constructor signature."""
    cfg = _get(rec, section)
    where = ".".join(section)
    if cfg is None:
        raise RecipeError(f"recipe has no '{where}' section (a {kind} sub-recipe with a 'name' key)")
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise RecipeError(f"'{where}' (from {rec.source(section)}) must be a mapping with a 'name' key, got {cfg!r}")
    try:
        cls = registry.get(kind, cfg["name"])
    except registry.RegistryError as e:
        raise RecipeError(f"{where}.name (from {rec.source(section + ('name',))}): {e}") from None
    params, hints, var_kw = signature_schema(cls)
    subs: dict[str, str] = getattr(cls, "subcomponents", {}) or {}
    for key, value in cfg.items():
        if key == "name":
            continue
        path = section + (key,)
        if key not in params:
            if var_kw:
                continue
            _fail_unknown(rec, path, ["name", *params], f"{kind} '{cfg['name']}'")
        if key in subs and isinstance(value, dict):
            check_component(rec, path, subs[key])
            continue
        ann = hints.get(key, params[key].annotation)
        value = cfg[key] = _coerce(value, ann)
        if not type_ok(value, ann):
            raise RecipeError(
                f"'{'.'.join(path)}' (from {rec.source(path)}) expects {_ann_text(ann)}, "
                f"got {type(value).__name__} {value!r}"
            )
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in cfg]
    if missing:
        raise RecipeError(f"'{where}' ({kind} '{cfg['name']}') is missing required key(s): {', '.join(missing)}")


def _check_section(rec: Recipe, key: str, schema: dict) -> None:
    sec = rec.get(key)
    if not isinstance(sec, dict):
        raise RecipeError(f"'{key}' (from {rec.source((key,))}) must be a mapping, got {sec!r}")
    for k, v in sec.items():
        if k not in schema:
            _fail_unknown(rec, (key, k), list(schema), f"'{key}'")
        ann = schema[k][0]
        if not type_ok(v, ann):
            raise RecipeError(f"'{key}.{k}' (from {rec.source((key, k))}) expects {_ann_text(ann)}, got {v!r}")


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
                                  f"use the recipe's logger/checkpoint/run sections instead")
            _fail_unknown(rec, ("trainer", k), valid, "trainer (lightning.Trainer arguments)")
        if k == "strategy" and isinstance(v, str) and v not in STRATEGY_PRESETS:
            raise RecipeError(f"'trainer.strategy' (from {rec.source(('trainer', k))}) is '{v}'; "
                              f"presets: {', '.join(STRATEGY_PRESETS)}")
        if not type_ok(v, hints.get(k, params[k].annotation)):
            raise RecipeError(f"'trainer.{k}' (from {rec.source(('trainer', k))}) expects "
                              f"{_ann_text(hints.get(k))}, got {v!r}")


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
    if not isinstance(rec.get("seed"), int) or isinstance(rec.get("seed"), bool):
        raise RecipeError(f"'seed' (from {rec.source(('seed',))}) expects int, got {rec.get('seed')!r}")


def _get(d: dict, path: tuple) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d
