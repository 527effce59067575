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
