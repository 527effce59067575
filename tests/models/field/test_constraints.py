"""InterFusion's geometric constraints: NeRF occupancy, L^H_geo / L^O_geo hand values and zero cases, the
sampling of constraint points, camera tracing to the occupied centroid, and penetration volume / contact of
meshes whose answer is analytic."""
import math

import numpy as np
import pytest
import torch
import trimesh

from zoo.models.field.constraints import (
    human_geo_loss,
    nerf_occupancy,
    object_geo_loss,
    occupied_centroid,
    penetration_volume,
    sample_geo_points,
)


def test_nerf_occupancy_values():
    sigma = torch.tensor([0.0, 5 * math.log(2), 5 * math.log(10), 1e4])
    assert torch.allclose(nerf_occupancy(sigma), torch.tensor([0.0, 0.5, 0.9, 1.0]), atol=1e-6)


def test_human_geo_loss_hand_values():
    alpha = torch.tensor([0.5, 0.9, 0.2], requires_grad=True)
    inside = torch.tensor([1.0, 0.0, 0.0])
    dist = torch.tensor([0.0, 0.4, 0.8])
    # Weights 1 (inside), 1 - e^-0.5 = 0.393469, 1 - e^-2 = 0.864665 times BCE ln 2, -ln 0.1, -ln 0.8, averaged.
    loss = human_geo_loss(alpha, inside, dist, sigma_d=0.4)
    assert loss.item() == pytest.approx(0.5973627, abs=1e-6)
    loss.backward()
    assert alpha.grad[1] > 0 and alpha.grad[0] < 0  # push the outside point down, the inside one up
    # Zero cases: a field equal to the body's occupancy, and an outside point on the surface (weight 0).
    assert human_geo_loss(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() == 0.0
    assert human_geo_loss(torch.tensor([0.7]), torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0
    with pytest.raises(ValueError, match=r"human_geo_loss: distance has 2 values, expected 3 \(one per point"):
        human_geo_loss(alpha, inside, dist[:2])
    with pytest.raises(ValueError, match=r"alpha must be an occupancy in \[0, 1\]"):
        human_geo_loss(torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([0.0]))


def test_object_geo_loss_zero_when_empty_inside_the_body():
    inside = torch.tensor([1.0, 1.0, 0.0, 0.0])
    empty_inside = torch.tensor([0.0, 0.0, 0.9, 0.3], requires_grad=True)
    assert object_geo_loss(empty_inside, inside).item() == 0.0
    entering = torch.tensor([0.5, 0.0, 0.9, 0.3], requires_grad=True)
    loss = object_geo_loss(entering, inside)
    assert loss.item() == pytest.approx(math.log(2) / 2, abs=1e-6)  # mean over the two inside points
    loss.backward()
    assert entering.grad[0] > 0 and entering.grad[2:].abs().sum() == 0  # outside points are free
    none_inside = object_geo_loss(entering, torch.zeros(4))
    assert none_inside.item() == 0.0 and none_inside.requires_grad


def test_sample_geo_points_near_and_uniform():
    verts = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    g = torch.Generator().manual_seed(3)
    p = sample_geo_points(verts, 2000, 3000, bound=1.0, sigma=0.02, generator=g)
    assert p.shape == (5000, 3)
    near = torch.cdist(p[:2000], verts).min(dim=1).values
    assert near.max() < 0.02 * 6 and near.mean() == pytest.approx(0.02 * math.sqrt(8 / math.pi), rel=0.1)
    uni = p[2000:]
    assert uni.abs().max() <= 1.0 and uni.mean(0).abs().max() < 0.05 and uni.std(0).min() > 0.55
    again = sample_geo_points(verts, 2000, 3000, bound=1.0, sigma=0.02, generator=torch.Generator().manual_seed(3))
    assert torch.equal(p, again)


class _Ball:
    """A field whose density is 10 (occupancy 0.86) in a ball of radius r at c, 0 elsewhere."""

    def __init__(self, c, r, bound=1.0):
        self.c, self.r, self.bound = torch.tensor(c), r, bound

    def density(self, points):
        return 10.0 * ((points - self.c).norm(dim=-1) < self.r).float()


def test_occupied_centroid_moves_to_the_ball():
    c = (0.3, -0.2, 0.45)
    got = occupied_centroid(_Ball(c, 0.25), resolution=32)  # bound from the field
    voxel = 2.0 / 32
    assert got.shape == (3,) and (got - torch.tensor(c)).abs().max() < voxel
    assert occupied_centroid(_Ball(c, 0.25), bound=1.0, resolution=32, threshold=0.9) is None  # 0.86 < 0.9
    assert occupied_centroid(_Ball(c, 0.0), resolution=16) is None


def test_penetration_volume_of_a_ball_half_inside_a_box():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # the "body": x in [-0.5, 0.5]
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.2)
    ball.apply_translation([0.5, 0.0, 0.0])  # centred on the box's face: half inside
    out = penetration_volume(box.vertices, box.faces, ball, resolution=40)
    half = ball.volume / 2  # the icosphere is mirror-symmetric about the face plane (~ 2/3 pi 0.2^3 = 0.01676)
    assert out["volume"] == pytest.approx(half, rel=0.02)
    assert out["object_volume"] == pytest.approx(ball.volume, rel=0.02)
    assert out["fraction"] == pytest.approx(0.5, abs=0.01)
    # Contact: the half inside plus the band 0 < x - 0.5 < 2 cm, a zone of height 0.02 = 5% of the sphere's area.
    assert out["contact"] == pytest.approx(0.55, abs=0.02)
    mc = penetration_volume(box.vertices, box.faces, (ball.vertices, ball.faces), samples=20000, seed=1)
    assert mc["volume"] == pytest.approx(half, rel=0.05)
    far = ball.copy()
    far.apply_translation([1.0, 0.0, 0.0])
    assert penetration_volume(box.vertices, box.faces, far, resolution=40) == {"volume": 0.0, "object_volume": pytest.approx(
        ball.volume, rel=0.02), "fraction": 0.0, "contact": 0.0}
    # The same ball as occupied voxel centres (a field's grid), each 1 cm^3.
    g = (np.arange(-20, 20) + 0.5) * 0.01
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pts = pts[np.linalg.norm(pts, axis=1) < 0.2] + [0.5, 0.0, 0.0]
    vox = penetration_volume(box.vertices, box.faces, pts, point_volume=1e-6)
    assert vox["volume"] == pytest.approx(2 / 3 * math.pi * 0.2 ** 3, rel=0.03)
    with pytest.raises(ValueError, match=r"object points need point_volume \(> 0\)"):
        penetration_volume(box.vertices, box.faces, pts)


def test_object_geo_loss_against_a_body_occupancy():
    """L^O_geo through the whole chain: points sampled around a spherical 'body', its winding occupancy,
    and an object field's nerf_occupancy: zero for an object beside the body, positive for one entering it."""
    from zoo.body.occupancy import BodyOccupancy

    body = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    occ = BodyOccupancy("mesh").set_body(body.vertices, body.faces)
    verts = torch.tensor(body.vertices, dtype=torch.float32)
    pts = sample_geo_points(verts, 2000, 2000, bound=1.0, sigma=0.05, generator=torch.Generator().manual_seed(0))
    inside = occ.query(pts, distance=False)["inside"]
    assert 0.1 < inside.mean() < 0.5 and "distance" not in occ.query(pts[:2], distance=False)
    beside = _Ball((0.75, 0.0, 0.0), 0.3)  # reaches x = 0.45 > 0.4: touches nothing inside the body
    entering = _Ball((0.45, 0.0, 0.0), 0.3)
    assert object_geo_loss(nerf_occupancy(beside.density(pts)), inside).item() == 0.0
    loss = object_geo_loss(nerf_occupancy(entering.density(pts)), inside)
    # The ball covers a part of the body's points, each at BCE(1 - e^-2, 0) = 2.
    share = ((pts - entering.c).norm(dim=-1) < 0.3)[inside > 0.5].float().mean().item()
    assert 0.05 < share < 0.5 and loss.item() == pytest.approx(2.0 * share, rel=1e-5)
