"""Placing an object next to a body from one image: the part PHOSA and contact-guided fitting share.

:class:`ObjectFit` is a :class:`zoo.systems.fitting.FittingSystem` whose state is one object's pose —
a 6D rotation (``rot6d``, pytorch3d's row convention), a translation in the camera frame and a scale —
and whose objective is a weighted sum of terms, each computed only when its weight is non-zero:

=============  ==========================================================================================
term           what (zoo.models.fit.losses / collision)
=============  ==========================================================================================
sil            PHOSA's occlusion-aware silhouette L2: pixels of the person (who may hide the object) ignored
iou            1 - soft IoU of the object silhouette and its mask (InteractVLM's E_M)
centroid       squared pixel distance of the silhouette's and the mask's centroids (InteractVLM)
depth          PHOSA's depth-ordinal term: where the masks say person / object is in front, the renders agree
inter          PHOSA's interaction term: object and person centroids pulled together when their boxes overlap
inter_part     PHOSA's part interaction: a person part (hands, ...) and the object pulled together
scale          the category's scale prior
collision      object vertices inside the body / body vertices inside the object pushed out (libigl winding
               numbers; PHOSA's release names this weight but never computes the term)
contact        InteractVLM's E_C between the body's and the object's contact vertices
=============  ==========================================================================================

Silhouettes come from the ``silhouette`` renderer sub-recipe (``soft_silhouette``: ``backend: cpu_fast`` or
``pytorch3d``) at its ``image_size`` (the longer side; the image's aspect ratio is kept), with the image's
intrinsics rescaled to it. Per-category scale priors and part pairs come from the recipe (``priors:``).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from zoo.body.mesh import PART_GROUPS, SMPL_PART_NAMES
from zoo.core.recipe import ConfigError
from zoo.models.fit import losses as L
from zoo.models.fit.collision import check_watertight, collision_loss
from zoo.models.fit.geometry import apply_pose, matrix_to_rotation_6d, rotation_6d_to_matrix
from zoo.render.cameras import project_opencv
from zoo.render.raster import rasterize
from zoo.render.silhouette import depth_map, scale_intrinsics
from zoo.systems.fitting import FittingSystem

__all__ = ["ObjectFit", "TERMS"]

TERMS = ("sil", "iou", "centroid", "depth", "inter", "inter_part", "scale", "collision", "contact")


def _resize_mask(mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A bool (H, W) mask at another size by area averaging (> 0.5 inside)."""
    m = mask.float()[None, None]
    if tuple(m.shape[-2:]) == hw:
        return mask.bool()
    return F.interpolate(m, size=hw, mode="area")[0, 0] > 0.5


def part_vertex_ids(labels: torch.Tensor, parts: list[str], where: str) -> torch.Tensor:
    """Vertex ids of named body parts: SMPL part names (``left_hand``) or zoo part groups (``hands``)."""
    ids = []
    for p in parts:
        if p in PART_GROUPS:
            ids += list(PART_GROUPS[p][0])
        elif p in SMPL_PART_NAMES:
            ids.append(SMPL_PART_NAMES.index(p))
        else:
            raise ValueError(f"{where}: unknown body part '{p}' (SMPL parts {', '.join(SMPL_PART_NAMES)}; groups "
                              f"{', '.join(PART_GROUPS)})")
    return torch.nonzero(torch.isin(labels, torch.tensor(ids)), as_tuple=True)[0]


class ObjectFit(FittingSystem):
    """Object pose (rot6d, translation, scale) against masks, depth order, priors and contacts (module docstring).

    Args (shared by PHOSA and hoi_recon):
        silhouette: `renderer` sub-recipe of the soft silhouettes (soft_silhouette).
        loss_weights: weight per term of :data:`TERMS` (0 or absent: not computed).
        priors: per category ``{scale: {mean, std}, parts: [{human: [part, ...], object: all | [vertex ids]}]}``;
            the entry ``default`` applies to categories without their own.
        stages: optimisation stages (zoo.systems.fitting).
        metrics: registered reconstruction metrics (zoo.metrics.reconstruction).
        check_watertight: refuse (with the file named) object meshes that are not closed when ``collision``
            is weighted (the inside test needs a closed surface).
        seed: seeds each sample's random initialisation (with the sample's index in its batch).
        progress: a progress bar over each batch's optimisation steps.
        write: write each scene's outputs when a run directory is set (predict / reconstruct).
    """

    STATE: ClassVar[tuple[str, ...]] = ("rot6d", "translation", "scale")
    subcomponents: ClassVar[dict[str, Any]] = {"silhouette": "renderer", "metrics": "metric"}

    def check_common(self) -> None:
        """Recipe checks shared by the object-fitting systems."""
        name = type(self).__name__
        w = dict(self.hparams.get("loss_weights") or {})
        bad = sorted(set(w) - set(TERMS))
        if bad:
            raise ConfigError(("loss_weights",), f"{name}: unknown term(s) {', '.join(bad)} (terms: {', '.join(TERMS)})")
        for k, v in w.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0:
                raise ConfigError(("loss_weights", k), f"must be a number >= 0, got {v!r}")
        self.stage_list()

    def build(self) -> None:
        """The silhouette renderer."""
        self.check_common()
        self.silhouette = self.build_part("silhouette")

    @property
    def weights_(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.hparams.get("loss_weights") or {}).items() if v}

    def prior(self, category: str | None) -> dict:
        """The recipe's priors for a category (else its ``default`` entry, else none)."""
        priors = dict(self.hparams.get("priors") or {})
        return dict(priors.get(str(category)) or priors.get("default") or {})

    # ----------------------------------------------------------------- per-sample preparation
    def prepare(self, sample: dict) -> dict:
        """Everything the objective needs that does not change while fitting (cached in ``sample['_fit']``)."""
        if "_fit" in sample:
            return sample["_fit"]
        H, W = (int(x) for x in sample["image_size"])
        hw = self.silhouette.raster_size((H, W))
        K = scale_intrinsics(sample["K"].float(), (H, W), hw)
        obj = _resize_mask(sample["object_mask"], hw)
        hum = _resize_mask(sample["human_mask"], hw) & ~obj
        keep = obj.float() - hum.float()  # 1 object, -1 person (may hide the object: ignored), 0 background
        w = self.weights_
        fit: dict[str, Any] = {"hw": hw, "K": K, "mask": obj.float(), "keep": keep, "human_mask": hum}
        bv, bf = sample["body_verts"].float(), sample["body_faces"].long()
        if "depth" in w:
            fit["human_depth"], _ = depth_map(bv[None], bf, K, hw)
            fit["human_depth"] = fit["human_depth"][0].detach()
        if "inter_part" in w:
            pairs = []
            for i, p in enumerate(self.prior(sample.get("category")).get("parts") or []):
                where = f"{type(self).__name__}: priors.{sample.get('category')}.parts[{i}]"
                hid = part_vertex_ids(sample["body_part_labels"], list(p.get("human") or []), where)
                o = p.get("object", "all")
                oid = torch.arange(sample["object_verts"].shape[0]) if o == "all" else torch.as_tensor(o).long()
                pairs.append((hid, oid))
            fit["pairs"] = pairs
        if "collision" in w and self.hparams.get("check_watertight", True):
            check_watertight(sample["object_verts"], sample["object_faces"],
                             f"the object mesh of {sample.get('name')} ({sample.get('dir')})")
        sample["_fit"] = fit
        return fit

    # ----------------------------------------------------------------- the object
    def place(self, state: dict[str, torch.Tensor], sample: dict) -> torch.Tensor:
        """The object's vertices in the camera frame for the state (batched when the state is)."""
        R = rotation_6d_to_matrix(state["rot6d"])
        return apply_pose(sample["object_verts"].float(), R, state["translation"], state["scale"])

    def translation_from_mask(self, sample: dict, depth: float) -> torch.Tensor:
        """The camera-frame point on the object-mask centroid's ray at ``depth`` (InteractVLM's initialisation)."""
        m = sample["object_mask"].float()
        if m.sum() == 0:
            raise ValueError(f"{type(self).__name__}: the object mask of {sample.get('name')} is empty")
        rows, cols = torch.nonzero(m, as_tuple=True)
        u, v = cols.float().mean() + 0.5, rows.float().mean() + 0.5
        K = sample["K"].float()
        x = (u - K[0, 2]) / K[0, 0]
        y = (v - K[1, 2]) / K[1, 1]
        return torch.stack([x * depth, y * depth, torch.tensor(float(depth))])

    def depth_from_mask(self, sample: dict, scale: float) -> float:
        """PHOSA's depth guess: the object's size over its mask's size times the focal length."""
        m = sample["object_mask"]
        rows, cols = torch.nonzero(m, as_tuple=True)
        if rows.numel() == 0:
            raise ValueError(f"{type(self).__name__}: the object mask of {sample.get('name')} is empty")
        box = max(float(rows.max() - rows.min() + 1), float(cols.max() - cols.min() + 1))
        v = sample["object_verts"].float()
        size = float((v.max(0).values - v.min(0).values).max()) * scale
        f = float(sample["K"][0, 0] + sample["K"][1, 1]) / 2
        return max(f * size / box, 1e-2)

    def pose_state(self, R: torch.Tensor, t: torch.Tensor, s: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """A state tensor dict from a rotation matrix, translation and scale."""
        return {"rot6d": matrix_to_rotation_6d(R.float()).clone(), "translation": t.float().clone(),
                "scale": torch.as_tensor(s, dtype=torch.float32).reshape(()).clone()}

    # ----------------------------------------------------------------- the objective
    def terms(self, state: dict[str, torch.Tensor], sample: dict) -> dict[str, torch.Tensor]:
        """The unweighted terms with a non-zero weight for one sample (module docstring)."""
        fit = self.prepare(sample)
        w = self.weights_
        verts = self.place(state, sample)
        faces = sample["object_faces"].long()
        out: dict[str, torch.Tensor] = {}
        need_sil = any(k in w for k in ("sil", "iou", "centroid"))
        if need_sil:
            sil = self.silhouette(verts[None], faces, fit["K"], fit["hw"])[0]
            if "sil" in w:
                out["sil"] = L.silhouette_loss(sil, fit["keep"])
            if "iou" in w:
                # occlusion_aware: pixels of the person, who may hide the object, count for neither set
                s_iou = sil * (fit["keep"] >= 0) if self.hparams.get("occlusion_aware") else sil
                out["iou"] = L.soft_iou_loss(s_iou, fit["mask"], union=str(self.hparams.get("iou_union", "iou")))
            if "centroid" in w:
                out["centroid"] = L.centroid_loss(sil, fit["mask"], target="bbox")
        if "depth" in w:
            od, _ = depth_map(verts[None], faces, fit["K"], fit["hw"])
            out["depth"] = L.depth_ordinal_loss(fit["human_depth"], od[0], fit["human_mask"], fit["mask"] > 0)
        hv = sample["body_verts"].float()
        K = sample["K"].float()
        inter = self.prior(sample.get("category")).get("interaction") or {}
        z_thr = float(inter.get("z_threshold", 1.0))
        if "inter" in w:
            parts = None
            if inter.get("parts"):
                where = f"{type(self).__name__}: priors.{sample.get('category')}.interaction.parts"
                parts = [part_vertex_ids(sample["body_part_labels"], [p], where) for p in inter["parts"]]
            out["inter"] = L.interaction_loss(hv, verts, K, parts, float(inter.get("expansion", 0.0)), z_thr)
        if "inter_part" in w:
            out["inter_part"] = (L.part_interaction_loss(hv, verts, fit["pairs"], K,
                                                         float(inter.get("part_expansion", 0.0)), z_thr)
                                 if fit["pairs"] else verts.sum() * 0.0)
        if "scale" in w:
            sp = self.prior(sample.get("category")).get("scale") or {}
            out["scale"] = (L.scale_prior_loss(state["scale"], float(sp.get("mean", 1.0)), sp.get("std"))
                            if sp else state["scale"] * 0.0)
        if "collision" in w:
            out["collision"] = collision_loss(hv, sample["body_faces"].long(), verts, faces)
        if "contact" in w:
            hc, oc = self.contacts(sample)
            hi, oi = torch.nonzero(hc > 0, as_tuple=True)[0], torch.nonzero(oc > 0, as_tuple=True)[0]
            # pairs with a zero weight add nothing to either sum: only the weighted vertices are compared
            out["contact"] = L.contact_loss(hv[hi], hc[hi], verts[oi], oc[oi])
        return out

    def contacts(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(human (V,), object (M,)) contact weights the contact term uses (subclasses choose the source)."""
        return sample["human_contact"].float(), sample["object_contact"].float()

    def objective(self, state: dict[str, torch.Tensor], sample: dict, stage: str) -> dict[str, torch.Tensor]:
        """The weighted sum of :meth:`terms` (as ``loss``) and each term."""
        w = self.weights_
        t = self.terms(state, sample)
        total = sum((w[k] * v for k, v in t.items()), torch.zeros(()))
        return {"loss": total, **t}

    def result(self, state: dict[str, torch.Tensor], sample: dict) -> dict[str, Any]:
        """Pose, placed object, body and the placed object's hard mask at the image size."""
        verts = self.place(state, sample).detach()
        faces = sample["object_faces"].long()
        H, W = (int(x) for x in sample["image_size"])
        frags = rasterize(project_opencv(verts, sample["K"].float()), faces, H, W)
        return {
            "R": rotation_6d_to_matrix(state["rot6d"]).detach(), "t": state["translation"].detach().clone(),
            "scale": state["scale"].detach().clone(), "object_verts": verts, "object_faces": faces,
            "body_verts": sample["body_verts"].float(), "body_faces": sample["body_faces"].long(),
            "object_silhouette": frags.pix_to_face >= 0,
        }

