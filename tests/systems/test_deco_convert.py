"""Official DECO checkpoint -> zoo DECO through the checkpoint store's one load path; the official key layout
is generated from the release's naming scheme, and the file is saved the way the release's trainer saves it
(``f1`` as a numpy float64, optimiser states beside the weights)."""
import numpy as np
import pytest
import torch

from zoo.core.hub import CheckpointError
from zoo.systems.deco_convert import convert_official_deco, load_official_deco

# The release's HRNet config (utils/hrnet.py get_cfg_defaults): layer1 = 4 Bottlenecks of 64
# planes; stages of (modules, branches, blocks per branch), widths W * 2^branch.
OFFICIAL_HRNET = dict(layer1=(64, 4), stages=[(1, 2, 4), (4, 3, 4), (3, 4, 4)])
# timm's hrnet_w18_small in the same scheme (layer1 = 1 Bottleneck of 32 planes, 2 blocks per branch)
SMALL_HRNET = dict(layer1=(32, 1), stages=[(1, 2, 2), (1, 3, 2), (1, 4, 2)])


def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_hrnet_shapes(width, layer1=(64, 4), stages=((1, 2, 4), (4, 3, 4), (3, 4, 4)), joints=24):
    """Key -> shape of the release's PoseHighResolutionNet (stem, layer1, transitions, stages, final_layer)."""
    s = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "conv2.weight": (64, 64, 3, 3), **_bn("bn2", 64)}
    planes, nblocks = layer1
    inp = 64
    for b in range(nblocks):
        p = f"layer1.{b}"
        s.update({f"{p}.conv1.weight": (planes, inp, 1, 1), **_bn(f"{p}.bn1", planes),
                  f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes),
                  f"{p}.conv3.weight": (planes * 4, planes, 1, 1), **_bn(f"{p}.bn3", planes * 4)})
        if b == 0 and inp != planes * 4:
            s.update({f"{p}.downsample.0.weight": (planes * 4, inp, 1, 1), **_bn(f"{p}.downsample.1", planes * 4)})
        inp = planes * 4
    pre = [inp]
    for si, (modules, branches, blocks) in enumerate(stages):
        cur = [width * 2 ** i for i in range(branches)]
        t = f"transition{si + 1}"
        for i in range(branches):
            if i < len(pre):
                if cur[i] != pre[i]:
                    s.update({f"{t}.{i}.0.weight": (cur[i], pre[i], 3, 3), **_bn(f"{t}.{i}.1", cur[i])})
            else:
                for j in range(i + 1 - len(pre)):
                    out = cur[i] if j == i - len(pre) else pre[-1]
                    s.update({f"{t}.{i}.{j}.0.weight": (out, pre[-1], 3, 3), **_bn(f"{t}.{i}.{j}.1", out)})
        for m in range(modules):
            p = f"stage{si + 2}.{m}"
            for br in range(branches):
                c = cur[br]
                for k in range(blocks):
                    q = f"{p}.branches.{br}.{k}"
                    s.update({f"{q}.conv1.weight": (c, c, 3, 3), **_bn(f"{q}.bn1", c),
                              f"{q}.conv2.weight": (c, c, 3, 3), **_bn(f"{q}.bn2", c)})
            for i in range(branches):
                for j in range(branches):
                    q = f"{p}.fuse_layers.{i}.{j}"
                    if j > i:
                        s.update({f"{q}.0.weight": (cur[i], cur[j], 1, 1), **_bn(f"{q}.1", cur[i])})
                    elif j < i:
                        for k in range(i - j):
                            out = cur[i] if k == i - j - 1 else cur[j]
                            s.update({f"{q}.{k}.0.weight": (out, cur[j], 3, 3), **_bn(f"{q}.{k}.1", out)})
        pre = cur
    s.update({"final_layer.weight": (joints, width, 1, 1), "final_layer.bias": (joints,)})
    return s


def official_deco_shapes(width, hrnet, hidden, n_vert, n_scene=133, n_part=26):
    """Key -> shape of the release's DECO (hrnet encoder, context decoders, Cross_Att, Classifier)."""
    feat = 15 * width
    s = {}
    for enc in ("encoder_sem", "encoder_part"):
        s.update({f"{enc}.encoder.{k}": v for k, v in official_hrnet_shapes(width, **hrnet).items()})
    for dec, n in (("decoder_sem", n_scene), ("decoder_part", n_part)):
        s.update({f"{dec}.upsample.0.weight": (feat, n, 3, 3), f"{dec}.upsample.0.bias": (n,),
                  **_bn(f"{dec}.upsample.1", n),
                  f"{dec}.upsample.3.weight": (n, n, 3, 3), f"{dec}.upsample.3.bias": (n,),
                  **_bn(f"{dec}.upsample.4", n)})
    for a in ("cross_attn_1", "cross_attn_2"):
        for c in ("query_conv", "key_conv", "value_conv"):
            s.update({f"cross_att.{a}.{c}.weight": (feat, feat, 1), f"cross_att.{a}.{c}.bias": (feat,)})
    s.update({"cross_att.layer_norm.weight": (1, feat), "cross_att.layer_norm.bias": (1, feat),
              "classif.classifier.0.weight": (hidden, feat), "classif.classifier.0.bias": (hidden,),
              "classif.classifier.2.weight": (n_vert, hidden), "classif.classifier.2.bias": (n_vert,)})
    return s


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(v, generator=g) * 0.05)
            for k, v in shapes.items()}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    sd = random_state(official_deco_shapes(16, SMALL_HRNET, hidden=32, n_vert=50))
    path = tmp_path_factory.mktemp("deco") / "deco_best.pth"
    torch.save({"epoch": 12, "deco": sd, "f1": np.float64(0.55), "contact_optim": {"state": {}, "param_groups": []}},
               path)
    return path, sd


def test_release_hrnet_w32_layout_equals_timm_encoder():
    from zoo.models.backbone.timm_backbone import TimmBackbone

    ours = {k: tuple(v.shape) for k, v in TimmBackbone(model="hrnet_w32").model.state_dict().items()}
    theirs = {k: tuple(v) for k, v in official_hrnet_shapes(32, **OFFICIAL_HRNET).items()}
    assert set(theirs) - set(ours) == {"final_layer.weight", "final_layer.bias"}
    assert set(ours) <= set(theirs)
    assert all(ours[k] == theirs[k] for k in ours)


def test_load_official_round_trip(official):
    path, sd = official
    model = load_official_deco(str(path), backbone={"model": "hrnet_w18_small"})
    hp = model.hparams
    assert hp.backbone == {"name": "timm", "model": "hrnet_w18_small", "out_channels": 240}
    assert (hp.classifier_hidden, hp.num_vertices) == (32, 50)
    assert model.official_meta == {"epoch": 12, "f1": 0.55}
    assert torch.equal(model.encoder_part.model.stage4[0].fuse_layers[3][0][2][0].weight,
                       sd["encoder_part.encoder.stage4.0.fuse_layers.3.0.2.0.weight"])
    assert torch.equal(model.decoder_sem.upsample[3].weight, sd["decoder_sem.upsample.3.weight"])
    assert torch.equal(model.cross_att.cross_attn_1.value_conv.bias, sd["cross_att.cross_attn_1.value_conv.bias"])
    assert torch.equal(model.classif.classifier[2].weight, sd["classif.classifier.2.weight"])
    assert model.cross_att.cross_attn_2 is None
    assert model._zoo_weights["path"] == str(path)  # loaded through zoo.core.hub.load_weights
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["contact"].shape == (1, 50) and out["scene_logits"].shape == (1, 133, 64, 64)


def test_recipe_weights_load_the_official_file(official):
    from zoo.core.registry import build

    path, sd = official
    cfg = {"name": "deco", "backbone": {"name": "timm", "model": "hrnet_w18_small", "out_channels": 240},
           "classifier_hidden": 32, "num_vertices": 50, "optim": {"name": "adam"}, "metrics": [],
           "weights": str(path)}
    model = build("system", cfg)  # built, then the official file converted and loaded
    assert torch.equal(model.encoder_sem.model.conv1.weight, sd["encoder_sem.encoder.conv1.weight"])


def test_unshared_cross_attention_keeps_second_block(official):
    _, sd = official
    conv = convert_official_deco({"deco": sd}, shared_cross_attn=False)
    assert torch.equal(conv["cross_att.cross_attn_2.key_conv.weight"], sd["cross_att.cross_attn_2.key_conv.weight"])
    assert not any("final_layer" in k for k in conv)
    assert "cross_att.cross_attn_2.key_conv.weight" not in convert_official_deco(sd)


def test_errors_name_the_key(official, tmp_path):
    _, sd = official
    extra = dict(sd, **{"cross_att.gate.weight": torch.zeros(3)})
    with pytest.raises(KeyError, match=r"1 keys of the official checkpoint have no mapping: \['cross_att.gate.weight'\]"):
        convert_official_deco({"deco": extra})
    missing = tmp_path / "missing.pth"
    torch.save({"deco": {k: v for k, v in sd.items() if k != "classif.classifier.0.bias"}}, missing)
    with pytest.raises(CheckpointError, match=r"missing.pth\) do not fit system/deco: missing 1 key\(s\): "
                                              r"classif.classifier.0.bias$"):
        load_official_deco(missing, backbone={"model": "hrnet_w18_small"})
    bad = tmp_path / "bad.pth"
    torch.save({"deco": dict(sd, **{"decoder_part.upsample.4.weight": torch.zeros(27)})}, bad)
    with pytest.raises(CheckpointError, match=r"1 shape mismatch\(es\) \(file vs module\): "
                                              r"decoder_part.upsample.4.weight \(27,\) vs \(26,\)"):
        load_official_deco(bad, backbone={"model": "hrnet_w18_small"}, num_part_classes=26)
    with pytest.raises(FileNotFoundError, match="official DECO checkpoint not found: .*deco_best.pth"):
        load_official_deco(str(tmp_path / "deco_best.pth"))
