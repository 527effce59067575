"""Per-vertex human contact metrics: precision / recall / F1 and geodesic error, under two conventions.

The per-vertex formulas are shared; DECO (sha2nkt/deco) and InteractVLM (saidwivedi/InteractVLM)
differ in their empty-set rules and in how they aggregate, so each metric takes
``convention: deco | interactvlm``. InteractVLM does **not** reuse DECO's rules:

============================  ==============================  ==============================================
rule                          ``deco`` (default)              ``interactvlm``
============================  ==============================  ==============================================
predicted contact             ``pred >= threshold``           ``pred >= threshold``
precision / recall            TP / |P|, TP / |G|              TP / (|P| + 1e-10), TP / (|G| + 1e-10)
F1                            2PR / (P + R); 0 if P+R<=1e-10  2PR / (P + R + 1e-10)
no predicted contact          P = 1, R = 0, F1 = 0            P = R = F1 = 0
no ground-truth contact       P = 0, R = 1, F1 = 0            P = R = F1 = 0
neither                       P = 1, R = 0, F1 = 0            P = R = F1 = 0
aggregate                     mean over images                mean over (image, object) entries
geodesic error                DECO's rule (below)             the same rule (see GeodesicError)
============================  ==============================  ==============================================

Both are averaged per image (per entry), not pooled over vertices. InteractVLM's DAMON tables
need the image and object name of each entry: the functions :func:`damon_binary_contact` and
:func:`damon_semantic_contact` compute them offline, and the metrics ``damon_binary``
(:class:`DamonBinaryContact`) and ``damon_semantic`` (:class:`DamonSemanticContact`) during a test
run. Those two declare ``batch_keys`` (``("imgname",)``, ``("object_name",)``): the System base
passes them from the batch, ``update(pred, target, imgname=batch["imgname"])``.

States of ContactPRF and GeodesicError are per-image sums plus an image count, all reduced with
``sum``, so a DDP run (or :meth:`torchmetrics.Metric.merge_state`) gives exactly the value of one
process that saw every image. The DAMON metrics keep per-entry rows instead (a table is not a
sum), all as 1-D int64 tensors concatenated across processes (``cat``): names become integers
(an image name a 63-bit hash, an object name its UTF-8 bytes, so the table can name it), the
thresholded prediction and ground truth bit-packed masks, geodesic errors their float64 bits.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from zoo.core.registry import register

__all__ = ["ContactPRF", "GeodesicError", "DamonBinaryContact", "DamonSemanticContact", "contact_prf_per_image",
           "geodesic_error_per_image", "damon_binary_contact", "damon_semantic_contact", "name_id",
           "CONTACT_CONVENTIONS", "DAMON_CATEGORIES"]

CONTACT_CONVENTIONS = ("deco", "interactvlm")
_IVLM_EPS = 1e-10  # InteractVLM's additive epsilon in P, R and F1

# InteractVLM's grouping of DAMON object names into categories for its semantic-contact summary
# (in its order). Names outside every category (e.g. "supporting") are left out of that summary.
DAMON_CATEGORIES: dict[str, tuple[str, ...]] = {
    "transport": ("motorcycle", "bicycle", "boat", "car", "truck", "bus", "train", "airplane"),
    "accessory": ("backpack", "tie", "handbag", "baseball_glove"),
    "furniture": ("bench", "chair", "couch", "bed", "toilet", "dining_table"),
    "everyday-objects": ("book", "umbrella", "cell_phone", "laptop", "kite", "suitcase", "bottle", "remote",
                         "toothbrush", "teddy_bear", "scissors", "keyboard", "hair drier", "traffic light",
                         "fire_hydrant", "stop sign", "tv", "vase", "parking meter", "clock", "potted plant",
                         "mouse"),
    "sports": ("frisbee", "sports_ball", "tennis_racket", "baseball_bat", "skateboard", "snowboard", "skis",
               "surfboard"),
    "food": ("banana", "cake", "apple", "carrot", "pizza", "donut", "hot_dog", "sandwich", "broccoli", "orange"),
    "kitchen": ("knife", "spoon", "cup", "wine_glass", "oven", "fork", "bowl", "refrigerator", "toaster", "sink",
                "microwave"),
}


def check_convention(owner: str, convention: str, allowed: Sequence[str] = CONTACT_CONVENTIONS) -> str:
    """``convention`` if it is one of ``allowed``, else a ValueError naming ``owner`` and the choices."""
    if convention not in allowed:
        raise ValueError(f"{owner}: convention must be one of {', '.join(map(repr, allowed))}, got {convention!r}")
    return convention

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


def contact_prf_per_image(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5,
                          convention: str = "deco") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (precision, recall, F1), each (B,) float64, under ``convention`` (see ContactPRF)."""
    check_convention("ContactPRF", convention)
    pred, gt = _check_inputs("ContactPRF", pred, target)
    hit = pred >= threshold
    tp = (hit & gt).sum(dim=1).double()
    n_pred = hit.sum(dim=1).double()
    n_gt = gt.sum(dim=1).double()
    if convention == "interactvlm":
        # The epsilon makes every empty set score 0 without a special case.
        precision = tp / (n_pred + _IVLM_EPS)
        recall = tp / (n_gt + _IVLM_EPS)
        return precision, recall, 2 * precision * recall / (precision + recall + _IVLM_EPS)
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

    ``convention`` picks the empty-set rules (module docstring has the full table):

    * ``deco`` (default; the DECO recipes): no predicted contact -> P=1, R=0, F1=0; no
      ground-truth contact -> P=0, R=1, F1=0; when both are empty DECO's "no prediction"
      branch fires first, so the image scores P=1, R=0, F1=0 (a contact-free image can never
      raise F1). F1 = 2PR/(P+R), 0 when P+R <= 1e-10. Reproduces DECO (ICCV 2023), its DAMON
      contact-estimation comparison (precision / recall / F1 with geodesic error; DECO itself
      at P 0.65, R 0.57, F1 0.55), i.e. DECO's ``precision_recall_f1score`` averaged over test
      images as its trainer's evaluator does.
    * ``interactvlm``: P = TP/(|P|+1e-10), R = TP/(|G|+1e-10), F1 = 2PR/(P+R+1e-10), so an
      empty prediction or an empty ground truth gives P = R = F1 = 0; averaged over the
      (image, object) entries it is given. Reproduces the per-entry human-contact P / R / F1
      that InteractVLM's ``evaluate.py`` logs for DAMON (the entries of its semantic-contact
      table, CVPR 2025). Its *binary* DAMON numbers (F1 75.6, P 75.2, R 76.0) take the union
      over each image's objects first: :func:`damon_binary_contact`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    main_key = "f1"  # the value a progress bar shows
    convention_family = "contact"  # ``convention=`` of an evaluation sets it (zoo.metrics.conventions)

    def __init__(self, threshold: float = 0.5, convention: str = "deco") -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"ContactPRF: threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.convention = check_convention("ContactPRF", convention)
        for key in ("precision_sum", "recall_sum", "f1_sum", "count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` (B, V) contact probabilities, ``target`` (B, V) 0/1 labels."""
        p, r, f = contact_prf_per_image(pred, target, self.threshold, self.convention)
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


def _geodesics_of(body_model: dict, method: str = "exact") -> np.ndarray:
    """The (V, V) geodesic matrix (metres) of a body model: the released file beside the model files when
    present, else exact geodesics on its template mesh (computed once and cached), or the edge-graph
    bound with ``method="edges"``."""
    from zoo.body.mesh import body_geodesic_distances
    from zoo.core.paths import cache_dir
    from zoo.core.registry import build

    bm = build("body_model", body_model)
    return body_geodesic_distances(bm, cache_dir=cache_dir("geodesics"), method=method)


def geodesic_error_per_image(dist: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                             threshold: float = 0.5, convention: str = "deco") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (fp, fn) geodesic errors in the matrix's units (metres), each (B,) float64.

    fp: mean over predicted contact vertices of the distance to the nearest
    ground-truth contact vertex. fn: mean over ground-truth contact vertices
    of the distance to the nearest predicted vertex. An empty set is replaced
    by all vertices (DECO). Both conventions give the same values (see GeodesicError).
    """
    check_convention("GeodesicError", convention)
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
    sub-recipe) uses the released ``smpl_neutral_geodesic_dist.npy`` beside the model files when
    present, else exact geodesics on the template mesh (cached under ``$ZOO_HOME/geodesics``;
    about 20 CPU-minutes once for SMPL); ``method="edges"`` takes the edge-graph (Dijkstra) upper
    bound instead, in seconds, for tests and tiny configurations. Per image, with P the
    predicted contact vertices (``pred >= threshold``) and G the ground-truth
    ones: ``fp = mean_{i in P} min_{j in G} D[i, j]`` and
    ``fn = mean_{j in G} min_{i in P} D[i, j]``, both x100 to centimetres.

    Empty sets follow DECO, which substitutes all vertices for an empty set:
    no predicted contact -> fp = mean over all vertices of the distance to the
    nearest GT vertex, fn = 0; no GT contact -> fp = 0, fn = mean over all
    vertices of the distance to the nearest predicted vertex; both empty -> 0, 0.

    ``convention``: ``deco`` (default) reproduces the geodesic column of DECO's DAMON
    comparison (ICCV 2023; DECO 21.32 cm), DECO's ``det_error_metric`` averaged over images.
    ``interactvlm`` is accepted for the geodesic column of InteractVLM's DAMON tables (CVPR 2025;
    2.89 cm binary), which report ``fp``: its ``get_h_geo_metric(pred, gt)`` has the same rule in
    signature order, so the values are identical. InteractVLM's ``evaluate.py`` calls it as
    ``(gt, pred)`` — a known bug that makes the logged value the mean over GT vertices of the
    distance to the nearest vertex whose prediction is exactly 1.0 (0 when there is none). That
    swapped value is **not** reproduced.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    main_key = None
    convention_family = "contact"

    def __init__(self, geodesic: torch.Tensor | str | None = None, threshold: float = 0.5,
                 body_model: dict | None = None, convention: str = "deco",
                 method: Literal["exact", "edges"] = "exact") -> None:
        super().__init__()
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"GeodesicError: threshold must be in [0, 1], got {threshold}")
        if (geodesic is None) == (body_model is None):
            raise ValueError("GeodesicError: give either geodesic (a (V, V) matrix or .npy path) or body_model "
                             "(a body_model sub-recipe whose template mesh the matrix is computed on, cached)")
        self.threshold = float(threshold)
        self.convention = check_convention("GeodesicError", convention)
        if geodesic is None:
            geodesic = _geodesics_of(body_model, method)
        # Non-persistent buffer: follows .to(device) but stays out of state_dict
        # (190 MB for SMPL) and out of the DDP-synced metric states.
        self.register_buffer("geodesic", _load_geodesic(geodesic), persistent=False)
        for key in ("fp_sum", "fn_sum", "count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` (B, V) contact probabilities, ``target`` (B, V) 0/1 labels."""
        fp, fn = geodesic_error_per_image(self.geodesic, pred, target, self.threshold, self.convention)
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


# ------------------------------------------------------------------ InteractVLM's DAMON tables
def _entries(owner: str, pred, target, names: Sequence, what: str) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(pred, target) as tensors (M, V) and ``names`` as a list of M entries, checked."""
    pred = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred)
    target = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    pred, target = _check_inputs(owner, pred, target)
    names = [str(n) for n in (names.tolist() if isinstance(names, np.ndarray) else names)]
    if len(names) != pred.shape[0]:
        raise ValueError(f"{owner}: {pred.shape[0]} entries but {len(names)} {what}")
    return pred, target, names


def _entry_geo(geodesic, pred: torch.Tensor, target: torch.Tensor, threshold: float) -> np.ndarray | None:
    """Per-entry fp geodesic error (matrix units), or None without a matrix."""
    if geodesic is None:
        return None
    dist = _load_geodesic(geodesic)
    return geodesic_error_per_image(dist, pred, target, threshold, "interactvlm")[0].numpy()


def _pooled(tp: np.ndarray, n: np.ndarray) -> float:
    total = float(n.sum())
    return float(tp.sum()) / total if total > 0 else 0.0


def _binary_summary(hit: np.ndarray, gt: np.ndarray, keys: Sequence, geo: np.ndarray | None) -> dict:
    """The binary table from thresholded (M, V) bool masks, per-entry image ``keys`` (hashable) and fp geo."""
    order = list(dict.fromkeys(keys))
    index = {n: i for i, n in enumerate(order)}
    rows = np.array([index[n] for n in keys], dtype=np.int64)
    k, v = len(order), hit.shape[1]
    p_img = np.zeros((k, v), dtype=bool)
    g_img = np.zeros((k, v), dtype=bool)
    np.logical_or.at(p_img, rows, hit)
    np.logical_or.at(g_img, rows, gt)
    tp = (p_img & g_img).sum(1).astype(np.float64)
    pp = p_img.sum(1).astype(np.float64)
    gp = g_img.sum(1).astype(np.float64)
    prec = np.divide(tp, pp, out=np.zeros(k), where=pp > 0)
    rec = np.divide(tp, gp, out=np.zeros(k), where=gp > 0)
    s = prec + rec
    f1 = np.divide(2 * prec * rec, s, out=np.zeros(k), where=s > 0)
    out = {"image_names": order, "per_image_precision": prec, "per_image_recall": rec, "per_image_f1": f1,
           "precision": _pooled(tp, pp), "recall": _pooled(tp, gp), "f1": float(f1.mean()) if k else float("nan")}
    if geo is not None:
        per = np.full(k, -np.inf)
        np.maximum.at(per, rows, geo)
        out["per_image_fp_geo"] = per
        out["fp_geo"] = float(per.mean()) if k else float("nan")
    return out


def damon_binary_contact(pred, target, image_names: Sequence, threshold: float = 0.5,
                         geodesic=None) -> dict:
    """InteractVLM's DAMON *binary* human-contact numbers from per-(image, object) entries.

    Reproduces the binary-contact row of InteractVLM (CVPR 2025) on DAMON (F1 75.6, P 75.2,
    R 76.0, geodesic 2.89 cm): its ``evaluate.py`` ``get_damon_binary_contact``. ``pred`` (M, V)
    probabilities, ``target`` (M, V) 0/1 labels and ``image_names`` (M,) name each entry's
    image. Entries are grouped by image in order of first appearance; per image the entries'
    ``pred >= threshold`` and ``target > 0`` are OR-ed. Per image: prec = tp/pp (0 if pp = 0),
    rec = tp/gp (0 if gp = 0), f1 = 2 prec rec / (prec + rec) (0 if that sum is 0).
    ``precision`` and ``recall`` are **pooled** over all images' vertices (sum tp / sum pp,
    sum tp / sum gp); ``f1`` is the **mean of the per-image F1**. (The metric
    :class:`DamonBinaryContact` computes the same during a test run.)

    With ``geodesic`` (a (V, V) matrix or .npy path), ``per_image_fp_geo`` is the max over the
    image's entries of the per-entry fp geodesic error (DECO's rule, in the matrix's units,
    see GeodesicError) and ``fp_geo`` their mean. The official script takes that max over the
    value its ``evaluate.py`` logs, which has swapped arguments (see GeodesicError); we use the
    signature-order value.

    Returns ``image_names`` (list), ``per_image_{precision,recall,f1}`` (np.float64 arrays),
    ``precision``, ``recall``, ``f1`` (floats) and, with a matrix, ``per_image_fp_geo`` and ``fp_geo``.
    """
    pred, target, names = _entries("damon_binary_contact", pred, target, image_names, "image names")
    geo = _entry_geo(geodesic, pred, target, threshold)
    return _binary_summary((pred >= threshold).numpy(), target.numpy(), names, geo)


def _group_row(sel: np.ndarray, f1: np.ndarray, tp: np.ndarray, pp: np.ndarray, gp: np.ndarray,
               geo: np.ndarray | None) -> list[float]:
    """[n, mean F1, pooled precision, pooled recall, mean fp geo (NaN without a matrix)] of the selected entries."""
    return [float(sel.sum()), float(f1[sel].mean()), _pooled(tp[sel], pp[sel]), _pooled(tp[sel], gp[sel]),
            float(geo[sel].mean()) if geo is not None else float("nan")]


def _ivlm_f1(tp: np.ndarray, pp: np.ndarray, gp: np.ndarray) -> np.ndarray:
    """Per-entry F1 under the ``interactvlm`` rules from the counts (as contact_prf_per_image computes it)."""
    p = tp / (pp + _IVLM_EPS)
    r = tp / (gp + _IVLM_EPS)
    return 2 * p * r / (p + r + _IVLM_EPS)


def _semantic_summary(names: list[str], tp: np.ndarray, pp: np.ndarray, gp: np.ndarray, geo: np.ndarray | None,
                      categories: dict[str, Sequence[str]] | None) -> dict:
    """The semantic tables from lower-cased per-entry object names and per-entry TP / |P| / |G| counts."""
    f1 = _ivlm_f1(tp, pp, gp)
    arr = np.asarray(names)
    objects = sorted(set(names))
    table = np.array([_group_row(arr == o, f1, tp, pp, gp, geo) for o in objects], dtype=np.float64).reshape(-1, 5)
    cats, cat_rows = [], []
    for cat, members in (DAMON_CATEGORIES if categories is None else categories).items():
        sel = np.isin(arr, [m.lower() for m in members])
        if sel.any():
            cats.append(cat)
            cat_rows.append(_group_row(sel, f1, tp, pp, gp, geo))
    n = table[:, 0]
    total = n.sum()
    return {"objects": objects, "table": table, "columns": ["n", "f1", "precision", "recall", "fp_geo"],
            "weighted_f1": float((table[:, 1] * n).sum() / total) if total else float("nan"),
            "weighted_fp_geo": float((table[:, 4] * n).sum() / total) if total else float("nan"),
            "category_names": cats, "category_table": np.array(cat_rows, dtype=np.float64).reshape(-1, 5)}


def damon_semantic_contact(pred, target, object_names: Sequence, threshold: float = 0.5, geodesic=None,
                           categories: dict[str, Sequence[str]] | None = None) -> dict:
    """InteractVLM's DAMON *semantic* human-contact tables (per object and per category).

    Reproduces InteractVLM's (CVPR 2025) semantic-contact evaluation on DAMON (its
    ``get_damon_semantic_contact``; the paper's semantic-contact comparison reports the weighted
    F1). One entry per (image, object): ``pred`` (M, V) probabilities, ``target`` (M, V) 0/1
    labels, ``object_names`` (M,) (lower-cased, so ``Chair`` and ``chair`` are one object).
    (The metric :class:`DamonSemanticContact` computes the same during a test run.)

    ``table`` has one row per object (``objects``, sorted) with columns
    [num_entries, mean per-entry F1 (``interactvlm`` convention), precision, recall, mean fp
    geodesic error (matrix units; NaN without ``geodesic``)]. Precision and recall are pooled over
    the object's entries at ``pred >= threshold``: sum TP / sum |P| and sum TP / sum |G|.
    ``weighted_f1`` and ``weighted_fp_geo`` weight the rows by their entry counts (the plain mean
    over entries). ``category_table`` is the same over ``categories`` (default
    :data:`DAMON_CATEGORIES`, in its order; objects in no category are skipped, empty categories
    omitted), with names in ``category_names``.

    Two known bugs of the official script are not reproduced: it computes precision and recall
    on the raw probabilities (TP = count(pred != 0 and gt != 0), precision = TP / sum(pred)), which
    is why its tables can show precision > 1 and recall near 1; and its geo column averages the
    swapped-argument value (see GeodesicError). Ours thresholds and uses the signature-order value.
    """
    pred, target, names = _entries("damon_semantic_contact", pred, target, object_names, "object names")
    geo = _entry_geo(geodesic, pred, target, threshold)
    hit = (pred >= threshold).numpy()
    gt = target.numpy()
    tp = (hit & gt).sum(1).astype(np.float64)
    pp = hit.sum(1).astype(np.float64)
    gp = gt.sum(1).astype(np.float64)
    return _semantic_summary([n.lower() for n in names], tp, pp, gp, geo, categories)


# ------------------------------------------------------------------ the DAMON tables as metrics
_WORD_BITS = 32  # mask bits per int64 state word
_BIT_WEIGHTS = 2 ** torch.arange(_WORD_BITS, dtype=torch.int64)
NAME_BYTES = 64  # an object name is stored as its UTF-8 bytes, at most this many
_HASH_MASK = (1 << 63) - 1


def name_id(name: str) -> int:
    """A stable non-negative 63-bit integer for a name (blake2b of its UTF-8 bytes): the same in every
    process and every run, unlike Python's ``hash``; two of 10^6 names collide with probability ~1e-7."""
    return int.from_bytes(hashlib.blake2b(str(name).encode("utf-8"), digest_size=8).digest(), "little") & _HASH_MASK


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A (B, V) bool mask as (B * ceil(V / 32),) int64 words, 32 bits each (vertex j of a word is bit j)."""
    b, v = mask.shape
    words = -(-v // _WORD_BITS)
    padded = torch.zeros(b, words * _WORD_BITS, dtype=torch.int64, device=mask.device)
    padded[:, :v] = mask.to(torch.int64)
    return (padded.view(b, words, _WORD_BITS) * _BIT_WEIGHTS.to(mask.device)).sum(-1).reshape(-1)


def _unpack_bits(words: torch.Tensor, m: int) -> np.ndarray:
    """(m, 32 * words-per-entry) bool from :func:`_pack_bits` output of m entries (pad bits are 0)."""
    w = words.reshape(m, -1).cpu()
    return ((w.unsqueeze(-1) >> torch.arange(_WORD_BITS)) & 1).bool().reshape(m, -1).numpy()


def _as_bits(x: torch.Tensor) -> torch.Tensor:
    """float64 values as their int64 bit patterns (exact, reversed by ``.view(torch.float64)``)."""
    return x.to(torch.float64).contiguous().view(torch.int64)


def _names(owner: str, key: str, names: Any, n: int) -> list[str]:
    """The batch's per-sample names as a list of n strings, or a TypeError / ValueError naming ``owner``."""
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
        raise TypeError(f"{owner}.update: {key} must be a list of {n} strings (the batch's '{key}'), "
                        f"got {type(names).__name__}")
    if len(names) != n:
        raise ValueError(f"{owner}.update: {len(names)} {key} entries for {n} predictions")
    return list(names)


def _gather_int64(tensor: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """``gather_all_tensors`` for states that are all 1-D int64: a process that saw no batch offers
    torchmetrics' empty placeholder, in the metric's float dtype, which is made int64 like the others."""
    if tensor.numel() == 0 and tensor.dtype != torch.int64:
        tensor = tensor.to(torch.int64)
    return gather_all_tensors(tensor, group)


class _DamonMetric(Metric):
    """Per-entry rows of 1-D int64 ``cat`` states (see the module docstring), optional geodesic matrix."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    convention_family = "damon"  # InteractVLM's evaluation only: ``convention=deco`` leaves it out
    batch_keys: tuple[str, ...] = ()  # batch entries update() takes by keyword (the System passes them)
    _states: tuple[str, ...] = ()

    def __init__(self, threshold: float, geodesic, body_model: dict | None, method: str) -> None:
        super().__init__(dist_sync_fn=_gather_int64)
        owner = type(self).__name__
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"{owner}: threshold must be in [0, 1], got {threshold}")
        if geodesic is not None and body_model is not None:
            raise ValueError(f"{owner}: give geodesic or body_model, not both")
        self.threshold = float(threshold)
        self.has_geodesic = geodesic is not None or body_model is not None
        if body_model is not None:
            geodesic = _geodesics_of(body_model, method)
        if self.has_geodesic:
            self.register_buffer("geodesic", _load_geodesic(geodesic), persistent=False)
        for key in self._states + (("fp_geo",) if self.has_geodesic else ()):
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def sync(self, dist_sync_fn=None, *args: Any, **kwargs: Any) -> None:
        """As torchmetrics' ``sync``, with this metric's int64 gather by default (``compute`` uses it too)."""
        super().sync(dist_sync_fn or self.dist_sync_fn, *args, **kwargs)

    def _rows(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(thresholded prediction, ground truth) bool (B, V) and the checked probabilities."""
        pred, gt = _check_inputs(type(self).__name__, pred, target)
        return pred >= self.threshold, gt, pred

    def _add_geo(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Append the per-entry fp geodesic errors (metres, as float64 bits) when the metric has a matrix."""
        if self.has_geodesic:
            fp, _ = geodesic_error_per_image(self.geodesic, pred, gt, self.threshold, "interactvlm")
            self.fp_geo.append(_as_bits(fp).to(self.device))

    def _cat(self, key: str) -> torch.Tensor:
        value = getattr(self, key)
        return (dim_zero_cat(value) if isinstance(value, list) and value else
                value if isinstance(value, torch.Tensor) else torch.zeros(0, dtype=torch.int64)).cpu()

    def _geo(self) -> np.ndarray | None:
        return self._cat("fp_geo").view(torch.float64).numpy() if self.has_geodesic else None


def _t(x: float) -> torch.Tensor:
    return torch.tensor(float(x), dtype=torch.float64)


@register("metric", "damon_binary")
class DamonBinaryContact(_DamonMetric):
    """InteractVLM's DAMON *binary* contact: per-image union over objects, F1 averaged per image, P and R pooled.

    Reproduces the binary-contact row of InteractVLM's (CVPR 2025) DAMON comparison (F1 75.6,
    P 75.2, R 76.0, geodesic 2.89 cm; its ``get_damon_binary_contact``) from one entry per
    (image, object) or per image: :func:`damon_binary_contact` as a metric. ``update(pred (B, V),
    target (B, V), imgname)`` with ``imgname`` the B image names (the batch's ``imgname``, which the
    System passes because ``batch_keys = ("imgname",)``; an integer tensor of image ids works too).
    The entries of one image may come in different batches or processes: each keeps its
    thresholded masks (bit-packed) and the hashed image name (:func:`name_id`), and ``compute``
    takes the union once every process's rows are gathered.

    ``compute() -> {"damon_binary/f1", "damon_binary/precision", "damon_binary/recall",
    "damon_binary/images"}`` and, with ``geodesic`` (a (V, V) matrix in metres or .npy path) or
    ``body_model`` (as for GeodesicError), ``"damon_binary/fp_geo_cm"``: the mean over images of the
    max over its entries of the fp geodesic error (signature order; see GeodesicError).
    """

    main_key = "damon_binary/f1"
    batch_keys = ("imgname",)
    _states = ("image_id", "hit", "gt")

    def __init__(self, threshold: float = 0.5, geodesic: torch.Tensor | str | None = None,
                 body_model: dict | None = None, method: Literal["exact", "edges"] = "exact") -> None:
        super().__init__(threshold, geodesic, body_model, method)

    def update(self, pred: torch.Tensor, target: torch.Tensor, imgname: Sequence[str] | torch.Tensor) -> None:
        """Add a batch: (B, V) contact probabilities, (B, V) 0/1 labels and the B image names (or int ids)."""
        hit, gt, prob = self._rows(pred, target)
        b = hit.shape[0]
        if isinstance(imgname, torch.Tensor):
            if imgname.is_floating_point() or imgname.shape != (b,) or (imgname < 0).any():
                raise ValueError(f"DamonBinaryContact.update: integer image ids must be a (B,) = ({b},) tensor of "
                                 f"non-negative integers, got {imgname.dtype} {tuple(imgname.shape)}")
            ids = imgname.to(torch.int64)
        else:
            ids = torch.tensor([name_id(n) for n in _names("DamonBinaryContact", "imgname", imgname, b)],
                               dtype=torch.int64)
        self._add_geo(prob, gt)
        self.image_id.append(ids.to(self.device))
        self.hit.append(_pack_bits(hit).to(self.device))
        self.gt.append(_pack_bits(gt).to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        """The binary row (see the class docstring); NaN values and 0 images before any update."""
        ids = self._cat("image_id")
        m = ids.numel()
        out = {"damon_binary/f1": _t(float("nan")), "damon_binary/precision": _t(float("nan")),
               "damon_binary/recall": _t(float("nan")), "damon_binary/images": _t(0)}
        if self.has_geodesic:
            out["damon_binary/fp_geo_cm"] = _t(float("nan"))
        if m == 0:
            return out
        res = _binary_summary(_unpack_bits(self._cat("hit"), m), _unpack_bits(self._cat("gt"), m), ids.tolist(),
                              self._geo())
        out.update({"damon_binary/f1": _t(res["f1"]), "damon_binary/precision": _t(res["precision"]),
                    "damon_binary/recall": _t(res["recall"]), "damon_binary/images": _t(len(res["image_names"]))})
        if self.has_geodesic:
            out["damon_binary/fp_geo_cm"] = _t(100.0 * res["fp_geo"])
        return out


def _encode_name(owner: str, name: str) -> torch.Tensor:
    raw = name.lower().encode("utf-8")
    if len(raw) > NAME_BYTES:
        raise ValueError(f"{owner}.update: object name {name!r} is {len(raw)} UTF-8 bytes; at most {NAME_BYTES} "
                         f"are stored")
    return torch.from_numpy(np.frombuffer(raw.ljust(NAME_BYTES, b"\0"), dtype="<i8").astype(np.int64))


def _decode_names(codes: torch.Tensor, m: int) -> list[str]:
    rows = codes.reshape(m, NAME_BYTES // 8).numpy().astype("<i8")
    return [r.tobytes().rstrip(b"\0").decode("utf-8") for r in rows]


@register("metric", "damon_semantic")
class DamonSemanticContact(_DamonMetric):
    """InteractVLM's DAMON *semantic* contact: per-object and per-category tables of (image, object) entries.

    Reproduces InteractVLM's (CVPR 2025) semantic-contact evaluation on DAMON (its
    ``get_damon_semantic_contact``; the paper reports the weighted F1): :func:`damon_semantic_contact`
    as a metric. ``update(pred (B, V), target (B, V), object_name)`` with ``object_name`` the B object
    names (the batch's ``object_name`` in DAMON's ``contact_mode=semantic``, passed by the System
    because ``batch_keys = ("object_name",)``). Each entry keeps its TP, |P|, |G| and its object name
    (lower-cased UTF-8 bytes, at most 64), so the rows of every process gather into one table.

    ``compute()`` returns ``"damon_semantic/weighted_f1"`` (the mean per-entry F1 under the
    ``interactvlm`` rules), and per object ``"damon_semantic/object/<name>/{n,f1,precision,recall}"``
    and per category of :data:`DAMON_CATEGORIES` present ``"damon_semantic/category/<name>/{...}"``
    (precision and recall pooled over the row's entries, thresholded); with ``geodesic`` or
    ``body_model`` also ``.../fp_geo_cm`` per row and ``"damon_semantic/weighted_fp_geo_cm"``.
    """

    main_key = "damon_semantic/weighted_f1"
    batch_keys = ("object_name",)
    _states = ("tp", "pp", "gp", "object_code")

    def __init__(self, threshold: float = 0.5, geodesic: torch.Tensor | str | None = None,
                 body_model: dict | None = None, method: Literal["exact", "edges"] = "exact") -> None:
        super().__init__(threshold, geodesic, body_model, method)

    def update(self, pred: torch.Tensor, target: torch.Tensor, object_name: Sequence[str]) -> None:
        """Add a batch: (B, V) contact probabilities, (B, V) 0/1 labels and the B object names."""
        hit, gt, prob = self._rows(pred, target)
        names = _names("DamonSemanticContact", "object_name", object_name, hit.shape[0])
        codes = [_encode_name("DamonSemanticContact", n) for n in names]
        self._add_geo(prob, gt)
        self.object_code.append(torch.cat(codes).to(self.device) if codes else torch.zeros(0, dtype=torch.int64,
                                                                                              device=self.device))
        self.tp.append((hit & gt).sum(1).to(torch.int64).to(self.device))
        self.pp.append(hit.sum(1).to(torch.int64).to(self.device))
        self.gp.append(gt.sum(1).to(torch.int64).to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        """The semantic tables as flat keys (see the class docstring); only weighted_f1 (NaN) before any update."""
        tp = self._cat("tp").numpy().astype(np.float64)
        m = tp.size
        geo = self._geo()
        if m == 0:
            out = {"damon_semantic/weighted_f1": _t(float("nan"))}
            if geo is not None:
                out["damon_semantic/weighted_fp_geo_cm"] = _t(float("nan"))
            return out
        res = _semantic_summary(_decode_names(self._cat("object_code"), m), tp,
                                self._cat("pp").numpy().astype(np.float64), self._cat("gp").numpy().astype(np.float64),
                                geo, None)
        out = {"damon_semantic/weighted_f1": _t(res["weighted_f1"])}
        if geo is not None:
            out["damon_semantic/weighted_fp_geo_cm"] = _t(100.0 * res["weighted_fp_geo"])
        for group, names, table in (("object", res["objects"], res["table"]),
                                    ("category", res["category_names"], res["category_table"])):
            for name, row in zip(names, table, strict=True):
                base = f"damon_semantic/{group}/{name}"
                out.update({f"{base}/n": _t(row[0]), f"{base}/f1": _t(row[1]), f"{base}/precision": _t(row[2]),
                            f"{base}/recall": _t(row[3])})
                if geo is not None:
                    out[f"{base}/fp_geo_cm"] = _t(100.0 * row[4])
        return out
