"""InterFusion's anchor-pose codebook and the AvatarCLIP baseline: tables, retrieval, picks, errors, export."""
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.core import hub
from zoo.core.hub import CheckpointError
from zoo.data.synthetic.poses import synthetic_pose_set
from zoo.models.pose.codebook import (
    AZIMUTHS,
    JUDGE_QUESTION,
    AnchorPoseCodebook,
    AvatarCLIPRetrieval,
    clip_identity,
    kmeans_latents,
)

TINY = dict(vposer={"name": "vposer", "hidden": 32}, clip={"variant": "tiny"},
            body_model={"name": "smpl", "synthesize": True}, candidates=4, top_k=3, pick="best", image_size=32,
            min_similarity=-1.0)


@pytest.fixture(scope="module")
def codebook(pose_body_dir):
    """A tiny codebook (4 key poses) built from 20 synthetic poses, shared by the module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
        torch.set_num_threads(1)
        poses, _ = synthetic_pose_set(20, 0)
        return AnchorPoseCodebook(**TINY, clusters=4).build(poses, progress=False)


@pytest.fixture
def hp(codebook):
    """Set hyper-parameters of the shared codebook for one test (restored afterwards)."""
    saved = dict(codebook.hparams)
    yield codebook.hparams
    codebook.hparams.clear()
    codebook.hparams.update(saved)


def test_tables_are_the_mean_clip_embedding_of_four_renders(codebook):
    cb = codebook
    assert cb.size == 4 and cb.hparams.size == 4
    assert cb.key_poses.shape == (4, 21, 3) and cb.latents.shape == (4, 32) and cb.image_emb.shape == (4, 16)
    assert torch.allclose(cb.image_emb.norm(dim=-1), torch.ones(4), atol=1e-6)
    assert bytes(cb.clip_key.tolist()) == clip_identity(cb.clip.root)
    assert torch.allclose(cb.key_poses, cb.vposer.decode(cb.latents), atol=1e-6)
    # The renders' grid is azimuth 0 | 90 over 180 | 270; embedding its quarters reproduces the table
    # (up to the grid's uint8 rounding).
    grid = cb.renders(1)
    s = cb.hparams.image_size
    assert grid.shape == (2 * s, 2 * s, 3) and grid.dtype == np.uint8 and len(AZIMUTHS) == 4
    quarters = [grid[:s, :s], grid[:s, s:], grid[s:, :s], grid[s:, s:]]
    views = torch.from_numpy(np.stack(quarters)).permute(0, 3, 1, 2).float() / 255
    assert (views < 0.99).any(dim=1).flatten(1).any(1).all()  # every view shows the body on white
    e = F.normalize(cb.clip.encode_images(views).mean(0), dim=0)
    assert float(e @ cb.image_emb[1]) > 0.999


def test_retrieval_returns_the_pose_whose_renders_match_the_text(codebook):
    cb = codebook
    text = cb.clip.encode_texts(["a rendered 3d man is riding a horse"])[0]
    saved = cb.image_emb.clone()
    try:
        cb.image_emb[2] = text  # pose 2's image embedding is exactly the query's text embedding
        got = cb.retrieve("riding a horse")
        assert got[0][0] == 2 and got[0][1] == pytest.approx(1.0, abs=1e-5)
        assert len(got) == 3 and all(s < got[0][1] for _, s in got[1:])
        assert torch.equal(cb("riding a horse"), cb.key_poses[2:3])
        assert torch.equal(cb(["riding a horse", "riding a horse"]), cb.key_poses[[2, 2]])
        assert cb.retrieve("sitting on a chair")[0][1] < 0.999
    finally:
        cb.image_emb.copy_(saved)


def test_kmeans_in_latent_space_and_decode_round_trip(pose_body_dir, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 32, generator=gen) * 2
    truth = torch.arange(30) % 3
    z = centres[truth] + 0.01 * torch.randn(30, 32, generator=gen)
    cb = AnchorPoseCodebook(**TINY, clusters=3)
    vp = cb.vposer
    poses = vp.decode(z).detach()
    # An encoder that inverts the decoder on this set (a random VPoser does not), so the test sees the
    # K-Means + decode path alone: the pose set is 3 tight clusters in latent space.
    lookup = {p.numpy().tobytes(): zi for p, zi in zip(poses, z, strict=True)}
    monkeypatch.setattr(vp, "encode", lambda x: (torch.stack([lookup[p.numpy().tobytes()] for p in x]),
                                                 torch.ones(len(x), 32)))
    cb.build(poses, progress=False)
    assert cb.size == 3
    order = [int(torch.cdist(cb.latents[i:i + 1], centres).argmin()) for i in range(3)]
    assert sorted(order) == [0, 1, 2]
    for i, c in enumerate(order):
        assert float((cb.latents[i] - z[truth == c].mean(0)).abs().max()) < 1e-4  # the cluster's mean
        key, cluster_pose = axis(cb.key_poses[i]), axis(vp.decode(centres[c:c + 1])[0].detach())
        assert float((key - cluster_pose).abs().max()) < 0.05  # radians: near the cluster's pose
    centres_np, labels = kmeans_latents(z.numpy(), clusters=10, seed=0)
    assert centres_np.shape == (10, 32) and labels.shape == (30,)
    centres3, labels3 = kmeans_latents(z.numpy(), clusters=3, seed=0)
    assert len({(int(a), int(b)) for a, b in zip(labels3, truth, strict=True)}) == 3  # the true partition


def axis(aa):
    """Rotation matrices of axis-angle rows (compared instead of the vectors: 180-degree ambiguity)."""
    from zoo.models.pose.vposer import axis_angle_to_matrix

    return axis_angle_to_matrix(aa)


def test_picks_best_index_sample(codebook, hp):
    cands = [(3, 0.5), (1, 0.4), (0, 0.1)]
    assert codebook.pick("x", cands) == 3
    hp["pick"], hp["index"] = "index", 1
    assert codebook.pick("x", cands) == 1
    hp["index"] = 2
    assert codebook.pick("x", cands) == 0
    with pytest.raises(ValueError, match=r"^AnchorPoseCodebook: index=2 but only 2 candidate\(s\) for 'x' reach "
                                         r"min_similarity$"):
        codebook.pick("x", cands[:2])
    hp["pick"] = "sample"
    codebook._rng = np.random.default_rng(7)
    draws = [codebook.pick("x", cands) for _ in range(30)]
    codebook._rng = np.random.default_rng(7)
    assert [codebook.pick("x", cands) for _ in range(30)] == draws  # seeded
    assert set(draws) == {3, 1, 0}


class _FakeVLM:
    """A judge whose log-probability of "yes" is log sigmoid(mean brightness of the image / 40 - 6)."""

    def build_inputs(self, images, prompts, answers=None):
        self.prompts = prompts
        b = float(np.asarray(images[0], dtype=np.float64).mean())
        return {"input_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.tensor([[-100, -100, 1]]),
                "brightness": b}

    def __call__(self, inputs):
        logits = torch.zeros(1, 3, 2)
        logits[0, 1, 1] = inputs["brightness"] / 40 - 6  # predicts the token at position 2
        return {"logits": logits}


def test_judge_is_a_forced_choice_on_the_yes_log_probability(codebook, hp):
    hp["pick"] = "judge"
    codebook.__dict__["_parts"]["judge"] = fake = _FakeVLM()
    try:
        cands = [(0, 0.3), (1, 0.2), (2, 0.1), (3, 0.0)]
        bright = [float(codebook.renders(i).astype(np.float64).mean()) for i, _ in cands]
        got = codebook.pick("sitting on a chair", cands)
        assert got == int(np.argmax(bright))
        expected = [math.log(1 / (1 + math.exp(-(b / 40 - 6)))) for b in bright]
        assert [s for _, s in codebook.last_scores] == pytest.approx(expected, abs=1e-5)
        assert fake.prompts == [JUDGE_QUESTION.format(interaction="sitting on a chair")]
        assert fake.prompts[0] == "is this a rendered 3d man sitting on a chair ?"
    finally:
        del codebook.__dict__["_parts"]["judge"]


def test_judge_with_the_tiny_llava(codebook, hp):
    hp["pick"] = "judge"
    codebook._judge_cfg = {"name": "llava", "variant": "tiny"}
    try:
        cands = [(0, 0.3), (2, 0.2)]
        got = codebook.pick("riding a horse", cands)
        vlm = codebook.judge
        # The score is the summed log-probability of the labelled answer tokens: -loss x their number.
        for (i, _), (j, score) in zip(cands, codebook.last_scores, strict=True):
            assert i == j
            inputs = vlm.build_inputs([codebook.renders(i)], ["is this a rendered 3d man riding a horse ?"], ["yes"])
            with torch.no_grad():
                loss = vlm(inputs)["loss"]
            n = int((inputs["labels"] != -100).sum())
            assert score == pytest.approx(-float(loss) * n, rel=1e-4)
        assert got == max(codebook.last_scores, key=lambda c: c[1])[0]
    finally:
        codebook._judge_cfg = None
        codebook.__dict__["_parts"].pop("judge", None)


def test_similarity_floor_names_the_nearest(codebook, hp):
    hp["min_similarity"] = 0.99
    sims = codebook.similarities("lying on a sofa")
    vals, idx = sims.topk(3)
    near = ", ".join(f"#{int(i)} ({float(v):.3f})" for i, v in zip(idx, vals, strict=True))
    with pytest.raises(ValueError, match="^" + re.escape(
            f"AnchorPoseCodebook: no key pose matches 'lying on a sofa' above min_similarity=0.99 (the nearest: "
            f"{near}); lower min_similarity or rephrase the interaction") + "$"):
        codebook.retrieve("lying on a sofa")


def test_empty_codebook_and_bad_configuration(pose_body_dir, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
    cb = AnchorPoseCodebook(**TINY)
    with pytest.raises(ValueError, match=r"^AnchorPoseCodebook: the codebook is empty; build\(poses\) first"):
        cb("sitting")
    with pytest.raises(ValueError, match=r"^AnchorPoseCodebook\.build: expected poses \(N, 21, 3\) or \(N, 63\) "
                                         r"axis-angle body poses, got \(4, 24, 3\)$"):
        cb.build(np.zeros((4, 24, 3)))
    with pytest.raises(ValueError, match=r"^AnchorPoseCodebook: pick='judge' needs judge: a vlm sub-recipe"):
        AnchorPoseCodebook(**{**TINY, "pick": "judge"})
    with pytest.raises(ValueError, match=r"^AnchorPoseCodebook: pick must be one of judge, sample, index, best, "
                                         r"got 'gpt4v'$"):
        AnchorPoseCodebook(**{**TINY, "pick": "gpt4v"})


@pytest.fixture(scope="module")
def exported(codebook, tmp_path_factory):
    return hub.export(codebook, tmp_path_factory.mktemp("codebook") / "cb")


def test_export_and_reload_give_the_same_retrieval(codebook, exported, pose_body_dir, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
    # Only the tables are stored: no CLIP, VLM, VPoser or body model tensors.
    assert sorted(codebook.state_dict()) == ["clip_key", "image_emb", "key_poses", "latents"]
    back = hub.load(exported)
    assert isinstance(back, AnchorPoseCodebook) and back.size == 4
    for name in ("key_poses", "image_emb", "latents", "clip_key"):
        assert torch.equal(getattr(back, name), getattr(codebook, name))
    for text in ("sitting on a chair", "riding a bike", "lying on a bed"):
        assert back.retrieve(text) == codebook.retrieve(text)
        assert torch.equal(back(text), codebook(text))
    # Built first, loaded second: an empty codebook given the export as weights takes its tables.
    again = AnchorPoseCodebook(**TINY, clusters=4, weights=str(exported))
    again.load_pretrained()
    assert torch.equal(again.image_emb, codebook.image_emb) and again.size == 4


def test_a_codebook_built_with_another_clip_is_refused(codebook, exported, tmp_path, pose_body_dir, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
    other = tmp_path / "other_clip"
    shutil.copytree(codebook.clip.root, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["_note"] = "another CLIP"  # a different config: a different identity
    (other / "config.json").write_text(json.dumps(cfg))
    built, now = clip_identity(codebook.clip.root).hex()[:16], clip_identity(other).hex()[:16]
    assert built != now
    expected = (f"the codebook was built with CLIP {built}, but the CLIP configured here ({other}) is {now}; "
                f"its image embeddings only make sense with the CLIP that made them")
    cb = AnchorPoseCodebook(**{**TINY, "clip": {"path": str(other)}}, weights=str(exported))
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{exported}: {expected}")):
        cb.load_pretrained()
    # Through hub.load: an export whose config now names the other CLIP.
    moved = tmp_path / "moved"
    shutil.copytree(exported, moved)
    text = (moved / "config.yaml").read_text().replace("variant: tiny", f"path: {other}", 1)
    (moved / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{moved / 'model.safetensors'}: {expected}")):
        hub.load(moved)


def test_avatarclip_baseline_keeps_a_uniform_subsample(pose_body_dir, monkeypatch):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
    poses, _ = synthetic_pose_set(16, 0)
    base = AvatarCLIPRetrieval(clip={"variant": "tiny"}, body_model={"name": "smpl", "synthesize": True},
                               max_poses=5, candidates=4, top_k=2, pick="best", image_size=32, min_similarity=-1.0)
    base.build(poses, progress=False)
    # linspace(0, 15, 5) = 0, 3.75, 7.5, 11.25, 15 -> rounded 0, 4, 8, 11, 15.
    assert torch.equal(base.key_poses, torch.from_numpy(poses[[0, 4, 8, 11, 15]]))
    assert sorted(base.state_dict()) == ["clip_key", "image_emb", "key_poses"]
    got = base.retrieve("reaching up")
    assert len(got) == 2 and base("reaching up").shape == (1, 21, 3)
    assert torch.equal(base("reaching up")[0], base.key_poses[got[0][0]])
