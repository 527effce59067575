"""MVLocSAM: tiny forward, freezing, decoder training, vectorised decoding, official checkpoint layout."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from zoo.core.atomic import sha256_file
from zoo.core.hub import CheckpointError
from zoo.core.registry import build
from zoo.models.localizer.mvloc_sam import MVLocSAM, load_sam_state_dict
from zoo.models.losses import MaskLoss2D


@pytest.fixture(scope="module")
def tiny() -> MVLocSAM:
    torch.manual_seed(0)
    return MVLocSAM(variant="tiny")


def _official_tiny_sam(image_size: int = 128):
    """segment-anything's own Sam assembled at MVLocSAM's tiny sizes (the official key layout)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = image_size // 8
    return Sam(
        image_encoder=ImageEncoderViT(depth=2, embed_dim=64, img_size=image_size, mlp_ratio=4,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=8,
                                      qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,), window_size=4,
                                      out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=256, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )


def test_tiny_shapes(tiny):
    images = torch.rand(3, 3, 96, 96)
    emb = tiny.encode(images)
    assert emb.shape == (3, 256, 16, 16)  # 128 / patch 8
    prompts = torch.randn(3, 256)
    assert tiny.decode(emb, prompts).shape == (3, 1, 64, 64)  # decoder upsamples the grid 4x
    out = tiny(images, prompts, output_size=(96, 80))
    assert out.shape == (3, 1, 96, 80)
    assert tiny.embed_dim == 256 and tiny.image_size == 128


def test_only_mask_decoder_trains(tiny):
    trainable = [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("mask_decoder.") for n in trainable)
    # heads that never reach the single-mask output are frozen so DDP sees no unused parameters
    assert not any(n.startswith(("mask_decoder.iou_prediction_head", "mask_decoder.output_hypernetworks_mlps.1"))
                   for n in trainable)
    assert "mask_decoder.mask_tokens.weight" in trainable
    assert "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight" in trainable
    tiny.train()
    assert tiny.mask_decoder.training and not tiny.image_encoder.training and not tiny.prompt_encoder.training


def test_encode_deterministic_and_no_grad(tiny):
    images = torch.rand(2, 3, 128, 128)
    tiny.train()
    a = tiny.encode(images)
    b = tiny.encode(images, chunk_size=1)
    assert not a.requires_grad and a.grad_fn is None
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(a, tiny.encode(images))


def test_decode_is_vectorised_like_mask_decoder(tiny):
    torch.manual_seed(1)
    emb = torch.randn(3, 256, 16, 16)
    prompts = torch.randn(3, 256)
    batched = tiny.decode(emb, prompts)
    pe = tiny.prompt_encoder.get_dense_pe()
    for i in range(3):
        dense = tiny.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 16, 16)
        ref, _ = tiny.mask_decoder(emb[i:i + 1], pe, prompts[i:i + 1, None], dense, multimask_output=False)
        assert torch.allclose(batched[i:i + 1], ref, atol=1e-5)
    # each embedding gets exactly its own prompt: swapping prompts changes the masks
    swapped = tiny.decode(emb, prompts.flip(0))
    assert not torch.allclose(swapped[0], batched[0])


def test_training_step_changes_decoder_only():
    torch.manual_seed(0)
    m = MVLocSAM(variant="tiny")
    m.train()
    enc0 = {k: v.clone() for k, v in m.image_encoder.state_dict().items()}
    pe0 = {k: v.clone() for k, v in m.prompt_encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in m.mask_decoder.state_dict().items()}
    prompts = nn.Parameter(torch.randn(2, 256))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad] + [prompts], lr=1e-3)
    images = torch.rand(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    target[:, :, :8] = -1.0  # ignored band
    loss_fn = MaskLoss2D()
    losses = []
    for _ in range(3):
        out = loss_fn(m(images, prompts, output_size=(64, 64)), target)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.image_encoder.parameters())
    assert all(torch.equal(v, enc0[k]) for k, v in m.image_encoder.state_dict().items())
    assert all(torch.equal(v, pe0[k]) for k, v in m.prompt_encoder.state_dict().items())
    changed = [k for k, v in m.mask_decoder.state_dict().items() if not torch.equal(v, dec0[k])]
    assert "transformer.layers.0.self_attn.q_proj.weight" in changed
    assert "output_hypernetworks_mlps.0.layers.2.weight" in changed
    assert "iou_prediction_head.layers.0.weight" not in changed


def test_bad_inputs_name_what_is_wrong(tiny):
    with pytest.raises(ValueError, match=r"image 1 has values in \[0, 255\].*expected \[0, 1\]"):
        imgs = torch.rand(2, 3, 32, 32)
        imgs[1] = 255.0
        imgs[1, 0, 0, 0] = 0.0
        tiny.encode(imgs)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\), got \(2, 1, 32, 32\)"):
        tiny.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"expected prompts of shape \(2, 256\) \(one per embedding\), got \(3, 256\)"):
        tiny.decode(torch.randn(2, 256, 16, 16), torch.randn(3, 256))
    with pytest.raises(ValueError, match=r"expected embeddings of shape \(N, 256, 16, 16\)"):
        tiny.decode(torch.randn(2, 256, 8, 8), torch.randn(2, 256))
    with pytest.raises(ValueError, match="variant must be one of vit_b, vit_l, vit_h, tiny; got 'vit_x'"):
        MVLocSAM(variant="vit_x")


def test_official_vit_b_round_trip(tmp_path):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    official = sam_model_registry["vit_b"](checkpoint=None)
    ref = official.state_dict()
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(ref, path)
    del official
    m = build("localizer", {"name": "mvloc_sam", "variant": "vit_b", "weights": str(path)})  # built, then loaded
    got = m.state_dict()
    assert set(got) == set(ref) and len(got) == 314
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert m.hparams.weights == str(path) and m.image_size == 1024 and m.embedding_size == (64, 64)
    assert m._zoo_weights["sha256"] == sha256_file(path) and len(m._zoo_weights["keys"]) == 314


def test_tiny_official_layout_round_trip_and_decode_equivalence(tmp_path):
    torch.manual_seed(3)
    sam = _official_tiny_sam().eval()
    path = tmp_path / "tiny_sam.pth"
    torch.save(sam.state_dict(), path)
    m = build("localizer", {"name": "mvloc_sam", "variant": "tiny", "weights": str(path)}).eval()
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        # segment-anything's own pipeline: normalise on the 0-255 scale, encode, decode one prompt
        emb_ref = sam.image_encoder(sam.preprocess(images[0] * 255.0)[None])
        prompt = torch.randn(1, 1, 256)
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 16, 16)
        masks_ref, _ = sam.mask_decoder(emb_ref, sam.prompt_encoder.get_dense_pe(), prompt, dense, False)
        emb = m.encode(images)
        masks = m.decode(emb, prompt[:, 0])
    assert torch.allclose(emb, emb_ref, atol=1e-5)
    assert torch.allclose(masks, masks_ref, atol=1e-4)


def test_positional_tables_are_resized_for_another_image_size(tmp_path):
    sam = _official_tiny_sam(128)
    path = tmp_path / "tiny_sam.pth"
    torch.save(sam.state_dict(), path)
    m = build("localizer", {"name": "mvloc_sam", "variant": "tiny", "image_size": 64, "weights": str(path)})
    assert m.image_encoder.pos_embed.shape == (1, 8, 8, 64)
    assert m.image_encoder.blocks[1].attn.rel_pos_h.shape == (15, 32)  # global block: 2 * 8 - 1
    # window blocks keep their (2 * window - 1) tables untouched
    assert torch.equal(m.image_encoder.blocks[0].attn.rel_pos_h, sam.image_encoder.blocks[0].attn.rel_pos_h)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_sam_state_dict(m, sam.state_dict(), resize_positional=False, source="x.pth")


def test_missing_key_names_key_and_file(tmp_path):
    state = _official_tiny_sam().state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken_sam.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"broken_sam\.pth\) do not fit localizer/mvloc_sam: missing 1 "
                                              r"key\(s\): mask_decoder\.iou_token\.weight; unexpected 1 key\(s\): "
                                              r"mask_decoder\.extra\.weight$"):
        build("localizer", {"name": "mvloc_sam", "variant": "tiny", "weights": str(path)})
    m = MVLocSAM(variant="tiny")
    missing, unexpected = load_sam_state_dict(m, state, strict=False)
    assert missing == ["mask_decoder.iou_token.weight"] and unexpected == ["mask_decoder.extra.weight"]
    assert torch.equal(m.mask_decoder.mask_tokens.weight, state["mask_decoder.mask_tokens.weight"])


def test_wrong_variant_weights_report_shape_mismatch(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(_official_tiny_sam().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"tiny\.pth\) do not fit localizer/mvloc_sam: .*shape mismatch"):
        build("localizer", {"name": "mvloc_sam", "variant": "tiny", "tiny_embed_dim": 32, "weights": str(path)})


def test_missing_checkpoint_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'sam-vit-b' \(SAM ViT-B weights.*expected .*home/checkpoints/"
                                                r"sam-vit-b/sam_vit_b_01ec64\.pth.*https://dl\.fbaipublicfiles\.com/"
                                                r"segment_anything/sam_vit_b_01ec64\.pth"):
        MVLocSAM(variant="vit_b", weights="zoo://sam-vit-b")  # before the encoder is built
    with pytest.raises(FileNotFoundError, match=r"weights not found: .*nowhere/sam\.pth\. Expected SAM ViT-H weights "
                                                r"\(sam_vit_h_4b8939\.pth\).*https://dl\.fbaipublicfiles\.com/"
                                                r"segment_anything/sam_vit_h_4b8939\.pth"):
        MVLocSAM(variant="vit_h", weights=str(tmp_path / "nowhere" / "sam.pth"))


def test_registry_builds_tiny():
    from zoo.core import registry

    m = registry.build("localizer", {"name": "mvloc_sam", "variant": "tiny", "tiny_depth": 1})
    assert isinstance(m, MVLocSAM) and len(m.image_encoder.blocks) == 1
    assert dict(m.hparams)["tiny_depth"] == 1


@torch.no_grad()
def test_shared_prompt_sequences_are_sams_broadcast_over_views(tiny):
    """InteractVLM passes the V gated tokens as ONE sparse prompt (1, V, C) with V image embeddings; SAM's decoder
    broadcasts the token batch over the images, so every view sees all V tokens (prompt_mode=shared)."""
    from zoo.models.localizer.mvloc_sam import view_prompt_sequences

    torch.manual_seed(2)
    V, P = 3, 2
    emb = torch.randn(P * V, 256, 16, 16)
    per_view = torch.randn(P, V, 256)
    seqs = view_prompt_sequences(per_view, "shared")
    assert seqs.shape == (P * V, V, 256) and torch.equal(seqs[V + 1], per_view[1])
    shared, iou = tiny.decode(emb, seqs, return_iou=True)
    own = tiny.decode(emb, view_prompt_sequences(per_view, "own"))
    pe = tiny.prompt_encoder.get_dense_pe()
    dense = tiny.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 16, 16)
    for p in range(P):
        # segment-anything's own MaskDecoder, called as InteractVLM's ModifiedSAM does
        ref, ref_iou = tiny.mask_decoder(emb[p * V:(p + 1) * V], pe, per_view[p:p + 1], dense, multimask_output=False)
        torch.testing.assert_close(shared[p * V:(p + 1) * V], ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(iou[p * V:(p + 1) * V], ref_iou, rtol=0, atol=1e-5)
    for v in range(V):  # own: view v with token v alone
        one, _ = tiny.mask_decoder(emb[V + v:V + v + 1], pe, per_view[1:2, v:v + 1], dense, False)
        torch.testing.assert_close(own[V + v:V + v + 1], one, rtol=0, atol=1e-5)
    assert (shared - own).abs().max() > 1e-3
    # each view's mask depends on the other views' tokens in the shared mode only
    changed = per_view.clone()
    changed[0, 2] = torch.randn(256)
    assert not torch.allclose(tiny.decode(emb, view_prompt_sequences(changed, "shared"))[0], shared[0], atol=1e-5)
    torch.testing.assert_close(tiny.decode(emb, view_prompt_sequences(changed, "own"))[0], own[0], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="prompt_mode must be one of shared, own; got 'all'"):
        view_prompt_sequences(per_view, "all")
    with pytest.raises(ValueError, match=r"expected prompts of shape \(6, 256\) or \(6, K, 256\).*got \(6, 3, 128\)"):
        tiny.decode(emb, torch.randn(6, 3, 128))


def test_prompt_dim_and_decoder_sizes_are_configurable():
    torch.manual_seed(0)
    m = MVLocSAM(variant="tiny", image_size=64, tiny_patch=8, prompt_dim=64,
                 decoder={"num_heads": 4, "mlp_dim": 128, "iou_head_hidden_dim": 32})
    assert m.embed_dim == 64
    emb = m.encode(torch.rand(2, 3, 64, 64))
    assert emb.shape == (2, 64, 8, 8)
    masks, iou = m.decode(emb, torch.randn(2, 3, 64), return_iou=True)
    assert masks.shape == (2, 1, 32, 32) and iou.shape == (2, 1)
    assert m.mask_decoder.iou_prediction_head.layers[0].out_features == 32
    assert m.mask_decoder.transformer.layers[0].self_attn.num_heads == 4
    with pytest.raises(ValueError, match=r"unknown decoder size\(s\) \['heads'\]"):
        MVLocSAM(variant="tiny", decoder={"heads": 4})
    with pytest.raises(ValueError, match="prompt_dim 60 must be a multiple of 8"):
        MVLocSAM(variant="tiny", prompt_dim=60)
