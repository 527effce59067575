"""Render-Localize-Lift: render (cached) -> encode (cached when frozen) -> per-view prompts -> decode -> lift.

:class:`RenderLocalizeLift` composes a surface (zoo.models.rll.surfaces), a localizer and a lifter
(registered components), a 2D mask loss and a 3D loss (parts picked from :data:`LOSSES_2D` /
:data:`LOSSES_3D`). It takes prompts from outside — learned class embeddings (MV-Loc) or VLM
contact tokens (InteractVLM) — and returns per-view mask logits, probabilities and lifted
per-element scores; :meth:`RenderLocalizeLift.losses` adds InteractVLM's losses (eqs. 1-6).

The lifter turns each prompt into V gated tokens, one per view. With ``prompt_mode="shared"``
(InteractVLM's code, the default) the V tokens form one sparse prompt sequence that every view's
embedding is decoded with, so each view's mask depends on all V tokens; ``"own"`` decodes view v
with token v alone (see :func:`zoo.models.localizer.mvloc_sam.view_prompt_sequences`). The lift
takes the mask logits (clamped to +-20, sigmoid) on the pixels the lift map covers, as
InteractVLM's ``HumanContact3DPredictor`` does.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core import registry
from zoo.models.localizer.mvloc_sam import PROMPT_MODES, view_prompt_sequences
from zoo.models.losses import HumanContactLoss3D, MaskLoss2D, ObjectAffordanceComposite3D, ObjectAffordanceLoss

__all__ = ["RenderLocalizeLift", "LOSSES_2D", "LOSSES_3D", "PROMPT_MODES"]

LOSSES_2D = registry.Parts("2D loss", {"focal_dice": MaskLoss2D})
LOSSES_3D = registry.Parts("3D loss", {"contact_focal": HumanContactLoss3D, "dice_mse": ObjectAffordanceLoss,
                                       "focal_dice_mse_l1": ObjectAffordanceComposite3D})


def _as_loss(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A loss module's output (tensor or dict with 'loss') as (loss, named terms)."""
    if isinstance(out, dict):
        return out["loss"], {k: v for k, v in out.items() if k != "loss"}
    return out, {}


class RenderLocalizeLift(nn.Module):
    """The MV-Loc pipeline over one surface (see the module docstring).

    ``forward(batch, prompts (B, C), prompt_ids (B,) or None)`` returns {logits (B, V, H, W), probs,
    scores (B, N), seen (list of (N,) masks, one per image set), lifts, images}. When the surface's
    views are shared by all samples and ``prompt_ids`` are given, each distinct prompt is decoded and
    lifted once and the results are indexed (exact: gradients of repeated samples add up through the
    indexing). ``prompt_mode``: ``shared`` (all V gated tokens prompt every view, InteractVLM) or
    ``own`` (view v sees its own token only).

    A 3D loss whose ``takes_seen`` attribute is true receives every element's score, the labels and
    the (B, N) seen mask (``loss_3d(scores, labels, seen=...)``) and chooses its own averaging;
    otherwise it gets the surface's ``loss_inputs`` (the seen vertices of the body, every point of a
    cloud).
    """

    def __init__(self, surface: nn.Module, localizer: nn.Module, lifter: nn.Module, loss_2d: nn.Module,
                 loss_3d: nn.Module, owner: str = "RenderLocalizeLift", prompt_mode: str = "shared") -> None:
        super().__init__()
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"{owner}: prompt_mode must be one of {', '.join(PROMPT_MODES)}; got {prompt_mode!r}")
        self.prompt_mode = prompt_mode
        self.surface = surface
        self.localizer = localizer
        self.lifter = lifter
        self.loss_2d = loss_2d
        self.loss_3d = loss_3d
        self.owner = owner
        self.register_buffer("cams", surface.camera_numbers().float(), persistent=False)

    @property
    def embed_dim(self) -> int:
        """Prompt width (the localizer's)."""
        return int(self.localizer.embed_dim)

    def _decode(self, emb: torch.Tensor, prompts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Per-view mask logits (P, V, H, W) from embeddings (P * V, C, h, w) and prompts (P, C)."""
        P, V = prompts.shape[0], self.surface.num_views
        per_view = self.lifter(prompts, self.cams)  # (P, V, C)
        logits = self.localizer.decode(emb, view_prompt_sequences(per_view, self.prompt_mode), output_size=size)
        return logits.reshape(P, V, *logits.shape[-2:])

    def forward(self, batch: dict, prompts: torch.Tensor, prompt_ids: torch.Tensor | None = None,
                where: str = "forward") -> dict[str, Any]:
        """Mask logits / probabilities per view and lifted per-element scores for a batch (see the class docstring)."""
        views = self.surface.views(batch, self.localizer, self.cams.device, where)
        size = tuple(views.images.shape[-2:])
        if views.shared:
            lift, emb = views.lifts[0], views.embeddings
            if prompt_ids is not None:
                uniq, inv = torch.unique(prompt_ids, return_inverse=True)
                first = torch.full((uniq.numel(),), prompt_ids.numel(), dtype=torch.long, device=inv.device)
                first = first.scatter_reduce(0, inv, torch.arange(inv.numel(), device=inv.device), "amin")
                p = prompts[first]
            else:
                inv, p = None, prompts
            U, V = p.shape[0], emb.shape[0]
            logits = self._decode(emb.unsqueeze(0).expand(U, *emb.shape).reshape(U * V, *emb.shape[1:]), p, size)
            probs = torch.sigmoid(logits)
            scores, seen = lift.lift(logits, from_logits=True)
            if inv is not None:
                logits, probs, scores = logits[inv], probs[inv], scores[inv]
            return {"logits": logits, "probs": probs, "scores": scores, "seen": [seen], "lifts": views.lifts,
                    "images": views.images}
        logits = self._decode(views.embeddings, prompts, size)
        probs = torch.sigmoid(logits)
        scores, seen = [], []
        for b, lift in enumerate(views.lifts):
            s, m = lift.lift(logits[b:b + 1], from_logits=True)
            scores.append(s[0])
            seen.append(m)
        return {"logits": logits, "probs": probs, "scores": torch.stack(scores), "seen": seen, "lifts": views.lifts,
                "images": views.images}

    def labels(self, batch: dict, out: dict, where: str) -> torch.Tensor:
        """The batch's per-element labels (B, N), checked against the rendered surface."""
        return self.surface.labels(batch, out["lifts"], where)

    def targets(self, labels: torch.Tensor, out: dict) -> torch.Tensor:
        """Per-view 2D targets (B, V, H, W) of per-element labels (-1 on background)."""
        return self.surface.targets(labels, out["lifts"])

    def losses(self, batch: dict, out: dict, where: str = "losses") -> dict[str, torch.Tensor]:
        """{loss, loss_2d, loss_3d and their terms (loss_2d_<term>, loss_3d_<term>)} for a batch and the outputs."""
        label = self.labels(batch, out, where)
        masks = self.targets(label, out)
        logits = out["logits"]
        if masks.shape[-2:] != logits.shape[-2:]:
            masks = F.interpolate(masks, size=logits.shape[-2:], mode="nearest")
        l2d, t2d = _as_loss(self.loss_2d(logits.flatten(0, 1), masks.flatten(0, 1).to(logits.dtype)))
        if getattr(self.loss_3d, "takes_seen", False):
            seen = out["seen"]
            mask = seen[0].expand(label.shape[0], -1) if len(seen) == 1 else torch.stack(seen)
            l3d, t3d = _as_loss(self.loss_3d(out["scores"], label, seen=mask))
        else:
            l3d, t3d = _as_loss(self.loss_3d(*self.surface.loss_inputs(out, label)))
        losses = {"loss": l2d + l3d, "loss_2d": l2d, "loss_3d": l3d}
        losses.update({f"loss_2d_{k}": v for k, v in t2d.items()})
        losses.update({f"loss_3d_{k}": v for k, v in t3d.items()})
        return losses

    def figures(self, batch: dict, out: dict, titles: list[str]) -> list[tuple[str, np.ndarray]]:
        """The surface's figures for the first len(titles) samples of ``batch`` and its outputs."""
        label = self.labels(batch, out, "figures")
        masks = self.targets(label, out)
        return self.surface.figures(batch, out, label, masks, titles)
