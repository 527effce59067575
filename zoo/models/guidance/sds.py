"""Score distillation sampling (DreamFusion's SDS) with Stable Diffusion or DeepFloyd IF stage I.

One step (:meth:`SDSGuidance.forward`): the renders become the diffusion model's input ``x`` (SD: bilinear
to ``resolution``, then the VAE encoder *with gradients*, ``latent_dist.sample() * scaling_factor``; IF:
bilinear to ``resolution`` (64), ``2 x - 1``); a timestep ``t ~ U{min_step, max_step}`` (integers
``int(T * percent)`` of the scheduler's ``T`` training steps, percents from Schedule specs at ``step``) and
noise ``eps`` are drawn from a generator seeded by (``seed``, ``step``, call index within the step), so a
resumed run draws the same values; ``x_t = scheduler.add_noise(x, eps, t)``; the frozen UNet predicts the
noise of ``[x_t, x_t]`` under ``[cond, uncond]`` without gradients (IF's 6 output channels are noise and
variance: the first 3 are kept); classifier-free guidance ``eps_hat = eps_u + s (eps_c - eps_u)``;
``grad = w(t) (eps_hat - eps)`` with ``w`` from ``weighting`` (:func:`sds_weight`), optionally clamped to
``[-c, c]``; ``loss_sds = 0.5 * ||x - sg(x - grad)||^2 / B`` (threestudio's form), so that
``d loss_sds / d x = grad / B`` (exactly ``grad`` for a batch of one; each sample's ``grad`` over B
otherwise).

The diffusers / transformers modules are frozen, in eval mode and kept out of the nn.Module tree (a
plain dict), so a system checkpoint never holds them (the guidance's ``state_dict()`` is empty); device
moves of the guidance (``.to()``, Lightning's placement) move them too, without changing their dtype.

Model directories are the Hugging Face layouts (``unet/``, ``vae/`` for SD, ``text_encoder/``,
``tokenizer/``, ``scheduler/``), downloaded by the user; nothing is ever downloaded here.
``variant: tiny`` builds a random CPU-size model of the same classes once (zoo.models.guidance.tiny).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.interfaces import Guidance
from zoo.core.registry import register
from zoo.core.schedule import Schedule
from zoo.models.guidance.prompts import DIRECTIONS, PromptEmbeddings, view_prompt
from zoo.models.guidance.text_cache import TextEmbeddingCache, model_key

__all__ = ["SDSGuidance", "StableDiffusionSDS", "DeepFloydSDS", "sds_weight", "WEIGHTINGS", "DTYPES",
           "check_model_dir"]

WEIGHTINGS = ("sds", "uniform", "fantasia3d")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ScheduleSpec = float | list | dict


def sds_weight(weighting: str, alpha_bar: torch.Tensor) -> torch.Tensor:
    """w(t) from the cumulative alpha of each sample's timestep: ``sds`` 1 - abar (DreamFusion),
    ``uniform`` 1, ``fantasia3d`` abar^0.5 (1 - abar)."""
    if weighting == "sds":
        return 1.0 - alpha_bar
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    if weighting == "fantasia3d":
        return alpha_bar.sqrt() * (1.0 - alpha_bar)
    raise ValueError(f"weighting: unknown {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")


def check_model_dir(owner: str, path: str | None, parts: tuple[str, ...], source: str) -> Path:
    """``path`` as a Path after checking it holds every sub-folder of ``parts``; FileNotFoundError naming the
    directory, the missing part and where the model comes from otherwise."""
    how = (f"download {source} from Hugging Face (e.g. `huggingface-cli download {source} --local-dir DIR`) "
           f"and pass that directory as `path`")
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{owner}: path is not set; {how}, or use variant: tiny for the random CPU model")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{owner}: model directory {root} does not exist; {how}")
    for part in parts:
        if not (root / part).is_dir():
            raise FileNotFoundError(f"{owner}: model directory {root} has no {part}/ (the {part} of {source}); {how}")
    return root


def _seed_for(seed: int, step: int, call: int) -> int:
    digest = hashlib.sha256(f"sds:{int(seed)}:{int(step)}:{int(call)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SDSGuidance(Guidance, L.LightningModule):
    """Shared SDS machinery of :class:`StableDiffusionSDS` and :class:`DeepFloydSDS` (see the module docstring).

    Subclasses set ``family`` (tiny family), ``source`` (the Hugging Face model), ``parts`` (required
    sub-folders) and implement ``_load_text_encoder`` / ``_tokenize`` / ``_to_model_input`` / ``_unet_eps``.
    """

    family = ""
    source = ""
    parts: tuple[str, ...] = ()
    max_length = 77  # text tokens (CLIP's context; IF's pipeline pads T5 prompts to 77 too)

    def _setup(self, path: str | None, variant: str, guidance_scale: float, min_step_percent: Any,
               max_step_percent: Any, weighting: str, grad_clip: Any, view_dependent: bool, negative_prompt: str,
               resolution: int, dtype: str, seed: int, cache_embeddings: bool, file_variant: str | None) -> None:
        name = type(self).__name__
        if variant not in ("full", "tiny"):
            raise ValueError(f"{name}: variant must be 'full' or 'tiny', got {variant!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"{name}: weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        if dtype not in DTYPES:
            raise ValueError(f"{name}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if int(resolution) < 8:
            raise ValueError(f"{name}: resolution must be >= 8, got {resolution}")
        self.guidance_scale = float(guidance_scale)
        self.min_step_percent = Schedule.of(min_step_percent, name="min_step_percent")
        self.max_step_percent = Schedule.of(max_step_percent, name="max_step_percent")
        self.grad_clip = None if grad_clip is None else Schedule.of(grad_clip, name="grad_clip")
        self.weighting = weighting
        self.view_dependent = bool(view_dependent)
        self.negative_prompt = negative_prompt
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.dtype_name = dtype
        if variant == "tiny":
            from zoo.models.guidance.tiny import tiny_model_dir

            path = str(tiny_model_dir(self.family))
        root = check_model_dir(name, path, self.parts, self.source)
        self.root = root
        self._models: dict[str, Any] = self._load(root, DTYPES[dtype], file_variant)
        for m in self._models.values():
            if isinstance(m, nn.Module):
                m.eval().requires_grad_(False)
        sched = self._models["scheduler"]
        self.num_train_timesteps = int(sched.config.num_train_timesteps)
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.detach().clone().float(), persistent=False)
        self._cache = (TextEmbeddingCache(model_key(root / "text_encoder", root / "tokenizer",
                                                    {"family": self.family, "dtype": dtype,
                                                     "max_length": self.max_length}))
                       if cache_embeddings else None)
        self._prompts: dict[str, PromptEmbeddings] = {}
        self._calls = (None, 0)  # (step, calls made at that step): the noise generator's third seed part

    # ------------------------------------------------------------------ models
    def _load(self, root: Path, dtype: torch.dtype, file_variant: str | None) -> dict[str, Any]:
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer

        kw = {"variant": file_variant} if file_variant else {}
        models = {
            "tokenizer": AutoTokenizer.from_pretrained(root, subfolder="tokenizer"),
            "text_encoder": self._load_text_encoder(root, dtype, kw),
            "unet": UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, **kw),
            "scheduler": DDPMScheduler.from_pretrained(root, subfolder="scheduler"),
        }
        if "vae" in self.parts:
            from diffusers import AutoencoderKL

            models["vae"] = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype, **kw)
        return models

    def _load_text_encoder(self, root: Path, dtype: torch.dtype, kw: dict):
        raise NotImplementedError

    @property
    def unet(self):
        """The frozen diffusers UNet (not a child module: never in the state dict)."""
        return self._models["unet"]

    @property
    def text_encoder(self):
        """The frozen text encoder (not a child module)."""
        return self._models["text_encoder"]

    @property
    def tokenizer(self):
        """The text encoder's tokenizer."""
        return self._models["tokenizer"]

    @property
    def scheduler(self):
        """The DDPM scheduler giving ``add_noise`` and the training-noise schedule."""
        return self._models["scheduler"]

    @property
    def model_device(self) -> torch.device:
        """Where the diffusion model's weights are."""
        return next(self.unet.parameters()).device

    @property
    def model_dtype(self) -> torch.dtype:
        """The diffusion model's weight dtype (``dtype`` option)."""
        return next(self.unet.parameters()).dtype

    def _apply(self, fn, *args, **kwargs):
        # Device moves of the guidance move the hidden models too (dtype casts do not: they keep `dtype`).
        out = super()._apply(fn, *args, **kwargs)
        try:
            device = fn(torch.empty(0)).device
        except Exception:  # noqa: BLE001 - a function that is no tensor map: nothing to follow
            return out
        for m in self._models.values():
            if isinstance(m, nn.Module):
                m.to(device)
        return out

    def _follow(self, device: torch.device) -> None:
        if self.model_device != device:
            self.to(device)

    # ------------------------------------------------------------------ text
    def _tokenize(self, texts: list[str]) -> dict:
        return self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                              return_tensors="pt")

    def _text_forward(self, tokens: dict) -> torch.Tensor:
        return self.text_encoder(tokens["input_ids"].to(self.model_device))[0]

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        return self._text_forward(self._tokenize(list(texts)))

    def _encode(self, texts: list[str]) -> torch.Tensor:
        if self._cache is None:
            return self._encode_uncached(texts)
        return self._cache.lookup(texts, self._encode_uncached).to(self.model_device)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Text-encoder embeddings (N, L, D) of ``texts`` (from the on-disk cache where present)."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"{type(self).__name__}.encode_prompts: empty prompt at index {i} ({t!r}); "
                                 f"expected a text describing what to generate")
        return self._encode(list(texts))

    def prompt_embeddings(self, prompt: str) -> PromptEmbeddings:
        """Per-direction conditional embeddings of ``prompt`` (``"<prompt>, front view"`` etc. when
        ``view_dependent``) and the negative prompt's unconditional one (memoised per prompt)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{type(self).__name__}.prompt_embeddings: empty prompt ({prompt!r}); expected a text "
                             f"describing what to generate")
        if prompt not in self._prompts:
            texts = [view_prompt(prompt, d) for d in DIRECTIONS] if self.view_dependent else [prompt]
            self.encode_prompts(texts)  # validates
            emb = self._encode([*texts, self.negative_prompt])
            cond = {d: emb[i if self.view_dependent else 0] for i, d in enumerate(DIRECTIONS)}
            self._prompts[prompt] = PromptEmbeddings(prompt, cond, emb[-1], self.view_dependent,
                                                     self.negative_prompt)
        return self._prompts[prompt]

    # ------------------------------------------------------------------ SDS
    def step_range(self, step: int) -> tuple[int, int]:
        """(min_step, max_step) of the timestep draw at training ``step``."""
        T = self.num_train_timesteps
        lo, hi = float(self.min_step_percent(step)), float(self.max_step_percent(step))
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"{type(self).__name__}: at step {step} min_step_percent {lo} and max_step_percent "
                             f"{hi} must satisfy 0 <= min <= max <= 1")
        return min(int(T * lo), T - 1), min(int(T * hi), T - 1)

    def generator(self, step: int) -> torch.Generator:
        """The noise generator of the next call at ``step``: seeded by (seed, step, call index at that step)."""
        last, n = self._calls
        n = n + 1 if last == step else 0
        self._calls = (step, n)
        return torch.Generator(device=self.model_device).manual_seed(_seed_for(self.seed, step, n))

    def _to_model_input(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _unet_eps(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=emb).sample

    def sds_from_latents(self, latents: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, step: int = 0,
                         t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> dict[str, Any]:
        """The SDS loss of model inputs ``latents`` (B, C, h, w) (SD latents, IF pixels in [-1, 1]).

        ``t`` (B,) and ``noise`` (like ``latents``) are drawn from ``generator`` (default
        :meth:`generator` at ``step``) unless given.
        """
        name = type(self).__name__
        B = latents.shape[0]
        device = latents.device
        lo, hi = self.step_range(step)
        gen = generator if generator is not None else self.generator(step)
        if t is None:
            t = torch.randint(lo, hi + 1, (B,), generator=gen, device=device, dtype=torch.long)
        t = torch.as_tensor(t, device=device, dtype=torch.long).reshape(B)
        if noise is None:
            noise = torch.randn(latents.shape, generator=gen, device=device, dtype=torch.float32)
        noise = noise.to(device, torch.float32)
        x = latents.float()
        with torch.no_grad():
            x_t = self.scheduler.add_noise(x.detach(), noise, t)
            dt = self.model_dtype
            emb = torch.cat([cond, uncond]).to(device, dt)
            eps = self._unet_eps(torch.cat([x_t, x_t]).to(dt), torch.cat([t, t]), emb).float()
            eps_c, eps_u = eps.chunk(2)
            eps_hat = eps_u + self.guidance_scale * (eps_c - eps_u)
            w = sds_weight(self.weighting, self.alphas_cumprod.to(device)[t]).view(B, 1, 1, 1)
            grad = w * (eps_hat - noise)
            if self.grad_clip is not None:
                c = float(self.grad_clip(step))
                grad = grad.clamp(-c, c)
            if not torch.isfinite(grad).all():
                why = ("the model input (the rendered images) contains NaN or inf" if not torch.isfinite(x).all()
                       else "the UNet's noise prediction is not finite (try dtype float32 or a lower guidance_scale)")
                raise FloatingPointError(f"{name}: SDS gradient is not finite at step {step} (t = {t.tolist()}): "
                                         f"{why}")
        target = (x - grad).detach()
        loss = 0.5 * F.mse_loss(x, target, reduction="sum") / B
        return {"loss_sds": loss, "grad_norm": grad.norm(), "t": t, "min_step": lo, "max_step": hi}

    def forward(self, images: torch.Tensor, prompt: PromptEmbeddings | str, azimuth: torch.Tensor,
                elevation: torch.Tensor, step: int = 0) -> dict[str, Any]:
        """SDS of renders ``images`` (B, 3, H, W) in [0, 1] seen from ``azimuth`` / ``elevation`` (degrees, (B,)):
        ``{"loss_sds", "grad_norm", "t" (B,), "min_step", "max_step"}``."""
        name = type(self).__name__
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name}.forward: expected images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        B = images.shape[0]
        azimuth = torch.as_tensor(azimuth).reshape(-1)
        elevation = torch.as_tensor(elevation).reshape(-1)
        if azimuth.numel() != B or elevation.numel() != B:
            raise ValueError(f"{name}.forward: expected one azimuth and elevation per image ({B}), got "
                             f"{azimuth.numel()} and {elevation.numel()}")
        self._follow(images.device)
        if isinstance(prompt, str):
            prompt = self.prompt_embeddings(prompt)
        cond, uncond = prompt.select(azimuth, elevation)
        gen = self.generator(step)
        latents = self._to_model_input(images, gen)
        return self.sds_from_latents(latents, cond, uncond, step=step, generator=gen)


_COMMON_DOC = """
    Arguments: ``path`` a local model directory (``variant: full``); ``variant`` ``full`` | ``tiny``;
    ``guidance_scale`` classifier-free guidance scale; ``min_step_percent`` / ``max_step_percent`` Schedule
    specs of the timestep range (fractions of the training steps); ``weighting`` ``sds`` | ``uniform`` |
    ``fantasia3d``; ``grad_clip`` a Schedule spec of the clamp value c, or null; ``view_dependent`` appends
    ", <direction> view" to the prompt per camera; ``negative_prompt`` the unconditional text;
    ``resolution`` the model's input size; ``dtype`` the weights' dtype (``float16`` / ``bfloat16`` for GPU);
    ``seed`` of the noise generator; ``cache_embeddings`` keep text embeddings on disk; ``file_variant``
    the weight files' variant passed to from_pretrained (e.g. ``fp16`` for IF's fp16 files).
"""


@register("guidance", "stable_diffusion_sds")
class StableDiffusionSDS(SDSGuidance):
    __doc__ = ("""SDS with Stable Diffusion (default stabilityai/stable-diffusion-2-1-base, threestudio's):
    renders bilinear to ``resolution`` (512), VAE-encoded with gradients, CLIP text encoder.
    """ + _COMMON_DOC)

    family = "sd"
    source = "stabilityai/stable-diffusion-2-1-base"
    parts = ("scheduler", "tokenizer", "text_encoder", "unet", "vae")

    def __init__(self, path: str | None = None, variant: str = "full", guidance_scale: float = 100.0,
                 min_step_percent: ScheduleSpec = 0.02, max_step_percent: ScheduleSpec = 0.98,
                 weighting: str = "sds", grad_clip: ScheduleSpec | None = None, view_dependent: bool = True,
                 negative_prompt: str = "", resolution: int = 512, dtype: str = "float32", seed: int = 0,
                 cache_embeddings: bool = True, file_variant: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._setup(path, variant, guidance_scale, min_step_percent, max_step_percent, weighting, grad_clip,
                    view_dependent, negative_prompt, resolution, dtype, seed, cache_embeddings, file_variant)

    def _load_text_encoder(self, root: Path, dtype: torch.dtype, kw: dict):
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype, **kw)

    @property
    def vae(self):
        """The frozen VAE (its encoder carries the gradient from latents to the renders)."""
        return self._models["vae"]

    def _to_model_input(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = F.interpolate(images, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        posterior = self.vae.encode((x * 2.0 - 1.0).to(self.model_dtype)).latent_dist
        return posterior.sample(generator=generator).float() * float(self.vae.config.scaling_factor)


@register("guidance", "deepfloyd_if_sds")
class DeepFloydSDS(SDSGuidance):
    __doc__ = ("""SDS with DeepFloyd IF stage I (DeepFloyd/IF-I-XL-v1.0): pixel space at ``resolution`` (64),
    T5 text encoder (attention-masked), UNet output split into noise and variance (the noise is used).
    """ + _COMMON_DOC)

    family = "if"
    source = "DeepFloyd/IF-I-XL-v1.0"
    parts = ("scheduler", "tokenizer", "text_encoder", "unet")

    def __init__(self, path: str | None = None, variant: str = "full", guidance_scale: float = 20.0,
                 min_step_percent: ScheduleSpec = 0.02, max_step_percent: ScheduleSpec = 0.98,
                 weighting: str = "sds", grad_clip: ScheduleSpec | None = None, view_dependent: bool = True,
                 negative_prompt: str = "", resolution: int = 64, dtype: str = "float32", seed: int = 0,
                 cache_embeddings: bool = True, file_variant: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._setup(path, variant, guidance_scale, min_step_percent, max_step_percent, weighting, grad_clip,
                    view_dependent, negative_prompt, resolution, dtype, seed, cache_embeddings, file_variant)

    def _load_text_encoder(self, root: Path, dtype: torch.dtype, kw: dict):
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype, **kw)

    def _text_forward(self, tokens: dict) -> torch.Tensor:
        dev = self.model_device
        return self.text_encoder(tokens["input_ids"].to(dev), attention_mask=tokens["attention_mask"].to(dev))[0]

    def _to_model_input(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = F.interpolate(images, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def _unet_eps(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=emb).sample[:, :3]  # channels 3..5: the learned variance
