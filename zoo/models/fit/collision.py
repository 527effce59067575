"""Human-object interpenetration from an inside / outside test of closed meshes (libigl winding numbers).

* :func:`inside` - which points lie inside a mesh: libigl's generalised winding number
  (``igl.fast_winding_number``, Barnes-Hut with exact near field) thresholded at 0.5.
* :func:`collision_loss` - a differentiable penetration penalty for pose fitting. Object vertices
  inside the body are pulled to their closest point on the body surface and body vertices inside the
  object to their closest point on the object surface; the closest points come from
  ``igl.signed_distance`` (unsigned) and are constants (no gradient), so the gradient of
  ``sum ||v - c||^2`` is ``2 (v - c)`` on every penetrating vertex. Reduction: **sum** over the
  penetrating vertices of both meshes (m^2), exactly 0.0 when no vertex of either mesh is inside the
  other. PHOSA (ECCV 2020) defines its collision term with an SDF grid of each person (and the
  release never computes it); ours is this winding-number form, which needs no grid and works for
  object-in-body and body-in-object alike. Only vertices are tested: an edge of one mesh crossing a
  face of the other with no vertex inside is not penalised.
* :func:`penetration` - evaluation measures: depth (max / mean unsigned distance of the penetrating
  object vertices to the body surface, cm) and the intersection volume (cm^3), estimated by counting
  regular-grid points inside both meshes over the overlap of their bounding boxes.
* :func:`check_watertight` - the inside test needs closed meshes; this names the mesh that is not.

Units are metres in, as everywhere in zoo (cm / cm^3 only in :func:`penetration`'s output keys).
"""
from __future__ import annotations

import igl
import numpy as np
import torch
import trimesh

__all__ = ["inside", "winding_numbers", "closest_points", "collision_loss", "penetration", "check_watertight"]

_INSIDE = 0.5  # winding-number threshold: ~1 inside a closed outward-oriented mesh, ~0 outside


def _np(x: torch.Tensor | np.ndarray, dtype: type, what: str, cols: int = 3) -> np.ndarray:
    """A C-contiguous (N, cols) numpy array of ``dtype`` from a tensor or array; ValueError naming ``what``."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != cols:
        raise ValueError(f"{what}: expected shape (N, {cols}), got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=dtype)


def winding_numbers(points, verts, faces) -> np.ndarray:
    """Generalised winding number (N,) float64 of each point w.r.t. the triangle mesh (verts, faces)."""
    q = _np(points, np.float64, "points")
    if len(q) == 0:
        return np.zeros(0)
    return igl.fast_winding_number(_np(verts, np.float64, "verts"), _np(faces, np.int64, "faces"), q)


def inside(points, verts, faces) -> torch.Tensor:
    """Bool (N,): point i lies inside the closed mesh (verts (V, 3), faces (F, 3)), winding number > 0.5.

    Returned on the device of ``points`` when it is a tensor, else on the CPU."""
    out = torch.from_numpy(winding_numbers(points, verts, faces) > _INSIDE)
    return out.to(points.device) if isinstance(points, torch.Tensor) else out


def closest_points(points, verts, faces) -> tuple[np.ndarray, np.ndarray]:
    """(unsigned distance (N,), closest surface point (N, 3)) of each point to the mesh, float64 numpy."""
    q = _np(points, np.float64, "points")
    if len(q) == 0:
        return np.zeros(0), np.zeros((0, 3))
    dist, _, closest, _ = igl.signed_distance(q, _np(verts, np.float64, "verts"), _np(faces, np.int64, "faces"),
                                              sign_type=igl.SignedDistanceType.SIGNED_DISTANCE_TYPE_UNSIGNED)
    return np.abs(dist), closest


def _pull_to_surface(points: torch.Tensor, verts, faces) -> torch.Tensor:
    """Sum over the points inside the mesh of ||p - closest surface point||^2 (closest points constant)."""
    hit = inside(points, verts, faces)
    if not bool(hit.any()):
        return points.sum() * 0.0
    p = points[hit]
    _, c = closest_points(p, verts, faces)
    target = torch.as_tensor(c, dtype=p.dtype, device=p.device)
    return ((p - target) ** 2).sum()


def collision_loss(human_verts: torch.Tensor, human_faces: torch.Tensor, object_verts: torch.Tensor,
                   object_faces: torch.Tensor) -> torch.Tensor:
    """Penetration penalty (0-d tensor, m^2), differentiable w.r.t. both vertex sets.

    ``sum_{o in object, inside body} ||o - c_body(o)||^2 + sum_{h in body, inside object} ||h - c_obj(h)||^2``
    with ``c_mesh(p)`` the closest point of that mesh's surface to p, held constant. Exactly 0.0 (still
    attached to the graph) when neither mesh has a vertex inside the other; both meshes must be closed
    (:func:`check_watertight`)."""
    for name, v in (("human_verts", human_verts), ("object_verts", object_verts)):
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"collision_loss: {name} must be a (N, 3) tensor, got "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    hv, ov = human_verts.detach(), object_verts.detach()
    loss_obj = _pull_to_surface(object_verts, hv, human_faces)  # object vertices inside the body
    loss_body = _pull_to_surface(human_verts, ov, object_faces)  # body vertices inside the object
    return loss_obj + loss_body.to(loss_obj)


def penetration(human_verts, human_faces, object_verts, object_faces, voxel: float = 0.005,
                max_points: int = 2_000_000) -> dict[str, float]:
    """Interpenetration measures of a placed object and a body, all floats.

    * ``depth_max_cm`` / ``depth_mean_cm``: max / mean over the object vertices inside the body of their
      unsigned distance to the body surface, in cm; 0 when no object vertex is inside.
    * ``volume_cm3``: intersection volume: a regular grid of spacing ``voxel`` (m; cell centres) over the
      overlap of the two bounding boxes, ``count(points inside both meshes) * voxel^3`` in cm^3; 0 when
      the boxes do not overlap. The spacing grows when the grid would exceed ``max_points`` (the spacing
      used is returned as ``voxel_m``).
    * ``n_inside``: how many object vertices are inside the body.
    """
    ov = _np(object_verts, np.float64, "penetration: object_verts")
    hv = _np(human_verts, np.float64, "penetration: human_verts")
    hf = _np(human_faces, np.int64, "penetration: human_faces")
    of = _np(object_faces, np.int64, "penetration: object_faces")
    if not voxel > 0:
        raise ValueError(f"penetration: voxel must be > 0 metres, got {voxel}")
    hit = winding_numbers(ov, hv, hf) > _INSIDE
    depth = closest_points(ov[hit], hv, hf)[0] * 100.0
    out = {"depth_max_cm": float(depth.max()) if len(depth) else 0.0,
           "depth_mean_cm": float(depth.mean()) if len(depth) else 0.0, "n_inside": int(hit.sum())}
    lo = np.maximum(hv.min(0), ov.min(0))
    hi = np.minimum(hv.max(0), ov.max(0))
    ext = hi - lo
    if np.any(ext <= 0):
        return {**out, "volume_cm3": 0.0, "voxel_m": float(voxel)}
    step = max(float(voxel), float(np.prod(ext) / max_points) ** (1.0 / 3.0))
    axes = [lo[k] + step * (np.arange(max(int(np.ceil(ext[k] / step)), 1)) + 0.5) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[np.all(grid <= hi, axis=1)]  # cell centres inside the overlap box
    in_obj = grid[winding_numbers(grid, ov, of) > _INSIDE]  # usually the smaller mesh: test it first
    n_both = int((winding_numbers(in_obj, hv, hf) > _INSIDE).sum()) if len(in_obj) else 0
    return {**out, "volume_cm3": n_both * step ** 3 * 1e6, "voxel_m": step}


def check_watertight(verts, faces, where: str) -> None:
    """Raise ValueError naming ``where`` unless the mesh is watertight (trimesh, duplicate vertices merged).

    The collision loss and the penetration measures need closed meshes: an open mesh's winding number
    is fractional and its inside undefined."""
    v = _np(verts, np.float64, f"{where}: verts")
    f = _np(faces, np.int64, f"{where}: faces")
    mesh = trimesh.Trimesh(v, f, process=True)
    if not mesh.is_watertight:
        raise ValueError(f"{where}: mesh is not watertight ({len(v)} vertices, {len(f)} faces; trimesh "
                         f"is_watertight is False: some edge is not shared by exactly two faces); the collision "
                         f"loss and the penetration measures need a closed mesh")
