"""Mesh export: a radial density gives a watertight sphere of the right radius; an empty field is an error."""
import math

import numpy as np
import pytest
import torch
import trimesh

from zoo.models.field.mesh import export_glb, extract_mesh
from zoo.models.field.nerf import HashNeRF


def sphere_field() -> HashNeRF:
    """density = softplus(10 (1 - |x| / 0.5)): a function of |x| alone (the MLP outputs are zeroed)."""
    field = HashNeRF(levels=2, log2_table=8, base=4, max_resolution=8, hidden=8)
    with torch.no_grad():
        field.density_net[-1].weight.zero_()
        field.feature_net[-1].weight.zero_()
    return field


def test_sphere_field_mesh_is_watertight_with_the_right_radius(tmp_path):
    field = sphere_field()
    level = math.log1p(math.exp(10 * (1 - 0.4 / 0.5)))  # the density at |x| = 0.4
    mesh = extract_mesh(field, resolution=40, threshold=level, chunk=10000)
    assert mesh.is_watertight and mesh.volume > 0  # closed, faces wound outward
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radii.mean() - 0.4) < 0.005 and radii.max() - radii.min() < 0.02
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.4**3, rel=0.03)
    assert np.all(mesh.visual.vertex_colors[:, :3] == 128)  # sigmoid(0) = 0.5 albedo
    path = export_glb(mesh, tmp_path / "out" / "sphere.glb")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
    assert not list(path.parent.glob(".*.tmp"))


def test_empty_field_error_names_threshold_and_max_density():
    field = sphere_field()  # max density softplus(10) = 10.0000454 < 25
    with pytest.raises(ValueError, match=r"empty at threshold 25: the max density found on the 9\^3 lattice is "
                                         r"10(\.0)?; lower the threshold"):
        extract_mesh(field, resolution=9)
    with pytest.raises(ValueError, match=r"resolution must be >= 2, got 1"):
        extract_mesh(field, resolution=1)
