"""DECO system: shapes, hand-computed losses and attention, learning, metrics logging, errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.core.registry import build
from zoo.models.heads.deco import ChannelAttention, CrossAttention, SegDecoder
from zoo.systems.deco import DECO, deco_seg_bce, pixel_anchoring_render

V = 40  # a small vertex count keeps the tests fast; the code path is the same as for 6890
TINY = dict(backbone={"name": "timm", "model": "test_byobnet", "out_indices": [3], "out_channels": 64},
            classifier_hidden=256, decoder_upsample=1, seg_loss_size=32,
            optim={"name": "adam", "lr": 1e-3, "weight_decay": 0.0}, metrics=[{"name": "contact_prf"}])


def small_deco(**kw):
    """A tiny CPU configuration with a small vertex count, built (and materialized) through the registry."""
    torch.manual_seed(0)
    return build("system", {"name": "deco", **TINY, "num_vertices": V, **kw})


def make_batch(B=4, S=64, s=16, seed=0):
    """A fixed random DAMON-like batch."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.randint(0, 133, (B, s, s), generator=g)
    part = torch.randint(0, 26, (B, s, s), generator=g)
    return {
        "image": torch.randn(B, 3, S, S, generator=g),
        "contact_label": (torch.rand(B, V, generator=g) < 0.3).float(),
        "scene_seg": F.one_hot(scene, 133).permute(0, 3, 1, 2).to(torch.uint8),
        "part_seg": F.one_hot(part, 26).permute(0, 3, 1, 2).to(torch.uint8),
        "index": torch.arange(B),
        "imgname": [f"img{i}.jpg" for i in range(B)],
    }


@pytest.fixture(scope="module")
def model():
    return small_deco()


def test_forward_shapes_and_probabilities(model):
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    assert out["contact"].shape == (3, V)
    assert out["scene_logits"].shape == (3, 133, 8, 8)  # 1/16 features, one stride-2 layer
    assert out["part_logits"].shape == (3, 26, 8, 8)
    assert ((out["contact"] >= 0) & (out["contact"] <= 1)).all()
    torch.testing.assert_close(out["contact"], torch.sigmoid(out["contact_logits"]))
    assert torch.equal(model.predict_step({"image": torch.zeros(1, 3, 64, 64)}),
                       model(torch.zeros(1, 3, 64, 64))["contact"])


def test_official_decoder_layout():
    dec = SegDecoder(480, 133, 2)
    kinds = [type(m).__name__ for m in dec.upsample]
    assert kinds == ["ConvTranspose2d", "BatchNorm2d", "ReLU", "ConvTranspose2d", "BatchNorm2d"]
    assert dec(torch.zeros(1, 480, 64, 64)).shape == (1, 133, 256, 256)


def test_channel_attention_hand_computed():
    att = ChannelAttention(2)
    with torch.no_grad():
        for conv in (att.query_conv, att.key_conv, att.value_conv):
            conv.weight.copy_(torch.eye(2)[:, :, None])
            conv.bias.zero_()
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[2.0, 1.0]]])
    v = torch.tensor([[[3.0, 5.0]]])
    # energy = q k^T = [[2, 1], [0, 0]]; row softmax; out_i = sum_j a_ij v_j / sqrt(2)
    a0 = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    expected = torch.tensor([[[(a0[0] * 3 + a0[1] * 5).item(), 4.0]]]) / math.sqrt(2)
    torch.testing.assert_close(att(q, k, v), expected)


def _identity_attention(att, query_scale=1.0):
    with torch.no_grad():
        for conv in (att.query_conv, att.key_conv, att.value_conv):
            conv.weight.copy_(torch.eye(3)[:, :, None])
            conv.bias.zero_()
        att.query_conv.weight.mul_(query_scale)


def _layer_norm(x):
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    return [(v - mean) / math.sqrt(var + 1e-5) for v in x]


def test_cross_attention_hand_computed():
    """sem = (1, 0, 0), part = (0, 1, 2), identity projections. Scene-to-part attention (query sem):
    energy row 0 = part, rows 1, 2 = 0, so out_0 = (e + 2 e^2) / (1 + e + e^2) / sqrt 3 and
    out_1 = out_2 = mean(part) / sqrt 3 = 1 / sqrt 3. Part-to-scene (query part, key and value sem):
    row i = softmax(part_i, 0, 0) . (1, 0, 0) = e^{p_i} / (e^{p_i} + 2), over sqrt 3. The release
    (shared) uses the first block both ways; its fused token is LayerNorm(a * b)."""
    e, r3 = math.e, math.sqrt(3.0)
    sem, part = torch.tensor([[[1.0, 0.0, 0.0]]]), torch.tensor([[[0.0, 1.0, 2.0]]])
    a = [(e + 2 * e * e) / (1 + e + e * e) / r3, 1 / r3, 1 / r3]
    b = [1 / 3 / r3, e / (e + 2) / r3, e * e / (e * e + 2) / r3]
    shared = CrossAttention(3, shared=True)
    assert shared.cross_attn_2 is None
    _identity_attention(shared.cross_attn_1)
    torch.testing.assert_close(shared(sem, part), torch.tensor([[_layer_norm([x * y for x, y in zip(a, b, strict=True)])]]))
    # the paper's variant: a second block for part-to-scene; with a zero query its softmax is uniform,
    # so b_i = mean(sem) / sqrt 3 = 1 / (3 sqrt 3) for every i and the fused token is LayerNorm(a)
    paper = CrossAttention(3, shared=False)
    _identity_attention(paper.cross_attn_1)
    _identity_attention(paper.cross_attn_2, query_scale=0.0)
    torch.testing.assert_close(paper(sem, part), torch.tensor([[_layer_norm([x / 3 / r3 for x in a])]]))


def test_losses_hand_computed(model):
    B = 2
    batch = make_batch(B=B, s=16)
    batch["contact_label"][:] = 0
    batch["contact_label"][:, :10] = 1
    # zero logits: contact p = 0.5 -> BCE ln 2; segmentation softmax = 1/C everywhere
    out = {"contact_logits": torch.zeros(B, V), "scene_logits": torch.zeros(B, 133, 8, 8),
           "part_logits": torch.zeros(B, 26, 8, 8)}
    losses = model.compute_losses(batch, out)

    def seg(C):  # one positive and C-1 negatives per pixel, averaged over C
        p = 1.0 / C
        return -(math.log(p) + (C - 1) * math.log(1 - p)) / C

    assert losses["loss_cont"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert losses["loss_sem"].item() == pytest.approx(seg(133), rel=1e-5)
    assert losses["loss_part"].item() == pytest.approx(seg(26), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(math.log(2) + seg(133) + seg(26), rel=1e-5)
    assert "loss_pal" not in losses

    # a confident correct logit on sample 0 only, then mask sample 1 out of L_cont
    logits = torch.zeros(B, V)
    logits[0] = torch.where(batch["contact_label"][0] > 0, 20.0, -20.0)
    out["contact_logits"] = logits
    batch["has_contact_3d"] = torch.tensor([1, 0])
    assert model.compute_losses(batch, out)["loss_cont"].item() == pytest.approx(math.log1p(math.exp(-20)), abs=1e-8)


def test_seg_loss_resizes_logits_to_label_size():
    """Two classes, logits (2 x 2, varying along x: class 0 = (0, 2), class 1 = 0) against 4 x 4 labels
    (class 0 in columns 0, 1). Bilinear with half-pixel centres (align_corners=False, edges clamped)
    samples x at -0.25, 0.25, 0.75, 1.25 -> class-0 logits 0, 0.5, 1.5, 2. With two classes both
    channels' BCE equal -log p(true class), p0 = sigmoid(l0): the mean over the columns is
    (ln 2 + ln(1 + e^-0.5) + ln(1 + e^1.5) + ln(1 + e^2)) / 4. align_corners=True would give
    logits 0, 2/3, 4/3, 2 instead."""
    labels = torch.tensor([0, 0, 1, 1]).expand(1, 4, 4)
    onehot = F.one_hot(labels, 2).permute(0, 3, 1, 2).to(torch.uint8)
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, :, 1] = 2.0
    expected = (math.log(2) + math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.5)) + math.log1p(math.exp(2))) / 4
    assert deco_seg_bce(logits, onehot).item() == pytest.approx(expected, rel=1e-6)
    # size=2: labels by nearest neighbour (columns 0 and 2 -> classes 0, 1), logits kept at 2 x 2
    assert deco_seg_bce(logits, onehot, size=2).item() == pytest.approx((math.log(2) + math.log1p(math.exp(2))) / 2,
                                                                         rel=1e-6)


def test_weights_scale_terms():
    m = small_deco(w_sem=0.0, w_part=2.0, w_cont=3.0)
    batch = make_batch(B=2)
    with torch.no_grad():
        terms = m.compute_losses(batch, m(batch["image"]))
    torch.testing.assert_close(terms["loss"], 2.0 * terms["loss_part"] + 3.0 * terms["loss_cont"])


def test_optimisation_reduces_loss():
    m = small_deco(optim={"name": "adam", "lr": 1e-2, "weight_decay": 1e-4})
    batch = make_batch(B=4)
    opt = m.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-2 and opt.defaults["weight_decay"] == 1e-4
    m.train()
    history = []
    for _ in range(12):
        losses = m.compute_losses(batch, m(batch["image"]))
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    first = history[0]
    # at this lr the loss oscillates a little: judge the best of the last three steps. The
    # per-vertex labels of four fixed images are memorised quickly; the random segmentation
    # labels can only drift towards their class frequencies.
    best_cont = min(h["loss_cont"] for h in history[-3:])
    best = min(h["loss"] for h in history[-3:])
    assert best_cont < 0.8 * first["loss_cont"], history
    assert best < first["loss"] - 0.2, history


def test_backbone_swap_resnet_family():
    m = small_deco(backbone={"name": "timm", "model": "resnet18", "out_indices": [2], "out_channels": 32})
    assert m.encoder_sem.model.feature_info.channels() == [128]
    assert m.encoder_sem.proj.in_channels == 128 and m.encoder_sem.proj.out_channels == 32
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 64))
    assert out["contact"].shape == (2, V) and out["scene_logits"].shape == (2, 133, 16, 16)


def test_batch_errors_name_the_key(model):
    batch = make_batch(B=2)
    del batch["contact_label"]
    with pytest.raises(KeyError, match="training_step: batch is missing key 'contact_label'"):
        model.training_step(batch, 0)
    batch = make_batch(B=2)
    batch["scene_seg"] = batch["scene_seg"][:, :100]
    with pytest.raises(ValueError, match=r"batch\['scene_seg'\] has shape \(2, 100, 16, 16\), expected \(B,133,s,s\)"):
        model.training_step(batch, 0)
    batch = make_batch(B=2)
    batch["contact_label"] = batch["contact_label"][:, :7]
    with pytest.raises(ValueError, match=rf"batch\['contact_label'\] has shape \(2, 7\), expected \(2, {V}\)"):
        model.validation_step(batch, 0)
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        small_deco(w_cont=-1.0)
    with pytest.raises(ValueError, match=r"w_pal > 0 needs body_model \(a body_model sub-recipe"):
        small_deco(w_pal=1.0)


def test_registry_builds_deco():
    from zoo.core.registry import get

    assert get("system", "deco") is DECO
    m = build("system", {"name": "deco", **TINY, "num_vertices": V})
    assert m.hparams.num_vertices == V and m.hparams.backbone["model"] == "test_byobnet"
    assert m.encoder_sem is not m.encoder_part and m.classif.classifier[0].in_features == 64  # feature width from the backbone


def test_trainer_logs_losses_and_contact_metrics(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    from zoo.metrics.contact import ContactPRF, GeodesicError

    # a line graph as the "mesh": geodesic distance |i - j| centimetres
    idx = np.arange(V)
    geo = (np.abs(idx[:, None] - idx[None, :]) * 0.01).astype(np.float32)
    np.save(tmp_path / "geo.npy", geo)
    m = small_deco(metrics=[{"name": "contact_prf"}, {"name": "contact_geodesic", "geodesic": str(tmp_path / "geo.npy")}])
    batches = [make_batch(B=4, seed=i) for i in range(3)]
    loader = DataLoader(batches, batch_size=None)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=3,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    trainer.fit(m, loader, loader)
    cm = trainer.callback_metrics
    for key in ("train/loss", "train/loss_sem", "train/loss_part", "train/loss_cont", "val/loss", "val/f1",
                "val/precision", "val/recall", "val/fp_geo_cm", "val/fn_geo_cm"):
        assert key in cm, key
    res = trainer.test(m, loader, verbose=False)[0]
    m.eval()
    prf, ge = ContactPRF(), GeodesicError(torch.from_numpy(geo))
    with torch.no_grad():
        for b in batches:
            p = m(b["image"])["contact"]
            prf.update(p, b["contact_label"])
            ge.update(p, b["contact_label"])
    ref = prf.compute()
    assert res["test/f1"] == pytest.approx(ref["f1"].item(), abs=1e-6)
    assert res["test/precision"] == pytest.approx(ref["precision"].item(), abs=1e-6)
    assert res["test/fp_geo_cm"] == pytest.approx(ge.compute()["fp_geo_cm"].item(), abs=1e-4)


def test_pixel_anchoring_render_uses_first_vertex_of_visible_face():
    # one triangle facing the camera at depth 2 covering the image centre
    verts = torch.tensor([[[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0], [5.0, 5.0, 2.0]]])
    faces = torch.tensor([[1, 0, 2]])
    K = torch.tensor([[[8.0, 0, 8.0], [0, 8.0, 8.0], [0, 0, 1.0]]])
    contact = torch.tensor([[0.1, 0.7, 0.3, 0.9]], requires_grad=True)
    img = pixel_anchoring_render(contact, verts, faces, K, 16, 16)
    assert img.shape == (1, 16, 16)
    assert img[0, 8, 8].item() == pytest.approx(0.7)  # inside: vertex faces[0, 0] = 1
    assert img[0, 0, 0].item() == 0.0 and img[0, 15, 15].item() == 0.0  # background
    assert torch.unique(img).tolist() == [0.0, pytest.approx(0.7)]
    img.sum().backward()
    # gradient counts the covered pixels and reaches only vertex 1
    assert contact.grad[0, 1].item() == (img[0] > 0).sum().item()
    assert contact.grad[0, [0, 2, 3]].abs().sum().item() == 0.0


def test_figures_draw_contact_on_the_body_model(tmp_path):
    m = small_deco(num_vertices=6890, body_model={"name": "smpl", "model_dir": str(tmp_path / "bm"), "synthesize": True})
    batch = make_batch(B=4)
    batch["contact_label"] = torch.zeros(4, 6890)
    batch["contact_label"][:, :100] = 1
    figs = m.eval().figures(batch, n=3)
    assert [name for name, _ in figs] == ["contact_0", "contact_1", "contact_2"]
    img = figs[0][1]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[1] > img.shape[0] >= 256  # predicted over GT rows
    assert small_deco().figures(batch, n=3) == []  # no body model configured: no figures
    assert not any(k.startswith("_body") for k in m.state_dict()), "body-model data must stay out of checkpoints"


# ---------------------------------------------------------------------------------------------------------
# Issue 9, items 14, 16, 17, 18: the release's preprocessing, seg size, pretrained encoders and schedule


def test_cv2_linear_resize_hand_computed():
    """cv2.resize's INTER_LINEAR in 11-bit fixed point, worked by hand (weights in 1/2048, vertical pass
    ((w0 * (a >> 4)) >> 16) + ((w1 * (b >> 4)) >> 16) + 2) >> 2)."""
    from zoo.data.damon import cv2_linear_resize

    # shrink 3 -> 2: positions 0.25, 1.75 -> 0.75*0 + 0.25*100 = 25; 0.25*100 + 0.75*255 = 216.25 -> 216
    assert cv2_linear_resize(np.array([[0, 100, 255]], np.uint8), 2, 1).tolist() == [[25, 216]]
    # shrink 4 -> 2 without antialiasing: positions 0.5 and 2.5 only see pixels (0, 1) and (2, 3)
    assert cv2_linear_resize(np.array([[0, 0, 255, 255]], np.uint8), 2, 1).tolist() == [[0, 255]]
    # enlarge 2 -> 4: positions -0.25 (edge column), 0.25, 0.75, 1.25 (edge); 0.5 rounds up
    assert cv2_linear_resize(np.array([[0, 2]], np.uint8), 4, 1).tolist() == [[0, 1, 2, 2]]
    # rows: 255*512 = 130560 -> >>4 = 8160; 512 * 8160 >> 16 = 63 ... as columns: [0, 64, 191, 255]
    assert cv2_linear_resize(np.array([[0], [255]], np.uint8), 1, 4).tolist() == [[0], [64], [191], [255]]
    rgb = np.stack([np.array([[0, 0, 255, 255]], np.uint8)] * 3, -1)
    assert cv2_linear_resize(rgb, 2, 1).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    with pytest.raises(ValueError, match="expected a uint8"):
        cv2_linear_resize(np.zeros((2, 2), np.float32), 1, 1)


def _write_tiny_damon(root):
    """One sample: an 8x2 RGB image, 2x2 label maps and contact mask, with values chosen for hand checks."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    img = np.zeros((2, 8, 3), np.uint8)
    img[:, 4:, 0] = 255  # R: 0 0 0 0 255 255 255 255
    img[:, :, 1] = 10  # G
    img[:, 7, 2] = 200  # B: ... 0 200
    Image.fromarray(img).save(root / "img.png")
    Image.fromarray(np.array([[0, 20], [0, 20]], np.uint8)).save(root / "scene.png")
    Image.fromarray(np.array([[0, 8], [0, 8]], np.uint8)).save(root / "part.png")
    Image.fromarray(np.array([[0, 255], [0, 255]], np.uint8)).save(root / "contact.png")
    for split in ("trainval", "test"):
        np.savez(root / f"hot_dca_{split}.npz", imgname=np.array(["img.png"]), pose=np.zeros((1, 72)),
                 shape=np.zeros((1, 10)), transl=np.zeros((1, 3)), cam_k=np.eye(3)[None],
                 contact_label=np.zeros((1, 6890)), polygon_2d_contact=np.array(["contact.png"]),
                 scene_seg=np.array(["scene.png"]), part_seg=np.array(["part.png"]))
    return root


def test_damon_release_preprocessing_bgr_and_cv2_resize(tmp_path):
    from zoo.data.damon import DamonDataset
    from zoo.data.formats import IMAGENET_MEAN, IMAGENET_STD

    root = _write_tiny_damon(tmp_path / "damon")
    ds = DamonDataset(root / "hot_dca_test.npz", root, image_size=4, seg_size=4, channel_order="bgr", resize="cv2")
    item = ds[0]
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    # BGR planes (hand-resized 8 -> 4 wide at 0.5, 2.5, 4.5, 6.5; 2 -> 4 rows of equal values), each normalised
    # with ImageNet's statistics in R, G, B order, as the release's Normalize sees cv2's planes
    planes = np.array([[0, 0, 0, 100], [10, 10, 10, 10], [0, 0, 255, 255]], np.float64)
    want = (planes[:, None, :] / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(item["image"].numpy(), np.broadcast_to(want, (3, 4, 4)), rtol=0, atol=1e-6)
    # label maps resized bilinearly as well: ids interpolated between the classes (the release's behaviour)
    assert item["scene_seg"].argmax(0).tolist() == [[0, 5, 15, 20]] * 4
    assert item["part_seg"].argmax(0).tolist() == [[0, 2, 6, 8]] * 4
    assert item["contact_2d"][0].tolist() == [[0.0, 1.0, 1.0, 1.0]] * 4  # 0, 64, 191, 255 > 0

    ours = DamonDataset(root / "hot_dca_test.npz", root, image_size=4, seg_size=4)  # defaults: rgb, pil
    o = ours[0]
    assert o["scene_seg"].argmax(0).tolist() == [[0, 0, 20, 20]] * 4  # nearest neighbour
    assert o["contact_2d"][0].tolist() == [[0.0, 0.0, 1.0, 1.0]] * 4
    r = o["image"][0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # channel 0 is red here, PIL-antialiased
    assert 0 < float(r[0, 1]) < 1 and float(r[0, 0]) == pytest.approx(0.0, abs=1e-6)


def test_damon_preprocessing_options_checked(tmp_path):
    from zoo.core.batch import DataError
    from zoo.data.damon import DamonDataModule

    with pytest.raises(DataError, match="channel_order must be 'rgb' or 'bgr'"):
        DamonDataModule(root=str(tmp_path), channel_order="BGR")
    with pytest.raises(DataError, match="resize must be 'pil' or 'cv2'"):
        DamonDataModule(root=str(tmp_path), resize="bilinear")
    root = _write_tiny_damon(tmp_path / "damon")
    dm = DamonDataModule(root=str(root), batch_size=1, image_size=4, seg_size=4, channel_order="bgr", resize="cv2")
    dm.setup("test")
    assert dm.test_set.channel_order == "bgr" and dm.test_set.resize == "cv2"


def test_deco_damon_recipe_is_the_release_configuration(monkeypatch, capfd):
    from zoo.core import recipe as R

    monkeypatch.delenv("DECO_HRNET_WEIGHTS", raising=False)
    rec = R.load("deco/damon")
    data, system = rec["data"], rec["system"]
    assert (data["image_size"], data["seg_size"]) == (256, 256), "the release's segmentation loss is at 256"
    assert system.get("seg_loss_size") is None
    assert (data["channel_order"], data["resize"]) == ("bgr", "cv2")
    assert system["pretrained_encoders"] is True and system["backbone"]["weights"] is None
    capfd.readouterr()
    model = build("system", system, materialize=False)
    err = capfd.readouterr().err
    assert "RANDOM initialisation" in err and "pose_hrnet_w32_256x192.pth" in err and model.random_init_warned


def test_random_init_warning_only_when_no_weights(tmp_path, monkeypatch, capfd):
    from zoo.core import recipe as R

    weights = tmp_path / "pose_hrnet_w32_256x192.pth"
    weights.write_bytes(b"")
    monkeypatch.setenv("DECO_HRNET_WEIGHTS", str(weights))
    system = R.load("deco/damon")["system"]
    assert system["backbone"]["weights"] == str(weights)
    capfd.readouterr()
    build("system", system, materialize=False)
    build("system", {**system, "backbone": {**system["backbone"], "weights": None}, "pretrained_encoders": False},
          materialize=False)
    build("system", {**system, "backbone": {**system["backbone"], "weights": None}, "weights": str(weights)},
          materialize=False)
    assert "RANDOM initialisation" not in capfd.readouterr().err


def test_release_schedule_recipe():
    from lightning.pytorch.callbacks import EarlyStopping

    from zoo.core import recipe as R
    from zoo.systems.deco import ReleasePlateau

    rec = R.load("deco/damon_release")
    system = rec["system"]
    assert system["optim"] == {"name": "adam", "lr": 1e-5, "weight_decay": 1e-4}
    assert rec["data"]["batch_size"] == 4
    assert system["lr_on_plateau"] == {"monitor": "val/f1", "mode": "max", "patience": 3, "factor": 0.5,
                                       "reset_state": True}
    assert system["early_stop"] == {"monitor": "val/f1", "mode": "max", "patience": 10}
    tiny = {**system, **TINY, "num_vertices": V, "optim": system["optim"], "body_model": None}
    m = build("system", tiny)
    (es,) = m.configure_callbacks()
    assert isinstance(es, EarlyStopping) and (es.monitor, es.mode, es.patience) == ("val/f1", "max", 10)
    cfg = m.configure_optimizers()
    assert isinstance(cfg["optimizer"], torch.optim.Adam) and cfg["optimizer"].defaults["lr"] == 1e-5
    sched = cfg["lr_scheduler"]
    assert isinstance(sched["scheduler"], ReleasePlateau) and sched["monitor"] == "val/f1"
    assert (sched["scheduler"].patience, sched["scheduler"].factor) == (3, 0.5)


def test_release_plateau_hand_sequence():
    from zoo.systems.deco import ReleasePlateau

    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = ReleasePlateau(opt, mode="max", factor=0.5, patience=3)
    lrs, states = [], []
    # best 0.6 at epoch 2 (epoch 3 ties it: a tie counts as reaching the best); epochs 4, 5, 6 fall short:
    # halve at the third (epoch 6) and again at epoch 7; a new best at epoch 8 stops the halving
    for f1 in (0.50, 0.60, 0.60, 0.55, 0.58, 0.59, 0.59, 0.70, 0.65):
        p.grad = torch.ones(2)
        opt.step()
        sched.step(f1)
        lrs.append(opt.param_groups[0]["lr"])
        states.append(len(opt.state))
    assert lrs == [1, 1, 1, 1, 1, 0.5, 0.25, 0.25, 0.25]
    assert states == [1, 1, 1, 1, 1, 0, 0, 1, 1], "Adam's moments restart at each halving"
    assert sched.get_last_lr() == [0.25] and sched.decays == 2
    with pytest.raises(ValueError, match="unknown lr_on_plateau setting"):
        small_deco(lr_on_plateau={"patiense": 3})
    with pytest.raises(ValueError, match="optim.schedule must be 'constant'"):
        small_deco(lr_on_plateau={"patience": 3}, optim={"name": "adam", "schedule": "cosine"})
    with pytest.raises(ValueError, match="early_stop.mode must be 'max' or 'min'"):
        small_deco(early_stop={"mode": "up"})


def test_release_schedule_driven_by_lightning(tmp_path):
    """Lightning steps ReleasePlateau with val/f1 each epoch and stops through EarlyStopping (added by
    DECO.configure_callbacks); the lr and the stop follow the rules applied to the logged history."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback, EarlyStopping
    from torch.utils.data import DataLoader

    class History(Callback):
        def __init__(self):
            self.f1 = []

        def on_validation_end(self, trainer, pl_module):  # after the module logged its epoch metrics
            self.f1.append(float(trainer.callback_metrics["val/f1"]))

    m = small_deco(optim={"name": "adam", "lr": 3e-2}, lr_on_plateau={"patience": 1, "factor": 0.5},
                   early_stop={"patience": 2})
    batches = [make_batch(B=4, seed=i) for i in range(2)]
    hist = History()
    trainer = L.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[hist], default_root_dir=str(tmp_path))
    trainer.fit(m, DataLoader(batches, batch_size=None), DataLoader(batches[:1], batch_size=None))
    assert any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    # the release's lr rule over the history (ties reach the best)
    lr, best, bad = 3e-2, -1.0, 0
    for f in hist.f1:
        best, bad = (f, 0) if f >= best else (best, bad + 1)
        lr = lr * 0.5 if bad >= 1 else lr
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr)
    # EarlyStopping: strict improvements only; stops once 2 epochs in a row bring none
    best, wait, stop_at = -1.0, 0, None
    for i, f in enumerate(hist.f1):
        best, wait = (f, 0) if f > best else (best, wait + 1)
        if wait >= 2:
            stop_at = i + 1
            break
    assert len(hist.f1) == (stop_at or 8), hist.f1
