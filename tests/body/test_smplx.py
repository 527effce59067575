"""The synthetic SMPL-X model: on-disk format, loading with smplx and SMPLXBody, what each input moves."""
import contextlib
import io
import shutil

import numpy as np
import pytest
import torch

from zoo.body.mesh import part_vertex_ids
from zoo.body.model import SMPLHBody, SMPLXBody
from zoo.body.synthetic import (
    EXPRESSION_DIRECTIONS,
    NUM_BETAS,
    NUM_EXPRESSIONS,
    SMPLX_JOINT_NAMES,
    SMPLX_PARENTS,
    synthetic_model_paths,
    write_synthetic_body_models,
)

V, J = 10475, 55


@pytest.fixture(scope="module")
def data(body_dir):
    with np.load(synthetic_model_paths(body_dir)["smplx_npz"]) as z:  # no pickled objects in the file
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def smplx_body(body_dir):
    return SMPLXBody(str(body_dir))


def test_check_formats_passes(body_dir, check_formats):
    out = check_formats("smplx", synthetic_model_paths(body_dir)["smplx_npz"])
    assert "smplx builds it; 10475 vertices, 55 joints" in out


def test_arrays(data, body_dir):
    assert data["v_template"].shape == (V, 3) and data["v_template"].dtype == np.float64
    assert data["f"].shape == (2 * V - 4, 3) and data["f"].dtype == np.uint32
    assert data["shapedirs"].shape == (V, 3, NUM_BETAS + NUM_EXPRESSIONS) == (V, 3, 20)
    assert data["posedirs"].shape == (V, 3, 9 * (J - 1)) and not data["posedirs"].any()
    assert data["J_regressor"].shape == (J, V) and data["weights"].shape == (V, J)
    assert data["kintree_table"].tolist() == [SMPLX_PARENTS, list(range(J))]
    assert SMPLX_JOINT_NAMES[22:25] == ["jaw", "left_eye_smplhf", "right_eye_smplhf"]
    assert SMPLX_PARENTS[22:25] == [15, 15, 15] and SMPLX_PARENTS[25] == 20 and SMPLX_PARENTS[40] == 21
    for side in ("l", "r"):
        np.testing.assert_array_equal(data[f"hands_components{side}"], np.eye(45))
        np.testing.assert_array_equal(data[f"hands_mean{side}"], np.zeros(45))
    np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(data["J_regressor"].sum(1), 1.0, atol=1e-9)
    assert data["weights"].min() >= 0 and data["J_regressor"].min() >= 0
    assert ((data["J_regressor"] > 0).sum(1) >= 4).all()
    for k in ("jaw", "left_eye_smplhf", "right_eye_smplhf"):  # each face joint owns some vertices
        assert (data["weights"][:, SMPLX_JOINT_NAMES.index(k)] > 0.5).sum() >= 5
    assert all(np.isfinite(a).all() for a in data.values() if a.dtype.kind == "f")
    # the same humanoid as SMPL-H: its vertices come first, unchanged
    with np.load(synthetic_model_paths(body_dir)["smplh_npz"]) as z:
        np.testing.assert_array_equal(data["v_template"][:6890], z["v_template"])


def test_mesh_is_closed_genus_zero(data):
    f = data["f"].astype(np.int64)
    directed = {(int(a), int(b)) for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])}
    assert len(directed) == 3 * len(f) and all((b, a) in directed for a, b in directed)
    assert V - len(directed) // 2 + len(f) == 2 and np.unique(f).size == V


def test_landmarks_are_valid_and_on_the_face(data):
    n_f = len(data["f"])
    for idx, bary, shape in (("lmk_faces_idx", "lmk_bary_coords", (51,)),
                             ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords", (79, 17))):
        i, b = data[idx], data[bary]
        assert i.shape == shape and b.shape == (*shape, 3) and i.dtype == np.int64
        assert i.min() >= 0 and i.max() < n_f
        assert b.min() >= 0 and np.allclose(b.sum(-1), 1.0)
        pts = np.einsum("...k,...kc->...c", b, data["v_template"][data["f"][i].astype(np.int64)])
        assert (pts[..., 1] > 0.33).all()  # on the head
    static = np.einsum("lk,lkc->lc", data["lmk_bary_coords"],
                       data["v_template"][data["f"][data["lmk_faces_idx"]].astype(np.int64)])
    assert (static[:, 2] > 0.05).all()  # on the front of the face


def test_smplx_create_loads_it(body_dir, data):
    import smplx

    with contextlib.redirect_stdout(io.StringIO()):  # smplx warns about the 10 + 10 coefficients
        m = smplx.create(str(body_dir), "smplx", use_pca=False, flat_hand_mean=True)
        mc = smplx.create(str(body_dir), "smplx", use_pca=False, flat_hand_mean=True, use_face_contour=True)
    assert m.num_betas == 10 and m.num_expression_coeffs == 10
    with torch.no_grad():
        out = m()
        turned = torch.zeros(1, 63)
        turned[0, 3 * 11 + 1] = 0.4  # neck yaw: picks another dynamic-landmark bin
        out_c = mc(body_pose=turned)
    assert out.vertices.shape == (1, V, 3)
    assert out.joints.shape[1] > J and torch.isfinite(out.joints).all() and torch.isfinite(out_c.joints).all()
    torch.testing.assert_close(out.vertices[0], torch.as_tensor(data["v_template"], dtype=torch.float32))
    torch.testing.assert_close(out.joints[0, :J], torch.as_tensor(data["J_regressor"] @ data["v_template"],
                                                                  dtype=torch.float32))


def test_smplx_body_zero_pose_and_shape(smplx_body):
    m = smplx_body
    assert m.num_vertices == V and m.num_joints == J and m.faces.shape == (2 * V - 4, 3)
    out = m(pose=torch.zeros(2, 165))
    assert out["vertices"].shape == (2, V, 3) and out["joints"].shape == (2, J, 3)
    torch.testing.assert_close(out["vertices"][1], m.v_template)
    h = lambda v: float(v[0, :, 1].max() - v[0, :, 1].min())  # noqa: E731
    assert 1.6 < h(out["vertices"]) < 1.9
    assert h(m(betas=torch.tensor([[2.0]]))["vertices"]) > h(out["vertices"]) + 0.05  # beta 0: stature
    assert m.state_dict() == {}


def _moved(m, **kw) -> torch.Tensor:
    posed = m(**kw)["vertices"][0]
    assert torch.isfinite(posed).all()
    return (posed - m.v_template).norm(dim=1)


def test_jaw_eyes_expression_and_hands_move_the_right_vertices(smplx_body):
    m = smplx_body
    y = m.v_template[:, 1]
    feet = torch.as_tensor(part_vertex_ids(m, "feet"))
    left_hand = torch.as_tensor(part_vertex_ids(m, "left_hand"))
    right_hand = torch.as_tensor(part_vertex_ids(m, "right_hand"))
    below_neck = y < 0.25
    pose = torch.zeros(1, 165)
    pose[0, 66] = 0.3  # jaw opens (about x)
    moved = _moved(m, pose=pose)
    assert moved.max() > 0.01 and float(y[moved.argmax()]) > 0.33  # the chin moves ...
    assert moved[below_neck].max() < 1e-6 and moved[y > 0.5].max() < 1e-6  # ... not the body, not the crown
    pose = torch.zeros(1, 165)
    pose[0, 70] = 0.5  # left eye turns (about y)
    moved = _moved(m, pose=pose)
    lids = moved > 1e-4
    assert lids.sum() >= 5 and (m.v_template[lids, 0] > 0).all() and (y[lids] > 0.43).all()
    for k in range(len(EXPRESSION_DIRECTIONS)):
        expr = torch.zeros(1, 10)
        expr[0, k] = 1.0
        moved = _moved(m, expression=expr)
        assert 0.002 < moved.max() < 0.02, EXPRESSION_DIRECTIONS[k]
        assert moved[below_neck].max() < 1e-6 and float(m.v_template[moved.argmax(), 2]) > 0.03  # the face
    pose = torch.zeros(1, 165)
    pose[0, 75 + 2] = 1.0  # curl the left index finger
    moved = _moved(m, pose=pose)
    assert moved[left_hand].max() > 0.01 and moved[right_hand].max() < 1e-6 and moved[feet].max() < 1e-6


def test_body_poses_like_smplh(body_dir, smplx_body):
    """Body and shape drive the same humanoid: SMPL-X's first 6890 vertices follow SMPL-H's."""
    smplh = SMPLHBody(str(body_dir))
    pose = torch.zeros(1, 72)
    pose[0, 3 * 16 + 2] = -0.8  # left shoulder
    pose[0, 3 * 4] = 1.0  # left knee
    pose[0, 3 * 18 + 1] = 1.2  # left elbow
    betas = torch.tensor([[1.0, -0.5, 0.5]])
    a = smplh(pose=pose, betas=betas)
    b = smplx_body(pose=pose, betas=betas)
    d = (a["vertices"][0] - b["vertices"][0, :6890]).norm(dim=1)
    assert d.mean() < 1e-3 and d.max() < 0.02  # weights recomputed on the refined mesh: close, not equal
    torch.testing.assert_close(a["joints"][0, :22], b["joints"][0, :22], atol=2e-3, rtol=0)


def test_synthesize_writes_smplx_deterministically_and_only_when_missing(tmp_path, body_dir, capsys):
    """From an empty folder SMPLXBody(synthesize=True) writes every file, byte for byte as before;
    with the other files there it writes the SMPL-X one only."""
    m = SMPLXBody(str(tmp_path / "a"), synthesize=True)
    assert capsys.readouterr().out == (f"[body] no SMPL-X model under {tmp_path / 'a'}: writing the synthetic "
                                       "stand-in body models there\n")
    assert m.num_vertices == V
    mine, ref = synthetic_model_paths(tmp_path / "a"), synthetic_model_paths(body_dir)
    for k in ref:
        assert mine[k].read_bytes() == ref[k].read_bytes(), k
    assert (mine["smplx_npz"].stat().st_mode & 0o777) == 0o644
    # a folder holding only SMPL / SMPL-H: they are kept, the SMPL-X file is added
    b = synthetic_model_paths(tmp_path / "b")
    for k in ("smpl_pkl", "smplh_pkl", "smplh_npz"):
        b[k].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ref[k], b[k])
    stamps = {k: b[k].stat().st_mtime_ns for k in ("smpl_pkl", "smplh_pkl", "smplh_npz")}
    write_synthetic_body_models(tmp_path / "b")
    assert {k: b[k].stat().st_mtime_ns for k in stamps} == stamps
    assert b["smplx_npz"].read_bytes() == ref["smplx_npz"].read_bytes()
    assert not list((tmp_path / "b").rglob(".*.tmp"))  # no temporary file left behind
