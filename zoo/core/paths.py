"""Where the zoo finds its index and recipes, and where it keeps caches.

* ``registry.yaml`` and ``recipes/`` live at the top of the repository. A source checkout or an
  editable install reads them there; a built wheel carries copies inside the package
  (``zoo/_resources/``, written by the build step in ``setup.py``), so a non-editable install works
  from any directory. ``$ZOO_REGISTRY`` / ``$ZOO_RECIPES`` override both.
* One cache root for everything the zoo writes for reuse (checkpoints fetched by hand, lift maps,
  geodesic matrices, ...): ``$ZOO_HOME``, else ``~/.cache/hoi-zoo``.
* One data home that relative data paths (a recipe's ``data.root``) are relative to, whatever the
  working directory: ``$ZOO_DATA``, else the checkout's ``data/`` folder (beside ``registry.yaml``),
  else ``$ZOO_HOME/data`` for an installed copy (:func:`data_home`, :func:`resolve_data_path`).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "resource_path", "registry_file", "recipes_dir", "cache_root", "cache_dir", "data_home",
           "resolve_data_path"]

_PKG = Path(__file__).resolve().parents[1]  # the zoo package directory


def repo_root() -> Path | None:
    """The source checkout holding this package (with registry.yaml beside ``zoo/``), or None when installed."""
    root = _PKG.parent
    return root if (root / "registry.yaml").is_file() and (root / "pyproject.toml").is_file() else None


def resource_path(name: str) -> Path:
    """``name`` (``registry.yaml`` or ``recipes``) from the checkout, else from the installed package data."""
    root = repo_root()
    if root is not None:
        return root / name
    return _PKG / "_resources" / name


def registry_file() -> Path:
    """registry.yaml: $ZOO_REGISTRY, else the checkout's, else the copy shipped in the package."""
    env = os.environ.get("ZOO_REGISTRY")
    return Path(env) if env else resource_path("registry.yaml")


def recipes_dir() -> Path:
    """The named-recipe folder: $ZOO_RECIPES, else the checkout's recipes/, else the packaged copy."""
    env = os.environ.get("ZOO_RECIPES")
    return Path(env) if env else resource_path("recipes")


def cache_root() -> Path:
    """The one cache root: $ZOO_HOME, else ~/.cache/hoi-zoo."""
    return Path(os.environ.get("ZOO_HOME") or "~/.cache/hoi-zoo").expanduser()


def cache_dir(name: str) -> Path:
    """A named folder under :func:`cache_root` (``checkpoints``, ``lift_maps``, ``geodesics``, ...)."""
    return cache_root() / name


def data_home() -> Path:
    """The folder relative data paths are resolved against: $ZOO_DATA, else the source checkout's ``data/``
    (beside registry.yaml), else ``data`` under :func:`cache_root`. Always absolute (a relative $ZOO_DATA is
    taken relative to the working directory)."""
    env = os.environ.get("ZOO_DATA")
    if env:
        return Path(os.path.abspath(os.path.expanduser(env)))
    root = repo_root()
    home = root / "data" if root is not None else cache_root() / "data"
    return Path(os.path.abspath(home))


def resolve_data_path(path: str | os.PathLike) -> Path:
    """A data path as the datamodules read it: ``~`` expanded; an absolute path as given; a relative one joined
    to :func:`data_home` (so ``damon`` is ``<checkout>/data/damon`` from any working directory)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    return p if p.is_absolute() else Path(os.path.abspath(data_home() / p))
