"""Soft silhouettes and depth maps (zoo.render.silhouette): pytorch3d agreement, hand-checked values, fitting."""
from __future__ import annotations

import math

import pytest
import torch
import trimesh

from zoo.render.cameras import intrinsics, project_opencv
from zoo.render.silhouette import SoftSilhouetteRenderer, depth_map, scale_intrinsics, soft_silhouette


def _sphere(subdiv: int = 2, radius: float = 0.5, centre=(0.05, -0.03, 2.5)):
    m = trimesh.creation.icosphere(subdivisions=subdiv, radius=radius)
    v = torch.tensor(m.vertices, dtype=torch.float32) + torch.tensor(centre)
    return v, torch.tensor(m.faces, dtype=torch.long)


def _K(S: int) -> torch.Tensor:
    return intrinsics(1.2 * S, 1.2 * S, S / 2, S / 2)


def test_cpu_fast_matches_pytorch3d_values_and_gradients():
    pytest.importorskip("pytorch3d")
    v, f = _sphere()
    S = 32
    weight = torch.linspace(-1.0, 1.0, S * S).view(1, S, S)  # an arbitrary loss: every pixel's gradient counts
    out = {}
    for backend in ("cpu_fast", "pytorch3d"):
        vv = v.clone().requires_grad_(True)
        s = soft_silhouette(vv, f, _K(S), S, sigma=1e-4, backend=backend, faces_per_pixel=50)
        (s * weight).sum().backward()
        out[backend] = (s.detach(), vv.grad.clone())
    (sa, ga), (sb, gb) = out["cpu_fast"], out["pytorch3d"]
    assert sa.shape == sb.shape == (1, S, S)
    d = (sa - sb).abs()
    assert d.mean() < 1e-5 and d.max() < 1e-4
    assert 0.1 < sb.mean() < 0.5  # the sphere fills part of the image, with soft edges
    assert ga.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), 0) > 0.99
    assert torch.allclose(ga, gb, atol=1e-3 * gb.abs().max())


@pytest.mark.parametrize("backend", ["cpu_fast", "pytorch3d"])
def test_large_triangle_hand_values(backend):
    if backend == "pytorch3d":
        pytest.importorskip("pytorch3d")
    S, sigma = 32, 1e-2
    # u = 32 X + 16: a vertical edge at u = 16.5 runs through the centres of column 16; the face lies left of it.
    xe = 0.5 / 32
    v = torch.tensor([[xe, -10.0, 1.0], [xe, 10.0, 1.0], [-10.0, 0.0, 1.0]])
    f = torch.tensor([[0, 1, 2]])
    s = soft_silhouette(v, f, intrinsics(32.0, 32.0, 16.0, 16.0), S, sigma=sigma, backend=backend)[0]
    sig_px = sigma / (2.0 / S) ** 2  # 2.56 squared pixels
    row = s[16]
    assert row[16].item() == pytest.approx(0.5, abs=1e-4)  # on the edge
    assert row[15].item() == pytest.approx(1 / (1 + math.exp(-1 / sig_px)), abs=1e-4)  # 1 px inside: 0.5964
    assert row[17].item() == pytest.approx(1 / (1 + math.exp(1 / sig_px)), abs=1e-4)  # 1 px outside: 0.4036
    assert row[0].item() > 1 - 1e-6  # deep inside
    assert row[31].item() == 0.0  # beyond the blur radius (4.9 px)


def test_soft_iou_gradient_moves_object_to_target():
    v, f = _sphere(subdiv=2, radius=0.3, centre=(0.0, 0.0, 0.0))
    S = 48
    K = _K(S)
    t_true = torch.tensor([0.0, 0.0, 2.5])
    target = (soft_silhouette(v + t_true, f, K, S)[0] > 0.5).float()
    t = (t_true + torch.tensor([0.12, 0.0, 0.0])).requires_grad_(True)
    opt = torch.optim.Adam([t], lr=0.015)
    err0 = (t.detach() - t_true)[0].abs().item()
    losses = []
    for _ in range(20):
        s = soft_silhouette(v + t, f, K, S)[0]
        loss = 1 - (s * target).sum() / (s + target - s * target).sum()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (t.detach() - t_true)[0].abs().item() < 0.3 * err0
    assert losses[-1] < 0.5 * losses[0]


def test_depth_map_of_fronto_parallel_square_and_gradient():
    S, z = 32, 2.0
    K = intrinsics(32.0, 32.0, 16.0, 16.0)
    # a square X, Y in [-0.5, 0.5] at depth 2 projects to u, v in [8, 24]: pixels 8..23 (16 x 16)
    v = torch.tensor([[-0.5, -0.5, z], [0.5, -0.5, z], [0.5, 0.5, z], [-0.5, 0.5, z]], requires_grad=True)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    depth, mask = depth_map(v, f, K, S)
    assert depth.shape == mask.shape == (1, S, S)
    expect = torch.zeros(S, S, dtype=torch.bool)
    expect[8:24, 8:24] = True
    assert torch.equal(mask[0], expect)
    assert torch.allclose(depth[0][expect], torch.full((256,), z), atol=1e-5)
    assert (depth[0][~expect] == 0).all()
    depth.sum().backward()
    # moving the whole plane back by dz moves every covered pixel's depth by dz
    assert v.grad[:, 2].sum().item() == pytest.approx(256.0, rel=1e-4)


def test_scale_intrinsics_and_renderer_with_image_size():
    K = intrinsics(100.0, 120.0, 50.0, 40.0)
    K2 = scale_intrinsics(K, (80, 100), (40, 200))
    assert torch.allclose(K2, torch.tensor([[200.0, 0, 100.0], [0, 60.0, 20.0], [0, 0, 1.0]]))
    p = torch.tensor([[0.1, -0.2, 1.5]])
    uv, uv2 = project_opencv(p, K)[0, :2], project_opencv(p, K2)[0, :2]
    assert torch.allclose(uv2, uv * torch.tensor([2.0, 0.5]))  # image coordinates scale with the image
    v, f = _sphere(subdiv=1)
    r = SoftSilhouetteRenderer(image_size=32)
    Kimg = intrinsics(120.0, 120.0, 50.0, 25.0)  # camera of a 50 x 100 (H, W) image
    s = r(v, f, Kimg, image_hw=(50, 100))
    assert s.shape == (1, 16, 32)
    assert torch.allclose(s, soft_silhouette(v, f, scale_intrinsics(Kimg, (50, 100), (16, 32)), (16, 32)))
    assert r(v, f, _K(32)).shape == (1, 32, 32)


def test_batched_input_equals_per_sample():
    v, f = _sphere(subdiv=1)
    vb = torch.stack([v, v + torch.tensor([0.2, 0.0, 0.5])])
    s = soft_silhouette(vb, f, _K(24), 24)
    assert s.shape == (2, 24, 24)
    assert torch.allclose(s[1], soft_silhouette(vb[1], f, _K(24), 24)[0])
    assert not torch.allclose(s[0], s[1])


def test_errors():
    v, f = _sphere(subdiv=1)
    with pytest.raises(ValueError, match="cpu_fast"):
        soft_silhouette(v, f, _K(16), 16, backend="opengl")
    with pytest.raises(ValueError, match="cpu_fast"):
        SoftSilhouetteRenderer(backend="opengl")
    with pytest.raises(ValueError, match="non-empty"):
        soft_silhouette(v, torch.zeros(0, 3, dtype=torch.long), _K(16), 16)
    with pytest.raises(ValueError, match="z > 0"):
        soft_silhouette(v - torch.tensor([0.0, 0.0, 2.5]), f, _K(16), 16)
    with pytest.raises(ValueError, match="z > 0"):
        depth_map(v * torch.tensor([1.0, 1.0, -1.0]), f, _K(16), 16)
