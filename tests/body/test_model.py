"""BodyModel over smplx: loading, posing, skinning sanity, error messages."""

import numpy as np
import pytest
import torch

from zoo.body.mesh import part_vertex_ids
from zoo.body.model import SMPLBody, SMPLHBody, SMPLXBody, body_model_file, load_body_model_data


@pytest.fixture(scope="module")
def smpl(body_dir):
    return SMPLBody(str(body_dir))


def test_zero_pose(smpl):
    out = smpl(pose=torch.zeros(2, 72))
    assert out["vertices"].shape == (2, 6890, 3) and out["joints"].shape == (2, 24, 3)
    assert smpl.num_vertices == 6890 and smpl.num_joints == 24
    assert smpl.faces.shape == (13776, 3) and smpl.faces.dtype == torch.long
    v = out["vertices"][0]
    assert 1.6 < float(v[:, 1].max() - v[:, 1].min()) < 1.9
    torch.testing.assert_close(v, smpl.v_template)  # zero pose, zero shape: the template itself
    # no arguments at all: batch of one
    assert smpl()["vertices"].shape == (1, 6890, 3)


def test_translation_and_batch(smpl):
    t = torch.tensor([[1.0, 2.0, 3.0]])
    out = smpl(transl=t)
    torch.testing.assert_close(out["vertices"][0], smpl.v_template + t)
    with pytest.raises(ValueError, match=r"SMPL pose must be \(B, 72\)"):
        smpl(pose=torch.zeros(1, 69))
    with pytest.raises(ValueError, match="share the batch size"):
        smpl(pose=torch.zeros(2, 72), transl=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="either `pose` or its parts"):
        smpl(pose=torch.zeros(1, 72), body_pose=torch.zeros(1, 69))


def test_elbow_bend_moves_hand_not_feet(smpl):
    pose = torch.zeros(1, 72)
    pose[0, 3 * 18 + 1] = np.pi / 2  # left elbow, 90 degrees about y
    rest = smpl.v_template
    posed = smpl(pose=pose)["vertices"][0]
    moved = (posed - rest).norm(dim=1)
    hand = torch.as_tensor(part_vertex_ids(smpl, "left_hand"))
    feet = torch.as_tensor(part_vertex_ids(smpl, "feet"))
    right_hand = torch.as_tensor(part_vertex_ids(smpl, "right_hand"))
    assert moved[hand].min() > 0.15  # the hand swings with the forearm (~0.25 m lever)
    assert moved[feet].max() < 1e-6
    assert moved[right_hand].max() < 1e-6
    # the joint itself stays put and the forearm keeps its length
    j_rest, j_posed = smpl()["joints"][0], smpl(pose=pose)["joints"][0]
    torch.testing.assert_close(j_posed[18], j_rest[18])
    torch.testing.assert_close((j_posed[20] - j_posed[18]).norm(), (j_rest[20] - j_rest[18]).norm())


def test_shape_coefficients(smpl):
    h = lambda v: float(v[0, :, 1].max() - v[0, :, 1].min())  # noqa: E731
    base = h(smpl()["vertices"])
    assert h(smpl(betas=torch.tensor([[2.0]]))["vertices"]) > base + 0.05  # beta 0 = stature, padded to 10
    with pytest.raises(ValueError, match=r"betas must be \(B, <= 10\)"):
        smpl(betas=torch.zeros(1, 11))


def test_smplh_matches_smpl_for_body_pose(body_dir, smpl):
    smplh = SMPLHBody(str(body_dir), ext="npz")
    assert smplh.num_joints == 52
    pose = torch.zeros(1, 72)
    pose[0, 3 * 16 + 2] = -0.8  # left shoulder
    pose[0, 3 * 4] = 1.0  # left knee
    torch.testing.assert_close(smplh(pose=pose)["vertices"], smpl(pose=pose)["vertices"], atol=1e-5, rtol=0)
    full = torch.zeros(1, 156)
    full[0, 66 + 2] = 1.0  # curl the left index finger
    bent = smplh(pose=full)["vertices"][0]
    assert (bent - smplh.v_template).norm(dim=1).max() > 0.01


def test_missing_files_explain_where_they_come_from(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        SMPLBody(str(tmp_path))
    msg = str(e.value)
    assert msg.startswith("SMPL neutral body model not found: expected ")
    assert str(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl") in msg
    assert "https://smpl.is.tue.mpg.de" in msg and "tools/make_synthetic.py body --out DIR" in msg
    with pytest.raises(FileNotFoundError, match="SMPL-H neutral body model not found.*mano.is.tue.mpg.de"):
        SMPLHBody(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SMPL-X male body model not found.*smpl-x.is.tue.mpg.de"):
        SMPLXBody(str(tmp_path), gender="male")
    with pytest.raises(ValueError, match="gender must be one of"):
        body_model_file(tmp_path, "smpl", gender="other")


def test_default_dir_from_environment(body_dir, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(body_dir))
    assert body_model_file(None, "smpl") == body_dir / "smpl" / "SMPL_NEUTRAL.pkl"
    assert body_model_file(None, "smplh", ext="npz") == body_dir / "smplh" / "SMPLH_NEUTRAL.npz"


def test_chumpy_pickle_is_explained(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(b"cchumpy.ch\nCh\n.")  # a pickle that needs the chumpy module
    with pytest.raises(RuntimeError, match="chumpy objects, and chumpy is not installed"):
        load_body_model_data(path)


def test_registry_builds_body_models(body_dir):
    from zoo.core.registry import build, get

    assert get("body_model", "smpl") is SMPLBody
    assert get("body_model", "smplh") is SMPLHBody
    assert get("body_model", "smplx") is SMPLXBody
    m = build("body_model", {"name": "smplh", "model_dir": str(body_dir)})
    assert isinstance(m, SMPLHBody) and m.num_vertices == 6890


def test_body_model_state_dict_is_empty(smpl, body_dir):
    """No SMPL array reaches a state_dict, so none reaches a checkpoint of a module holding a body model."""
    assert smpl.state_dict() == {}
    assert len(list(smpl.buffers())) > 5  # the arrays are still there, as buffers that move with .to()
    holder = torch.nn.Module()
    holder.body = SMPLHBody(str(body_dir))
    holder.head = torch.nn.Linear(2, 2)
    assert sorted(holder.state_dict()) == ["head.bias", "head.weight"]
    moved = smpl.to(torch.float64)
    assert moved.v_template.dtype == torch.float64 and moved(pose=torch.zeros(1, 72, dtype=torch.float64))


def test_synthesize_writes_the_stand_in_once(tmp_path, capsys):
    from zoo.body.synthetic import synthetic_model_paths

    m = SMPLBody(str(tmp_path), synthesize=True)
    out = capsys.readouterr().out
    assert out == (f"[body] no SMPL model under {tmp_path}: writing the synthetic stand-in body models there\n")
    paths = synthetic_model_paths(tmp_path)
    assert m.path == paths["smpl_pkl"] and all(p.is_file() for p in paths.values())
    stamps = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    h = SMPLHBody(str(tmp_path), synthesize=True)  # present now: nothing written, nothing printed
    assert h.num_joints == 52 and capsys.readouterr().out == ""
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == stamps


def test_synthesize_keeps_model_files_already_there(tmp_path, body_dir, capsys):
    from zoo.body.synthetic import synthetic_model_paths

    paths = synthetic_model_paths(tmp_path)
    paths["smpl_pkl"].parent.mkdir(parents=True)
    # Stands for a user's own SMPL file: synthesizing the missing SMPL-H must leave it as it is.
    paths["smpl_pkl"].write_bytes((body_dir / "smpl" / "SMPL_NEUTRAL.pkl").read_bytes())
    before = paths["smpl_pkl"].stat().st_mtime_ns
    SMPLHBody(str(tmp_path), synthesize=True)
    assert "[body] no SMPL-H model under" in capsys.readouterr().out
    assert paths["smpl_pkl"].stat().st_mtime_ns == before and paths["smplh_pkl"].is_file()


def test_gendered_models_cannot_be_synthesized(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"SMPL-X male body model not found: .*synthesize=True cannot help: "
                                                r"the synthetic stand-in is a neutral SMPL / SMPL-H / SMPL-X model "
                                                r"only \(no male or female\)\.$"):
        SMPLXBody(str(tmp_path), gender="male", synthesize=True)
    with pytest.raises(FileNotFoundError, match="SMPL female body model not found.*synthesize=True cannot help"):
        SMPLBody(str(tmp_path), gender="female", synthesize=True)
    # the stand-in's SMPL-X file is an .npz, so an SMPL-X pickle cannot be synthesized either
    with pytest.raises(FileNotFoundError, match=r"SMPLX_NEUTRAL\.pkl.*its SMPL-X file is an \.npz"):
        SMPLXBody(str(tmp_path), ext="pkl", synthesize=True)
    assert capsys.readouterr().out == "" and not any(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError) as e:  # without synthesize the message stays as it was
        SMPLXBody(str(tmp_path))
    assert "synthesize" not in str(e.value)
