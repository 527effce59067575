"""LEMON: generator -> reader round trip (contact, parameters, affordances), strict errors."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from zoo.data.formats import LEMON_AFFORDANCES
from zoo.data.lemon import LemonDataModule, read_contact
from zoo.data.synthetic.lemon import generate_lemon, to_lemon_columns


@pytest.fixture(scope="module")
def lemon_root(tmp_path_factory):
    from zoo.body.synthetic import write_synthetic_body_models

    body = write_synthetic_body_models(tmp_path_factory.mktemp("body"))
    out = tmp_path_factory.mktemp("lemon") / "Data"
    generate_lemon(out, n=10, seed=1, image_size=64, body_model_dir=str(body))
    return out, body


def test_round_trip_contact_and_params(lemon_root):
    root, body = lemon_root
    dm = LemonDataModule(str(root), batch_size=2, image_size=64, val_fraction=0.25)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 8 and len(dm.test_set) == 2
    labels = json.loads((root / "smplh_param" / "human_label.json").read_text())
    n_contact = 0
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        for i in range(len(ds)):
            item = ds[i]
            rel = item["image_id"].split("/", 1)[1]  # "Images/<Object>/<aff>/<name>.jpg"
            cpath = root / ("smplh_contact_pkl/" + rel.split("/", 1)[1].rsplit(".", 1)[0] + ".pkl")
            with open(cpath, "rb") as fh:
                written = pickle.load(fh)
            assert torch.equal(item["contact_label"], torch.as_tensor(written, dtype=torch.float32))
            n_contact += int(written.sum() > 0)
            p = labels[rel]["smplh_param"]
            assert np.allclose(item["body_pose_rotmat"].numpy(), np.asarray(p["body_pose"]), atol=1e-6)
            assert np.allclose(item["betas"].numpy(), p["shape"], atol=1e-6) and item["betas"].shape == (16,)
            R = item["body_pose_rotmat"].numpy()
            assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-5)  # rotation matrices
            assert item["object_name"] == rel.split("/")[1]
            assert item["affordance_index"] == LEMON_AFFORDANCES.index(item["affordance_name"])
            assert item["affordance"].max() > 0.9  # the named affordance's region is on the cloud
    assert n_contact == 10  # every interaction touches the body


def test_contact_matches_posed_body_geometry(lemon_root):
    """Reposing the body from the stored parameters puts the contact vertices next to the object."""
    from zoo.body.model import SMPLHBody

    root, body = lemon_root
    dm = LemonDataModule(str(root), batch_size=1, image_size=64, load_images=False)
    dm.setup("test")
    item = dm.test_set[0]
    model = SMPLHBody(str(body))

    def aa(m):
        return torch.as_tensor(Rotation.from_matrix(m.numpy()).as_rotvec().reshape(1, -1), dtype=torch.float32)

    with torch.no_grad():
        v = model(global_orient=aa(item["global_orient_rotmat"]), body_pose=aa(item["body_pose_rotmat"]),
                  betas=item["betas"][None, :10], transl=item["transl"][None])["vertices"][0]
    c = item["contact_label"] > 0
    centre = pickle.load(open(next((root / "obj_center").rglob(Path(item["image_id"]).stem + ".pkl")), "rb"))
    # contact vertices are closer to the object centre than the body on average
    d_contact = (v[c] - torch.as_tensor(centre)).norm(dim=-1).mean()
    d_all = (v - torch.as_tensor(centre)).norm(dim=-1).mean()
    assert c.any() and d_contact < d_all
    # the human box (resized pixels) lies in the image
    b = item["human_box"]
    assert 0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64


def test_lemon_columns_and_strict_errors(lemon_root, tmp_path):
    aff = np.zeros((2, 17), np.float32)
    aff[:, 0], aff[:, 1], aff[:, 5] = 0.9, 0.7, 0.3  # grasp, contain (no LEMON column), sit
    cols = to_lemon_columns(aff)
    assert cols[0, LEMON_AFFORDANCES.index("grasp")] == pytest.approx(0.9)
    assert cols[0, LEMON_AFFORDANCES.index("sit")] == pytest.approx(0.3)
    assert cols.sum() == pytest.approx(2 * 1.2)
    bad = tmp_path / "c.pkl"
    bad.write_bytes(pickle.dumps(np.zeros(6000)))
    with pytest.raises(ValueError, match=r"c\.pkl: contact has 6000 values .* expected 6890"):
        read_contact(str(bad))
    root, _ = lemon_root
    dm = LemonDataModule(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=r"LEMON list file not found: .*nothing/txt_scripts/train\.txt"):
        dm.setup()
    with pytest.raises(FileNotFoundError, match=r"LEMON human parameters not found: .*human_label\.json"):
        _ = dm.human
