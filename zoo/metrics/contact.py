"""Per-vertex contact metrics: precision / recall / F1 and geodesic error.

Both follow DECO's evaluation (``utils/metrics.py`` in sha2nkt/deco), which
InteractVLM reuses, so numbers are comparable with the papers:

* a vertex is predicted in contact when its probability is ``>= threshold``;
* every score is computed per image, then averaged over images (not pooled
  over vertices);
* the empty-set conventions are DECO's, spelled out on each class below.

States are per-image sums plus an image count, all reduced with ``sum``, so a
DDP run (or :meth:`torchmetrics.Metric.merge_state`) gives exactly the value
of one process that saw every image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchmetrics import Metric

from zoo.core.registry import register

__all__ = ["ContactPRF", "GeodesicError", "contact_prf_per_image", "geodesic_error_per_image"]


def check_pair(owner: str, pred: torch.Tensor, target: torch.Tensor, n: str = "V") -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors, both (B, n) of one shape; returned detached. Errors name ``owner``.update."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{owner}.update: pred and target must be tensors, got "
                        f"{type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 2 or target.shape != pred.shape:
        raise ValueError(f"{owner}.update: expected pred and target of the same shape (B, {n}), got "
                         f"pred {tuple(pred.shape)} and target {tuple(target.shape)}")
    return pred.detach(), target.detach()


def first_bad(t: torch.Tensor, bad: torch.Tensor) -> tuple[int, float] | None:
    """(sample index, value) of the first flagged entry of a (B, N) tensor, or None if none is flagged."""
    if not bad.any():
        return None
    b = int(bad.any(dim=1).nonzero()[0])
    return b, t[b][bad[b]][0].item()


def _check_inputs(owner: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (B, V) probability / (B, V) 0-1 pair and return (pred float, target bool)."""
    pred, target = check_pair(owner, pred, target)
    if pred.is_floating_point():
        hit = first_bad(pred, ~((pred >= 0) & (pred <= 1)))  # also catches NaN
        if hit is not None:
            raise ValueError(f"{owner}.update: pred must hold probabilities in [0, 1] (apply sigmoid to "
                             f"logits); sample {hit[0]} has value {hit[1]}")
    if target.dtype != torch.bool:
        hit = first_bad(target, (target != 0) & (target != 1))
        if hit is not None:
            raise ValueError(f"{owner}.update: target must be binary 0/1 contact labels; sample {hit[0]} has "
                             f"value {hit[1]}")
    return pred, target.bool()


def contact_prf_per_image(pred: torch.Tensor, target: torch.Tensor,
                          threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (precision, recall, F1), each (B,) float64, with DECO's empty-set rules (see ContactPRF)."""
    pred, gt = _check_inputs("ContactPRF", pred, target)
    hit = pred >= threshold
    tp = (hit & gt).sum(dim=1).double()
    n_pred = hit.sum(dim=1).double()
    n_gt = gt.sum(dim=1).double()
    precision = tp / n_pred.clamp(min=1)
    recall = tp / n_gt.clamp(min=1)
    denom = precision + recall
    f1 = torch.where(denom > 1e-10, 2 * precision * recall / denom.clamp(min=1e-10), torch.zeros_like(denom))
    # Order matters: DECO tests "no prediction" before "no ground truth", so an
    # image with neither scores (1, 0, 0).
    no_gt = n_gt == 0
    precision = torch.where(no_gt, torch.zeros_like(precision), precision)
    recall = torch.where(no_gt, torch.ones_like(recall), recall)
    f1 = torch.where(no_gt, torch.zeros_like(f1), f1)
    no_pred = n_pred == 0
    precision = torch.where(no_pred, torch.ones_like(precision), precision)
    recall = torch.where(no_pred, torch.zeros_like(recall), recall)
    f1 = torch.where(no_pred, torch.zeros_like(f1), f1)
    return precision, recall, f1


@register("metric", "contact_prf")
class ContactPRF(Metric):
    """Per-image contact precision, recall and F1 at ``pred >= threshold``, averaged over images.

    Empty-set conventions (DECO): no predicted contact -> P=1, R=0, F1=0; no
    ground-truth contact -> P=0, R=1, F1=0. When both are empty DECO's
    "no prediction" branch fires first, so the image scores P=1, R=0, F1=0;
    we keep that to stay comparable with DECO/InteractVLM numbers (it means a
    contact-free image can never raise F1).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    main_key = "f1"  # the value a progress bar shows

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"ContactPRF: threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        for key in ("precision_sum", "recall_sum", "f1_sum", "count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` (B, V) contact probabilities, ``target`` (B, V) 0/1 labels."""
        p, r, f = contact_prf_per_image(pred, target, self.threshold)
        self.precision_sum += p.sum().to(self.precision_sum)
        self.recall_sum += r.sum().to(self.recall_sum)
        self.f1_sum += f.sum().to(self.f1_sum)
        self.count += float(p.numel())

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean per-image {"precision", "recall", "f1"}; NaN before any update."""
        n = self.count
        if n == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
            return {"precision": nan, "recall": nan.clone(), "f1": nan.clone()}
        return {"precision": self.precision_sum / n, "recall": self.recall_sum / n, "f1": self.f1_sum / n}


def _load_geodesic(geodesic: torch.Tensor | np.ndarray | str | Path) -> torch.Tensor:
    """Load and check a (V, V) geodesic distance matrix in metres, returned as float32 CPU tensor."""
    source = "geodesic tensor"
    if isinstance(geodesic, (str, Path)):
        path = Path(geodesic)
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"GeodesicError: geodesic distance matrix not found: {path} (expected a .npy (V, V) "
                f"array of vertex-to-vertex geodesic distances in metres, e.g. DECO's smpl_neutral_geodesic_dist.npy "
                f"or one computed with zoo.body mesh ops)")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises several types for bad files
            raise ValueError(f"GeodesicError: cannot read {path} as a .npy array: {exc}") from exc
        mat = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(geodesic, np.ndarray):
        mat = torch.from_numpy(np.ascontiguousarray(geodesic))
    elif isinstance(geodesic, torch.Tensor):
        mat = geodesic.detach()
    else:
        raise TypeError(f"GeodesicError: geodesic must be a tensor or a path to a .npy file, "
                        f"got {type(geodesic).__name__}")
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"GeodesicError: {source} must be a square (V, V) matrix, got shape {tuple(mat.shape)}")
    if not (mat.is_floating_point() or mat.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"GeodesicError: {source} must hold numbers, got dtype {mat.dtype}")
    mat = mat.to(device="cpu", dtype=torch.float32)
    diag = mat.diagonal().abs().max().item() if mat.numel() else 0.0
    # The empty-set convention relies on D[i, i] == 0 (a vertex is its own nearest neighbour).
    if diag > 1e-6:
        raise ValueError(f"GeodesicError: {source} has a non-zero diagonal (max |D[i,i]| = {diag}); "
                         f"expected vertex-to-vertex geodesic distances with D[i, i] = 0")
    return mat


def _geodesics_of(body_model: dict) -> np.ndarray:
    """The (V, V) geodesic matrix (metres) of a body model's template mesh, computed once and cached."""
    from zoo.body.mesh import geodesic_distances
    from zoo.core.paths import cache_dir
    from zoo.core.registry import build

    bm = build("body_model", body_model)
    return geodesic_distances(bm.v_template.detach().cpu().numpy(), bm.faces.cpu().numpy(),
                              cache_dir=cache_dir("geodesics"))


def geodesic_error_per_image(dist: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                             threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (fp, fn) geodesic errors in the matrix's units (metres), each (B,) float64.

    fp: mean over predicted contact vertices of the distance to the nearest
    ground-truth contact vertex. fn: mean over ground-truth contact vertices
    of the distance to the nearest predicted vertex. An empty set is replaced
    by all vertices (DECO), see GeodesicError.
    """
    pred, gt = _check_inputs("GeodesicError", pred, target)
    if dist.shape[0] != pred.shape[1]:
        raise ValueError(f"GeodesicError.update: geodesic matrix is for {dist.shape[0]} vertices but pred/target "
                         f"have V={pred.shape[1]}")
    hit = (pred >= threshold).to(dist.device)
    gt = gt.to(dist.device)
    fp = torch.zeros(pred.shape[0], dtype=torch.float64)
    fn = torch.zeros(pred.shape[0], dtype=torch.float64)
    for b in range(pred.shape[0]):
        p_idx = hit[b].nonzero().squeeze(1)
        g_idx = gt[b].nonzero().squeeze(1)
        if p_idx.numel() == 0 and g_idx.numel() == 0:
            continue  # all vertices vs all vertices: zero diagonal gives 0 and 0
        # Gather predicted rows first, then GT columns: a (|pred|, |gt|) block,
        # never a (V, V) copy for the V=6890 SMPL matrix.
        rows = dist.index_select(0, p_idx) if p_idx.numel() else dist
        block = rows.index_select(1, g_idx) if g_idx.numel() else rows
        fp[b] = block.min(dim=1).values.double().mean().cpu()
        fn[b] = block.min(dim=0).values.double().mean().cpu()
    return fp, fn


@register("metric", "contact_geodesic")
class GeodesicError(Metric):
    """Geodesic contact error (cm): false-positive and false-negative distances, averaged over images.

    ``geodesic`` is a (V, V) matrix of vertex-to-vertex geodesic distances in
    metres (a tensor or a path to a .npy file); alternatively ``body_model`` (a body-model
    sub-recipe) has it computed on that model's template mesh (cached under
    ``$ZOO_HOME/geodesics``). Per image, with P the
    predicted contact vertices (``pred >= threshold``) and G the ground-truth
    ones: ``fp = mean_{i in P} min_{j in G} D[i, j]`` and
    ``fn = mean_{j in G} min_{i in P} D[i, j]``, both x100 to centimetres.
    The orientation is (pred rows, GT columns); InteractVLM's public code
    passes (gt, pred) and so swaps fp and fn — not reproduced here.

    Empty sets follow DECO, which substitutes all vertices for an empty set:
    no predicted contact -> fp = mean over all vertices of the distance to the
    nearest GT vertex, fn = 0; no GT contact -> fp = 0, fn = mean over all
    vertices of the distance to the nearest predicted vertex; both empty -> 0, 0.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    main_key = None

    def __init__(self, geodesic: torch.Tensor | str | None = None, threshold: float = 0.5,
                 body_model: dict | None = None) -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"GeodesicError: threshold must be in [0, 1], got {threshold}")
        if (geodesic is None) == (body_model is None):
            raise ValueError("GeodesicError: give either geodesic (a (V, V) matrix or .npy path) or body_model "
                             "(a body_model sub-recipe whose template mesh the matrix is computed on, cached)")
        self.threshold = float(threshold)
        if geodesic is None:
            geodesic = _geodesics_of(body_model)
        # Non-persistent buffer: follows .to(device) but stays out of state_dict
        # (190 MB for SMPL) and out of the DDP-synced metric states.
        self.register_buffer("geodesic", _load_geodesic(geodesic), persistent=False)
        for key in ("fp_sum", "fn_sum", "count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` (B, V) contact probabilities, ``target`` (B, V) 0/1 labels."""
        fp, fn = geodesic_error_per_image(self.geodesic, pred, target, self.threshold)
        self.fp_sum += fp.sum().to(self.fp_sum)
        self.fn_sum += fn.sum().to(self.fn_sum)
        self.count += float(fp.numel())

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean per-image {"fp_geo_cm", "fn_geo_cm"} in centimetres; NaN before any update."""
        n = self.count
        if n == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
            return {"fp_geo_cm": nan, "fn_geo_cm": nan.clone()}
        return {"fp_geo_cm": 100.0 * self.fp_sum / n, "fn_geo_cm": 100.0 * self.fn_sum / n}
