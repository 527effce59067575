"""Metrics of joint human-object reconstruction: object pose, human-object contact, mask IoU, penetration.

Every metric's ``update(results, samples)`` takes the per-sample fitting results and the input
samples of the reconstruction contract (two lists of dicts, one entry per sample, in the same order):
a result holds ``R (3,3), t (3,), scale, object_verts (M,3)`` placed in the camera frame,
``object_faces``, ``body_verts``, ``body_faces``, ``object_silhouette (H,W)``; a sample holds the
canonical ``object_verts`` / ``object_faces``, ``object_mask`` and the optional ground truth
(``gt_R``, ``gt_t``, ``gt_scale``, ``gt_human_contact``). A sample without the ground truth a
metric needs is skipped and counted (key ``skipped``). Every value is computed per sample and
averaged over the evaluated samples (``count``); states are sums reduced with ``sum``, so DDP or
``merge_state`` gives the value of one process that saw every sample. ``compute`` gives NaN for the
averages before any evaluated sample.

Metrics (registry kind ``metric``):

* ``object_pose`` (:class:`ObjectPoseError`): rotation / translation / scale error and the object
  Chamfer distance against the ground-truth pose.
* ``hoi_contact`` (:class:`HOIContact`): body-object contact precision / recall / F1 against
  ``gt_human_contact``.
* ``mask_iou`` (:class:`MaskIoU`): IoU of the placed object's silhouette and the object mask.
* ``penetration`` (:class:`PenetrationMetric`): interpenetration depth and volume
  (:func:`zoo.models.fit.collision.penetration`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import igl
import numpy as np
import torch
from torchmetrics import Metric

from zoo.core.registry import register
from zoo.metrics.contact import contact_prf_per_image

__all__ = ["ObjectPoseError", "HOIContact", "MaskIoU", "PenetrationMetric", "rotation_error_deg",
           "chamfer_distance", "surface_contact", "mask_iou", "CHAMFER_SAMPLES", "CHAMFER_SEED"]

CHAMFER_SAMPLES = 6000  # surface samples per mesh: BEHAVE's joint-reconstruction evaluation (sample_num)
CHAMFER_SEED = 0


def _t(x: Any, what: str) -> torch.Tensor:
    """``x`` as a detached float64 CPU tensor; TypeError naming ``what`` when it is no number / array."""
    try:
        return torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x).to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{what}: expected a tensor or array, got {type(x).__name__}") from exc


def _pairs(owner: str, results: Sequence[dict], samples: Sequence[dict]) -> list[tuple[int, dict, dict]]:
    """(index, result, sample) triples; ValueError when the two lists differ in length or hold no dicts."""
    if len(results) != len(samples):
        raise ValueError(f"{owner}.update: got {len(results)} results for {len(samples)} samples; expected one "
                         f"fitting result per input sample, in the same order")
    for i, (r, s) in enumerate(zip(results, samples, strict=True)):
        if not isinstance(r, dict) or not isinstance(s, dict):
            raise TypeError(f"{owner}.update: result and sample {i} must be dicts, got {type(r).__name__} and "
                            f"{type(s).__name__}")
    return list(zip(range(len(results)), results, samples, strict=True))


def _need(owner: str, d: dict, keys: Sequence[str], i: int, what: str) -> None:
    """KeyError naming the missing keys of entry ``i`` of ``what`` (results / samples)."""
    missing = [k for k in keys if k not in d or d[k] is None]
    if missing:
        name = d.get("name", i)
        raise KeyError(f"{owner}.update: {what}[{i}] (sample {name!r}) lacks {missing}; it has {sorted(d)}")


def _has(d: dict, keys: Sequence[str]) -> bool:
    return all(d.get(k) is not None for k in keys)


def rotation_error_deg(R: torch.Tensor, gt_R: torch.Tensor) -> float:
    """Geodesic angle in degrees between two rotations: arccos((trace(R^T gt_R) - 1) / 2)."""
    R, gt_R = _t(R, "R"), _t(gt_R, "gt_R")
    cos = ((R.T @ gt_R).trace() - 1.0) / 2.0
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))


def _sample_surface(verts: torch.Tensor, faces: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, 3) points sampled uniformly by area on the mesh, from a fixed seed (global RNG left untouched)."""
    from pytorch3d.ops import sample_points_from_meshes
    from pytorch3d.structures import Meshes

    mesh = Meshes(verts=[verts.float()], faces=[faces.long()])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sample_points_from_meshes(mesh, n)[0]


def chamfer_distance(verts_a, faces_a, verts_b, faces_b, n: int = CHAMFER_SAMPLES, seed: int = CHAMFER_SEED,
                     reduction: str = "sum") -> float:
    """Symmetric Chamfer distance (metres) between two meshes from ``n`` area-uniform surface samples each.

    Samples: pytorch3d ``sample_points_from_meshes``. ``d(A->B)`` = mean over A's samples of the L2 (not
    squared) distance to the nearest sample of B (scipy ``cKDTree``, exact). ``reduction="sum"``:
    ``d(A->B) + d(B->A)``, the BEHAVE / CHORE convention (their evaluation's ``chamfer_distance``
    accumulates the two directions); ``"mean"``: half of it. Both meshes are sampled from the same seed, so two meshes with the same
    faces whose face areas are proportional (one a rigid or uniformly scaled copy of the other) get
    corresponding samples: a mesh against itself gives exactly 0.
    """
    from scipy.spatial import cKDTree

    if reduction not in ("sum", "mean"):
        raise ValueError(f"chamfer_distance: reduction must be 'sum' or 'mean', got {reduction!r}")
    a = _sample_surface(_t(verts_a, "verts_a"), torch.as_tensor(faces_a), n, seed).double().numpy()
    b = _sample_surface(_t(verts_b, "verts_b"), torch.as_tensor(faces_b), n, seed).double().numpy()
    # Exact float64 nearest neighbours (a k-d tree: ~100x faster than pytorch3d's CPU knn_points at n = 6000).
    total = float(cKDTree(b).query(a, k=1)[0].mean() + cKDTree(a).query(b, k=1)[0].mean())
    return total if reduction == "sum" else total / 2.0


def surface_contact(body_verts, object_verts, object_faces, eps: float = 0.02) -> torch.Tensor:
    """Bool (V,): body vertices whose signed distance to the object surface is below ``eps`` metres.

    Signed by libigl's winding number (negative inside), so a body vertex inside the object counts as
    contact however deep; the distance is point-to-surface (closest point on a triangle), not to vertices."""
    q = _t(body_verts, "body_verts").numpy()
    v = _t(object_verts, "object_verts").numpy()
    f = np.ascontiguousarray(torch.as_tensor(object_faces).cpu().numpy(), dtype=np.int64)
    sd, _, _, _ = igl.signed_distance(np.ascontiguousarray(q), np.ascontiguousarray(v), f,
                                      sign_type=igl.SignedDistanceType.SIGNED_DISTANCE_TYPE_WINDING_NUMBER)
    return torch.from_numpy(sd < eps)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """|pred & target| / |pred | target| of two (H, W) boolean masks; 0 when both are empty."""
    union = int((pred | target).sum())
    return int((pred & target).sum()) / union if union else 0.0


class _SampleMean(Metric):
    """Per-sample values averaged over the evaluated samples; subclasses list their ``keys`` and fill
    :meth:`_values` (one dict of floats per evaluated sample, or None to skip the sample)."""

    is_differentiable = False
    full_state_update = False
    keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        for key in self.keys:
            self.add_state(f"{key}_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _values(self, i: int, result: dict, sample: dict) -> dict[str, float] | None:
        raise NotImplementedError

    def update(self, results: Sequence[dict], samples: Sequence[dict]) -> None:
        """Add a batch: the fitting ``results`` and the input ``samples`` (lists of per-sample dicts)."""
        for i, result, sample in _pairs(type(self).__name__, results, samples):
            vals = self._values(i, result, sample)
            if vals is None:
                self.skipped += 1.0
                continue
            for key in self.keys:
                state = getattr(self, f"{key}_sum")
                state += float(vals[key])
            self.count += 1.0

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean of each key over the evaluated samples (NaN before any), plus ``count`` and ``skipped``."""
        n = self.count
        out = {k: getattr(self, f"{k}_sum") / n if n > 0 else torch.full_like(n, float("nan")) for k in self.keys}
        return {**out, "count": n.clone(), "skipped": self.skipped.clone()}


@register("metric", "object_pose")
class ObjectPoseError(_SampleMean):
    """Object pose errors against the ground-truth pose, per sample, averaged.

    * ``rot_err_deg``: geodesic angle between R and gt_R, ``arccos((tr(R^T gt_R) - 1) / 2)`` in degrees.
    * ``trans_err_cm``: ``||t - gt_t|| * 100``: the object's placement error in the camera frame (it
      includes the depth error a single image leaves ambiguous; no alignment is applied).
    * ``scale_err``: ``|s / gt_s - 1|`` (gt_s taken as 1 when the sample has no ``gt_scale``).
    * ``chamfer_cm``: symmetric Chamfer distance (:func:`chamfer_distance`, ``reduction``: ``sum`` =
      BEHAVE / CHORE's accumulated two directions (default), ``mean`` = their average) between the
      result's placed ``object_verts`` and the ground-truth placed object ``s_gt (gt_R v) + gt_t`` of the
      sample's canonical ``object_verts``, ``n_samples`` surface samples each (6000, BEHAVE's joint
      evaluation), in cm. BEHAVE / CHORE report it after a Procrustes alignment of the combined human +
      object; here the body is the given one, so nothing is aligned: the value is in the camera frame.

    Samples without ``gt_R`` or ``gt_t`` are skipped.
    """

    higher_is_better = False
    main_key = "chamfer_cm"
    keys = ("rot_err_deg", "trans_err_cm", "scale_err", "chamfer_cm")

    def __init__(self, n_samples: int = CHAMFER_SAMPLES, seed: int = CHAMFER_SEED, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"ObjectPoseError: reduction must be 'sum' or 'mean', got {reduction!r}")
        if int(n_samples) < 1:
            raise ValueError(f"ObjectPoseError: n_samples must be >= 1, got {n_samples}")
        self.n_samples, self.seed, self.reduction = int(n_samples), int(seed), reduction

    def _values(self, i: int, result: dict, sample: dict) -> dict[str, float] | None:
        if not _has(sample, ("gt_R", "gt_t")):
            return None
        owner = type(self).__name__
        _need(owner, result, ("R", "t", "scale", "object_verts", "object_faces"), i, "results")
        _need(owner, sample, ("object_verts", "object_faces"), i, "samples")
        gt_R, gt_t = _t(sample["gt_R"], "gt_R"), _t(sample["gt_t"], "gt_t").reshape(3)
        gt_s = float(_t(sample["gt_scale"], "gt_scale")) if sample.get("gt_scale") is not None else 1.0
        s = float(_t(result["scale"], "scale"))
        gt_verts = _t(sample["object_verts"], "object_verts") @ gt_R.T * gt_s + gt_t
        cd = chamfer_distance(result["object_verts"], result["object_faces"], gt_verts, sample["object_faces"],
                              self.n_samples, self.seed, self.reduction)
        return {"rot_err_deg": rotation_error_deg(result["R"], gt_R),
                "trans_err_cm": float((_t(result["t"], "t").reshape(3) - gt_t).norm()) * 100.0,
                "scale_err": abs(s / gt_s - 1.0), "chamfer_cm": cd * 100.0}


@register("metric", "hoi_contact")
class HOIContact(_SampleMean):
    """Body-object contact precision / recall / F1 of the reconstruction, per sample, averaged.

    Predicted contact: the body vertices within ``eps`` (2 cm) of the placed object's surface
    (:func:`surface_contact`: signed point-to-surface distance, vertices inside the object included);
    ground truth: the sample's ``gt_human_contact`` (V,) 0/1. P = TP / |P|, R = TP / |G|, F1 = 2PR/(P+R)
    with InteractVLM's 1e-10 epsilons, so an empty predicted or ground-truth set gives 0
    (:func:`zoo.metrics.contact.contact_prf_per_image`, ``convention="interactvlm"``). Samples without
    ``gt_human_contact`` are skipped.
    """

    higher_is_better = True
    main_key = "f1"
    keys = ("precision", "recall", "f1")

    def __init__(self, eps: float = 0.02) -> None:
        super().__init__()
        if not float(eps) > 0:
            raise ValueError(f"HOIContact: eps must be > 0 metres, got {eps}")
        self.eps = float(eps)

    def _values(self, i: int, result: dict, sample: dict) -> dict[str, float] | None:
        if sample.get("gt_human_contact") is None:
            return None
        _need(type(self).__name__, result, ("body_verts", "object_verts", "object_faces"), i, "results")
        gt = _t(sample["gt_human_contact"], "gt_human_contact").reshape(1, -1)
        pred = surface_contact(result["body_verts"], result["object_verts"], result["object_faces"], self.eps)
        if pred.numel() != gt.shape[1]:
            raise ValueError(f"HOIContact.update: sample {i} has {gt.shape[1]} gt_human_contact labels but the "
                             f"result's body has {pred.numel()} vertices")
        p, r, f = contact_prf_per_image(pred.double().reshape(1, -1), gt, 0.5, "interactvlm")
        return {"precision": float(p[0]), "recall": float(r[0]), "f1": float(f[0])}


@register("metric", "mask_iou")
class MaskIoU(_SampleMean):
    """IoU of the result's ``object_silhouette`` and the sample's ``object_mask``, per sample, averaged.

    The silhouette is the whole placed object (occluded by nothing) while the mask is the object's
    *visible* part, so where the person occludes the object even a perfect pose scores below 1.
    Samples without an ``object_mask`` or with an empty one are skipped."""

    higher_is_better = True
    main_key = "iou"
    keys = ("iou",)

    def _values(self, i: int, result: dict, sample: dict) -> dict[str, float] | None:
        if sample.get("object_mask") is None:
            return None
        target = torch.as_tensor(sample["object_mask"]).bool().cpu()
        if not bool(target.any()):
            return None
        _need(type(self).__name__, result, ("object_silhouette",), i, "results")
        pred = torch.as_tensor(result["object_silhouette"]).detach().bool().cpu()
        if pred.shape != target.shape:
            raise ValueError(f"MaskIoU.update: sample {i}: object_silhouette {tuple(pred.shape)} and object_mask "
                             f"{tuple(target.shape)} differ in size; render the silhouette at the image's size")
        return {"iou": mask_iou(pred, target)}


@register("metric", "penetration")
class PenetrationMetric(_SampleMean):
    """Human-object interpenetration per sample, averaged (:func:`zoo.models.fit.collision.penetration`).

    ``depth_max_cm`` / ``depth_mean_cm``: max / mean unsigned distance to the body surface of the placed
    object's vertices inside the body (winding number > 0.5), 0 for a sample without any;
    ``volume_cm3``: the intersection volume counted on a ``voxel`` (m) grid over the overlap of the two
    bounding boxes. Needs no ground truth; needs closed meshes."""

    higher_is_better = False
    main_key = "volume_cm3"
    keys = ("depth_max_cm", "depth_mean_cm", "volume_cm3")

    def __init__(self, voxel: float = 0.005) -> None:
        super().__init__()
        if not float(voxel) > 0:
            raise ValueError(f"PenetrationMetric: voxel must be > 0 metres, got {voxel}")
        self.voxel = float(voxel)

    def _values(self, i: int, result: dict, sample: dict) -> dict[str, float] | None:
        from zoo.models.fit.collision import penetration

        _need(type(self).__name__, result, ("body_verts", "body_faces", "object_verts", "object_faces"), i,
              "results")
        return penetration(result["body_verts"], result["body_faces"], result["object_verts"],
                           result["object_faces"], voxel=self.voxel)
