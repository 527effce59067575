"""Build step of hoi-zoo; the project's metadata is in pyproject.toml.

``registry.yaml`` and ``recipes/`` stay at the top of the repository (``zoo.core.paths`` reads them
there in a checkout and in an editable install). A built package has no checkout beside it, so
``build_py`` copies them into the package as ``zoo/_resources/registry.yaml`` and
``zoo/_resources/recipes/**.yaml``, which ``zoo.core.paths`` falls back to. MANIFEST.in puts the
same files in an sdist, so a wheel built from the sdist gets them too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = Path("zoo") / "_resources"  # inside the built package tree


def resource_files() -> list[tuple[Path, Path]]:
    """(source file, path under zoo/_resources) for registry.yaml and every recipe."""
    registry = ROOT / "registry.yaml"
    recipes = ROOT / "recipes"
    if not registry.is_file() or not recipes.is_dir():
        raise FileNotFoundError(f"registry.yaml and recipes/ must sit beside setup.py in {ROOT} "
                                "(an sdist carries them through MANIFEST.in)")
    files = [(registry, Path("registry.yaml"))]
    files += [(p, Path("recipes") / p.relative_to(recipes)) for p in sorted(recipes.rglob("*.yaml"))]
    return files


class BuildPyWithResources(build_py):
    """build_py that also copies registry.yaml and recipes/ into zoo/_resources (not in editable mode)."""

    def _copies_resources(self) -> bool:
        # An editable install maps `zoo` to the checkout, which reads the top-level files directly.
        return not getattr(self, "editable_mode", False)

    def run(self) -> None:
        super().run()
        if not self._copies_resources():
            return
        dest = Path(self.build_lib) / PACKAGE_DIR
        if dest.exists():
            shutil.rmtree(dest)  # a reused build/ must not keep recipes deleted since the last build
        for src, rel in resource_files():
            target = dest / rel
            self.mkpath(str(target.parent))
            self.copy_file(str(src), str(target), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if self._copies_resources():
            outputs += [str(Path(self.build_lib) / PACKAGE_DIR / rel) for _, rel in resource_files()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithResources})
