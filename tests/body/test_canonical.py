"""InteractVLM's canonical body: the pose (hips about z) and the posed synthetic body."""
import math

import pytest
import torch

from zoo.body.canonical import canonical_body, canonical_body_pose


@pytest.fixture(scope="module")
def body_model(body_dir):
    from zoo.body.model import BodyModel

    return BodyModel(str(body_dir), model_type="smpl")


def test_canonical_pose_rotates_hips_about_z():
    p = canonical_body_pose("smpl")
    a = math.radians(30)
    assert p.shape == (1, 72)
    assert p[0, 5] == pytest.approx(a) and p[0, 8] == pytest.approx(-a)
    assert int((p != 0).sum()) == 2
    assert canonical_body_pose("smplx").shape == (1, 165)
    with pytest.raises(ValueError, match="unknown model_type 'smpl-x'"):
        canonical_body_pose("smpl-x")


def test_canonical_body_spreads_the_legs(body_model):
    v, f = canonical_body(body_model)
    v0 = body_model()["vertices"][0]
    assert v.shape == (body_model.num_vertices, 3) and v.dtype == torch.float32 and f.dtype == torch.long
    assert torch.equal(f, body_model.faces.cpu())
    # Feet (lowest 5% of vertices in the rest pose) move outwards: left (+x) further +x, right further -x.
    feet = v0[:, 1] < torch.quantile(v0[:, 1], 0.05)
    left, right = feet & (v0[:, 0] > 0), feet & (v0[:, 0] < 0)
    assert v[left, 0].mean() > v0[left, 0].mean() + 0.1
    assert v[right, 0].mean() < v0[right, 0].mean() - 0.1
    # The upper body does not move (no re-centring, as InteractVLM).
    top = v0[:, 1] > torch.quantile(v0[:, 1], 0.7)
    assert torch.allclose(v[top], v0[top], atol=1e-5)
    vc, _ = canonical_body(body_model, center=True)
    assert torch.allclose((vc.amin(0) + vc.amax(0)) / 2, torch.zeros(3), atol=1e-6)
    with pytest.raises(TypeError, match="must be a zoo BodyModel"):
        canonical_body(torch.zeros(3))
