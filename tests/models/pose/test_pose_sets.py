"""Pose set readers (AMASS npz, DAMON npz, npy, folders) and the synthetic labelled pose set."""
import re

import numpy as np
import pytest

from zoo.data.synthetic.poses import FAMILIES, family_pose, synthetic_pose_set
from zoo.models.pose.posesets import ACCEPTED, read_pose_set


def _ramp(n, d):
    return np.arange(n * d, dtype=np.float64).reshape(n, d) / 1000.0


def test_reads_each_format_and_takes_body_columns_3_to_66(tmp_path):
    smplh, smplx, smpl = _ramp(4, 156), _ramp(3, 165), _ramp(2, 72)
    np.savez(tmp_path / "amass_h.npz", poses=smplh, trans=np.zeros((4, 3)), betas=np.zeros(16))
    np.savez(tmp_path / "amass_x.npz", poses=smplx)
    np.savez(tmp_path / "damon.npz", pose=smpl, shape=np.zeros((2, 10)))
    np.save(tmp_path / "flat.npy", _ramp(5, 63))
    np.save(tmp_path / "joints.npy", _ramp(1, 63).reshape(1, 21, 3))
    h = read_pose_set(tmp_path / "amass_h.npz")
    assert h.dtype == np.float32 and h.shape == (4, 21, 3)
    assert np.array_equal(h.reshape(4, 63), smplh[:, 3:66].astype(np.float32))
    assert h[0, 0, 0] == np.float32(0.003) and h[1, 20, 2] == np.float32((156 + 65) / 1000)
    assert np.array_equal(read_pose_set(tmp_path / "amass_x.npz").reshape(3, 63), smplx[:, 3:66].astype(np.float32))
    assert np.array_equal(read_pose_set(tmp_path / "damon.npz").reshape(2, 63), smpl[:, 3:66].astype(np.float32))
    assert read_pose_set(tmp_path / "flat.npy").shape == (5, 21, 3)
    assert read_pose_set(tmp_path / "joints.npy").shape == (1, 21, 3)
    # A folder: every file, sorted by path (amass_h, amass_x, damon, flat, joints).
    everything = read_pose_set(tmp_path)
    assert everything.shape == (4 + 3 + 2 + 5 + 1, 21, 3)
    assert np.array_equal(everything[7:9], read_pose_set(tmp_path / "damon.npz"))


def test_wrong_shapes_name_file_key_shape_and_accepted(tmp_path):
    np.savez(tmp_path / "bad.npz", poses=np.zeros((10, 72)))
    with pytest.raises(ValueError, match=r"^" + re.escape(f"{tmp_path / 'bad.npz'}: key 'poses' has shape (10, 72); "
                                                          f"expected (N, 156 or 165) (accepted: {ACCEPTED})") + "$"):
        read_pose_set(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", pose=np.zeros((3, 156)))
    with pytest.raises(ValueError, match=re.escape("bad2.npz: key 'pose' has shape (3, 156); expected (N, 72)")):
        read_pose_set(tmp_path / "bad2.npz")
    np.save(tmp_path / "bad.npy", np.zeros((4, 24, 3)))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'bad.npy'}: array has shape (4, 24, 3); expected "
                                                   f"(N, 63) or (N, 21, 3)")):
        read_pose_set(tmp_path / "bad.npy")
    np.savez(tmp_path / "nokey.npz", body=np.zeros((3, 63)))
    with pytest.raises(ValueError, match=r"nokey\.npz: no 'poses' \(AMASS\) or 'pose' \(DAMON\) key \(found body\)"):
        read_pose_set(tmp_path / "nokey.npz")
    with pytest.raises(FileNotFoundError, match=r"pose set .*missing not found"):
        read_pose_set(tmp_path / "missing")


def test_synthetic_pose_set_is_labelled_and_deterministic():
    poses, labels = synthetic_pose_set(10, seed=4)
    again, labels2 = synthetic_pose_set(10, seed=4)
    other, _ = synthetic_pose_set(10, seed=5)
    assert poses.shape == (10, 21, 3) and poses.dtype == np.float32
    assert np.array_equal(poses, again) and labels == labels2 and not np.array_equal(poses, other)
    assert labels[:5] == ["standing", "sitting", "reaching up", "lying", "riding"] and labels[5] == "standing"
    # Each pose is its family's mean plus small noise: nearer its own family's mean than any other's.
    means = {f: family_pose(f) for f in FAMILIES}
    for p, lab in zip(poses, labels, strict=True):
        nearest = min(means, key=lambda f: np.abs(p - means[f]).sum())
        assert nearest == lab
    # Hand values: sitting flexes both hips by -1.5 rad about x and bends the knees by 1.5.
    sit = family_pose("sitting")
    assert sit[0, 0] == sit[1, 0] == np.float32(-1.5) and sit[3, 0] == sit[4, 0] == np.float32(1.5)
    with pytest.raises(ValueError, match="synthetic pose family 'dancing' unknown; expected one of standing, sitting"):
        family_pose("dancing")
