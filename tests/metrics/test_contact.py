"""Contact P/R/F1 and geodesic error against hand-computed cases, DECO's empty-set rules and DDP merging."""
import numpy as np
import pytest
import torch

from zoo.core import registry
from zoo.metrics.contact import ContactPRF, GeodesicError, contact_prf_per_image, geodesic_error_per_image

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
