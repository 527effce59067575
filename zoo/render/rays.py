"""Rays for volume rendering: orbit camera positions, field-of-view intrinsics, per-pixel rays of OpenCV
cameras and their entry / exit through an axis-aligned cube.

Conventions (the zoo's): world y up, metres; a camera at azimuth 0 sits on +Z (in front of a body, which
faces +Z), azimuth 90 on +X, elevation 90 straight above. Cameras are OpenCV (``X_cam = R X_world + t``,
x right, y down, z forward) as built by :func:`zoo.render.cameras.look_at_opencv_batch`; pixel (row i,
column j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["spherical_eye", "fov_intrinsics", "camera_rays", "ray_cube"]


def _as_float(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    if like is not None:
        t = t.to(like)
    if t.ndim > 1:
        raise ValueError(f"{name} must be a number or a (B,) tensor, got shape {tuple(t.shape)}")
    return t.reshape(-1)


def spherical_eye(azimuth_deg, elevation_deg, distance) -> torch.Tensor:
    """Camera positions (B, 3) on a sphere around the origin, world y up.

    ``eye = d * (cos(el) sin(az), sin(el), cos(el) cos(az))``: azimuth 0 is on +Z, 90 on +X; elevation 90 is
    on +Y. Each argument is a number or a (B,) tensor (degrees, degrees, metres); they broadcast.
    """
    az = _as_float(azimuth_deg, "azimuth_deg")
    el = _as_float(elevation_deg, "elevation_deg", az)
    d = _as_float(distance, "distance", az)
    az, el, d = torch.broadcast_tensors(torch.deg2rad(az), torch.deg2rad(el), d)
    return torch.stack([d * torch.cos(el) * torch.sin(az), d * torch.sin(el), d * torch.cos(el) * torch.cos(az)], -1)


def fov_intrinsics(fovy_deg, height: int, width: int) -> torch.Tensor:
    """Pinhole intrinsics of a vertical field of view ``fovy_deg`` (a number -> (3, 3); a (B,) tensor -> (B, 3, 3)).

    Square pixels (``fx = fy = (H / 2) / tan(fovy / 2)``, as threestudio derives its focal length from the
    height) and the principal point at the image centre ``(W / 2, H / 2)``.
    """
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"fov_intrinsics: height and width must be positive ints, got {height} x {width}")
    scalar = not isinstance(fovy_deg, torch.Tensor) or fovy_deg.ndim == 0
    fov = _as_float(fovy_deg, "fovy_deg")
    if not ((fov > 0) & (fov < 180)).all():
        raise ValueError(f"fov_intrinsics: fovy_deg must lie in (0, 180), got {fov.tolist()}")
    f = (0.5 * height) / torch.tan(torch.deg2rad(fov) / 2)
    K = torch.zeros(fov.shape[0], 3, 3, dtype=fov.dtype, device=fov.device)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = width / 2.0
    K[:, 1, 2] = height / 2.0
    K[:, 2, 2] = 1.0
    return K[0] if scalar else K


def camera_rays(R: torch.Tensor, t: torch.Tensor, K: torch.Tensor, height: int, width: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through every pixel centre of OpenCV cameras: (rays_o (B, H, W, 3), rays_d (B, H, W, 3) unit).

    ``R`` (B, 3, 3) and ``t`` (B, 3) map world to camera (``X_cam = R X + t``); ``K`` is (B, 3, 3) or (3, 3)
    (any skew is honoured: directions come from ``K^-1 [u, v, 1]``). The origin of every ray is the camera
    centre ``-R^T t``. Differentiable in R, t and K.
    """
    if R.ndim != 3 or R.shape[-2:] != (3, 3):
        raise ValueError(f"camera_rays: R must be (B, 3, 3), got {tuple(R.shape)}")
    B = R.shape[0]
    if t.shape != (B, 3):
        raise ValueError(f"camera_rays: t must be ({B}, 3) like R, got {tuple(t.shape)}")
    K = torch.as_tensor(K).to(R)
    if K.shape == (3, 3):
        K = K.expand(B, 3, 3)
    if K.shape != (B, 3, 3):
        raise ValueError(f"camera_rays: K must be (3, 3) or ({B}, 3, 3), got {tuple(K.shape)}")
    H, W = int(height), int(width)
    if H <= 0 or W <= 0:
        raise ValueError(f"camera_rays: height and width must be positive, got {height} x {width}")
    v, u = torch.meshgrid(torch.arange(H, dtype=R.dtype, device=R.device) + 0.5,
                          torch.arange(W, dtype=R.dtype, device=R.device) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, H * W, 3)  # homogeneous pixel centres
    d_cam = pix @ torch.linalg.inv(K).transpose(1, 2)  # (B, HW, 3): K^-1 [u, v, 1]
    d_world = d_cam @ R  # R^T d for each row vector d
    d_world = d_world / d_world.norm(dim=-1, keepdim=True)
    origin = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # camera centre C = -R^T t
    rays_o = origin[:, None, :].expand(B, H * W, 3)
    return rays_o.reshape(B, H, W, 3), d_world.reshape(B, H, W, 3)


def ray_cube(rays_o: torch.Tensor, rays_d: torch.Tensor, bound: float, near: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays (N, 3) cross the cube [-bound, bound]^3: (t_near (N,), t_far (N,), hit (N,) bool).

    Slab test in units of ``rays_d`` (distances when it is unit), clipped below at ``near``: a ray hits when
    ``max(t_enter, near) < t_exit``. Rays that miss get ``t_near = t_far = 0``. Axis-parallel rays are handled
    (a zero direction component never produces NaN).
    """
    if not bound > 0 or not math.isfinite(bound):
        raise ValueError(f"ray_cube: bound must be a positive number, got {bound}")
    eps = 1e-12
    d = torch.where(rays_d.abs() < eps, torch.full_like(rays_d, eps), rays_d)
    t1 = (-bound - rays_o) / d
    t2 = (bound - rays_o) / d
    t_enter = torch.minimum(t1, t2).amax(-1).clamp(min=near)
    t_exit = torch.maximum(t1, t2).amin(-1)
    hit = t_exit > t_enter
    zero = torch.zeros_like(t_enter)
    return torch.where(hit, t_enter, zero), torch.where(hit, t_exit, zero), hit
