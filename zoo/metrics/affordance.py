"""Object affordance metrics on point clouds: SIM, MAE, AUC, aIoU (PIAD), under two conventions.

Per sample (one point cloud x one affordance), as IAGNet (yyvhang/IAGNet) and InteractVLM
(saidwivedi/InteractVLM) both compute them:

* SIM = sum_i min(p_i / (sum p + 1e-12), g_i / (sum g + 1e-12)), so an all-zero prediction
  or ground truth scores 0;
* MAE = sum_i |p_i - g_i| / N (N points);
* AUC = ROC-AUC of the scores against the ground truth binarised at ``>= 0.5`` (the rank /
  Mann-Whitney form with average ranks for ties, equal to sklearn's ``roc_auc_score``);
* aIoU = mean over thresholds t in linspace(0, 1, 20) of IoU(p >= t, g >= 0.5). The
  comparison runs in **float32** (predictions as float32 against the float32-rounded
  thresholds), as InteractVLM's torch code does and as IAGNet's numpy code did under NumPy 1.x,
  when both papers' tables were made. (IAGNet under NumPy >= 2 compares in float64; the two
  differ only for predictions lying exactly on a grid value k/19.)

The conventions differ in which samples count (``convention``):

==========================  =====================================  =====================================
sample                      ``iagnet`` (default)                   ``interactvlm``
==========================  =====================================  =====================================
binarised GT all negative   SIM, MAE kept; AUC, aIoU left out      left out of all four
binarised GT all positive   SIM, MAE, aIoU kept; AUC left out      left out of all four
means                       SIM, MAE over all samples; AUC, aIoU   all four over the samples whose
                            over the samples where defined         binarised GT has both classes
                            (``np.nanmean``)
==========================  =====================================  =====================================

(IAGNet's script would crash on an all-positive GT with the sklearn of its time; recent sklearn
returns NaN, which its nanmean drops: what we do.) States are sums and counts reduced with
``sum``, so DDP (or ``merge_state``) gives exactly the single-process value. Values are
fractions in [0, 1] (papers print AUC and aIoU x 100).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

from zoo.core.registry import register
from zoo.metrics.contact import check_convention, check_pair, first_bad

__all__ = ["AffordanceMetrics", "affordance_scores_per_sample", "affordance_per_class", "roc_auc_per_sample",
           "IOU_THRESHOLDS", "AFFORDANCE_CONVENTIONS"]

AFFORDANCE_CONVENTIONS = ("iagnet", "interactvlm")
_EPS = 1e-12
# k/19 for k = 0..19 in float64 (as np.linspace makes them), rounded to float32 for the comparison.
IOU_THRESHOLDS = (torch.arange(20, dtype=torch.float64) * (1.0 / 19)).to(torch.float32)


def _check(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (B, N) heatmaps in [0, 1] and return them as float64."""
    pred, target = check_pair("AffordanceMetrics", pred, target, n="N")
    out = []
    for name, t in (("pred", pred), ("target", target)):
        t = t.to(torch.float64)
        hit = first_bad(t, ~((t >= 0) & (t <= 1)))  # also NaN
        if hit is not None:
            raise ValueError(f"AffordanceMetrics.update: {name} must be a heatmap in [0, 1]; sample {hit[0]} has "
                             f"value {hit[1]}")
        out.append(t)
    return out[0], out[1]


def roc_auc_per_sample(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ROC-AUC of each row (B,) with average ranks for ties; NaN where a row has one class only."""
    s = scores.to(torch.float64)
    y = labels.bool()
    srt, _ = torch.sort(s, dim=1)
    # 1-based average rank of each value among its row: (#less + #less-or-equal + 1) / 2.
    less = torch.searchsorted(srt, s, right=False).to(torch.float64)
    leq = torch.searchsorted(srt, s, right=True).to(torch.float64)
    ranks = (less + leq + 1.0) / 2.0
    n_pos = y.sum(1).to(torch.float64)
    n_neg = y.shape[1] - n_pos
    u = (ranks * y).sum(1) - n_pos * (n_pos + 1) / 2
    auc = u / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def affordance_scores_per_sample(pred: torch.Tensor, target: torch.Tensor,
                                 convention: str = "iagnet") -> dict[str, torch.Tensor]:
    """Per-sample {"sim", "mae", "auc", "aiou"} (each (B,) float64) and "valid" (B,) bool.

    ``valid``: the binarised GT has both classes. AUC is NaN where it is not; aIoU is NaN where
    the binarised GT has no positive point (``iagnet``) or where the sample is not valid
    (``interactvlm``). SIM and MAE are always defined; under ``interactvlm`` the metric leaves
    the invalid samples out of them too (see the module docstring).
    """
    check_convention("AffordanceMetrics", convention, AFFORDANCE_CONVENTIONS)
    p, g = _check(pred, target)
    sim = torch.minimum(p / (p.sum(1, keepdim=True) + _EPS), g / (g.sum(1, keepdim=True) + _EPS)).sum(1)
    mae = (p - g).abs().sum(1) / p.shape[1]
    gt = g >= 0.5
    auc = roc_auc_per_sample(p, gt)
    thr = IOU_THRESHOLDS.to(p.device)
    hit = p.to(torch.float32).unsqueeze(1) >= thr.view(1, -1, 1)  # (B, T, N), compared in float32
    inter = (hit & gt.unsqueeze(1)).sum(2).to(torch.float64)
    union = (hit | gt.unsqueeze(1)).sum(2).to(torch.float64)
    aiou = (inter / union.clamp(min=1)).mean(1)
    has_pos = gt.any(1)
    valid = has_pos & ~gt.all(1)
    keep = has_pos if convention == "iagnet" else valid
    aiou = torch.where(keep, aiou, torch.full_like(aiou, float("nan")))
    return {"sim": sim, "mae": mae, "auc": auc, "aiou": aiou, "valid": valid}


@register("metric", "affordance")
class AffordanceMetrics(Metric):
    """PIAD affordance SIM / MAE / AUC / aIoU, per sample then averaged.

    ``update(pred (B, N), target (B, N))`` with predicted and ground-truth heatmaps in [0, 1];
    ``compute() -> {"sim", "mae", "auc", "aiou"}`` (fractions; NaN before any update, and
    NaN for a value no sample could define).

    ``convention`` (module docstring has the table):

    * ``iagnet`` (default): reproduces IAGNet's (ICCV 2023) PIAD comparison (the "Overall"
      AUC / aIoU / SIM / MAE of its ``evalization.py``, Seen and Unseen settings): SIM and MAE
      averaged over all samples, AUC and aIoU with ``np.nanmean`` (AUC undefined for a
      single-class GT, aIoU for a GT without positives). Its per-affordance and per-object
      breakdowns: :func:`affordance_per_class`.
    * ``interactvlm``: reproduces InteractVLM's (CVPR 2025) object-affordance numbers on PIAD
      (its ``evaluate.py`` at the default batch size 1; PIAD-Seen SIM 0.627, AUC 86.47,
      aIoU 21.20): a sample whose binarised GT has one class is skipped before any meter
      update, so it is left out of all four means, SIM and MAE included.
    """

    is_differentiable = False
    higher_is_better = None  # MAE is lower-is-better, the rest higher
    full_state_update = False
    main_key = "auc"
    convention_family = "affordance"  # ``convention=deco`` of an evaluation sets iagnet (zoo.metrics.conventions)

    def __init__(self, convention: str = "iagnet") -> None:
        super().__init__()
        self.convention = check_convention("AffordanceMetrics", convention, AFFORDANCE_CONVENTIONS)
        for key in ("sim_sum", "mae_sum", "count", "auc_sum", "auc_count", "aiou_sum", "aiou_count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted (B, N) and ground-truth (B, N) per-point heatmaps."""
        s = affordance_scores_per_sample(pred, target, self.convention)
        use = s["valid"] if self.convention == "interactvlm" else torch.ones_like(s["valid"])
        self.sim_sum += s["sim"][use].sum().to(self.sim_sum)
        self.mae_sum += s["mae"][use].sum().to(self.mae_sum)
        self.count += float(use.sum())
        for key in ("auc", "aiou"):
            v = s[key]
            ok = ~torch.isnan(v)
            getattr(self, f"{key}_sum").add_(v[ok].sum().to(self.sim_sum))
            getattr(self, f"{key}_count").add_(float(ok.sum()))

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean per-sample {"sim", "mae", "auc", "aiou"}."""
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.count.device)

        def mean(total: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            return total / n if n > 0 else nan.clone()

        return {"sim": mean(self.sim_sum, self.count), "mae": mean(self.mae_sum, self.count),
                "auc": mean(self.auc_sum, self.auc_count), "aiou": mean(self.aiou_sum, self.aiou_count)}


def affordance_per_class(pred, target, labels: Sequence, classes: Sequence[str] | None = None) -> dict:
    """IAGNet's per-class breakdown: for each class, [aIoU, SIM, AUC, MAE] over its samples.

    Reproduces the per-affordance and per-object tables that IAGNet's ``evalization.py`` prints
    (pass the affordance or the object name of each sample as ``labels``). AUC and aIoU are
    averaged with ``np.nanmean`` (``iagnet`` rules), SIM and MAE with a plain mean; a class
    without any defined value (or without samples) gets NaN. ``macro`` is the plain mean of the
    class rows (IAGNet's "average over affordances"; NaN if a row is). Values are fractions
    (IAGNet prints aIoU and AUC x 100).

    Returns ``classes`` (given, else sorted labels), ``table`` (C, 4) np.float64 with
    ``columns`` ["aiou", "sim", "auc", "mae"], and ``macro`` {column: float}.
    """
    pred = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
    target = target if isinstance(target, torch.Tensor) else torch.as_tensor(np.asarray(target))
    s = {k: v.numpy() for k, v in affordance_scores_per_sample(pred, target, "iagnet").items()}
    labels = np.asarray([str(x) for x in (labels.tolist() if isinstance(labels, np.ndarray) else labels)])
    if len(labels) != len(s["sim"]):
        raise ValueError(f"affordance_per_class: {len(s['sim'])} samples but {len(labels)} labels")
    classes = sorted(set(labels.tolist())) if classes is None else [str(c) for c in classes]
    columns = ["aiou", "sim", "auc", "mae"]
    table = np.full((len(classes), 4), np.nan)
    for i, c in enumerate(classes):
        sel = labels == c
        for j, k in enumerate(columns):
            v = s[k][sel]
            v = v[~np.isnan(v)]
            if v.size:
                table[i, j] = v.mean()
    return {"classes": classes, "columns": columns, "table": table,
            "macro": {k: float(table[:, j].mean()) if len(classes) else float("nan") for j, k in enumerate(columns)}}
