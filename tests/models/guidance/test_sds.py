"""SDS guidance on the tiny Stable Diffusion and DeepFloyd IF models: the gradient, w(t), clipping, timestep
ranges, reproducibility, errors, and weights kept out of the state dict."""
import math
import re
import shutil

import pytest
import torch

from zoo.core.schedule import Schedule
from zoo.models.guidance.sds import DeepFloydSDS, StableDiffusionSDS, sds_weight


def _sd_alphas_cumprod():
    """Stable Diffusion's schedule by hand: scaled_linear betas sqrt-spaced 0.00085 .. 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def _if_alphas_cumprod():
    """DeepFloyd IF's squaredcos_cap_v2 schedule by hand (Nichol & Dhariwal's cosine, betas capped at 0.999)."""
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f((i + 1) / 1000) / f(i / 1000), 0.999) for i in range(1000)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def _expected_grad(g, x, t, noise, cond, uncond):
    """w(t) (eps_hat - eps) with the UNet called directly and x_t = sqrt(abar) x + sqrt(1 - abar) eps."""
    abar = g.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    with torch.no_grad():
        out = g.unet(torch.cat([x_t, x_t]), torch.cat([t, t]), encoder_hidden_states=torch.cat([cond, uncond])).sample
    eps_c, eps_u = out[:, :3].chunk(2) if isinstance(g, DeepFloydSDS) else out.chunk(2)
    eps_hat = eps_u + g.guidance_scale * (eps_c - eps_u)
    return sds_weight(g.weighting, abar) * (eps_hat - noise)


@pytest.mark.parametrize("which", ["sd", "deepfloyd"])
def test_sds_gradient_equals_weighted_noise_residual(which, request):
    g = request.getfixturevalue(which)
    shape = (2, 4, 4, 4) if which == "sd" else (2, 3, 16, 16)
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=gen) * 0.5).requires_grad_(True)
    noise = torch.randn(shape, generator=gen)
    t = torch.tensor([100, 700])
    cond, uncond = g.prompt_embeddings("a photo of a dog").select(torch.tensor([0.0, 170.0]), torch.tensor([0.0, 0.0]))
    out = g.sds_from_latents(x, cond, uncond, step=0, t=t, noise=noise)
    out["loss_sds"].backward()
    want = _expected_grad(g, x.detach(), t, noise, cond, uncond)
    assert want.abs().max() > 1.0  # a real signal (guidance scale 100 / 20 on random UNets)
    torch.testing.assert_close(x.grad * 2, want, rtol=1e-4, atol=1e-4)  # d loss / d x = grad / B
    torch.testing.assert_close(out["loss_sds"], 0.5 * (want ** 2).sum() / 2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["grad_norm"], want.norm(), rtol=1e-4, atol=1e-4)
    assert out["t"].tolist() == [100, 700] and (out["min_step"], out["max_step"]) == (20, 980)


def test_hand_schedules():
    sd_ab, if_ab = _sd_alphas_cumprod(), _if_alphas_cumprod()
    assert abs(float(sd_ab[0]) - (1 - 0.00085)) < 1e-12 and abs(float(sd_ab[500]) - 0.27633) < 1e-4
    # IF's cosine schedule telescopes: abar_t = f((t + 1) / T) / f(0) while no beta hits the cap
    f0, f = math.cos(0.008 / 1.008 * math.pi / 2) ** 2, math.cos(0.509 / 1.008 * math.pi / 2) ** 2
    assert abs(float(if_ab[500]) - f / f0) < 1e-9 and abs(f / f0 - 0.49228) < 1e-4


def test_tiny_models_use_the_real_schedules(sd, deepfloyd):
    sd_ab, if_ab = _sd_alphas_cumprod(), _if_alphas_cumprod()
    torch.testing.assert_close(sd.alphas_cumprod.double(), sd_ab, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(deepfloyd.alphas_cumprod.double(), if_ab, rtol=1e-4, atol=1e-6)
    assert sd.num_train_timesteps == deepfloyd.num_train_timesteps == 1000


def test_three_weightings_at_a_hand_t(sd, monkeypatch):
    abar = torch.tensor([0.25])
    assert sds_weight("sds", abar).item() == 0.75
    assert sds_weight("uniform", abar).item() == 1.0
    assert sds_weight("fantasia3d", abar).item() == 0.375  # 0.25 ** 0.5 * 0.75
    with pytest.raises(ValueError, match="unknown 'dreamtime'"):
        sds_weight("dreamtime", abar)
    # in the guidance: the same x, t, noise under each weighting scale one residual by w(t) at t = 500
    ab = float(_sd_alphas_cumprod()[500])
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    cond, uncond = sd.prompt_embeddings("a red car").select([0.0], [0.0])
    grads = {}
    for w in ("sds", "uniform", "fantasia3d"):
        monkeypatch.setattr(sd, "weighting", w)
        x = x0.clone().requires_grad_(True)
        sd.sds_from_latents(x, cond, uncond, t=torch.tensor([500]), noise=noise)["loss_sds"].backward()
        grads[w] = x.grad
    torch.testing.assert_close(grads["sds"], (1 - ab) * grads["uniform"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["fantasia3d"], ab ** 0.5 * (1 - ab) * grads["uniform"], rtol=1e-5, atol=1e-6)


def test_grad_clip_clamps_each_element(sd, monkeypatch):
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    cond, uncond = sd.prompt_embeddings("a red car").select([0.0], [0.0])
    t = torch.tensor([300])
    x = x0.clone().requires_grad_(True)
    sd.sds_from_latents(x, cond, uncond, t=t, noise=noise)["loss_sds"].backward()
    free = x.grad.clone()
    c = float(free.abs().median())
    monkeypatch.setattr(sd, "grad_clip", Schedule.of([0, c, 2 * c, 10], name="grad_clip"))
    for step, bound in ((0, c), (10, 2 * c)):
        x = x0.clone().requires_grad_(True)
        sd.sds_from_latents(x, cond, uncond, step=step, t=t, noise=noise)["loss_sds"].backward()
        torch.testing.assert_close(x.grad, free.clamp(-bound, bound))
        assert x.grad.abs().max() <= bound + 1e-7 and (x.grad.abs() == bound).any()


def test_timestep_range_follows_its_schedule_and_draws_are_reproducible(deepfloyd, monkeypatch):
    g = deepfloyd
    img = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    az, el = torch.tensor([0.0, 90.0, 180.0]), torch.tensor([0.0, 0.0, 70.0])
    monkeypatch.setattr(g, "max_step_percent", Schedule.of([0, 0.98, 0.5, 100], name="max_step_percent"))
    assert g.step_range(0) == (20, 980) and g.step_range(50) == (20, 740) and g.step_range(400) == (20, 500)
    g._calls = (None, 0)
    a = g(img, g.prompt_embeddings("a blue ball"), az, el, step=400)
    assert a["max_step"] == 500 and all(20 <= v <= 500 for v in a["t"].tolist())
    b = g(img, "a blue ball", az, el, step=400)  # a second call at the same step draws anew
    g._calls = (None, 0)
    c = g(img, "a blue ball", az, el, step=400)  # ... and a resumed run draws the first call's values again
    assert torch.equal(a["t"], c["t"]) and torch.equal(a["loss_sds"], c["loss_sds"])
    assert not torch.equal(a["t"], b["t"])
    monkeypatch.setattr(g, "min_step_percent", Schedule.of(0.6, name="min_step_percent"))
    with pytest.raises(ValueError, match=r"at step 400 min_step_percent 0.6 and max_step_percent 0.5 must satisfy"):
        g.step_range(400)


def test_sd_forward_backpropagates_through_the_vae(sd):
    img = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = sd(img, sd.prompt_embeddings("a cute corgi"), torch.tensor([10.0, -150.0]), torch.tensor([5.0, 20.0]),
             step=5)
    out["loss_sds"].backward()
    assert set(out) == {"loss_sds", "grad_norm", "t", "min_step", "max_step"}
    assert out["t"].dtype == torch.long and out["t"].shape == (2,)
    assert torch.isfinite(img.grad).all() and (img.grad.abs().sum((1, 2, 3)) > 0).all()
    assert all(p.grad is None for p in sd.vae.parameters())  # frozen


def test_nan_image_names_the_step(deepfloyd):
    img = torch.rand(1, 3, 16, 16)
    img[0, 1, 2, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"DeepFloydSDS: SDS gradient is not finite at step 7 \(t = \[\d+\]\): "
                                                 r"the model input \(the rendered images\) contains NaN or inf"):
        deepfloyd(img, "a red car", torch.tensor([0.0]), torch.tensor([0.0]), step=7)


def test_prompt_embeddings_per_direction(sd, deepfloyd):
    pe = sd.prompt_embeddings("a red car")
    torch.testing.assert_close(pe.cond["back"], sd.encode_prompts(["a red car, back view"])[0])
    torch.testing.assert_close(pe.uncond, sd._encode_uncached([""])[0])
    assert not torch.equal(pe.cond["front"], pe.cond["side"])
    c, u = pe.select(torch.tensor([170.0]), torch.tensor([0.0]))
    assert torch.equal(c[0], pe.cond["back"]) and torch.equal(u[0], pe.uncond)
    ife = deepfloyd.prompt_embeddings("a red car")
    assert ife.cond["front"].shape == (77, 32) and ife.uncond.shape == (77, 32)


def test_view_independent_prompts(guidance_home):
    g = DeepFloydSDS(variant="tiny", resolution=16, view_dependent=False, negative_prompt="blurry")
    pe = g.prompt_embeddings("a red car")
    plain = g.encode_prompts(["a red car"])[0]
    assert all(torch.equal(v, plain) for v in pe.cond.values())
    torch.testing.assert_close(pe.uncond, g.encode_prompts(["blurry"])[0])


def test_weights_stay_out_of_the_state_dict(sd, deepfloyd):
    for g in (sd, deepfloyd):
        assert len(g.state_dict()) == 0 and list(g.parameters()) == []
        g.to("cpu")
        g.train()
        assert len(g.state_dict()) == 0
        assert not g.unet.training and not g.text_encoder.training
        assert not any(p.requires_grad for p in g.unet.parameters())
        assert not any(p.requires_grad for p in g.text_encoder.parameters())
        g.eval()
    assert not sd.vae.training and not any(p.requires_grad for p in sd.vae.parameters())


def test_missing_parts_raise_naming_the_directory(tmp_path, guidance_home):
    src = "stabilityai/stable-diffusion-2-1-base"
    how = (f"download {src} from Hugging Face (e.g. `huggingface-cli download {src} --local-dir DIR`) and pass "
           f"that directory as `path`")
    root = tmp_path / "sd"
    for part in ("tokenizer", "text_encoder", "unet", "vae"):
        (root / part).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"StableDiffusionSDS: model directory {root} has no scheduler/ (the scheduler of {src}); {how}")):
        StableDiffusionSDS(path=str(root))
    (root / "scheduler").mkdir()
    shutil.rmtree(root / "tokenizer")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"StableDiffusionSDS: model directory {root} has no tokenizer/ (the tokenizer of {src}); {how}")):
        StableDiffusionSDS(path=str(root))
    with pytest.raises(FileNotFoundError, match=re.escape(
            "DeepFloydSDS: path is not set; download DeepFloyd/IF-I-XL-v1.0 from Hugging Face")):
        DeepFloydSDS()
    with pytest.raises(FileNotFoundError, match=re.escape(f"model directory {tmp_path / 'nope'} does not exist")):
        DeepFloydSDS(path=str(tmp_path / "nope"))
