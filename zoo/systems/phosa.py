"""PHOSA (Zhang et al., ECCV 2020): a person and an object arranged in 3D from one image, by optimisation.

The body comes with the sample (an image regressor's output in the camera frame). The object mesh is
placed in two steps:

1. **Pose search** (official: 2000 random rotations x 50 Adam steps at lr 1e-3, silhouettes at 256 px):
   every candidate starts at the object-mask centre, at the depth where the object's size matches the
   mask's (at the category's prior scale), and is optimised against the occlusion-aware silhouette
   loss (pixels of the person ignored) + 0.5 x the edge chamfer + 1000 x the off-screen penalty, as the
   release; the candidate with the lowest final loss is kept. The
   candidates are optimised together in chunks of ``search.batch`` (one batched soft-silhouette call
   per chunk and step).
2. **Joint optimisation** (official: 400 Adam steps at lr 1e-3) of the object's rotation, translation and
   scale with PHOSA's terms: silhouette, interaction, part interaction, depth ordering, scale prior —
   and the collision term, which the release weights (2) but never computes; here it is computed
   (zoo.models.fit.collision). Default weights (the release): sil 10, inter 20, inter_part 50, depth 1,
   scale 100, collision 2; per-category weight sets are recipes (``recipes/phosa/<category>.yaml``).

What the release does that this does not: it also optimises each person's scale (one person here: the
body's metric scale comes from the regressor and is kept); its interaction gates' depth thresholds are in
PHOSA's normalised units, ours in metres (``priors.<category>.interaction.z_threshold``, default 1 m); see
docs/reconstruction.md.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from zoo.core.recipe import ConfigError
from zoo.core.registry import register
from zoo.models.fit import losses as L
from zoo.models.fit.geometry import matrix_to_rotation_6d, random_rotations, rotation_6d_to_matrix
from zoo.render.silhouette import scale_intrinsics, soft_silhouette
from zoo.systems.hoi_fit import ObjectFit

__all__ = ["PHOSA", "SEARCH_KEYS"]

SEARCH_KEYS = ("candidates", "steps", "lr", "batch", "keep", "image_size")


@register("system", "phosa")
class PHOSA(ObjectFit):
    """PHOSA's object placement (module docstring); arguments of :class:`zoo.systems.hoi_fit.ObjectFit` plus:

    Args:
        search: the rotation search ``{candidates: 2000, steps: 50, lr: 1e-3, batch: 250, keep: null,
            image_size: null}``: ``candidates`` random rotations (1: the identity, no search), optimised in chunks
            of ``batch``; ``keep: k`` scores every candidate once and optimises only the k best (the release
            optimises all; a CPU budget); ``image_size``: the search's silhouette size (default: the
            ``silhouette`` renderer's).
    """

    STAGES: ClassVar[tuple[str, ...]] = ("joint",)

    def __init__(
        self,
        silhouette: dict,
        loss_weights: dict[str, float],
        stages: list[dict],
        metrics: list[dict],
        search: dict | None = None,
        priors: dict | None = None,
        check_watertight: bool = True,
        seed: int = 0,
        progress: bool = False,
        write: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        s = dict(search or {})
        bad = sorted(set(s) - set(SEARCH_KEYS))
        if bad:
            raise ConfigError(("search",), f"PHOSA: unknown key(s) {', '.join(bad)} ({', '.join(SEARCH_KEYS)})")
        for k in ("candidates", "batch", "keep", "image_size"):
            if s.get(k) is not None and (not isinstance(s[k], int) or s[k] < 1):
                raise ConfigError(("search", k), f"must be an integer >= 1, got {s[k]!r}")

    def search_settings(self) -> dict[str, Any]:
        """The rotation search's settings with the release's defaults filled in."""
        return ({"candidates": 2000, "steps": 50, "lr": 1e-3, "batch": 250, "keep": None, "image_size": None}
                | dict(self.hparams.get("search") or {}))

    def initial_state(self, sample: dict, index: int) -> dict[str, torch.Tensor]:
        """The best of the random candidate rotations after the silhouette-only search."""
        fit = self.prepare(sample)
        cfg = self.search_settings()
        sp = self.prior(sample.get("category")).get("scale") or {}
        s0 = float(sp.get("mean", 1.0))
        t0 = self.translation_from_mask(sample, self.depth_from_mask(sample, s0))
        n = int(cfg["candidates"])
        if n == 1:
            return self.pose_state(torch.eye(3), t0, s0)
        g = torch.Generator().manual_seed(int(self.hparams.seed) * 100003 + index)
        rots = random_rotations(n, generator=g)
        faces = sample["object_faces"].long()
        w = L.PHOSA_POSE_SEARCH_WEIGHTS
        H, W = (int(x) for x in sample["image_size"])
        if cfg["image_size"]:
            size = int(cfg["image_size"])
            hw = (size, max(1, round(size * W / H))) if H >= W else (max(1, round(size * H / W)), size)
            K = scale_intrinsics(fit["K"], fit["hw"], hw)
            keep = F.interpolate(fit["keep"][None, None], size=hw, mode="nearest")[0, 0]
        else:
            hw, K, keep = fit["hw"], fit["K"], fit["keep"]
        dist = L.edge_distance_map(keep)
        chunk = int(cfg["batch"])

        def loss_of(r6: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            verts = self.place({"rot6d": r6, "translation": t, "scale": torch.full((r6.shape[0],), s0)}, sample)
            sil = soft_silhouette(verts, faces, K, hw, sigma=self.silhouette.sigma, backend=self.silhouette.backend,
                                  faces_per_pixel=self.silhouette.faces_per_pixel)
            return (w["mask"] * L.silhouette_loss(sil, keep, normalize=False)
                    + w["chamfer"] * L.edge_chamfer_loss(sil, keep, distance_map=dist)
                    + w["offscreen"] * L.offscreen_loss(verts, K, hw))

        r6_all = matrix_to_rotation_6d(rots)
        if cfg["keep"] and int(cfg["keep"]) < n:
            with torch.no_grad():
                scores = torch.cat([loss_of(r6_all[i:i + chunk], t0.expand(min(chunk, n - i), 3))
                                    for i in range(0, n, chunk)])
            r6_all = r6_all[scores.argsort()[: int(cfg["keep"])]]
        best_loss, best = None, None
        for lo in range(0, r6_all.shape[0], chunk):
            r6 = r6_all[lo:lo + chunk].clone().requires_grad_(True)
            t = t0.expand(r6.shape[0], 3).clone().requires_grad_(True)
            opt = torch.optim.Adam([r6, t], lr=float(cfg["lr"]))
            for step in range(int(cfg["steps"]) + 1):
                loss = loss_of(r6, t)
                if step == int(cfg["steps"]):
                    break
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
            loss = loss.detach()
            i = int(loss.argmin())
            if best_loss is None or float(loss[i]) < best_loss:
                best_loss = float(loss[i])
                best = (rotation_6d_to_matrix(r6[i].detach()), t[i].detach())
        return self.pose_state(best[0], best[1], s0)
