"""Tests for zoo.models.fit.geometry: 6D rotations, random rotations, poses, geodesic angle, ICP with normals."""

import math

import pytest
import torch

from zoo.models.fit.geometry import (
    apply_pose,
    icp_with_normals,
    matrix_to_rotation_6d,
    random_rotations,
    rotation_6d_to_matrix,
    rotation_angle_deg,
)


def _axis_angle(axis, deg):
    """Rodrigues by hand: rotation of ``deg`` degrees about ``axis``."""
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    a = math.radians(deg)
    Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(a) * Kx + (1 - math.cos(a)) * Kx @ Kx


def test_random_rotations_are_rotations_and_seeded():
    R = random_rotations(200, generator=torch.Generator().manual_seed(0))
    assert R.shape == (200, 3, 3)
    eye = torch.eye(3).expand(200, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(200), atol=1e-5)
    R2 = random_rotations(200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(R, R2)
    R3 = random_rotations(200, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(R, R3)


def test_random_rotations_uniform_statistics():
    # Haar measure on SO(3): E[R] = 0 and the angle has density (1 - cos θ)/π, so E[cos θ] = -1/2... of trace:
    # E[tr R] = 0 (tr R = 1 + 2 cos θ => E[cos θ] = -1/2).
    R = random_rotations(20000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert R.mean(0).abs().max() < 0.03
    cos = (R.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    assert abs(cos.mean().item() + 0.5) < 0.02


def test_6d_round_trip():
    R = random_rotations(500, generator=torch.Generator().manual_seed(1))
    d6 = matrix_to_rotation_6d(R)
    assert d6.shape == (500, 6)
    assert (rotation_6d_to_matrix(d6) - R).abs().max() < 1e-5


def test_6d_of_hand_written_rotation_is_first_two_rows():
    # 90 degrees about z: x -> y, y -> -x.
    Rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(matrix_to_rotation_6d(Rz), torch.tensor([0.0, -1.0, 0.0, 1.0, 0.0, 0.0]))
    # A non-orthonormal 6D input is Gram-Schmidt'ed: rows (2, 0, 0) and (1, 3, 0) -> x, y -> identity.
    assert torch.allclose(rotation_6d_to_matrix(torch.tensor([2.0, 0, 0, 1, 3, 0])), torch.eye(3), atol=1e-6)


def test_apply_pose_hand_computed_and_batched():
    Rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    t = torch.tensor([0.0, 0.0, 3.0])
    out = apply_pose(v, Rz, t, 2.0)
    # s * R v + t: (1,0,0) -> (0,1,0)*2 + t = (0,2,3); (0,2,1) -> (-2,0,1)*2 + t = (-4,0,5)
    assert torch.allclose(out, torch.tensor([[0.0, 2.0, 3.0], [-4.0, 0.0, 5.0]]))
    Rb = torch.stack((torch.eye(3), Rz))
    tb = torch.stack((torch.zeros(3), t))
    sb = torch.tensor([1.0, 2.0])
    outb = apply_pose(v, Rb, tb, sb)
    assert outb.shape == (2, 2, 3)
    assert torch.allclose(outb[0], v) and torch.allclose(outb[1], out)
    outb2 = apply_pose(v.expand(2, 2, 3), Rb, tb, sb)
    assert torch.allclose(outb2, outb)


@pytest.mark.parametrize("deg", [0.0, 1e-3, 30.0, 90.0, 179.999, 180.0])
def test_rotation_angle_deg_known(deg):
    R = _axis_angle([1.0, 2.0, -0.5], deg)
    ang = rotation_angle_deg(torch.eye(3, dtype=torch.float64), R)
    assert abs(ang.item() - deg) < 1e-6
    # invariant: angle(R_a, R_b) = angle(Q R_a, Q R_b)
    Q = _axis_angle([0.3, -1.0, 0.2], 47.0)
    assert abs(rotation_angle_deg(Q, Q @ R).item() - deg) < 1e-6


def test_rotation_angle_deg_float32_near_180_and_batched():
    R = torch.stack([_axis_angle([0, 0, 1], 30.0), _axis_angle([0, 1, 0], 180.0)]).float()
    ang = rotation_angle_deg(torch.eye(3).expand(2, 3, 3), R)
    assert torch.allclose(ang, torch.tensor([30.0, 180.0]), atol=1e-3)


def _box_points(n_per_face=60, size=(0.4, 0.2, 0.1), seed=0):
    """Points on the surface of an axis-aligned box with outward face normals."""
    g = torch.Generator().manual_seed(seed)
    half = torch.tensor(size, dtype=torch.float64) / 2
    pts, nrm = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            p = (torch.rand(n_per_face, 3, generator=g, dtype=torch.float64) * 2 - 1) * half
            p[:, axis] = sign * half[axis]
            n = torch.zeros(n_per_face, 3, dtype=torch.float64)
            n[:, axis] = sign
            pts.append(p)
            nrm.append(n)
    return torch.cat(pts), torch.cat(nrm)


def _gt_transform():
    R = _axis_angle([0.2, 1.0, 0.3], 20.0)
    t = torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64)
    return R, t


def test_icp_recovers_known_rigid_transform():
    src, n_src = _box_points()
    R_gt, t_gt = _gt_transform()
    dst = src @ R_gt.T + t_gt
    n_dst = n_src @ R_gt.T
    # dst normals given as the surface facing src (negated), flipped back by the ICP.
    R, t = icp_with_normals(src, n_src, dst, -n_dst, iters=10, flip_dst_normals=True)
    assert rotation_angle_deg(R, R_gt).item() < 1e-3 * 180 / math.pi
    assert (R - R_gt).abs().max() < 1e-3
    assert (t - t_gt).abs().max() < 1e-3
    assert (src @ R.T + t - dst).abs().max() < 1e-3


def test_icp_flip_dst_normals_equivalence():
    src, n_src = _box_points(seed=1)
    R_gt, t_gt = _gt_transform()
    dst = src @ R_gt.T + t_gt
    n_dst = n_src @ R_gt.T
    R1, t1 = icp_with_normals(src, n_src, dst, n_dst, flip_dst_normals=False)
    R2, t2 = icp_with_normals(src, n_src, dst, -n_dst, flip_dst_normals=True)
    assert torch.allclose(R1, R2, atol=1e-9) and torch.allclose(t1, t2, atol=1e-9)
    assert (R1 - R_gt).abs().max() < 1e-3 and (t1 - t_gt).abs().max() < 1e-3


def test_icp_normal_threshold_init_and_batch():
    src, n_src = _box_points(seed=2)
    R_gt, t_gt = _gt_transform()
    dst = src @ R_gt.T + t_gt
    n_dst = n_src @ R_gt.T
    R, t = icp_with_normals(src, n_src, dst, n_dst, flip_dst_normals=False, normal_threshold=45.0)
    assert (R - R_gt).abs().max() < 1e-3 and (t - t_gt).abs().max() < 1e-3
    # Starting at the answer stays there, also with zero iterations (returns the init).
    R0, t0 = icp_with_normals(src, n_src, dst, n_dst, iters=0, R0=R_gt, t0=t_gt, flip_dst_normals=False)
    assert torch.equal(R0, R_gt) and torch.equal(t0, t_gt)
    # Batched inputs give per-item answers.
    Rb, tb = icp_with_normals(src[None].expand(2, -1, -1), n_src[None].expand(2, -1, -1),
                              torch.stack((src, dst)), torch.stack((n_src, n_dst)), flip_dst_normals=False)
    assert Rb.shape == (2, 3, 3) and tb.shape == (2, 3)
    assert torch.allclose(Rb[0], torch.eye(3, dtype=Rb.dtype), atol=1e-6) and tb[0].abs().max() < 1e-6
    assert (Rb[1] - R_gt).abs().max() < 1e-3


def test_icp_rejects_mismatched_shapes():
    src, n_src = _box_points()
    with pytest.raises(ValueError, match="icp_with_normals"):
        icp_with_normals(src, n_src[:-1], src, n_src)
