"""InterFusion's geometric constraints between a human NeRF, an object NeRF and the posed anchor body.

All losses are torch and differentiable in the fields' outputs (alpha); the body's occupancy labels
(``inside``, ``distance``, from :class:`zoo.body.occupancy.BodyOccupancy`) are constants.

* :func:`nerf_occupancy`: a field's occupancy 1 - exp(-0.2 sigma) (InterFusion; inside where > 0.5).
* :func:`human_geo_loss`: L^H_geo, the human field's occupancy held to the body's: BCE(alpha, f) with
  weight 1 inside the body and 1 - exp(-d^2 / (2 sigma_d^2)) outside, so the field may grow clothes and hair
  near the surface (weight ~0 at d = 0) but not far from it (weight -> 1).
* :func:`object_geo_loss`: L^O_geo, BCE(alpha_obj, 1 - f) over the points inside the body: the object
  must be empty where the body is.
* :func:`sample_geo_points`: the points the losses are evaluated at (near the body surface and uniform
  in the fields' cube).
* :func:`occupied_centroid`: InterFusion's camera tracing target, the centroid of the voxels a field
  occupies.
* :func:`penetration_volume`: evaluation of exported meshes: the object's volume inside the body (m^3)
  and the fraction of its surface in contact (within 2 cm) with the body.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zoo.body.occupancy import as_numpy_mesh

__all__ = ["nerf_occupancy", "human_geo_loss", "object_geo_loss", "sample_geo_points", "occupied_centroid",
           "penetration_volume", "OCCUPANCY_RATE"]

# InterFusion's NeRF occupancy 1 - exp(-rate * sigma): a density of ~3.47 is occupancy 0.5.
OCCUPANCY_RATE = 0.2


def nerf_occupancy(sigma: torch.Tensor) -> torch.Tensor:
    """Occupancy 1 - exp(-0.2 sigma) of a field's density (any shape); differentiable."""
    return 1.0 - torch.exp(-OCCUPANCY_RATE * sigma)


def _check_1d(name: str, x: torch.Tensor, n: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor (N,), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} has {x.shape[0]} values, expected {n} (one per point, as alpha)")


def _bce(alpha: torch.Tensor, target: torch.Tensor, what: str) -> torch.Tensor:
    """Per-point binary cross-entropy; alpha outside [0, 1] is an error naming the loss."""
    if alpha.numel() and (alpha.min() < 0 or alpha.max() > 1):
        raise ValueError(f"{what}: alpha must be an occupancy in [0, 1] (e.g. nerf_occupancy(sigma)), "
                         f"got values in [{alpha.min().item():.4g}, {alpha.max().item():.4g}]")
    # written out rather than F.binary_cross_entropy, which CUDA autocast refuses on probabilities
    # (tests/models/test_bce_logits.py). The arguments of the logs are floored at 1e-30 (log -69), so alpha =
    # target = 0 or 1 gives exactly 0 and the gradient stays finite (0, not 0 * inf) where alpha is exactly 0 or 1
    a, t = alpha.float(), target.float().to(alpha.device)
    return -(t * torch.log(a.clamp_min(1e-30)) + (1 - t) * torch.log((1 - a).clamp_min(1e-30)))


def human_geo_loss(alpha: torch.Tensor, inside: torch.Tensor, distance: torch.Tensor,
                   sigma_d: float = 0.4) -> torch.Tensor:
    """L^H_geo: mean over the N points of w * BCE(alpha, inside).

    Args:
        alpha: (N,) the human field's occupancy at the points (nerf_occupancy of its density).
        inside: (N,) the body's occupancy f (0/1, or a soft value in [0, 1]).
        distance: (N,) distance of each point to the body surface, metres.
        sigma_d: width of the outside weight 1 - exp(-d^2 / (2 sigma_d^2)) (InterFusion: 0.4).
    Returns:
        scalar; the weight is 1 inside and 1 - exp(-d^2 / (2 sigma_d^2)) outside (linear in a soft f).
    """
    _check_1d("human_geo_loss: alpha", alpha)
    _check_1d("human_geo_loss: inside", inside, alpha.shape[0])
    _check_1d("human_geo_loss: distance", distance, alpha.shape[0])
    if sigma_d <= 0:
        raise ValueError(f"human_geo_loss: sigma_d must be > 0, got {sigma_d!r}")
    if alpha.shape[0] == 0:
        return alpha.sum() * 0.0
    f = inside.float().to(alpha.device)
    d = distance.float().to(alpha.device)
    weight = f + (1.0 - f) * (1.0 - torch.exp(-(d ** 2) / (2.0 * sigma_d ** 2)))
    return (weight * _bce(alpha, f, "human_geo_loss")).mean()


def object_geo_loss(alpha_obj: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """L^O_geo: mean BCE(alpha_obj, 1 - inside) over the points inside the body (inside > 0.5); 0 (with a
    graph to alpha_obj) when no point is inside. Zero exactly when the object is empty inside the body."""
    _check_1d("object_geo_loss: alpha_obj", alpha_obj)
    _check_1d("object_geo_loss: inside", inside, alpha_obj.shape[0])
    mask = inside.to(alpha_obj.device) > 0.5
    if not bool(mask.any()):
        return alpha_obj.sum() * 0.0
    f = inside.float().to(alpha_obj.device)[mask]
    return _bce(alpha_obj[mask], 1.0 - f, "object_geo_loss").mean()


def sample_geo_points(vertices: torch.Tensor, n_near: int, n_uniform: int, bound: float, sigma: float = 0.05,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Points for the geometric losses: ``n_near`` body vertices (drawn with replacement) plus gaussian
    noise of std ``sigma`` (metres), then ``n_uniform`` uniform in [-bound, bound]^3; (n_near + n_uniform, 3)
    on the vertices' device and dtype, deterministic for a seeded ``generator`` (a CPU generator)."""
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.shape[0] == 0:
        raise ValueError(f"sample_geo_points: vertices must be (V, 3) with V >= 1, got {tuple(vertices.shape)}")
    if n_near < 0 or n_uniform < 0:
        raise ValueError(f"sample_geo_points: n_near and n_uniform must be >= 0, got {n_near}, {n_uniform}")
    if bound <= 0 or sigma < 0:
        raise ValueError(f"sample_geo_points: bound must be > 0 and sigma >= 0, got bound={bound}, sigma={sigma}")
    dtype = vertices.dtype if vertices.is_floating_point() else torch.float32
    # Draw on the CPU (where the generator lives) so a seed gives the same points on every device.
    idx = torch.randint(0, vertices.shape[0], (n_near,), generator=generator)
    noise = torch.randn(n_near, 3, generator=generator, dtype=dtype) * sigma
    near = vertices.detach().to(dtype)[idx.to(vertices.device)] + noise.to(vertices.device)
    uniform = (torch.rand(n_uniform, 3, generator=generator, dtype=dtype) * 2.0 - 1.0) * bound
    return torch.cat([near, uniform.to(vertices.device)])


def _field_device(field: Any) -> torch.device:
    params = getattr(field, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device(getattr(field, "device", "cpu"))


@torch.no_grad()
def occupied_centroid(field: Any, bound: float | None = None, resolution: int = 64, threshold: float = 0.5,
                      chunk: int = 65536) -> torch.Tensor | None:
    """Centroid (3,) of the centres of the voxels of a ``resolution``^3 grid over [-bound, bound]^3 where
    nerf_occupancy(field.density) > ``threshold`` (InterFusion's camera tracing); None when none is.

    ``bound`` defaults to ``field.bound``; the field is evaluated in chunks of ``chunk`` points without
    gradients; the centroid is unweighted (every occupied voxel counts once)."""
    if bound is None:
        bound = getattr(field, "bound", None)
        if bound is None:
            raise ValueError("occupied_centroid: give bound, or a field with a .bound attribute")
    if resolution < 1:
        raise ValueError(f"occupied_centroid: resolution must be >= 1, got {resolution}")
    device = _field_device(field)
    step = 2.0 * float(bound) / resolution
    axis = -float(bound) + step * (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    total = torch.zeros(3, dtype=torch.float64, device=device)
    count = 0
    for start in range(0, grid.shape[0], chunk):
        pts = grid[start:start + chunk]
        occ = nerf_occupancy(field.density(pts).reshape(-1)) > threshold
        total += pts[occ].double().sum(0)
        count += int(occ.sum())
    if count == 0:
        return None
    return (total / count).float()


def _object_mesh(obj: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(V, F) of a trimesh.Trimesh, a (vertices, faces) pair or a dict with vertices / faces; None for
    an (M, 3) point array."""
    if hasattr(obj, "vertices") and hasattr(obj, "faces"):
        return as_numpy_mesh(obj.vertices, obj.faces, "penetration_volume: object mesh")
    if isinstance(obj, dict):
        if "vertices" not in obj or "faces" not in obj:
            raise ValueError(f"penetration_volume: an object dict needs 'vertices' and 'faces', got keys {sorted(obj)}")
        return as_numpy_mesh(obj["vertices"], obj["faces"], "penetration_volume: object mesh")
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return as_numpy_mesh(obj[0], obj[1], "penetration_volume: object mesh")
    return None


def penetration_volume(body_vertices: Any, body_faces: Any, object_points_or_mesh: Any, resolution: int = 64,
                       samples: int | None = None, seed: int = 0, contact_threshold: float = 0.02,
                       surface_samples: int = 20000, point_volume: float | None = None) -> dict[str, float]:
    """Human-object penetration of exported meshes.

    The object is a mesh (trimesh.Trimesh, (vertices, faces) or {"vertices", "faces"}) or an (M, 3) array
    of points filling it uniformly, each standing for ``point_volume`` m^3 (e.g. the occupied voxel centres
    of an object field). Inside-ness of both meshes is the generalised winding number > 0.5 (libigl), so
    open meshes (marching cubes cut by the cube, SMPL-X's eye holes) work.

    Mesh: the volume is sampled only in the intersection of the two bounding boxes (nothing else can be
    in both), on a ``resolution``^3 grid of cell centres, or with ``samples`` uniform points from
    ``np.random.default_rng(seed)`` when given. ``contact`` is the fraction of ``surface_samples`` points
    drawn uniformly by area on the object surface (seeded) whose distance to the body solid (0 inside it)
    is below ``contact_threshold``.

    Points: volume = point_volume * (points inside the body); contact = fraction of the points within
    ``contact_threshold`` of the body solid.

    Returns {"volume": m^3 of the object inside the body, "object_volume": m^3 of the object (same
    estimator, over its own box), "fraction": volume / object_volume (0 for an empty object),
    "contact": fraction in [0, 1]}.
    """
    import igl

    from zoo.body.occupancy import BodyOccupancy

    body = BodyOccupancy("mesh").set_body(body_vertices, body_faces)
    bv = body.vertices
    mesh = _object_mesh(object_points_or_mesh)

    def body_solid(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inside the body (M,) bool, distance to the body solid (M,): 0 inside, else to its surface)."""
        q = body.query(p)
        inside = q["inside"].numpy() > 0.5
        return inside, np.where(inside, 0.0, q["distance"].numpy())

    if mesh is None:
        pts = np.ascontiguousarray(np.asarray(object_points_or_mesh.detach().cpu() if isinstance(
            object_points_or_mesh, torch.Tensor) else object_points_or_mesh, dtype=np.float64))
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError("penetration_volume: the object must be a mesh (trimesh.Trimesh, (vertices, faces) "
                             f"or a dict) or an (M, 3) point array, got shape {pts.shape}")
        if point_volume is None or point_volume <= 0:
            raise ValueError("penetration_volume: object points need point_volume (> 0): the volume in m^3 each "
                             "point stands for (e.g. the voxel volume of the grid they were taken from)")
        if pts.shape[0] == 0:
            return {"volume": 0.0, "object_volume": 0.0, "fraction": 0.0, "contact": 0.0}
        inside, d = body_solid(pts)
        volume = float(inside.sum()) * float(point_volume)
        obj_volume = float(pts.shape[0]) * float(point_volume)
        return {"volume": volume, "object_volume": obj_volume, "fraction": volume / obj_volume,
                "contact": float((d < contact_threshold).mean())}

    ov, of = mesh
    obj = igl.FastWindingNumberBVH()
    obj.init(ov, of, 2)
    rng = np.random.default_rng(seed)

    def volume_in_box(lo: np.ndarray, hi: np.ndarray, with_body: bool) -> float:
        extent = hi - lo
        if (extent <= 0).any():
            return 0.0
        if samples is not None:
            p = lo + rng.random((int(samples), 3)) * extent
        else:
            axes = [lo[i] + (np.arange(resolution) + 0.5) * extent[i] / resolution for i in range(3)]
            p = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        hit = obj.winding_number(np.ascontiguousarray(p), 2.0) > 0.5
        if with_body and hit.any():
            hit[hit] = body.query(p[hit], distance=False)["inside"].numpy() > 0.5
        return float(hit.mean()) * float(np.prod(extent))

    volume = volume_in_box(np.maximum(ov.min(0), bv.min(0)), np.minimum(ov.max(0), bv.max(0)), True)
    obj_volume = volume_in_box(ov.min(0), ov.max(0), False)
    import trimesh

    surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(ov, of, process=False), int(surface_samples),
                                               seed=rng)
    contact = float((body_solid(np.ascontiguousarray(surface))[1] < contact_threshold).mean())
    return {"volume": volume, "object_volume": obj_volume,
            "fraction": volume / obj_volume if obj_volume > 0 else 0.0, "contact": contact}
