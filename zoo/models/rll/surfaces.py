"""Surfaces of Render-Localize-Lift: the body mesh (human contact) and object point clouds (affordance).

A surface renders its views with a registered multi-view renderer, hands the pipeline images, lift
maps and image embeddings, turns per-element labels into per-view 2D targets (-1 on background,
which the 2D losses ignore), says which elements the 3D loss sees, and draws figures. Recipes pick
one by name (``surface: {name: body, ...}``) from :data:`SURFACES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zoo.core import registry
from zoo.core.batch import need
from zoo.core.interfaces import ViewRenderer, missing_methods

__all__ = ["Surface", "BodySurface", "CloudSurface", "SurfaceViews", "SURFACES"]

BACKGROUND = -1.0  # 2D target value of pixels no element covers (ignored by the 2D losses)


@dataclass
class SurfaceViews:
    """What the localizer sees: images (S, V, 3, H, W), one lift map per image set (S of them), and the image
    embeddings (S * V, C, h, w). S is 1 for a shared surface (the same views for every sample), else B."""

    images: torch.Tensor
    lifts: list
    embeddings: torch.Tensor
    shared: bool


class Surface(nn.Module):
    """Base of the surfaces: the renderer, the label key, and the interface the pipeline uses."""

    subcomponents: ClassVar[dict[str, Any]] = {"renderer": "renderer"}
    shared: ClassVar[bool] = False

    def __init__(self, renderer: dict, label_key: str) -> None:
        super().__init__()
        self.renderer = registry.build("renderer", renderer)
        missing = missing_methods(type(self.renderer), ViewRenderer)
        if missing:
            raise ValueError(f"{type(self).__name__}: renderer '{renderer.get('name')}' cannot serve Render-Localize-"
                             f"Lift: it lacks {', '.join(missing)} (a fixed-view renderer with lift maps, e.g. multiview)")
        self.label_key = label_key
        self.owner = type(self).__name__
        self._cache: dict[str, Any] = {}  # renders, lift maps, embeddings: rebuilt when cleared

    @property
    def num_views(self) -> int:
        """Views per image set."""
        return int(self.renderer.num_views)

    def camera_numbers(self) -> torch.Tensor:
        """(V, 5) camera numbers of the views (the lifter's input)."""
        return self.renderer.camera_numbers()

    def labels(self, batch: dict, lifts: list, where: str) -> torch.Tensor:
        """Per-element labels (B, N) from ``batch[label_key]``, checked against the lift maps."""
        label = need(batch, self.label_key, self.owner, where, "float (B, N) per-element labels in [0, 1]").float()
        n = lifts[0].num_elems
        if label.dim() != 2 or label.shape[1] != n:
            raise ValueError(f"{self.owner}.{where}: batch['{self.label_key}'] has shape {tuple(label.shape)}, expected "
                             f"(B, {n}) for the rendered {self.what}")
        return label

    def cache_clear(self) -> None:
        """Forget cached renders and embeddings (they are rebuilt on the next call)."""
        self._cache.clear()


class BodySurface(Surface):
    """A body mesh in InteractVLM's canonical pose, seen from the same views in every sample.

    Args:
        renderer: multi-view renderer sub-recipe (e.g. ``{name: multiview, view_set: body, image_size: 1024}``).
        body_model: body-model sub-recipe (SMPL / SMPL-H / SMPL-X); kept out of the module tree, so
            licensed model data never enters a checkpoint.
        hip_deg: the canonical pose's hip spread about z (InteractVLM: 30).
        label_key: batch key of the per-vertex labels (B, V).
        mask_min_vertices: the 2D targets' rule. k = 1, 2 or 3: a pixel is 1 when at least k of
            its face's vertices are in contact (label > 0), else 0 -- InteractVLM's rule, k = 3 for
            the paper's model, k = 2 for the released DAMON model (FIX.md "mv2"). None: the label
            of the face's vertex with the largest barycentric weight (the zoo's earlier rule).

    The views, lift map and (with a frozen image encoder) the embeddings are computed once; the
    renderer also keeps the lift map on disk.
    """

    subcomponents: ClassVar[dict[str, Any]] = {"renderer": "renderer", "body_model": "body_model"}
    shared: ClassVar[bool] = True
    what = "body"

    def __init__(self, renderer: dict, body_model: dict, hip_deg: float = 30.0,
                 label_key: str = "contact_label", mask_min_vertices: int | None = 3) -> None:
        super().__init__(renderer, label_key)
        if mask_min_vertices is not None and (isinstance(mask_min_vertices, bool) or mask_min_vertices not in (1, 2, 3)):
            raise ValueError(f"BodySurface: mask_min_vertices must be 1, 2, 3 or null, got {mask_min_vertices!r}")
        self.body_model_cfg = dict(body_model)
        self.hip_deg = float(hip_deg)
        self.mask_min_vertices = None if mask_min_vertices is None else int(mask_min_vertices)

    def body(self) -> nn.Module:
        """The body model (built on first use)."""
        if "body" not in self._cache:
            self._cache["body"] = registry.build("body_model", self.body_model_cfg)
        return self._cache["body"]

    def canonical(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices (Nv, 3) and faces (F, 3) of the body in the canonical pose."""
        if "mesh" not in self._cache:
            from zoo.body.canonical import canonical_body

            self._cache["mesh"] = canonical_body(self.body(), hip_deg=self.hip_deg)
        return self._cache["mesh"]

    def batch_size(self, batch: dict, where: str) -> int:
        """Samples in the batch (from the label key)."""
        return int(need(batch, self.label_key, self.owner, where, "(B, V) per-vertex labels").shape[0])

    def views(self, batch: dict, localizer: Any, device: torch.device, where: str) -> SurfaceViews:
        """The body views (1, V, 3, H, W), their lift map and embeddings (V, C, h, w), cached."""
        if "views" not in self._cache:
            verts, faces = self.canonical()
            images, lift = self.renderer.render_mesh(verts, faces, "normals", cache=True)
            self._cache["views"] = (images.cpu(), lift)
        images, lift = self._cache["views"]
        if lift.pix_to_elem.device != device:
            lift = lift.to(device)
            self._cache["views"] = (images, lift)
        images = images.to(device)
        if not localizer.encoder_frozen:
            emb = localizer.encode(images)
        else:
            emb = self._cache.get("emb")
            if emb is None or emb.device != device:
                with torch.no_grad():
                    emb = localizer.encode(images).detach()
                self._cache["emb"] = emb
        return SurfaceViews(images[None], [lift], emb, True)

    def targets(self, labels: torch.Tensor, lifts: list) -> torch.Tensor:
        """Per-view 2D targets (B, V, H, W): 1 where the pixel's face has at least ``mask_min_vertices`` contact
        vertices, else 0 (None: the label of the face's vertex with the largest weight), -1 on background."""
        return lifts[0].to_masks(labels, background=BACKGROUND, hard=True, min_vertices=self.mask_min_vertices)

    def loss_inputs(self, out: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) per-vertex scores for the 3D loss: the vertices some view sees."""
        seen = out["seen"][0]
        return out["scores"][:, seen], labels[:, seen]

    def figures(self, batch: dict, out: dict, labels: torch.Tensor, masks: torch.Tensor,
                titles: list[str]) -> list[tuple[str, np.ndarray]]:
        """Per sample: the views with predicted / ground-truth masks, and the lifted contact on the body."""
        from zoo.render.viz import contact_views_image, mask_grid_image

        verts, faces = self.canonical()
        figs = []
        for i, title in enumerate(titles):
            figs.append((f"views_{i}", mask_grid_image(out["images"][0].cpu(), out["probs"][i].cpu(), masks[i].cpu(),
                                                       title=f"{title}: views | predicted | ground truth")))
            figs.append((f"lifted_{i}", contact_views_image(
                verts.numpy(), faces.numpy(), out["scores"][i].float().cpu().numpy(), labels[i].float().cpu().numpy(),
                title=f"{title}: lifted contact (top) | ground truth (bottom)")))
        return figs


class CloudSurface(Surface):
    """One object point cloud per sample (normalised to the unit sphere by the renderer, NOCS colours).

    Args:
        renderer: multi-view renderer sub-recipe (e.g. ``{name: multiview, view_set: object, image_size: 1024}``).
        label_key, points_key, id_key: batch keys of the per-point labels (B, P), the clouds (B, P, 3)
            and the clouds' ids (B,), which key the in-memory cache.
        cache_renders: keep each cloud's views, lift map and (frozen-encoder) embeddings in memory by id.
    """

    what = "cloud"

    def __init__(self, renderer: dict, label_key: str = "affordance", points_key: str = "points",
                 id_key: str = "point_id", cache_renders: bool = True) -> None:
        super().__init__(renderer, label_key)
        self.points_key = points_key
        self.id_key = id_key
        self.cache_renders = bool(cache_renders)

    def batch_size(self, batch: dict, where: str) -> int:
        """Samples in the batch (from the clouds)."""
        return int(need(batch, self.points_key, self.owner, where, "float (B, P, 3) point clouds").shape[0])

    def views(self, batch: dict, localizer: Any, device: torch.device, where: str) -> SurfaceViews:
        """Views (B, V, 3, H, W), one lift map per cloud, embeddings (B * V, C, h, w)."""
        points = need(batch, self.points_key, self.owner, where, "float (B, P, 3) point clouds")
        ids = batch.get(self.id_key)
        ids = list(ids) if ids is not None else None
        frozen = localizer.encoder_frozen
        images, lifts, embs = [], [], []
        for b in range(points.shape[0]):
            key = f"pts:{ids[b]}" if ids is not None and self.cache_renders else None
            hit = self._cache.get(key) if key is not None else None
            if hit is None:
                img, lift = self.renderer.render_points(points[b].detach().float().cpu())
                img, lift = img.to(device), lift.to(device)
                emb = None
                if frozen:
                    with torch.no_grad():
                        emb = localizer.encode(img).detach()
                hit = (img, lift, emb)
                if key is not None:
                    self._cache[key] = hit
            images.append(hit[0])
            lifts.append(hit[1])
            embs.append(hit[2])
        images_t = torch.stack(images)
        emb_t = torch.cat(embs) if frozen else localizer.encode(images_t.flatten(0, 1))
        return SurfaceViews(images_t, lifts, emb_t, False)

    def targets(self, labels: torch.Tensor, lifts: list) -> torch.Tensor:
        """Per-view 2D targets (B, V, H, W): the label of the point each pixel shows, -1 on background."""
        return torch.cat([lift.to_masks(labels[b:b + 1], background=BACKGROUND) for b, lift in enumerate(lifts)])

    def loss_inputs(self, out: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) per-point scores for the 3D loss: every point."""
        return out["scores"], labels

    def figures(self, batch: dict, out: dict, labels: torch.Tensor, masks: torch.Tensor,
                titles: list[str]) -> list[tuple[str, np.ndarray]]:
        """Per sample: the views with predicted / ground-truth masks, and the lifted affordance on the cloud."""
        from zoo.render.viz import mask_grid_image, points_views_image

        figs = []
        for i, title in enumerate(titles):
            figs.append((f"views_{i}", mask_grid_image(out["images"][i].cpu(), out["probs"][i].cpu(), masks[i].cpu(),
                                                       title=f"{title}: views | predicted | ground truth")))
            pts = batch[self.points_key][i].float().cpu()
            figs.append((f"lifted_{i}", points_views_image(
                self.renderer, pts, out["scores"][i].float().cpu().numpy(), labels[i].float().cpu().numpy(),
                title=f"{title}: lifted affordance (top) | ground truth (bottom)")))
        return figs


SURFACES = registry.Parts("surface", {"body": BodySurface, "cloud": CloudSurface})
