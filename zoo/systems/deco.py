"""DECO (Tripathi et al., ICCV 2023): image -> per-vertex SMPL contact.

Architecture (as released in sha2nkt/deco): two encoders of the same type (scene and
part, HRNet-W32 -> 480 channels at 1/4 resolution); two decoders to scene (133) and part
(26) segmentation; each encoder map average-pooled to a token; channel cross-attention in
both directions, product and LayerNorm; classifier Linear(480->4096) ReLU
Linear(4096->6890) and a sigmoid.

Loss: ``w_sem*L_sem + w_part*L_part + w_cont*L_cont + w_pal*L_pal``; L_sem and L_part are
BCE between the softmax of the (resized) segmentation logits and the one-hot labels (as
the official code does), L_cont is per-vertex BCE, L_pal (pixel anchoring, off by
default) renders the predicted contact on the posed ground-truth body into the image and
compares it with the 2D contact mask by BCE. Every BCE is computed from logits (log-softmax
for the segmentation terms), in float32: ``F.binary_cross_entropy`` on probabilities is
refused under CUDA autocast, and these forms are also the stable ones.

The release's training schedule (``recipes/deco/damon_release.yaml``): Adam, lr 1e-5, weight
decay 1e-4, batch 4; ``lr_on_plateau`` halves the lr once ``val/f1`` has not reached its best
for 3 validation epochs, and again after every further such epoch, restarting Adam's moments
as the release's fresh optimisers do; ``early_stop`` stops after 10 (Lightning's
EarlyStopping, added through :meth:`DECO.configure_callbacks`).

Batch keys (from the ``damon`` DataModule): ``image`` (B,3,H,W) ImageNet-normalised,
``contact_label`` (B,V), ``scene_seg`` (B,133,s,s) and ``part_seg`` (B,26,s,s) one-hot,
``contact_2d`` (B,1,H,W), ``pose`` (B,72), ``shape`` (B,10), ``transl`` (B,3), ``cam_k``
(B,3,3) (intrinsics of the resized image). Optional ``has_contact_3d`` (B,) masks samples
out of L_cont and ``has_contact_2d`` (B,) out of L_pal, as in the official trainer.

Differences from the release, on purpose: one Adam over all parameters (the release
steps three Adams that share the encoders, so encoder weights move up to three times per
batch); logits instead of probabilities are kept inside the modules for numerical
stability (the same loss values wherever the release's probabilities are not rounded to
exactly 0 or 1 in float32).
"""
from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.batch import need
from zoo.core.registry import register
from zoo.models.heads.deco import ContactClassifier, CrossAttention, SegDecoder
from zoo.systems.base import System
from zoo.systems.optim import Optim

__all__ = ["DECO", "deco_seg_bce", "pixel_anchoring_render", "ReleasePlateau", "RANDOM_INIT_WARNING"]

log = logging.getLogger(__name__)

_LOG_FLOOR = -100.0  # torch's BCELoss clamps its logs here
# the largest float32 below 1: log(1 - p) is taken at most at this p, so its gradient stays finite
_P_CEIL = 1.0 - 2.0 ** -24

RANDOM_INIT_WARNING = (
    "DECO: this recipe means both encoders to start from pretrained weights (the release starts from the COCO "
    "pose HRNet-W32, pose_hrnet_w32_256x192.pth), but system.backbone.weights is not set (DECO_HRNET_WEIGHTS "
    "unset?): the encoders start from RANDOM initialisation and results will not be comparable to DECO's. Set "
    "DECO_HRNET_WEIGHTS=/path/to/pose_hrnet_w32_256x192.pth (docs/data.md), or system.pretrained_encoders=false "
    "to train from scratch on purpose."
)


def deco_seg_bce(logits: torch.Tensor, onehot: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """DECO's segmentation loss: BCE(softmax(logits), one-hot) averaged over every element, from logits.

    ``logits`` (B,C,h,w) are resized bilinearly to the label size (or both to ``size`` when
    given: labels by nearest neighbour, so they stay one-hot). Per element the loss is
    ``-(t log p + (1 - t) log(1 - p))`` with ``log p = log_softmax(logits)``, both logs floored
    at -100 as torch's BCELoss does, computed in float32 whatever the autocast dtype (the
    probability form, ``F.binary_cross_entropy``, is refused under CUDA autocast). ``p`` is
    capped just below 1 for ``log(1 - p)``: where the release's float32 softmax rounds to
    exactly 1 its log reads -100, here about -16.6, with a finite gradient.
    """
    target = onehot.to(torch.float32)
    if size is not None and target.shape[-2:] != (size, size):
        target = F.interpolate(target, size=(size, size), mode="nearest")
    logits = logits.float()
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    log_p = torch.log_softmax(logits, dim=1)
    log_1mp = torch.log1p(-log_p.exp().clamp(max=_P_CEIL))
    loss = -(target * log_p.clamp(min=_LOG_FLOOR) + (1.0 - target) * log_1mp.clamp(min=_LOG_FLOOR))
    return loss.mean()


class ReleasePlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """The DECO release's learning-rate rule, as a ReduceLROnPlateau Lightning can drive.

    After each validation epoch: a value at least as good as the best so far (``>=`` for
    ``mode="max"``: ties count as reaching it) resets the count of bad epochs, any other
    value adds one; once the count reaches ``patience`` the lr is multiplied by ``factor``,
    at that epoch and at every further bad one (the release's ``if num >= NUM_UPDATE_LR:
    update_lr()``). ``reset_state`` clears the optimiser's moments at each decay, as the
    release's freshly built Adams start without them. (torch's own ReduceLROnPlateau decays
    only after ``patience + 1`` bad epochs, needs a relative improvement of 1e-4 and then
    waits ``patience`` epochs again.)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, mode: str = "max", factor: float = 0.5, patience: int = 3,
                 reset_state: bool = True) -> None:
        super().__init__(optimizer, mode=mode, factor=factor, patience=patience)
        self.reset_state = bool(reset_state)
        self.num_bad_epochs = 0
        self.best = -math.inf if mode == "max" else math.inf
        self.decays = 0

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        better = current >= self.best if self.mode == "max" else current <= self.best
        if better:
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs >= self.patience:
            for group in self.optimizer.param_groups:
                group["lr"] = float(group["lr"]) * self.factor
            if self.reset_state:
                self.optimizer.state.clear()
            self.decays += 1
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]


_PLATEAU_KEYS = {"monitor": str, "mode": str, "patience": int, "factor": float, "reset_state": bool}
_EARLY_STOP_KEYS = {"monitor": str, "mode": str, "patience": int, "min_delta": float}


def _check_schedule_dict(name: str, cfg: dict | None, known: dict[str, type]) -> dict | None:
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise ValueError(f"DECO: {name} must be a mapping ({', '.join(known)}) or null, got {cfg!r}")
    bad = sorted(set(cfg) - set(known))
    if bad:
        raise ValueError(f"DECO: unknown {name} setting(s) {bad}; valid: {', '.join(known)}")
    if cfg.get("mode", "max") not in ("max", "min"):
        raise ValueError(f"DECO: {name}.mode must be 'max' or 'min', got {cfg['mode']!r}")
    if int(cfg.get("patience", 1)) < 1:
        raise ValueError(f"DECO: {name}.patience must be >= 1, got {cfg['patience']}")
    return dict(cfg)


def pixel_anchoring_render(contact: torch.Tensor, verts_cam: torch.Tensor, faces: torch.Tensor, cam_k: torch.Tensor,
                           H: int, W: int, background: float = 0.0) -> torch.Tensor:
    """Render per-vertex values (contact probabilities or logits) of posed bodies into (B,H,W) images.

    Each pixel takes the value of the first vertex of its visible face, as the release's
    face texture does, and ``background`` where no face is visible (0 for probabilities; the
    loss renders logits with -100, the logit at which BCE reads the release's black
    background); gradients flow to ``contact`` only (the body is ground truth).
    """
    from zoo.render.cameras import project_opencv
    from zoo.render.raster import rasterize

    out = []
    for b in range(contact.shape[0]):
        screen = project_opencv(verts_cam[b].detach(), cam_k[b].to(verts_cam.dtype))
        frags = rasterize(screen, faces, H, W)
        face_vert = faces[frags.pix_to_face.clamp(min=0), 0]  # (H,W)
        covered = frags.pix_to_face >= 0
        img = torch.where(covered, contact[b][face_vert], torch.full_like(contact[b][face_vert], background))
        out.append(img)
    return torch.stack(out, 0)


def _need(batch: dict, key: str, where: str, expected: str) -> Any:
    return need(batch, key, "DECO", where, expected)


@register("system", "deco")
class DECO(System):
    """DECO contact estimator as a LightningModule (see module docstring).

    Args:
        backbone: `backbone` sub-recipe used for both encoders (``{name: timm, model: hrnet_w32,
            out_channels: 480}`` as released; ``system.backbone.model=resnet50`` swaps it). Its
            ``out_channels`` is DECO's feature width.
        optim: optimiser and schedule (zoo.systems.optim; DECO: Adam, lr 5e-5, weight decay 1e-4).
        metrics: registered metrics fed (contact probabilities, labels), e.g. contact_prf and
            contact_geodesic.
        body_model: body-model sub-recipe for L_pal and the contact figures (None: neither).
        classifier_hidden: hidden width of the contact classifier (4096 released).
        num_vertices, num_scene_classes, num_part_classes: output sizes.
        decoder_upsample: stride-2 transposed convs per segmentation decoder (2 released).
        shared_cross_attn: use one attention block both ways, as the released code does.
        w_sem, w_part, w_cont, w_pal: loss weights.
        seg_loss_size: compute L_sem/L_part at this square size (labels resized by nearest)
            instead of the label size; saves time in tiny configurations (the release: the
            label size, 256).
        weights: whole-model weights: the official ``deco_best.pth`` (converted on load) or a
            zoo export / checkpoint of this system.
        pretrained_encoders: the recipe means the encoders to start from pretrained weights
            (``backbone.weights``, the release's COCO pose HRNet-W32): when neither they nor
            ``weights`` are given, a loud warning says the encoders start from random init.
        lr_on_plateau: the release's lr rule (:class:`ReleasePlateau`): ``{monitor: val/f1,
            mode: max, patience: 3, factor: 0.5, reset_state: true}``; needs a constant
            ``optim.schedule``. None: the ``optim`` schedule alone.
        early_stop: Lightning ``EarlyStopping`` settings ``{monitor: val/f1, mode: max,
            patience: 10[, min_delta]}`` (the release stops after 10 epochs without a new
            best). None: no early stopping.
    """

    subcomponents: ClassVar[dict[str, Any]] = {"backbone": "backbone", "body_model": "body_model", "metrics": "metric"}

    def __init__(
        self,
        backbone: dict,
        optim: Optim | dict,
        metrics: list[dict],
        body_model: dict | None = None,
        classifier_hidden: int = 4096,
        num_vertices: int = 6890,
        num_scene_classes: int = 133,
        num_part_classes: int = 26,
        decoder_upsample: int = 2,
        shared_cross_attn: bool = True,
        w_sem: float = 1.0,
        w_part: float = 1.0,
        w_cont: float = 1.0,
        w_pal: float = 0.0,
        seg_loss_size: int | None = None,
        weights: str | None = None,
        pretrained_encoders: bool = False,
        lr_on_plateau: dict | None = None,
        early_stop: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_schedule_dict("lr_on_plateau", lr_on_plateau, _PLATEAU_KEYS)
        _check_schedule_dict("early_stop", early_stop, _EARLY_STOP_KEYS)
        if lr_on_plateau is not None:
            from zoo.systems.optim import parse_optim

            sched = parse_optim(optim).schedule
            if sched != "constant":
                raise ValueError(f"DECO: lr_on_plateau replaces the lr schedule; optim.schedule must be 'constant', "
                                 f"got {sched!r}")
        if pretrained_encoders:
            self._warn_if_random_encoders()
        if w_pal < 0 or w_sem < 0 or w_part < 0 or w_cont < 0:
            raise ValueError(f"DECO: loss weights must be >= 0, got w_sem={w_sem}, w_part={w_part}, "
                             f"w_cont={w_cont}, w_pal={w_pal}")
        if w_pal > 0 and body_model is None:
            raise ValueError("DECO: w_pal > 0 needs body_model (a body_model sub-recipe, e.g. "
                             "{name: smpl, model_dir: data/body_models})")

    def _warn_if_random_encoders(self) -> None:
        """Print RANDOM_INIT_WARNING (rank 0) when no weights file will initialise the encoders."""
        from zoo.core.hub import pretrained_skipped

        hp = self.hparams
        if hp.weights not in (None, "") or (hp.backbone or {}).get("weights") not in (None, "") or pretrained_skipped():
            return
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        self.random_init_warned = True
        if getattr(rank_zero_only, "rank", 0) == 0:
            bar = "!" * 100
            print(f"{bar}\n{RANDOM_INIT_WARNING}\n{bar}", file=sys.stderr, flush=True)
            log.warning(RANDOM_INIT_WARNING)

    def build(self) -> None:
        """Two encoders, two segmentation decoders, cross attention and the classifier (the release's order)."""
        hp = self.hparams
        self.encoder_sem = self.build_part("backbone")
        self.encoder_part = self.build_part("backbone")
        feat = int(self.encoder_sem.out_channels)
        self.decoder_sem = SegDecoder(feat, hp.num_scene_classes, hp.decoder_upsample)
        self.decoder_part = SegDecoder(feat, hp.num_part_classes, hp.decoder_upsample)
        self.cross_att = CrossAttention(feat, shared=hp.shared_cross_attn)
        self.classif = ContactClassifier(feat, hp.classifier_hidden, hp.num_vertices)

    # ----------------------------------------------------------------- weights
    @property
    def weights_only_globals(self) -> tuple:
        """The numpy float64 scalar types the official checkpoint pickles (its ``f1``), allowed for torch.load."""
        from zoo.systems.deco_convert import official_globals

        return tuple(official_globals())

    def load_pretrained(self) -> dict | None:
        """Load ``weights`` as the base class does; a file the weights-only reader refuses is reported with
        the layout a DECO weights file should have."""
        from zoo.core.hub import CheckpointError
        from zoo.systems.deco_convert import EXPECTED_LAYOUT

        try:
            return super().load_pretrained()
        except CheckpointError as exc:
            if "weights_only" not in str(exc):
                raise
            raise CheckpointError(f"{exc}; DECO weights: {EXPECTED_LAYOUT} (or a zoo export / checkpoint of this "
                                  f"system)") from None

    def convert_checkpoint(self, obj: Any, source: str) -> dict[str, torch.Tensor]:
        """The official ``deco_best.pth`` layout (``{"deco": state_dict, ...}``) mapped onto this module
        (zoo.systems.deco_convert); a zoo state dict passes through."""
        from zoo.systems.deco_convert import convert_official_deco, is_official_layout

        if is_official_layout(obj):
            return convert_official_deco(obj, shared_cross_attn=self.hparams.shared_cross_attn, source=source)
        return super().convert_checkpoint(obj, source)

    # ----------------------------------------------------------------- schedule
    def configure_optimizers(self) -> Any:
        """The ``optim`` sub-recipe's optimiser; with ``lr_on_plateau`` driven by :class:`ReleasePlateau`."""
        built = super().configure_optimizers()
        cfg = self.hparams.lr_on_plateau
        if cfg is None:
            return built
        optimizer = built["optimizer"] if isinstance(built, dict) else built
        sched = ReleasePlateau(optimizer, mode=cfg.get("mode", "max"), factor=float(cfg.get("factor", 0.5)),
                               patience=int(cfg.get("patience", 3)), reset_state=bool(cfg.get("reset_state", True)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "monitor": cfg.get("monitor", "val/f1"),
                                                         "interval": "epoch", "frequency": 1}}

    def configure_callbacks(self) -> list:
        """Lightning's EarlyStopping when ``early_stop`` is set (Lightning adds it to the trainer's callbacks)."""
        cfg = self.hparams.early_stop
        if cfg is None:
            return []
        from lightning.pytorch.callbacks import EarlyStopping

        return [EarlyStopping(monitor=cfg.get("monitor", "val/f1"), mode=cfg.get("mode", "max"),
                              patience=int(cfg.get("patience", 10)), min_delta=float(cfg.get("min_delta", 0.0)))]

    def body(self) -> nn.Module:
        """The body model (built on first use; kept out of the module tree so SMPL data never enters a checkpoint)."""
        if self.__dict__.get("_body_model_obj") is None:
            if self.hparams.body_model is None:
                raise ValueError("DECO: no body_model configured")
            from zoo.core.registry import build

            self.__dict__["_body_model_obj"] = build("body_model", self.hparams.body_model)
        return self.__dict__["_body_model_obj"]

    # ----------------------------------------------------------------- model
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image (B,3,H,W) ImageNet-normalised -> {contact (B,V) probs, contact_logits, scene_logits, part_logits}."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"DECO.forward: expected image of shape (B,3,H,W), got {tuple(image.shape)}")
        f_sem = self.encoder_sem(image)
        f_part = self.encoder_part(image)
        scene_logits = self.decoder_sem(f_sem)
        part_logits = self.decoder_part(f_part)
        tok_sem = f_sem.mean(dim=(2, 3)).unsqueeze(1)  # (B,1,C): global average pool
        tok_part = f_part.mean(dim=(2, 3)).unsqueeze(1)
        logits = self.classif(self.cross_att(tok_sem, tok_part))
        return {"contact": torch.sigmoid(logits), "contact_logits": logits,
                "scene_logits": scene_logits, "part_logits": part_logits}

    # ----------------------------------------------------------------- losses
    def compute_losses(self, batch: dict, out: dict[str, torch.Tensor], where: str = "compute_losses") -> dict[str, torch.Tensor]:
        """Loss terms and their weighted sum for a batch and the model output: {loss, loss_sem, loss_part, loss_cont[, loss_pal]}."""
        hp = self.hparams
        V = hp.num_vertices
        label = _need(batch, "contact_label", where, f"float (B,{V}) per-vertex 0/1 contact")
        if label.dim() != 2 or label.shape[1] != V or label.shape[0] != out["contact_logits"].shape[0]:
            raise ValueError(f"DECO.{where}: batch['contact_label'] has shape {tuple(label.shape)}, expected "
                             f"({out['contact_logits'].shape[0]}, {V})")
        losses: dict[str, torch.Tensor] = {}
        for key, n_cls, name in (("scene_seg", hp.num_scene_classes, "sem"), ("part_seg", hp.num_part_classes, "part")):
            seg = _need(batch, key, where, f"uint8 one-hot (B,{n_cls},s,s)")
            if seg.dim() != 4 or seg.shape[1] != n_cls:
                raise ValueError(f"DECO.{where}: batch['{key}'] has shape {tuple(seg.shape)}, expected (B,{n_cls},s,s) one-hot")
            logits = out["scene_logits" if name == "sem" else "part_logits"]
            losses[f"loss_{name}"] = deco_seg_bce(logits, seg, hp.seg_loss_size)

        cl, lt = out["contact_logits"], label.to(out["contact_logits"].dtype)
        valid = batch.get("has_contact_3d")
        if valid is not None:
            keep = torch.as_tensor(valid, device=cl.device).bool().reshape(-1)
            cl, lt = cl[keep], lt[keep]
        losses["loss_cont"] = (F.binary_cross_entropy_with_logits(cl.float(), lt.float()) if cl.numel()
                               else cl.sum() * 0.0)

        total = hp.w_sem * losses["loss_sem"] + hp.w_part * losses["loss_part"] + hp.w_cont * losses["loss_cont"]
        if hp.w_pal > 0:
            losses["loss_pal"] = self.pixel_anchoring_loss(batch, out["contact_logits"], where)
            total = total + hp.w_pal * losses["loss_pal"]
        losses["loss"] = total
        return losses

    def pixel_anchoring_loss(self, batch: dict, contact_logits: torch.Tensor,
                             where: str = "pixel_anchoring_loss") -> torch.Tensor:
        """L_pal: BCE between the rendered predicted contact on the posed GT body and the 2D contact mask.

        The contact logits are rendered (background at logit -100, BCE's reading of the release's
        black background: 100 where the mask is set, 0 elsewhere) and compared with the mask by
        BCE with logits, which equals BCE of the rendered probabilities.
        """
        bm = self.body().to(contact_logits.device)
        mask = _need(batch, "contact_2d", where, "float (B,1,H,W) 2D contact mask")
        pose = _need(batch, "pose", where, "(B,72) SMPL pose")
        shape = _need(batch, "shape", where, "(B,10) SMPL betas")
        transl = _need(batch, "transl", where, "(B,3) translation")
        cam_k = _need(batch, "cam_k", where, "(B,3,3) intrinsics of the resized image")
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"DECO.{where}: batch['contact_2d'] has shape {tuple(mask.shape)}, expected (B,1,H,W)")
        with torch.no_grad():
            verts = bm(pose=pose.float(), betas=shape.float(), transl=transl.float())["vertices"]
        faces = torch.as_tensor(bm.faces, device=contact_logits.device).long()
        H, W = mask.shape[-2:]
        rendered = pixel_anchoring_render(contact_logits.float(), verts, faces, cam_k.float(), H, W, background=_LOG_FLOOR)
        target = mask[:, 0].to(rendered.dtype)
        valid = batch.get("has_contact_2d")
        if valid is not None:
            keep = torch.as_tensor(valid, device=rendered.device).bool().reshape(-1)
            rendered, target = rendered[keep], target[keep]
            if not rendered.numel():
                return contact_logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(rendered, target)

    # ----------------------------------------------------------------- system hooks
    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward and losses of a batch."""
        where = self.where(stage)
        image = _need(batch, "image", where, "float (B,3,H,W) ImageNet-normalised")
        out = self(image)
        return self.compute_losses(batch, out, where=where), out

    def batch_size(self, batch: dict, out: Any) -> int:
        """Images in the batch."""
        return int(out["contact"].shape[0])

    def metric_inputs(self, batch: dict, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(contact probabilities (B, V), contact_label (B, V)) for the contact metrics."""
        return out["contact"], batch["contact_label"]

    def predict_step(self, batch: dict | torch.Tensor, batch_idx: int = 0) -> torch.Tensor:
        """Per-vertex contact probabilities (B,V) for a batch dict (key 'image') or an image tensor."""
        image = batch if isinstance(batch, torch.Tensor) else _need(batch, "image", "predict_step", "float (B,3,H,W)")
        return self(image)["contact"]

    @torch.no_grad()
    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, np.ndarray]]:
        """Predicted vs. ground-truth contact of the first ``n`` images on the template body, 4 views each
        (none without a body model or labels)."""
        if self.hparams.body_model is None or "contact_label" not in batch or "image" not in batch:
            return []
        from zoo.render.viz import contact_views_image

        pred = self(batch["image"][:n])["contact"]
        body = self.body()
        verts = body()["vertices"][0].cpu().numpy()
        faces = body.faces.cpu().numpy()
        names = batch.get("imgname")
        figs = []
        for i in range(pred.shape[0]):
            title = os.path.basename(str(names[i])) if names is not None else f"sample {i}"
            img = contact_views_image(verts, faces, pred[i].float().cpu().numpy(),
                                      batch["contact_label"][i].float().cpu().numpy(),
                                      title=f"{title}: predicted (top) | ground truth (bottom)")
            figs.append((f"contact_{i}", img))
        return figs
