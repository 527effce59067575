"""CPU rasterizer: hand-computed coverage and barycentrics, occlusion, cameras, pytorch3d agreement."""

import numpy as np
import pytest
import torch
from meshes import ellipsoid

from zoo.body.mesh import vertex_normals
from zoo.render.cameras import intrinsics, look_at_opencv, project_opencv, world_to_camera
from zoo.render.raster import CpuRasterizer, merge_meshes, rasterize, render_mesh


def _tri(pts, z=(1.0, 1.0, 1.0)):
    v = torch.tensor([[p[0], p[1], zz] for p, zz in zip(pts, z, strict=True)], dtype=torch.float32)
    return v, torch.tensor([[0, 1, 2]])


def test_single_triangle_covered_pixels_and_barycentrics():
    v, f = _tri([(1, 1), (7, 1), (1, 7)])
    fr = rasterize(v, f, 8, 8, perspective_correct=False)
    # Pixel centre (c + .5, r + .5) inside iff c >= 1, r >= 1, c + r <= 7 (hypotenuse included).
    expected = np.array([[c >= 1 and r >= 1 and c + r <= 7 for c in range(8)] for r in range(8)])
    assert np.array_equal((fr.pix_to_face == 0).numpy(), expected)
    assert int(expected.sum()) == 21
    # At pixel (row 1, col 1) the centre is (1.5, 1.5): weights of v1 and v2 are 0.5 / 6 each.
    assert torch.allclose(fr.bary[1, 1], torch.tensor([1 - 1 / 6, 1 / 12, 1 / 12]), atol=1e-6)
    # Pixel (row 3, col 2): centre (2.5, 3.5) -> (1.5 / 6, 2.5 / 6).
    assert torch.allclose(fr.bary[3, 2], torch.tensor([1 - 4 / 6, 1.5 / 6, 2.5 / 6]), atol=1e-6)
    assert torch.allclose(fr.zbuf[expected], torch.ones(21))
    # Background follows pytorch3d: face -1, depth -1, barycentrics 0.
    assert (fr.pix_to_face[~torch.from_numpy(expected)] == -1).all()
    assert (fr.zbuf[0] == -1).all() and (fr.bary[0] == 0).all()


def test_winding_does_not_matter():
    v, _ = _tri([(1, 1), (7, 1), (1, 7)])
    a = rasterize(v, torch.tensor([[0, 1, 2]]), 8, 8).pix_to_face
    b = rasterize(v, torch.tensor([[0, 2, 1]]), 8, 8).pix_to_face
    assert torch.equal(a, b)


def test_perspective_correct_barycentrics_and_depth():
    v, f = _tri([(0, 0), (16, 0), (0, 16)], z=(1.0, 2.0, 4.0))
    fr = rasterize(v, f, 16, 16, perspective_correct=True)
    # Screen weights at pixel (row 2, col 4), centre (4.5, 2.5): l1 = 4.5/16, l2 = 2.5/16.
    lam = torch.tensor([1 - 7 / 16, 4.5 / 16, 2.5 / 16])
    w = lam / torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(fr.bary[2, 4], w / w.sum(), atol=1e-6)
    assert fr.zbuf[2, 4].item() == pytest.approx(1 / w.sum().item(), rel=1e-6)
    lin = rasterize(v, f, 16, 16, perspective_correct=False)
    assert lin.zbuf[2, 4].item() == pytest.approx(float(lam @ torch.tensor([1.0, 2.0, 4.0])), rel=1e-6)


def test_occlusion_picks_nearer_face_in_any_order():
    near = [(0, 0, 1.0), (8, 0, 1.0), (0, 8, 1.0)]
    far = [(0, 0, 3.0), (8, 0, 3.0), (0, 8, 3.0)]
    for order in ((near, far), (far, near)):
        v = torch.tensor(order[0] + order[1], dtype=torch.float32)
        f = torch.tensor([[0, 1, 2], [3, 4, 5]])
        fr = rasterize(v, f, 8, 8)
        nearer = 0 if order[0] is near else 1
        cov = fr.pix_to_face >= 0
        assert cov.sum() == 36
        assert (fr.pix_to_face[cov] == nearer).all()
        assert torch.allclose(fr.zbuf[cov], torch.ones(36))
    # Equal depth: the lower face index wins.
    v = torch.tensor(near + near, dtype=torch.float32)
    fr = rasterize(v, torch.tensor([[3, 4, 5], [0, 1, 2]]), 8, 8)
    assert (fr.pix_to_face[fr.pix_to_face >= 0] == 0).all()


def test_faces_behind_camera_and_degenerate_faces_are_dropped():
    v = torch.tensor([[0, 0, -1.0], [8, 0, 1.0], [0, 8, 1.0], [1, 1, 1.0], [2, 2, 1.0], [3, 3, 1.0]])
    fr = rasterize(v, torch.tensor([[0, 1, 2], [3, 4, 5]]), 8, 8)
    assert (fr.pix_to_face == -1).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"verts_screen must be \(V, 3\), got \(4, 2\)"):
        rasterize(torch.zeros(4, 2), torch.zeros(1, 3, dtype=torch.long), 4, 4)
    with pytest.raises(ValueError, match=r"faces index vertices outside \[0, 3\)"):
        rasterize(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]), 4, 4)


def test_project_opencv_and_look_at():
    K = intrinsics(100, 200, 10, 20)
    uvz = project_opencv(torch.tensor([[1.0, 2.0, 4.0]]), K)
    assert torch.allclose(uvz, torch.tensor([[35.0, 120.0, 4.0]]))
    R, t = look_at_opencv((0.0, 0.0, 3.0))
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6)
    cam = world_to_camera(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]), R, t)
    assert torch.allclose(cam[0], torch.tensor([0.0, 0, 3.0]), atol=1e-6)
    assert cam[1, 0] > 0.99  # world +x appears to the right
    assert cam[2, 1] < -0.99  # world +y (up) is image up (OpenCV y down)


_ellipsoid = ellipsoid


def test_agrees_with_pytorch3d_mesh_rasterizer():
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes
    from pytorch3d.utils import cameras_from_opencv_projection

    v, f = _ellipsoid()
    R, t = look_at_opencv((1.0, 0.5, 3.0), (0.1, 0.0, 0.0))
    vc = world_to_camera(v, R, t)
    H, W = 64, 80
    K = intrinsics(60, 70, 41, 30)
    ours = rasterize(project_opencv(vc, K), f, H, W)
    cams = cameras_from_opencv_projection(torch.eye(3)[None], torch.zeros(1, 3), K[None], torch.tensor([[H, W]]))
    rs = RasterizationSettings(image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, bin_size=0)
    ref = MeshRasterizer(cameras=cams, raster_settings=rs)(Meshes([vc], [f]))
    p = ref.pix_to_face[0, ..., 0]
    covered = (p >= 0) | (ours.pix_to_face >= 0)
    assert covered.sum() > 200
    agree = (p[covered] == ours.pix_to_face[covered]).float().mean().item()
    assert agree >= 0.99
    same = (p >= 0) & (p == ours.pix_to_face)
    assert (ref.bary_coords[0, ..., 0, :][same] - ours.bary[same]).abs().max() < 1e-3
    assert (ref.zbuf[0, ..., 0][same] - ours.zbuf[same]).abs().max() < 1e-4


def test_render_mesh_colours_and_background():
    v = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])
    f = torch.tensor([[0, 1, 2]])
    K = intrinsics(8, 8, 8, 8)
    cols = torch.tensor([[1.0, 0.0, 0.0]] * 3)
    img, fr = render_mesh(v, f, K, 16, 16, vertex_colors=cols, ambient=1.0, diffuse=0.0,
                          background=(0.0, 0.0, 1.0), return_fragments=True)
    cov = fr.pix_to_face >= 0
    assert cov.sum() > 30
    assert torch.allclose(img[cov], torch.tensor([1.0, 0.0, 0.0]).expand(int(cov.sum()), 3))
    assert torch.allclose(img[~cov], torch.tensor([0.0, 0.0, 1.0]).expand(int((~cov).sum()), 3))
    # Facing the camera with the light along the view axis: full ambient + diffuse.
    lit = render_mesh(v, f, K, 16, 16, vertex_colors=cols, ambient=0.25, diffuse=0.5, light_dir=(0, 0, -1))
    assert torch.allclose(lit[cov][:, 0], torch.full((int(cov.sum()),), 0.75), atol=1e-5)


def test_vertex_normals_and_merge():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    n = vertex_normals(v, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(n, torch.tensor([[0.0, 0, 1]]).expand(3, 3))
    mv, mf, mid = merge_meshes([(v, torch.tensor([[0, 1, 2]])), (v + 1, torch.tensor([[0, 2, 1]]))])
    assert mv.shape == (6, 3) and mf.tolist() == [[0, 1, 2], [3, 5, 4]] and mid.tolist() == [0, 1]


def test_registered_renderer_module():
    from zoo.core.registry import build

    r = build("renderer", {"name": "cpu_raster", "image_size": 32, "background": [0.0, 0.0, 0.0]})
    assert isinstance(r, CpuRasterizer)
    v, f = _ellipsoid(8)
    vc = v + torch.tensor([0.0, 0.0, 3.0])
    img = r(vc, f, intrinsics(30, 30, 16, 16))
    fr = r.fragments(vc, f, intrinsics(30, 30, 16, 16))
    assert img.shape == (32, 32, 3)
    assert ((img.sum(-1) > 0) == (fr.pix_to_face >= 0)).all()
