"""AffordanceMetrics: hand-computed SIM / MAE / AUC / aIoU, IAGNet's and InteractVLM's skipping rules, exact merging."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from zoo.core import registry
from zoo.metrics.affordance import (
    IOU_THRESHOLDS,
    AffordanceMetrics,
    affordance_per_class,
    affordance_scores_per_sample,
    roc_auc_per_sample,
)

# Sample A: pred (0.8, 0.4, 0.4, 0.1), gt (1, 0.6, 0.2, 0) -> binarised (1, 1, 0, 0)
#   SIM: p / 1.7 = (8, 4, 4, 1) / 17, g / 1.8 = (5/9, 1/3, 1/9, 0); min sum = 8/17 + 4/17 + 1/9 = 125/153
#   MAE: (0.2 + 0.2 + 0.2 + 0.1) / 4 = 0.175
#   AUC: pairs (pos, neg): (0.8, 0.4) 1, (0.8, 0.1) 1, (0.4, 0.4) tie 0.5, (0.4, 0.1) 1 -> 3.5 / 4 = 0.875
#   aIoU over t = k/19: k = 0, 1 -> all 4 predicted, IoU 2/4; k = 2..7 (t <= 0.368) -> 3 predicted, IoU 2/3;
#        k = 8..15 (t <= 0.789) -> only 0.8, IoU 1/2; k = 16..19 -> none, IoU 0.  (1 + 4 + 4 + 0) / 20 = 0.45
# Sample B: gt all zero -> SIM 0 (g / (0 + 1e-12) = 0), MAE 0.25, AUC and aIoU undefined (skipped)
# Sample C: pred all zero, gt (1, 0, 0, 0) -> SIM 0, MAE 0.25, AUC 0.5 (all tied),
#        aIoU: t = 0 predicts all 4 -> 1/4, every other threshold predicts none -> 0; mean 0.0125
PRED = torch.tensor([[0.8, 0.4, 0.4, 0.1], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
GT = torch.tensor([[1.0, 0.6, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


def test_per_sample_hand_values():
    s = affordance_scores_per_sample(PRED, GT)
    assert s["sim"].tolist() == pytest.approx([125 / 153, 0.0, 0.0], abs=1e-7)
    assert s["mae"].tolist() == pytest.approx([0.175, 0.25, 0.25], abs=1e-7)
    assert s["auc"][0].item() == pytest.approx(0.875) and s["auc"][2].item() == pytest.approx(0.5)
    assert torch.isnan(s["auc"][1]) and torch.isnan(s["aiou"][1])
    assert s["aiou"][0].item() == pytest.approx(0.45) and s["aiou"][2].item() == pytest.approx(0.0125)


def test_metric_means_skip_undefined_samples():
    m = AffordanceMetrics()
    m.update(PRED, GT)
    out = m.compute()
    assert out["sim"].item() == pytest.approx(125 / 153 / 3, abs=1e-9)
    assert out["mae"].item() == pytest.approx(0.225, abs=1e-9)
    assert out["auc"].item() == pytest.approx((0.875 + 0.5) / 2, abs=1e-9)
    assert out["aiou"].item() == pytest.approx((0.45 + 0.0125) / 2, abs=1e-9)
    assert set(out) == {"sim", "mae", "auc", "aiou"}


def test_all_positive_gt_skips_auc_keeps_aiou():
    m = AffordanceMetrics()
    m.update(torch.tensor([[0.9, 0.3]]), torch.tensor([[1.0, 0.7]]))
    out = m.compute()
    assert torch.isnan(out["auc"]) and m.auc_count.item() == 0
    # t = k/19: both predicted for k <= 5 (0.263 <= 0.3) -> IoU 1; k = 6..17 (t <= 0.895) -> 1/2; k = 18, 19 -> 0
    assert out["aiou"].item() == pytest.approx((6 * 1 + 12 * 0.5) / 20)


def test_sim_is_one_for_proportional_maps_and_empty_metric_is_nan():
    s = affordance_scores_per_sample(torch.tensor([[0.2, 0.4, 0.0]]), torch.tensor([[0.5, 1.0, 0.0]]))
    assert s["sim"].item() == pytest.approx(1.0, abs=1e-9)
    assert all(torch.isnan(v) for v in AffordanceMetrics().compute().values())


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (6, 40), generator=g).double() / 4  # many ties
    labels = torch.rand(6, 40, generator=g) > 0.6
    auc = roc_auc_per_sample(scores, labels)
    for i in range(6):
        assert auc[i].item() == pytest.approx(_pairwise_auc(scores[i].numpy(), labels[i].numpy()), abs=1e-12)


def test_auc_matches_sklearn_when_available():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 10, (4, 64), generator=g).double() / 9
    labels = torch.rand(4, 64, generator=g) > 0.5
    auc = roc_auc_per_sample(scores, labels)
    for i in range(4):
        assert auc[i].item() == pytest.approx(metrics.roc_auc_score(labels[i].numpy(), scores[i].numpy()), abs=1e-12)


def test_merged_states_equal_single_pass():
    g = torch.Generator().manual_seed(2)
    pred = torch.rand(10, 64, generator=g)
    gt = torch.rand(10, 64, generator=g) ** 3
    gt[3] = 0.0  # an all-negative sample on one "rank"
    full = AffordanceMetrics()
    full.update(pred[:4], gt[:4])
    full.update(pred[4:], gt[4:])
    a, b = AffordanceMetrics(), AffordanceMetrics()
    a.update(pred[:3], gt[:3])
    b.update(pred[3:7], gt[3:7])
    b.update(pred[7:], gt[7:])
    a.merge_state(b)
    ra, rf = a.compute(), full.compute()
    for k in rf:
        assert ra[k].item() == pytest.approx(rf[k].item(), abs=1e-12)
    assert a.count.item() == 10 and a.auc_count.item() == 9


def test_errors_name_the_sample():
    m = AffordanceMetrics()
    with pytest.raises(ValueError, match=r"expected pred and target of the same shape \(B, N\), got pred \(2, 3\) "
                                         r"and target \(2, 4\)"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"pred must be a heatmap in \[0, 1\]; sample 1 has value 1.5"):
        m.update(torch.tensor([[0.0, 1.0], [1.5, 0.0]]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"target must be a heatmap in \[0, 1\]; sample 0 has value nan"):
        m.update(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]))


def test_registry_lookup():
    assert registry.get("metric", "affordance") is AffordanceMetrics


def test_interactvlm_drops_single_class_samples_from_all_four():
    # PRED / GT above plus sample D with an all-positive GT (aIoU defined under IAGNet's rules)
    pred = torch.cat([PRED, torch.tensor([[0.9, 0.3, 0.0, 0.0]])])
    gt = torch.cat([GT, torch.tensor([[1.0, 0.7, 0.5, 0.6]])])
    s = affordance_scores_per_sample(pred, gt, "interactvlm")
    assert s["valid"].tolist() == [True, False, True, False]
    assert torch.isnan(s["aiou"][3]) and not torch.isnan(affordance_scores_per_sample(pred, gt)["aiou"][3])
    m = registry.build("metric", {"name": "affordance", "convention": "interactvlm"})
    m.update(pred, gt)
    out = m.compute()
    assert m.count.item() == 2 and m.auc_count.item() == 2 and m.aiou_count.item() == 2
    assert out["sim"].item() == pytest.approx(125 / 153 / 2, abs=1e-9)  # samples A and C only
    assert out["mae"].item() == pytest.approx((0.175 + 0.25) / 2, abs=1e-7)  # float32 inputs
    assert out["auc"].item() == pytest.approx((0.875 + 0.5) / 2, abs=1e-9)
    assert out["aiou"].item() == pytest.approx((0.45 + 0.0125) / 2, abs=1e-9)
    iag = AffordanceMetrics()
    iag.update(pred, gt)
    assert iag.count.item() == 4 and iag.aiou_count.item() == 3
    with pytest.raises(ValueError, match=r"convention must be one of 'iagnet', 'interactvlm', got 'deco'"):
        AffordanceMetrics(convention="deco")


def test_iou_thresholds_compare_in_float32():
    # k/19 rounded to float32: a float32 prediction equal to that value counts at threshold k/19
    assert IOU_THRESHOLDS.dtype == torch.float32 and IOU_THRESHOLDS.numel() == 20
    t = IOU_THRESHOLDS[7]
    s = affordance_scores_per_sample(torch.tensor([[t.item(), 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert s["aiou"].item() == pytest.approx((1 * 0.5 + 7 * 1.0 + 12 * 0.0) / 20)  # k=0: both predicted


def test_merged_states_equal_single_pass_interactvlm():
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(9, 32, generator=g)
    gt = torch.rand(9, 32, generator=g) ** 3
    gt[2] = 0.0
    gt[6] = 1.0
    full = AffordanceMetrics("interactvlm")
    full.update(pred, gt)
    a, b = AffordanceMetrics("interactvlm"), AffordanceMetrics("interactvlm")
    a.update(pred[:4], gt[:4])
    b.update(pred[4:], gt[4:])
    a.merge_state(b)
    for k, v in full.compute().items():
        assert a.compute()[k].item() == pytest.approx(v.item(), abs=1e-12)
    assert a.count.item() == 7


def test_per_class_table_hand_case():
    t = affordance_per_class(PRED, GT, ["x", "y", "x"], classes=["x", "y", "z"])
    assert t["columns"] == ["aiou", "sim", "auc", "mae"]
    np.testing.assert_allclose(t["table"][0], [(0.45 + 0.0125) / 2, 125 / 153 / 2, (0.875 + 0.5) / 2, 0.2125])
    assert np.isnan(t["table"][1, [0, 2]]).all() and t["table"][1, 1] == 0.0 and t["table"][1, 3] == 0.25
    assert np.isnan(t["table"][2]).all() and np.isnan(t["macro"]["sim"])  # a class without samples
