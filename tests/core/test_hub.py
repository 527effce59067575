"""Checkpoint store: export/load round trips, integrity errors, named-checkpoint cache, atomic writes."""
import json
import re
import struct

import lightning as L
import pytest
import torch
import yaml

from zoo.core import hub, registry
from zoo.core.atomic import atomic_open, atomic_path, atomic_write_bytes, sha256_file
from zoo.core.registry import register

HUB_REGISTRY = """
components:
  backbone:
    hub_test_tied: {import: "test_hub:TiedNet", summary: "tiny tied-weight net for hub tests"}
    hub_test_plain: {import: "test_hub:PlainBlock", summary: "nn.Module with _zoo_config"}
    hub_test_encoder: {import: "test_hub:FrozenEncoder", summary: "a frozen part with pretrained weights"}
    hub_test_composite: {import: "test_hub:Composite", summary: "a trained head on a frozen pretrained encoder"}
checkpoints:
  hub-enc: {component: backbone/hub_test_encoder, source: "https://example.org/hub-enc (place it here)",
            file: model.safetensors, sha256: "ENC", licence: "MIT", recipe: none, metrics: {}}
  hub-tied: {component: backbone/hub_test_tied, source: "https://example.org/hub-tied (place the file here)",
             file: model.safetensors, sha256: "SHA", licence: "CC-BY-NC 4.0, research only", recipe: none,
             metrics: {}}
  hub-missing: {component: backbone/hub_test_tied, source: "https://example.org/missing.safetensors",
                file: missing.safetensors, sha256: "00", licence: "MIT", recipe: none, metrics: {}}
"""


@register("backbone", "hub_test_tied")
class TiedNet(L.LightningModule):
    """Embedding + head sharing one weight, plus a buffer: exercises tied-tensor export."""

    def __init__(self, vocab: int = 11, width: int = 6, hidden: list[int] | None = None, scale: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        self.embed = torch.nn.Embedding(vocab, width)
        self.mid = torch.nn.Linear(width, width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("offset", torch.arange(width, dtype=torch.float32))

    def forward(self, ids):
        return self.head(torch.tanh(self.mid(self.embed(ids)) + self.offset)) * self.hparams.scale


@register("backbone", "hub_test_plain")
class PlainBlock(torch.nn.Module):
    """A plain nn.Module that records its args in _zoo_config."""

    def __init__(self, dim: int):
        super().__init__()
        self._zoo_config = {"dim": dim}
        self.lin = torch.nn.Linear(dim, dim)

    def forward(self, x):
        return self.lin(x)


@register("backbone", "hub_test_encoder")
class FrozenEncoder(hub.Pretrained, L.LightningModule):
    """Linear + BatchNorm whose weights come from a file and stay frozen."""

    def __init__(self, width: int = 4, weights: str | None = None, freeze: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.lin = torch.nn.Linear(width, width)
        self.norm = torch.nn.BatchNorm1d(width)
        self.requires_grad_(not freeze)

    def forward(self, x):
        return self.norm(self.lin(x))


@register("backbone", "hub_test_composite")
class Composite(L.LightningModule):
    """A trained head on a registered encoder sub-recipe (built first, loaded second)."""

    def __init__(self, encoder: dict, out: int = 2):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = registry.build("backbone", encoder)
        self.head = torch.nn.Linear(encoder.get("width", 4), out)

    def forward(self, x):
        return self.head(self.encoder(x))


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """Temporary registry.yaml + ZOO_HOME; returns (registry path, zoo home)."""
    reg = tmp_path / "registry.yaml"
    reg.write_text(HUB_REGISTRY)
    home = tmp_path / "home"
    monkeypatch.setenv("ZOO_REGISTRY", str(reg))
    monkeypatch.setenv("ZOO_HOME", str(home))
    registry.index(reload=True)
    yield reg, home
    registry._INDEX_CACHE.clear()


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return TiedNet(**kw)


def test_export_load_round_trip_equal_outputs(hub_env, tmp_path):
    m = _model(vocab=13, width=5, hidden=[3, 4], scale=2.0)
    out = hub.export(m, tmp_path / "exp", extra={"note": "unit", "f1": 0.5})
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["kind"] == "backbone" and cfg["name"] == "hub_test_tied"
    assert cfg["hparams"] == {"vocab": 13, "width": 5, "hidden": [3, 4], "scale": 2.0}
    assert cfg["sha256"] == sha256_file(out / "model.safetensors")
    assert cfg["extra"] == {"note": "unit", "f1": 0.5} and cfg["format"] == "hoi-zoo/1"
    header = hub.check_safetensors(out / "model.safetensors")
    # the tied weight is stored once and recorded as an alias
    assert "head.weight" not in header and "embed.weight" in header
    assert json.loads(header["__metadata__"]["zoo_aliases"]) == {"head.weight": "embed.weight"}

    ids = torch.tensor([[0, 3, 12], [5, 5, 1]])
    for src in (out, out / "model.safetensors"):
        m2 = hub.load(src)
        assert type(m2) is TiedNet and not m2.training
        assert m2.head.weight is m2.embed.weight  # tying survives (constructor re-ties, load fills once)
        torch.testing.assert_close(m2(ids), m.eval()(ids), rtol=0, atol=0)


def test_export_nn_module_with_zoo_config(hub_env, tmp_path):
    torch.manual_seed(1)
    m = PlainBlock(4)
    hub.export(m, tmp_path / "p")
    m2 = hub.load(tmp_path / "p")
    x = torch.randn(2, 4)
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


def test_export_rejects_unserialisable_and_unregistered(hub_env, tmp_path):
    m = _model()
    m.hparams["bad"] = torch.zeros(1)
    with pytest.raises(TypeError, match=r"cannot export hyper-parameter hparams.bad: Tensor is not a plain YAML"):
        hub.export(m, tmp_path / "x")
    with pytest.raises(ValueError, match=r"no registry identity"):
        hub.export(torch.nn.Linear(2, 2), tmp_path / "y")


def test_lightning_ckpt_round_trip(hub_env, tmp_path):
    m = _model(width=4, scale=0.5)
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams),
                "zoo": {"kind": "backbone", "name": "hub_test_tied"}, "epoch": 3}, path)
    m2 = hub.load(path)
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(m2(ids), m.eval()(ids), rtol=0, atol=0)
    assert m2.hparams.scale == 0.5
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}, tmp_path / "anon.ckpt")
    with pytest.raises(hub.CheckpointError, match=r"anon.ckpt does not say which component it holds"):
        hub.load(tmp_path / "anon.ckpt")
    assert hub.load(tmp_path / "anon.ckpt", component="backbone/hub_test_tied").hparams.width == 4


def test_truncated_file_error(hub_env, tmp_path):
    out = hub.export(_model(), tmp_path / "t")
    f = out / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    with pytest.raises(hub.CheckpointError,
                       match=rf"truncated safetensors file .*model.safetensors: header describes {len(data)} bytes, "
                             rf"file has {len(data) - 10}"):
        hub.load(out)
    f.write_bytes(data[:5])
    with pytest.raises(hub.CheckpointError, match=r"5 bytes, too short for the 8-byte header length"):
        hub.load(out)


def test_corrupt_header_error(hub_env, tmp_path):
    out = hub.export(_model(), tmp_path / "c")
    f = out / "model.safetensors"
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    data[8] = ord("#")  # the JSON object's opening brace
    f.write_bytes(bytes(data))
    with pytest.raises(hub.CheckpointError, match=r"corrupt safetensors header in .*model.safetensors: not valid JSON"):
        hub.load(out)
    data[:8] = struct.pack("<Q", 10**12)
    f.write_bytes(bytes(data))
    with pytest.raises(hub.CheckpointError, match=r"header length field says 1000000000000 bytes"):
        hub.load(out)


def test_sha_mismatch_names_file_expected_actual(hub_env, tmp_path):
    out = hub.export(_model(), tmp_path / "s")
    f = out / "model.safetensors"
    recorded = yaml.safe_load((out / "config.yaml").read_text())["sha256"]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # flip tensor bytes: structure intact, content changed
    f.write_bytes(bytes(data))
    actual = sha256_file(f)
    with pytest.raises(hub.CheckpointError,
                       match=rf"sha256 mismatch for .*model.safetensors: expected {recorded} "
                             rf"\(recorded in .*config.yaml\), got {actual}"):
        hub.load(out)
    rep = hub.verify(out)
    assert rep["ok"] is False and rep["expected"] == recorded and rep["sha256"] == actual
    assert rep["size"] == len(data) and "sha256 mismatch" in rep["error"]


def _lightning_ckpt(path, seed=0):
    m = _model(seed, width=4)
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams),
                "zoo": {"kind": "backbone", "name": "hub_test_tied"}}, path)
    return path


def test_verify_fails_what_is_neither_a_torch_zip_nor_safetensors(hub_env, tmp_path):
    import random
    import zipfile

    good = _lightning_ckpt(tmp_path / "good.ckpt")
    rep = hub.verify(good)
    assert rep["ok"] is True and rep["error"] is None and rep["sha256"] == sha256_file(good)
    # 100 KB of random bytes used to pass as "legacy pickle, no recorded hash"
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(random.Random(0).randbytes(100_000))
    rep = hub.verify(noise)
    assert rep["ok"] is False and rep["sha256"] is None
    assert rep["error"] == (f"not a torch zip checkpoint nor safetensors: {noise} (its first bytes match neither "
                            f"format); legacy pickle files cannot be verified; re-save with torch.save (zip format, "
                            f"the default) or export it with zoo.core.hub.export")
    # a real checkpoint cut in half: starts like a zip archive, has no central directory
    half = tmp_path / "half.ckpt"
    data = good.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    rep = hub.verify(half)
    assert rep["ok"] is False
    assert rep["error"] == (f"not a valid torch zip checkpoint: {half} starts like a zip archive (torch.save format) "
                            f"but its central directory is missing (truncated or incomplete copy?)")
    with pytest.raises(hub.CheckpointError, match=re.escape(rep["error"])):
        hub.load(half)  # loading says the same, before torch sees the file
    # a legacy (non-zip) torch file: torch.load may read it, but nothing can verify it
    legacy = tmp_path / "legacy.ckpt"
    torch.save(torch.load(good, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    rep = hub.verify(legacy)
    assert rep["ok"] is False and "(it looks like a legacy pickle file); legacy pickle files cannot be verified" \
        in rep["error"]
    # a zip archive that torch.save did not write
    other = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("notes.txt", "hello")
    rep = hub.verify(other)
    assert rep["ok"] is False and rep["error"] == (f"not a torch zip checkpoint: {other} is a zip archive without "
                                                   f"the <name>/data.pkl member torch.save writes")
    # safetensors content under another name is verified as safetensors
    out = hub.export(_model(), tmp_path / "exp")
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes((out / "model.safetensors").read_bytes())
    assert hub.verify(renamed)["ok"] is True
    renamed.write_bytes((out / "model.safetensors").read_bytes()[:-3])
    assert "truncated safetensors file" in hub.verify(renamed)["error"]


def test_verify_catches_a_corrupt_member_of_a_torch_zip(hub_env, tmp_path):
    good = _lightning_ckpt(tmp_path / "good.ckpt")
    import zipfile

    with zipfile.ZipFile(good) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    data = bytearray(good.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the member's stored bytes (torch does not compress)
    data[start + info.compress_size // 2] ^= 0xFF
    good.write_bytes(bytes(data))
    rep = hub.verify(good)
    assert rep["ok"] is False and re.fullmatch(rf"corrupt checkpoint archive {re.escape(str(good))}: member '.*' "
                                               rf"fails its CRC check", rep["error"]), rep["error"]


def test_named_checkpoint_missing_message(hub_env):
    reg, home = hub_env
    expected = home / "checkpoints" / "hub-missing" / "missing.safetensors"
    msg = (rf"checkpoint 'hub-missing' \(weights for backbone/hub_test_tied\) is not in the local cache: "
           rf"expected {re.escape(str(expected))}\. Source: https://example.org/missing.safetensors\. "
           rf"Licence: MIT\. hoi-zoo never downloads")
    with pytest.raises(FileNotFoundError, match=msg):
        hub.load("hub-missing")
    with pytest.raises(FileNotFoundError, match=msg):
        hub.resolve("zoo://hub-missing")
    rep = hub.verify("hub-missing")
    assert rep["ok"] is False and rep["path"] == str(expected) and "not in the local cache" in rep["error"]
    with pytest.raises(registry.RegistryError, match=r"unknown checkpoint 'hub-tyed'; closest: hub-tied"):
        hub.load("hub-tyed")


def test_named_checkpoint_loads_and_checks_registry_hash(hub_env, tmp_path):
    reg, home = hub_env
    m = _model(seed=3)
    out = hub.export(m, home / "checkpoints" / "hub-tied")
    sha = sha256_file(out / "model.safetensors")
    # registry.yaml holds a wrong hash first: named loads must check it
    reg.write_text(HUB_REGISTRY.replace('"SHA"', '"' + "ab" * 32 + '"'))
    registry.index(reload=True)
    with pytest.raises(hub.CheckpointError, match=rf"expected {'ab' * 32} \(registry.yaml\), got {sha}"):
        hub.load("hub-tied")
    reg.write_text(HUB_REGISTRY.replace('"SHA"', f'"{sha.upper()}"'))
    registry.index(reload=True)
    ids = torch.tensor([[4, 2]])
    torch.testing.assert_close(hub.load("zoo://hub-tied")(ids), m.eval()(ids), rtol=0, atol=0)
    assert hub.resolve("hub-tied") == out / "model.safetensors"
    rep = hub.verify("hub-tied")
    assert rep == {"ok": True, "path": str(out / "model.safetensors"), "sha256": sha, "expected": sha,
                   "size": (out / "model.safetensors").stat().st_size, "error": None}


def test_strict_false_tolerates_missing_keys(hub_env, tmp_path):
    m = _model()
    path = tmp_path / "partial.ckpt"
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith("mid.")}
    torch.save({"state_dict": sd, "hyper_parameters": dict(m.hparams),
                "zoo": {"kind": "backbone", "name": "hub_test_tied"}}, path)
    with pytest.raises(hub.CheckpointError, match=r"state_dict in .*partial.ckpt does not fit TiedNet: missing 2 key\(s\): "
                                                 r"mid.weight, mid.bias$"):
        hub.load(path)
    with pytest.warns(UserWarning, match=r"missing \['mid.weight', 'mid.bias'\]"):
        m2 = hub.load(path, strict=False)
    torch.testing.assert_close(m2.embed.weight, m.embed.weight)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_open(target, "wb") as fh:
            fh.write(b"new partial data")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # temp file cleaned up
    fresh = tmp_path / "sub" / "fresh.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(fresh) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert not fresh.exists() and list(fresh.parent.iterdir()) == []
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    with atomic_open(fresh, "w") as fh:
        fh.write("text é")
    assert fresh.read_text(encoding="utf-8") == "text é"
    assert sha256_file(target) == "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437"
    with pytest.raises(ValueError, match=r"mode must be 'w', 'wt' or 'wb', got 'a'"):
        with atomic_open(target, "a"):
            pass
    with pytest.raises(TypeError, match=r"expected bytes, got str"):
        atomic_write_bytes(target, "text")


@pytest.fixture
def store_encoder(hub_env):
    """A FrozenEncoder exported into the store as registry checkpoint hub-enc (registry sha256 set)."""
    reg, home = hub_env
    torch.manual_seed(7)
    enc = FrozenEncoder(width=4).eval()
    with torch.no_grad():
        enc.norm.running_mean.uniform_(-1, 1)  # a buffer that differs from its init
    out = hub.export(enc, home / "checkpoints" / "hub-enc")
    sha = sha256_file(out / "model.safetensors")
    reg.write_text(HUB_REGISTRY.replace('"ENC"', f'"{sha}"'))
    registry.index(reload=True)
    return enc, out / "model.safetensors", sha


def _composite():
    torch.manual_seed(1)
    comp = registry.build("backbone", {"name": "hub_test_composite", "encoder": {"name": "hub_test_encoder",
                                                                                 "weights": "zoo://hub-enc"}})
    with torch.no_grad():
        comp.head.weight.add_(1.0)  # stands in for training
    return comp.eval()


def test_load_weights_one_path_checks_hash_and_keys(store_encoder, tmp_path):
    enc, file, sha = store_encoder
    m = FrozenEncoder(width=4)
    rec = hub.load_weights(m, "zoo://hub-enc")
    assert rec["sha256"] == sha and rec["path"] == str(file) and "lin.weight" in rec["keys"]
    assert torch.equal(m.norm.running_mean, enc.norm.running_mean) and m._zoo_weights is rec
    # a local file in another layout, with a converter on the module
    torch.save({"model": {f"module.{k}": v for k, v in enc.state_dict().items()}}, tmp_path / "enc.pth")

    class Converting(FrozenEncoder):
        def convert_checkpoint(self, obj, source):
            return {k.removeprefix("module."): v for k, v in obj["model"].items()}

    c = Converting(width=4)
    hub.load_weights(c, tmp_path / "enc.pth")
    assert torch.equal(c.lin.weight, enc.lin.weight)
    bad = {k: v for k, v in enc.state_dict().items() if k != "lin.bias"}
    bad["extra.weight"] = torch.zeros(1)
    bad["norm.weight"] = torch.zeros(5)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(hub.CheckpointError, match=r"weights .*bad.pt \(.*bad.pt\) do not fit backbone/hub_test_encoder: "
                                                  r"missing 1 key\(s\): lin.bias; unexpected 1 key\(s\): extra.weight; "
                                                  r"1 shape mismatch\(es\) \(file vs module\): norm.weight \(5,\) vs \(4,\)"):
        hub.load_weights(FrozenEncoder(width=4), tmp_path / "bad.pt")
    with pytest.raises(hub.CheckpointError, match=r"expected 00+ \(the export that references it\), got " + sha):
        hub.load_weights(FrozenEncoder(width=4), "hub-enc", expected_sha256="0" * 64)


class _Payload:
    """Unpickling this runs a shell command: weight files must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_weights_files_never_unpickle_arbitrary_objects(hub_env, tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(hub.CheckpointError, match=r"cannot read weights file .*evil.pt with torch.load\(weights_only=True\)"):
        hub.load_weights(FrozenEncoder(), path)
    assert not marker.exists(), "the pickle payload ran"


def test_export_references_frozen_parts_and_reload_fetches_them(store_encoder, tmp_path):
    enc, file, sha = store_encoder
    comp = _composite()
    out = hub.export(comp, tmp_path / "exp")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["self_contained"] is False
    assert cfg["frozen"] == [{"module": "encoder", "component": "backbone/hub_test_encoder", "source": "zoo://hub-enc",
                              "sha256": sha, "keys": sorted(enc.state_dict())}]
    header = hub.check_safetensors(out / "model.safetensors")
    assert sorted(k for k in header if k != "__metadata__") == ["head.bias", "head.weight"]
    x = torch.randn(3, 4)
    again = hub.load(out)
    torch.testing.assert_close(again(x), comp(x), rtol=0, atol=0)
    # a buffer that changed after loading (BatchNorm running stats in train mode) is stored, not referenced
    comp.train()
    comp(torch.randn(8, 4))
    comp.eval()
    cfg2 = yaml.safe_load((hub.export(comp, tmp_path / "exp2") / "config.yaml").read_text())
    assert cfg2["frozen"][0]["keys"] == ["lin.bias", "lin.weight", "norm.bias", "norm.weight"]
    torch.testing.assert_close(hub.load(tmp_path / "exp2")(x), comp(x), rtol=0, atol=0)


def test_export_with_a_frozen_part_missing_from_the_store(store_encoder, tmp_path):
    enc, file, sha = store_encoder
    comp = _composite()
    out = hub.export(comp, tmp_path / "exp")
    solo = hub.export(comp, tmp_path / "solo", self_contained=True)
    assert yaml.safe_load((solo / "config.yaml").read_text())["frozen"] == []
    file.unlink()
    with pytest.raises(FileNotFoundError) as e:
        hub.load(out)
    msg = str(e.value)
    assert msg.startswith(f"{out / 'config.yaml'} references its frozen part 'encoder' (backbone/hub_test_encoder) "
                          f"instead of storing it: zoo://hub-enc (sha256 {sha}) is needed to load this export. "
                          f"checkpoint 'hub-enc' (weights for backbone/hub_test_encoder) is not in the local cache: "
                          f"expected {file}. Source: https://example.org/hub-enc (place it here).")
    x = torch.randn(2, 4)
    torch.testing.assert_close(hub.load(solo)(x), comp(x), rtol=0, atol=0)


def test_export_of_another_shape_is_a_clear_error(hub_env, tmp_path):
    out = hub.export(_model(width=6), tmp_path / "w6")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["hparams"]["width"] = 5  # the config now rebuilds a narrower net than the tensors
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(hub.CheckpointError, match=r"state_dict in .*model.safetensors does not fit TiedNet: "
                                                  r"5 shape mismatch\(es\) \(file vs module\): embed.weight \(11, 6\) "
                                                  r"vs \(11, 5\)"):
        hub.load(out)
