"""Official DECO checkpoint -> zoo DECO through the checkpoint store's one load path, and the COCO pose HRNet-W32
layout -> our timm HRNet encoders.

Checkpoints are saved the way the release's trainer saves them (``TrainStepper.save``: epoch, the model state
dict under ``deco``, ``f1`` as a numpy float64 and the three Adam states), both as numpy 2 pickles them and as
numpy 1 did (the release's environment: ``numpy.core.multiarray.scalar``). The official key layout is the one
recorded in tests/fixtures/golden/deco_forward.npz (made by the release's own modules); the small-HRNet
generator below is checked against it first.
"""
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.core.hub import CheckpointError
from zoo.systems.deco_convert import EXPECTED_LAYOUT, convert_official_deco, load_official_deco, official_globals

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "deco_forward.npz"
EXPECTED = "expected the DECO release's deco_best.pth"
assert EXPECTED_LAYOUT.startswith(EXPECTED)

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


def golden_layout(prefix="encoder_sem.encoder."):
    """{key: shape} of the official state dict recorded in the golden file (keys under ``prefix``, prefix removed)."""
    with np.load(GOLDEN) as z:
        keys, shapes, ndim = z["state_dict_keys"], z["state_dict_shapes"], z["state_dict_ndim"]
    return {str(k)[len(prefix):]: tuple(int(x) for x in s[: int(n)])
            for k, s, n in zip(keys, shapes, ndim, strict=True) if str(k).startswith(prefix)}


def release_optimizers(sd, lr=1e-5):
    """The release's three Adams (TrainStepper.__init__) over parameters holding ``sd``'s float tensors, after one
    step on a made-up gradient, so that each state dict holds step / exp_avg / exp_avg_sq like a trained one."""
    params = {k: torch.nn.Parameter(v.clone()) for k, v in sd.items() if v.is_floating_point()}

    def under(*prefixes):
        return [p for k, p in params.items() if k.startswith(prefixes)]

    optims = {"sem_optim": torch.optim.Adam(under("encoder_sem.", "decoder_sem."), lr=lr, weight_decay=1e-4),
              "part_optim": torch.optim.Adam(under("encoder_part.", "decoder_part."), lr=lr, weight_decay=1e-4),
              "contact_optim": torch.optim.Adam(under("encoder_sem.", "encoder_part.", "cross_att.", "classif."),
                                                lr=lr, weight_decay=1e-4)}
    for p in params.values():
        p.grad = torch.ones_like(p) * 1e-3
    for opt in optims.values():
        opt.step()
    return {k: opt.state_dict() for k, opt in optims.items()}


def as_numpy1_pickle(path):
    """Rewrite a torch.save file so its numpy scalar is pickled under numpy 1's module name, as the release's
    file is (``numpy.core.multiarray.scalar``; numpy 2 writes ``numpy._core.multiarray.scalar``)."""
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    n2, n1 = b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            if name.endswith("/data.pkl"):
                assert data.count(n2) == 1, "expected one numpy scalar in the pickle"
                data = data.replace(n2, n1)
            zf.writestr(name, data)
    return path


_OPTIM_STATES: dict = {}


def save_like_release(path, sd, epoch=12, f1=np.float64(0.55), numpy1=True, **extra):
    """TrainStepper.save: {'epoch', 'deco', 'f1', 'sem_optim', 'part_optim', 'contact_optim'}."""
    key = tuple(sd)  # the Adam states of one layout are made once per module
    if key not in _OPTIM_STATES:
        _OPTIM_STATES[key] = release_optimizers(sd)
    torch.save({"epoch": epoch, "deco": sd, "f1": f1, **_OPTIM_STATES[key], **extra}, path)
    return as_numpy1_pickle(path) if numpy1 and isinstance(f1, np.float64) else path


SMALL = dict(width=16, hrnet=SMALL_HRNET, hidden=32, n_vert=50)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A small DECO saved as the release saves it (numpy 1 pickling, as the real file)."""
    sd = random_state(official_deco_shapes(SMALL["width"], SMALL["hrnet"], hidden=SMALL["hidden"],
                                           n_vert=SMALL["n_vert"]))
    path = tmp_path_factory.mktemp("deco") / "deco_best.pth"
    save_like_release(path, sd, numpy1=True)
    return path, sd


@pytest.fixture(scope="module")
def small_sd():
    return random_state(official_deco_shapes(SMALL["width"], SMALL["hrnet"], hidden=SMALL["hidden"],
                                             n_vert=SMALL["n_vert"]))


def test_generator_reproduces_the_official_layout():
    """The generator's W32 layout is the one the release's modules produced (golden metadata), so its small
    configurations are release layouts too."""
    theirs = golden_layout()
    ours = {k: tuple(v) for k, v in official_hrnet_shapes(32, **OFFICIAL_HRNET).items()}
    assert ours == theirs
    with np.load(GOLDEN) as z:
        full = {str(k) for k in z["state_dict_keys"]}
    assert set(official_deco_shapes(32, OFFICIAL_HRNET, hidden=4096, n_vert=6890)) == full


def test_release_hrnet_w32_layout_equals_timm_encoder():
    from zoo.models.backbone.timm_backbone import TimmBackbone

    with torch.device("meta"):  # shapes only
        ours = {k: tuple(v.shape) for k, v in TimmBackbone(model="hrnet_w32").model.state_dict().items()}
    theirs = golden_layout()
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


def test_unshared_cross_attention_keeps_second_block(small_sd):
    sd = small_sd
    conv = convert_official_deco({"deco": sd}, shared_cross_attn=False)
    assert torch.equal(conv["cross_att.cross_attn_2.key_conv.weight"], sd["cross_att.cross_attn_2.key_conv.weight"])
    assert not any("final_layer" in k for k in conv)
    assert "cross_att.cross_attn_2.key_conv.weight" not in convert_official_deco(sd)


@pytest.mark.parametrize("numpy1", [True, False], ids=["numpy1", "numpy2"])
def test_release_file_needs_exactly_the_numpy_scalar_allow_list(small_sd, tmp_path, numpy1):
    """torch.load(weights_only=True) refuses the release's f1; official_globals() admits it, and nothing else."""
    path = save_like_release(tmp_path / "deco_best.pth", small_sd, numpy1=numpy1)
    with pytest.raises(Exception, match="weights_only|Weights only load failed"):
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals(official_globals()):
        obj = torch.load(path, weights_only=True)
    assert type(obj["f1"]) is np.float64 and obj["f1"] == 0.55
    assert sorted(obj) == ["contact_optim", "deco", "epoch", "f1", "part_optim", "sem_optim"]
    assert obj["contact_optim"]["state"][0]["exp_avg"].shape == obj["deco"]["encoder_sem.encoder.conv1.weight"].shape
    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in official_globals()}
    assert names == {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
                     "numpy.dtypes.Float64DType"}


@pytest.mark.parametrize("f1, refused", [(np.array(0.55), "_reconstruct"), (np.float32(0.55), "Float32DType")])
def test_pickle_beyond_the_allow_list_stops_naming_the_file(small_sd, tmp_path, f1, refused):
    """An ndarray or a float32 scalar is not what the release writes: refused (never a full unpickle), and the
    error names the file, what torch refused and the layout that was expected, on every load path."""
    from zoo.core import hub, registry

    path = save_like_release(tmp_path / "deco_best.pth", small_sd, f1=f1)
    with hub.pretrained_disabled():
        model = registry.build("system", {"name": "deco", "backbone": {"name": "timm", "model": "hrnet_w18_small",
                                                                       "out_channels": 240},
                               "classifier_hidden": 32, "num_vertices": 50, "optim": {"name": "adam"}, "metrics": []})
    model.hparams.weights = str(path)  # as system.weights=... in a recipe: loaded by DECO.load_pretrained
    for load in (lambda: load_official_deco(path, backbone={"model": "hrnet_w18_small"}), model.load_pretrained):
        with pytest.raises(CheckpointError) as e:
            load()
        msg = str(e.value)
        assert str(path) in msg and refused in msg and EXPECTED in msg, msg
        assert "trust=true" in msg
    with pytest.raises(CheckpointError, match=rf"{path}.*torch refused .*{refused}.*DECO.weights_only_globals"):
        hub.load_weights(model, path)


def test_unexpected_layout_stops_naming_the_file(small_sd, tmp_path):
    sd = small_sd
    kw = {"backbone": {"model": "hrnet_w18_small"}}
    extra_top = save_like_release(tmp_path / "extra_top.pth", sd, model=sd)
    with pytest.raises(CheckpointError, match=rf"{extra_top}: unexpected top-level key\(s\) \['model'\] beside 'deco'; "
                                              rf"{EXPECTED}"):
        load_official_deco(extra_top, **kw)
    not_sd = tmp_path / "not_sd.pth"
    torch.save({"deco": [1, 2], "epoch": 3}, not_sd)
    with pytest.raises(CheckpointError, match=rf"{not_sd}: key 'deco' holds a list, not the model state dict; {EXPECTED}"):
        load_official_deco(not_sd)
    swin = save_like_release(tmp_path / "swin.pth", {**sd, "encoder_sem.encoder.features.0.0.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=rf"{swin}: 1 key\(s\) of the official checkpoint have no mapping: "
                                              rf"\['encoder_sem.encoder.features.0.0.weight'\] \(only the HRNet DECO "
                                              rf"layout is supported; {EXPECTED}"):
        convert_official_deco(swin)


def test_errors_name_the_key(small_sd, tmp_path):
    sd = small_sd
    extra = dict(sd, **{"cross_att.gate.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"1 key\(s\) of the official checkpoint have no mapping: "
                                              r"\['cross_att.gate.weight'\]"):
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


# ---------------------------------------------------------------------------------------------------------
# Item 17: the COCO pose HRNet-W32 (pose_hrnet_w32_256x192.pth) into our timm HRNet encoders


def pose_hrnet_state(seed=0, joints=17):
    """A synthetic pose_hrnet_w32_256x192.pth: the release's HRNet layout (golden metadata) with a COCO keypoint
    head of ``joints`` outputs; weights scaled so activations stay O(1), BN statistics non-trivial."""
    layout = golden_layout()
    layout["final_layer.weight"] = (joints, layout["final_layer.weight"][1], 1, 1)
    layout["final_layer.bias"] = (joints,)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) > 1:
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.1 + (1.0 if k.endswith("weight") else 0.0)
    return sd


def pose_hrnet_reference(w, x):
    """The pose HRNet forward written from its architecture (stem, Bottleneck layer1, transitions, stages of
    BasicBlock branches with sum fusion, bilinear align_corners concatenation), reading tensors by their release
    names: an independent check of the mapping onto timm's modules."""
    def bn(t, p):
        return F.batch_norm(t, w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"], w[f"{p}.bias"],
                            False, 0.0, 1e-5)

    def conv(t, p, stride=1):
        k = w[f"{p}.weight"]
        return F.conv2d(t, k, None, stride, k.shape[-1] // 2)

    def count(prefix):
        return len({k[len(prefix):].split(".")[0] for k in w if k.startswith(prefix)})

    x = F.relu(bn(conv(x, "conv1", 2), "bn1"))
    x = F.relu(bn(conv(x, "conv2", 2), "bn2"))
    for b in range(count("layer1.")):
        p = f"layer1.{b}"
        y = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
        y = F.relu(bn(conv(y, f"{p}.conv2"), f"{p}.bn2"))
        y = bn(conv(y, f"{p}.conv3"), f"{p}.bn3")
        res = bn(conv(x, f"{p}.downsample.0"), f"{p}.downsample.1") if f"{p}.downsample.0.weight" in w else x
        x = F.relu(y + res)
    xs = [x]
    for stage in (2, 3, 4):
        t = f"transition{stage - 1}"
        new = []
        for i in range(count(f"stage{stage}.0.branches.")):
            if f"{t}.{i}.0.weight" in w:  # same resolution, new width
                new.append(F.relu(bn(conv(xs[i], f"{t}.{i}.0"), f"{t}.{i}.1")))
            elif f"{t}.{i}.0.0.weight" in w:  # a new branch: stride-2 convs from the last one
                y = xs[-1]
                for j in range(count(f"{t}.{i}.")):
                    y = F.relu(bn(conv(y, f"{t}.{i}.{j}.0", 2), f"{t}.{i}.{j}.1"))
                new.append(y)
            else:
                new.append(xs[i])
        xs = new
        for m in range(count(f"stage{stage}.")):
            p = f"stage{stage}.{m}"
            for br in range(len(xs)):
                for k in range(count(f"{p}.branches.{br}.")):
                    q = f"{p}.branches.{br}.{k}"
                    y = F.relu(bn(conv(xs[br], f"{q}.conv1"), f"{q}.bn1"))
                    xs[br] = F.relu(bn(conv(y, f"{q}.conv2"), f"{q}.bn2") + xs[br])
            fused = []
            for i in range(len(xs)):
                total = None
                for j in range(len(xs)):
                    q = f"{p}.fuse_layers.{i}.{j}"
                    if j == i:
                        y = xs[j]
                    elif j > i:
                        y = F.interpolate(bn(conv(xs[j], f"{q}.0"), f"{q}.1"), scale_factor=2 ** (j - i), mode="nearest")
                    else:
                        y = xs[j]
                        for n in range(i - j):
                            y = bn(conv(y, f"{q}.{n}.0", 2), f"{q}.{n}.1")
                            y = y if n == i - j - 1 else F.relu(y)
                    total = y if total is None else total + y
                fused.append(F.relu(total))
            xs = fused
    size = xs[0].shape[-2:]
    return torch.cat([xs[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in xs[1:]], 1)


@pytest.fixture(scope="module")
def pose_file(tmp_path_factory):
    sd = pose_hrnet_state()
    path = tmp_path_factory.mktemp("pose") / "pose_hrnet_w32_256x192.pth"
    torch.save(sd, path)
    return path, sd


def test_pose_hrnet_maps_every_key_and_reproduces_its_forward(pose_file):
    from zoo.core import registry

    path, sd = pose_file
    bb = registry.build("backbone", {"name": "timm", "model": "hrnet_w32", "weights": str(path)}).eval()
    own = bb.model.state_dict()
    body = {k for k in sd if not k.startswith("final_layer.")}
    assert set(own) == body, "every pose-HRNet body key has its timm module, and only those"
    assert bb.ignored_weight_keys == ["final_layer.bias", "final_layer.weight"]
    assert set(bb._zoo_weights["keys"]) == {f"model.{k}" for k in body}
    assert all(own[k].shape == sd[k].shape and torch.equal(own[k], sd[k]) for k in body)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))  # strides up to 32 divide it
    with torch.no_grad():
        ref, got = pose_hrnet_reference(sd, x), bb(x)
    assert got.shape == ref.shape == (2, 480, 16, 24)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_pose_hrnet_prefixed_and_foreign_layouts(pose_file, tmp_path):
    from zoo.core import registry

    _, sd = pose_file
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    bb = registry.build("backbone", {"name": "timm", "model": "hrnet_w32", "weights": str(wrapped)})
    assert torch.equal(bb.model.stage4[2].fuse_layers[3][0][2][0].weight, sd["stage4.2.fuse_layers.3.0.2.0.weight"])
    foreign = tmp_path / "mmpose.pth"
    torch.save({f"backbone.{k}": v for k, v in sd.items()}, foreign)
    with pytest.raises(CheckpointError, match=rf"HRNet weights {foreign}: \d+ key\(s\) do not map onto timm's HRNet "
                                              r"\(keys outside the pose-HRNet layout\): \['backbone.conv1.weight'.*"
                                              r"expected the pose-HRNet layout of pose_hrnet_w32_256x192.pth"):
        registry.build("backbone", {"name": "timm", "model": "hrnet_w32", "weights": str(foreign)})
    w48 = tmp_path / "w48.pth"
    torch.save({**sd, "stage4.0.branches.0.4.conv1.weight": torch.zeros(32, 32, 3, 3)}, w48)
    with pytest.raises(CheckpointError, match=r"1 HRNet key\(s\) this model does not have"):
        registry.build("backbone", {"name": "timm", "model": "hrnet_w32", "weights": str(w48)})


def test_deco_encoders_start_from_the_pose_weights(pose_file):
    from zoo.core import registry

    path, sd = pose_file
    model = registry.build("system", {"name": "deco", "backbone": {"name": "timm", "model": "hrnet_w32",
                                                                   "out_channels": 480, "weights": str(path)},
                                      "classifier_hidden": 8, "num_vertices": 10, "pretrained_encoders": True,
                                      "optim": {"name": "adam"}, "metrics": []})
    for enc in (model.encoder_sem, model.encoder_part):
        assert torch.equal(enc.model.conv1.weight, sd["conv1.weight"])
        assert torch.equal(enc.model.stage3[3].branches[2][3].bn2.running_var, sd["stage3.3.branches.2.3.bn2.running_var"])
    assert not getattr(model, "random_init_warned", False)
