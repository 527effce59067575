"""Volume rendering (zoo.render.volume) and rays (zoo.render.rays) against hand-computed cases: a constant
cube and a uniform sphere (exact opacity 1 - exp(-sigma * chord), entry depth of an opaque sphere), rays that
miss, backgrounds, occupancy skipping, stratified samples, chunking and the composite of several fields."""
import math

import pytest
import torch
from torch import nn

from zoo.core.recipe import ConfigError
from zoo.render.cameras import look_at_opencv_batch
from zoo.render.rays import camera_rays, fov_intrinsics, ray_cube, spherical_eye
from zoo.render.volume import CompositeRenderer, VolumeRenderer, composite_weights


class SphereField(nn.Module):
    """The Field API (bound, feature_dim, forward, density, normals, occupancy) for a ball of uniform density
    ``sigma`` and colour ``color`` at ``center``; ``radius=None`` fills the whole cube. Counts the points asked."""

    feature_dim = 3

    def __init__(self, sigma: float, color=(0.8, 0.2, 0.1), radius: float | None = 0.5, center=(0.0, 0.0, 0.0),
                 bound: float = 1.0):
        super().__init__()
        self.bound = bound
        self.radius = radius
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.color = nn.Parameter(torch.tensor(color, dtype=torch.float32))
        self.occupancy = None
        self.points_seen = 0

    def _inside(self, points):
        inside = (points.abs() <= self.bound).all(-1)
        if self.radius is not None:
            inside &= (points - self.center).norm(dim=-1) < self.radius
        return inside

    def density(self, points):
        return self.log_sigma.exp() * self._inside(points).to(points.dtype)

    def normals(self, points):
        d = points - self.center
        return d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def forward(self, points, with_normal: bool = False):
        self.points_seen += points.shape[0]
        out = {"density": self.density(points), "features": self.color.expand(points.shape[0], 3)}
        if with_normal:
            out["normal"] = self.normals(points)
        return out


class EmptyField(SphereField):
    """Density 0 everywhere."""

    def density(self, points):
        return torch.zeros(points.shape[0]) * self.log_sigma


class ExactGrid:
    """An occupancy stub that marks exactly the ball (plus a margin) occupied."""

    def __init__(self, radius: float):
        self.radius = radius

    def occupied(self, points):
        return points.norm(dim=-1) <= self.radius


def down_rays(xs, z0: float = 3.0):
    """Rays from (x, 0, z0) along -Z."""
    o = torch.tensor([[x, 0.0, z0] for x in xs])
    return o, torch.tensor([[0.0, 0.0, -1.0]]).expand_as(o).clone()


def fixed(color=(0.2, 0.4, 0.6), **kw):
    return VolumeRenderer(background={"kind": "fixed", "color": list(color)}, **kw).eval()


def test_rays_and_intrinsics():
    assert torch.allclose(spherical_eye(0.0, 0.0, 2.0), torch.tensor([[0.0, 0.0, 2.0]]))
    assert torch.allclose(spherical_eye(90.0, 0.0, 2.0), torch.tensor([[2.0, 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(spherical_eye(0.0, 90.0, 1.5), torch.tensor([[0.0, 1.5, 0.0]]), atol=1e-6)
    K = fov_intrinsics(90.0, 4, 6)  # f = (4 / 2) / tan(45 deg) = 2
    assert torch.allclose(K, torch.tensor([[2.0, 0, 3], [0, 2.0, 2], [0, 0, 1]]))
    assert fov_intrinsics(torch.tensor([60.0, 90.0]), 4, 4).shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"fovy_deg must lie in \(0, 180\)"):
        fov_intrinsics(180.0, 4, 4)
    # Identity camera at the origin: pixel (row 0, col 0) of a 4 x 6 image at f = 2 looks along (-2.5, -1.5, 2).
    R, t = torch.eye(3)[None], torch.zeros(1, 3)
    o, d = camera_rays(R, t, K, 4, 6)
    assert o.shape == d.shape == (1, 4, 6, 3) and torch.allclose(o, torch.zeros_like(o))
    assert torch.allclose(d[0, 0, 0], torch.tensor([-2.5, -1.5, 2.0]) / math.sqrt(2.5**2 + 1.5**2 + 4))
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 4, 6))
    # Slab test: axis-parallel rays (zero components) and a diagonal one.
    o = torch.tensor([[0.5, 0.0, 3.0], [2.0, 0.0, 3.0], [3.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    dvec = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [-1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    dvec = dvec / dvec.norm(dim=-1, keepdim=True)
    t0, t1, hit = ray_cube(o, dvec, 1.0)
    assert hit.tolist() == [True, False, True, True]
    s2 = math.sqrt(2.0)
    assert torch.allclose(t0, torch.tensor([2.0, 0.0, 2 * s2, 0.0]), atol=1e-5)  # inside: clipped at near 0
    assert torch.allclose(t1, torch.tensor([4.0, 0.0, 4 * s2, 1.0]), atol=1e-5)


def test_constant_cube_is_exact_for_any_samples():
    """Constant density along a chord L: opacity 1 - exp(-sigma L) exactly, weights by the closed form."""
    sigma, S = 0.7, 8
    field = SphereField(sigma, radius=None)
    r = fixed(num_samples=S)
    o, d = down_rays([0.0, 0.5])
    # plus a diagonal ray through the cube: enters at t = 2 sqrt(2), leaves at 4 sqrt(2)
    o = torch.cat([o, torch.tensor([[3.0, 0.0, 3.0]])])
    d = torch.cat([d, torch.tensor([[-1.0, 0.0, -1.0]]) / math.sqrt(2.0)])
    out = r(field, o, d)
    chords = torch.tensor([2.0, 2.0, 2 * math.sqrt(2.0)])
    t_in = torch.tensor([2.0, 2.0, 2 * math.sqrt(2.0)])
    assert torch.allclose(out["opacity"][:, 0], 1 - torch.exp(-sigma * chords), atol=1e-6)
    delta = chords / S
    i = torch.arange(S, dtype=torch.float32)
    w = torch.exp(-sigma * delta[:, None] * i) * (1 - torch.exp(-sigma * delta[:, None]))
    t_mid = t_in[:, None] + (i + 0.5) * delta[:, None]
    assert torch.allclose(out["weights"], w, atol=1e-6)
    assert torch.allclose(out["t"], t_mid, atol=1e-5)
    assert torch.allclose(out["depth"][:, 0], (w * t_mid).sum(-1), atol=1e-5)
    bg = torch.tensor([0.2, 0.4, 0.6])
    expected = field.color.detach() * out["opacity"] + (1 - out["opacity"]) * bg
    assert torch.allclose(out["rgb"], expected, atol=1e-6)
    assert torch.allclose(out["background"], bg.expand(3, 3)) and torch.allclose(out["dirs"], d)
    # the same with stratified samples in training: jitter does not change a constant density's opacity
    r.train()
    assert torch.allclose(r(field, o, d)["opacity"][:, 0], 1 - torch.exp(-sigma * chords), atol=1e-6)
    assert torch.allclose(composite_weights(torch.tensor([[0.0, 1.0, 1.0]])),
                          torch.tensor([[0.0, 1 - math.exp(-1), math.exp(-1) * (1 - math.exp(-1))]]), atol=1e-6)


def test_sphere_opacity_is_one_minus_exp_of_the_chord():
    r_ball, sigma, S = 0.5, 2.0, 512
    xs = [0.0, 0.2, 0.4, 0.49, 0.6]
    out = fixed(num_samples=S)(SphereField(sigma, radius=r_ball), *down_rays(xs))
    chord = torch.tensor([2 * math.sqrt(max(r_ball**2 - x**2, 0.0)) for x in xs])
    # bin centres resolve the chord to within one bin (2 / S) -> opacity within sigma * 2 / S
    assert torch.allclose(out["opacity"][:, 0], 1 - torch.exp(-sigma * chord), atol=sigma * 2 / S)
    assert out["opacity"][-1].item() == 0.0  # x = 0.6 crosses the cube but not the ball


def test_opaque_sphere_depth_is_the_entry_distance_and_normal_faces_the_camera():
    r_ball, S = 0.5, 512
    xs = [0.0, 0.25, 0.4]
    out = fixed(num_samples=S)(SphereField(1e4, radius=r_ball), *down_rays(xs, z0=3.0), with_normal=True)
    entry = torch.tensor([3.0 - math.sqrt(r_ball**2 - x**2) for x in xs])
    assert (out["opacity"] > 0.999).all()
    assert torch.allclose(out["depth"][:, 0], entry, atol=2.0 / S)
    n_true = torch.tensor([[x, 0.0, math.sqrt(r_ball**2 - x**2)] for x in xs]) / r_ball
    assert torch.allclose(out["normal"], n_true, atol=0.02)
    assert out["sample_normal"].shape == (3, S, 3)


def test_rays_that_miss_show_only_the_background():
    field = SphereField(5.0)
    o = torch.tensor([[2.0, 0.0, 3.0], [0.0, 0.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])  # beside the cube; pointing away from it
    out = fixed(num_samples=16)(field, o, d)
    assert field.points_seen == 0  # no sample of a missing ray is evaluated
    assert torch.equal(out["opacity"], torch.zeros(2, 1)) and torch.equal(out["depth"], torch.zeros(2, 1))
    assert torch.equal(out["weights"], torch.zeros(2, 16))
    assert torch.allclose(out["rgb"], torch.tensor([[0.2, 0.4, 0.6]] * 2))
    # an explicit background replaces the module's: (3,) for all rays, (B, 3) per image of (B, H, W) rays
    assert torch.allclose(fixed()(field, o, d, background=torch.tensor([0.0, 1.0, 0.0]))["rgb"],
                          torch.tensor([[0.0, 1.0, 0.0]] * 2))
    per_image = fixed()(field, o.view(2, 1, 1, 3), d.view(2, 1, 1, 3), background=torch.eye(3)[:2])
    assert torch.allclose(per_image["rgb"].view(2, 3), torch.eye(3)[:2])
    with pytest.raises(ValueError, match=r"background of shape \(4, 3\) does not broadcast"):
        fixed()(field, o, d, background=torch.zeros(4, 3))


def test_learned_and_random_backgrounds():
    field = SphereField(5.0)
    o = torch.tensor([[2.0, 0.0, 3.0], [2.0, 0.5, 3.0]])
    d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.2, -1.0]]), dim=-1)
    r = VolumeRenderer(num_samples=8, background={"kind": "learned", "hidden": 8, "frequencies": 2})
    out = r(field, o, d)
    assert torch.allclose(out["rgb"], r.background(d)) and ((out["rgb"] > 0) & (out["rgb"] < 1)).all()
    out["rgb"].sum().backward()
    names = [n for n, p in r.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert names and all(n.startswith("background.") for n in names)  # optimiser pattern renderer.background.*
    assert r.background.encode(d).shape == (2, 3 + 6 * 2)
    rnd = VolumeRenderer(num_samples=8, background={"kind": "random", "color": [0.0, 0.0, 0.0]})
    a, b = rnd(field, o, d)["rgb"], rnd(field, o, d)["rgb"]  # training: one random colour per call
    assert torch.equal(a[0], a[1]) and not torch.equal(a, b)
    assert torch.equal(rnd.eval()(field, o, d)["rgb"], torch.zeros(2, 3))
    assert r.state_dict().keys() == {k for k, _ in r.named_parameters()}  # the configured colour is no state


def test_occupancy_skipping_keeps_the_image():
    torch.manual_seed(0)
    K = fov_intrinsics(50.0, 12, 12)
    R, t = look_at_opencv_batch(spherical_eye(30.0, 20.0, 2.5))
    o, d = camera_rays(R, t, K, 12, 12)
    plain = SphereField(3.0, radius=0.5)
    skipping = SphereField(3.0, radius=0.5)
    skipping.occupancy = ExactGrid(0.52)
    r = fixed(num_samples=32)
    a, b = r(plain, o, d, with_normal=True), r(skipping, o, d, with_normal=True)
    for k in ("rgb", "opacity", "depth", "weights", "normal"):
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert 0 < skipping.points_seen < plain.points_seen / 2  # most samples were skipped
    wrong = SphereField(3.0, radius=0.5)
    wrong.occupancy = ExactGrid(0.0)  # a grid that marks everything empty: nothing is rendered
    assert r(wrong, o, d)["opacity"].abs().max() == 0 and wrong.points_seen == 0


def test_stratified_samples_stay_in_their_bins_and_eval_is_deterministic():
    r = VolumeRenderer(num_samples=8, background={"kind": "fixed"})
    field = SphereField(1.0, radius=None)
    o, d = down_rays([0.0, 0.3])
    t1, t2 = r(field, o, d)["t"], r(field, o, d)["t"]
    assert not torch.equal(t1, t2)
    lo = 2.0 + torch.arange(8) * 0.25
    assert ((t1 >= lo) & (t1 <= lo + 0.25)).all() and ((t2 >= lo) & (t2 <= lo + 0.25)).all()
    r.eval()
    assert torch.equal(r(field, o, d)["t"], (lo + 0.125).expand(2, 8))
    r2 = VolumeRenderer(num_samples=8, near=2.5, background={"kind": "fixed"}).eval()  # near clips the entry
    assert torch.allclose(r2(field, o, d)["t"][0], 2.5 + (torch.arange(8) + 0.5) * 1.5 / 8)


def test_eval_chunks_match_one_pass_and_alpha_threshold():
    field = SphereField(2.0, radius=0.6)
    g = torch.Generator().manual_seed(1)
    o = torch.randn(3, 7, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 2.5])
    d = torch.nn.functional.normalize(-o + torch.randn(3, 7, 3, generator=g) * 0.1, dim=-1)
    whole = fixed(num_samples=16)(field, o, d)
    parts = fixed(num_samples=16, chunk=5)(field, o, d)
    assert whole["rgb"].shape == (3, 7, 3) and whole["weights"].shape == (3, 7, 16)
    for k in whole:
        assert torch.allclose(whole[k], parts[k]), k
    # samples with alpha below the threshold drop out: sigma delta = 0.01 * 2/16 gives alpha ~ 1.2e-3 < 0.01
    faint = fixed(num_samples=16, alpha_threshold=0.01)(SphereField(0.01, radius=None), *down_rays([0.0]))
    assert faint["opacity"].item() == 0.0


def test_composite_mixes_by_density():
    s1, s2, S = 0.4, 1.1, 8
    c1, c2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    a, b = SphereField(s1, c1.tolist(), radius=None), SphereField(s2, c2.tolist(), radius=None)
    r = CompositeRenderer(num_samples=S, background={"kind": "fixed", "color": [0.0, 0.0, 0.0]}).eval()
    out = r({"human": a, "object": b}, *down_rays([0.0]))
    op = 1 - math.exp(-(s1 + s2) * 2.0)
    assert out["opacity"].item() == pytest.approx(op, abs=1e-6)
    assert torch.allclose(out["rgb"][0], (s1 * c1 + s2 * c2) / (s1 + s2) * op, atol=1e-6)
    assert out["opacity_human"].item() == pytest.approx(s1 / (s1 + s2) * op, abs=1e-6)
    assert out["opacity_object"].item() == pytest.approx(s2 / (s1 + s2) * op, abs=1e-6)
    # a list names the fields by position; the cube is the union of the fields' cubes
    big = SphereField(s1, radius=None, bound=2.0)
    out = r([big, b], *down_rays([0.0]))
    assert set(out) >= {"opacity_0", "opacity_1"} and out["t"][0, 0].item() == pytest.approx(1.0 + 4.0 / 16)


def test_composite_detached_field_gets_no_gradient():
    human = SphereField(3.0, (0.9, 0.6, 0.5), radius=0.35, center=(-0.2, 0.0, 0.0))
    obj = SphereField(2.0, (0.1, 0.5, 0.9), radius=0.3, center=(0.25, 0.0, 0.0))
    o, d = down_rays([-0.3, -0.1, 0.0, 0.1, 0.3])
    r = CompositeRenderer(num_samples=32, background={"kind": "fixed"})
    for with_normal in (False, True):
        human.zero_grad(set_to_none=True)
        obj.zero_grad(set_to_none=True)
        out = r({"human": human, "object": obj}, o, d, detach=["human"], with_normal=with_normal)
        (out["rgb"].sum() + out["opacity"].sum()).backward()
        assert human.log_sigma.grad is None and human.color.grad is None
        assert obj.log_sigma.grad.abs() > 0 and obj.color.grad.abs().sum() > 0
        assert torch.allclose(out["opacity_human"] + out["opacity_object"], out["opacity"], atol=1e-6)
        assert (out["opacity_human"] > 0.01).any() and (out["opacity_object"] > 0.01).any()
    out = r({"human": human, "object": obj}, o, d)  # without detach both train
    human.zero_grad(set_to_none=True)
    out["rgb"].sum().backward()
    assert human.log_sigma.grad.abs() > 0
    with pytest.raises(KeyError, match=r"detach names \['hand'\] that are not among the fields"):
        r({"human": human, "object": obj}, o, d, detach=["hand"])


def test_composite_with_an_empty_field_equals_the_single_render():
    field = SphereField(4.0, radius=0.45)
    o, d = down_rays([0.0, 0.2, 0.44, 0.8])
    single = fixed(num_samples=24)(field, o, d, with_normal=True)
    comp = CompositeRenderer(num_samples=24, background={"kind": "fixed", "color": [0.2, 0.4, 0.6]}).eval()
    both = comp({"object": field, "nothing": EmptyField(1.0)}, o, d, with_normal=True)
    for k in single.keys() - {"sample_normal"}:
        assert torch.allclose(single[k], both[k], atol=1e-6), k
    # per-sample normals mix by density: they agree wherever a sample has weight (0 where no field has density)
    seen = single["weights"] > 0
    assert torch.allclose(single["sample_normal"][seen], both["sample_normal"][seen], atol=1e-6)
    assert torch.equal(both["sample_normal"][both["weights"] == 0], torch.zeros(int((~seen).sum()), 3))
    assert torch.allclose(both["opacity_object"], single["opacity"], atol=1e-6)
    assert torch.equal(both["opacity_nothing"], torch.zeros(4, 1))


def test_bad_settings_and_field_outputs_are_named():
    with pytest.raises(ConfigError, match=r"'background.kind': nerf_volume: must be one of learned, fixed, random"):
        VolumeRenderer(background={"kind": "sky"})
    with pytest.raises(ConfigError, match=r"'background.colour': nerf_volume: unknown background setting"):
        VolumeRenderer(background={"colour": [1, 1, 1]})
    with pytest.raises(ConfigError, match=r"'background.color': .*three numbers in \[0, 1\]"):
        CompositeRenderer(background={"kind": "fixed", "color": [1, 2]})
    with pytest.raises(ConfigError, match=r"'num_samples': nerf_volume: must be a positive int"):
        VolumeRenderer(num_samples=0)

    class Wrong(SphereField):
        def forward(self, points, with_normal=False):
            return {"density": self.density(points), "features": torch.zeros(points.shape[0], 4)}

    with pytest.raises(ValueError, match=r"field 'field' returned features of shape \(\d+, 4\); expected \(\d+, 3\)"):
        fixed(num_samples=4)(Wrong(1.0), *down_rays([0.0]))
    with pytest.raises(ValueError, match=r"rays_o and rays_d must both be \(\.\.\., 3\)"):
        fixed()(SphereField(1.0), torch.zeros(2, 3), torch.zeros(3, 3))
    # the registry's tiny configurations build
    VolumeRenderer(num_samples=16, background={"kind": "fixed", "color": [1, 1, 1]})
    CompositeRenderer(num_samples=16)
