"""The component registry.

Every component is a class decorated with ``@register(kind, name)`` and listed in
``registry.yaml`` (import path + one-line summary). Lookup reads the YAML and
imports only the module that holds the entry, so ``import zoo`` and
``tools/zoo.py list`` stay fast.
"""
from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = (
    "system", "datamodule", "vlm", "localizer", "lifter", "backbone", "pose_prior",
    "field", "guidance", "renderer", "body_model", "metric",
)

_REGISTRY: dict[str, dict[str, type]] = {k: {} for k in KINDS}
_INDEX_CACHE: dict[str, Any] = {}


class RegistryError(KeyError):
    """Unknown, duplicate or inconsistent registry entry."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


def registry_path() -> Path:
    """Where registry.yaml lives: $ZOO_REGISTRY, else the repository root next to the package."""
    env = os.environ.get("ZOO_REGISTRY")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "registry.yaml"


def index(reload: bool = False) -> dict[str, Any]:
    """The parsed registry.yaml: {'components': {kind: {name: {import, summary}}}, 'checkpoints': {...}}."""
    path = registry_path()
    key = str(path)
    if reload or key not in _INDEX_CACHE:
        import yaml

        if not path.is_file():
            raise FileNotFoundError(f"registry index not found: {path} (set ZOO_REGISTRY to its path)")
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        comps = data.get("components") or {}
        for kind in comps:
            if kind not in KINDS:
                raise RegistryError(f"{path}: unknown component kind '{kind}' (kinds: {', '.join(KINDS)})")
        data.setdefault("components", {})
        data.setdefault("checkpoints", {})
        _INDEX_CACHE[key] = data
    return _INDEX_CACHE[key]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown component kind '{kind}'{hint} (kinds: {', '.join(KINDS)})")


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as component ``name`` of ``kind``. Duplicates are errors."""
    _check_kind(kind)

    def deco(cls: type) -> type:
        prev = _REGISTRY[kind].get(name)
        if prev is not None and (prev.__module__, prev.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RegistryError(
                f"duplicate {kind} '{name}': already registered by {prev.__module__}.{prev.__qualname__}, "
                f"now again by {cls.__module__}.{cls.__qualname__}"
            )
        _REGISTRY[kind][name] = cls
        cls._zoo_kind = kind
        cls._zoo_name = name
        return cls

    return deco


def names(kind: str) -> list[str]:
    """All names of a kind listed in registry.yaml."""
    _check_kind(kind)
    return sorted((index()["components"].get(kind) or {}).keys())


def entry(kind: str, name: str) -> dict[str, Any]:
    """The registry.yaml entry of a component; unknown names list the closest names of that kind."""
    _check_kind(kind)
    entries = index()["components"].get(kind) or {}
    if name not in entries:
        close = difflib.get_close_matches(str(name), list(entries), n=3, cutoff=0.3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        avail = ", ".join(sorted(entries)) or "none"
        raise RegistryError(f"unknown {kind} '{name}'{hint} (available {kind}s: {avail})")
    return entries[name]


def get(kind: str, name: str) -> type:
    """The class registered as ``name`` of ``kind``, importing only its module."""
    ent = entry(kind, name)
    if name not in _REGISTRY[kind]:
        module, _, attr = ent["import"].partition(":")
        importlib.import_module(module)
        if name not in _REGISTRY[kind]:
            raise RegistryError(
                f"registry.yaml says {kind} '{name}' is in {ent['import']}, but importing {module} "
                f"registered no such {kind} (is @register('{kind}', '{name}') on {attr}?)"
            )
    return _REGISTRY[kind][name]


def build(kind: str, cfg: Any, **extra: Any) -> Any:
    """Build a component from a sub-recipe ``{name: ..., **kwargs}`` (dict or DictConfig)."""
    if hasattr(cfg, "_metadata"):  # DictConfig -> plain containers
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    cfg = dict(cfg)
    if "name" not in cfg:
        raise RegistryError(f"{kind} sub-recipe needs a 'name' key (got keys {sorted(cfg)})")
    name = cfg.pop("name")
    cls = get(kind, name)
    return cls(**cfg, **extra)


def registered() -> dict[str, dict[str, type]]:
    """What the decorators have registered so far (only imported modules)."""
    return {k: dict(v) for k, v in _REGISTRY.items()}


def import_all() -> dict[str, dict[str, type]]:
    """Import every module listed in registry.yaml and return the decorator view (for agreement checks)."""
    for kind, entries in index()["components"].items():
        for name, ent in (entries or {}).items():
            importlib.import_module(ent["import"].partition(":")[0])
    return registered()


def checkpoint_entry(name: str) -> dict[str, Any]:
    """A pretrained checkpoint entry from registry.yaml; unknown names list the closest."""
    cks = index()["checkpoints"]
    if name not in cks:
        close = difflib.get_close_matches(name, list(cks), n=3, cutoff=0.3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise RegistryError(f"unknown checkpoint '{name}'{hint} (available: {', '.join(sorted(cks)) or 'none'})")
    return cks[name]
