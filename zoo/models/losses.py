"""Losses of the Render-Localize-Lift models (InteractVLM eqs. 1-6).

The definitions follow InteractVLM's public code (model/losses.py in saidwivedi/InteractVLM):

* 2D focal BCE: per pixel ``alpha * (1 - p_t)^gamma * BCE`` with ``p_t = exp(-BCE)``, so
  ``alpha`` is a constant scale (not RetinaNet's class-balancing weight) and soft targets
  work; pixels labelled ``ignore_value`` (-1, the render background) are dropped; the mean
  is taken over a view's valid pixels, then over views.
* 2D Dice: per view over valid pixels ``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)``
  with eps 1e-5 (their ``dice_loss_scale`` is 1.0 in every released training setting); a
  view with no valid pixel or no positive target contributes 0 (and still counts in the
  mean), as theirs does.
* 2D heatmap MSE (objects): InteractVLM adds, for affordance heatmaps, the MSE between the
  predicted probabilities and the heatmap over each view's valid pixels, weighted like the
  focal term (2); ``MaskLoss2D(mse_weight=2)`` in the object recipes.
* Human 3D: focal BCE on per-vertex probabilities clamped to [1e-6, 1 - 1e-6]
  (alpha 0.25, gamma 2) plus ``sparsity * mean(C)``, times ``weight`` (3). Officially both
  means run over all vertices, those no view sees entering at the clamp value 1e-6
  (``vertices="all"``, the default); ``vertices="seen"`` averages over the seen ones only.
* Object 3D (paper eq. 6): Dice + beta * MSE on the lifted heatmap, the default. The released
  code's 3D affordance loss is a composite, ``3 x (0.5 focal + 0.3 (1.5 - Dice+ - Dice-) + 0.8 MSE
  + 0.4 L1)``, but it calls the point-cloud predictor with its arguments swapped, so the
  predictor skips every sample and returns all zeros (clamped to 1e-6): the loss is a
  constant (not zero) with zero gradient and never trains. :class:`ObjectAffordanceComposite3D`
  is that composite on the actual prediction, in working order.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sigmoid_focal_loss", "dice_loss", "focal_loss_probs", "soft_dice_loss",
    "MaskLoss2D", "HumanContactLoss3D", "ObjectAffordanceLoss", "ObjectAffordanceComposite3D",
]

Reduction = Literal["mean", "sum", "none"]
_CLAMP = 1e-6


def _same_shape(owner: str, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{owner}: {names[0]} and {names[1]} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 1:
        raise ValueError(f"{owner}: expected tensors with a leading sample dimension, got a scalar")


def _check_targets(owner: str, targets: torch.Tensor, ignore_value: float | None) -> torch.Tensor:
    """Valid-pixel mask; raises naming the sample if a valid target lies outside [0, 1]."""
    valid = targets != ignore_value if ignore_value is not None else torch.ones_like(targets, dtype=torch.bool)
    bad = valid & ~((targets >= 0) & (targets <= 1))
    if bad.any():
        i = int(bad.flatten(1).any(1).nonzero()[0]) if targets.ndim > 1 else 0
        raise ValueError(f"{owner}: targets must be in [0, 1] (or {ignore_value} = ignore); sample {i} has "
                         f"value {targets[bad][0].item()}")
    return valid


def _per_sample_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each sample's valid entries (0 for a sample with none)."""
    v = values.flatten(1) if values.ndim > 1 else values.unsqueeze(0)
    m = valid.flatten(1) if valid.ndim > 1 else valid.unsqueeze(0)
    m = m.to(v.dtype)
    return (v * m).sum(1) / m.sum(1).clamp(min=1)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       ignore_value: float | None = -1.0, reduction: Reduction = "mean") -> torch.Tensor:
    """Focal BCE on logits over valid pixels (targets == ``ignore_value`` excluded; soft targets allowed).

    Per pixel ``alpha * (1 - exp(-bce))**gamma * bce``. ``reduction``: "mean" = mean over each
    sample's (first dimension's) valid pixels, then over samples (InteractVLM's per-view
    mean); "sum" = sum over valid pixels; "none" = the per-pixel map with 0 at ignored pixels.
    """
    _same_shape("sigmoid_focal_loss", logits, targets, ("logits", "targets"))
    valid = _check_targets("sigmoid_focal_loss", targets, ignore_value)
    t = torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    loss = alpha * (1.0 - torch.exp(-bce)) ** gamma * bce
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return _per_sample_mean(loss, valid).mean()
    raise ValueError(f"sigmoid_focal_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dice_loss(logits_or_probs: torch.Tensor, targets: torch.Tensor, from_logits: bool = True,
              ignore_value: float | None = -1.0, eps: float = 1e-5, skip_empty: bool = True) -> torch.Tensor:
    """Soft Dice ``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)`` per sample over valid pixels, then mean.

    With ``skip_empty`` a sample without valid pixels or without any positive target
    contributes 0 (InteractVLM's rule: Dice says nothing useful about an empty mask; the
    focal term still does), and is still counted in the mean.
    """
    _same_shape("dice_loss", logits_or_probs, targets, ("predictions", "targets"))
    valid = _check_targets("dice_loss", targets, ignore_value)
    p = torch.sigmoid(logits_or_probs) if from_logits else logits_or_probs
    m = valid.to(p.dtype)
    t = torch.where(valid, targets, torch.zeros_like(targets)).to(p.dtype)
    if p.ndim == 1:
        p, t, m = p.unsqueeze(0), t.unsqueeze(0), m.unsqueeze(0)
    p, t, m = (p * m).flatten(1), t.flatten(1), m.flatten(1)
    inter = (p * t).sum(1)
    loss = 1.0 - (2.0 * inter + eps) / (p.sum(1) + t.sum(1) + eps)
    if skip_empty:
        empty = (m.sum(1) == 0) | (t.sum(1) == 0)
        loss = torch.where(empty, torch.zeros_like(loss), loss)
    return loss.mean()


def focal_loss_probs(probs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                     reduction: Reduction = "mean") -> torch.Tensor:
    """Focal BCE on probabilities (clamped to [1e-6, 1 - 1e-6]): ``alpha (1 - exp(-bce))^gamma bce``.

    For lifted per-vertex / per-point scores, which are already probabilities. The BCE is taken
    from their logits (``log p - log(1 - p)`` of the clamped float32 probabilities) with
    ``binary_cross_entropy_with_logits``: the probability form is refused under CUDA autocast.
    ``reduction``: "mean" over all entries, "sum", or "none".
    """
    _same_shape("focal_loss_probs", probs, targets, ("probs", "targets"))
    _check_targets("focal_loss_probs", targets, None)
    p = probs.float().clamp(_CLAMP, 1.0 - _CLAMP)
    logits = torch.log(p) - torch.log1p(-p)
    bce = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    loss = alpha * (1.0 - torch.exp(-bce)) ** gamma * bce
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"focal_loss_probs: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, squared: bool = True) -> torch.Tensor:
    """Dice between heatmaps in [0, 1], per sample then mean.

    ``squared`` uses ``sum p^2 + sum t^2`` in the denominator (V-Net's form), whose minimum
    is exactly ``p == t`` also for soft heatmaps; the plain form ``sum p + sum t`` is only
    minimised by ``p == t`` for binary targets.
    """
    _same_shape("soft_dice_loss", pred, target, ("pred", "target"))
    p = pred.flatten(1) if pred.ndim > 1 else pred.unsqueeze(0)
    t = (target.flatten(1) if target.ndim > 1 else target.unsqueeze(0)).to(p.dtype)
    den = (p * p).sum(1) + (t * t).sum(1) if squared else p.sum(1) + t.sum(1)
    return (1.0 - (2.0 * (p * t).sum(1) + eps) / (den + eps)).mean()


class MaskLoss2D(nn.Module):
    """Per-view 2D mask loss: ``focal_weight * focal + dice_weight * dice [+ mse_weight * mse]`` over valid pixels.

    ``forward(logits, targets)`` with logits and targets of the same shape (N, H, W) or
    (N, 1, H, W), targets in [0, 1] or ``ignore_value``; returns {loss, focal, dice} with the
    unweighted terms beside the weighted total. ``mse_weight`` > 0 adds InteractVLM's heatmap
    term for objects: the MSE between ``sigmoid(logits)`` and the targets over each view's valid
    pixels (a view without any counts 0), averaged over views, returned as ``mse`` (officially
    weighted by the focal weight, 2).
    """

    def __init__(self, focal_weight: float = 2.0, dice_weight: float = 1.0, alpha: float = 0.5, gamma: float = 2.0,
                 ignore_value: float = -1.0, eps: float = 1e-5, mse_weight: float = 0.0) -> None:
        super().__init__()
        self.focal_weight, self.dice_weight = float(focal_weight), float(dice_weight)
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.ignore_value, self.eps = float(ignore_value), float(eps)
        self.mse_weight = float(mse_weight)
        if self.mse_weight < 0:
            raise ValueError(f"MaskLoss2D: mse_weight must be >= 0, got {mse_weight}")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """{loss, focal, dice[, mse]} for mask logits and targets of the same shape."""
        focal = sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, self.ignore_value, "mean")
        dice = dice_loss(logits, targets, True, self.ignore_value, self.eps)
        out = {"loss": self.focal_weight * focal + self.dice_weight * dice, "focal": focal, "dice": dice}
        if self.mse_weight:
            valid = targets != self.ignore_value
            t = torch.where(valid, targets, torch.zeros_like(targets)).to(logits.dtype)
            sq = (torch.sigmoid(logits) - t) ** 2
            mse = _per_sample_mean(torch.where(valid, sq, torch.zeros_like(sq)), valid).mean()
            out["loss"] = out["loss"] + self.mse_weight * mse
            out["mse"] = mse
        return out


class HumanContactLoss3D(nn.Module):
    """Per-vertex contact loss ``weight * (focal(C, C_gt) + sparsity * mean|C|)`` on probabilities C.

    ``forward(probs (B, V), targets (B, V), seen=None)`` -> {loss, focal, sparsity} (unweighted
    terms). ``vertices``: ``all`` (InteractVLM) averages both terms over every vertex, those no
    view sees (score 0) entering at the clamp value 1e-6; ``seen`` averages over the vertices
    the (B, V) ``seen`` mask marks (all given ones without a mask). :class:`RenderLocalizeLift`
    passes every vertex and the seen mask (``takes_seen``).
    """

    takes_seen = True

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, sparsity: float = 0.01, weight: float = 3.0,
                 vertices: Literal["all", "seen"] = "all") -> None:
        super().__init__()
        if vertices not in ("all", "seen"):
            raise ValueError(f"HumanContactLoss3D: vertices must be 'all' or 'seen', got {vertices!r}")
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.sparsity, self.weight = float(sparsity), float(weight)
        self.vertices = vertices

    def forward(self, probs: torch.Tensor, targets: torch.Tensor,
                seen: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{loss, focal, sparsity} for lifted contact probabilities and 0/1 (or soft) labels."""
        focal = focal_loss_probs(probs, targets, self.alpha, self.gamma, reduction="none")
        l1 = probs.clamp(_CLAMP, 1.0 - _CLAMP).abs()
        if self.vertices == "seen" and seen is not None:
            try:
                m = torch.broadcast_to(seen, probs.shape).to(focal.dtype)
            except RuntimeError:
                raise ValueError(f"HumanContactLoss3D: seen must be a (B, V) or (V,) mask for probs of shape "
                                 f"{tuple(probs.shape)}, got {tuple(seen.shape)}") from None
            n = m.sum().clamp(min=1)
            focal, l1 = (focal * m).sum() / n, (l1 * m).sum() / n
        else:
            focal, l1 = focal.mean(), l1.mean()
        return {"loss": self.weight * (focal + self.sparsity * l1), "focal": focal, "sparsity": l1}


class ObjectAffordanceLoss(nn.Module):
    """Object affordance loss (InteractVLM eq. 6): ``weight * (Dice(pred, target) + beta * MSE(pred, target))``.

    ``forward(pred (B, P), target (B, P))``, both heatmaps in [0, 1], in that order. Dice is
    :func:`soft_dice_loss` (squared form by default, so a perfect soft heatmap gives exactly 0).
    Returns {loss, dice, mse}. (The released code trains objects with another loss that never
    trains, see :class:`ObjectAffordanceComposite3D`.)
    """

    def __init__(self, beta: float = 1.0, weight: float = 1.0, squared_dice: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.beta, self.weight = float(beta), float(weight)
        self.squared_dice, self.eps = bool(squared_dice), float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """{loss, dice, mse} for predicted and ground-truth affordance heatmaps."""
        _same_shape("ObjectAffordanceLoss", pred, target, ("pred", "target"))
        _check_targets("ObjectAffordanceLoss", target, None)
        dice = soft_dice_loss(pred, target, self.eps, self.squared_dice)
        mse = F.mse_loss(pred, target.to(pred.dtype))
        return {"loss": self.weight * (dice + self.beta * mse), "dice": dice, "mse": mse}


class ObjectAffordanceComposite3D(nn.Module):
    """InteractVLM's released 3D affordance loss, on the actual prediction (``loss_3d: focal_dice_mse_l1``).

    ``weight * (focal_weight * focal + dice_weight * dice + mse_weight * MSE + l1_weight * L1)`` on
    predictions p clamped to [1e-6, 1 - 1e-6], per sample over the points, then over samples:

    * focal: ``mean(-(1 - alpha) p^gamma (1 - t) log(1 - p) - alpha (1 - p)^gamma t log p)``
      (alpha 0.25 weights the positives, as in IAGNet's loss);
    * dice: ``1.5 - Dice+ - Dice-`` with ``Dice+ = (sum p t + 1e-6) / (sum (p + t) + 1e-6)`` and
      ``Dice- = (sum (1-p)(1-t) + 1e-6) / (sum (2 - p - t) + 1e-6)`` (no factor 2: each is at most 0.5,
      so the term is at least 0.5);
    * MSE and L1 between p and t.

    Defaults 0.5 / 0.3 / 0.8 / 0.4 and weight 3 are the release's. In the release the predictor gets
    its arguments swapped, returns all zeros and this loss is a constant with zero gradient; here it
    takes ``(pred, target)`` in that order and trains. Returns {loss, focal, dice, mse, l1}.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, focal_weight: float = 0.5, dice_weight: float = 0.3,
                 mse_weight: float = 0.8, l1_weight: float = 0.4, weight: float = 3.0) -> None:
        super().__init__()
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.focal_weight, self.dice_weight = float(focal_weight), float(dice_weight)
        self.mse_weight, self.l1_weight, self.weight = float(mse_weight), float(l1_weight), float(weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """{loss, focal, dice, mse, l1} for predicted and ground-truth affordance heatmaps (B, P)."""
        _same_shape("ObjectAffordanceComposite3D", pred, target, ("pred", "target"))
        _check_targets("ObjectAffordanceComposite3D", target, None)
        p = pred.float().clamp(_CLAMP, 1.0 - _CLAMP)  # float32: 1 - 1e-6 rounds to 1 in bf16 and log(1 - p) to -inf
        p, t = (p, target.float()) if p.ndim > 1 else (p.unsqueeze(0), target.float().unsqueeze(0))
        p, t = p.flatten(1), t.flatten(1)
        neg = -(1.0 - self.alpha) * p ** self.gamma * (1.0 - t) * torch.log(1.0 - p)
        pos = -self.alpha * (1.0 - p) ** self.gamma * t * torch.log(p)
        focal = (neg + pos).mean()
        d_pos = ((p * t).sum(1) + 1e-6) / ((p + t).sum(1) + 1e-6)
        d_neg = (((1.0 - p) * (1.0 - t)).sum(1) + 1e-6) / ((2.0 - p - t).sum(1) + 1e-6)
        dice = (1.5 - d_pos - d_neg).mean()
        mse = ((p - t) ** 2).mean()
        l1 = (p - t).abs().mean()
        total = (self.focal_weight * focal + self.dice_weight * dice + self.mse_weight * mse
                 + self.l1_weight * l1)
        return {"loss": self.weight * total, "focal": focal, "dice": dice, "mse": mse, "l1": l1}
