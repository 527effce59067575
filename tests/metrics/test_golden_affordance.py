"""Affordance metrics against the golden files made by running the official IAGNet and InteractVLM code.

Every input and expected value is read from tests/fixtures/golden/affordance_metrics_{iagnet,interactvlm}.npz
(layout and tolerances: tests/fixtures/golden/README.md), so another file set with the same layout
(other seeds and sizes) must pass as well.

aIoU thresholding: we compare in float32 (InteractVLM's torch code; IAGNet under NumPy 1.x), so
IAGNet values are checked against the ``*_numpy1`` arrays; the NumPy-2 (float64) arrays may differ
only on the samples whose predictions lie exactly on the threshold grid.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.core import registry
from zoo.metrics.affordance import AffordanceMetrics, affordance_per_class, affordance_scores_per_sample

TOL = 1e-6  # README: per-sample SIM, MAE, aIoU; overall, dataset and batch values
AUC_TOL = 1e-7  # README: AUC without sklearn
TABLE_TOL, TABLE_X100_TOL = 1e-5, 1e-4  # README: IAGNet's per-class tables


@pytest.fixture(scope="module")
def iag(golden_npz):
    return golden_npz("affordance_metrics_iagnet")


@pytest.fixture(scope="module")
def ivlm(golden_npz):
    return golden_npz("affordance_metrics_interactvlm")


def _close(ours, want, atol: float, what: str) -> None:
    ours, want = np.asarray(ours, np.float64), np.asarray(want, np.float64)
    assert ours.shape == want.shape, f"{what}: shape {ours.shape} != {want.shape}"
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(want), err_msg=f"{what}: NaN pattern")
    np.testing.assert_allclose(ours, want, rtol=0, atol=atol, equal_nan=True, err_msg=what)


def _batches(n: int) -> list[slice]:
    cuts = sorted({0, n // 3, n // 3 + 1, (2 * n) // 3, n})
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _per_sample(d: dict, convention: str) -> dict[str, np.ndarray]:
    s = affordance_scores_per_sample(torch.from_numpy(d["pred"]), torch.from_numpy(d["gt"]), convention)
    return {k: v.numpy() for k, v in s.items()}


def _metric(d: dict, convention: str) -> dict[str, float]:
    m = registry.build("metric", {"name": "affordance", "convention": convention})
    pred, gt = torch.from_numpy(d["pred"]), torch.from_numpy(d["gt"])
    for s in _batches(len(pred)):
        m.update(pred[s], gt[s])
    return {k: float(v) for k, v in m.compute().items()}


def test_inputs_are_shared(iag, ivlm):
    np.testing.assert_array_equal(iag["pred"], ivlm["pred"])
    np.testing.assert_array_equal(iag["gt"], ivlm["gt"])


# -------------------------------------------------------------------------------------------- IAGNet
def test_iagnet_per_sample(iag):
    s = _per_sample(iag, "iagnet")
    _close(s["sim"], iag["per_sample_sim"], TOL, "sim")
    _close(s["mae"], iag["per_sample_mae"], TOL, "mae")
    _close(s["auc"], iag["per_sample_auc"], AUC_TOL, "auc")
    _close(s["aiou"], iag["per_sample_aiou_numpy1"], TOL, "aiou (float32 thresholds)")


def test_iagnet_float64_thresholds_differ_only_on_the_grid(iag):
    s = _per_sample(iag, "iagnet")
    grid = np.char.startswith(iag["case"].astype(str), "pred_on_iou_threshold_grid")
    _close(s["aiou"][~grid], iag["per_sample_aiou"][~grid], TOL, "aiou off the grid (float64 thresholds)")
    differ = np.abs(np.nan_to_num(s["aiou"] - iag["per_sample_aiou"])) > TOL
    assert not differ[~grid].any()


def test_iagnet_overall(iag):
    out = _metric(iag, "iagnet")
    for k in ("sim", "mae", "auc"):
        _close(out[k], iag[f"overall_{k}"], TOL, f"overall_{k}")
    _close(out["aiou"], iag["overall_aiou_numpy1"], TOL, "overall_aiou (float32 thresholds)")
    assert AffordanceMetrics().convention == "iagnet"


def _np1_shift(iag: dict, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per class: nanmean of (float32 - float64 threshold aIoU), to move the stored NumPy-2 aIoU column
    of a table to the NumPy-1 (float32) setting we follow. Zero for classes without grid samples."""
    diff = iag["per_sample_aiou_numpy1"] - iag["per_sample_aiou"]
    out = np.zeros(len(classes))
    for i, c in enumerate(classes):
        v = diff[labels == c]
        v = v[~np.isnan(v)]
        out[i] = v.mean() if v.size else 0.0
    return out


def test_iagnet_per_affordance_table(iag):
    t = affordance_per_class(iag["pred"], iag["gt"], iag["affordance_label"], iag["affordance_list"])
    assert t["classes"] == iag["affordance_list"].tolist() and t["columns"] == ["aiou", "sim", "auc", "mae"]
    gold = iag["per_affordance_aiou_x100_sim_auc_x100_mae"]
    shift = _np1_shift(iag, iag["affordance_label"], iag["affordance_list"])
    _close(100 * t["table"][:, 0], gold[:, 0] + 100 * shift, TABLE_X100_TOL, "aIoU x100")
    _close(t["table"][:, 1], gold[:, 1], TABLE_TOL, "SIM")
    _close(100 * t["table"][:, 2], gold[:, 2], TABLE_X100_TOL, "AUC x100")
    _close(t["table"][:, 3], gold[:, 3], TABLE_TOL, "MAE")
    _close(100 * t["macro"]["aiou"], iag["affordance_macro_aiou_x100_numpy1"], TABLE_X100_TOL, "macro aIoU x100")
    _close(t["macro"]["sim"], iag["affordance_macro_sim"], TABLE_TOL, "macro SIM")
    _close(100 * t["macro"]["auc"], iag["affordance_macro_auc_x100"], TABLE_X100_TOL, "macro AUC x100")
    _close(t["macro"]["mae"], iag["affordance_macro_mae"], TABLE_TOL, "macro MAE")


def test_iagnet_per_object_table(iag):
    t = affordance_per_class(iag["pred"], iag["gt"], iag["object_label"], iag["object_list"])
    gold = iag["per_object_aiou_sim_auc_mae"]
    shift = _np1_shift(iag, iag["object_label"], iag["object_list"])
    _close(t["table"][:, 0], gold[:, 0] + shift, TABLE_TOL, "aIoU")
    _close(t["table"][:, 1:], gold[:, 1:], TABLE_TOL, "SIM, AUC, MAE")


# --------------------------------------------------------------------------------------- InteractVLM
def test_interactvlm_per_sample(ivlm):
    s = _per_sample(ivlm, "interactvlm")
    np.testing.assert_array_equal(s["valid"].astype(np.int64), ivlm["per_sample_valid"])
    _close(s["sim"], ivlm["per_sample_sim"], TOL, "sim")
    _close(s["mae"], ivlm["per_sample_mae"], TOL, "mae")
    _close(s["auc"], ivlm["per_sample_auc"], AUC_TOL, "auc")
    _close(s["aiou"], ivlm["per_sample_aiou"], TOL, "aiou")
    # what the official one-sample call returns: 0 instead of NaN for an invalid sample
    _close(np.nan_to_num(s["auc"]), ivlm["per_sample_auc_returned"], AUC_TOL, "auc returned")
    _close(np.nan_to_num(s["aiou"]), ivlm["per_sample_aiou_returned"], TOL, "aiou returned")


def test_interactvlm_batch_call(ivlm):
    """One official call on all N: SIM, MAE over all N; AUC, aIoU over the valid samples."""
    s = _per_sample(ivlm, "interactvlm")
    assert int(s["valid"].sum()) == int(ivlm["batch_call_valid_samples"])
    _close(s["sim"].mean(), ivlm["batch_call_sim"], TOL, "batch sim")
    _close(s["mae"].mean(), ivlm["batch_call_mae"], TOL, "batch mae")
    _close(np.nanmean(s["auc"]), ivlm["batch_call_auc"], TOL, "batch auc")
    _close(np.nanmean(s["aiou"]), ivlm["batch_call_aiou"], TOL, "batch aiou")


def test_interactvlm_dataset_level(ivlm):
    """evaluate.py at batch size 1: invalid samples dropped from all four means."""
    out = _metric(ivlm, "interactvlm")
    for k in ("sim", "mae", "auc", "aiou"):
        _close(out[k], ivlm[f"dataset_{k}"], TOL, f"dataset_{k}")
    m = AffordanceMetrics(convention="interactvlm")
    m.update(torch.from_numpy(ivlm["pred"]), torch.from_numpy(ivlm["gt"]))
    assert int(m.count) == int(ivlm["dataset_count"]) == int(m.auc_count) == int(m.aiou_count)


def test_conventions_differ_where_a_sample_is_invalid(iag, ivlm):
    valid = ivlm["per_sample_valid"].astype(bool)
    if valid.all():
        pytest.skip("no single-class sample in this file set")
    a, b = _metric(iag, "iagnet"), _metric(ivlm, "interactvlm")
    assert abs(a["sim"] - b["sim"]) > TOL
    _close(b["sim"], iag["per_sample_sim"][valid].mean(), TOL, "interactvlm SIM = IAGNet SIM over valid samples")
