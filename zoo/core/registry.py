"""The component registry.

Every component is a class decorated with ``@register(kind, name)`` and listed in
``registry.yaml`` (import path + one-line summary). Lookup reads the YAML and
imports only the module that holds the entry, so ``import zoo`` and
``hoi-zoo list`` stay fast.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.core.interfaces import INTERFACES, check_interface
from zoo.core.paths import registry_file

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
    """Where registry.yaml lives: $ZOO_REGISTRY, else the checkout's, else the packaged copy (zoo.core.paths)."""
    return registry_file()


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


def _record_config(cls: type) -> None:
    """Wrap ``cls.__init__`` so every instance keeps its constructor arguments in ``_zoo_config``.

    The checkpoint store rebuilds a component from them, so any registered component can be
    exported, whether or not it calls ``save_hyperparameters``. The outermost registered
    constructor records (a registered subclass calling a registered parent's ``__init__`` keeps
    its own arguments).
    """
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_zoo_records", False):
        return
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):  # noqa: N807 - keeps the constructor's name in tracebacks
        if "_zoo_config" not in self.__dict__:
            bound = sig.bind(self, *args, **kwargs)
            cfg = {k: v for k, v in list(bound.arguments.items())[1:]
                   if sig.parameters[k].kind is not inspect.Parameter.VAR_KEYWORD}
            for k, p in sig.parameters.items():
                if p.kind is inspect.Parameter.VAR_KEYWORD:
                    cfg.update(bound.arguments.get(k, {}))
            self.__dict__["_zoo_config"] = cfg
        init(self, *args, **kwargs)

    __init__._zoo_records = True
    cls.__init__ = __init__


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as component ``name`` of ``kind``.

    Duplicates are errors, and so is a class that does not implement its kind's interface
    (:mod:`zoo.core.interfaces`): the message names the missing methods.
    """
    _check_kind(kind)

    def deco(cls: type) -> type:
        prev = _REGISTRY[kind].get(name)
        if prev is not None and (prev.__module__, prev.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RegistryError(
                f"duplicate {kind} '{name}': already registered by {prev.__module__}.{prev.__qualname__}, "
                f"now again by {cls.__module__}.{cls.__qualname__}"
            )
        missing = check_interface(kind, cls)
        if missing:
            iface = INTERFACES[kind]
            raise RegistryError(
                f"cannot register {cls.__module__}.{cls.__qualname__} as {kind} '{name}': it does not implement "
                f"{', '.join(missing)}, required by the {kind} interface (zoo.core.interfaces.{iface.__name__} "
                f"says what each takes and returns)"
            )
        _REGISTRY[kind][name] = cls
        cls._zoo_kind = kind
        cls._zoo_name = name
        _record_config(cls)
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
        avail = ", ".join(sorted(entries)) or "none"
        elsewhere = [k for k, ents in index()["components"].items() if k != kind and name in (ents or {})]
        if elsewhere:
            raise RegistryError(f"'{name}' is a {' and a '.join(elsewhere)}, not a {kind} (available {kind}s: {avail})")
        close = difflib.get_close_matches(str(name), list(entries), n=3, cutoff=0.3)
        hint = f"; closest: {', '.join(close)}" if close else ""
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


class Parts(dict):
    """A local table of named parts that are not registry kinds (e.g. the surfaces of
    Render-Localize-Lift). A system lists one in ``subcomponents``; recipes pick an entry with
    ``name:`` exactly as they pick a registered component, and the recipe checker validates the
    rest of the sub-recipe against that entry's constructor."""

    def __init__(self, label: str, entries: dict[str, type]):
        super().__init__(entries)
        self.label = label

    def lookup(self, name: Any) -> type:
        """The class of entry ``name``; unknown names list the entries."""
        if name not in self:
            close = difflib.get_close_matches(str(name), list(self), n=3, cutoff=0.3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise RegistryError(f"unknown {self.label} '{name}'{hint} (available {self.label}s: {', '.join(sorted(self))})")
        return self[name]


def _plain_cfg(cfg: Any) -> Any:
    if hasattr(cfg, "_metadata"):  # DictConfig -> plain containers
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def lookup(kind: str | Parts, name: Any) -> type:
    """The class for ``name`` in a registry kind or a :class:`Parts` table."""
    return kind.lookup(name) if isinstance(kind, Parts) else get(kind, name)


def build(kind: str | Parts, cfg: Any, *, materialize: bool = True, **extra: Any) -> Any:
    """Build a component from a sub-recipe ``{name: ..., **kwargs}`` (dict or DictConfig).

    Build first, load second: with ``materialize`` (the default, for a component used on its
    own) the component's ``configure_model()`` runs and then its pretrained weights load
    (:func:`materialize`). Systems build their parts with ``materialize=False`` and materialize
    them in their own ``configure_model``, which Lightning calls inside the strategy's
    initialisation context, so DeepSpeed / FSDP can shard large models as they are created.
    """
    cfg = _plain_cfg(cfg)
    label = kind.label if isinstance(kind, Parts) else kind
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    if not isinstance(cfg, dict):
        raise RegistryError(f"a {label} sub-recipe must be a mapping with a 'name' key, got {cfg!r}")
    cfg = dict(cfg)
    if "name" not in cfg:
        raise RegistryError(f"{label} sub-recipe needs a 'name' key (got keys {sorted(cfg)})")
    name = cfg.pop("name")
    obj = lookup(kind, name)(**cfg, **extra)
    if materialize:
        _materialize(obj)
    return obj


def _materialize(component: Any, load_weights: bool = True) -> Any:
    """Create a component's deferred modules (``configure_model``) and then load its pretrained weights
    (``load_pretrained``, see :class:`zoo.core.hub.Pretrained`); both are idempotent. Returns it."""
    configure = getattr(component, "configure_model", None)
    if callable(configure):
        configure()
    load = getattr(component, "load_pretrained", None)
    if load_weights and callable(load):
        load()
    return component


materialize = _materialize  # public name; `build` has a keyword argument of the same name


def registered() -> dict[str, dict[str, type]]:
    """What the decorators have registered so far (only imported modules)."""
    return {k: dict(v) for k, v in _REGISTRY.items()}


def import_all() -> dict[str, dict[str, type]]:
    """Import every module listed in registry.yaml and return the decorator view (for agreement checks)."""
    for entries in index()["components"].values():
        for ent in (entries or {}).values():
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
