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


def test_cross_attention_shared_matches_release():
    ca = CrossAttention(4, shared=True)
    assert ca.cross_attn_2 is None
    a, b = torch.randn(2, 1, 4), torch.randn(2, 1, 4)
    expected = ca.layer_norm(ca.cross_attn_1(a, b, b) * ca.cross_attn_1(b, a, a))
    torch.testing.assert_close(ca(a, b), expected)
    assert CrossAttention(4, shared=False).cross_attn_2 is not None


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
    onehot = F.one_hot(torch.zeros(1, 32, 32, dtype=torch.long), 3).permute(0, 3, 1, 2).to(torch.uint8)
    logits = torch.zeros(1, 3, 8, 8)
    logits[:, 0] = math.log(2.0)  # softmax (0.5, 0.25, 0.25), constant so resizing keeps it
    expected = -(math.log(0.5) + 2 * math.log(0.75)) / 3
    assert deco_seg_bce(logits, onehot).item() == pytest.approx(expected, rel=1e-5)
    assert deco_seg_bce(logits, onehot, size=4).item() == pytest.approx(expected, rel=1e-5)


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
