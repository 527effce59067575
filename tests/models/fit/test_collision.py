"""zoo.models.fit.collision: winding-number inside test, collision loss, penetration measures, watertightness."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from zoo.models.fit.collision import check_watertight, collision_loss, inside, penetration


def _mesh(m: trimesh.Trimesh, shift=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(m.vertices + np.asarray(shift), dtype=torch.float64), torch.tensor(m.faces, dtype=torch.long)


def _points(n: int, half: float, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * half


def test_inside_unit_cube_matches_the_box_test():
    v, f = _mesh(trimesh.creation.box(extents=(1, 1, 1)))  # [-0.5, 0.5]^3
    p = _points(4000, 0.8)
    expect = (p.abs() < 0.5).all(dim=1)
    near = ((p.abs() - 0.5).abs() < 1e-3).any(dim=1)  # points on the surface are either
    got = inside(p, v, f)
    assert got.dtype == torch.bool and got.shape == (4000,)
    assert torch.equal(got[~near], expect[~near])
    assert 0.2 < expect.float().mean() < 0.4  # both sides are exercised


def test_inside_icosphere_matches_the_ball_test_away_from_the_faceting():
    m = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    v, f = _mesh(m)
    p = _points(4000, 1.5, seed=1)
    r = p.norm(dim=1)
    # The polyhedron lies between its inradius and the unit sphere: test outside that shell.
    inner = float(np.abs((m.face_normals * m.vertices[m.faces[:, 0]]).sum(1)).min())  # nearest face plane
    got = inside(p, v, f)
    clear = (r < inner - 1e-6) | (r > 1.0 + 1e-6)
    assert torch.equal(got[clear], (r < 1.0)[clear])
    assert bool((r < inner).any()) and bool((r > 1.0).any())
    assert torch.equal(inside(p.numpy(), v, f), got)  # numpy points -> CPU bool tensor, same answer


def _spheres(gap: float, r: float = 0.1, sub: int = 3):
    m = trimesh.creation.icosphere(subdivisions=sub, radius=r)
    hv, hf = _mesh(m)
    ov, of = _mesh(m, shift=(2 * r + gap, 0.0, 0.0))
    return hv, hf, ov, of


def test_collision_loss_zero_when_separated_positive_when_intersecting():
    hv, hf, ov, of = _spheres(gap=0.01)
    hv.requires_grad_(True)
    ov.requires_grad_(True)
    loss = collision_loss(hv, hf, ov, of)
    assert loss.ndim == 0 and loss.item() == 0.0
    loss.backward()  # still attached to the graph: zero gradients
    assert hv.grad.abs().max() == 0 and ov.grad.abs().max() == 0

    hv, hf, ov, of = _spheres(gap=-0.04)  # 4 cm overlap
    loss = collision_loss(hv, hf, ov, of)
    assert loss.item() > 0
    # Hand bound: each penetrating vertex is at most 4 cm deep, and it is a sum of squares.
    n_in = int(inside(ov, hv, hf).sum()) + int(inside(hv, ov, of).sum())
    assert 0 < loss.item() <= n_in * 0.04 ** 2


def test_collision_gradient_pushes_the_spheres_apart():
    hv, hf, ov0, of = _spheres(gap=-0.03)
    shift = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    human = hv.clone().requires_grad_(True)
    loss = collision_loss(human, hf, ov0 + shift, of)
    loss.backward()
    assert shift.grad[0] < 0  # moving the object (+x of the body) further along +x lowers the loss
    # Along the centre line, up to the icosphere's faceting (not exactly symmetric about y and z).
    assert abs(shift.grad[1]) < 0.05 * abs(shift.grad[0]) and abs(shift.grad[2]) < 0.05 * abs(shift.grad[0])
    assert human.grad[:, 0].sum() > 0  # the body is pushed the other way
    c0 = (ov0.mean(0) - hv.mean(0)).norm()
    step = -1e-2 * shift.grad / shift.grad.norm()  # 1 cm along -grad
    c1 = (ov0.mean(0) + step - hv.mean(0)).norm()
    assert c1 > c0
    with torch.no_grad():
        assert collision_loss(hv, hf, ov0 + step, of) < loss


def test_penetration_volume_matches_the_lens_of_two_spheres():
    r, d = 0.1, 0.1  # centre distance d: the lens of two balls of radius r
    lens_cm3 = math.pi / 12 * (4 * r + d) * (2 * r - d) ** 2 * 1e6  # 1309.0 cm^3
    hv, hf, ov, of = _spheres(gap=d - 2 * r, r=r, sub=4)
    out = penetration(hv, hf, ov, of, voxel=0.005)
    assert out["volume_cm3"] == pytest.approx(lens_cm3, rel=0.05)
    assert out["voxel_m"] == 0.005
    # The deepest object vertex is the one at the body's centre side: r - (d - r) = d... here 10 cm deep.
    assert out["depth_max_cm"] == pytest.approx(100 * (2 * r - d), rel=0.02)
    apart = penetration(*_spheres(gap=0.01, r=r))
    assert apart == {"depth_max_cm": 0.0, "depth_mean_cm": 0.0, "n_inside": 0, "volume_cm3": 0.0,
                     "voxel_m": 0.005}


def test_penetration_depth_of_a_sphere_pushed_one_cm_into_a_box():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # the "body": face at x = 0.5
    hv, hf = _mesh(box)
    r = 0.05
    ov, of = _mesh(trimesh.creation.icosphere(subdivisions=3, radius=r), shift=(0.5 + r - 0.01, 0.0, 0.0))
    out = penetration(hv, hf, ov, of)
    assert out["depth_max_cm"] == pytest.approx(1.0, abs=0.02)
    assert 0 < out["depth_mean_cm"] < out["depth_max_cm"]
    # Spherical cap of height h = 1 cm: pi h^2 (3r - h) / 3 = 14.66 cm^3 (5 mm grid: coarse).
    cap = math.pi * 1.0 ** 2 * (3 * 5.0 - 1.0) / 3
    assert penetration(hv, hf, ov, of, voxel=0.001)["volume_cm3"] == pytest.approx(cap, rel=0.1)


def test_check_watertight_names_the_mesh():
    box = trimesh.creation.box()
    check_watertight(box.vertices, box.faces, "body")  # closed: no error
    with pytest.raises(ValueError, match=r"^object 'chair': mesh is not watertight \(8 vertices, 11 faces"):
        check_watertight(box.vertices, box.faces[:-1], "object 'chair'")
    with pytest.raises(ValueError, match=r"body: faces: expected shape \(N, 3\)"):
        check_watertight(box.vertices, box.faces[:, :2], "body")
