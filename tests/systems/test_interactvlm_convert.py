"""The released-InteractVLM converter on a tiny fake release (the official key layout at CPU size)."""
from __future__ import annotations

import json

import pytest
import torch

from zoo.core.hub import CheckpointError
from zoo.systems.interactvlm_convert import HEADS_FILE, convert_released, read_released, split_released

HIDDEN, PROMPT, LIFT_HIDDEN, VIEWS = 16, 32, 8, 4
LOCALIZER = {"variant": "tiny", "prompt_dim": PROMPT, "tiny_decoder_mlp_dim": 64}
VISION = {"num_attention_heads": 2}


def _tokenizer():
    from zoo.models.vlm.tiny import tiny_tokenizer

    return tiny_tokenizer(["<unk>", "<s>", "</s>", "[SEG]", "<im_start>", "<im_end>"], unk="<unk>", pad="<unk>",
                          bos="<s>", eos="</s>")


def _release_state(vocab: int) -> dict[str, torch.Tensor]:
    """Every key family of merge_lora_weights_and_save_hf_model.py's output, at tiny sizes."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from zoo.models.localizer.mvloc_sam import MVLocSAM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
    state = {k: v.clone() for k, v in lm.state_dict().items()}  # model.layers.*, model.embed_tokens, model.norm, lm_head
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=32, patch_size=8))
    # the release's transformers (4.31) names CLIPVisionModel's tensors vision_model.*; newer ones may not
    state.update({"model.vision_tower.vision_tower.vision_model." + k.removeprefix("vision_model."): v.clone()
                  for k, v in clip.state_dict().items()})
    state["model.mm_projector.weight"] = torch.randn(HIDDEN, 24)
    state["model.mm_projector.bias"] = torch.randn(HIDDEN)
    sam = MVLocSAM(**LOCALIZER)
    state.update({f"model.visual_model.{k}": v.clone() for k, v in sam.state_dict().items()})
    state.update({"model.text_hidden_fcs.0.0.weight": torch.randn(HIDDEN, HIDDEN),
                  "model.text_hidden_fcs.0.0.bias": torch.randn(HIDDEN),
                  "model.text_hidden_fcs.0.2.weight": torch.randn(PROMPT, HIDDEN),
                  "model.text_hidden_fcs.0.2.bias": torch.randn(PROMPT)})
    state.update({"cam_pose_encoder.spatial_encoder.0.weight": torch.randn(LIFT_HIDDEN, 5),
                  "cam_pose_encoder.spatial_encoder.0.bias": torch.randn(LIFT_HIDDEN),
                  "cam_pose_encoder.spatial_encoder.2.weight": torch.randn(LIFT_HIDDEN, LIFT_HIDDEN),
                  "cam_pose_encoder.spatial_encoder.2.bias": torch.randn(LIFT_HIDDEN)})
    for v in range(VIEWS):
        state[f"cam_pose_encoder.view_transforms.{v}.weight"] = torch.randn(PROMPT, LIFT_HIDDEN)
        state[f"cam_pose_encoder.view_transforms.{v}.bias"] = torch.randn(PROMPT)
    return state


def _config(vocab: int) -> dict:
    """A LLaVA-v1 / InteractVLM style config.json (LlavaConfig(LlamaConfig) plus InteractVLM's fields)."""
    return {"architectures": ["InteractVLMForCausalLM"], "model_type": "llava", "hidden_size": HIDDEN,
            "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "hidden_act": "silu", "vocab_size": vocab,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
            "mm_vision_tower": "openai/clip-vit-large-patch14", "mm_hidden_size": 24, "mm_vision_select_layer": -2,
            "mm_use_im_start_end": True, "out_dim": PROMPT, "train_mask_decoder": True, "token_type": "Gen",
            "seg_token_idx": 3, "hseg_token_idx": None, "oseg_token_idx": None, "img_emb_len": 255,
            "hC_loss_weight": 3.0, "oC_loss_weight": 0.0, "hC_sam_view_type": "4MV-Z_Vitru_mv2",
            "multiview_channels": VIEWS, "multiview_cam_cond": True, "cam_encoder_type": "vi_v1"}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "interactvlm-3d-hcontact-damon"
    root.mkdir()
    tok = _tokenizer()
    state = _release_state(len(tok))
    (root / "config.json").write_text(json.dumps(_config(len(tok))))
    torch.save(state, root / "pytorch_model.bin")
    tok.save_pretrained(str(root))
    return root, state, len(tok)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    root, state, vocab = release
    out = tmp_path_factory.mktemp("converted")
    paths = convert_released(root, out, ["[HCON]", "[OCON]"], vision_config=VISION, localizer=LOCALIZER)
    return paths, state, vocab


def test_llava_directory_loads_with_the_source_values(converted):
    from transformers import LlavaForConditionalGeneration

    from zoo.models.vlm.llava import LLaVA

    paths, state, vocab = converted
    LLaVA.check_dir(paths["llava"])  # config, tokenizer and processor present
    model = LlavaForConditionalGeneration.from_pretrained(str(paths["llava"]), local_files_only=True)
    got = model.state_dict()
    for ours, theirs in [("model.language_model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
                         ("model.language_model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"),
                         ("model.language_model.layers.1.post_attention_layernorm.weight",
                          "model.layers.1.post_attention_layernorm.weight"),
                         ("model.language_model.norm.weight", "model.norm.weight"),
                         ("model.vision_tower.encoder.layers.1.self_attn.k_proj.weight",
                          "model.vision_tower.vision_tower.vision_model.encoder.layers.1.self_attn.k_proj.weight"),
                         ("model.vision_tower.embeddings.patch_embedding.weight",
                          "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"),
                         ("model.multi_modal_projector.linear_1.weight", "model.mm_projector.weight"),
                         ("model.multi_modal_projector.linear_1.bias", "model.mm_projector.bias")]:
        assert torch.equal(got[ours], state[theirs]), ours
    # the added <image> row after the release's vocabulary (embeddings incl. [SEG] etc. unchanged)
    assert torch.equal(got["model.language_model.embed_tokens.weight"][:vocab], state["model.embed_tokens.weight"])
    assert torch.equal(got["lm_head.weight"][:vocab], state["lm_head.weight"])
    assert model.config.image_token_id == vocab and got["lm_head.weight"].shape[0] == vocab + 1
    assert model.config.vision_feature_layer == -2 and model.config.projector_hidden_act == "linear"
    # the single-Linear projector: the converted Linear-identity computes the same function
    x = torch.randn(3, 24)
    ref = x @ state["model.mm_projector.weight"].T + state["model.mm_projector.bias"]
    assert torch.allclose(model.model.multi_modal_projector(x), ref, atol=1e-6)
    assert model.generation_config.suppress_tokens == [vocab]


def test_heads_file_holds_the_source_tensors(converted):
    from zoo.core.registry import build
    from zoo.models.localizer.mvloc_sam import MVLocSAM

    paths, state, _ = converted
    heads = torch.load(paths["heads"], weights_only=True)
    assert paths["heads"].name == HEADS_FILE
    for key in ("HCON", "OCON"):
        for p in ("0.weight", "0.bias", "2.weight", "2.bias"):
            assert torch.equal(heads[f"projection.heads.{key}.{p}"], state[f"model.text_hidden_fcs.0.{p}"])
    for branch in ("human", "object"):
        for k in ("mask_decoder.output_upscaling.0.weight", "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
                  "prompt_encoder.no_mask_embed.weight"):
            assert torch.equal(heads[f"{branch}.localizer.{k}"], state[f"model.visual_model.{k}"])
    assert not any(".image_encoder." in k for k in heads)
    lifter = build("lifter", {"name": "camera_lifter", "num_views": VIEWS, "hidden": LIFT_HIDDEN, "embed_dim": PROMPT})
    lifter.load_state_dict({k[len("human.lifter."):]: v for k, v in heads.items() if k.startswith("human.lifter.")})
    assert torch.equal(lifter.shared[0].weight, state["cam_pose_encoder.spatial_encoder.0.weight"])
    assert torch.equal(lifter.view_weight[2], state["cam_pose_encoder.view_transforms.2.weight"].T)
    sam = MVLocSAM(**LOCALIZER)
    missing, unexpected = sam.load_state_dict(
        {k[len("object.localizer."):]: v for k, v in heads.items() if k.startswith("object.localizer.")}, strict=False)
    assert not unexpected and all(k.startswith("image_encoder.") for k in missing)
    record = json.loads(paths["record"].read_text())
    assert record["tokens"] == ["[HCON]", "[OCON]"] and record["official_tokens"]["[HCON]"] == "[SEG]"
    assert len(record["files"]["pytorch_model.bin"]) == 64
    assert any(k.startswith("model.visual_model.image_encoder.") for k in record["dropped"])


def test_large_models_are_written_sharded(release, tmp_path, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    import zoo.systems.interactvlm_convert as conv

    root, state, _ = release
    monkeypatch.setattr(conv, "_SHARD_BYTES", 20_000)
    paths = convert_released(root, tmp_path, vision_config=VISION, localizer=LOCALIZER)
    assert (paths["llava"] / "model.safetensors.index.json").is_file()
    model = LlavaForConditionalGeneration.from_pretrained(str(paths["llava"]), local_files_only=True)
    assert torch.equal(model.state_dict()["model.language_model.layers.1.self_attn.v_proj.weight"],
                       state["model.layers.1.self_attn.v_proj.weight"])
    heads = torch.load(paths["heads"], weights_only=True)  # default tokens: hC_loss_weight > 0 -> [HCON] only
    assert "projection.heads.HCON.0.weight" in heads and not any(k.startswith("object.") for k in heads)


def _split(state, vocab, **kw):
    return split_released(state, ["[HCON]"], config=_config(vocab), source="fake.bin", vision_config=VISION,
                          localizer=LOCALIZER, **kw)


def test_bad_layouts_raise_checkpoint_errors_naming_the_key(release):
    _, state, vocab = release
    bad = dict(state, **{"model.visual_model.extra_head.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"fake\.bin.*unknown key.*model\.visual_model\.extra_head\.weight"):
        _split(bad, vocab)
    missing = {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(CheckpointError, match=r"missing key.*model\.layers\.1\.mlp\.up_proj\.weight"):
        _split(missing, vocab)
    missing = {k: v for k, v in state.items() if k != "model.visual_model.mask_decoder.iou_token.weight"}
    with pytest.raises(CheckpointError, match=r"missing key.*model\.visual_model\.mask_decoder\.iou_token\.weight"):
        _split(missing, vocab)
    shaped = dict(state, **{"model.text_hidden_fcs.0.2.weight": torch.zeros(PROMPT + 1, HIDDEN)})
    with pytest.raises(CheckpointError, match=r"wrong shape.*model\.text_hidden_fcs\.0\.2\.weight"):
        _split(shaped, vocab)
    shaped = dict(state, **{"model.layers.0.self_attn.k_proj.weight": torch.zeros(HIDDEN, HIDDEN + 2)})
    with pytest.raises(CheckpointError, match=r"wrong shape.*model\.layers\.0\.self_attn\.k_proj\.weight"):
        _split(shaped, vocab)
    no_tower = {k: v for k, v in state.items() if ".vision_tower." not in k}
    with pytest.raises(CheckpointError, match=r"no vision tower.*clip"):
        _split(no_tower, vocab)
    with pytest.raises(CheckpointError, match=r"attention_splitter"):
        _split(dict(state, **{"attention_splitter.key.weight": torch.zeros(2, 2)}), vocab)
    split = _split(dict(state, **{"attention_splitter.key.weight": torch.zeros(2, 2)}), vocab, drop_unsupported=True)
    assert "attention_splitter.key.weight" in split.dropped and split.branches == ["human"]


def test_missing_release_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"released InteractVLM checkpoint.*not found.*interactvlm\.is\.tue\.mpg\.de"):
        read_released(tmp_path / "interactvlm-3d-hcontact-damon")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json and no weights"):
        read_released(tmp_path / "empty")
