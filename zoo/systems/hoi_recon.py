"""Contact-guided joint reconstruction (InteractVLM §5, official ``optim/cfg/fit.yaml``).

The body comes with the sample; the object mesh is placed by

1. **translation** from the object-mask centroid, on its camera ray, at the mean depth of the body's
   contact vertices (the object touches the body there);
2. **ICP** (10 iterations, no scale) moving the object's contact vertices onto the body's, matching
   position and normals with the body's normals flipped (the two surfaces face each other);
3. **250 Adam steps** on the 6D rotation (lr 5e-2), translation (lr 1e-2) and optionally the scale, of
   E = 5 (1 - IoU(soft silhouette, mask)) + 1e-4 centroid + 10 E_C, where E_C pulls the contact vertices
   of body and object together. PHOSA's terms (depth order, collision, ...) join by giving them a weight.

Where the contacts come from is the ``contacts`` setting:

* ``gt``: the sample's ground-truth contacts (``gt_human_contact`` / ``gt_object_contact``): an oracle, the
  upper bound of contact guidance;
* ``given``: the sample's ``human_contact`` / ``object_contact`` (``contact_*.npy`` files in its folder);
* ``interactvlm``: predicted by an ``interactvlm`` checkpoint (``contact_model: {ckpt: ..., object_names:
  {category: name asked about}}``): its human branch answers "which parts of the body touch the <object>?"
  for the photo; an object contact the sample does not give is taken as the whole object (uniform weights).

A contact set is the vertices whose probability is at least ``contact_threshold`` (0.5); when a body has
none above it, its ``contact_topk`` most likely vertices are used and the sample is counted in
``fallbacks`` (logged as ``<stage>/contact_fallbacks``).
"""
from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import torch

from zoo.body.mesh import vertex_normals
from zoo.core.recipe import ConfigError
from zoo.core.registry import register
from zoo.models.fit.geometry import icp_with_normals, rotation_6d_to_matrix
from zoo.systems.hoi_fit import ObjectFit

__all__ = ["HOIRecon", "contact_set"]


def contact_set(probs: torch.Tensor, threshold: float, topk: int) -> tuple[torch.Tensor, bool]:
    """(vertex ids with ``probs >= threshold``, whether the top-k fallback was used)."""
    ids = torch.nonzero(probs >= threshold, as_tuple=True)[0]
    if ids.numel() > 0:
        return ids, False
    k = min(int(topk), probs.numel())
    return torch.topk(probs, k).indices, True


@register("system", "hoi_recon")
class HOIRecon(ObjectFit):
    """Contact-guided object placement (module docstring); arguments of :class:`zoo.systems.hoi_fit.ObjectFit`
    plus:

    Args:
        contacts: ``gt`` | ``given`` | ``interactvlm`` (module docstring).
        contact_model: for ``interactvlm``: ``{ckpt: export dir / .ckpt / registry name, object_names: {...}}``.
        icp_iters: ICP iterations of the initialisation (official 10; 0 skips it).
        contact_threshold, object_contact_threshold, contact_topk: the contact sets of the initialisation are
            the body vertices with probability >= 0.5 and the object vertices > 0.3 (the release's thresholds;
            the top-k most likely when none passes). E_C weighs every pair by the body's probability and the
            object's probability zeroed at <= 0.3, as the release.
        iou_union: ``iou`` (true soft IoU, as the paper writes E_M) or ``sum`` (the release's 1 - sum(sm) /
            sum(s + m), for which its weight 5 was tuned).
        occlusion_aware: leave the person's pixels out of the IoU (as PHOSA's silhouette loss does); the release
            compares the whole silhouette with the visible mask, which pushes the object out from behind the
            hand holding it.
        init_scale: the object's starting scale (``prior``: the category prior's mean, else 1).
    """

    STAGES: ClassVar[tuple[str, ...]] = ("fit",)

    def __init__(
        self,
        silhouette: dict,
        loss_weights: dict[str, float],
        stages: list[dict],
        metrics: list[dict],
        contacts: Literal["gt", "given", "interactvlm"] = "gt",
        contact_model: dict | None = None,
        icp_iters: int = 10,
        contact_threshold: float = 0.5,
        object_contact_threshold: float = 0.3,
        contact_topk: int = 20,
        iou_union: Literal["iou", "sum"] = "iou",
        occlusion_aware: bool = False,
        init_scale: float | str = "prior",
        priors: dict | None = None,
        check_watertight: bool = True,
        seed: int = 0,
        progress: bool = False,
        write: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if contacts not in ("gt", "given", "interactvlm"):
            raise ConfigError(("contacts",), f"must be gt, given or interactvlm, got {contacts!r}")
        if contacts == "interactvlm" and not (contact_model or {}).get("ckpt"):
            raise ConfigError(("contact_model", "ckpt"), "contacts=interactvlm needs an interactvlm checkpoint (an "
                                                         "export directory, .ckpt or registry name)")
        self.fallbacks = 0
        self._vlm = None

    # ----------------------------------------------------------------- contacts
    def _contact_model(self):
        if self._vlm is None:
            from zoo.core import hub

            self._vlm = hub.load(str(self.hparams.contact_model["ckpt"]))
            self._vlm.eval()
        return self._vlm

    def predicted_human_contact(self, sample: dict) -> torch.Tensor:
        """The interactvlm checkpoint's human contact for the sample's photo and object category (V,)."""
        model = self._contact_model()
        names = dict(self.hparams.contact_model.get("object_names") or {})
        obj = names.get(str(sample.get("category")), str(sample.get("category")))
        with torch.no_grad():
            ans = model.answer_images([sample["image"].cpu().numpy()], objects=[obj], branch="human")[0]
        V = sample["body_verts"].shape[0]
        if ans["scores"] is None:
            warnings.warn(f"hoi_recon: the interactvlm answer for {sample.get('name')} has no contact token "
                          f"({ans['answer']!r}): no predicted contact", stacklevel=2)
            return torch.zeros(V)
        scores = ans["scores"].float()
        if scores.numel() != V:
            raise ValueError(f"hoi_recon: the interactvlm checkpoint predicts {scores.numel()} body vertices, the "
                             f"body of {sample.get('name')} has {V} (a different body model)")
        return scores

    def contacts(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(human (V,), object (M,)) contact weights from the configured source (cached per sample)."""
        if "_contacts" in sample:
            return sample["_contacts"]
        src = self.hparams.contacts
        M = sample["object_verts"].shape[0]
        if src == "gt":
            missing = [k for k in ("gt_human_contact", "gt_object_contact") if k not in sample]
            if missing:
                raise ValueError(f"hoi_recon: contacts=gt but sample {sample.get('name')} ({sample.get('dir')}) has "
                                 f"no {' / '.join(missing)} (gt.json human_contact / object_contact)")
            hc, oc = sample["gt_human_contact"].float(), sample["gt_object_contact"].float()
        elif src == "given":
            if "human_contact" not in sample:
                raise ValueError(f"hoi_recon: contacts=given but sample {sample.get('name')} ({sample.get('dir')}) "
                                 f"has no contact_human.npy")
            hc = sample["human_contact"].float()
            oc = sample["object_contact"].float() if "object_contact" in sample else torch.ones(M)
        else:
            hc = self.predicted_human_contact(sample)
            oc = sample["object_contact"].float() if "object_contact" in sample else torch.ones(M)
        k = int(self.hparams.contact_topk)
        hid, fb_h = contact_set(hc, float(self.hparams.contact_threshold), k)
        oid, fb_o = contact_set(oc, float(self.hparams.object_contact_threshold) + 1e-12, k)
        if fb_h or fb_o:
            self.fallbacks += 1
        ow = torch.where(oc > float(self.hparams.object_contact_threshold), oc, torch.zeros_like(oc))
        if fb_o:
            ow[oid] = 1.0
        sample["_contact_sets"] = (hid, oid)
        sample["_contacts"] = (hc, ow)
        sample["_contact_probs"] = (hc, oc)
        return hc, ow

    # ----------------------------------------------------------------- initialisation
    def initial_state(self, sample: dict, index: int) -> dict[str, torch.Tensor]:
        """Mask-centroid translation at the contact depth, then ICP of the contact vertices."""
        self.prepare(sample)
        self.contacts(sample)
        hid, oid = sample["_contact_sets"]
        sp = self.prior(sample.get("category")).get("scale") or {}
        s0 = float(sp.get("mean", 1.0)) if self.hparams.init_scale == "prior" else float(self.hparams.init_scale)
        hv = sample["body_verts"].float()
        depth = float(hv[hid, 2].mean())
        t0 = self.translation_from_mask(sample, depth)
        R0 = torch.eye(3)
        state = self.pose_state(R0, t0, s0)
        iters = int(self.hparams.icp_iters)
        if iters > 0:
            ov = self.place(state, sample)
            on = vertex_normals(ov, sample["object_faces"].long())
            hn = vertex_normals(hv, sample["body_faces"].long())
            R, t = icp_with_normals(ov[oid], on[oid], hv[hid], hn[hid], iters=iters, flip_dst_normals=True)
            R_all = R @ rotation_6d_to_matrix(state["rot6d"])
            state = self.pose_state(R_all, R @ t0 + t, s0)
        return state

    def _eval_epoch_end(self, stage: str) -> None:
        self.log(f"{stage}/contact_fallbacks", float(self.fallbacks))
        self.fallbacks = 0
        super()._eval_epoch_end(stage)

    def result(self, state: dict[str, torch.Tensor], sample: dict) -> dict[str, Any]:
        """The ObjectFit result plus the contact probabilities used."""
        out = super().result(state, sample)
        if "_contact_probs" in sample:
            out["human_contact"], out["object_contact"] = sample["_contact_probs"]
        return out
