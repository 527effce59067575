"""The synthetic body model: on-disk format, mesh topology, rig invariants."""
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.body.skeleton import SMPL_PARENTS, SMPLH_PARENTS
from zoo.body.synthetic import NUM_BETAS, cli, synthetic_model_paths, write_synthetic_body_models

# The shared format checker, next to the checkout (../shared) or inside it (shared/).


def _load(path):
    if str(path).endswith(".npz"):
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def test_check_formats_passes(body_dir, check_formats):
    out = check_formats("smplx", body_dir)
    assert out.count("smplx builds it; 6890 vertices") == 3
    assert out.count("smplx builds it; 10475 vertices, 55 joints") == 1


def test_files_and_shapes(body_dir):
    paths = synthetic_model_paths(body_dir)
    assert sorted(p.relative_to(body_dir).as_posix() for p in paths.values()) == [
        "smpl/SMPL_NEUTRAL.pkl", "smplh/SMPLH_NEUTRAL.npz", "smplh/SMPLH_NEUTRAL.pkl", "smplx/SMPLX_NEUTRAL.npz"]
    for key, n_j in (("smpl_pkl", 24), ("smplh_pkl", 52), ("smplh_npz", 52)):
        d = _load(paths[key])
        assert d["v_template"].shape == (6890, 3)
        assert d["f"].shape == (13776, 3)
        assert d["shapedirs"].shape == (6890, 3, NUM_BETAS)
        assert d["posedirs"].shape == (6890, 3, 9 * (n_j - 1))
        assert d["J_regressor"].shape == (n_j, 6890)
        assert d["weights"].shape == (6890, n_j)
        parents = SMPL_PARENTS if n_j == 24 else SMPLH_PARENTS
        assert d["kintree_table"][0].tolist() == parents
        assert d["kintree_table"][1].tolist() == list(range(n_j))
        np.testing.assert_allclose(d["weights"].sum(1), 1.0, atol=1e-9)
        np.testing.assert_allclose(d["J_regressor"].sum(1), 1.0, atol=1e-9)
        assert d["weights"].min() >= 0 and d["J_regressor"].min() >= 0
    h = _load(paths["smplh_pkl"])
    assert h["hands_componentsl"].shape == (45, 45) and h["hands_meanr"].shape == (45,)
    # pkl and npz hold the same SMPL-H model
    n = _load(paths["smplh_npz"])
    for k in ("v_template", "f", "weights", "J_regressor", "shapedirs"):
        np.testing.assert_array_equal(h[k], n[k])


def test_mesh_is_closed_connected_genus_zero(body_dir):
    d = _load(synthetic_model_paths(body_dir)["smplh_pkl"])
    f = d["f"].astype(np.int64)
    v = d["v_template"]
    directed = {(int(a), int(b)) for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])}
    assert len(directed) == 3 * len(f)  # no directed edge twice: consistently oriented
    assert all((b, a) in directed for a, b in directed)  # closed: every edge has its twin
    n_edges = len(directed) // 2
    assert len(v) - n_edges + len(f) == 2  # Euler characteristic of a sphere
    assert np.unique(f).size == 6890  # every vertex is used
    # outward orientation: positive enclosed volume, about that of a person (40-90 litres)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    vol = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert 0.04 < vol < 0.09


def test_body_proportions(body_dir):
    d = _load(synthetic_model_paths(body_dir)["smpl_pkl"])
    v = d["v_template"]
    assert 1.6 < v[:, 1].max() - v[:, 1].min() < 1.9
    assert -1.2 < v[:, 1].min() < -1.1  # feet where SMPL's are
    joints = d["J_regressor"] @ v
    assert abs(joints[0, 1]) < 0.3 and abs(joints[0, 0]) < 1e-3  # pelvis near the origin, on the mid-plane
    assert joints[15, 1] > joints[12, 1] > joints[9, 1] > joints[0, 1]  # head above neck above chest above pelvis
    assert joints[16, 0] > 0.1 and joints[17, 0] < -0.1  # left is +x
    assert joints[20, 0] > 0.6  # T-pose: wrists far out


def test_joint_regressor_hits_skeleton(body_dir):
    from zoo.body.synthetic import _skeleton_and_prims

    joints, _, _ = _skeleton_and_prims()
    d = _load(synthetic_model_paths(body_dir)["smplh_pkl"])
    err = np.linalg.norm(d["J_regressor"] @ d["v_template"] - joints, axis=1)
    assert err.max() < 0.005
    assert ((d["J_regressor"] > 0).sum(1) >= 4).all()  # each joint regressed from several vertices


def test_smpl_hand_weights_are_finger_sums(body_dir):
    paths = synthetic_model_paths(body_dir)
    h, s = _load(paths["smplh_pkl"]), _load(paths["smpl_pkl"])
    np.testing.assert_allclose(s["weights"][:, :22], h["weights"][:, :22])
    np.testing.assert_allclose(s["weights"][:, 22], h["weights"][:, 22:37].sum(1))
    np.testing.assert_allclose(s["weights"][:, 23], h["weights"][:, 37:52].sum(1))


def test_existing_files_are_kept_and_cli(body_dir, capsys):
    paths = synthetic_model_paths(body_dir)
    before = {k: os.stat(p).st_mtime_ns for k, p in paths.items()}
    t = time.perf_counter()
    assert write_synthetic_body_models(body_dir) == Path(body_dir)
    assert cli(["--out", str(body_dir)]) == 0
    assert time.perf_counter() - t < 1.0
    assert {k: os.stat(p).st_mtime_ns for k, p in paths.items()} == before
    printed = capsys.readouterr().out.split()
    assert printed == [str(p) for p in paths.values()]
    with pytest.raises(SystemExit):
        cli([])  # --out is required
