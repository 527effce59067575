"""MV-Loc on its own: Render -> Localize -> Lift with a learned prompt per class (InteractVLM's
localizer, and its "no VLM" ablation).

InteractVLM turns 3D contact into 2D segmentation. The body (canonical pose, normal colours)
or the object (unit-sphere point cloud, NOCS colours) is rendered from fixed views; SAM's
frozen image encoder embeds each view; the mask decoder, prompted with one 256-d embedding
per view, predicts a contact / affordance mask per view; the masks are lifted back onto the
vertices / points through the renderer's pixel -> face (point) maps. In the full method the
prompt is the VLM's contact token projected to 256-d; here it is a learned embedding per
class (the DAMON object an image's contact is with, or the PIAD affordance asked for), so
this system trains the localizer and lifter without a VLM.

Tasks
-----
* ``human``: per-vertex contact on the body. Batches from the ``damon`` DataModule
  (``contact_label`` (B,V); with ``contact_mode=semantic`` also ``object_name``). The body
  render never changes, so its views, lift map and (with a frozen image encoder) SAM
  embeddings are computed once and reused for every batch.
* ``object``: per-point affordance. Batches from ``piad`` / ``lemon`` (``points`` (B,P,3),
  ``affordance`` (B,P), ``affordance_name``, ``point_id``). Each cloud's views, lift map and
  embeddings are computed once per cloud and kept in memory (``cache_renders``).

Losses (REFERENCE.md, InteractVLM eqs. 1-6): per view 2D focal BCE (alpha 0.5, gamma 2) x2 +
Dice x1 over valid pixels (render background is ignored, label -1); human 3D focal (alpha
0.25, gamma 2) + 0.01 * mean |C| sparsity, x3; object Dice + beta * MSE on the lifted
heatmap.

Prompts: ``classes`` lists the prompt vocabulary, looked up by the batch key ``prompt_key``
(``object_name`` for semantic human contact, ``affordance_name`` for objects). With
``classes: null`` and a ``prompt_key`` the vocabulary is taken from the DataModule's
``classes`` at setup and stored in the hyper-parameters (so checkpoints rebuild it); with no
``prompt_key`` there is one prompt ("contact", binary human contact).
"""
from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core import registry
from zoo.core.registry import register
from zoo.systems.common import BatchKeyError, EvalMetricsMixin, need

__all__ = ["MVLoc", "BatchKeyError"]


def _need(batch: dict, key: str, where: str, expected: str) -> Any:
    return need(batch, key, "MVLoc", where, expected)


def _as_loss(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A loss module's output (tensor or dict with 'loss') as (loss, named terms)."""
    if isinstance(out, dict):
        return out["loss"], {k: v for k, v in out.items() if k != "loss"}
    return out, {}


@register("system", "mvloc")
class MVLoc(EvalMetricsMixin, L.LightningModule):
    """Render-Localize-Lift contact / affordance model with learned class prompts (see the module docstring).

    Args:
        task: "human" (per-vertex contact) or "object" (per-point affordance).
        renderer, localizer, lifter: sub-recipes ({name: ..., **args}) of the `renderer`,
            `localizer` and `lifter` kinds; defaults: multiview (body or object views, 1024^2),
            mvloc_sam vit_h, camera_lifter.
        classes: prompt vocabulary (see module docstring); prompt_key: the batch key naming
            each sample's class (None: one shared prompt).
        body_model_dir, body_model_type: the body rendered for the human task (default
            $ZOO_BODY_MODELS or data/body_models).
        w_focal_2d, w_dice_2d, focal_alpha_2d, focal_gamma_2d: 2D mask loss.
        w_3d, focal_alpha_3d, focal_gamma_3d, sparsity: human 3D loss.
        w_obj, obj_beta: object 3D loss (Dice + beta * MSE).
        lr, betas, weight_decay, warmup_steps: AdamW with linear warm-up, then linear decay
            to 0 at ``total_steps`` (DeepSpeed's WarmupDecayLR, as InteractVLM); total_steps
            None = the trainer's estimated number of optimiser steps.
        threshold: contact / mask probability threshold for metrics and figures.
        geodesic_cache: optional (V,V) geodesic matrix (.npy, metres) for the geodesic metric.
        cache_renders: keep object views / lift maps / embeddings in memory per cloud id.
        prompt_init_std: std of the initial class prompts.
    """

    subcomponents = {"renderer": "renderer", "localizer": "localizer", "lifter": "lifter"}

    def __init__(
        self,
        task: Literal["human", "object"] = "human",
        renderer: dict | None = None,
        localizer: dict | None = None,
        lifter: dict | None = None,
        classes: list[str] | None = None,
        prompt_key: str | None = None,
        body_model_dir: str | None = None,
        body_model_type: str = "smpl",
        w_focal_2d: float = 2.0,
        w_dice_2d: float = 1.0,
        focal_alpha_2d: float = 0.5,
        focal_gamma_2d: float = 2.0,
        w_3d: float = 3.0,
        focal_alpha_3d: float = 0.25,
        focal_gamma_3d: float = 2.0,
        sparsity: float = 0.01,
        w_obj: float = 1.0,
        obj_beta: float = 1.0,
        lr: float = 3e-4,
        betas: list[float] | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        total_steps: int | None = None,
        threshold: float = 0.5,
        geodesic_cache: str | None = None,
        cache_renders: bool = True,
        prompt_init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if task not in ("human", "object"):
            raise ValueError(f"MVLoc: task must be 'human' or 'object', got {task!r}")
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError(f"MVLoc: classes has duplicates: {classes}")
        if classes is not None and not classes:
            raise ValueError("MVLoc: classes is empty (use null for one shared prompt)")
        if task == "object" and prompt_key is None:
            prompt_key = "affordance_name"
        self.save_hyperparameters()
        self.hparams.prompt_key = prompt_key
        view_set = "body" if task == "human" else "object"
        rcfg = {"name": "multiview", "view_set": view_set, **(renderer or {})}
        self.renderer = registry.build("renderer", rcfg)
        self.localizer = registry.build("localizer", {"name": "mvloc_sam", "variant": "vit_h", **(localizer or {})})
        lcfg = {"name": "camera_lifter", **(lifter or {})}
        lcfg.setdefault("num_views", self.renderer.num_views)
        self.lifter = registry.build("lifter", lcfg)
        self.register_buffer("cams", self.renderer.camera_numbers().float(), persistent=False)
        self.prompts: nn.Embedding | None = None
        if classes is not None or prompt_key is None:
            self._make_prompts(classes)

        from zoo.models.losses import HumanContactLoss3D, MaskLoss2D, ObjectAffordanceLoss

        self.loss_2d = MaskLoss2D(focal_weight=w_focal_2d, dice_weight=w_dice_2d, alpha=focal_alpha_2d, gamma=focal_gamma_2d)
        if task == "human":
            self.loss_3d = HumanContactLoss3D(alpha=focal_alpha_3d, gamma=focal_gamma_3d, sparsity=sparsity, weight=w_3d)
            from zoo.metrics.contact import ContactPRF

            self.val_metric = ContactPRF(threshold)
            self.test_metric = ContactPRF(threshold)
            self.val_geo = self.test_geo = None
            if geodesic_cache is not None:
                from zoo.metrics.contact import GeodesicError

                self.val_geo = GeodesicError(geodesic_cache, threshold)
                self.test_geo = GeodesicError(geodesic_cache, threshold)
        else:
            self.loss_3d = ObjectAffordanceLoss(beta=obj_beta, weight=w_obj)
            from zoo.metrics.affordance import AffordanceMetrics

            self.val_metric = AffordanceMetrics()
            self.test_metric = AffordanceMetrics()
            self.val_geo = self.test_geo = None
            self.main_metric = "auc"
        self._cache: dict[str, tuple] = {}

    # ----------------------------------------------------------------- prompts
    def _make_prompts(self, classes: list[str] | None) -> None:
        names = list(classes) if classes is not None else ["contact"]
        self.hparams.classes = list(classes) if classes is not None else None
        self.class_names = names
        self._class_index = {n: i for i, n in enumerate(names)}
        emb = nn.Embedding(len(names), self.embed_dim)
        nn.init.normal_(emb.weight, std=self.hparams.prompt_init_std)
        self.prompts = emb.to(self.cams.device)

    @property
    def embed_dim(self) -> int:
        """Width of a prompt (256 for SAM)."""
        return int(getattr(self.localizer, "embed_dim", 256))

    def setup(self, stage: str) -> None:
        """Take the prompt vocabulary from the DataModule's ``classes`` when the recipe left it open."""
        if self.prompts is not None:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        classes = getattr(dm, "classes", None)
        if not classes:
            raise ValueError(f"MVLoc: classes is null and prompt_key={self.hparams.prompt_key!r}, but the DataModule "
                             f"({type(dm).__name__}) exposes no 'classes' list; list the classes in the recipe "
                             f"(system.classes=[...])")
        self._make_prompts(sorted(classes))

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # noqa: D102
        if self.prompts is None:
            classes = checkpoint.get("hyper_parameters", {}).get("classes")
            if classes:
                self._make_prompts(classes)

    def class_indices(self, batch: dict, where: str) -> torch.Tensor:
        """Prompt index (B,) of every sample from the batch's ``prompt_key``; unknown names are an error."""
        key = self.hparams.prompt_key
        B = self._batch_size(batch, where)
        if key is None:
            return torch.zeros(B, dtype=torch.long, device=self.cams.device)
        names = _need(batch, key, where, f"list[str] of {B} class names")
        try:
            idx = [self._class_index[str(n)] for n in names]
        except KeyError as e:
            raise ValueError(f"MVLoc.{where}: batch['{key}'] has class {e.args[0]!r}, not in the prompt vocabulary "
                             f"{self.class_names} (system.classes)") from None
        return torch.tensor(idx, dtype=torch.long, device=self.cams.device)

    def _batch_size(self, batch: dict, where: str) -> int:
        key = "contact_label" if self.hparams.task == "human" else "points"
        return int(_need(batch, key, where, "(B, ...)").shape[0])

    # ----------------------------------------------------------------- rendering / embeddings
    def _encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.localizer.image_encoder.parameters()) \
            if hasattr(self.localizer, "image_encoder") else True

    def _body_model(self):
        from zoo.body.model import BodyModel, default_body_model_dir

        d = self.hparams.body_model_dir or str(default_body_model_dir())
        return BodyModel(d, model_type=self.hparams.body_model_type)

    def body_views(self) -> tuple[torch.Tensor, Any]:
        """The canonical body's views (nV,3,H,W) and lift map, rendered once (disk cache in the renderer)."""
        if "body" not in self._cache:
            images, lift = self.renderer.render_body(self._body_model())
            self._cache["body"] = (images.cpu(), lift)
        images, lift = self._cache["body"]
        dev = self.cams.device
        if lift.pix_to_elem.device != dev:
            lift = lift.to(dev)
            self._cache["body"] = (images, lift)
        return images.to(dev), lift

    def _body_embeddings(self) -> torch.Tensor:
        images, _ = self.body_views()
        if not self._encoder_frozen():
            return self.localizer.encode(images)
        emb = self._cache.get("body_emb")
        if emb is None or emb.device != self.cams.device:
            with torch.no_grad():
                emb = self.localizer.encode(images).detach()
            self._cache["body_emb"] = emb
        return emb

    def object_views(self, points: torch.Tensor, ids: list[str] | None) -> tuple[torch.Tensor, list, torch.Tensor | None]:
        """Views (B,nV,3,H,W), lift maps and (frozen encoder) embeddings (B*nV,256,h,w) of a batch of clouds."""
        dev = self.cams.device
        frozen = self._encoder_frozen()
        images, lifts, embs = [], [], []
        for b in range(points.shape[0]):
            key = f"pts:{ids[b]}" if ids is not None and self.hparams.cache_renders else None
            hit = self._cache.get(key) if key is not None else None
            if hit is None:
                img, lift = self.renderer.render_points(points[b].detach().float().cpu())
                img, lift = img.to(dev), lift.to(dev)
                emb = None
                if frozen:
                    with torch.no_grad():
                        emb = self.localizer.encode(img).detach()
                hit = (img, lift, emb)
                if key is not None:
                    self._cache[key] = hit
            img, lift, emb = hit
            images.append(img)
            lifts.append(lift)
            embs.append(emb)
        images_t = torch.stack(images)
        emb_t = torch.cat(embs) if frozen else None
        return images_t, lifts, emb_t

    # ----------------------------------------------------------------- model
    def _decode(self, emb: torch.Tensor, prompt: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Per-view mask logits (B,nV,H,W) from embeddings (B*nV,C,h,w) and class prompts (B,256)."""
        B, nV = prompt.shape[0], self.renderer.num_views
        per_view = self.lifter(prompt, self.cams)  # (B,nV,256)
        logits = self.localizer.decode(emb, per_view.reshape(B * nV, -1), output_size=size)
        return logits.reshape(B, nV, *logits.shape[-2:])

    def forward(self, batch: dict, where: str = "forward") -> dict[str, Any]:
        """Per-view mask logits/probabilities and lifted per-vertex (human) or per-point (object) scores.

        Returns {logits (B,nV,H,W), probs, scores (B,N), seen (N,) or list, lift (map or list of maps)}.
        """
        idx = self.class_indices(batch, where)
        if self.hparams.task == "human":
            images, lift = self.body_views()
            emb = self._body_embeddings()
            # The views are the same for every sample, so samples with the same prompt get the same
            # masks: decode and lift each distinct prompt once and index the results (exact, and
            # the gradients of repeated samples add up through the indexing).
            uniq, inv = torch.unique(idx, return_inverse=True)
            prompt = self.prompts(uniq)
            U, nV = prompt.shape[0], emb.shape[0]
            emb = emb.unsqueeze(0).expand(U, *emb.shape).reshape(U * nV, *emb.shape[1:])
            logits = self._decode(emb, prompt, tuple(images.shape[-2:]))
            probs = torch.sigmoid(logits)
            scores, seen = lift.lift(probs)
            return {"logits": logits[inv], "probs": probs[inv], "scores": scores[inv], "seen": seen, "lift": lift}
        prompt = self.prompts(idx)
        points = _need(batch, "points", where, "float (B,P,3) point clouds")
        ids = batch.get("point_id")
        images, lifts, emb = self.object_views(points, list(ids) if ids is not None else None)
        if emb is None:
            emb = self.localizer.encode(images.flatten(0, 1))
        logits = self._decode(emb, prompt, tuple(images.shape[-2:]))
        probs = torch.sigmoid(logits)
        scores, seen = [], []
        for b, lift in enumerate(lifts):
            s, m = lift.lift(probs[b:b + 1])
            scores.append(s[0])
            seen.append(m)
        return {"logits": logits, "probs": probs, "scores": torch.stack(scores), "seen": seen, "lift": lifts}

    # ----------------------------------------------------------------- losses
    def target_masks(self, batch: dict, out: dict, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-vertex / per-point labels (B,N) and their per-view 2D masks (B,nV,H,W) (-1 on background)."""
        bg = -1.0
        if self.hparams.task == "human":
            label = _need(batch, "contact_label", where, "float (B,V) per-vertex 0/1 contact").float()
            lift = out["lift"]
            if label.dim() != 2 or label.shape[1] != lift.num_elems:
                raise ValueError(f"MVLoc.{where}: batch['contact_label'] has shape {tuple(label.shape)}, expected "
                                 f"(B, {lift.num_elems}) for the rendered body")
            masks = lift.to_masks(label, background=bg, hard=True)
            return label, masks
        label = _need(batch, "affordance", where, "float (B,P) per-point affordance in [0,1]").float()
        masks = torch.cat([lift.to_masks(label[b:b + 1], background=bg) for b, lift in enumerate(out["lift"])])
        return label, masks

    def compute_losses(self, batch: dict, out: dict, where: str = "compute_losses") -> dict[str, torch.Tensor]:
        """{loss, loss_2d, loss_3d, and their terms} for a batch and the model output."""
        label, masks = self.target_masks(batch, out, where)
        logits = out["logits"]
        if masks.shape[-2:] != logits.shape[-2:]:
            masks = F.interpolate(masks, size=logits.shape[-2:], mode="nearest")
        l2d, t2d = _as_loss(self.loss_2d(logits.flatten(0, 1), masks.flatten(0, 1).to(logits.dtype)))
        if self.hparams.task == "human":
            seen = out["seen"]
            l3d, t3d = _as_loss(self.loss_3d(out["scores"][:, seen], label[:, seen]))
        else:
            l3d, t3d = _as_loss(self.loss_3d(out["scores"], label))
        losses = {"loss": l2d + l3d, "loss_2d": l2d, "loss_3d": l3d}
        losses.update({f"loss_2d_{k}": v for k, v in t2d.items()})
        losses.update({f"loss_3d_{k}": v for k, v in t3d.items()})
        return losses

    # ----------------------------------------------------------------- lightning hooks
    def _shared_step(self, batch: dict, stage: str):
        where = {"train": "training_step", "val": "validation_step"}.get(stage, f"{stage}_step")
        out = self(batch, where)
        losses = self.compute_losses(batch, out, where)
        on_step = stage == "train"
        bs = out["scores"].shape[0]
        for k, v in losses.items():
            self.log(f"{stage}/{k}", v, prog_bar=(k == "loss"), on_step=on_step, on_epoch=not on_step, batch_size=bs,
                     sync_dist=not on_step)
        return losses, out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; logs train/loss and its terms."""
        return self._shared_step(batch, "train")[0]["loss"]

    def eval_outputs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logs the stage's losses; (scores, labels) for contact P/R/F1 (human) or SIM/MAE/AUC/aIoU (object)."""
        _, out = self._shared_step(batch, stage)
        target = batch["contact_label"] if self.hparams.task == "human" else batch["affordance"]
        return out["scores"].float(), target.float()

    def predict_step(self, batch: dict, batch_idx: int = 0) -> torch.Tensor:
        """Lifted scores (B,N): per-vertex contact (human) or per-point affordance (object)."""
        return self(batch, "predict_step")["scores"]

    def configure_optimizers(self):
        """AdamW over the trainable parameters (mask decoder, lifter, prompts), linear warm-up then linear decay."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        betas = tuple(hp.betas) if hp.betas is not None else (0.9, 0.95)
        opt = torch.optim.AdamW(params, lr=hp.lr, betas=betas, weight_decay=hp.weight_decay)
        total = hp.total_steps
        if total is None and self._trainer is not None:
            est = self.trainer.estimated_stepping_batches
            total = int(est) if est is not None and math.isfinite(est) else None
        warm = max(int(hp.warmup_steps), 0)

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            if total is None or total <= warm:
                return 1.0
            return max(0.0, (total - step) / (total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- figures
    @torch.no_grad()
    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, np.ndarray]]:
        """PNG-ready (name, uint8 HxWx3) figures for the first ``n`` samples: the views with predicted
        and ground-truth masks, and the lifted scores on the body / object next to the ground truth."""
        from zoo.render.viz import mask_grid_image

        sub = {k: (v[:n] if isinstance(v, (torch.Tensor, list, tuple)) else v) for k, v in batch.items()}
        out = self(sub, "figures")
        label, masks = self.target_masks(sub, out, "figures")
        figs = []
        names = sub.get(self.hparams.prompt_key) if self.hparams.prompt_key else None
        for i in range(out["scores"].shape[0]):
            title = f"sample {i}" + (f" ({names[i]})" if names is not None else "")
            if self.hparams.task == "human":
                images, _ = self.body_views()
            else:
                images, _, _ = self.object_views(sub["points"][i:i + 1], [sub["point_id"][i]] if "point_id" in sub else None)
                images = images[0]
            grid = mask_grid_image(images.cpu(), out["probs"][i].cpu(), masks[i].cpu(), title=f"{title}: views | predicted | ground truth")
            figs.append((f"views_{i}", grid))
            figs.append((f"lifted_{i}", self._lifted_figure(sub, out, label, i, title)))
        return figs

    def _lifted_figure(self, batch: dict, out: dict, label: torch.Tensor, i: int, title: str) -> np.ndarray:
        from zoo.render.viz import contact_views_image, points_views_image

        pred = out["scores"][i].float().cpu().numpy()
        gt = label[i].float().cpu().numpy()
        if self.hparams.task == "human":
            bm = self._body_model()
            from zoo.render.views import canonical_body

            verts, faces = canonical_body(bm)
            return contact_views_image(verts.numpy(), faces.numpy(), pred, gt,
                                       title=f"{title}: lifted contact (top) | ground truth (bottom)")
        pts = batch["points"][i].float().cpu()
        return points_views_image(self.renderer, pts, pred, gt, title=f"{title}: lifted affordance (top) | ground truth (bottom)")
