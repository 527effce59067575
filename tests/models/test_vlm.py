"""The ``vlm`` kind (zoo.models.vlm): LLaVA and Qwen2-VL behind one interface, at their tiny sizes (offline).

Checked for both families: contact-token ids survive save/load of tokenizer + model; LoRA trains only the
adapters, embed_tokens and lm_head (vision tower and projector frozen); labels cover the answer only; a few
optimisation steps lower the answer loss by a stated margin; generation states equal the hidden states of
generate's own cached forward at the same positions; error messages for a missing directory / tokenizer.
"""
from __future__ import annotations

import importlib.util
import re
import shutil

import pytest
import torch

from zoo.core import registry
from zoo.models.vlm.base import IGNORE_INDEX, BaseVLM
from zoo.models.vlm.projection import PROJECTIONS, ContactProjection

FAMILIES = ["llava", "qwen2_vl"]
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
PROMPT = "which parts of the body are in contact with the chair ?"
ANSWER = "left hand right thigh [HCON]"


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    """One cache root (tiny model directories are written once per family) and one thread (busy 2-core host)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_HOME", str(tmp_path_factory.mktemp("vlm_home")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


def _build(family: str, **kw) -> BaseVLM:
    torch.manual_seed(0)
    return registry.build("vlm", {"name": family, "variant": "tiny", **kw})


@pytest.fixture(scope="module")
def lora_models():
    return {f: _build(f, lora=LORA) for f in FAMILIES}


@pytest.fixture(scope="module")
def plain_models():
    return {f: _build(f) for f in FAMILIES}


def _images(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 32, 32, generator=g) for _ in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_added_token_ids_survive_save_and_load(family, plain_models, tmp_path):
    m = plain_models[family]
    ids = m.token_ids
    assert len(ids) == 2 and ids == m.tokenizer.convert_tokens_to_ids(["[HCON]", "[OCON]"])
    assert m.hf_model().get_input_embeddings().weight.shape[0] == len(m.tokenizer)
    assert m.add_tokens(["[HCON]", "[OCON]"]) == ids  # adding again changes nothing
    m.processor.save_pretrained(tmp_path)
    m.hf_model().save_pretrained(tmp_path)
    again = registry.get("vlm", family)(path=str(tmp_path), variant="full")
    assert again.token_ids == ids
    assert len(again.tokenizer) == len(m.tokenizer)
    torch.testing.assert_close(again.hf_model().get_input_embeddings().weight[ids],
                               m.hf_model().get_input_embeddings().weight[ids])
    # the contact tokens stay whole tokens of the text
    enc = again.tokenizer("hands [HCON] feet [OCON]", add_special_tokens=False)["input_ids"]
    assert ids[0] in enc and ids[1] in enc


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_adapters_embeddings_and_lm_head(family, lora_models):
    m = lora_models[family]
    trainable = {n: p for n, p in m.named_parameters() if p.requires_grad}
    lora = [n for n in trainable if ".lora_" in n]
    other = [n for n in trainable if ".lora_" not in n]
    assert other and all(re.search(r"(embed_tokens|lm_head)\.weight$", n) for n in other), other
    assert len(other) == 2
    assert all("language_model" in n and re.search(r"\.(q_proj|v_proj)\.lora_[AB]\.", n) for n in lora), lora
    layers = m.hf_model().config.get_text_config().num_hidden_layers
    assert len(lora) == layers * 2 * 2  # q_proj and v_proj, A and B, per LM layer
    assert all(p.shape[0] == 8 or p.shape[1] == 8 for n, p in trainable.items() if ".lora_" in n)  # r = 8
    for mod in m.vision_modules():
        assert not any(p.requires_grad for p in mod.parameters())
    assert set(m.trainable_state_dict()) == set(trainable)
    lm = m.hf_model()
    numel = sum(p.numel() for n, p in trainable.items() if ".lora_" in n)
    numel += lm.get_input_embeddings().weight.numel() + lm.get_output_embeddings().weight.numel()
    assert sum(p.numel() for p in trainable.values()) == numel


@pytest.mark.parametrize("family", FAMILIES)
def test_train_vision_unfreezes_tower_and_projector(family):
    m = _build(family, train_vision=True)
    assert all(p.requires_grad for mod in m.vision_modules() for p in mod.parameters())


def test_hidden_at_picks_the_token_positions():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 5, generator=g)
    ids = torch.tensor([[1, 9, 2, 9, 3, 8, 0], [1, 2, 3, 4, 5, 6, 8], [0, 0, 1, 2, 3, 4, 5]])
    out = BaseVLM.hidden_at(hidden, ids, [9, 8])
    torch.testing.assert_close(out[0], hidden[0, [1, 3, 5]], rtol=0, atol=0)
    torch.testing.assert_close(out[1], hidden[1, [6]], rtol=0, atol=0)
    assert out[2].shape == (0, 5)
    torch.testing.assert_close(BaseVLM.hidden_at(hidden, ids, 9)[0], hidden[0, [1, 3]], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_the_answer_only(family, plain_models):
    m = plain_models[family]
    answers = [ANSWER, "back [OCON]"]
    inputs = m.build_inputs(_images(2), [PROMPT, "what does the person touch ?"], answers)
    assert set(inputs) >= {"input_ids", "attention_mask", "pixel_values", "labels"}
    if family == "qwen2_vl":
        assert inputs["image_grid_thw"].shape == (2, 3)
        torch.testing.assert_close(inputs["mm_token_type_ids"], (inputs["input_ids"] == m.image_token_id).long())
    for b, ans in enumerate(answers):
        want = m.tokenizer(m.answer_prefix + ans, add_special_tokens=False)["input_ids"] + m.answer_suffix()
        assert m.answer_ids(PROMPT, ans) + m.answer_suffix() == want  # (word-level tokenizer: same in context)
        lab, ids, attn = inputs["labels"][b], inputs["input_ids"][b], inputs["attention_mask"][b]
        n = int(attn.sum())
        assert attn[:n].all() and not attn[n:].any()  # right padded
        keep = lab != IGNORE_INDEX
        assert keep.sum() == len(want)
        assert keep.nonzero().squeeze(1).tolist() == list(range(n - len(want), n))  # the last tokens: the answer
        assert lab[keep].tolist() == want == ids[keep].tolist()
        assert (ids == m.image_token_id).sum() == 16  # 32 px tiny images: 16 image tokens
    # contact tokens sit inside the answer; hidden_at finds them where the labels say
    out = m(inputs)
    states = m.hidden_at(out["hidden"], inputs["input_ids"], m.token_ids)
    for b, tok in enumerate(m.token_ids):
        pos = (inputs["input_ids"][b] == tok).nonzero().squeeze(1)
        assert len(pos) == 1 and inputs["labels"][b, pos] == tok
        torch.testing.assert_close(states[b], out["hidden"][b, pos], rtol=0, atol=0)
    assert out["logits"].shape[:2] == inputs["input_ids"].shape and out["loss"].ndim == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_steps_lower_the_answer_loss(family):
    m = _build(family, lora=LORA).train()
    inputs = m.build_inputs(_images(1), [PROMPT], [ANSWER])
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = m(inputs)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    m.eval()
    with torch.no_grad():
        final = float(m(inputs)["loss"])
    assert final < 0.5 * losses[0], (losses, final)  # at least halved in 5 steps


def _bias_lm_head(m: BaseVLM, token: int):
    """A forward hook making ``token`` the greedy choice at every step."""
    head = m.hf_model().get_output_embeddings()
    return head.register_forward_hook(lambda mod, args, out: out + 1e4 * torch.nn.functional.one_hot(
        torch.tensor(token), out.shape[-1]).to(out.dtype))


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_without_contact_token_gives_empty_states(family, plain_models):
    m = plain_models[family].eval()
    word = m.tokenizer.convert_tokens_to_ids("hands")
    hook = _bias_lm_head(m, word)
    try:
        texts, states = m.generate(_images(2), [PROMPT, PROMPT], max_new_tokens=3)
    finally:
        hook.remove()
    d = m.hf_model().config.get_text_config().hidden_size
    assert texts == ["hands hands hands"] * 2
    assert [tuple(s.shape) for s in states] == [(0, d), (0, d)]


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_contact_states_equal_the_cached_forward(family, plain_models):
    m = plain_models[family].eval()
    hcon = m.token_ids[0]
    hook = _bias_lm_head(m, hcon)
    try:
        texts, states = m.generate(_images(1), [PROMPT], max_new_tokens=4)
        # generate's own hidden states (KV cache): the state at step s belongs to the input token generated at s-1
        inputs = m._model_inputs(m.build_inputs(_images(1), [PROMPT]))
        ref = m.model.generate(**inputs, max_new_tokens=4, do_sample=False, output_hidden_states=True,
                               return_dict_in_generate=True, pad_token_id=m.tokenizer.pad_token_id)
    finally:
        hook.remove()
    assert texts == [" ".join(["[HCON]"] * 4)]
    assert states[0].shape == (4, m.hf_model().config.get_text_config().hidden_size)
    cached = torch.stack([ref.hidden_states[s][-1][0, -1] for s in range(1, 4)])  # inputs gen[0..2]
    torch.testing.assert_close(states[0][:3], cached, rtol=1e-4, atol=1e-4)
    # and the teacher-forced forward over prompt + answer gives them at the answer's contact positions
    full = m.build_inputs(_images(1), [PROMPT])
    full["input_ids"] = torch.cat([full["input_ids"], torch.full((1, 4), hcon)], dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    full = m._refresh_extras(full)
    with torch.no_grad():
        hidden = m(full)["hidden"]
    torch.testing.assert_close(states[0], m.hidden_at(hidden, full["input_ids"], [hcon])[0], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_save_and_load_the_peft_way(family, lora_models, tmp_path):
    m = lora_models[family]
    with torch.no_grad():  # make the adapters non-trivial
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    m.save_adapters(tmp_path / "adapters")
    assert (tmp_path / "adapters" / "adapter_config.json").is_file()
    fresh = _build(family, lora=LORA)
    fresh.load_adapters(tmp_path / "adapters")
    a, b = m.trainable_state_dict(), fresh.trainable_state_dict()
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


EXPECT_SOURCE = {
    "llava": ("LlavaForConditionalGeneration", "it comes from llava-hf/llava-1.5-7b-hf (or llava-hf/llava-1.5-13b-hf) "
              "on Hugging Face, e.g. `hf download llava-hf/llava-1.5-7b-hf --local-dir PATH`; nothing is downloaded "
              "automatically"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "it comes from Qwen/Qwen2-VL-7B-Instruct (or "
                 "Qwen/Qwen2-VL-2B-Instruct) on Hugging Face, e.g. `hf download Qwen/Qwen2-VL-7B-Instruct "
                 "--local-dir PATH`; nothing is downloaded automatically"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_missing_directory_and_tokenizer_messages(family, plain_models, tmp_path):
    cls = registry.get("vlm", family)
    cls_name, where = EXPECT_SOURCE[family]
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as exc:
        cls(path=str(missing))
    assert str(exc.value) == (f"{cls.__name__}: model directory not found: {missing} (expected a Hugging Face "
                              f"{cls_name} directory with config.json, weights, tokenizer and processor files; {where})")
    partial = tmp_path / "partial"
    shutil.copytree(plain_models[family].model_dir, partial)
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        (partial / f).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError) as exc:
        cls(path=str(partial))
    assert str(exc.value) == (f"{cls.__name__}: {partial} has no tokenizer (tokenizer.json / tokenizer.model / "
                              f"tokenizer_config.json) (expected a complete Hugging Face {cls_name} directory; {where})")


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_quantised_loading_without_bitsandbytes_says_so(plain_models):
    with pytest.raises(ImportError) as exc:
        registry.get("vlm", "llava")(path=plain_models["llava"].model_dir, load_in="4bit")
    assert str(exc.value) == ("LLaVA: load_in=4bit needs bitsandbytes, which is not installed (pip install "
                              "bitsandbytes; it needs a CUDA GPU), or set load_in: null")


def test_projection_is_one_mlp_per_token():
    proj = PROJECTIONS.lookup("mlp")(in_dim=64)
    assert isinstance(proj, ContactProjection) and sorted(proj.heads) == ["HCON", "OCON"]
    head = proj.heads["HCON"]
    assert [type(x).__name__ for x in head] == ["Linear", "ReLU", "Linear"]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (64, 64, 256)
    x = torch.randn(3, 64)
    torch.testing.assert_close(proj(x, "[HCON]"), head[2](torch.relu(head[0](x))))
    assert not torch.equal(proj(x, "[HCON]"), proj(x, "[OCON]"))
    with pytest.raises(KeyError, match="no head for token"):
        proj(x, "[XCON]")
