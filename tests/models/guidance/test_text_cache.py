"""The on-disk text-embedding cache: crash safety, corrupt files, hits that skip the encoder, the model key."""
import re
import warnings

import pytest
import torch

from zoo.models.guidance.text_cache import TextEmbeddingCache, model_key, prompt_hash


def _fresh(guidance, texts):
    """Embeddings straight from the text encoder, no cache."""
    return guidance._encode_uncached(texts)


def test_crash_mid_write_leaves_no_entry_and_next_call_recomputes(sd, fresh_cache, monkeypatch):
    cache = fresh_cache(sd)
    text = "a dslr photo of a corgi"
    real_save = torch.save

    def crash(obj, fh, *a, **k):  # writes part of the bytes, then the process "dies"
        fh.write(b"PK\x03\x04 partial")
        raise RuntimeError("simulated crash while writing the cache")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sd.encode_prompts([text])
    monkeypatch.setattr(torch, "save", real_save)
    assert not cache.path(text).exists()
    assert list(cache.dir.iterdir()) == []  # the temporary file went too
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing corrupt to report: the entry never appeared
        got = sd.encode_prompts([text])
    assert torch.equal(got, _fresh(sd, [text]))
    assert cache.path(text).is_file() and cache.path(text).name == f"{prompt_hash(text)}.pt"


def test_truncated_file_is_reported_and_recomputed(sd, fresh_cache):
    cache = fresh_cache(sd)
    text = "a red car"
    want = sd.encode_prompts([text])
    path = cache.path(text)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=re.escape(f"text-embedding cache file {path} is corrupt or truncated")):
        got = sd.encode_prompts([text])
    assert torch.equal(got, want) and torch.equal(got, _fresh(sd, [text]))
    assert path.read_bytes() == data  # rewritten whole
    # a file of another prompt (e.g. copied by hand) is refused the same way
    path.write_bytes(cache.path(text).read_bytes())
    other = cache.path("a blue car")
    other.write_bytes(data)
    with pytest.warns(RuntimeWarning, match="holds prompt 'a red car'"):
        assert torch.equal(sd.encode_prompts(["a blue car"]), _fresh(sd, ["a blue car"]))


def test_cache_hit_does_not_call_the_text_encoder(sd, fresh_cache, monkeypatch):
    fresh_cache(sd)
    texts = ["a cute bunny", "a big tree", "a cute bunny"]
    first = sd.encode_prompts(texts)
    assert torch.equal(first[0], first[2])

    class Refuse:
        def __call__(self, *a, **k):
            raise AssertionError("the text encoder was called on a cache hit")

    monkeypatch.setitem(sd._models, "text_encoder", Refuse())
    assert torch.equal(sd.encode_prompts(texts), first)
    assert sd.encode_prompts(texts[1:2]).shape == (1, 77, 32)


def test_lookup_encodes_only_the_misses_in_one_call(tmp_path):
    cache = TextEmbeddingCache("k", root=tmp_path)
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.stack([torch.full((2,), float(len(t))) for t in texts])

    assert cache.lookup(["ab", "abc"], encode).tolist() == [[2.0, 2.0], [3.0, 3.0]]
    assert cache.lookup(["abc", "abcd", "ab"], encode)[:, 0].tolist() == [3.0, 4.0, 2.0]
    assert calls == [["ab", "abc"], ["abcd"]]


def test_empty_prompt_raises(sd):
    with pytest.raises(ValueError, match=re.escape("StableDiffusionSDS.encode_prompts: empty prompt at index 1 "
                                                   "('  '); expected a text describing what to generate")):
        sd.encode_prompts(["a dog", "  "])
    with pytest.raises(ValueError, match="empty prompt"):
        sd.prompt_embeddings("")


def test_model_key_reads_config_and_sizes_not_weight_bytes(tmp_path):
    enc, tok = tmp_path / "text_encoder", tmp_path / "tokenizer"
    enc.mkdir()
    tok.mkdir()
    (enc / "config.json").write_text('{"hidden_size": 32}')
    (enc / "model.safetensors").write_bytes(b"\0" * 100)
    (tok / "tokenizer.json").write_text("{}")
    key = model_key(enc, tok, {"dtype": "float32"})
    (enc / "model.safetensors").write_bytes(b"\1" * 100)  # same name and size: same key (no content hash)
    assert model_key(enc, tok, {"dtype": "float32"}) == key
    assert model_key(enc, tok, {"dtype": "float16"}) != key
    (enc / "model.safetensors").write_bytes(b"\1" * 101)
    assert model_key(enc, tok, {"dtype": "float32"}) != key
    (enc / "model.safetensors").write_bytes(b"\1" * 100)
    (tok / "tokenizer.json").write_text('{"x": 1}')
    assert model_key(enc, tok, {"dtype": "float32"}) != key
