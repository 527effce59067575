"""MultiViewRenderer: cpu_fast vs pytorch3d agreement, images, caching, batches, errors, registry."""
import pytest
import torch

from zoo.body.canonical import canonical_body
from zoo.body.mesh import vertex_normals
from zoo.core import registry
from zoo.render.cameras import VIEW_SETS
from zoo.render.multiview import MultiViewRenderer, mesh_fragments, points_fragments
from zoo.render.points import nocs_colors, normalize_unit_sphere


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    from zoo.body.model import BodyModel
    from zoo.body.synthetic import write_synthetic_body_models

    root = write_synthetic_body_models(tmp_path_factory.getbasetemp() / "render_body_models")
    return BodyModel(str(root), model_type="smpl")


@pytest.fixture(scope="module")
def cloud():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2048, 3, generator=g) * torch.tensor([1.0, 0.5, 0.3]) + 2.0


def test_cpu_fast_agrees_with_pytorch3d_on_body_views(body):
    verts, faces = canonical_body(body)
    a = mesh_fragments(verts, faces, VIEW_SETS["body"], 128, "cpu_fast")
    b = mesh_fragments(verts, faces, VIEW_SETS["body"], 128, "pytorch3d")
    cov = (a[0] >= 0) | (b[0] >= 0)
    assert int(cov.sum()) > 4000
    assert float((a[0] == b[0])[cov].float().mean()) >= 0.99
    both = (a[0] == b[0]) & (a[0] >= 0)
    assert float((a[1] - b[1])[both].abs().max()) < 1e-2
    assert float((a[2] - b[2])[both].abs().max()) < 1e-4


def test_cpu_fast_agrees_with_pytorch3d_on_points(cloud):
    from zoo.render.p3d import p3d_render_points

    pts = normalize_unit_sphere(cloud)
    a = points_fragments(pts, VIEW_SETS["object"], 128, 0.05, 10, "cpu_fast")
    b = points_fragments(pts, VIEW_SETS["object"], 128, 0.05, 10, "pytorch3d")
    cov = (a.idx[..., 0] >= 0) | (b.idx[..., 0] >= 0)
    assert float((a.idx[..., 0] == b.idx[..., 0])[cov].float().mean()) >= 0.99
    assert float((a.idx == b.idx).float().mean()) >= 0.99
    r = MultiViewRenderer("object", image_size=128)
    img, lm = r.render_points(cloud)
    ref = p3d_render_points(pts, nocs_colors(pts), VIEW_SETS["object"], 128, 0.05)
    assert float((img - ref).abs().mean()) < 1e-3
    assert torch.equal(lm.pix_to_elem, a.idx[..., 0])


def test_render_body_images_and_cache(body, tmp_path):
    r = MultiViewRenderer("body", image_size=64, cache_dir=str(tmp_path), shading="unlit")
    images, lm = r.render_body(body)
    assert images.shape == (4, 3, 64, 64) and lm.kind == "mesh" and lm.num_elems == body.num_vertices
    fg = lm.pix_to_elem >= 0
    # Background is white; unlit foreground is the barycentric mix of (n + 1) / 2 of the face's vertices.
    assert (images.permute(0, 2, 3, 1)[~fg] == 1.0).all()
    verts, faces = canonical_body(body)
    col = (vertex_normals(verts, faces) + 1) / 2
    v, rr, c = [int(x) for x in torch.nonzero(fg)[len(torch.nonzero(fg)) // 2]]
    face = faces[lm.pix_to_elem[v, rr, c]]
    expected = (col[face] * lm.bary[v, rr, c][:, None]).sum(0)
    assert torch.allclose(images[v, :, rr, c], expected, atol=1e-6)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    images2, lm2 = r.render_body(body)  # from the disk cache
    assert torch.equal(images2, images) and torch.equal(lm2.pix_to_elem, lm.pix_to_elem)
    images3, lm3 = r.render_mesh(verts, faces, cache=False)
    assert torch.equal(images3, images) and torch.equal(lm3.bary, lm.bary)
    # The default (Phong) body views are another cache entry with the same lift map and other images.
    lit, lm4 = MultiViewRenderer("body", image_size=64, cache_dir=str(tmp_path)).render_body(body)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert torch.equal(lm4.pix_to_elem, lm.pix_to_elem) and not torch.allclose(lit, images)
    assert (lit.permute(0, 2, 3, 1)[~fg] == 1.0).all()
    assert r.num_views == 4 and torch.allclose(r.camera_numbers()[1], torch.tensor([0.2, 0.875, 0.875, 0.5, 0.65]))


def test_points_batch_equals_single_renders(cloud):
    r = MultiViewRenderer("object", image_size=48, point_radius=0.08)
    batch = torch.stack([cloud, cloud.flip(0) * 0.5])
    images, maps = r.render_points_batch(batch)
    assert images.shape == (2, 4, 3, 48, 48) and len(maps) == 2
    for b in range(2):
        img, lm = r.render_points(batch[b])
        assert torch.allclose(images[b], img) and torch.equal(maps[b].pix_to_elem, lm.pix_to_elem)
    # Reversing the point order reverses ids: the second cloud shows point P-1-i where the first shows i.
    same = (maps[0].pix_to_elem >= 0)
    assert torch.equal(maps[1].pix_to_elem[same], 2047 - maps[0].pix_to_elem[same])
    # Covered pixels are NOCS colours composited (inside [0.1, 0.9] scaled by alpha), background white.
    assert (images[0].permute(0, 2, 3, 1)[~same] == 1.0).all()
    assert float(images[0].permute(0, 2, 3, 1)[same].max()) <= 0.9 + 1e-6


def test_registry_builds_multiview():
    r = registry.build("renderer", {"name": "multiview", "view_set": "object", "image_size": 32})
    assert isinstance(r, MultiViewRenderer) and r.views == VIEW_SETS["object"] and r.image_size == 32
    r2 = registry.build("renderer", {"name": "multiview", "views": [[3, 10, 20, 0, 0]]})
    assert r2.num_views == 1 and torch.allclose(r2.camera_numbers(), torch.tensor([[0.3, 10 / 360, 20 / 360, 0.5, 0.5]]))


def test_bad_inputs_name_the_argument():
    r = MultiViewRenderer("body", image_size=16)
    with pytest.raises(ValueError, match=r"render_mesh: verts must be a \(V, 3\) tensor, got \(5, 2\)"):
        r.render_mesh(torch.zeros(5, 2), torch.zeros(1, 3, dtype=torch.long), cache=False)
    with pytest.raises(ValueError, match=r"render_mesh: faces index vertices outside \[0, 3\)"):
        r.render_mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]), cache=False)
    with pytest.raises(ValueError, match=r"render_mesh: colors must be \(3, 3\), got \(3, 4\)"):
        r.render_mesh(torch.rand(3, 3), torch.tensor([[0, 1, 2]]), colors=torch.zeros(3, 4), cache=False)
    with pytest.raises(ValueError, match=r"render_points: points must be a \(P, 3\) tensor, got \(2, 10, 3\)"):
        r.render_points(torch.zeros(2, 10, 3))
    with pytest.raises(ValueError, match=r"render_points_batch: points must be a \(B, P, 3\) tensor, got \(10, 3\)"):
        r.render_points_batch(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="unknown render backend 'opengl'"):
        MultiViewRenderer(backend="opengl")
    with pytest.raises(ValueError, match="unknown view_set 'hands'"):
        MultiViewRenderer(view_set="hands")
