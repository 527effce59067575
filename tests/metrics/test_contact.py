"""Contact P/R/F1 and geodesic error against hand-computed cases, DECO's and InteractVLM's empty-set rules,
InteractVLM's DAMON tables on a small hand case, and DDP merging."""
import numpy as np
import pytest
import torch

from zoo.core import registry
from zoo.metrics.contact import (
    ContactPRF,
    GeodesicError,
    contact_prf_per_image,
    damon_binary_contact,
    damon_semantic_contact,
    geodesic_error_per_image,
)

# Six images over five vertices, one per convention (see each comment for the expected (P, R, F1)).
PRED = torch.tensor([
    [0.9, 0.5, 0.49, 0.1, 0.7],  # predicted {0, 1, 4} (0.5 counts), GT {0, 2}: tp 1 -> (1/3, 1/2, 0.4)
    [0.1, 0.2, 0.3, 0.4, 0.0],   # nothing predicted, GT {1}: (1, 0, 0)
    [0.6, 0.0, 0.0, 0.0, 0.0],   # predicted {0}, no GT: (0, 1, 0)
    [0.0, 0.0, 0.0, 0.0, 0.0],   # neither: DECO's empty-prediction branch fires first -> (1, 0, 0)
    [0.0, 0.0, 0.0, 0.0, 0.8],   # predicted {4}, GT {0}: tp 0 -> (0, 0, 0)
    [1.0, 1.0, 0.0, 0.0, 0.0],   # exact: (1, 1, 1)
])
GT = torch.tensor([
    [1, 0, 1, 0, 0],
    [0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [1, 0, 0, 0, 0],
    [1, 1, 0, 0, 0],
])
EXPECT_P = [1 / 3, 1, 0, 1, 0, 1]
EXPECT_R = [1 / 2, 0, 1, 0, 0, 1]
EXPECT_F = [0.4, 0, 0, 0, 0, 1]

# A 4-vertex path 0 -(1 cm)- 1 -(2 cm)- 2 -(3 cm)- 3, distances in metres.
PATH_D = torch.tensor([
    [0.00, 0.01, 0.03, 0.06],
    [0.01, 0.00, 0.02, 0.05],
    [0.03, 0.02, 0.00, 0.03],
    [0.06, 0.05, 0.03, 0.00],
])


def _rows(*sets, v=4):
    out = torch.zeros(len(sets), v)
    for i, s in enumerate(sets):
        out[i, list(s)] = 1.0
    return out


def test_prf_per_image_hand_cases():
    p, r, f = contact_prf_per_image(PRED, GT)
    torch.testing.assert_close(p, torch.tensor(EXPECT_P, dtype=torch.float64))
    torch.testing.assert_close(r, torch.tensor(EXPECT_R, dtype=torch.float64))
    torch.testing.assert_close(f, torch.tensor(EXPECT_F, dtype=torch.float64))


def test_prf_metric_averages_over_images_and_accepts_bool_targets():
    m = ContactPRF()
    m.update(PRED[:4], GT[:4].bool())
    m.update(PRED[4:], GT[4:].float())
    out = m.compute()
    assert set(out) == {"precision", "recall", "f1"}
    torch.testing.assert_close(out["precision"], torch.tensor(5 / 9, dtype=torch.float64))
    torch.testing.assert_close(out["recall"], torch.tensor(5 / 12, dtype=torch.float64))
    torch.testing.assert_close(out["f1"], torch.tensor(7 / 30, dtype=torch.float64))
    m.reset()
    with pytest.warns(UserWarning, match=r"compute.*called before the ..update"):
        assert torch.isnan(m.compute()["f1"])


def test_prf_threshold_is_inclusive():
    m = ContactPRF(threshold=0.3)
    m.update(torch.tensor([[0.3, 0.29]]), torch.tensor([[1, 1]]))
    out = m.compute()
    assert out["precision"].item() == 1.0 and out["recall"].item() == 0.5
    assert out["f1"].item() == pytest.approx(2 / 3)


def test_prf_bad_input_messages():
    m = ContactPRF()
    with pytest.raises(ValueError, match=r"expected pred and target of the same shape \(B, V\), got pred \(2, 5\) "
                                         r"and target \(2, 4\)"):
        m.update(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\] \(apply sigmoid to logits\); sample 1 has value 2.5"):
        m.update(torch.tensor([[0.1, 0.2], [2.5, 0.0]]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"binary 0/1 contact labels; sample 0 has value 0.5"):
        m.update(torch.zeros(2, 2), torch.tensor([[0.5, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 1.5"):
        ContactPRF(threshold=1.5)


def test_geodesic_path_graph_by_hand():
    fp, fn = geodesic_error_per_image(PATH_D, _rows({0}, {0, 1}), _rows({3}, {1, 2, 3}))
    # image 0: the only predicted vertex is 6 cm from the only GT vertex, both ways
    # image 1: fp = (d(0,1) + 0) / 2 = 0.5 cm; fn = (0 + d(1,2) + d(1,3)) / 3 = (0 + 2 + 5) / 3 cm
    torch.testing.assert_close(fp, torch.tensor([0.06, 0.005], dtype=torch.float64))
    torch.testing.assert_close(fn, torch.tensor([0.06, 0.07 / 3], dtype=torch.float64))
    m = GeodesicError(PATH_D)
    m.update(_rows({0}, {0, 1}), _rows({3}, {1, 2, 3}))
    out = m.compute()
    assert out["fp_geo_cm"].item() == pytest.approx((6 + 0.5) / 2)
    assert out["fn_geo_cm"].item() == pytest.approx((6 + 7 / 3) / 2)


def test_geodesic_orientation_pred_subset_of_gt():
    # Predicting part of the GT contact: no false positive distance, only misses.
    m = GeodesicError(PATH_D)
    m.update(_rows({1}), _rows({1, 2}))
    out = m.compute()
    assert out["fp_geo_cm"].item() == 0.0
    assert out["fn_geo_cm"].item() == pytest.approx(1.0)  # (0 + 2 cm) / 2
    # and the reverse (GT subset of pred) only has false-positive distance
    m.reset()
    m.update(_rows({1, 2}), _rows({1}))
    out = m.compute()
    assert out["fp_geo_cm"].item() == pytest.approx(1.0) and out["fn_geo_cm"].item() == 0.0


def test_geodesic_empty_sets_follow_deco():
    # DECO substitutes all vertices for an empty set.
    fp, fn = geodesic_error_per_image(PATH_D, _rows(set(), {0}, set()), _rows({3}, set(), set()))
    # no prediction, GT {3}: fp = mean_v d(v, 3) = (6 + 5 + 3 + 0) / 4 cm, fn = 0
    # prediction {0}, no GT: fp = 0, fn = mean_v d(v, 0) = (0 + 1 + 3 + 6) / 4 cm
    # neither: 0, 0
    torch.testing.assert_close(fp, torch.tensor([0.035, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(fn, torch.tensor([0.0, 0.025, 0.0], dtype=torch.float64))


def test_geodesic_from_npy_and_errors(tmp_path):
    f = tmp_path / "geo.npy"
    np.save(f, PATH_D.double().numpy())
    m = registry.build("metric", {"name": "contact_geodesic", "geodesic": str(f)})
    assert isinstance(m, GeodesicError) and m.geodesic.dtype == torch.float32
    assert "geodesic" not in m.state_dict()  # large matrix stays out of checkpoints
    m.update(_rows({0}), _rows({3}))
    assert m.compute()["fp_geo_cm"].item() == pytest.approx(6.0)
    with pytest.raises(FileNotFoundError, match=r"geodesic distance matrix not found: .*nope.npy \(expected a .npy"):
        GeodesicError(str(tmp_path / "nope.npy"))
    np.save(f, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"geo.npy must be a square \(V, V\) matrix, got shape \(3, 4\)"):
        GeodesicError(str(f))
    with pytest.raises(ValueError, match=r"non-zero diagonal \(max \|D\[i,i\]\| = 1.0\)"):
        GeodesicError(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"geodesic matrix is for 4 vertices but pred/target have V=5"):
        GeodesicError(PATH_D).update(torch.zeros(1, 5), torch.zeros(1, 5))


def test_metric_states_merge_like_ddp():
    """Two ranks' states merged (what the sum all-reduce does) equal one process over all images."""
    torch.manual_seed(0)
    v = 30
    coords = torch.rand(v, 3)
    dist = torch.cdist(coords, coords)
    dist.fill_diagonal_(0)
    pred = torch.rand(10, v)
    gt = (torch.rand(10, v) > 0.7).int()
    pred[3] = 0.0  # an empty prediction
    gt[5] = 0      # an empty GT
    for make in (ContactPRF, lambda: GeodesicError(dist)):
        full, rank0, rank1 = make(), make(), make()
        assert set(full._reductions) and all(fx is not None and fx.__name__ == "dim_zero_sum"
                                             for fx in full._reductions.values())
        full.update(pred, gt)
        rank0.update(pred[:4], gt[:4])
        rank1.update(pred[4:7], gt[4:7])
        rank1.update(pred[7:], gt[7:])
        rank0.merge_state(rank1)
        a, b = full.compute(), rank0.compute()
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-12)
        # summing the raw states by hand gives the same (what dist_reduce_fx="sum" does across ranks)
        r0, r1 = make(), make()
        r0.update(pred[:5], gt[:5])
        r1.update(pred[5:], gt[5:])
        summed = make()
        for name in summed._defaults:
            setattr(summed, name, getattr(r0, name) + getattr(r1, name))
        summed._update_count = 1
        for k, val in summed.compute().items():
            torch.testing.assert_close(val, a[k], rtol=1e-12, atol=1e-12)


def test_registry_entries_build():
    m = registry.build("metric", {"name": "contact_prf", "threshold": 0.25})
    assert isinstance(m, ContactPRF) and m.threshold == 0.25
    assert registry.get("metric", "contact_geodesic") is GeodesicError


# The same six images under InteractVLM's rules: P = TP / (|P| + 1e-10), R = TP / (|G| + 1e-10),
# F1 = 2PR / (P + R + 1e-10); every empty set gives 0.
IVLM_P = [1 / 3, 0, 0, 0, 0, 1]
IVLM_R = [1 / 2, 0, 0, 0, 0, 1]
IVLM_F = [0.4, 0, 0, 0, 0, 1]


def test_prf_interactvlm_convention_hand_cases():
    p, r, f = contact_prf_per_image(PRED, GT, convention="interactvlm")
    torch.testing.assert_close(p, torch.tensor(IVLM_P, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(r, torch.tensor(IVLM_R, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(f, torch.tensor(IVLM_F, dtype=torch.float64), atol=1e-9, rtol=0)
    m = registry.build("metric", {"name": "contact_prf", "threshold": 0.5, "convention": "interactvlm"})
    m.update(PRED, GT)
    out = m.compute()
    assert out["precision"].item() == pytest.approx((1 / 3 + 1) / 6, abs=1e-9)
    assert out["f1"].item() == pytest.approx(1.4 / 6, abs=1e-9)


def test_convention_is_checked_and_kept():
    assert ContactPRF().convention == "deco" and GeodesicError(PATH_D).convention == "deco"
    for make in (lambda c: ContactPRF(convention=c), lambda c: GeodesicError(PATH_D, convention=c)):
        with pytest.raises(ValueError, match=r"convention must be one of 'deco', 'interactvlm', got 'iagnet'"):
            make("iagnet")
    # geodesic: both conventions are DECO's rule in signature order (InteractVLM's swap is not reproduced)
    a = geodesic_error_per_image(PATH_D, _rows({0}, set()), _rows({1, 3}, {2}), convention="deco")
    b = geodesic_error_per_image(PATH_D, _rows({0}, set()), _rows({1, 3}, {2}), convention="interactvlm")
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


def test_damon_binary_hand_case():
    # image a has two object entries (union over them), image b one entry with nothing predicted.
    pred = torch.tensor([[0.9, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]])
    gt = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    out = damon_binary_contact(pred, gt, ["a", "a", "b"], geodesic=PATH_D)
    # a: P {0, 1}, G {0, 2}: tp 1 -> prec 1/2, rec 1/2, f1 1/2; b: pp 0 -> prec 0, rec 0, f1 0
    assert out["image_names"] == ["a", "b"]
    np.testing.assert_allclose(out["per_image_f1"], [0.5, 0.0])
    assert out["precision"] == pytest.approx(1 / 2)  # pooled: tp 1 / pp 2
    assert out["recall"] == pytest.approx(1 / 3)     # pooled: tp 1 / gp 3
    assert out["f1"] == pytest.approx(0.25)          # mean of the per-image F1
    # per-entry fp (m): entry 0 = 0; entry 1: d(1, 2) = 0.02; entry 2 (empty pred): mean_v d(v, 3) = 0.035
    np.testing.assert_allclose(out["per_image_fp_geo"], [0.02, 0.035], atol=1e-7)
    assert out["fp_geo"] == pytest.approx(0.0275, abs=1e-7)
    with pytest.raises(ValueError, match="3 entries but 2 image names"):
        damon_binary_contact(pred, gt, ["a", "b"])


def test_damon_semantic_hand_case():
    pred = torch.tensor([[0.9, 0.4, 0.0, 0.0], [0.0, 0.6, 0.7, 0.0], [0.8, 0.0, 0.0, 0.2]])
    gt = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    out = damon_semantic_contact(pred, gt, ["Chair", "chair", "supporting"])
    assert out["objects"] == ["chair", "supporting"]
    # chair: entry 0 P {0} G {0, 1}: f1 2/3; entry 1 P {1, 2} G {1}: f1 2/3; pooled P = 2/3, R = 2/3
    # supporting: P {0} G {3}: everything 0
    np.testing.assert_allclose(out["table"][:, :4], [[2, 2 / 3, 2 / 3, 2 / 3], [1, 0, 0, 0]], atol=1e-9)
    assert np.isnan(out["table"][:, 4]).all()  # no geodesic matrix given
    assert out["weighted_f1"] == pytest.approx(4 / 9, abs=1e-9)
    # "supporting" is in no category; chair is furniture
    assert out["category_names"] == ["furniture"]
    np.testing.assert_allclose(out["category_table"][0, :4], [2, 2 / 3, 2 / 3, 2 / 3], atol=1e-9)
