"""Contact metrics against the golden files made by running the official DECO and InteractVLM code.

Every input and expected value is read from tests/fixtures/golden/contact_metrics_{deco,interactvlm}.npz
(layout and tolerances: tests/fixtures/golden/README.md), so another file set with the same layout
(other seeds and sizes) must pass as well. Where a file records a known official bug (InteractVLM's
swapped geodesic arguments, its unthresholded semantic precision), we match the correct value and
show that the recorded buggy one differs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.core import registry
from zoo.metrics.contact import (
    DAMON_CATEGORIES,
    ContactPRF,
    GeodesicError,
    contact_prf_per_image,
    damon_binary_contact,
    damon_semantic_contact,
    geodesic_error_per_image,
)

PRF_TOL = 1e-6  # README: P, R, F1 and pooled values
GEO_TOL = 1e-5  # README: geodesic values
VALIDATE_TOL = 1e-5  # README: InteractVLM's AverageMeter means (float32 sums, / (M + 1e-5))


@pytest.fixture(scope="module")
def deco(golden_npz):
    return golden_npz("contact_metrics_deco")


@pytest.fixture(scope="module")
def ivlm(golden_npz):
    return golden_npz("contact_metrics_interactvlm")


def _close(ours, want, atol: float, what: str) -> None:
    ours, want = np.asarray(ours, np.float64), np.asarray(want, np.float64)
    assert ours.shape == want.shape, f"{what}: shape {ours.shape} != {want.shape}"
    np.testing.assert_allclose(ours, want, rtol=0, atol=atol, err_msg=what)


def _batches(n: int) -> list[slice]:
    """Uneven consecutive batches covering n rows (states must add up across updates)."""
    cuts = sorted({0, n // 3, n // 3 + 1, (2 * n) // 3, n})
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _tensors(d: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(d["pred"]), torch.from_numpy(d["gt"]), torch.from_numpy(d["geodesic"])


# ---------------------------------------------------------------------------------------------- DECO
def test_deco_per_image_prf(deco):
    pred, gt, _ = _tensors(deco)
    p, r, f = contact_prf_per_image(pred, gt, 0.5, "deco")
    _close(p, deco["per_image_precision"], PRF_TOL, "precision")
    _close(r, deco["per_image_recall"], PRF_TOL, "recall")
    _close(f, deco["per_image_f1"], PRF_TOL, "f1")


def test_deco_per_image_geodesic(deco):
    pred, gt, dist = _tensors(deco)
    fp, fn = geodesic_error_per_image(dist, pred, gt, 0.5, "deco")
    _close(fp, deco["per_image_fp_geo"], GEO_TOL, "fp_geo")
    _close(fn, deco["per_image_fn_geo"], GEO_TOL, "fn_geo")


def test_deco_aggregates_from_metrics_built_by_the_registry(deco):
    pred, gt, dist = _tensors(deco)
    prf = registry.build("metric", {"name": "contact_prf", "threshold": 0.5, "convention": "deco"})
    geo = GeodesicError(dist, convention="deco")
    for s in _batches(len(pred)):
        prf.update(pred[s], gt[s])
        geo.update(pred[s], gt[s])
    out = prf.compute()
    g = geo.compute()
    for k in ("precision", "recall", "f1"):
        _close(out[k], deco[f"evaluator_{k}"], PRF_TOL, f"evaluator_{k}")
        _close(out[k], deco[f"challenge_{k}"], PRF_TOL, f"challenge_{k}")
    # GeodesicError reports cm; the golden values are in the matrix's units.
    _close(g["fp_geo_cm"] / 100, deco["evaluator_fp_geo"], GEO_TOL, "evaluator_fp_geo")
    _close(g["fn_geo_cm"] / 100, deco["evaluator_fn_geo"], GEO_TOL, "evaluator_fn_geo")
    _close(g["fp_geo_cm"] / 100, deco["challenge_fp_geo"], GEO_TOL, "challenge_fp_geo")


def test_deco_default_convention_is_deco(deco):
    pred, gt, _ = _tensors(deco)
    m = ContactPRF()
    assert m.convention == "deco"
    m.update(pred, gt)
    _close(m.compute()["precision"], deco["evaluator_precision"], PRF_TOL, "default convention")


# ---------------------------------------------------------------------------------------- InteractVLM
def test_interactvlm_per_entry_prf(ivlm):
    pred, gt, _ = _tensors(ivlm)
    p, r, f = contact_prf_per_image(pred, gt, 0.5, "interactvlm")
    _close(p, ivlm["per_entry_precision"], PRF_TOL, "precision")
    _close(r, ivlm["per_entry_recall"], PRF_TOL, "recall")
    _close(f, ivlm["per_entry_f1"], PRF_TOL, "f1")


def test_interactvlm_metric_means(ivlm):
    pred, gt, dist = _tensors(ivlm)
    prf = registry.build("metric", {"name": "contact_prf", "convention": "interactvlm"})
    geo = registry.build("metric", {"name": "contact_geodesic", "geodesic": dist, "convention": "interactvlm"})
    for s in _batches(len(pred)):
        prf.update(pred[s], gt[s])
        geo.update(pred[s], gt[s])
    out = prf.compute()
    for k in ("precision", "recall", "f1"):
        _close(out[k], ivlm[f"batch_call_{k}"], PRF_TOL, f"batch_call_{k}")
        _close(out[k], ivlm[f"validate_avg_{k}"], VALIDATE_TOL, f"validate_avg_{k}")
    # The geodesic mean is the signature-order (correct) value, not the validate_avg_geo that
    # evaluate.py logs from its swapped call (see test_interactvlm_geodesic_swapped_call_differs).
    _close(geo.compute()["fp_geo_cm"] / 100, ivlm["per_entry_geo_direct_fp"].mean(), GEO_TOL, "mean fp geo")


def test_conventions_differ_on_the_same_predictions(ivlm):
    """The DECO rules give other values on the same entries wherever a set is empty."""
    pred, gt, _ = _tensors(ivlm)
    p_deco = contact_prf_per_image(pred, gt, 0.5, "deco")[0].numpy()
    p_ivlm = contact_prf_per_image(pred, gt, 0.5, "interactvlm")[0].numpy()
    empty_pred = ~(ivlm["pred"] >= 0.5).any(1)
    if empty_pred.any():
        assert (p_deco[empty_pred] == 1).all() and (p_ivlm[empty_pred] == 0).all()
        assert not np.allclose(ivlm["per_entry_precision"], p_deco, atol=PRF_TOL)


def _swapped_geo(pred: np.ndarray, gt: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What evaluate.py's ``get_h_geo_metric(gt, pred)`` computes (README, file 4): columns are the
    vertices with pred == 1.0 exactly (all if none), rows the vertices with gt >= 0.5 (all if none);
    first value: mean over rows of the min over columns; second: mean over columns of the min over rows."""
    first, second = np.zeros(len(pred)), np.zeros(len(pred))
    for i, (p, g) in enumerate(zip(pred, gt, strict=True)):
        cols = np.flatnonzero(p == 1.0)
        rows = np.flatnonzero(g >= 0.5)
        block = dist[rows if rows.size else slice(None)][:, cols if cols.size else slice(None)]
        first[i] = block.min(1).astype(np.float64).mean()
        second[i] = block.min(0).astype(np.float64).mean()
    return first, second


def test_interactvlm_geodesic_signature_order(ivlm):
    pred, gt, dist = _tensors(ivlm)
    fp, fn = geodesic_error_per_image(dist, pred, gt, 0.5, "interactvlm")
    _close(fp, ivlm["per_entry_geo_direct_fp"], GEO_TOL, "direct fp")
    _close(fn, ivlm["per_entry_geo_direct_fn"], GEO_TOL, "direct fn")


def test_interactvlm_geodesic_swapped_call_differs(ivlm):
    """Known official bug: evaluate.py swaps the arguments. The golden 'eval_call' values follow the
    swapped rule (reproduced here from the inputs) and differ from ours."""
    pred, gt, dist = _tensors(ivlm)
    first, second = _swapped_geo(ivlm["pred"], ivlm["gt"], ivlm["geodesic"])
    _close(first, ivlm["per_entry_geo_eval_call"], GEO_TOL, "swapped call, first value")
    _close(second, ivlm["per_entry_geo_eval_call_second"], GEO_TOL, "swapped call, second value")
    _close(ivlm["per_entry_geo_eval_call"].mean(), ivlm["validate_avg_geo"], VALIDATE_TOL, "validate_avg_geo")
    ours = geodesic_error_per_image(dist, pred, gt, 0.5, "interactvlm")[0].numpy()
    assert np.abs(ours - ivlm["per_entry_geo_eval_call"]).max() > 10 * GEO_TOL
    assert abs(ours.mean() - float(ivlm["validate_avg_geo"])) > 10 * GEO_TOL


def test_damon_binary_contact(ivlm):
    b = damon_binary_contact(ivlm["pred"], ivlm["gt"], ivlm["image_name"], 0.5, geodesic=ivlm["geodesic"])
    assert b["image_names"] == ivlm["binary_image_order"].tolist()
    _close(b["per_image_f1"], ivlm["binary_per_image_f1"], PRF_TOL, "per-image f1")
    for k in ("precision", "recall", "f1"):
        _close(b[k], ivlm[f"binary_global_{k}"], PRF_TOL, f"binary_global_{k}")
    # geo: the max over each image's entries of the per-entry fp, in signature order (ours) ...
    names = ivlm["image_name"]
    direct = ivlm["per_entry_geo_direct_fp"]
    want = np.array([direct[names == n].max() for n in ivlm["binary_image_order"]])
    _close(b["per_image_fp_geo"], want, GEO_TOL, "per-image geo (signature order)")
    _close(b["fp_geo"], want.mean(), GEO_TOL, "binary geo (signature order)")
    # ... while the golden per-image geo is that max over the swapped-call values (the official bug).
    swapped = np.array([ivlm["per_entry_geo_eval_call"][names == n].max() for n in ivlm["binary_image_order"]])
    _close(swapped, ivlm["binary_per_image_geo"], GEO_TOL, "golden per-image geo = max of swapped call")
    _close(swapped.mean(), ivlm["binary_global_geo"], GEO_TOL, "golden binary geo")
    assert abs(b["fp_geo"] - float(ivlm["binary_global_geo"])) > 10 * GEO_TOL


def test_damon_semantic_contact(ivlm):
    s = damon_semantic_contact(ivlm["pred"], ivlm["gt"], ivlm["object_name"], 0.5, geodesic=ivlm["geodesic"])
    assert s["objects"] == ivlm["semantic_objects"].tolist()
    assert s["category_names"] == ivlm["category_names"].tolist()
    assert list(s["category_names"]) == [c for c in DAMON_CATEGORIES if c in s["category_names"]]
    for ours, gold, what in ((s["table"], ivlm["semantic_table_n_f1_precision_recall_geo"], "object"),
                             (s["category_table"], ivlm["category_table_n_f1_precision_recall_geo"], "category")):
        assert ours.shape == gold.shape, what
        np.testing.assert_array_equal(ours[:, 0], gold[:, 0], err_msg=f"{what}: num_samples")
        _close(ours[:, 1], gold[:, 1], PRF_TOL, f"{what}: mean F1")
    _close(s["weighted_f1"], ivlm["semantic_weighted_f1"], PRF_TOL, "weighted F1")
    _close(s["weighted_f1"], ivlm["per_entry_f1"].mean(), PRF_TOL, "weighted F1 = mean over entries")


def _group_rows(ivlm, groups: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(ours, buggy) [precision, recall, geo] per group of lower-cased object names, from the inputs."""
    names = np.char.lower(ivlm["object_name"])
    pred, gt = ivlm["pred"].astype(np.float64), ivlm["gt"]
    hit = pred >= 0.5
    ours, buggy = [], []
    for members in groups:
        sel = np.isin(names, members)
        p, g, h = pred[sel], gt[sel] > 0, hit[sel]
        tp = (h & g).sum()
        ours.append([tp / h.sum() if h.sum() else 0.0, tp / g.sum() if g.sum() else 0.0,
                     ivlm["per_entry_geo_direct_fp"][sel].mean()])
        raw_tp = ((p != 0) & g).sum()  # the official count: no threshold
        buggy.append([raw_tp / p.sum(), raw_tp / g.sum(), ivlm["per_entry_geo_eval_call"][sel].mean()])
    return np.array(ours), np.array(buggy)


def test_damon_semantic_precision_is_thresholded_and_the_official_unthresholded_one_differs(ivlm):
    """Known official bug: precision and recall on raw probabilities (and geo from the swapped call).
    The golden columns follow that rule (reproduced here from the inputs); ours threshold at 0.5."""
    s = damon_semantic_contact(ivlm["pred"], ivlm["gt"], ivlm["object_name"], 0.5, geodesic=ivlm["geodesic"])
    cases = (("object", s["table"], ivlm["semantic_table_n_f1_precision_recall_geo"], [[o] for o in s["objects"]]),
             ("category", s["category_table"], ivlm["category_table_n_f1_precision_recall_geo"],
              [list(DAMON_CATEGORIES[c]) for c in s["category_names"]]))
    for what, table, gold, groups in cases:
        ours, buggy = _group_rows(ivlm, groups)
        _close(table[:, 2:4], ours[:, :2], PRF_TOL, f"{what}: thresholded pooled P, R")
        _close(table[:, 4], ours[:, 2], GEO_TOL, f"{what}: geo (signature order)")
        _close(buggy[:, :2], gold[:, 2:4], PRF_TOL, f"{what}: golden P, R = unthresholded rule")
        _close(buggy[:, 2], gold[:, 4], GEO_TOL, f"{what}: golden geo = swapped call")
        assert np.abs(table[:, 2] - gold[:, 2]).max() > 10 * PRF_TOL, f"{what}: precision should differ"
        assert np.abs(table[:, 4] - gold[:, 4]).max() > 10 * GEO_TOL, f"{what}: geo should differ"
    weighted = (s["table"][:, 4] * s["table"][:, 0]).sum() / s["table"][:, 0].sum()
    _close(s["weighted_fp_geo"], weighted, GEO_TOL, "weighted geo")
    assert abs(s["weighted_fp_geo"] - float(ivlm["semantic_weighted_geo"])) > 10 * GEO_TOL
