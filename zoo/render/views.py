"""Fixed camera views of InteractVLM's Render-Localize-Lift, and the canonical body they look at.

A view is a 5-tuple ``(dist, elev, azim, x, y)``. InteractVLM builds each camera with
pytorch3d's ``look_at_view_transform(dist, elev, azim)`` (degrees, looking at the origin,
up +Y) and then adds ``x`` and ``y`` to the view-space translation ``T`` (so they shift
the image content, not the eye), with a default ``FoVPerspectiveCameras`` (60 degree
field of view, square aspect) -- facts read from saidwivedi/InteractVLM
``preprocess_data/render_mesh_utils.py`` (``get_rasterizer``) and
``preprocess_data/utils_obj_pc.py`` (the point version, which adds only ``y``; every
object view has x = 0, so the two agree). The view lists come from that repository's
``preprocess_data/constants.py`` (``HUMAN_VIEW_DICT['4MV-Z_Vitru']`` and
``OBJS_VIEW_DICT['4MV-Z_HM']``).

Everything here is plain torch: pytorch3d is not imported. :func:`view_cameras` returns
pytorch3d's (R, T) (``X_view = X_world @ R + T``, view +X left, +Y up, +Z forward), and
:func:`opencv_cameras` the same cameras in OpenCV form (R, t, K) for
:mod:`zoo.render.raster`: ``R_cv = diag(-1, -1, 1) R^T``, ``t_cv = diag(-1, -1, 1) T`` and
``fx = fy = (S / 2) / tan(fov / 2)``, ``cx = cy = S / 2`` for an S x S image, which is
what pytorch3d's ``cameras_from_opencv_projection`` inverts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "VIEW_SETS", "FOV_DEG", "resolve_views", "views_tensor", "view_cameras", "opencv_cameras",
    "camera_numbers", "canonical_body", "canonical_body_pose",
]

View = tuple[float, float, float, float, float]

VIEW_SETS: dict[str, list[View]] = {
    # topfront, bottomfront, topback, bottomback (InteractVLM's '4MV-Z_Vitru' order)
    "body": [(2.0, 45.0, 315.0, 0.0, 0.0), (2.0, 315.0, 315.0, 0.0, 0.3),
             (2.0, 45.0, 135.0, 0.0, 0.0), (2.0, 315.0, 135.0, 0.0, 0.3)],
    # frontleft, frontright, backleft, backright ('4MV-Z_HM')
    "object": [(2.0, 45.0, 315.0, 0.0, 0.0), (2.0, 45.0, 45.0, 0.0, 0.0),
               (2.0, 330.0, 135.0, 0.0, 0.0), (2.0, 330.0, 225.0, 0.0, 0.0)],
}

FOV_DEG = 60.0  # pytorch3d FoVPerspectiveCameras' default, which InteractVLM keeps


def resolve_views(view_set: str | None = None, views: Sequence[Sequence[float]] | None = None) -> list[View]:
    """The view list: explicit ``views`` if given, else ``VIEW_SETS[view_set]``."""
    if views is not None:
        return [tuple(float(x) for x in v) for v in views_tensor(views, "views").tolist()]  # type: ignore[misc]
    if view_set not in VIEW_SETS:
        raise ValueError(f"unknown view_set {view_set!r}; expected one of {sorted(VIEW_SETS)} or explicit views")
    return list(VIEW_SETS[view_set])


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


def canonical_body_pose(model_type: str, hip_deg: float = 30.0) -> torch.Tensor:
    """Full axis-angle pose (1, D) of InteractVLM's canonical ("Vitruvian") body.

    All zero except the two hips, rotated about z: body-pose entries 0 (left hip) by
    +hip_deg and 1 (right hip) by -hip_deg (render_mesh_utils.get_virtuvian_body_pose,
    whose z-only Euler angle is a plain rotation about z), so the legs spread apart.
    """
    dims = {"smpl": 72, "smplh": 156, "smplx": 165}
    if model_type not in dims:
        raise ValueError(f"canonical_body_pose: unknown model_type {model_type!r}; expected one of {sorted(dims)}")
    pose = torch.zeros(1, dims[model_type])
    a = math.radians(hip_deg)
    # Full pose = global_orient (3) then body joints; joint 1 is the left hip, joint 2 the right.
    pose[0, 3 + 2] = a
    pose[0, 6 + 2] = -a
    return pose


@torch.no_grad()
def canonical_body(body_model, hip_deg: float = 30.0, center: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices (V, 3) float32 and faces (F, 3) long of ``body_model`` (a zoo BodyModel) in the canonical pose.

    InteractVLM renders the model output as it is: zero betas, zero global orientation
    and translation, no re-centring (generate_damon_human_mask.py), so ``center=False``
    reproduces it; ``center=True`` moves the bounding-box centre to the origin instead.
    """
    for attr in ("model_type", "faces"):
        if not hasattr(body_model, attr):
            raise TypeError(f"canonical_body: body_model must be a zoo BodyModel (missing .{attr}), "
                            f"got {type(body_model).__name__}")
    ref = body_model.v_template
    pose = canonical_body_pose(body_model.model_type, hip_deg).to(device=ref.device, dtype=ref.dtype)
    verts = body_model(pose=pose)["vertices"][0].detach().float().cpu()
    if center:
        verts = verts - (verts.amin(0) + verts.amax(0)) / 2
    return verts.contiguous(), body_model.faces.detach().long().cpu().contiguous()
