"""clip_score: the view-averaged raw cosine between CLIP image and prompt embeddings, averaged over samples."""
import math
import re

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def clip_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("clip_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(home))
        yield home


@pytest.fixture
def metric(clip_home):
    from zoo.metrics.clip_score import CLIPScore

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield CLIPScore(variant="tiny")
    torch.set_num_threads(n)


def _unit(*v):
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=0)


def _fake_encoders(monkeypatch, metric, image_vectors, text_vectors):
    """Encoders returning chosen unit vectors: images in order of the flattened (B * V) batch, texts by prompt."""
    monkeypatch.setattr(metric.encoder, "encode_images", lambda images: torch.stack(image_vectors[: len(images)]))
    monkeypatch.setattr(metric.encoder, "encode_texts", lambda texts: torch.stack([text_vectors[t] for t in texts]))


def test_hand_case_two_images(metric, monkeypatch):
    texts = {"a dog": _unit(1, 0, 0), "a cat": _unit(0, 1, 0)}
    # image 0 is the dog's text vector itself (cosine 1); image 1 lies at 60 degrees from the cat's (cosine 0.5)
    images = [_unit(1, 0, 0), _unit(0, 0.5, math.sqrt(3) / 2)]
    _fake_encoders(monkeypatch, metric, images, texts)
    metric.update(torch.rand(2, 3, 8, 8), ["a dog", "a cat"])
    torch.testing.assert_close(metric.compute()["clip_score"], torch.tensor(0.75))


def test_views_are_averaged_per_sample_then_over_samples(metric, monkeypatch):
    texts = {"a dog": _unit(1, 0, 0), "a cat": _unit(0, 1, 0)}
    # sample 0: views with cosines 1 and 0 (mean 0.5); sample 1: views with cosines -1 and 0.5 (mean -0.25)
    images = [_unit(1, 0, 0), _unit(0, 0, 1), _unit(0, -1, 0), _unit(0, 0.5, math.sqrt(3) / 2)]
    _fake_encoders(monkeypatch, metric, images, texts)
    metric.update(torch.rand(2, 2, 3, 8, 8), ["a dog", "a cat"])
    torch.testing.assert_close(metric.compute()["clip_score"], torch.tensor(0.125))


def test_states_add_across_processes(metric, monkeypatch, clip_home):
    from zoo.metrics.clip_score import CLIPScore

    other = CLIPScore(variant="tiny")
    texts = {"a dog": _unit(1, 0, 0)}
    _fake_encoders(monkeypatch, metric, [_unit(1, 0, 0)], texts)
    _fake_encoders(monkeypatch, other, [_unit(0, 0, 1), _unit(0, 0, 1)], texts)
    metric.update(torch.rand(1, 3, 8, 8), ["a dog"])
    other.update(torch.rand(2, 3, 8, 8), ["a dog", "a dog"])
    metric.merge_state(other)  # what the DDP sum-reduction does
    torch.testing.assert_close(metric.compute()["clip_score"], torch.tensor(1 / 3))


def test_real_tiny_clip_matches_its_encoders(metric):
    img = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert math.isnan(float(metric.compute()["clip_score"]))
    metric.update(img, ["a red car", "a blue ball"])
    enc = metric.encoder
    txt = enc.encode_texts(["a red car", "a blue ball"])
    want = torch.stack([(enc.encode_images(img[b]) @ txt[b]).mean() for b in range(2)]).mean()
    torch.testing.assert_close(metric.compute()["clip_score"], want)
    assert len(metric.state_dict()) == 0 and list(metric.parameters()) == []


def test_bad_inputs(metric):
    with pytest.raises(ValueError, match=re.escape("CLIPScore.update: got 1 prompts for 2 samples")):
        metric.update(torch.rand(2, 3, 8, 8), ["a dog"])
    with pytest.raises(ValueError, match=re.escape("expected images (B, 3, H, W) or (B, V, 3, H, W)")):
        metric.update(torch.rand(2, 8, 8), ["a", "b"])
