"""Mesh operations: exact geodesics on hand-solved meshes, caching, normals, part labels and groups (analytic
sphere and cylinder geodesics and the released SMPL matrix: test_geodesic.py)."""
import numpy as np
import pytest
import torch

from zoo.body.mesh import (
    DECO_PART_NAMES,
    NUM_DECO_PART_CLASSES,
    SMPL_PART_NAMES,
    deco_part_labels,
    geodesic_distances,
    mesh_edges,
    part_vertex_ids,
    vertex_normals,
    vertex_part_labels,
)
from zoo.body.skeleton import SMPLH_JOINT_NAMES

SQUARE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
SQUARE_F = np.array([[0, 1, 2], [0, 2, 3]])


def grid3():
    v = np.array([[i, j, 0] for j in range(3) for i in range(3)], dtype=np.float64)
    f = []
    for j in range(2):
        for i in range(2):
            a, b, c, d = j * 3 + i, j * 3 + i + 1, (j + 1) * 3 + i + 1, (j + 1) * 3 + i
            f += [[a, b, c], [a, c, d]]  # diagonal from (i, j) to (i+1, j+1)
    return v, np.array(f)


def test_square_geodesics():
    d = geodesic_distances(SQUARE_V, SQUARE_F)
    r2 = np.sqrt(2)
    # 1 -> 3 crosses the diagonal 0-2 in a straight line (an edge path would be 2)
    expected = np.array([[0, 1, r2, 1], [1, 0, 1, r2], [r2, 1, 0, 1], [1, r2, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    assert d.dtype == np.float32


def test_grid_geodesics():
    v, f = grid3()
    d = geodesic_distances(v, f)
    idx = lambda i, j: j * 3 + i  # noqa: E731
    # a flat convex patch: surface geodesics are straight lines, whatever the triangulation
    np.testing.assert_allclose(d, np.linalg.norm(v[:, None] - v[None], axis=-1), rtol=1e-6, atol=1e-7)
    assert d[idx(0, 0), idx(2, 1)] == pytest.approx(np.sqrt(5), rel=1e-6)  # edges only: 1 + sqrt(2)
    assert d[idx(2, 0), idx(0, 2)] == pytest.approx(2 * np.sqrt(2), rel=1e-6)  # across the diagonals (edges: 4)
    np.testing.assert_array_equal(d, d.T)
    assert len(mesh_edges(f)) == 16  # 12 grid edges + 4 diagonals


def test_unreachable_is_inf():
    v = np.concatenate([SQUARE_V, SQUARE_V + 5])
    f = np.concatenate([SQUARE_F, SQUARE_F + 4])
    d = geodesic_distances(v, f)
    assert np.isinf(d[0, 4]) and np.isinf(d[7, 1])
    assert d[4, 6] == pytest.approx(np.sqrt(2), rel=1e-6)


def test_cache_hit_is_identical(tmp_path):
    v, f = grid3()
    first = geodesic_distances(v, f, cache_dir=tmp_path)
    files = list(tmp_path.glob("geodesic_*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))
    second = geodesic_distances(v.astype(np.float32), torch.as_tensor(f), cache_dir=tmp_path)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    v2 = v.copy()
    v2[0, 2] = 0.5  # another mesh, another cache file
    third = geodesic_distances(v2, f, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("geodesic_*.npy"))) == 2
    assert third[0, 1] == pytest.approx(np.sqrt(1.25), rel=1e-6)


def test_geodesic_input_errors():
    with pytest.raises(ValueError, match=r"faces index vertices outside \[0, 4\)"):
        geodesic_distances(SQUARE_V, np.array([[0, 1, 4]]))
    with pytest.raises(ValueError, match=r"verts must be \(V, 3\)"):
        geodesic_distances(SQUARE_V[:, :2], SQUARE_F)
    with pytest.raises(ValueError, match="integer vertex indices"):
        geodesic_distances(SQUARE_V, SQUARE_F.astype(float))


def test_vertex_normals():
    n = vertex_normals(torch.as_tensor(SQUARE_V), torch.as_tensor(SQUARE_F))
    torch.testing.assert_close(n, torch.tensor([[0.0, 0.0, 1.0]] * 4, dtype=torch.float64))
    # a tetrahedron with outward faces: every vertex normal points away from the centroid
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    nb = vertex_normals(torch.stack([v, v + 1]), f)
    assert nb.shape == (2, 4, 3)
    assert ((nb[0] * (v - v.mean(0))).sum(1) > 0).all()
    torch.testing.assert_close(nb[0], nb[1])
    torch.testing.assert_close(nb.norm(dim=-1), torch.ones(2, 4))
    torch.testing.assert_close(nb[0, 0], -torch.ones(3) / np.sqrt(3))


def test_part_labels_fold_fingers_into_hands():
    w = np.zeros((4, 52))
    w[0, SMPLH_JOINT_NAMES.index("left_index2")] = 1
    w[1, SMPLH_JOINT_NAMES.index("right_thumb3")] = 0.6
    w[1, SMPLH_JOINT_NAMES.index("right_wrist")] = 0.4
    w[2, 0] = 1
    w[3, SMPLH_JOINT_NAMES.index("head")] = 1
    labels = vertex_part_labels(w)
    assert [SMPL_PART_NAMES[i] for i in labels] == ["left_hand", "right_hand", "pelvis", "head"]
    assert deco_part_labels(w).tolist() == (labels + 1).tolist()
    assert len(SMPL_PART_NAMES) == 24 and len(DECO_PART_NAMES) == NUM_DECO_PART_CLASSES == 26
    assert DECO_PART_NAMES[0] == "background" and DECO_PART_NAMES[16] == "head"
    with pytest.raises(ValueError, match="expected 24 \\(SMPL\\), 52 \\(SMPL-H\\) or 55"):
        vertex_part_labels(np.ones((3, 30)))


def test_part_groups_on_synthetic_body(body_dir):
    from zoo.body.model import SMPLBody

    m = SMPLBody(str(body_dir))
    v = m.v_template.numpy()
    groups = {g: part_vertex_ids(m, g) for g in ("hands", "feet", "back", "hips", "buttocks", "head")}
    for g, ids in groups.items():
        assert len(ids) > 50, g
    assert np.abs(v[:, 0]).argmax() in set(groups["hands"])  # the farthest point out is a fingertip
    assert v[groups["hands"], 0].__abs__().min() > 0.6
    assert v[:, 1].argmin() in set(groups["feet"]) and v[groups["feet"], 1].max() < -0.95
    assert v[:, 1].argmax() in set(groups["head"]) and v[groups["head"], 1].min() > 0.25
    n = vertex_normals(m.v_template, m.faces).numpy()
    assert (n[groups["back"], 2] < -0.3).all() and (n[groups["buttocks"], 2] < -0.3).all()
    assert -0.5 < v[groups["hips"], 1].mean() < 0.0
    assert not set(groups["hands"]) & set(groups["feet"])
    with pytest.raises(KeyError, match="unknown body part group 'hand'; known groups: .*hands"):
        part_vertex_ids(m, "hand")
