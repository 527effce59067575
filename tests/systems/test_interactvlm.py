"""The interactvlm system (zoo.systems.interactvlm) at its tiny size on synthetic DAMON-format batches.

Checked: the body parts an answer names (hand-built labels); generated-mode evaluation equals teacher-forced
evaluation when the generated text is the target; a generation without a contact token is an empty prediction
(scores 0, F1 0 under InteractVLM's rules) and is counted; an answer that never closes is counted; an export
holds only what trains (no frozen VLM base, named by path and hash instead) and reloads to equal outputs; a
checkpoint or export trained with other contact tokens is refused; mode / template mismatches name the problem.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.core import recipe as R
from zoo.core import registry


@pytest.fixture(scope="module")
def setup(synth, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_HOME", str(tmp_path_factory.mktemp("ivlm_home")))
    mp.setenv("ZOO_BODY_MODELS", str(synth[0]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rec = R.load("interactvlm/synthetic", [f"data.root={synth[1]}", "data.batch_size=4",
                                           "system.human.surface.renderer.image_size=64",
                                           "system.human.localizer.image_size=64", "system.max_new_tokens=12"])
    torch.manual_seed(0)
    system = registry.build("system", rec["system"])
    system.eval()
    dm = registry.build("datamodule", rec["data"])
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    yield {"system": system, "batch": batch, "rec": rec}
    torch.set_num_threads(threads)
    mp.undo()


def _fake_generate(system, answers: list[str], close: bool = True):
    """A stand-in for the HF model's generate that writes ``answers`` (then the end-of-turn) after the prompt."""
    vlm = system.vlm

    def generate(input_ids, **kw):
        rows = []
        for b, a in enumerate(answers):
            ids = vlm.answer_ids("", a) + (vlm.answer_suffix() if close else [])
            rows.append(input_ids[b].tolist() + ids)
        T = max(len(r) for r in rows)
        pad = vlm.tokenizer.pad_token_id
        return torch.tensor([r + [pad] * (T - len(r)) for r in rows])

    return generate


def test_answer_parts_hand_built():
    from zoo.body.mesh import SMPL_PART_NAMES
    from zoo.systems.interactvlm import contact_parts

    part = np.zeros(40, dtype=np.int64)
    part[0:10] = SMPL_PART_NAMES.index("left_hand")
    part[10:20] = SMPL_PART_NAMES.index("left_wrist")   # the same words: "left hand"
    part[20:30] = SMPL_PART_NAMES.index("pelvis")
    part[30:40] = SMPL_PART_NAMES.index("head")
    label = np.zeros(40)
    label[[0, 1, 2, 11, 12]] = 1      # 3 + 2 vertices of "left hand": named at min 5
    label[20:24] = 1                  # 4 hips vertices: not named at min 5
    label[30:40] = 1                  # head
    assert contact_parts(label, part, min_vertices=5) == ["head", "left hand"]
    assert contact_parts(label, part, min_vertices=4) == ["hips", "head", "left hand"]
    assert contact_parts(np.zeros(40), part) == []


def test_generated_equals_teacher_forced_when_the_text_is_the_target(setup, monkeypatch):
    system, batch = setup["system"], setup["batch"]
    with torch.no_grad():
        tf = system.teacher_forced(batch, "human", "test")
        monkeypatch.setattr(system.vlm.model, "generate", _fake_generate(system, tf["answers"]))
        gen = system.generated(batch, "human", "test")
    assert gen["answers"] == [a.strip() for a in tf["answers"]] or all(
        g.split()[-1] == "[HCON]" for g in gen["answers"])
    assert gen["has_token"] == [True] * len(tf["answers"]) and all(gen["closed"])
    assert torch.allclose(gen["scores"], tf["scores"], atol=1e-5), (gen["scores"] - tf["scores"]).abs().max()
    assert tf["scores"].std() > 1e-4  # not a constant: the comparison means something


def test_generation_without_contact_token_is_an_empty_prediction_and_counted(setup, monkeypatch):
    system, batch = setup["system"], setup["batch"]
    B = batch["contact_label"].shape[0]
    answers = ["the left hand"] + ["sure [HCON]"] * (B - 1)
    monkeypatch.setattr(system.vlm.model, "generate", _fake_generate(system, answers))
    logged = {}
    monkeypatch.setattr(system, "log", lambda k, v, **kw: logged.__setitem__(k, float(v)))
    with torch.no_grad():
        losses, out = system.step(batch, "test")
    assert out["has_token"] == [False] + [True] * (B - 1)
    assert torch.count_nonzero(out["scores"][0]) == 0 and torch.count_nonzero(out["scores"][1:]) > 0
    assert logged["test/gen_empty"] == 1.0 and logged["test/gen_unclosed"] == 0.0
    assert system._gen_log["test"]["empty"] == [out["names"][0]]
    assert out["names"][0].endswith(f"/ {batch['object_name'][0]}") and "synth_test" in out["names"][0]
    from zoo.metrics.contact import ContactPRF

    m = ContactPRF(threshold=0.5, convention="interactvlm")
    m.update(out["scores"][:1], batch["contact_label"][:1])
    assert m.compute()["f1"] == pytest.approx(0.0)
    with pytest.warns(UserWarning, match=r"InteractVLM test: 1 answer\(s\) generated no contact token \(scored as "
                                         r"empty predictions\): datasets/HOT-Annotated/images/synth_test"):
        _warn_only(system, "test")


def _warn_only(system, stage):
    """The warning part of the epoch end (the metric logging needs a trainer)."""
    from zoo.systems.base import System

    original = System._eval_epoch_end
    try:
        System._eval_epoch_end = lambda self, s: None
        system._eval_epoch_end(stage)
    finally:
        System._eval_epoch_end = original


def test_answer_that_never_closes_is_counted(setup, monkeypatch):
    system, batch = setup["system"], setup["batch"]
    B = batch["contact_label"].shape[0]
    monkeypatch.setattr(system.vlm.model, "generate", _fake_generate(system, ["sure [HCON] the"] * B, close=False))
    with torch.no_grad():
        out = system.generated(batch, "human", "test")
    assert out["closed"] == [False] * B and out["has_token"] == [True] * B


def test_export_holds_only_trained_tensors_and_reloads_equal(setup, tmp_path):
    import yaml
    from safetensors import safe_open

    from zoo.core import hub

    system, batch = setup["system"], setup["batch"]
    with torch.no_grad():
        for p in system.projection.parameters():
            p.add_(0.01)  # trained-looking weights, not the seed's
    out = hub.export(system, tmp_path / "export")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    vlm_refs = [r for r in cfg["frozen"] if r["module"] == "vlm"]
    assert len(vlm_refs) == 1 and vlm_refs[0]["source"] == system.vlm.model_dir
    assert vlm_refs[0]["sha256"] and len(vlm_refs[0]["sha256"]) == 64
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    vlm_keys = {k for k in keys if k.startswith("vlm.")}
    trainable = {f"vlm.{n}" for n, p in system.vlm.named_parameters() if p.requires_grad}
    assert vlm_keys == trainable  # LoRA, embed_tokens, lm_head (+ the tiny vision tower the recipe trains)
    frozen_lm = [k for k, p in system.vlm.named_parameters() if not p.requires_grad]
    assert frozen_lm and not any(f"vlm.{k}" in keys for k in frozen_lm)
    assert any("lora_A" in k for k in vlm_keys) and any(k.startswith("projection.") for k in keys)
    assert any(k.startswith("human.localizer.") for k in keys) and any(k.startswith("human.lifter.") for k in keys)
    loaded = hub.load(out)
    with torch.no_grad():
        a = system.teacher_forced(batch, "human", "test")["scores"]
        b = loaded.teacher_forced(batch, "human", "test")["scores"]
    assert torch.equal(a, b)


def test_other_contact_tokens_are_refused(setup):
    system = setup["system"]
    with pytest.raises(ValueError, match=r"trained with contact tokens \['\[HSEG\]', '\[OSEG\]'\], but the recipe's "
                                         r"system.vlm.tokens are \['\[HCON\]', '\[OCON\]'\]"):
        system.on_load_checkpoint({"hyper_parameters": {"vlm": {"tokens": ["[HSEG]", "[OSEG]"]}}})


def test_mode_and_template_mismatches_name_the_problem(setup):
    rec = setup["rec"]
    cfg = dict(rec["system"])
    with pytest.raises(ValueError, match="mode 'object' needs the 'object' branch"):
        registry.build("system", {**cfg, "mode": "object"})
    sys2 = registry.build("system", {**cfg, "tasks": {"semantic": "human_contact"}}, materialize=False)
    with pytest.raises(ValueError, match="mode 'semantic' asks per object, but template task 'human_contact'"):
        sys2.configure_model()
    sys3 = registry.build("system", {**cfg, "tasks": {"semantic": "object_contact"}}, materialize=False)
    sys3.hparams.vlm = {**dict(cfg["vlm"]), "tokens": ["[HCON]"]}
    with pytest.raises(ValueError, match=r"answers with \[OCON\], which is not one of the VLM's contact tokens"):
        sys3.configure_model()


def test_infer_tool_writes_outputs_and_reports_unreadable_images(setup, tmp_path, monkeypatch, capsys):
    import importlib.util
    import json
    import shutil
    from pathlib import Path

    from zoo.core import hub

    system = setup["system"]
    export = hub.export(system, tmp_path / "export")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "photos" / "grace_hopper.jpg", photos / "a_photo.jpg")
    (photos / "b_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (photos / "notes.txt").write_text("not an image")
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "tools"))  # the tool imports tools/_cli.py
    spec = importlib.util.spec_from_file_location("infer_tool", Path(__file__).parents[2] / "tools" / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    real_load = hub.load

    def load_and_fake(path, *a, **kw):
        m = real_load(path, *a, **kw)
        monkeypatch.setattr(m.vlm.model, "generate", _fake_generate(m, ["the left hand touch the chair : [HCON]"]))
        return m

    monkeypatch.setattr(hub, "load", load_and_fake)
    out = tmp_path / "out"
    code = infer.main([f"ckpt={export}", f"image={photos}", "object=chair", f"out={out}",
                       "recipe=interactvlm/synthetic"])
    assert code == 1  # one image skipped
    skipped = (out / "skipped.txt").read_text()
    assert "b_broken.jpg: cannot be decoded as an image" in skipped and "a_photo" not in skipped
    doc = json.loads((out / "a_photo" / "contact.json").read_text())
    assert doc["answer"] == "the left hand touch the chair : [HCON]" and doc["has_token"]
    probs = np.asarray(doc["vertex_probabilities"])
    assert probs.shape == (6890,) and 0 <= probs.min() and probs.max() <= 1 and probs.std() > 0
    assert (out / "a_photo" / "body.glb").read_bytes()[:4] == b"glTF"
    from PIL import Image

    with Image.open(out / "a_photo" / "views.png") as im:
        assert im.height == 280 and im.width > 4 * 256  # title row + one row of 4 views, the photo beside them
    assert not (out / "notes").exists()
    text = capsys.readouterr()
    assert "1 image(s) written" in text.out and "1 skipped" in text.out
    with pytest.raises(SystemExit, match="give object=NAME"):
        infer.main([f"ckpt={export}", f"image={photos}", f"out={out}"])


def test_merge_writes_a_plain_model_and_a_standalone_export(setup, tmp_path):
    import transformers
    import yaml

    from zoo.core import hub
    from zoo.models.vlm.merge import merge_export

    system, batch = setup["system"], setup["batch"]
    with torch.no_grad():
        for n, p in system.vlm.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)  # adapters that change the output, so merging them matters
    export = hub.export(system, tmp_path / "export")
    vlm_dir, sys_dir = merge_export(export, tmp_path / "merged")
    plain = transformers.LlavaForConditionalGeneration.from_pretrained(str(vlm_dir), local_files_only=True)
    assert not any("lora" in k for k in plain.state_dict())
    frozen = yaml.safe_load((sys_dir / "config.yaml").read_text())["frozen"]
    assert [r["module"] for r in frozen if r["module"] == "vlm"] == ["vlm"] and frozen[0]["source"] == str(vlm_dir.resolve())
    merged = hub.load(sys_dir)
    with torch.no_grad():
        a = system.teacher_forced(batch, "human", "test")["scores"]
        b = merged.teacher_forced(batch, "human", "test")["scores"]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    with pytest.raises(FileExistsError, match="exists; choose a new output folder"):
        merge_export(export, tmp_path / "merged")


def test_swapping_the_vlm_family_keeps_its_arguments():
    """VLM families share BaseVLM's constructor, so `system.vlm.name=qwen2_vl` keeps the tiny variant, tokens and
    LoRA; components with another constructor still start from their own defaults."""
    rec = R.load("interactvlm/synthetic", ["system.vlm.name=qwen2_vl"])
    vlm = rec["system"]["vlm"]
    assert vlm["name"] == "qwen2_vl" and vlm["variant"] == "tiny" and vlm["lora"]["r"] == 16
    assert R.load("mvloc/synthetic_human", ["system.lifter.name=identity"])["system"]["lifter"] == {"name": "identity"}


def test_joint_mode_routes_each_batch_to_its_branch(setup, synth_piad):
    """mode joint: one VLM, two branches; a DAMON batch trains the body branch ([HCON]), a PIAD batch (points)
    the object branch ([OCON]); each metric updates on its branch's batches only (by log_prefix)."""
    cfg = dict(setup["rec"]["system"])
    obj = R.load("interactvlm/synthetic_joint")["system"]["object"]
    cfg.update(mode="joint", object=obj, metrics=[
        {"name": "contact_prf", "threshold": 0.5, "convention": "interactvlm", "log_prefix": "human/"},
        {"name": "affordance", "convention": "interactvlm", "log_prefix": "object/"}])
    torch.manual_seed(0)
    system = registry.build("system", cfg)
    assert system.branch_names == ["human", "object"] and system.token_of == {"human": "[HCON]", "object": "[OCON]"}
    assert sorted(system.projection.heads) == ["HCON", "OCON"]
    dm = registry.build("datamodule", {"name": "piad", "root": str(synth_piad), "image_size": 64, "batch_size": 3})
    dm.setup("fit")
    piad = next(iter(dm.train_dataloader()))
    system.train()
    for batch, branch in ((setup["batch"], "human"), (piad, "object")):
        losses, out = system.step(batch, "train")
        assert out["branch"] == branch and f"{branch}_loss_3d" in losses and torch.isfinite(losses["loss"])
        losses["loss"].backward()
        head = system.projection.heads["HCON" if branch == "human" else "OCON"]
        other = system.projection.heads["OCON" if branch == "human" else "HCON"]
        assert head[0].weight.grad is not None and other[0].weight.grad is None
        system.zero_grad(set_to_none=True)
    assert [system._metric_branch(i) for i in range(2)] == ["human", "object"]
