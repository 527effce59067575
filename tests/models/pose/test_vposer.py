"""VPoser v2: layer layout and key names, 6D / matrix / axis-angle conversions, official checkpoint loading."""
import math

import pytest
import torch

from zoo.core.hub import CheckpointError, load_weights
from zoo.models.pose.vposer import (
    OFFICIAL_PREFIX,
    VPoser,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)


def test_shapes_and_official_layer_names():
    vp = VPoser(hidden=32).eval()
    z = torch.randn(5, 32)
    poses = vp(z)
    assert poses.shape == (5, 21, 3)
    mu, std = vp.encode(poses)
    assert mu.shape == std.shape == (5, 32) and bool((std > 0).all())
    mu2, _ = vp.encode(poses.reshape(5, 63))
    assert torch.equal(mu, mu2)
    # The V02_05 layout: BN(63) -> Linear -> LeakyReLU -> BN -> Dropout -> Linear -> Linear -> mu / logvar heads.
    sd = vp.state_dict()
    assert tuple(sd["encoder_net.1.running_mean"].shape) == (63,)
    assert tuple(sd["encoder_net.2.weight"].shape) == (32, 63)
    assert tuple(sd["encoder_net.4.running_var"].shape) == (32,)
    assert tuple(sd["encoder_net.8.mu.weight"].shape) == tuple(sd["encoder_net.8.logvar.weight"].shape) == (32, 32)
    assert tuple(sd["decoder_net.0.weight"].shape) == (32, 32)
    assert tuple(sd["decoder_net.5.weight"].shape) == (126, 32)
    assert not any(k.startswith(("encoder_net.3", "encoder_net.5", "decoder_net.1", "decoder_net.2")) for k in sd)
    with pytest.raises(ValueError, match=r"^VPoser.decode: expected z of shape \(B, 32\), got \(2, 16\)$"):
        vp.decode(torch.zeros(2, 16))
    with pytest.raises(ValueError, match=r"^VPoser.encode: expected pose_body \(B, 63\) or \(B, 21, 3\) axis-angle, "
                                         r"got \(2, 22, 3\)$"):
        vp.encode(torch.zeros(2, 22, 3))


def test_rotation_conversions_on_hand_cases():
    # 90 degrees about x maps y to z: the matrix's columns are the images of the axes.
    rx = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0]))
    assert torch.allclose(rx, torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]), atol=1e-6)
    # 180 degrees about y, and 120 degrees about (1, 1, 1) (cycles x -> y -> z).
    ry = axis_angle_to_matrix(torch.tensor([0.0, math.pi, 0.0]))
    assert torch.allclose(ry, torch.diag(torch.tensor([-1.0, 1.0, -1.0])), atol=1e-6)
    aa111 = torch.full((3,), 2 * math.pi / 3 / math.sqrt(3))
    assert torch.allclose(axis_angle_to_matrix(aa111), torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]), atol=1e-6)
    # Back to axis-angle: the same vectors (180 degrees: either sign of the axis is the same rotation).
    assert torch.allclose(matrix_to_axis_angle(rx), torch.tensor([math.pi / 2, 0, 0]), atol=1e-6)
    assert torch.allclose(matrix_to_axis_angle(ry).abs(), torch.tensor([0, math.pi, 0]), atol=1e-5)
    assert torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(aa111)), aa111, atol=1e-6)
    assert torch.equal(matrix_to_axis_angle(torch.eye(3)), torch.zeros(3))
    # 6D: the two columns are Gram-Schmidt orthonormalised: ((2, 0, 0), (1, 3, 0)) -> identity.
    six = torch.tensor([[2.0, 1.0], [0.0, 3.0], [0.0, 0.0]]).reshape(6)
    assert torch.allclose(rot6d_to_matrix(six), torch.eye(3), atol=1e-7)
    # Round trip 6D -> matrix -> axis-angle -> matrix -> 6D over many random rotations.
    torch.manual_seed(0)
    m = axis_angle_to_matrix(torch.randn(500, 3) * 1.5)
    assert torch.allclose(rot6d_to_matrix(matrix_to_rot6d(m)), m, atol=1e-6)
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(m)), m, atol=1e-5)
    assert float(matrix_to_axis_angle(m).norm(dim=-1).max()) <= math.pi + 1e-5


def test_official_checkpoint_converts_and_decodes_the_same(tmp_path):
    torch.manual_seed(3)
    ours = VPoser(hidden=32).eval()
    for p in ours.parameters():
        p.data.normal_()
    ours.encoder_net[1].running_mean.normal_()
    ours.encoder_net[1].running_var.uniform_(0.5, 2.0)
    # The released Lightning checkpoint: {"state_dict": {"vp_model.<our key>": ...}, ...}.
    official = {"state_dict": {OFFICIAL_PREFIX + k: v.clone() for k, v in ours.state_dict().items()},
                "epoch": 5, "hyper_parameters": {}}
    path = tmp_path / "V02_05_epoch=08_val_loss=0.03.ckpt"
    torch.save(official, path)
    loaded = VPoser(hidden=32, weights=str(path))
    loaded.load_pretrained()
    loaded.eval()
    z = torch.randn(4, 32)
    assert torch.equal(loaded.decode(z), ours.decode(z))
    x = torch.randn(4, 63) * 0.3
    assert torch.equal(loaded.encode(x)[0], ours.encode(x)[0])


def test_missing_and_foreign_weight_files(tmp_path):
    missing = tmp_path / "V02_05" / "snapshots" / "V02_05_epoch=08.ckpt"
    with pytest.raises(FileNotFoundError) as err:
        VPoser(hidden=32, weights=str(missing)).load_pretrained()
    msg = str(err.value)
    assert msg.startswith(f"VPoser: weights file {missing} not found; expected VPoser v2.0 (V02_05) from "
                          f"https://smpl-x.is.tue.mpg.de")
    assert "hoi-zoo never downloads" in msg
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(2, 2)}}, other)
    vp = VPoser(hidden=32)
    with pytest.raises(CheckpointError, match=r"^" + str(other).replace(".", r"\.") + r": not a VPoser v2 checkpoint: "
                       r"no vp_model\.encoder_net\.\* / vp_model\.decoder_net\.\* keys \(got model\.fc\.weight\); "
                       r"expected the V02_05 Lightning checkpoint's keys \(vp_model\.encoder_net\.1\.weight, "):
        load_weights(vp, str(other))
