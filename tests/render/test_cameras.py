"""Cameras: InteractVLM's view sets, pytorch3d cameras, OpenCV equivalents, camera numbers, framing."""
import math

import numpy as np
import pytest
import torch

from zoo.render.cameras import (
    VIEW_NAMES,
    VIEW_SET_LIGHTS,
    VIEW_SET_POINT_RADIUS,
    VIEW_SETS,
    camera_centers,
    camera_numbers,
    framing_pose,
    opencv_cameras,
    project_opencv,
    resolve_lights,
    resolve_views,
    view_cameras,
)


def test_view_sets_are_interactvlms():
    assert VIEW_SETS["body"] == [(2, 45, 315, 0, 0), (2, 315, 315, 0, 0.3), (2, 45, 135, 0, 0), (2, 315, 135, 0, 0.3)]
    assert VIEW_SETS["object"] == [(2, 45, 315, 0, 0), (2, 45, 45, 0, 0), (2, 330, 135, 0, 0), (2, 330, 225, 0, 0)]
    assert resolve_views("object") == VIEW_SETS["object"]
    assert resolve_views("body", [[3, 0, 0, 0, 0]]) == [(3.0, 0.0, 0.0, 0.0, 0.0)]
    with pytest.raises(ValueError, match="unknown view_set 'bodies'"):
        resolve_views("bodies")
    with pytest.raises(ValueError, match=r"views must be a non-empty \(N, 5\).*got shape \(1, 4\)"):
        resolve_views(None, [[2, 0, 0, 0]])


def test_lemon_views_lights_and_point_radii():
    # LEMON objects: the PIAD object views at distance 1.5, discs of radius 0.03 (generate_lemon_obj_heatmap.py).
    assert VIEW_SETS["lemon"] == [(1.5, 45, 315, 0, 0), (1.5, 45, 45, 0, 0), (1.5, 330, 135, 0, 0), (1.5, 330, 225, 0, 0)]
    assert VIEW_SET_POINT_RADIUS == {"object": 0.05, "lemon": 0.03}
    assert VIEW_NAMES["body"] == ["topfront", "bottomfront", "topback", "bottomback"]
    assert all(len(VIEW_NAMES[k]) == len(VIEW_SETS[k]) for k in VIEW_SETS)
    # Official lights by view name: topfront +3, topback -3, bottomfront -3, bottomback +3 (z, world).
    by_name = dict(zip(VIEW_NAMES["body"], VIEW_SET_LIGHTS["body"], strict=True))
    assert by_name == {"topfront": (0, 0, 3), "topback": (0, 0, -3), "bottomfront": (0, 0, -3), "bottomback": (0, 0, 3)}
    assert resolve_lights("body", None, None, 4) == VIEW_SET_LIGHTS["body"]
    # Explicit views without lights get a light at each camera; explicit lights are checked.
    assert torch.allclose(torch.tensor(resolve_lights("body", [[2, 0, 0, 0, 0]], None, 1)), torch.tensor([[0.0, 0, 2]]),
                          atol=1e-6)
    assert resolve_lights("object", None, [[1, 2, 3]] * 4, 4) == [(1.0, 2.0, 3.0)] * 4
    with pytest.raises(ValueError, match=r"lights must be \(4, 3\): one finite \(x, y, z\) location per view"):
        resolve_lights("body", None, [[0, 0, 3]], 4)


def test_camera_centers_match_pytorch3d():
    from pytorch3d.renderer import FoVPerspectiveCameras

    for vs in VIEW_SETS.values():
        R, T = view_cameras(vs)
        ref = FoVPerspectiveCameras(R=R, T=T).get_camera_center()
        assert torch.allclose(camera_centers(vs), ref, atol=1e-5)
    # No image shift: the camera sits on the view sphere at (dist, elev, azim).
    assert torch.allclose(camera_centers([[2, 0, 90, 0, 0]]), torch.tensor([[2.0, 0, 0]]), atol=1e-6)


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


def test_framing_pose_centres_and_fits_the_points():
    # A unit sphere of points around (1, 2, 3): its centre lands on the optical axis at the distance where
    # the sphere spans half_span pixels at focal length f, seen from azimuth 90 deg (+x), elevation 0.
    g = np.random.default_rng(0)
    pts = g.normal(size=(500, 3))
    pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) + np.array([1.0, 2.0, 3.0])
    c = (pts.max(0) + pts.min(0)) / 2
    r = np.linalg.norm(pts - c, axis=1).max()
    R, t = framing_pose(pts, math.pi / 2, 0.0, f=100.0, half_span=50.0)
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(R @ c + t, [0.0, 0.0, r * math.sqrt(1 + 4.0)])
    assert np.allclose(R[2], [-1.0, 0.0, 0.0])  # looks along -x, from the +x side
    assert np.allclose(R[1], [0.0, -1.0, 0.0])  # image y points down the world's y
