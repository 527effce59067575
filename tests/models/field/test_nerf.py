"""NeRF fields: blob bias, activations, analytic normals, progressive levels, occupancy hook, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from zoo.core.recipe import ConfigError
from zoo.models.field.nerf import DenseGridNeRF, HashNeRF

TINY = dict(levels=4, log2_table=10, base=4, max_resolution=32, hidden=16, occupancy=None)


def blob_only(field: HashNeRF) -> HashNeRF:
    """Zero the MLP outputs: density = softplus(blob), albedo = sigmoid(0)."""
    with torch.no_grad():
        field.density_net[-1].weight.zero_()
        field.feature_net[-1].weight.zero_()
    return field


def test_blob_bias_and_activations():
    field = blob_only(HashNeRF(**TINY))
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.3, 0.4], [0.0, 0.0, 0.25], [1.2, 0.0, 0.0]])
    out = field(pts)
    # softplus(10 (1 - r / 0.5)): r = 0 -> softplus(10); r = 0.5 -> ln 2; r = 0.25 -> softplus(5); outside -> 0
    want = torch.tensor([math.log1p(math.exp(10)), math.log(2), math.log(2), math.log1p(math.exp(5)), 0.0])
    assert torch.allclose(out["density"], want, atol=1e-5)
    assert torch.allclose(field.density(pts), want, atol=1e-5)
    assert torch.allclose(out["features"], torch.full((5, 3), 0.5))
    no_blob = blob_only(HashNeRF(**TINY, blob_density=0.0))
    assert torch.allclose(no_blob.density(pts[:4]), torch.full((4,), math.log(2)), atol=1e-6)
    wide = DenseGridNeRF(resolution=4, blob_density=4.0, blob_radius=1.0)  # a zero grid: the blob alone
    assert wide.density(torch.tensor([[0.0, 0.0, 0.5]])).item() == pytest.approx(math.log1p(math.exp(2.0)), abs=1e-5)


def test_analytic_normals_of_radial_densities_point_outward():
    pts = torch.randn(200, 3)
    pts = pts / pts.norm(dim=-1, keepdim=True) * torch.rand(200, 1).mul(0.7).add(0.1)
    radial = pts / pts.norm(dim=-1, keepdim=True)
    field = blob_only(HashNeRF(**TINY))
    assert torch.allclose(field.normals(pts), radial, atol=1e-5)
    # a dense grid whose own density logit falls with radius (no blob): normals ~ radial
    grid = DenseGridNeRF(resolution=33, blob_density=0.0)
    axis = torch.linspace(-1, 1, 33)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")  # the grid is indexed [z, y, x]
    with torch.no_grad():
        grid.grid[..., 0] = -20.0 * (x**2 + y**2 + z**2).sqrt()
    cos = (grid.normals(pts).detach() * radial).sum(-1)
    assert float(cos.min()) > 0.95
    out = grid(pts, with_normal=True)
    assert torch.allclose(out["normal"].norm(dim=-1), torch.ones(200), atol=1e-5)


def test_normals_keep_the_graph_in_training_and_detach_under_no_grad():
    field = HashNeRF(**TINY)
    pts = torch.rand(32, 3) - 0.5
    out = field(pts, with_normal=True)
    assert out["normal"].requires_grad
    (out["normal"] * pts).sum().backward()  # an orientation-style loss reaches the table (double backward)
    assert float(field.encoding.table.grad.abs().sum()) > 0
    grid = DenseGridNeRF(resolution=8)
    grid(pts, with_normal=True)["normal"].sum().backward()  # the gather-based grid supports it too
    with torch.no_grad():
        out = field(pts, with_normal=True)
    assert not any(v.requires_grad for v in out.values())
    assert out["normal"].shape == (32, 3) and out["density"].shape == (32,)


def test_dense_grid_interpolation_equals_grid_sample():
    field = DenseGridNeRF(resolution=6, bound=2.0)
    with torch.no_grad():
        field.grid.normal_()
    pts = (torch.rand(40, 3) * 2 - 1) * 2.0
    ours = field.interpolate((pts + 2.0) / 4.0)
    ref = F.grid_sample(field.grid.permute(3, 0, 1, 2)[None], (pts / 2.0).view(1, 40, 1, 1, 3), align_corners=True)
    assert torch.allclose(ours, ref.view(4, 40).T, atol=1e-5)


def test_progressive_levels_follow_the_schedule_and_resume():
    field = HashNeRF(levels=16, log2_table=10, base=4, max_resolution=64, hidden=8)
    assert field.encoding.active_levels == 8
    expected = {0: 8, 1999: 8, 2000: 8, 2499: 8, 2500: 9, 3000: 10, 5999: 15, 6000: 16, 10000: 16}
    for step, levels in expected.items():
        assert field.update_step(step) == {"field/levels": float(levels)}
    field.update_step(3000)
    fresh = HashNeRF(levels=16, log2_table=10, base=4, max_resolution=64, hidden=8)
    fresh.load_state_dict(field.state_dict())
    assert fresh.encoding.active_levels == 10
    always = HashNeRF(**TINY, level_schedule=None)
    assert always.update_step(0) == {"field/levels": 4.0}
    tiny = HashNeRF(**TINY)  # the default schedule starts at 8 > 4 levels: all on
    assert tiny.encoding.active_levels == 4


def test_update_step_refreshes_the_occupancy_grid():
    field = blob_only(HashNeRF(**{**TINY, "occupancy": {"resolution": 8, "update_every": 2, "warmup_steps": 2,
                                                          "threshold": 0.5, "dilate": 0}}))
    assert field.occupancy.bound == 1.0 and field.occupancy.fraction() == 1.0
    assert field.update_step(1) == {"field/levels": 4.0, "field/occupied": 1.0}
    out = field.update_step(2)
    assert 0.0 < out["field/occupied"] < 0.2  # only cells near the blob (density > 0.5 within r ~ 0.52)
    assert "occupancy.mask" in field.state_dict()
    assert bool(field.occupancy.occupied(torch.zeros(1, 3))) and not bool(field.occupancy.occupied(torch.ones(1, 3)))


def test_config_and_shape_errors_name_the_key_and_method():
    with pytest.raises(ConfigError, match=r"'levels': must be an int >= 1, got 0"):
        HashNeRF(**{**TINY, "levels": 0})
    with pytest.raises(ConfigError, match=r"'max_resolution': must be an int >= base \(4\), got 2"):
        HashNeRF(**{**TINY, "max_resolution": 2})
    with pytest.raises(ConfigError, match=r"'bound': must be a number > 0"):
        DenseGridNeRF(resolution=4, bound=0.0)
    with pytest.raises(ConfigError, match=r"'occupancy.size': unknown occupancy setting"):
        DenseGridNeRF(resolution=4, occupancy={"size": 3})
    with pytest.raises(ConfigError, match=r"'occupancy.bound'"):
        DenseGridNeRF(resolution=4, occupancy={"bound": 2.0})
    with pytest.raises(ConfigError, match=r"'occupancy.decay'"):
        DenseGridNeRF(resolution=4, occupancy={"decay": 2.0})
    with pytest.raises(ConfigError, match=r"'level_schedule'"):
        HashNeRF(**TINY, level_schedule={"start": 1})
    field = DenseGridNeRF(resolution=4)
    with pytest.raises(ValueError, match=r"DenseGridNeRF.forward: expected points of shape \(N, 3\), got \(2, 4, 3\)"):
        field(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"HashNeRF.density: expected points of shape \(N, 3\), got \(3,\)"):
        HashNeRF(**TINY).density(torch.zeros(3))


def test_registry_builds_both_tiny_fields():
    from zoo.core import registry

    for name, cls in (("hash_nerf", HashNeRF), ("dense_grid", DenseGridNeRF)):
        entry = registry.entry("field", name)
        field = registry.get("field", name)(**entry["tiny"])
        assert isinstance(field, cls) and field.feature_dim == 3 and field.occupancy is None
        out = field(torch.rand(10, 3) - 0.5)
        assert out["density"].shape == (10,) and bool((out["density"] >= 0).all())
        assert bool(((out["features"] >= 0) & (out["features"] <= 1)).all())
