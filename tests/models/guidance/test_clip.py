"""CLIP encoder preprocessing and the clip_guidance loss (tiny random CLIP)."""
import re

import pytest
import torch
import torch.nn.functional as F

from zoo.models.guidance.clip import CLIP_MEAN, CLIP_STD, CLIPEncoder, CLIPGuidance


@pytest.fixture(scope="module")
def clip_guidance(guidance_home):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CLIPGuidance(variant="tiny")
    finally:
        torch.set_num_threads(n)


def test_preprocess_resizes_and_normalises(clip_guidance):
    enc = clip_guidance.encoder
    px = enc.preprocess(torch.full((2, 3, 48, 40), 0.5))
    assert px.shape == (2, 3, 32, 32)  # the tiny vision tower's image_size
    want = torch.tensor([(0.5 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)])
    torch.testing.assert_close(px[1, :, 7, 9], want)


def test_loss_is_one_minus_mean_cosine_hand_case(clip_guidance, monkeypatch):
    a, b = F.normalize(torch.tensor([1.0, 0.0, 0.0]), dim=0), F.normalize(torch.tensor([1.0, 1.0, 0.0]), dim=0)
    monkeypatch.setattr(clip_guidance.encoder, "encode_images", lambda images: torch.stack([a, b]))
    out = clip_guidance(torch.rand(2, 3, 8, 8), torch.tensor([2.0, 0.0, 0.0]))  # normalised inside
    torch.testing.assert_close(out["loss_clip"], torch.tensor(1 - (1 + 2 ** -0.5) / 2))
    with pytest.raises(ValueError, match=re.escape("text embeddings (3, 3) do not match 2 images")):
        clip_guidance(torch.rand(2, 3, 8, 8), torch.ones(3, 3))


def test_loss_from_a_text_matches_the_encoders_and_reaches_the_images(clip_guidance):
    img = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = clip_guidance(img, "a photo of a red car")
    text = clip_guidance.encoder.encode_texts(["a photo of a red car"])[0]
    want = 1 - (clip_guidance.encoder.encode_images(img.detach()) @ text).mean()
    torch.testing.assert_close(out["loss_clip"].detach(), want)
    assert 0.0 <= float(out["loss_clip"].detach()) <= 2.0
    out["loss_clip"].backward()
    assert img.grad.abs().sum() > 0
    emb = clip_guidance.encode_prompts(["a red car", "a blue car"])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(emb[0], emb[1])


def test_clip_weights_stay_out_of_the_state_dict(clip_guidance):
    assert len(clip_guidance.state_dict()) == 0 and list(clip_guidance.parameters()) == []
    clip_guidance.to("cpu")
    assert not any(p.requires_grad for p in clip_guidance.encoder.model.parameters())
    assert not clip_guidance.encoder.model.training


def test_missing_clip_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"CLIPEncoder: CLIP directory {tmp_path} has no "
                                                          f"config.json; download openai/clip-vit-base-patch32")):
        CLIPEncoder(path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CLIPGuidance: path is not set"):
        CLIPGuidance()
