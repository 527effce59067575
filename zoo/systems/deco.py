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
compares it with the 2D contact mask by BCE.

Batch keys (from the ``damon`` DataModule): ``image`` (B,3,H,W) ImageNet-normalised,
``contact_label`` (B,V), ``scene_seg`` (B,133,s,s) and ``part_seg`` (B,26,s,s) one-hot,
``contact_2d`` (B,1,H,W), ``pose`` (B,72), ``shape`` (B,10), ``transl`` (B,3), ``cam_k``
(B,3,3) (intrinsics of the resized image). Optional ``has_contact_3d`` (B,) masks samples
out of L_cont and ``has_contact_2d`` (B,) out of L_pal, as in the official trainer.

Differences from the release, on purpose: one Adam over all parameters (the release
steps three Adams that share the encoders, so encoder weights move up to three times per
batch); logits instead of probabilities are kept inside the modules for numerical
stability (same loss values).
"""
from __future__ import annotations

import os
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.registry import register
from zoo.models.backbone.timm_backbone import TimmBackbone
from zoo.models.heads.deco import ContactClassifier, CrossAttention, SegDecoder
from zoo.systems.common import BatchKeyError, EvalMetricsMixin, need

__all__ = ["DECO", "TINY_DECO", "BatchKeyError", "deco_seg_bce", "pixel_anchoring_render"]

# The tiny CPU configuration (same code, small widths): timm's 0.1 M-parameter
# `test_byobnet` at its 1/16 level (128 channels, projected to 64), a one-layer decoder and
# a narrow classifier. Used by the demo recipe and the tests; `DECO(**TINY_DECO)`.
# A 256x256 training step at batch 8 takes about 0.25 s on 2 idle CPU cores
# (test_resnet, 0.49 GFLOP/image, about 0.5 s; resnet10t several seconds).
TINY_DECO: dict[str, Any] = dict(
    backbone="test_byobnet",
    backbone_out_indices=[3],
    feat_dim=64,
    classifier_hidden=256,
    decoder_upsample=1,
    seg_loss_size=32,
    lr=1e-3,
    weight_decay=0.0,
)


def deco_seg_bce(logits: torch.Tensor, onehot: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """DECO's segmentation loss: BCE(softmax(logits), one-hot) averaged over every element.

    ``logits`` (B,C,h,w) are resized bilinearly to the label size (or both to ``size`` when
    given: labels by nearest neighbour, so they stay one-hot).
    """
    target = onehot.to(logits.dtype)
    if size is not None and target.shape[-2:] != (size, size):
        target = F.interpolate(target, size=(size, size), mode="nearest")
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    # the release applies BCE to softmax probabilities; BCELoss clamps log at -100 the same way
    return F.binary_cross_entropy(torch.softmax(logits, dim=1), target)


def pixel_anchoring_render(contact: torch.Tensor, verts_cam: torch.Tensor, faces: torch.Tensor, cam_k: torch.Tensor,
                           H: int, W: int) -> torch.Tensor:
    """Render per-vertex contact probabilities of posed bodies into (B,H,W) images (0 on background).

    Each pixel takes the contact value of the first vertex of its visible face, as the
    release's face texture does; gradients flow to ``contact`` only (the body is ground
    truth).
    """
    from zoo.render.raster import project_opencv, rasterize

    out = []
    for b in range(contact.shape[0]):
        screen = project_opencv(verts_cam[b].detach(), cam_k[b].to(verts_cam.dtype))
        frags = rasterize(screen, faces, H, W)
        face_vert = faces[frags.pix_to_face.clamp(min=0), 0]  # (H,W)
        img = contact[b][face_vert] * (frags.pix_to_face >= 0).to(contact.dtype)
        out.append(img)
    return torch.stack(out, 0)


def _need(batch: dict, key: str, where: str, expected: str) -> Any:
    return need(batch, key, "DECO", where, expected)


@register("system", "deco")
class DECO(EvalMetricsMixin, L.LightningModule):
    """DECO contact estimator as a LightningModule (see module docstring).

    Args:
        backbone: timm model name for both encoders ("hrnet_w32" as released;
            "resnet50", "test_resnet", ... work too).
        backbone_weights: local pretrained-weights file loaded into both encoders.
        backbone_out_indices: timm feature levels to concatenate (None: all at stride >= 4).
        feat_dim: encoder output width (480 for HRNet-W32; other widths get a 1x1 projection).
        classifier_hidden: hidden width of the contact classifier (4096 released).
        num_vertices, num_scene_classes, num_part_classes: output sizes.
        decoder_upsample: stride-2 transposed convs per segmentation decoder (2 released).
        shared_cross_attn: use one attention block both ways, as the released code does.
        w_sem, w_part, w_cont, w_pal: loss weights.
        seg_loss_size: compute L_sem/L_part at this square size (labels resized by nearest)
            instead of the label size; saves time in tiny configurations.
        lr, weight_decay: Adam settings.
        contact_threshold: probability at which a vertex counts as in contact (metrics).
        geodesic_cache: .npy (V,V) geodesic matrix (metres) for the geodesic metric.
        body_model_dir, body_model_type: body model for L_pal (and the geodesic matrix when
            no cache is given).
    """

    def __init__(
        self,
        backbone: str = "hrnet_w32",
        backbone_weights: str | None = None,
        backbone_out_indices: list[int] | None = None,
        feat_dim: int = 480,
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
        lr: float = 5e-5,
        weight_decay: float = 1e-4,
        contact_threshold: float = 0.5,
        geodesic_cache: str | None = None,
        body_model_dir: str | None = None,
        body_model_type: str = "smpl",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if w_pal < 0 or w_sem < 0 or w_part < 0 or w_cont < 0:
            raise ValueError(f"DECO: loss weights must be >= 0, got w_sem={w_sem}, w_part={w_part}, "
                             f"w_cont={w_cont}, w_pal={w_pal}")
        enc = dict(name=backbone, weights=backbone_weights, out_indices=backbone_out_indices, out_channels=feat_dim)
        self.encoder_sem = TimmBackbone(**enc)
        self.encoder_part = TimmBackbone(**enc)
        self.decoder_sem = SegDecoder(feat_dim, num_scene_classes, decoder_upsample)
        self.decoder_part = SegDecoder(feat_dim, num_part_classes, decoder_upsample)
        self.cross_att = CrossAttention(feat_dim, shared=shared_cross_attn)
        self.classif = ContactClassifier(feat_dim, classifier_hidden, num_vertices)

        from zoo.metrics.contact import ContactPRF

        self.val_metric = ContactPRF(contact_threshold)
        self.test_metric = ContactPRF(contact_threshold)
        self.val_geo = self.test_geo = None
        geo = self._geodesic_matrix()
        if geo is not None:
            from zoo.metrics.contact import GeodesicError

            self.val_geo = GeodesicError(geo, contact_threshold)
            self.test_geo = GeodesicError(geo, contact_threshold)
        if w_pal > 0:
            self._get_body_model()  # fail at construction, not at the first step

    # ----------------------------------------------------------------- setup helpers
    def _load_body_model(self) -> nn.Module:
        hp = self.hparams
        if hp.body_model_dir is None:
            raise ValueError("DECO: w_pal > 0 needs body_model_dir (the folder holding the SMPL model files, "
                             "e.g. one written by tools/make_synthetic.py)")
        from zoo.body.model import BodyModel

        return BodyModel(hp.body_model_dir, model_type=hp.body_model_type)

    def _geodesic_matrix(self) -> Any:
        """The geodesic matrix for the metric: the cache file if it exists, else computed from the body model
        (and written to ``geodesic_cache`` when that path is given), else None (metric off)."""
        hp = self.hparams
        if hp.geodesic_cache is not None and (os.path.isfile(hp.geodesic_cache) or hp.body_model_dir is None):
            return hp.geodesic_cache  # GeodesicError loads and checks the file (and names it if missing)
        if hp.body_model_dir is None:
            return None
        from zoo.body.mesh import geodesic_distances

        bm = self._get_body_model()
        geo = geodesic_distances(bm.v_template.detach().cpu().numpy(), bm.faces.cpu().numpy())
        if hp.geodesic_cache is not None:
            os.makedirs(os.path.dirname(os.path.abspath(hp.geodesic_cache)), exist_ok=True)
            np.save(hp.geodesic_cache, geo)
        return geo

    def _get_body_model(self) -> nn.Module:
        # kept out of the module tree (plain __dict__ entry) so the SMPL buffers never enter
        # DECO's state_dict or checkpoints
        if self.__dict__.get("_body_model_obj") is None:
            self.__dict__["_body_model_obj"] = self._load_body_model()
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
        losses["loss_cont"] = (F.binary_cross_entropy_with_logits(cl, lt) if cl.numel() else cl.sum() * 0.0)

        total = hp.w_sem * losses["loss_sem"] + hp.w_part * losses["loss_part"] + hp.w_cont * losses["loss_cont"]
        if hp.w_pal > 0:
            losses["loss_pal"] = self.pixel_anchoring_loss(batch, out["contact"], where)
            total = total + hp.w_pal * losses["loss_pal"]
        losses["loss"] = total
        return losses

    def pixel_anchoring_loss(self, batch: dict, contact: torch.Tensor, where: str = "pixel_anchoring_loss") -> torch.Tensor:
        """L_pal: BCE between the rendered predicted contact on the posed GT body and the 2D contact mask."""
        bm = self._get_body_model().to(contact.device)
        mask = _need(batch, "contact_2d", where, "float (B,1,H,W) 2D contact mask")
        pose = _need(batch, "pose", where, "(B,72) SMPL pose")
        shape = _need(batch, "shape", where, "(B,10) SMPL betas")
        transl = _need(batch, "transl", where, "(B,3) translation")
        cam_k = _need(batch, "cam_k", where, "(B,3,3) intrinsics of the resized image")
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"DECO.{where}: batch['contact_2d'] has shape {tuple(mask.shape)}, expected (B,1,H,W)")
        with torch.no_grad():
            verts = bm(pose=pose.float(), betas=shape.float(), transl=transl.float())["vertices"]
        faces = torch.as_tensor(bm.faces, device=contact.device).long()
        H, W = mask.shape[-2:]
        rendered = pixel_anchoring_render(contact, verts, faces, cam_k.float(), H, W)
        target = mask[:, 0].to(rendered.dtype)
        valid = batch.get("has_contact_2d")
        if valid is not None:
            keep = torch.as_tensor(valid, device=rendered.device).bool().reshape(-1)
            rendered, target = rendered[keep], target[keep]
            if not rendered.numel():
                return contact.sum() * 0.0
        return F.binary_cross_entropy(rendered.clamp(0.0, 1.0), target)

    # ----------------------------------------------------------------- lightning hooks
    def _shared_step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        where = {"train": "training_step", "val": "validation_step"}.get(stage, f"{stage}_step")
        image = _need(batch, "image", where, "float (B,3,H,W) ImageNet-normalised")
        out = self(image)
        losses = self.compute_losses(batch, out, where=where)
        on_step = stage == "train"
        bs = image.shape[0]
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=bs, sync_dist=not on_step)
        for k, v in losses.items():
            if k != "loss":
                self.log(f"{stage}/{k}", v, on_step=on_step, on_epoch=not on_step, batch_size=bs, sync_dist=not on_step)
        return losses, out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; logs train/loss and its terms."""
        return self._shared_step(batch, "train")[0]["loss"]

    def eval_outputs(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logs the stage's losses; (contact (B,V), contact_label) for val/precision, recall, f1 (and geodesic errors)."""
        _, out = self._shared_step(batch, stage)
        return out["contact"], batch["contact_label"]

    def predict_step(self, batch: dict | torch.Tensor, batch_idx: int = 0) -> torch.Tensor:
        """Per-vertex contact probabilities (B,V) for a batch dict (key 'image') or an image tensor."""
        image = batch if isinstance(batch, torch.Tensor) else _need(batch, "image", "predict_step", "float (B,3,H,W)")
        return self(image)["contact"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam(lr, weight_decay) over all parameters, as DECO."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
