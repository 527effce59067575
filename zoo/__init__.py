"""hoi-zoo: a PyTorch Lightning model zoo for 3D human-object interaction.

`import zoo` is deliberately light: it imports no heavy library (transformers,
diffusers, segment_anything, pytorch3d). Components are imported on lookup.
"""
from zoo.core import __version__

__all__ = ["__version__", "build", "load"]


def load(name_or_path, **kwargs):
    """Build a component from a zoo checkpoint name or an exported directory (see zoo.core.hub)."""
    from zoo.core.hub import load as _load

    return _load(name_or_path, **kwargs)


def build(kind, cfg, **kwargs):
    """Build a registered component of `kind` from a sub-recipe dict ({name: ..., **args})."""
    from zoo.core.registry import build as _build

    return _build(kind, cfg, **kwargs)
