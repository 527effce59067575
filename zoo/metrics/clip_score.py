"""CLIP score of text-to-3D results: cosine between CLIP embeddings of the renders and of the prompt.

``update(images, prompts)``: ``images`` (B, 3, H, W) or (B, V, 3, H, W) in [0, 1] (V rendered views of
each sample), ``prompts`` B texts. Per sample the score is the cosine between each view's normalised
image embedding and the prompt's normalised text embedding, averaged over its views; ``compute()``
averages over samples: ``{"clip_score": mean}`` (NaN before any update). States are a sum and a count
reduced with ``sum``, so DDP gives the value of one process that saw every sample.

The value is the *raw* cosine (in [-1, 1], typically 0.2-0.35 for matching pairs with ViT-B/32), the
scale text-to-3D papers report (InterFusion's 0.3308, like DreamFusion-style "CLIP score" tables, is a raw
ViT-B/32 cosine). torchmetrics' ``CLIPScore`` and the CLIPScore paper (Hessel et al. 2021) report a
rescaled value instead: ``100 * max(cos, 0)`` and ``2.5 * max(cos, 0)`` respectively; multiply by 100 to
compare with torchmetrics (for positive cosines). CLIP weights (``path`` a local CLIP directory, e.g.
openai/clip-vit-base-patch32; ``variant: tiny`` the random tiny CLIP) are frozen and kept out of the
state dict.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from zoo.core.registry import register
from zoo.models.guidance.clip import CLIPEncoder, follow_device

__all__ = ["CLIPScore"]


@register("metric", "clip_score")
class CLIPScore(Metric):
    """Mean over samples of the view-averaged cosine between CLIP image and prompt embeddings (raw cosine)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    main_key = "clip_score"

    def __init__(self, path: str | None = None, variant: str = "full", dtype: str = "float32") -> None:
        super().__init__()
        self._clip = {"encoder": CLIPEncoder(path, variant, dtype, owner="CLIPScore")}
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def encoder(self) -> CLIPEncoder:
        """The frozen CLIP encoder (not a child module: never in the state dict)."""
        return self._clip["encoder"]

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        follow_device(self.encoder, fn)
        return out

    def update(self, images: torch.Tensor, prompts: Sequence[str]) -> None:
        """Add the scores of B samples: ``images`` (B, 3, H, W) or (B, V, 3, H, W) in [0, 1], B ``prompts``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if images.ndim == 4:
            images = images.unsqueeze(1)
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"CLIPScore.update: expected images (B, 3, H, W) or (B, V, 3, H, W) in [0, 1], got "
                             f"{tuple(images.shape)}")
        B, V = images.shape[:2]
        if len(prompts) != B:
            raise ValueError(f"CLIPScore.update: got {len(prompts)} prompts for {B} samples; expected one per sample")
        with torch.no_grad():
            img = self.encoder.encode_images(images.reshape(B * V, *images.shape[2:]).detach()).reshape(B, V, -1)
            txt = self.encoder.encode_texts(list(prompts)).to(img.device)
            cos = (img * txt[:, None, :]).sum(-1).mean(1)  # (B,): each sample's view-averaged cosine
        self.score_sum += cos.double().sum().to(self.score_sum.device)
        self.count += B

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"clip_score": mean raw cosine over samples}`` (NaN before any sample)."""
        if int(self.count) == 0:
            return {"clip_score": torch.tensor(float("nan"))}
        return {"clip_score": (self.score_sum / self.count).float()}
