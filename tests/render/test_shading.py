"""Phong shading of mesh views: InteractVLM's settings by default, hand-computed values, and the
cpu_fast path against pytorch3d's HardPhongShader (same views, lights and materials)."""
import pytest
import torch
from meshes import ellipsoid

from zoo.body.mesh import vertex_normals
from zoo.core import registry
from zoo.render.cameras import VIEW_SET_LIGHTS, VIEW_SETS, camera_centers
from zoo.render.multiview import MultiViewRenderer, shade_mesh_phong


def _triangle():
    """A flat triangle in the z = 0 plane around the origin, facing +z."""
    return torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]), torch.tensor([[0, 1, 2]])


def test_defaults_are_interactvlms():
    r = MultiViewRenderer("body", image_size=8)
    assert r.shading == "phong" and r.lights == VIEW_SET_LIGHTS["body"]
    assert (r.ambient, r.diffuse, r.specular, r.shininess) == (0.5, 0.3, 0.2, 64.0)
    built = registry.build("renderer", {"name": "multiview", "view_set": "body", "image_size": 8, "shading": "unlit"})
    assert built.shading == "unlit"
    assert MultiViewRenderer("lemon", image_size=8).point_radius == 0.03
    assert MultiViewRenderer("object", image_size=8).point_radius == 0.05
    assert MultiViewRenderer("lemon", image_size=8, point_radius=0.1).point_radius == 0.1
    with pytest.raises(ValueError, match=r"shading must be one of \('phong', 'unlit'\), got 'flat'"):
        MultiViewRenderer(shading="flat")
    with pytest.raises(ValueError, match=r"MultiViewRenderer: lights must be \(4, 3\)"):
        MultiViewRenderer("body", lights=[[0, 0, 3]])
    with pytest.raises(ValueError, match="specular must be >= 0"):
        MultiViewRenderer(specular=-1)


@pytest.mark.parametrize("backend", ["cpu_fast", "pytorch3d"])
def test_phong_by_hand_on_a_triangle_facing_the_camera(backend):
    # Camera at (0, 0, 2) looking at the triangle; the centre pixel of an odd-sized image sees (0, 0, 0)
    # with normal +z. Light in front at (0, 0, 3): n.l = 1, reflection = view direction, so
    # colour = (0.5 + 0.3) c + 0.2. Light behind at (0, 0, -3): n.l = -1, colour = 0.5 c (no diffuse, no specular).
    v, f = _triangle()
    c = torch.tensor([0.5, 0.25, 1.0])
    cols = c.expand(3, 3)
    for light, want in (((0.0, 0.0, 3.0), 0.8 * c + 0.2), ((0.0, 0.0, -3.0), 0.5 * c)):
        r = MultiViewRenderer(views=[[2, 0, 0, 0, 0]], image_size=9, lights=[light], backend=backend)
        img, lm = r.render_mesh(v, f, cols, cache=False)
        assert int(lm.pix_to_elem[0, 4, 4]) >= 0
        assert torch.allclose(img[0, :, 4, 4], want, atol=1e-5), (light, img[0, :, 4, 4], want)
        assert (img[0].permute(1, 2, 0)[lm.pix_to_elem[0] < 0] == 1.0).all()
    # A light off to the side: diffuse by the cosine, and specular only where the reflection meets the eye.
    r = MultiViewRenderer(views=[[2, 0, 0, 0, 0]], image_size=9, lights=[(3.0, 0.0, 3.0)], backend=backend)
    img, _ = r.render_mesh(v, f, cols, cache=False)
    cos = 3 / (18 ** 0.5)
    # view dir (0,0,1), light dir (1,0,1)/sqrt2: reflection (-1,0,1)/sqrt2 -> v.r = 1/sqrt2, ^64 ~ 2.3e-10
    assert torch.allclose(img[0, :, 4, 4], (0.5 + 0.3 * cos) * c, atol=1e-5)


def test_unlit_is_the_interpolated_colour():
    v, f = _triangle()
    cols = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    img, lm = MultiViewRenderer(views=[[2, 0, 0, 0, 0]], image_size=9, shading="unlit").render_mesh(v, f, cols, cache=False)
    face = f[lm.pix_to_elem[0, 4, 4]]
    assert torch.allclose(img[0, :, 4, 4], (cols[face] * lm.bary[0, 4, 4][:, None]).sum(0), atol=1e-6)


def test_formula_equals_pytorch3d_hardphongshader_on_its_own_fragments():
    """Given pytorch3d's fragments, our Phong formula gives pytorch3d's image on every pixel."""
    from zoo.render.p3d import p3d_render_mesh

    v, f = ellipsoid(12)
    col = (vertex_normals(v, f) + 1) / 2
    views, lights = VIEW_SETS["body"], VIEW_SET_LIGHTS["body"]
    ref, (p2f, bary, _) = p3d_render_mesh(v, f, col, views, 48, "phong", lights)
    ours = shade_mesh_phong(p2f, bary, v, f, col, torch.tensor(lights), camera_centers(views))
    assert int((p2f >= 0).sum()) > 800
    assert float((ours - ref).abs().max()) < 1e-5


@pytest.mark.parametrize("shading", ["phong", "unlit"])
def test_cpu_fast_images_agree_with_pytorch3d(shading):
    """The whole fast path (our rasterizer + our shading) against pytorch3d (rasterizer + shader), 4 body views.

    Measured (ellipsoid of 528 faces, 48^2, 972 covered pixels): the face maps agree on every covered
    pixel and the images differ by at most 2.3e-6 (Phong) and 2.8e-6 (unlit); on the golden 13776-face
    body at 64^2, 1.6e-5 and 2.3e-5. The bounds below leave room for a silhouette pixel of disagreement.
    """
    v, f = ellipsoid(12)
    a, la = MultiViewRenderer("body", image_size=48, shading=shading).render_mesh(v, f, cache=False)
    b, lb = MultiViewRenderer("body", image_size=48, shading=shading, backend="pytorch3d").render_mesh(v, f, cache=False)
    pa, pb = la.pix_to_elem, lb.pix_to_elem
    covered = (pa >= 0) | (pb >= 0)
    assert int(covered.sum()) > 800
    assert float((pa == pb)[covered].float().mean()) >= 0.99
    same = (pa == pb) & (pa >= 0)
    diff = (a - b).abs().permute(0, 2, 3, 1)
    assert float(diff[same].max()) < 1e-4
    assert float(diff.mean()) < 1e-3
    if shading == "phong":  # the lights matter: front and back views of the same side differ in brightness
        assert not torch.allclose(a, MultiViewRenderer("body", image_size=48, shading="unlit").render_mesh(
            v, f, cache=False)[0], atol=1e-2)
