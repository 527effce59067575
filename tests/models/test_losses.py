"""Losses against values worked out by hand (small tensors, numbers derived in the comments)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.models.losses import (
    HumanContactLoss3D,
    MaskLoss2D,
    ObjectAffordanceLoss,
    dice_loss,
    focal_loss_probs,
    sigmoid_focal_loss,
    soft_dice_loss,
)

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
# Focal terms (alpha 0.25, gamma 2) used below:
#   logit 0, target 1:     p = 0.5,  bce = ln2, p_t = 0.5  -> 0.25 * 0.5^2 * ln2  = 0.0433217
#   logit ln3, target 0:   p = 0.75, bce = ln4, p_t = 0.25 -> 0.25 * 0.75^2 * ln4 = 0.1949477
F_A = 0.25 * 0.25 * LN2
F_B = 0.25 * 0.5625 * LN4


def test_sigmoid_focal_hand_values():
    logits = torch.tensor([[0.0, LN3, 5.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0, -1.0], [-1.0, -1.0, -1.0]])  # sample 1 is all ignored
    # mean: sample 0 -> (F_A + F_B) / 2, sample 1 -> 0 (no valid pixel), then mean over samples
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx((F_A + F_B) / 4, rel=1e-5)
    assert sigmoid_focal_loss(logits, targets, reduction="sum").item() == pytest.approx(F_A + F_B, rel=1e-5)
    per_pixel = sigmoid_focal_loss(logits, targets, reduction="none")
    assert torch.allclose(per_pixel, torch.tensor([[F_A, F_B, 0.0], [0.0, 0.0, 0.0]]), atol=1e-6)
    # alpha is a plain scale (InteractVLM), gamma 0 gives alpha * BCE
    assert sigmoid_focal_loss(logits[:1, :1], targets[:1, :1], alpha=1.0, gamma=0.0).item() == pytest.approx(LN2, rel=1e-6)


def test_sigmoid_focal_soft_target_and_errors():
    # soft target 0.5 at logit 0: bce = ln2 (cross-entropy of 0.5 vs 0.5), p_t = 0.5
    v = sigmoid_focal_loss(torch.zeros(1, 1), torch.full((1, 1), 0.5)).item()
    assert v == pytest.approx(0.25 * 0.25 * LN2, rel=1e-5)
    with pytest.raises(ValueError, match=r"sigmoid_focal_loss: targets must be in \[0, 1\] \(or -1.0 = ignore\); "
                                         r"sample 1 has value 2.0"):
        sigmoid_focal_loss(torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"logits and targets must have the same shape, got \(2, 2\) and \(2, 3\)"):
        sigmoid_focal_loss(torch.zeros(2, 2), torch.zeros(2, 3))


def test_dice_hand_values():
    probs = torch.tensor([[0.5, 0.5, 0.9], [0.2, 0.2, 0.2]])
    targets = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    # sample 0 (valid: first two): inter 0.5, sum p 1.0, sum t 1 -> 1 - (1 + 1) / (2 + 1) = 1/3 with eps 1
    # sample 1: no positive target -> 0 (skipped, still counted)
    got = dice_loss(probs, targets, from_logits=False, eps=1.0)
    assert got.item() == pytest.approx((1 / 3) / 2, rel=1e-6)
    # without skipping: sample 1 = 1 - (0 + 1) / (0.6 + 1)
    got = dice_loss(probs, targets, from_logits=False, eps=1.0, skip_empty=False)
    assert got.item() == pytest.approx((1 / 3 + 1 - 1 / 1.6) / 2, rel=1e-6)
    # from logits with InteractVLM's eps 1e-5: p = (0.5, 0.75), t = (1, 0) -> 1 - (1 + e) / (2.25 + e)
    got = dice_loss(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]))
    assert got.item() == pytest.approx(1 - (1 + 1e-5) / (2.25 + 1e-5), rel=1e-6)
    # a perfect binary mask scores 0
    assert dice_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), from_logits=False).item() == 0.0


def test_mask_loss_2d_combines_terms():
    logits = torch.tensor([[[0.0, LN3]], [[3.0, -3.0]]])  # (N=2, H=1, W=2)
    targets = torch.tensor([[[1.0, 0.0]], [[-1.0, -1.0]]])
    out = MaskLoss2D()(logits, targets)  # focal alpha 0.5 -> twice the alpha-0.25 values
    focal = (2 * F_A + 2 * F_B) / 2 / 2
    dice = (1 - (1 + 1e-5) / (2.25 + 1e-5)) / 2
    assert out["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2.0 * focal + 1.0 * dice, rel=1e-5)
    # (N, 1, H, W) layout gives the same numbers
    out4 = MaskLoss2D()(logits[:, None], targets[:, None])
    assert out4["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_focal_probs_and_human_loss_hand_values():
    probs = torch.tensor([[0.5, 0.2]])
    targets = torch.tensor([[1.0, 0.0]])
    # p 0.5, t 1 -> F_A; p 0.2, t 0: bce = -ln 0.8, p_t = 0.8 -> 0.25 * 0.04 * (-ln 0.8)
    f2 = 0.25 * 0.04 * -math.log(0.8)
    assert focal_loss_probs(probs, targets).item() == pytest.approx((F_A + f2) / 2, rel=1e-5)
    out = HumanContactLoss3D()(probs, targets)
    assert out["focal"].item() == pytest.approx((F_A + f2) / 2, rel=1e-5)
    assert out["sparsity"].item() == pytest.approx(0.35, rel=1e-6)
    assert out["loss"].item() == pytest.approx(3.0 * ((F_A + f2) / 2 + 0.01 * 0.35), rel=1e-5)
    # probabilities of exactly 0 / 1 are clamped, so a confident mistake is large but finite
    hard = focal_loss_probs(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item()
    assert hard == pytest.approx(0.25 * (1 - 1e-6) ** 2 * -math.log(1e-6), rel=1e-4)


def test_object_affordance_loss_order_and_values():
    loss = ObjectAffordanceLoss()
    target = torch.tensor([[0.3, 0.7, 0.0, 1.0]])
    perfect = loss(target.clone(), target)
    assert perfect["loss"].item() == pytest.approx(0.0, abs=1e-7)  # the official code returned 0 always; ours only here
    wrong = loss(1 - target, target)
    assert wrong["loss"].item() > 0.5
    # hand case: pred (1, 0) vs target (0, 1): dice = 1 - e / (2 + e), mse = 1
    out = loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert out["dice"].item() == pytest.approx(1 - 1e-6 / (2 + 1e-6), rel=1e-6)
    assert out["mse"].item() == pytest.approx(1.0)
    # soft: pred (0.5, 0.5), target (1, 0): squared dice 1 - (1 + e) / (1.5 + e), mse 0.25; beta 2, weight 3
    out = ObjectAffordanceLoss(beta=2.0, weight=3.0)(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))
    d = 1 - (1 + 1e-6) / (1.5 + 1e-6)
    assert out["loss"].item() == pytest.approx(3.0 * (d + 2.0 * 0.25), rel=1e-6)
    # the plain Dice form is not minimised by a soft perfect prediction; the squared form is
    assert soft_dice_loss(target, target, squared=False).item() > 0.1
    assert soft_dice_loss(target, target, squared=True).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match=r"ObjectAffordanceLoss: targets must be in \[0, 1\].*sample 0 has value 1.5"):
        loss(torch.zeros(1, 2), torch.tensor([[0.0, 1.5]]))


def test_losses_backpropagate():
    logits = torch.randn(2, 8, 8, requires_grad=True)
    targets = (torch.rand(2, 8, 8) > 0.5).float()
    targets[0, :2] = -1
    MaskLoss2D()(logits, targets)["loss"].backward()
    assert logits.grad is not None and logits.grad[0, :2].abs().sum() == 0  # ignored pixels get no gradient
    assert logits.grad[0, 2:].abs().sum() > 0
