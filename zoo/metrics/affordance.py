"""Object affordance metrics on point clouds: SIM, MAE, AUC, aIoU (PIAD, as IAGNet evaluates).

Conventions from IAGNet's evaluation (evalization.py and utils/eval.py in yyvhang/IAGNet):

* every score is computed per sample (one point cloud x one affordance), then averaged
  over samples (the "Overall" line it prints);
* SIM = sum_i min(p_i / (sum p + 1e-12), g_i / (sum g + 1e-12)), so an all-zero
  prediction or ground truth scores 0;
* MAE = sum_i |p_i - g_i| / N (N points);
* AUC = ROC-AUC of the scores against the ground truth binarised at ``>= 0.5``;
  aIoU = mean over thresholds linspace(0, 1, 20) of IoU(p >= thr, g >= 0.5). A sample
  whose binarised ground truth has no positive point gets NaN for both and is left out
  of their means (``np.nanmean``). IAGNet would crash on a sample whose ground truth is
  all positive (sklearn's roc_auc_score refuses one class); we leave its AUC out as well
  (its aIoU is well defined and kept).

AUC uses the rank (Mann-Whitney) form with average ranks for ties, equal to sklearn's
``roc_auc_score``. States are sums and counts reduced with ``sum``, so DDP (or
``merge_state``) gives exactly the single-process value. Values are fractions in [0, 1]
(papers print AUC and aIoU x 100).
"""
from __future__ import annotations

import torch
from torchmetrics import Metric

from zoo.core.registry import register
from zoo.metrics.contact import check_pair, first_bad

__all__ = ["AffordanceMetrics", "affordance_scores_per_sample", "roc_auc_per_sample", "IOU_THRESHOLDS"]

_EPS = 1e-12
IOU_THRESHOLDS = torch.linspace(0, 1, 20, dtype=torch.float64)


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


def affordance_scores_per_sample(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample {"sim", "mae", "auc", "aiou"} (each (B,) float64; auc/aiou NaN where undefined)."""
    p, g = _check(pred, target)
    sim = torch.minimum(p / (p.sum(1, keepdim=True) + _EPS), g / (g.sum(1, keepdim=True) + _EPS)).sum(1)
    mae = (p - g).abs().sum(1) / p.shape[1]
    gt = g >= 0.5
    auc = roc_auc_per_sample(p, gt)
    thr = IOU_THRESHOLDS.to(p.device)
    hit = p.unsqueeze(1) >= thr.view(1, -1, 1)  # (B, T, N)
    inter = (hit & gt.unsqueeze(1)).sum(2).to(torch.float64)
    union = (hit | gt.unsqueeze(1)).sum(2).to(torch.float64)
    aiou = (inter / union.clamp(min=1)).mean(1)
    has_pos = gt.any(1)
    aiou = torch.where(has_pos, aiou, torch.full_like(aiou, float("nan")))
    return {"sim": sim, "mae": mae, "auc": auc, "aiou": aiou}


@register("metric", "affordance")
class AffordanceMetrics(Metric):
    """PIAD affordance SIM / MAE / AUC / aIoU, per sample then averaged (IAGNet's evaluation).

    ``update(pred (B, N), target (B, N))`` with predicted and ground-truth heatmaps in [0, 1];
    ``compute() -> {"sim", "mae", "auc", "aiou"}`` (fractions; NaN before any update, and
    AUC / aIoU NaN when no sample had a usable ground truth).
    """

    is_differentiable = False
    higher_is_better = None  # MAE is lower-is-better, the rest higher
    full_state_update = False
    main_key = "auc"

    def __init__(self) -> None:
        super().__init__()
        for key in ("sim_sum", "mae_sum", "count", "auc_sum", "auc_count", "aiou_sum", "aiou_count"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted (B, N) and ground-truth (B, N) per-point heatmaps."""
        s = affordance_scores_per_sample(pred, target)
        self.sim_sum += s["sim"].sum().to(self.sim_sum)
        self.mae_sum += s["mae"].sum().to(self.mae_sum)
        self.count += float(s["sim"].numel())
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
