"""Surfaces: the body's 2D targets by the k-vertex rule (hand-computed), and the surfaces the MV-Loc recipes build
(SMPL-H body with Phong views and k = 3; LEMON clouds from the LEMON views)."""
import pytest
import torch

from zoo.core import recipe as R
from zoo.core import registry
from zoo.models.rll.surfaces import SURFACES, BodySurface, CloudSurface
from zoo.render.cameras import VIEW_SETS
from zoo.render.lift import LiftMap


def _body_surface(**kw) -> BodySurface:
    return registry.build(SURFACES, {"name": "body", "renderer": {"name": "multiview", "view_set": "body", "image_size": 8},
                                     "body_model": {"name": "smplh"}, **kw})


def _strip():
    """Four vertices, two faces sharing the edge 1-2; one view of 1 x 4 pixels: face 0, face 0, face 1, background."""
    faces = torch.tensor([[0, 1, 2], [1, 2, 3]])
    p2f = torch.tensor([[[0, 0, 1, -1]]])
    bary = torch.tensor([[[[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0]]]])
    return LiftMap("mesh", p2f, bary, faces, 4)


@pytest.mark.parametrize(("k", "want"), [(3, [0, 0, 0, -1]), (2, [1, 1, 0, -1]), (1, [1, 1, 1, -1]),
                                         (None, [1, 0, 0, -1])])
def test_body_targets_by_hand(k, want):
    # Contact on vertices 0 and 1: face 0 has two contact vertices, face 1 one (vertex 1).
    # None (the largest-barycentric vertex): pixel 0 shows vertex 0 (contact), pixels 1 and 2 vertices 2 and 3 (not).
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    t = _body_surface(mask_min_vertices=k).targets(labels, [_strip()])
    assert t.shape == (1, 1, 1, 4) and t[0, 0, 0].tolist() == want


def test_body_targets_take_any_positive_label_as_contact():
    # The official rule takes np.where(label): any non-zero label is a contact vertex.
    labels = torch.tensor([[0.3, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    t = _body_surface(mask_min_vertices=2).targets(labels, [_strip()])
    assert t[0, 0, 0].tolist() == [1, 1, 0, -1] and t[1, 0, 0].tolist() == [0, 0, 0, -1]


def test_body_surface_default_and_bad_k():
    assert _body_surface().mask_min_vertices == 3
    for bad in (0, 4, "3", True):
        with pytest.raises(ValueError, match="BodySurface: mask_min_vertices must be 1, 2, 3 or null"):
            _body_surface(mask_min_vertices=bad)


def test_damon_recipes_use_smplh_phong_and_k3():
    for name in ("mvloc/damon", "mvloc/synthetic_human"):
        s = R.load(name)["system"]["surface"]
        assert s["body_model"]["name"] == "smplh", name
        assert s["mask_min_vertices"] == 3 and s["renderer"]["shading"] == "phong", name
        surface = registry.build(SURFACES, s)
        assert isinstance(surface, BodySurface) and surface.mask_min_vertices == 3
        assert surface.body_model_cfg["name"] == "smplh" and surface.renderer.shading == "phong"
    assert R.load("mvloc/damon", ["system.surface.mask_min_vertices=2"])["system"]["surface"]["mask_min_vertices"] == 2


def test_lemon_recipes_render_from_the_lemon_views():
    for name, size in (("mvloc/lemon", 1024), ("mvloc/synthetic_lemon", 128)):
        rec = R.load(name)
        assert rec["data"]["name"] == "lemon"
        surface = registry.build(SURFACES, rec["system"]["surface"])
        assert isinstance(surface, CloudSurface)
        r = surface.renderer
        assert r.views == VIEW_SETS["lemon"] and r.point_radius == 0.03 and r.image_size == size, name
    # The PIAD recipes keep the PIAD views and radius.
    r = registry.build(SURFACES, R.load("mvloc/piad")["system"]["surface"]).renderer
    assert r.views == VIEW_SETS["object"] and r.point_radius == 0.05


def test_cloud_targets_from_lemon_views():
    surface = registry.build(SURFACES, {"name": "cloud", "renderer": {"name": "multiview", "view_set": "lemon",
                                                                       "image_size": 32}})
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(256, 3, generator=g)
    images, lift = surface.renderer.render_points(pts)
    labels = (torch.rand(1, 256, generator=g) > 0.5).float()
    t = surface.targets(labels, [lift])
    covered = lift.pix_to_elem >= 0
    assert images.shape == (4, 3, 32, 32) and int(covered.sum()) > 100
    assert torch.equal(t[0][covered], labels[0][lift.pix_to_elem[covered]]) and bool((t[0][~covered] == -1).all())
    # Closer views (1.5 vs 2) with smaller discs (0.03 vs 0.05) than the PIAD views.
    _, piad = registry.build("renderer", {"name": "multiview", "view_set": "object", "image_size": 32}).render_points(pts)
    assert not torch.equal(lift.pix_to_elem, piad.pix_to_elem)
