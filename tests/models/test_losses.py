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
    assert perfect["loss"].item() == pytest.approx(0.0, abs=1e-7)  # zero only for a perfect prediction
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


def test_mask_loss_2d_heatmap_mse_over_valid_pixels():
    # view 0: logits (0, ln3, ignored) vs heatmap (0.3, 1.0, -1): p = (0.5, 0.75) -> mse (0.04 + 0.0625) / 2
    # view 1: every pixel ignored -> 0, still counted in the mean over views
    logits = torch.tensor([[0.0, LN3, 4.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([[0.3, 1.0, -1.0], [-1.0, -1.0, -1.0]])
    plain = MaskLoss2D()(logits, targets)
    assert "mse" not in plain
    out = MaskLoss2D(mse_weight=2.0)(logits, targets)
    mse = (0.04 + 0.0625) / 2 / 2
    assert out["mse"].item() == pytest.approx(mse, rel=1e-5)
    assert out["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 * mse, rel=1e-5)
    logits.requires_grad_(True)
    MaskLoss2D(focal_weight=0.0, dice_weight=0.0, mse_weight=1.0)(logits, targets)["loss"].backward()
    assert logits.grad[0, 2] == 0 and logits.grad[1].abs().sum() == 0 and logits.grad[0, :2].abs().min() > 0
    with pytest.raises(ValueError, match="mse_weight must be >= 0"):
        MaskLoss2D(mse_weight=-1.0)


def test_human_loss_averages_over_all_vertices_officially():
    # 4 vertices, the last two unseen (score 0 -> clamped to 1e-6), labels (1, 0, 1, 0)
    probs = torch.tensor([[0.5, 0.2, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    seen = torch.tensor([True, True, False, False])
    f2 = 0.25 * 0.04 * -math.log(0.8)
    f_unseen_pos = 0.25 * (1 - 1e-6) ** 2 * -math.log(1e-6)  # a contact vertex no view sees
    f_unseen_neg = 0.25 * (1e-6) ** 2 * -math.log(1 - 1e-6)
    out = HumanContactLoss3D()(probs, targets, seen=seen)  # official: vertices="all"
    assert out["focal"].item() == pytest.approx((F_A + f2 + f_unseen_pos + f_unseen_neg) / 4, rel=1e-4)
    assert out["sparsity"].item() == pytest.approx((0.7 + 2e-6) / 4, rel=1e-5)
    seen_only = HumanContactLoss3D(vertices="seen")(probs, targets, seen=seen)
    assert seen_only["focal"].item() == pytest.approx((F_A + f2) / 2, rel=1e-5)
    assert seen_only["sparsity"].item() == pytest.approx(0.35, rel=1e-5)
    # a (B, V) mask per sample works the same
    per_sample = HumanContactLoss3D(vertices="seen")(probs, targets, seen=seen[None])
    assert per_sample["loss"].item() == pytest.approx(seen_only["loss"].item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"seen must be a \(B, V\) or \(V,\) mask for probs of shape \(1, 4\), got \(3,\)"):
        HumanContactLoss3D(vertices="seen")(probs, targets, seen=seen[:3])
    with pytest.raises(ValueError, match="vertices must be 'all' or 'seen', got 'visible'"):
        HumanContactLoss3D(vertices="visible")


def test_object_composite_hand_values_and_the_release_bug():
    from zoo.models.losses import ObjectAffordanceComposite3D

    loss = ObjectAffordanceComposite3D()
    pred, target = torch.tensor([[0.5, 0.2]]), torch.tensor([[1.0, 0.0]])
    # focal: point 0 (t=1): -0.25 * 0.5^2 * ln 0.5; point 1 (t=0): -0.75 * 0.2^2 * ln 0.8; mean of the two
    focal = (0.25 * 0.25 * LN2 + 0.75 * 0.04 * -math.log(0.8)) / 2
    d_pos = (0.5 + 1e-6) / (1.7 + 1e-6)  # sum p t / sum (p + t)
    d_neg = (0.8 + 1e-6) / (2.3 + 1e-6)  # sum (1-p)(1-t) / sum (2 - p - t)
    mse, l1 = (0.25 + 0.04) / 2, (0.5 + 0.2) / 2
    out = loss(pred, target)
    assert out["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert out["dice"].item() == pytest.approx(1.5 - d_pos - d_neg, rel=1e-5)
    assert out["mse"].item() == pytest.approx(mse, rel=1e-5) and out["l1"].item() == pytest.approx(l1, rel=1e-5)
    total = 3.0 * (0.5 * focal + 0.3 * (1.5 - d_pos - d_neg) + 0.8 * mse + 0.4 * l1)
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    # It trains: a better prediction has a lower loss, and the gradient is not zero.
    assert loss(torch.tensor([[0.9, 0.05]]), target)["loss"] < out["loss"]
    p = pred.clone().requires_grad_(True)
    loss(p, target)["loss"].backward()
    assert p.grad.abs().min() > 0
    # The release feeds it an all-zero prediction (arguments swapped): a constant, not zero, with zero gradient.
    zeros = torch.zeros(2, 6, requires_grad=True)
    heat = torch.rand(2, 6, generator=torch.Generator().manual_seed(0))
    released = loss(zeros, heat)["loss"]
    released.backward()
    assert released.item() > 0.5 and zeros.grad.abs().sum() == 0
