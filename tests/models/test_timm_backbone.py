"""TimmBackbone: DECO-style multi-level concatenation, projection, weights from a local file."""
import pytest
import torch
import torch.nn.functional as F

from zoo.models.backbone.timm_backbone import TimmBackbone


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(0)
    return torch.randn(2, 3, 64, 64)


def test_hrnet_branches_concatenate_to_15x_width_at_quarter_resolution(image):
    # hrnet_w18_small has widths 16/32/64/128 -> 240 = 15 * 16 channels, like 480 for W32
    bb = TimmBackbone(model="hrnet_w18_small", out_channels=None).eval()
    assert bb.concat_channels == 240 and bb.out_channels == 240 and bb.reduction == 4
    assert isinstance(bb.proj, torch.nn.Identity)
    with torch.no_grad():
        y = bb(image)
        feats = bb.model(image)
    assert y.shape == (2, 240, 16, 16)
    # first block is the 1/4 branch itself; the 1/32 branch is bilinearly upsampled (align_corners)
    assert torch.equal(y[:, :16], feats[1])
    up = F.interpolate(feats[4], size=(16, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(y[:, 112:], up)


def test_resnet_swap_projects_to_requested_width(image):
    bb = TimmBackbone(model="resnet18", out_channels=48).eval()
    assert bb.concat_channels == 64 + 128 + 256 + 512
    assert isinstance(bb.proj, torch.nn.Conv2d) and bb.proj.in_channels == 960 and bb.proj.out_channels == 48
    with torch.no_grad():
        assert bb(image).shape == (2, 48, 16, 16)


def test_out_indices_select_levels(image):
    bb = TimmBackbone(model="test_byobnet", out_indices=[3], out_channels=None)
    assert bb.out_channels == 128 and bb.reduction == 16
    assert bb(image).shape == (2, 128, 4, 4)


def test_unknown_model_and_bad_input():
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'.*closest"):
        TimmBackbone(model="resnet1800")
    bb = TimmBackbone(model="test_byobnet", out_indices=[3], out_channels=None)
    with pytest.raises(ValueError, match=r"expected image of shape \(B,3,H,W\), got \(2, 1, 32, 32\)"):
        bb(torch.zeros(2, 1, 32, 32))


def test_weights_from_local_file_load_after_building(tmp_path, image):
    from zoo.core.hub import CheckpointError
    from zoo.core.registry import build

    src = TimmBackbone(model="test_byobnet", out_indices=[3], out_channels=None).eval()
    sd = dict(src.model.state_dict())
    sd["head.fc.weight"] = torch.zeros(3)  # a classifier key the feature model lacks: ignored
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    cfg = {"name": "timm", "model": "test_byobnet", "out_indices": [3], "out_channels": None}
    dst = build("backbone", {**cfg, "weights": str(path)}).eval()
    assert dst.ignored_weight_keys == ["head.fc.weight"]
    with torch.no_grad():
        torch.testing.assert_close(dst(image), src(image))
    proj = build("backbone", {**cfg, "out_channels": 8, "weights": str(path)})  # the 1x1 projection stays random
    assert isinstance(proj.proj, torch.nn.Conv2d)

    with pytest.raises(FileNotFoundError, match=r"checkpoint path not found: .*nope.pth"):
        build("backbone", {**cfg, "weights": str(tmp_path / "nope.pth")})
    first = next(iter(src.model.state_dict()))
    del sd[first]
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=rf"w.pth\) do not fit backbone/timm: missing 1 key\(s\): model.{first}$"):
        build("backbone", {**cfg, "weights": str(path)})


def test_registered_as_backbone_timm():
    from zoo.core.registry import get

    assert get("backbone", "timm") is TimmBackbone
