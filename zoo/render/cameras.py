"""Camera math of the zoo: InteractVLM's fixed views, pytorch3d and OpenCV cameras, projection, framing.

Two camera conventions meet here:

* **pytorch3d** (what InteractVLM renders with): ``X_view = X_world @ R + T``, view +X left,
  +Y up, +Z forward. A view is a 5-tuple ``(dist, elev, azim, x, y)``: InteractVLM builds
  each camera with ``look_at_view_transform(dist, elev, azim)`` (degrees, looking at the
  origin, up +Y) and then adds ``x`` and ``y`` to the view-space translation ``T`` (so they
  shift the image content, not the eye), with a default ``FoVPerspectiveCameras`` (60 degree
  field of view, square aspect) -- facts read from saidwivedi/InteractVLM
  ``preprocess_data/render_mesh_utils.py`` (``get_rasterizer``) and
  ``preprocess_data/utils_obj_pc.py`` (the point version, which adds only ``y``; every
  object view has x = 0, so the two agree). The view lists come from that repository's
  ``preprocess_data/constants.py`` (``HUMAN_VIEW_DICT['4MV-Z_Vitru']`` and
  ``OBJS_VIEW_DICT['4MV-Z_HM']``); the LEMON object views are the PIAD ones at distance 1.5
  (``preprocess_data/generate_lemon_obj_heatmap.py``, which also uses a point radius of 0.03
  instead of 0.05: :data:`VIEW_SET_POINT_RADIUS`). The body views are lit by one point light
  each (:data:`VIEW_SET_LIGHTS`, world coordinates), as ``generate_damon_human_mask.py``
  renders them.
* **OpenCV** (what :mod:`zoo.render.raster` rasterizes with): ``X_cam = R @ X_world + t``,
  x right, y down, z forward, pinhole ``u = fx X/Z + cx``, ``v = fy Y/Z + cy``.
  :func:`opencv_cameras` turns the views into this form: ``R_cv = diag(-1, -1, 1) R^T``,
  ``t_cv = diag(-1, -1, 1) T`` and ``fx = fy = (S / 2) / tan(fov / 2)``, ``cx = cy = S / 2``
  for an S x S image, which is what pytorch3d's ``cameras_from_opencv_projection`` inverts.

Everything is plain torch (numpy for :func:`framing_pose`, which the synthetic data
generators use in float64): pytorch3d is not imported.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "VIEW_SETS", "VIEW_NAMES", "VIEW_SET_LIGHTS", "VIEW_SET_POINT_RADIUS", "FOV_DEG", "resolve_views", "resolve_lights",
    "views_tensor", "view_cameras", "camera_centers", "opencv_cameras", "camera_numbers",
    "intrinsics", "project_opencv", "look_at_opencv", "world_to_camera", "framing_pose", "look_at_opencv_batch",
]

View = tuple[float, float, float, float, float]

VIEW_SETS: dict[str, list[View]] = {
    # topfront, bottomfront, topback, bottomback (InteractVLM's '4MV-Z_Vitru' order)
    "body": [(2.0, 45.0, 315.0, 0.0, 0.0), (2.0, 315.0, 315.0, 0.0, 0.3),
             (2.0, 45.0, 135.0, 0.0, 0.0), (2.0, 315.0, 135.0, 0.0, 0.3)],
    # frontleft, frontright, backleft, backright ('4MV-Z_HM')
    "object": [(2.0, 45.0, 315.0, 0.0, 0.0), (2.0, 45.0, 45.0, 0.0, 0.0),
               (2.0, 330.0, 135.0, 0.0, 0.0), (2.0, 330.0, 225.0, 0.0, 0.0)],
    # the same four object views at distance 1.5 (LEMON objects)
    "lemon": [(1.5, 45.0, 315.0, 0.0, 0.0), (1.5, 45.0, 45.0, 0.0, 0.0),
              (1.5, 330.0, 135.0, 0.0, 0.0), (1.5, 330.0, 225.0, 0.0, 0.0)],
}

# InteractVLM's name of each view, in VIEW_SETS order.
VIEW_NAMES: dict[str, list[str]] = {
    "body": ["topfront", "bottomfront", "topback", "bottomback"],
    "object": ["frontleft", "frontright", "backleft", "backright"],
    "lemon": ["frontleft", "frontright", "backleft", "backright"],
}

# Point light location (world) of each view of a set, in the set's view order. The official body
# renders pair its light list [(0,0,3), (0,0,-3), (0,0,-3), (0,0,3)] with the views in the order
# topfront, topback, bottomfront, bottomback, so per view: topfront +3, topback -3, bottomfront -3,
# bottomback +3; in our order (topfront, bottomfront, topback, bottomback) that is the list below.
VIEW_SET_LIGHTS: dict[str, list[tuple[float, float, float]]] = {
    "body": [(0.0, 0.0, 3.0), (0.0, 0.0, -3.0), (0.0, 0.0, -3.0), (0.0, 0.0, 3.0)],
}

# Point disc radius (NDC) InteractVLM renders each object view set with.
VIEW_SET_POINT_RADIUS: dict[str, float] = {"object": 0.05, "lemon": 0.03}

FOV_DEG = 60.0  # pytorch3d FoVPerspectiveCameras' default, which InteractVLM keeps


# ---------------------------------------------------------------------- fixed views (pytorch3d form)
def resolve_views(view_set: str | None = None, views: Sequence[Sequence[float]] | None = None) -> list[View]:
    """The view list: explicit ``views`` if given, else ``VIEW_SETS[view_set]``."""
    if views is not None:
        return [tuple(float(x) for x in v) for v in views_tensor(views, "views").tolist()]  # type: ignore[misc]
    if view_set not in VIEW_SETS:
        raise ValueError(f"unknown view_set {view_set!r}; expected one of {sorted(VIEW_SETS)} or explicit views")
    return list(VIEW_SETS[view_set])


def resolve_lights(view_set: str | None, views: Sequence[Sequence[float]] | None,
                   lights: Sequence[Sequence[float]] | None, num_views: int) -> list[tuple[float, float, float]]:
    """Per-view point-light locations (world): explicit ``lights`` if given, else the view set's
    (:data:`VIEW_SET_LIGHTS`) when its own views are used, else a light at each camera (a headlight).

    ``views`` is the list the caller resolved (None when it came from ``view_set``).
    """
    if lights is not None:
        try:
            t = torch.as_tensor(lights, dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"lights must be a list of (x, y, z) locations, one per view, got {lights!r}") from e
        if t.ndim != 2 or t.shape != (num_views, 3) or not torch.isfinite(t).all():
            raise ValueError(f"lights must be ({num_views}, 3): one finite (x, y, z) location per view, "
                             f"got {lights!r}")
        return [tuple(float(x) for x in row) for row in t.tolist()]  # type: ignore[misc]
    if views is None and view_set in VIEW_SET_LIGHTS:
        return list(VIEW_SET_LIGHTS[view_set])
    return [tuple(float(x) for x in c) for c in camera_centers(views if views is not None
                                                              else resolve_views(view_set)).tolist()]  # type: ignore[misc]


def views_tensor(views: Sequence[Sequence[float]] | torch.Tensor, name: str = "views") -> torch.Tensor:
    """Views as a float64 (N, 5) tensor; anything else is an error naming ``name``."""
    try:
        t = torch.as_tensor(views, dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a list of (dist, elev, azim, x, y) 5-tuples, got {views!r}") from e
    if t.ndim != 2 or t.shape[1] != 5 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, 5) list of (dist, elev, azim, x, y), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries: {t.tolist()}")
    if (t[:, 0] <= 0).any():
        raise ValueError(f"{name}: camera distances must be positive, got {t[:, 0].tolist()}")
    return t


def view_cameras(views: Sequence[Sequence[float]] | torch.Tensor, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch3d (R (N, 3, 3), T (N, 3)) of each view, as InteractVLM builds them (see module docstring)."""
    v = views_tensor(views)
    dist, elev, azim = v[:, 0], torch.deg2rad(v[:, 1]), torch.deg2rad(v[:, 2])
    eye = torch.stack([dist * torch.cos(elev) * torch.sin(azim), dist * torch.sin(elev),
                       dist * torch.cos(elev) * torch.cos(azim)], -1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(eye)
    z = -eye / eye.norm(dim=-1, keepdim=True)  # the camera looks at the origin
    x = torch.linalg.cross(up, z)
    # Looking straight up or down makes up x z vanish; pytorch3d then takes y x z instead.
    degenerate = x.norm(dim=-1, keepdim=True) < 5e-3
    x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    y = torch.linalg.cross(z, x)
    y = y / y.norm(dim=-1, keepdim=True)
    if degenerate.any():
        alt = torch.linalg.cross(y, z)
        x = torch.where(degenerate, alt / alt.norm(dim=-1, keepdim=True), x)
        y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-1)  # columns are the camera axes in world coordinates
    T = -(eye[:, None, :] @ R)[:, 0]
    T = T + torch.stack([v[:, 3], v[:, 4], torch.zeros_like(v[:, 3])], -1)
    return R.to(device=device, dtype=torch.float32), T.to(device=device, dtype=torch.float32)


def camera_centers(views: Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
    """World position (N, 3) of each view's camera (pytorch3d ``get_camera_center``: C with C R + T = 0).

    The x, y image shifts move it off the look-at eye, as they do in pytorch3d.
    """
    R, T = view_cameras(views)
    return -(T[:, None, :] @ R.transpose(1, 2))[:, 0]


def opencv_cameras(views: Sequence[Sequence[float]] | torch.Tensor, image_size: int, fov_deg: float = FOV_DEG,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV (R (N, 3, 3), t (N, 3), K (3, 3)) giving, with :mod:`zoo.render.raster`, pytorch3d's image.

    ``image_size`` is the side S of a square image; K has ``fx = fy = (S/2)/tan(fov/2)``
    and the principal point at the image centre (pixel centres at +0.5).
    """
    if int(image_size) != image_size or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    R, T = view_cameras(views)
    flip = torch.tensor([-1.0, -1.0, 1.0])
    R_cv = flip[None, :, None] * R.transpose(1, 2)
    t_cv = flip[None, :] * T
    f = (image_size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    c = image_size / 2.0
    K = torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=torch.float32)
    return R_cv.to(device), t_cv.to(device), K.to(device)


def camera_numbers(views: Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
    """The lifter's per-view camera input (N, 5) = (dist/10, elev/360, azim/360, (x+1)/2, (y+1)/2), float32."""
    v = views_tensor(views)
    scale = torch.tensor([0.1, 1 / 360.0, 1 / 360.0, 0.5, 0.5], dtype=torch.float64)
    shift = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5], dtype=torch.float64)
    return (v * scale + shift).float()


# ---------------------------------------------------------------------- OpenCV pinhole cameras
def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """A (3, 3) float32 OpenCV intrinsics matrix."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def project_opencv(verts_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera-space points (..., 3) with K (3, 3) to [u, v, Z] (..., 3)."""
    if verts_cam.shape[-1] != 3:
        raise ValueError(f"project_opencv: verts_cam must end in 3, got {tuple(verts_cam.shape)}")
    K = torch.as_tensor(K, dtype=verts_cam.dtype, device=verts_cam.device)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"project_opencv: K must be (3, 3), got {tuple(K.shape)}")
    X, Y, Z = verts_cam.unbind(-1)
    if K.ndim == 2:
        fx, fy, cx, cy, s = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    else:  # batched K (B, 3, 3) with points (B, V, 3): broadcast over V
        fx, fy, cx, cy, s = (K[..., i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2), (0, 1)))
    # Points on the camera plane would divide by zero; keep them finite (they are culled by `near`).
    Zs = torch.where(Z.abs() < 1e-12, torch.full_like(Z, 1e-12), Z)
    u = fx * X / Zs + s * Y / Zs + cx
    v = fy * Y / Zs + cy
    return torch.stack([u, v, Z], -1)


def look_at_opencv(eye: Sequence[float] | torch.Tensor, target: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
                   up: Sequence[float] | torch.Tensor = (0.0, 1.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """World->camera (R (3,3), t (3,)) of an OpenCV camera (x right, y down, z forward) at ``eye`` looking at ``target``."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32)
    up = torch.as_tensor(up, dtype=torch.float32)
    fwd = target - eye
    if fwd.norm() < 1e-9:
        raise ValueError("look_at_opencv: eye and target coincide")
    fwd = fwd / fwd.norm()
    right = torch.linalg.cross(fwd, up)
    if right.norm() < 1e-6:  # looking along `up`: any perpendicular right vector will do
        right = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    R = torch.stack([right, down, fwd])
    return R, -R @ eye


def world_to_camera(verts: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Apply X_cam = R X + t to points (..., 3)."""
    return verts @ R.to(verts).transpose(-1, -2) + t.to(verts)


def framing_pose(pts: np.ndarray, az: float, el: float, f: float, half_span: float) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R, t) float64 of an OpenCV camera (y down) that frames the points ``pts`` (N, 3).

    The camera looks at the centre of the points' bounding box from azimuth ``az`` and
    elevation ``el`` (radians, world y up), far enough that their bounding sphere spans
    ``half_span`` pixels either side of the image centre at focal length ``f``. (numpy and
    float64 rather than :func:`look_at_opencv`'s float32 torch: the synthetic datasets'
    files were made with exactly this arithmetic.)
    """
    c = (pts.max(0) + pts.min(0)) / 2
    r = np.linalg.norm(pts - c, axis=1).max()
    dist = r * math.sqrt(1 + (f / half_span) ** 2)
    fwd = -np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
    eye = c - fwd * dist
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    return R, -R @ eye


def look_at_opencv_batch(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`look_at_opencv`: world->camera (R (B, 3, 3), t (B, 3)) of OpenCV cameras at ``eye`` (B, 3).

    ``target`` and ``up`` are (B, 3) or (3,) (default the origin and world +Y); they keep ``eye``'s dtype and
    device, and the result is differentiable in all three. A camera looking along its ``up`` takes world +Z
    instead, as the single-camera version does.
    """
    eye = torch.as_tensor(eye)
    if not eye.is_floating_point():
        eye = eye.float()
    if eye.ndim != 2 or eye.shape[-1] != 3:
        raise ValueError(f"look_at_opencv_batch: eye must be (B, 3), got {tuple(eye.shape)}")
    target = torch.zeros(3) if target is None else torch.as_tensor(target)
    up = torch.tensor([0.0, 1.0, 0.0]) if up is None else torch.as_tensor(up)
    target = target.to(eye).expand_as(eye)
    up = up.to(eye).expand_as(eye)
    fwd = target - eye
    n = fwd.norm(dim=-1, keepdim=True)
    if (n < 1e-9).any():
        bad = torch.nonzero(n[:, 0] < 1e-9)[:, 0].tolist()
        raise ValueError(f"look_at_opencv_batch: eye and target coincide for camera(s) {bad}")
    fwd = fwd / n
    right = torch.linalg.cross(fwd, up, dim=-1)
    alt = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0]).to(eye).expand_as(eye), dim=-1)
    right = torch.where(right.norm(dim=-1, keepdim=True) < 1e-6, alt, right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(fwd, right, dim=-1)
    R = torch.stack([right, down, fwd], dim=-2)
    return R, -(R @ eye[..., None])[..., 0]
