"""Rigid geometry for object-pose fitting: 6D rotations, random rotations, pose application, ICP with normals.

Conventions (shared contract of the joint human-object reconstruction issue):

* An object pose is ``(R, t, s)`` and places canonical vertices as ``v_cam = s * (R @ v_obj) + t``; in row form
  ``verts @ R.T * s + t`` (see :func:`apply_pose`).
* 6D rotations follow pytorch3d (Zhou et al. 2019 as implemented in ``pytorch3d.transforms``): the 6 numbers are
  the first two **rows** of ``R``. The PHOSA and InteractVLM releases use the first two **columns** instead
  (their ``rot6d_to_matrix`` stacks the Gram-Schmidt vectors along the last axis) and then apply the matrix as
  ``verts @ R``; both differences are transposes, so ``their_6d(R.T) == our_6d(R)`` up to a reshape.
"""

from __future__ import annotations

import math

import torch
from pytorch3d.ops import corresponding_points_alignment, knn_points
from pytorch3d.transforms import matrix_to_rotation_6d as _p3d_matrix_to_6d
from pytorch3d.transforms import quaternion_to_matrix
from pytorch3d.transforms import rotation_6d_to_matrix as _p3d_6d_to_matrix

__all__ = [
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "random_rotations",
    "apply_pose",
    "rotation_angle_deg",
    "icp_with_normals",
]


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two 3-vectors, which become the first two ROWS of R
    (pytorch3d convention)."""
    if d6.shape[-1] != 6:
        raise ValueError(f"rotation_6d_to_matrix: expected a (..., 6) tensor, got shape {tuple(d6.shape)}")
    return _p3d_6d_to_matrix(d6)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows of R, concatenated (pytorch3d convention)."""
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"matrix_to_rotation_6d: expected a (..., 3, 3) tensor, got shape {tuple(R.shape)}")
    return _p3d_matrix_to_6d(R)


def random_rotations(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(n, 3, 3) rotations uniform on SO(3) (Haar measure): normalised 4-D Gaussian quaternions.

    Deterministic for a seeded ``generator`` (sampled on the generator's device, then moved to ``device``).
    """
    if n < 0:
        raise ValueError(f"random_rotations: n must be >= 0, got {n}")
    gen_device = generator.device if generator is not None else "cpu"
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=gen_device)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    R = quaternion_to_matrix(q).to(dtype)
    return R.to(device) if device is not None else R


def apply_pose(
    verts: torch.Tensor, R: torch.Tensor, t: torch.Tensor, scale: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Place canonical vertices: ``verts @ R.T * scale + t``.

    verts (..., N, 3); R (..., 3, 3); t (..., 3); scale a float, a 0-d tensor or a (...) tensor (one per leading
    index). Leading dims broadcast, e.g. verts (N, 3) with R (B, 3, 3) gives (B, N, 3).
    """
    if verts.shape[-1] != 3 or R.shape[-2:] != (3, 3) or t.shape[-1] != 3:
        raise ValueError(
            f"apply_pose: expected verts (..., N, 3), R (..., 3, 3), t (..., 3); got {tuple(verts.shape)}, "
            f"{tuple(R.shape)}, {tuple(t.shape)}"
        )
    s = torch.as_tensor(scale, dtype=verts.dtype, device=verts.device)
    rotated = verts @ R.transpose(-1, -2)
    return rotated * s[..., None, None] + t[..., None, :]


def rotation_angle_deg(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees, in [0, 180]) between rotations (..., 3, 3) -> (...).

    Uses atan2(sin, cos) of the relative rotation ``R_a^T R_b`` (sin from its skew part, cos from its trace),
    which stays accurate near 0 and near 180 degrees where acos of the trace alone loses precision.
    """
    rel = R_a.transpose(-1, -2) @ R_b
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    skew = torch.stack(
        (rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]), -1
    )
    sin = torch.linalg.vector_norm(skew, dim=-1) / 2.0
    return torch.rad2deg(torch.atan2(sin, cos))


def icp_with_normals(
    src_pts: torch.Tensor,
    src_normals: torch.Tensor,
    dst_pts: torch.Tensor,
    dst_normals: torch.Tensor,
    iters: int = 10,
    R0: torch.Tensor | None = None,
    t0: torch.Tensor | None = None,
    flip_dst_normals: bool = True,
    normal_threshold: float | None = None,
    normal_weight: float = 1.0,
    k_candidates: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rigid ICP (no scale) matching positions and normals; returns (R, t) with ``dst ≈ src @ R.T + t``.

    src_pts, src_normals (N, 3) or (B, N, 3); dst_pts, dst_normals (M, 3) or (B, M, 3). R0 (3, 3)/(B, 3, 3),
    t0 (3,)/(B, 3) initialise the transform (identity / zero otherwise). Output R (B?, 3, 3), t (B?, 3) with the
    batch dim only if the inputs had one.

    Each iteration: transform src points and normals with the current (R, t); match every src point to its nearest
    dst point with ``pytorch3d.ops.knn_points`` in the 6-D space ``[p, w * n]`` (w = ``normal_weight``; dst normals
    negated when ``flip_dst_normals``, so a contact surface facing the src surface matches); then re-solve (R, t)
    from the ORIGINAL src points to the matched dst points with ``corresponding_points_alignment``
    (``estimate_scale=False``, no reflections). ``normal_threshold`` (degrees, optional) additionally requires
    the angle between the transformed src normal and the (flipped) dst normal to be below it: the nearest of the
    ``k_candidates`` 6-D neighbours that passes is used, and src points with no passing candidate get weight 0.

    InteractVLM (``optim/icp/icp.py``, ``optim/fit.py``) does the same 6-D matching with w = 1 and flipped human
    normals, but builds the src features once before the loop (so every iteration matches against the
    initial-pose points, and src normals are never rotated) and stops as soon as a position+normal RMSE does not
    grow (relative change <= 1e-6, so in practice after 2 iterations, which then repeat the first); its angle filter (``filter_contacts: [True, 90, -90]``) is a pre-filter of the object contact
    set, not part of the matching. Here the features are rebuilt every iteration (true ICP), and all ``iters``
    iterations run.
    """
    unbatched = src_pts.dim() == 2
    if unbatched:
        src_pts, src_normals, dst_pts, dst_normals = (x[None] for x in (src_pts, src_normals, dst_pts, dst_normals))
        R0 = None if R0 is None else R0[None]
        t0 = None if t0 is None else t0[None]
    if src_pts.shape != src_normals.shape or dst_pts.shape != dst_normals.shape or src_pts.shape[-1] != 3:
        raise ValueError(
            f"icp_with_normals: points and normals must match and be (..., 3): src {tuple(src_pts.shape)} / "
            f"{tuple(src_normals.shape)}, dst {tuple(dst_pts.shape)} / {tuple(dst_normals.shape)}"
        )
    if src_pts.shape[0] != dst_pts.shape[0] or src_pts.shape[1] == 0 or dst_pts.shape[1] == 0:
        raise ValueError(
            f"icp_with_normals: need the same batch size and non-empty point sets: src {tuple(src_pts.shape)}, "
            f"dst {tuple(dst_pts.shape)}"
        )
    B = src_pts.shape[0]
    dtype, device = src_pts.dtype, src_pts.device
    R = torch.eye(3, dtype=dtype, device=device).expand(B, 3, 3).clone() if R0 is None else R0.to(dtype).clone()
    t = torch.zeros(B, 3, dtype=dtype, device=device) if t0 is None else t0.to(dtype).clone()
    n_src = torch.nn.functional.normalize(src_normals, dim=-1)
    n_dst = torch.nn.functional.normalize(dst_normals, dim=-1)
    if flip_dst_normals:
        n_dst = -n_dst
    dst_feat = torch.cat((dst_pts, normal_weight * n_dst), -1)
    K = 1 if normal_threshold is None else min(k_candidates, dst_pts.shape[1])
    cos_thr = None if normal_threshold is None else math.cos(math.radians(normal_threshold))
    batch_idx = torch.arange(B, device=device)[:, None]
    for _ in range(iters):
        cur_p = src_pts @ R.transpose(-1, -2) + t[:, None]
        cur_n = n_src @ R.transpose(-1, -2)
        # pytorch3d's CPU knn kernel takes float32 only: match in float32, solve in the input dtype.
        knn = knn_points(torch.cat((cur_p, normal_weight * cur_n), -1).float(), dst_feat.float(), K=K)
        idx = knn.idx  # (B, N, K)
        if cos_thr is None:
            match = idx[..., 0]
            weights = torch.ones(match.shape, dtype=dtype, device=device)
        else:
            cand_n = n_dst[batch_idx[..., None], idx]  # (B, N, K, 3)
            ok = (cand_n * cur_n[:, :, None]).sum(-1) > cos_thr
            first = ok.to(torch.int8).argmax(-1)  # first passing candidate (0 when none passes)
            match = idx.gather(-1, first[..., None])[..., 0]
            weights = ok.any(-1).to(dtype)
            if (weights.sum(-1) < 3).any():
                raise ValueError(
                    f"icp_with_normals: fewer than 3 src points have a dst match within normal_threshold="
                    f"{normal_threshold} deg; loosen the threshold or check the normals' orientation"
                )
        matched = dst_pts[batch_idx, match]
        sol = corresponding_points_alignment(src_pts, matched, weights=weights, estimate_scale=False)
        # pytorch3d solves matched ≈ src @ R_p3d + T, i.e. R = R_p3d^T in the column convention used here.
        R, t = sol.R.transpose(-1, -2), sol.T
    if unbatched:
        return R[0], t[0]
    return R, t
