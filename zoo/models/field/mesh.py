"""Meshes from density fields: marching cubes (PyMCubes) on a density grid, vertex colours from the field.

:func:`extract_mesh` samples the field's density on a ``resolution``^3 lattice spanning its cube
[-bound, bound]^3, pads it with one layer of zeros (density is 0 outside the cube, and the padding
closes surfaces that touch the cube's faces, so the mesh is watertight), runs marching cubes at
``threshold`` and colours each vertex with the field's albedo there. The default threshold 25 is
threestudio's ``isosurface_threshold`` for DreamFusion density fields: a density at which a
sample ~0.05 m long is already ~70% opaque, so the surface sits where the render turns solid.
:func:`export_glb` writes the mesh as binary glTF, atomically.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from zoo.core.atomic import atomic_path

__all__ = ["extract_mesh", "export_glb", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 25.0


def _field_device(field) -> torch.device:
    param = next(iter(field.parameters()), None) if hasattr(field, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def extract_mesh(field, resolution: int = 128, threshold: float | None = None, chunk: int = 65536):
    """A ``trimesh.Trimesh`` of the ``threshold`` level set of ``field``'s density, with vertex colours.

    ``field`` has ``bound``, ``density(points (N, 3)) -> (N,)`` and ``forward(points)["features"]``
    (N, 3) in [0, 1]. ``resolution`` lattice points per axis (>= 2); ``threshold`` None means
    :data:`DEFAULT_THRESHOLD` (25); ``chunk`` points per field call. Faces are oriented outward
    (towards lower density). No density above the threshold raises ValueError naming both.
    """
    import mcubes
    import trimesh

    if int(resolution) < 2:
        raise ValueError(f"extract_mesh: resolution must be >= 2, got {resolution}")
    if int(chunk) < 1:
        raise ValueError(f"extract_mesh: chunk must be >= 1, got {chunk}")
    level = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    bound, res = float(field.bound), int(resolution)
    device = _field_device(field)
    axis = torch.linspace(-bound, bound, res)
    lattice = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    density = torch.cat([field.density(lattice[s:s + chunk].to(device)).float().cpu()
                         for s in range(0, lattice.shape[0], chunk)]).reshape(res, res, res)
    peak = float(density.max()) if density.numel() else float("nan")
    if not peak > level:
        raise ValueError(f"extract_mesh: the field is empty at threshold {level:g}: the max density found on the "
                         f"{res}^3 lattice is {peak:.4g}; lower the threshold or train the field longer")
    volume = np.pad(density.numpy().astype(np.float64), 1, mode="constant", constant_values=0.0)
    verts, faces = mcubes.marching_cubes(volume, level)
    # lattice index (i, j, k) of the padded volume -> world (x, y, z)
    verts = (verts - 1.0) * (2.0 * bound / (res - 1)) - bound
    mesh = trimesh.Trimesh(vertices=verts, faces=faces.astype(np.int64), process=False)
    if mesh.volume < 0:  # PyMCubes winds triangles for "inside = above level"; we want outward normals
        mesh.invert()
    pts = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    colors = torch.cat([field(pts[s:s + chunk].to(device))["features"].float().cpu()
                        for s in range(0, pts.shape[0], chunk)]) if len(pts) else torch.zeros(0, 3)
    rgb = (colors.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    alpha = np.full((len(rgb), 1), 255, dtype=np.uint8)
    mesh.visual.vertex_colors = np.concatenate([rgb, alpha], axis=1)
    return mesh


def export_glb(mesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` (a trimesh.Trimesh) to ``path`` as binary glTF (.glb), atomically; returns the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        data = mesh.export(file_type="glb")
        tmp.write_bytes(data)
    return target
