"""Constant and class-prior contact baselines against hand-computed F1."""
import numpy as np
import pytest

from zoo.metrics.baselines import class_prior_contact_f1, constant_contact_f1


def test_constant_baseline_hand_computed():
    # 4 vertices; vertex 0 in contact in every training sample, vertex 1 in half of them
    train = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    test = np.array([[1, 0, 0, 0], [1, 1, 0, 0]])
    r = constant_contact_f1(train, test, thresholds=[0.4, 0.9])
    # t=0.4 predicts {0,1}: sample 1 P=1/2 R=1 F1=2/3, sample 2 P=R=F1=1 -> mean F1 5/6
    # t=0.9 predicts {0}:   sample 1 F1=1, sample 2 P=1 R=1/2 F1=2/3 -> mean 5/6 as well; first wins
    assert r["f1"] == pytest.approx(5 / 6)
    assert r["threshold"] == 0.4
    assert r["precision"] == pytest.approx((0.5 + 1) / 2)


def test_class_prior_beats_constant_when_classes_differ():
    train = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    test = np.array([[1, 0], [0, 1]])
    assert class_prior_contact_f1(train, ["a", "a", "b", "b"], test, ["a", "b"])["f1"] == pytest.approx(1.0)
    # the global map is 0.5 everywhere: at t <= 0.5 both vertices are predicted (F1 2/3 each)
    assert constant_contact_f1(train, test)["f1"] == pytest.approx(2 / 3)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"train and test must be \(N, V\) with the same V"):
        constant_contact_f1(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2 train rows but 1 classes"):
        class_prior_contact_f1(np.zeros((2, 3)), ["a"], np.zeros((1, 3)), ["a"])


def test_convention_passes_through():
    # one test sample without contact: DECO scores it P=1 (nothing predicted at t=0.9), InteractVLM P=0
    train = np.array([[1, 0], [0, 0]])
    test = np.array([[1, 0], [0, 0]])
    deco = constant_contact_f1(train, test, thresholds=[0.9])
    ivlm = constant_contact_f1(train, test, thresholds=[0.9], convention="interactvlm")
    assert deco["precision"] == pytest.approx(1.0) and ivlm["precision"] == pytest.approx(0.0)
    assert class_prior_contact_f1(train, ["a", "b"], test, ["a", "b"], convention="interactvlm")["f1"] == \
        pytest.approx(0.5, abs=1e-6)


def test_constant_affordance_hand_computed():
    from zoo.metrics.baselines import constant_affordance

    # two clouds of 4 points: gt (1, 0, 0, 0) and (0.5, 0.5, 0, 0)
    test = np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    r = constant_affordance(test, values=[0.25, 0.75])
    # a constant map is uniform: SIM = sum min(1/4, g / sum g) = 0.25 and 0.5 -> mean 0.375
    assert r["sim"] == pytest.approx(0.375)
    # MAE at 0.25: (0.75 + 3 * 0.25) / 4 = 0.375 and (2 * 0.25 + 2 * 0.25) / 4 = 0.25; at 0.75 larger
    assert r["mae"] == pytest.approx(0.3125) and r["value_mae"] == 0.25
    # any constant ranks every point alike: AUC 0.5
    assert r["auc"] == pytest.approx(0.5)
    # aIoU at c: thresholds t <= c (of linspace(0, 1, 20)) predict every point, IoU = |gt >= 0.5| / 4
    # -> 0.25 and 0.5; at c = 0.75: 15 of 20 thresholds -> 0.75 * 0.375
    assert r["aiou"] == pytest.approx(0.75 * 0.375) and r["value_aiou"] == 0.75
    with pytest.raises(ValueError, match=r"constant_affordance: test must be \(N, P\) heatmaps, got shape \(4,\)"):
        constant_affordance(np.zeros(4))
