"""CLIP image / text embeddings (transformers CLIPModel) and the CLIP guidance loss.

:class:`CLIPEncoder` loads a CLIP directory in the openai/clip-vit-* layout (``config.json``, weights and the
tokenizer files in one folder; e.g. openai/clip-vit-base-patch32, the ViT-B/32 InterFusion evaluates with)
or builds the random tiny one (zoo.models.guidance.tiny). Images are preprocessed without the processor
class, differentiably: bicubic resize of the whole image to the vision tower's ``image_size`` (224 for the
released models; renders are square, so CLIP's resize-shorter-side + centre crop is the same resize),
then CLIP's mean / std normalisation. Embeddings are L2-normalised.

:class:`CLIPGuidance` (``guidance/clip_guidance``): ``loss_clip = 1 - mean cosine`` between the renders'
image embeddings and the prompt's text embedding (a text-to-3D ablation, DreamFields-style). Its CLIP
weights are frozen and kept out of the nn.Module tree, so its ``state_dict()`` is empty.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from zoo.core.interfaces import Guidance
from zoo.core.registry import register

__all__ = ["CLIPEncoder", "CLIPGuidance", "CLIP_MEAN", "CLIP_STD", "CLIP_SOURCE", "features", "follow_device"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SOURCE = "openai/clip-vit-base-patch32"


def features(out: Any) -> torch.Tensor:
    """The projected embedding of ``get_text_features`` / ``get_image_features`` (a tensor in transformers 4,
    an output whose ``pooler_output`` is the projection in transformers 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPEncoder:
    """A frozen CLIP model: ``encode_images(images (B, 3, H, W) in [0, 1]) -> (B, D)`` (differentiable in the
    images) and ``encode_texts(texts) -> (N, D)``, both L2-normalised. ``path``: a local CLIP directory
    (``variant: full``); ``variant: tiny`` uses the cached random tiny CLIP. ``dtype``: float32 / float16 /
    bfloat16 weights."""

    def __init__(self, path: str | None = None, variant: str = "full", dtype: str = "float32",
                 owner: str = "CLIPEncoder") -> None:
        from transformers import AutoTokenizer, CLIPModel

        from zoo.models.guidance.sds import DTYPES

        if variant not in ("full", "tiny"):
            raise ValueError(f"{owner}: variant must be 'full' or 'tiny', got {variant!r}")
        if dtype not in DTYPES:
            raise ValueError(f"{owner}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if variant == "tiny":
            from zoo.models.guidance.tiny import tiny_model_dir

            path = str(tiny_model_dir("clip"))
        how = (f"download {CLIP_SOURCE} (or another CLIP) from Hugging Face (e.g. `huggingface-cli download "
               f"{CLIP_SOURCE} --local-dir DIR`) and pass that directory as `path`")
        if path is None or str(path) == "":
            raise FileNotFoundError(f"{owner}: path is not set; {how}, or use variant: tiny for the random CPU model")
        root = Path(path).expanduser()
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"{owner}: CLIP directory {root} has no config.json; {how}")
        if not any((root / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
            raise FileNotFoundError(f"{owner}: CLIP directory {root} has no tokenizer (tokenizer.json or vocab.json "
                                    f"+ merges.txt); {how}")
        self.root = root
        self.model = CLIPModel.from_pretrained(root, dtype=DTYPES[dtype]).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(root)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        """Where the CLIP weights are."""
        return next(self.model.parameters()).device

    def to(self, device) -> CLIPEncoder:
        """Move the weights (dtype unchanged)."""
        self.model.to(device)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP pixel values of ``images`` (B, 3, H, W) in [0, 1]: bicubic to ``image_size``, mean / std."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIPEncoder: expected images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        x = F.interpolate(images.float(), (self.image_size, self.image_size), mode="bicubic", align_corners=False,
                          antialias=images.shape[-1] > self.image_size)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings (B, D) (gradients flow to ``images``)."""
        px = self.preprocess(images.to(self.device)).to(next(self.model.parameters()).dtype)
        return F.normalize(features(self.model.get_image_features(pixel_values=px)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Normalised text embeddings (N, D)."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"CLIPEncoder.encode_texts: empty prompt at index {i} ({t!r}); expected a text")
        tok = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        out = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                           attention_mask=tok["attention_mask"].to(self.device))
        return F.normalize(features(out).float(), dim=-1)


def follow_device(encoder: CLIPEncoder, fn) -> None:
    """Move ``encoder`` where the module-apply function ``fn`` sends tensors (used in ``_apply`` overrides)."""
    try:
        device = fn(torch.empty(0)).device
    except Exception:  # noqa: BLE001 - not a tensor map: nothing to follow
        return
    encoder.to(device)


@register("guidance", "clip_guidance")
class CLIPGuidance(Guidance, L.LightningModule):
    """CLIP loss between renders and a prompt: ``forward(images (B, 3, H, W) in [0, 1], prompt, azimuth=None,
    elevation=None, step=0) -> {"loss_clip": 1 - mean cosine}``; ``prompt`` a text or text embeddings
    ((D,) or (B, D), normalised here). ``encode_prompts(texts) -> (N, D)`` normalised (memoised per text)."""

    def __init__(self, path: str | None = None, variant: str = "full", dtype: str = "float32") -> None:
        super().__init__()
        self.save_hyperparameters()
        self._clip = {"encoder": CLIPEncoder(path, variant, dtype, owner="CLIPGuidance")}
        self._texts: dict[str, torch.Tensor] = {}

    @property
    def encoder(self) -> CLIPEncoder:
        """The frozen CLIP encoder (not a child module: never in the state dict)."""
        return self._clip["encoder"]

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        follow_device(self.encoder, fn)
        return out

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Normalised CLIP text embeddings (N, D) of ``texts``."""
        if isinstance(texts, str):
            texts = [texts]
        missing = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if missing:
            for t, e in zip(missing, self.encoder.encode_texts(missing), strict=True):
                self._texts[t] = e
        return torch.stack([self._texts[t] for t in texts]).to(self.encoder.device)

    def forward(self, images: torch.Tensor, prompt: str | torch.Tensor, azimuth: torch.Tensor | None = None,
                elevation: torch.Tensor | None = None, step: int = 0) -> dict[str, torch.Tensor]:
        """``{"loss_clip": 1 - mean_b cos(image_b, text)}`` (azimuth / elevation unused: CLIP is view-agnostic)."""
        if self.encoder.device != images.device:
            self.to(images.device)
        img = self.encoder.encode_images(images)
        text = self.encode_prompts([prompt])[0] if isinstance(prompt, str) else prompt
        text = F.normalize(torch.as_tensor(text).float().to(img.device), dim=-1)
        if text.ndim == 1:
            text = text.unsqueeze(0)
        if text.shape[0] not in (1, img.shape[0]) or text.shape[-1] != img.shape[-1]:
            raise ValueError(f"CLIPGuidance.forward: text embeddings {tuple(text.shape)} do not match {img.shape[0]} "
                             f"images of embedding width {img.shape[-1]}; expected (D,), (1, D) or (B, D)")
        return {"loss_clip": 1.0 - (img * text).sum(-1).mean()}
