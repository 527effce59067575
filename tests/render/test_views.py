"""Views: InteractVLM's view sets, pytorch3d cameras, OpenCV equivalents, camera numbers, canonical body."""
import math

import pytest
import torch

from zoo.render.raster import project_opencv
from zoo.render.views import (
    VIEW_SETS,
    camera_numbers,
    canonical_body,
    canonical_body_pose,
    opencv_cameras,
    resolve_views,
    view_cameras,
)


@pytest.fixture(scope="session")
def body_model(tmp_path_factory):
    from zoo.body.model import BodyModel
    from zoo.body.synthetic import write_synthetic_body_models

    root = write_synthetic_body_models(tmp_path_factory.getbasetemp() / "render_body_models")
    return BodyModel(str(root), model_type="smpl")


def test_view_sets_are_interactvlms():
    assert VIEW_SETS["body"] == [(2, 45, 315, 0, 0), (2, 315, 315, 0, 0.3), (2, 45, 135, 0, 0), (2, 315, 135, 0, 0.3)]
    assert VIEW_SETS["object"] == [(2, 45, 315, 0, 0), (2, 45, 45, 0, 0), (2, 330, 135, 0, 0), (2, 330, 225, 0, 0)]
    assert resolve_views("object") == VIEW_SETS["object"]
    assert resolve_views("body", [[3, 0, 0, 0, 0]]) == [(3.0, 0.0, 0.0, 0.0, 0.0)]
    with pytest.raises(ValueError, match="unknown view_set 'bodies'"):
        resolve_views("bodies")
    with pytest.raises(ValueError, match=r"views must be a non-empty \(N, 5\).*got shape \(1, 4\)"):
        resolve_views(None, [[2, 0, 0, 0]])


def test_camera_numbers_by_hand():
    cn = camera_numbers(VIEW_SETS["body"])
    expected = torch.tensor([[0.2, 0.125, 0.875, 0.5, 0.5], [0.2, 0.875, 0.875, 0.5, 0.65],
                             [0.2, 0.125, 0.375, 0.5, 0.5], [0.2, 0.875, 0.375, 0.5, 0.65]])
    assert cn.dtype == torch.float32 and torch.allclose(cn, expected, atol=1e-7)
    assert torch.allclose(camera_numbers([[5, 90, 180, -1, 1]]), torch.tensor([[0.5, 0.25, 0.5, 0.0, 1.0]]))


def test_view_cameras_match_pytorch3d_look_at_plus_translation():
    from pytorch3d.renderer import look_at_view_transform

    for vs in VIEW_SETS.values():
        R, T = view_cameras(vs)
        for i, (d, e, a, x, y) in enumerate(vs):
            R0, T0 = look_at_view_transform(d, e, a)
            T0[0, 0] += x  # what InteractVLM's get_rasterizer does with x, y
            T0[0, 1] += y
            assert torch.allclose(R[i], R0[0], atol=1e-6) and torch.allclose(T[i], T0[0], atol=1e-6)


def test_view_camera_geometry_by_hand():
    # Camera at elev 0, azim 0, dist 2 sits on +z and looks at the origin: view z of the origin is 2.
    R, T = view_cameras([[2, 0, 0, 0, 0]])
    origin_view = torch.zeros(1, 3) @ R[0] + T[0]
    assert torch.allclose(origin_view, torch.tensor([[0.0, 0.0, 2.0]]), atol=1e-6)
    # Rotations are proper.
    R, _ = view_cameras(VIEW_SETS["body"])
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4), atol=1e-6)


def test_opencv_cameras_project_like_fov_camera():
    # The origin projects to the image centre shifted by the view translation (x, y) through the 60 deg FoV.
    S = 100
    R, t, K = opencv_cameras([[2, 30, 60, 0.0, 0.0], [2, 30, 60, 0.1, 0.3]], S)
    f = 50 / math.tan(math.radians(30))
    assert torch.allclose(K, torch.tensor([[f, 0, 50], [0, f, 50], [0, 0, 1.0]]))
    uv0 = project_opencv((t[0])[None], K)[0]
    assert torch.allclose(uv0, torch.tensor([50.0, 50.0, 2.0]), atol=1e-4)
    # pytorch3d view +x is left and +y up: T += (0.1, 0.3) moves the origin left and up in the image.
    uv1 = project_opencv((t[1])[None], K)[0]
    assert torch.allclose(uv1, torch.tensor([50 - f * 0.05, 50 - f * 0.15, 2.0]), atol=1e-3)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        opencv_cameras(VIEW_SETS["body"], 0)


def test_canonical_pose_rotates_hips_about_z():
    p = canonical_body_pose("smpl")
    a = math.radians(30)
    assert p.shape == (1, 72)
    assert p[0, 5] == pytest.approx(a) and p[0, 8] == pytest.approx(-a)
    assert int((p != 0).sum()) == 2
    assert canonical_body_pose("smplx").shape == (1, 165)
    with pytest.raises(ValueError, match="unknown model_type 'smpl-x'"):
        canonical_body_pose("smpl-x")


def test_canonical_body_spreads_the_legs(body_model):
    v, f = canonical_body(body_model)
    v0 = body_model()["vertices"][0]
    assert v.shape == (body_model.num_vertices, 3) and v.dtype == torch.float32 and f.dtype == torch.long
    assert torch.equal(f, body_model.faces.cpu())
    # Feet (lowest 5% of vertices in the rest pose) move outwards: left (+x) further +x, right further -x.
    feet = v0[:, 1] < torch.quantile(v0[:, 1], 0.05)
    left, right = feet & (v0[:, 0] > 0), feet & (v0[:, 0] < 0)
    assert v[left, 0].mean() > v0[left, 0].mean() + 0.1
    assert v[right, 0].mean() < v0[right, 0].mean() - 0.1
    # The upper body does not move (no re-centring, as InteractVLM).
    top = v0[:, 1] > torch.quantile(v0[:, 1], 0.7)
    assert torch.allclose(v[top], v0[top], atol=1e-5)
    vc, _ = canonical_body(body_model, center=True)
    assert torch.allclose((vc.amin(0) + vc.amax(0)) / 2, torch.zeros(3), atol=1e-6)
    with pytest.raises(TypeError, match="must be a zoo BodyModel"):
        canonical_body(torch.zeros(3))
