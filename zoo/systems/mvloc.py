"""MV-Loc on its own: Render -> Localize -> Lift with a learned prompt per class (InteractVLM's localizer,
and its "no VLM" ablation).

InteractVLM turns 3D contact into 2D segmentation. The body (canonical pose, normal colours) or the
object (unit-sphere point cloud, NOCS colours) is rendered from fixed views; SAM's frozen image
encoder embeds each view; the mask decoder, prompted with the camera-gated 256-d embeddings (all V
gated tokens together prompt every view, as in InteractVLM's code; ``prompt_mode: own`` gives each
view its own token only), predicts a contact / affordance mask per view; the mask logits are lifted
back onto the vertices / points. In the
full method the prompt is the VLM's contact token projected to 256-d; here it is a learned
embedding per class (the DAMON object an image's contact is with, or the PIAD affordance asked
for), so this system trains the localizer and lifter without a VLM.

The pipeline is the reusable :class:`zoo.models.rll.RenderLocalizeLift`; this system only adds the
prompt source. What it predicts on is the ``surface`` sub-recipe: ``body`` (per-vertex human
contact, batches from the ``damon`` DataModule) or ``cloud`` (per-point affordance, batches from
``piad`` / ``lemon``). Losses (InteractVLM eqs. 1-6), per view: 2D focal BCE x2 + Dice x1 over
valid pixels (objects: + heatmap MSE x2); 3D: human focal + 0.01 mean sparsity x3 averaged over all
vertices, object Dice + beta MSE (or the release's composite, ``focal_dice_mse_l1``); every weight in
the recipe (recipes/base/loss/).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch

from zoo.core.registry import register
from zoo.models.rll.pipeline import LOSSES_2D, LOSSES_3D, RenderLocalizeLift
from zoo.models.rll.prompts import PROMPTS
from zoo.models.rll.surfaces import SURFACES
from zoo.systems.base import System
from zoo.systems.optim import Optim

__all__ = ["MVLoc"]


@register("system", "mvloc")
class MVLoc(System):
    """Render-Localize-Lift contact / affordance model with learned class prompts (see the module docstring).

    Args:
        surface: what is predicted on: ``{name: body, renderer: ..., body_model: ...}`` or
            ``{name: cloud, renderer: ...}`` (zoo.models.rll.surfaces).
        localizer: `localizer` sub-recipe (mvloc_sam: SAM, frozen encoders, trained mask decoder).
        lifter: `lifter` sub-recipe (camera_lifter or identity); ``num_views`` and ``embed_dim``
            default to the renderer's and the localizer's.
        prompts: the prompt source, ``{name: learned, classes: [...] | null, key: <batch key>}``;
            ``classes: null`` with a key takes the vocabulary from the DataModule when training
            starts and records it in the hyper-parameters (so exports rebuild it).
        loss_2d, loss_3d: the per-view mask loss and the lifted 3D loss (zoo.models.rll.pipeline).
        prompt_mode: ``shared`` (InteractVLM: the V gated tokens form one prompt sequence that every
            view is decoded with) or ``own`` (view v is decoded with its own gated token only).
        optim: optimiser and schedule (zoo.systems.optim); metrics: registered metrics.
        weights: optional whole-system weights (an export or checkpoint of this system).
    """

    subcomponents: ClassVar[dict[str, Any]] = {
        "surface": SURFACES, "localizer": "localizer", "lifter": "lifter", "prompts": PROMPTS,
        "loss_2d": LOSSES_2D, "loss_3d": LOSSES_3D, "metrics": "metric",
    }

    def __init__(
        self,
        surface: dict,
        localizer: dict,
        lifter: dict,
        prompts: dict,
        loss_2d: dict,
        loss_3d: dict,
        optim: Optim | dict,
        metrics: list[dict],
        weights: str | None = None,
        prompt_mode: Literal["shared", "own"] = "shared",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def build(self) -> None:
        """Surface, localizer, lifter, prompt source and losses, in that order (so seeded runs initialise alike)."""
        hp = self.hparams
        surface = self.build_part("surface")
        localizer = self.build_part("localizer")
        lifter = self.build_part("lifter", {"num_views": surface.num_views, "embed_dim": int(localizer.embed_dim),
                                            **hp.lifter})
        self.rll = RenderLocalizeLift(surface, localizer, lifter, self.build_part("loss_2d"),
                                      self.build_part("loss_3d"), owner=type(self).__name__,
                                      prompt_mode=hp.get("prompt_mode", "shared"))
        self.prompts = self.build_part("prompts", {**hp.prompts, "dim": int(localizer.embed_dim)})
        if not self.prompts.bound:
            self._bind_from_datamodule()

    def _bind_from_datamodule(self) -> None:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return  # bound when training starts, or from a checkpoint's hyper-parameters
        classes = getattr(dm, "classes", None)
        if not classes:
            raise ValueError(f"MVLoc: prompts.classes is null and prompts.key={self.hparams.prompts.get('key')!r}, but the "
                             f"DataModule ({type(dm).__name__}) exposes no 'classes' list; list the classes in the recipe "
                             f"(system.prompts.classes=[...])")
        self._bind(sorted(classes))

    def _bind(self, classes: list[str]) -> None:
        self.prompts.bind(classes)
        self.prompts.to(self.rll.cams.device)
        self.hparams.prompts = {**self.hparams.prompts, "classes": list(classes)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # noqa: D102
        if not self.prompts.bound:
            classes = (checkpoint.get("hyper_parameters", {}).get("prompts") or {}).get("classes")
            if classes:
                self._bind(classes)

    # ----------------------------------------------------------------- model
    def forward(self, batch: dict, where: str = "forward") -> dict[str, Any]:
        """Per-view mask logits/probabilities and lifted per-vertex (body) or per-point (cloud) scores."""
        B = self.rll.surface.batch_size(batch, where)
        prompts, ids = self.prompts(batch, B, type(self).__name__, where)
        return self.rll(batch, prompts, ids, where)

    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], dict]:
        """Forward and the 2D + 3D losses."""
        where = self.where(stage)
        out = self(batch, where)
        return self.rll.losses(batch, out, where), out

    def batch_size(self, batch: dict, out: Any) -> int:
        """Samples in the batch."""
        return int(out["scores"].shape[0])

    def metric_inputs(self, batch: dict, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, labels) for contact P/R/F1 (body) or SIM/MAE/AUC/aIoU (cloud)."""
        return out["scores"].float(), self.rll.labels(batch, out, "metric_inputs").float()

    def predict_step(self, batch: dict, batch_idx: int = 0) -> torch.Tensor:
        """Lifted scores (B, N): per-vertex contact (body) or per-point affordance (cloud)."""
        return self(batch, "predict_step")["scores"]

    @torch.no_grad()
    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, np.ndarray]]:
        """For the first ``n`` samples: the views with predicted and ground-truth masks, and the lifted
        scores on the body / object next to the ground truth."""
        sub = {k: (v[:n] if isinstance(v, (torch.Tensor, list, tuple)) else v) for k, v in batch.items()}
        out = self(sub, "figures")
        key = self.prompts.key
        names = sub.get(key) if key else None
        titles = [f"sample {i}" + (f" ({names[i]})" if names is not None else "") for i in range(out["scores"].shape[0])]
        return self.rll.figures(sub, out, titles)
