"""Fitting losses of PHOSA (ECCV 2020) and InteractVLM's contact-guided reconstruction (section 5).

Plain torch functions. Masks / silhouettes are (H, W) or batched (B, H, W); a PHOSA "keep" target has values
1 (object), 0 (background), -1 (ignored). Vertices are in the camera frame (OpenCV, metres). Pixel coordinates
in the centroid term are (row, col) array indices; the contract's +0.5 pixel-centre offset cancels in every
difference taken here.

Sources (facts read from the releases, code written anew):
* PHOSA: ``phosa/global_opt.py`` (class ``Losses``), ``phosa/pose_optimization.py`` (``PoseOptimizer``),
  ``phosa/utils/geometry.py`` (``compute_dist_z``), ``phosa/utils/bbox.py``, ``phosa/constants.py``.
* InteractVLM: ``optim/optimizer.py`` (``ObjPose_Opt``), ``optim/utils.py`` (``calculate_centroid``),
  ``optim/fit.py``, ``optim/cfg/fit.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "PHOSA_WEIGHTS",
    "PHOSA_CATEGORY_WEIGHTS",
    "PHOSA_POSE_SEARCH_WEIGHTS",
    "PHOSA_MEAN_INTRINSIC_SCALE",
    "PHOSA_INTERACTION_THRESHOLD",
    "PHOSA_BBOX_EXPANSION",
    "PHOSA_BBOX_EXPANSION_PARTS",
    "PHOSA_INTERACTION_PARTS",
    "INTERACTVLM_WEIGHTS",
    "silhouette_loss",
    "edge_distance_map",
    "edge_chamfer_loss",
    "offscreen_loss",
    "depth_ordinal_loss",
    "depth_ordinal_loss_instances",
    "project_bbox",
    "bbox_iou",
    "bbox_overlap",
    "depth_gap",
    "interaction_loss",
    "part_interaction_loss",
    "scale_prior_loss",
    "soft_iou_loss",
    "centroid_loss",
    "contact_loss",
]

# ---------------------------------------------------------------------------------------------------------------
# Constants (phosa/constants.py, InteractVLM optim/cfg/fit.yaml). PHOSA lengths (z thresholds) are in PHOSA's own
# normalised camera units (focal length 1, image size 1), NOT metres; scales are its "intrinsic scale" (1 = 2 m).

PHOSA_WEIGHTS = {"inter": 20, "depth": 1, "inter_part": 50, "sil": 10.0, "collision": 2.0, "scale": 100,
                 "scale_person": 100}
"""PHOSA's default joint-optimisation weights (``DEFAULT_LOSS_WEIGHTS['default']``, keys without ``lw_``)."""

PHOSA_CATEGORY_WEIGHTS = {
    "default": PHOSA_WEIGHTS,
    "bat": {"inter": 30, "depth": 0.01, "inter_part": 100, "sil": 20.0, "collision": 1.0, "scale": 10000,
            "scale_person": 1000},
    "bench": {"inter": 30, "depth": 0.1, "inter_part": 50, "sil": 50.0, "collision": 10.0, "scale": 1000,
              "scale_person": 100},
    "bicycle": {"inter": 20, "depth": 1, "inter_part": 50, "sil": 10.0, "collision": 2.0, "scale": 100,
                "scale_person": 100},
    "laptop": {"inter": 20, "depth": 0.01, "inter_part": 20, "sil": 10.0, "collision": 10, "scale": 1e3,
               "scale_person": 1e3},
    "motorcycle": {"inter": 0, "depth": 1.0, "inter_part": 100, "sil": 20.0, "collision": 2.0, "scale": 100,
                   "scale_person": 100},
    "surfboard": {"inter": 50, "depth": 10, "inter_part": 100, "sil": 10.0, "collision": 20, "scale": 1e3,
                  "scale_person": 1e3},
    "skateboard": {"inter": 10, "depth": 0.01, "inter_part": 50, "sil": 10.0, "collision": 100, "scale": 1e4,
                   "scale_person": 1e3},
    "tennis": {"inter": 30, "depth": 0.01, "inter_part": 500, "sil": 10.0, "collision": 10, "scale": 1e4,
               "scale_person": 100},
}
"""Per-category weights of the release (``DEFAULT_LOSS_WEIGHTS``). The collision weight exists but the release
never computes a collision term."""

PHOSA_POSE_SEARCH_WEIGHTS = {"mask": 1.0, "chamfer": 0.5, "offscreen": 1000.0}
"""Weights of the initial pose search (``PoseOptimizer``: ``lw_chamfer=0.5``, offscreen multiplied by 1000)."""

PHOSA_MEAN_INTRINSIC_SCALE = {"bat": 0.40, "bench": 0.95, "bicycle": 0.91, "laptop": 0.24, "motorcycle": 1.02,
                              "skateboard": 0.35, "surfboard": 1.0, "tennis": 0.33}
"""Scale-prior means (``MEAN_INTRINSIC_SCALE``); 1.0 corresponds to an object 2 m in size."""

PHOSA_INTERACTION_THRESHOLD = {"bat": 5, "bench": 3, "bicycle": 2, "laptop": 2.5, "motorcycle": 5,
                               "skateboard": 3, "surfboard": 5, "tennis": 5}
"""z-gap thresholds of the interaction gates (``INTERACTION_THRESHOLD``, PHOSA units)."""

PHOSA_BBOX_EXPANSION = {"bat": 0.5, "bench": 0.3, "bicycle": 0.0, "bottle": 0.3, "chair": 0.3, "couch": 0.3,
                        "cup": 0.3, "horse": 0.0, "laptop": 0.2, "motorcycle": 0.0, "skateboard": 0.8,
                        "surfboard": 0.0, "tennis": 0.4, "wineglass": 0.3}
"""2D box expansion of the whole-object interaction gate (``BBOX_EXPANSION``)."""

PHOSA_BBOX_EXPANSION_PARTS = {"bat": 2.5, "bench": 0.5, "bicycle": 0.7, "bottle": 0.3, "chair": 0.3, "couch": 0.3,
                              "cup": 0.3, "horse": 0.3, "laptop": 0.0, "motorcycle": 0.7, "skateboard": 0.5,
                              "surfboard": 0.2, "tennis": 2.0, "wineglass": 0.3}
"""2D box expansion of the part interaction gate (``BBOX_EXPANSION_PARTS``)."""

PHOSA_INTERACTION_PARTS = {"bat": ["lpalm", "rpalm"], "bench": ["back", "butt"], "bicycle": ["lhand", "rhand", "butt"],
                           "laptop": ["lhand", "rhand"], "motorcycle": ["lhand", "rhand", "butt"],
                           "skateboard": ["lfoot", "rfoot", "lhand", "rhand"],
                           "surfboard": ["lfoot", "rfoot", "lhand", "rhand"], "tennis": ["lpalm", "rpalm"]}
"""Person parts whose boxes are tested against the object box in the whole-object gate (``INTERACTION_MAPPING``).
The only released part pairs (object part -> person parts) are bicycle: seat -> [butt], handle -> [lhand, rhand]."""

INTERACTVLM_WEIGHTS = {"mask": 5.0, "centroid": 1e-4, "contact": 10.0}
"""InteractVLM ``optim/cfg/fit.yaml`` loss weights (all ``kick_in: 0``)."""


def _batched(x: torch.Tensor, dims: int) -> tuple[torch.Tensor, bool]:
    """Add a leading batch dim when ``x`` has exactly ``dims`` dims; return (x, was_unbatched)."""
    if x.dim() == dims:
        return x[None], True
    if x.dim() == dims + 1:
        return x, False
    raise ValueError(f"expected a tensor with {dims} or {dims + 1} dims, got shape {tuple(x.shape)}")


def _out(x: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return x[0] if unbatched else x


# ---------------------------------------------------------------------------------------------------------------
# PHOSA


def silhouette_loss(sil: torch.Tensor, keep_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """PHOSA's occlusion-aware silhouette loss; (H, W) -> scalar, (B, H, W) -> (B,).

    ``sum((keep * sil - ref)^2)`` with ``ref = keep_mask > 0`` and ``keep = keep_mask >= 0`` (pixels at -1 are
    ignored), divided by ``keep.sum()`` when ``normalize`` (joint optimisation, ``Losses.compute_sil_loss``; the
    release then averages over objects). ``normalize=False`` is the unnormalised pixel sum of the initial pose
    search (``PoseOptimizer.forward``, "mask" term).
    """
    sil_b, unb = _batched(sil, 2)
    target, _ = _batched(keep_mask, 2)
    ref = (target > 0).to(sil_b.dtype)
    keep = (target >= 0).to(sil_b.dtype)
    loss = ((keep * sil_b - ref) ** 2).sum(dim=(-2, -1))
    if normalize:
        loss = loss / keep.sum(dim=(-2, -1)).clamp_min(1.0)
    return _out(loss, unb)


def edge_distance_map(keep_mask: torch.Tensor, kernel_size: int = 7, power: float = 0.25) -> torch.Tensor:
    """Distance map of PHOSA's edge chamfer term: ``edt(not edge) ** (2 * power)`` of the target's outer edge.

    The target edge is ``maxpool_k(ref) - ref`` with ``ref = keep_mask > 0`` (a ring up to k//2 pixels outside the
    object); ``edt`` is the Euclidean distance (pixels) to the nearest edge pixel (scipy's
    ``distance_transform_edt``). No gradient (a fixed target). (H, W) -> (H, W); (B, H, W) -> (B, H, W).
    """
    from scipy.ndimage import distance_transform_edt

    target, unb = _batched(keep_mask, 2)
    ref = (target > 0).float()
    edge = F.max_pool2d(ref[:, None], kernel_size, stride=1, padding=kernel_size // 2)[:, 0] - ref
    maps = []
    for e in (edge > 0).cpu().numpy():
        maps.append(torch.from_numpy(distance_transform_edt(~e)).float() ** (2 * power))
    return _out(torch.stack(maps).to(keep_mask.device), unb)


def edge_chamfer_loss(
    sil: torch.Tensor,
    keep_mask: torch.Tensor,
    kernel_size: int = 7,
    power: float = 0.25,
    distance_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """PHOSA's one-way edge chamfer term of the initial pose search (``PoseOptimizer``, unweighted; the release
    multiplies it by 0.5): ``sum(edges(keep * sil) * D)`` where ``edges(x) = maxpool_k(x) - x`` and D is
    :func:`edge_distance_map` of the target (pass it precomputed to save time). (H, W) -> scalar, (B, ...) -> (B,).
    """
    sil_b, unb = _batched(sil, 2)
    target, _ = _batched(keep_mask, 2)
    keep = (target >= 0).to(sil_b.dtype)
    image = keep * sil_b
    edges = F.max_pool2d(image[:, None], kernel_size, stride=1, padding=kernel_size // 2)[:, 0] - image
    D = edge_distance_map(target, kernel_size, power) if distance_map is None else distance_map
    D, _ = _batched(D.to(sil_b), 2)
    return _out((edges * D).sum(dim=(-2, -1)), unb)


def offscreen_loss(verts: torch.Tensor, K: torch.Tensor, image_size: Sequence[int], far: float = 100.0,
                   eps: float = 1e-9) -> torch.Tensor:
    """PHOSA's offscreen penalty (``PoseOptimizer.compute_offscreen_loss``, unweighted; the release uses x1000).

    Projects camera-frame ``verts`` (N, 3) or (B, N, 3) with pixel intrinsics ``K`` (3, 3) to normalised
    coordinates ``x = 2 u / W - 1``, ``y = 2 v / H - 1`` (``u = fx X / (Z + eps) + cx``) and sums over vertices
    ``relu(x - 1) + relu(-1 - x)`` (same for y) ``+ relu(-Z) + relu(Z - far)`` (far: neural_renderer's default
    100). Returns a scalar or (B,).
    """
    v, unb = _batched(verts, 2)
    H, W = int(image_size[0]), int(image_size[1])
    z = v[..., 2]
    u = K[0, 0] * v[..., 0] / (z + eps) + K[0, 1] * v[..., 1] / (z + eps) + K[0, 2]
    w = K[1, 1] * v[..., 1] / (z + eps) + K[1, 2]
    xy = torch.stack((2 * u / W - 1, 2 * w / H - 1), -1)
    loss = (F.relu(xy - 1) + F.relu(-1 - xy)).sum(dim=(-2, -1)) + (F.relu(-z) + F.relu(z - far)).sum(-1)
    return _out(loss, unb)


def depth_ordinal_loss_instances(depths: torch.Tensor, sils: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """PHOSA's ordinal depth loss over N instances (``Losses.compute_ordinal_depth_loss``).

    depths (N, H, W) or (B, N, H, W): rendered depth of each instance alone; sils: where each rendered instance
    covers the pixel (bool); masks: the instance masks from segmentation (bool). For every ordered pair (i, j)
    whose rendered silhouettes overlap (``sil_i & sil_j`` non-empty; i == j counts too, as in the release), the
    pair adds to the pair count; its loss is ``sum softplus(clamp(d_i - d_j, 0, 2))`` over pixels where the masks
    say i is in front (``mask_i & ~mask_j``) but the render has j in front (``d_j < d_i``) and both are rendered.
    Returns the sum divided by the pair count (0 when no pair overlaps; the release would give 0/0). Scalar or
    (B,).
    """
    d, unb = _batched(depths, 3)
    s, _ = _batched(sils.bool(), 3)
    m, _ = _batched(masks.bool(), 3)
    has_pred = s[:, :, None] & s[:, None, :]  # (B, N, N, H, W), [b, i, j]
    front_i_gt = m[:, :, None] & ~m[:, None, :]
    front_j_pred = d[:, None, :] < d[:, :, None]
    sel = front_i_gt & front_j_pred & has_pred
    diff = torch.clamp(d[:, :, None] - d[:, None, :], min=0.0, max=2.0)
    total = torch.where(sel, F.softplus(diff), torch.zeros_like(diff)).sum(dim=(1, 2, 3, 4))
    n_pairs = has_pred.flatten(3).any(-1).sum(dim=(1, 2)).to(d.dtype)
    loss = torch.where(n_pairs > 0, total / n_pairs.clamp_min(1.0), torch.zeros_like(total))
    return _out(loss, unb)


def depth_ordinal_loss(
    depth_a: torch.Tensor,
    depth_b: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
    sil_a: torch.Tensor | None = None,
    sil_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """PHOSA's ordinal depth loss for two instances (e.g. object and human): (H, W) -> scalar, (B, H, W) -> (B,).

    See :func:`depth_ordinal_loss_instances` (both orders (a, b) and (b, a) are penalised; the pair count includes
    (a, a) and (b, b)). ``sil_*`` default to ``isfinite(depth) & depth > 0`` (background rendered as inf, NaN or
    <= 0, e.g. pytorch3d's zbuf -1).
    """
    def _sil(depth: torch.Tensor, sil: torch.Tensor | None) -> torch.Tensor:
        return (torch.isfinite(depth) & (depth > 0)) if sil is None else sil.bool()

    sa, sb = _sil(depth_a, sil_a), _sil(depth_b, sil_b)
    big = torch.finfo(depth_a.dtype).max / 4
    da = torch.where(sa, depth_a, torch.full_like(depth_a, big))
    db = torch.where(sb, depth_b, torch.full_like(depth_b, big))
    dim = depth_a.dim() - 2
    return depth_ordinal_loss_instances(
        torch.stack((da, db), dim), torch.stack((sa, sb), dim), torch.stack((mask_a.bool(), mask_b.bool()), dim)
    )


def project_bbox(verts: torch.Tensor, K: torch.Tensor, expansion: float = 0.0) -> torch.Tensor:
    """2D box (x1, y1, x2, y2) in pixels of camera-frame ``verts`` (N, 3) under intrinsics K, each half-extent
    scaled by ``1 + expansion`` about the centre (``phosa.global_opt.project_bbox``)."""
    z = verts[:, 2]
    uv = torch.stack((K[0, 0] * verts[:, 0] / z + K[0, 1] * verts[:, 1] / z + K[0, 2],
                      K[1, 1] * verts[:, 1] / z + K[1, 2]), -1)
    lo, hi = uv.min(0).values, uv.max(0).values
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1 + expansion)
    return torch.cat((centre - half, centre + half))


def bbox_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of two (x1, y1, x2, y2) boxes (``phosa.utils.bbox.compute_iou``)."""
    wh = (torch.minimum(a[2:], b[2:]) - torch.maximum(a[:2], b[:2])).clamp_min(0)
    inter = wh[0] * wh[1]
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def bbox_overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two (x1, y1, x2, y2) boxes overlap, touching included (``phosa.utils.bbox.check_overlap``)."""
    return not bool(a[0] > b[2] or b[0] > a[2] or a[1] > b[3] or b[1] > a[3])


def depth_gap(verts_a: torch.Tensor, verts_b: torch.Tensor) -> torch.Tensor:
    """Gap between the z-extents of two vertex sets (0 when they overlap), ``phosa.utils.geometry.compute_dist_z``."""
    a0, a1 = verts_a[:, 2].min(), verts_a[:, 2].max()
    b0, b1 = verts_b[:, 2].min(), verts_b[:, 2].max()
    if b1 >= a0 and a1 >= b0:
        return torch.zeros((), dtype=verts_a.dtype, device=verts_a.device)
    return torch.minimum((b0 - a1).abs(), (a0 - b1).abs())


def _centroid_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch MSELoss (mean over the 3 coordinates) between the centroids of two vertex sets."""
    return ((a.mean(0) - b.mean(0)) ** 2).mean()


def interaction_loss(
    human_verts: torch.Tensor,
    object_verts: torch.Tensor,
    K: torch.Tensor | None = None,
    human_parts: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
    expansion: float = 0.0,
    z_threshold: float = float("inf"),
) -> torch.Tensor:
    """PHOSA's coarse interaction loss for one person and one object (scalar), ``Losses.compute_interaction_loss``.

    ``mean((mean(human_verts) - mean(object_verts))^2)`` (torch MSELoss of the centroids, mean over x, y, z) when
    the pair interacts, else 0. The gate (``assign_interaction_pairs``, no gradient): the object's projected box
    (expanded by ``expansion``) must have non-zero IoU with at least one person part box (each part's vertex
    indices in ``human_parts``; the release uses ``INTERACTION_MAPPING[category]``, expanded by the same
    ``BBOX_EXPANSION[category]``; default: the whole body), and :func:`depth_gap` must be < ``z_threshold``.
    ``K=None`` skips the gate (always interacting). Multi-person assignment of the release (each person to the
    object of largest summed IoU) reduces to this gate for one person and one object.
    """
    if K is not None:
        with torch.no_grad():
            parts = [torch.arange(len(human_verts), device=human_verts.device)] if human_parts is None else (
                list(human_parts.values()) if isinstance(human_parts, Mapping) else list(human_parts))
            box_o = project_bbox(object_verts, K, expansion)
            iou = sum(float(bbox_iou(box_o, project_bbox(human_verts[idx], K, expansion))) for idx in parts)
            if iou == 0 or not float(depth_gap(human_verts, object_verts)) < z_threshold:
                return torch.zeros((), dtype=human_verts.dtype, device=human_verts.device)
    return _centroid_mse(human_verts, object_verts)


def part_interaction_loss(
    human_verts: torch.Tensor,
    object_verts: torch.Tensor,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    K: torch.Tensor | None = None,
    expansion: float = 0.0,
    z_threshold: float = float("inf"),
) -> torch.Tensor:
    """PHOSA's part-based interaction loss (scalar), ``Losses.compute_interaction_loss_parts``.

    ``pairs``: (human vertex ids, object vertex ids) per interacting part pair (e.g. bicycle seat - butt). Each
    active pair adds the centroid MSE (mean over x, y, z) of the two parts; the sum is divided by
    ``max(#active, 1)``. A pair is active (no gradient through the gate) when the two parts' projected boxes,
    each expanded by ``expansion`` (release: ``BBOX_EXPANSION_PARTS[category]``), overlap and their
    :func:`depth_gap` is < ``z_threshold``; ``K=None`` makes every pair active.
    """
    total = torch.zeros((), dtype=human_verts.dtype, device=human_verts.device)
    n_active = 0
    for h_idx, o_idx in pairs:
        vh, vo = human_verts[h_idx], object_verts[o_idx]
        if K is not None:
            with torch.no_grad():
                overlap = bbox_overlap(project_bbox(vo, K, expansion), project_bbox(vh, K, expansion))
                if not (overlap and float(depth_gap(vo, vh)) < z_threshold):
                    continue
        total = total + _centroid_mse(vh, vo)
        n_active += 1
    return total / max(n_active, 1)


def scale_prior_loss(scale: torch.Tensor, mean: float | torch.Tensor = 1.0,
                     std: float | torch.Tensor | None = None) -> torch.Tensor:
    """Scale prior, elementwise ``(scale - mean)^2`` (``/ std^2`` if given); same shape as ``scale``.

    The release (``Losses.compute_intrinsic_scale_prior``) sums ``(s - mean)^2`` over the objects (and, with mean
    1, over the people's scales) with no std; sum the result to match it for several instances.
    """
    loss = (scale - mean) ** 2
    return loss if std is None else loss / torch.as_tensor(std, dtype=loss.dtype) ** 2


# ---------------------------------------------------------------------------------------------------------------
# InteractVLM section 5


def soft_iou_loss(sil: torch.Tensor, mask: torch.Tensor, union: str = "iou", eps: float = 1e-8) -> torch.Tensor:
    """``1 - IoU`` of a soft silhouette and a target mask: (H, W) -> scalar, (B, H, W) -> (B,).

    ``union="iou"``: ``1 - sum(s m) / sum(s + m - s m)`` (true soft IoU, as the paper writes it).
    ``union="sum"``: the release's form (``ObjPose_Opt.mask_loss_iou``), ``1 - sum(s m) / sum(s + m)``, i.e. one
    minus half the soft Dice (in [0.5, 1]). An empty union gives 0.
    """
    s, unb = _batched(sil, 2)
    m, _ = _batched(mask, 2)
    m = m.to(s.dtype)
    inter = (s * m).sum(dim=(-2, -1))
    if union == "iou":
        den = (s + m - s * m).sum(dim=(-2, -1))
    elif union == "sum":
        den = (s + m).sum(dim=(-2, -1))
    else:
        raise ValueError(f"soft_iou_loss: union must be 'iou' or 'sum', got {union!r}")
    loss = torch.where(den > eps, 1 - inter / den.clamp_min(eps), torch.zeros_like(den))
    return _out(loss, unb)


def centroid_loss(sil: torch.Tensor, mask: torch.Tensor, target: str = "bbox") -> torch.Tensor:
    """InteractVLM's centroid term: squared pixel distance (row, col) between silhouette and mask centres.

    The silhouette centre is its value-weighted mean pixel (``optim/utils.py calculate_centroid``; the image centre
    (H/2, W/2) when the silhouette is all zero). The target centre is, as in the release (``ObjPose_Opt``), the
    centre of the mask's bounding box, ``(min + max) / 2`` of its pixel indices (``target="bbox"``), or the mask's
    mean pixel (``target="mass"``). (H, W) -> scalar, (B, H, W) -> (B,). Release weight 1e-4.
    """
    s, unb = _batched(sil, 2)
    m, _ = _batched(mask, 2)
    B, H, W = s.shape
    rows = torch.arange(H, dtype=s.dtype, device=s.device)
    cols = torch.arange(W, dtype=s.dtype, device=s.device)
    mass = s.sum(dim=(-2, -1))
    safe = mass.clamp_min(torch.finfo(s.dtype).tiny)
    c_sil = torch.stack(((s.sum(-1) * rows).sum(-1) / safe, (s.sum(-2) * cols).sum(-1) / safe), -1)
    c_sil = torch.where((mass > 0)[:, None], c_sil, torch.tensor([H / 2, W / 2], dtype=s.dtype, device=s.device))
    mb = m > 0
    if not mb.flatten(1).any(-1).all():
        raise ValueError("centroid_loss: the target mask is empty (no pixel > 0) in at least one sample")
    if target == "bbox":
        r_any, c_any = mb.any(-1), mb.any(-2)
        big_r, big_c = torch.full_like(rows, H), torch.full_like(cols, W)
        r0 = torch.where(r_any, rows, big_r).min(-1).values
        r1 = torch.where(r_any, rows, -big_r).max(-1).values
        c0 = torch.where(c_any, cols, big_c).min(-1).values
        c1 = torch.where(c_any, cols, -big_c).max(-1).values
        c_tgt = torch.stack(((r0 + r1) / 2, (c0 + c1) / 2), -1)
    elif target == "mass":
        mf = mb.to(s.dtype)
        n = mf.sum(dim=(-2, -1))
        c_tgt = torch.stack(((mf.sum(-1) * rows).sum(-1) / n, (mf.sum(-2) * cols).sum(-1) / n), -1)
    else:
        raise ValueError(f"centroid_loss: target must be 'bbox' or 'mass', got {target!r}")
    return _out(((c_sil - c_tgt) ** 2).sum(-1), unb)


def contact_loss(
    human_verts: torch.Tensor,
    human_contact: torch.Tensor,
    object_verts: torch.Tensor,
    object_contact: torch.Tensor,
    human_threshold: float | None = None,
    object_threshold: float | None = None,
) -> torch.Tensor:
    """Contact-weighted mean distance ``sum_ij c^H_i c^O_j |V^H_i - V^O_j| / sum_ij c^H_i c^O_j``.

    human_verts (V, 3) / (B, V, 3), human_contact (V,) / (B, V); object_* likewise with M. Distances are Euclidean
    (not squared), and the normaliser ``|C^H||C^O|`` is the product of the summed contact weights, as in the
    release (``ObjPose_Opt.contact_loss``: ``cdist`` weighted by the outer product of the probabilities). A
    threshold zeroes weights <= it and keeps the others soft: the release uses raw human probabilities (no
    threshold) and object probabilities zeroed at <= 0.3 (and by its normal pre-filter) in ``optim/fit.py``.
    Returns 0 when no weight is left. Scalar or (B,).
    """
    vh, unb = _batched(human_verts, 2)
    vo, _ = _batched(object_verts, 2)
    ch, _ = _batched(human_contact.to(vh.dtype), 1)
    co, _ = _batched(object_contact.to(vh.dtype), 1)
    if ch.shape != vh.shape[:2] or co.shape != vo.shape[:2]:
        raise ValueError(
            f"contact_loss: contacts must match the vertices: human {tuple(ch.shape)} vs {tuple(vh.shape)}, "
            f"object {tuple(co.shape)} vs {tuple(vo.shape)}"
        )
    if human_threshold is not None:
        ch = torch.where(ch > human_threshold, ch, torch.zeros_like(ch))
    if object_threshold is not None:
        co = torch.where(co > object_threshold, co, torch.zeros_like(co))
    w = ch[:, :, None] * co[:, None, :]
    dist = torch.cdist(vh, vo)
    den = w.sum(dim=(-2, -1))
    loss = torch.where(den > 0, (w * dist).sum(dim=(-2, -1)) / den.clamp_min(1e-12), torch.zeros_like(den))
    return _out(loss, unb)
