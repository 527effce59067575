"""Camera / identity lifters: structure, hand-computed gates, per-view equivalence, the official key layout, errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo.models.lifter.camera_lifter import CameraLifter, IdentityLifter

# InteractVLM's four body views (dist, elev, azim, x, y) normalised as their dataset does.
CAMS = torch.tensor([[2, 45, 315, 0, 0], [2, 315, 315, 0, 0.3], [2, 45, 135, 0, 0], [2, 315, 135, 0, 0.3]],
                    dtype=torch.float32)
CAMS = torch.stack([CAMS[:, 0] / 10, CAMS[:, 1] / 360, CAMS[:, 2] / 360, (CAMS[:, 3] + 1) / 2,
                    (CAMS[:, 4] + 1) / 2], dim=1)


def test_shapes_and_parameter_layout():
    lifter = CameraLifter()
    out = lifter(torch.randn(3, 256), CAMS)
    assert out.shape == (3, 4, 256)
    shapes = {n: tuple(p.shape) for n, p in lifter.named_parameters()}
    assert shapes == {"shared.0.weight": (128, 5), "shared.0.bias": (128,), "shared.2.weight": (128, 128),
                      "shared.2.bias": (128,), "view_weight": (4, 128, 256), "view_bias": (4, 256)}
    assert torch.all(lifter.view_bias == 0)
    # Xavier-uniform bound for a Linear(128 -> 256)
    bound = math.sqrt(6.0 / (128 + 256))
    assert lifter.view_weight.abs().max() <= bound


def test_hand_computed_gate():
    lifter = CameraLifter(num_views=2, in_dim=1, hidden=1, embed_dim=2)
    with torch.no_grad():
        lifter.shared[0].weight.fill_(1.0)
        lifter.shared[0].bias.fill_(0.0)
        lifter.shared[2].weight.fill_(2.0)
        lifter.shared[2].bias.fill_(-1.0)
        lifter.view_weight.copy_(torch.tensor([[[1.0, -1.0]], [[0.0, 2.0]]]))
        lifter.view_bias.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    cams = torch.tensor([[1.0], [0.25]])
    # view 0: h = relu(2 * relu(1) - 1) = 1 -> gate sigmoid([1, -1]); view 1: h = relu(0.5 - 1) = 0 -> sigmoid([1, 0])
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expect_gates = torch.tensor([[s(1), s(-1)], [s(1), 0.5]])
    assert torch.allclose(lifter.gates(cams), expect_gates, atol=1e-6)
    prompt = torch.tensor([[2.0, 4.0]])
    out = lifter(prompt, cams)
    assert torch.allclose(out, prompt[:, None] * expect_gates[None], atol=1e-6)


def test_einsum_equals_separate_linear_layers():
    torch.manual_seed(0)
    lifter = CameraLifter()
    prompt = torch.randn(2, 256)
    out = lifter(prompt, CAMS)
    h = lifter.shared(CAMS)
    for v in range(4):
        layer = nn.Linear(128, 256)
        with torch.no_grad():
            layer.weight.copy_(lifter.view_weight[v].T)
            layer.bias.copy_(lifter.view_bias[v])
        gate = torch.sigmoid(layer(h[v]))
        assert torch.allclose(out[:, v], prompt * gate, atol=1e-6)
    assert 0 < lifter.gates(CAMS).min() and lifter.gates(CAMS).max() < 1


def test_gradients_reach_all_parameters():
    lifter = CameraLifter()
    lifter(torch.randn(2, 256), CAMS).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lifter.parameters())


def test_identity_repeats_prompt():
    lifter = IdentityLifter(num_views=3)
    prompt = torch.randn(2, 256)
    out = lifter(prompt, torch.zeros(3, 5))
    assert out.shape == (2, 3, 256)
    assert all(torch.equal(out[:, v], prompt) for v in range(3))
    assert len(list(lifter.parameters())) == 0


@pytest.mark.parametrize("cls", [CameraLifter, IdentityLifter])
def test_errors_name_expected_shapes(cls):
    lifter = cls()
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.forward: expected cams of shape \(4, 5\) \(one row of camera "
                                         r"numbers per view\), got \(3, 5\)"):
        lifter(torch.randn(2, 256), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.forward: expected prompt of shape \(B, 256\), got \(2, 128\)"):
        lifter(torch.randn(2, 128), CAMS)


def test_registry_and_hparams():
    from zoo.core import registry

    lifter = registry.build("lifter", {"name": "camera_lifter", "hidden": 32, "num_views": 2})
    assert isinstance(lifter, CameraLifter) and lifter.view_weight.shape == (2, 32, 256)
    assert dict(lifter.hparams) == {"num_views": 2, "in_dim": 5, "hidden": 32, "embed_dim": 256, "weights": None}
    assert isinstance(registry.build("lifter", "identity"), IdentityLifter)
    with pytest.raises(ValueError, match="CameraLifter: hidden must be >= 1, got 0"):
        CameraLifter(hidden=0)


def _official_encoder(num_views: int = 4, seed: int = 0, prefix: str = "cam_pose_encoder.") -> dict:
    """A state dict in InteractVLM's VIv1CamPoseEncoder layout (random values), inside a larger model's keys."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    state = {f"{prefix}spatial_encoder.0.weight": r(128, 5), f"{prefix}spatial_encoder.0.bias": r(128),
             f"{prefix}spatial_encoder.2.weight": r(128, 128) / 10, f"{prefix}spatial_encoder.2.bias": r(128)}
    for v in range(num_views):
        state[f"{prefix}view_transforms.{v}.weight"] = r(256, 128) / 10
        state[f"{prefix}view_transforms.{v}.bias"] = r(256)
    return state


def _official_forward(state: dict, prefix: str, prompt: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    """What InteractVLM computes: per view, sigmoid(view_transforms[v](spatial_encoder(cam_v))) times the token."""
    k = lambda name: state[prefix + name]  # noqa: E731
    h = torch.relu(torch.relu(cams @ k("spatial_encoder.0.weight").T + k("spatial_encoder.0.bias"))
                   @ k("spatial_encoder.2.weight").T + k("spatial_encoder.2.bias"))
    gates = torch.stack([torch.sigmoid(h[v] @ k(f"view_transforms.{v}.weight").T + k(f"view_transforms.{v}.bias"))
                         for v in range(cams.shape[0])])
    return prompt[:, None] * gates[None]


def test_official_layout_converts_and_loads_from_a_file(tmp_path):
    from zoo.core import registry
    from zoo.models.lifter.camera_lifter import convert_official_lifter

    prefix = "base_model.model.cam_pose_encoder."
    state = _official_encoder(prefix=prefix)
    state["base_model.model.lm_head.weight"] = torch.zeros(3, 3)  # the rest of the model is ignored
    prompt = torch.randn(2, 256)
    ours = convert_official_lifter(state, "x.pth")
    assert set(ours) == {"shared.0.weight", "shared.0.bias", "shared.2.weight", "shared.2.bias", "view_weight",
                         "view_bias"}
    assert ours["view_weight"].shape == (4, 128, 256) and ours["view_bias"].shape == (4, 256)
    path = tmp_path / "interactvlm.pth"
    torch.save(state, path)
    lifter = registry.build("lifter", {"name": "camera_lifter", "weights": str(path)})
    torch.testing.assert_close(lifter(prompt, CAMS), _official_forward(state, prefix, prompt, CAMS), rtol=1e-5,
                               atol=1e-6)
    # the encoder's own keys (no prefix) and our own layout load too
    bare = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    torch.testing.assert_close(convert_official_lifter(bare)["view_weight"], ours["view_weight"], rtol=0, atol=0)
    torch.save(lifter.state_dict(), tmp_path / "ours.pth")
    again = registry.build("lifter", {"name": "camera_lifter", "weights": str(tmp_path / "ours.pth")})
    torch.testing.assert_close(again(prompt, CAMS), lifter(prompt, CAMS), rtol=0, atol=0)


def test_unexpected_lifter_layout_names_file_and_expected_keys(tmp_path):
    from zoo.core import registry
    from zoo.core.hub import CheckpointError
    from zoo.models.lifter.camera_lifter import convert_official_lifter

    path = tmp_path / "other.pth"
    torch.save({"encoder.linear1.weight": torch.zeros(256, 5)}, path)
    with pytest.raises(CheckpointError, match=r"other\.pth.*not an InteractVLM camera lifter: no cam_pose_encoder\.\* "
                                              r"keys \(got encoder\.linear1\.weight\); expected cam_pose_encoder\."
                                              r"spatial_encoder\.\{0,2\}\.\{weight,bias\} and cam_pose_encoder\."
                                              r"view_transforms\.\{0\.\.3\}"):
        registry.build("lifter", {"name": "camera_lifter", "weights": str(path)})
    state = _official_encoder(num_views=3)
    with pytest.raises(CheckpointError, match=r"x\.pth: not an InteractVLM camera lifter: missing "
                                              r"cam_pose_encoder\.view_transforms\.3\.weight"):
        convert_official_lifter(state, "x.pth", num_views=4)
    state = _official_encoder()
    state["cam_pose_encoder.view_transforms.2.weight"] = torch.zeros(256, 64)
    with pytest.raises(CheckpointError, match=r"x\.pth: inconsistent camera lifter shapes: "
                                              r"cam_pose_encoder\.view_transforms\.2\.weight \(256, 64\) "
                                              r"\(expected \(256, 128\)\)"):
        convert_official_lifter(state, "x.pth")
