"""A differentiable stand-in for score distillation: multi-view images of a known analytic scene.

Diffusion weights cannot ship, so the text-to-3D optimiser is proven on a target whose answer is
known: ``image_target`` ray-traces an analytic scene (spheres, exactly, per pixel) for the cameras of
each batch and returns the photometric loss between the system's render and that image. The same
system, field, renderer, random cameras and optimiser then reconstruct the scene, and held-out
turntable views measure how well (PSNR, zoo.metrics.image). It is a ``guidance`` component like
``stable_diffusion_sds``, so a recipe swaps one for the other with ``system.guidance.name=...``.

Scene: a list of spheres ``{center: [x, y, z], radius: r, color: [r, g, b] | "normal"}`` (``normal``:
the sphere's outward normal mapped to colour, 0.5 + 0.5 n, so the surface is textured and the field
must place colour, not only occupancy) in front of a constant background. Rays come from the batch
(``rays_o``, ``rays_d``: the random-camera DataModule's keys).
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from zoo.core.hub import Pretrained
from zoo.core.interfaces import Guidance
from zoo.core.recipe import ConfigError
from zoo.core.registry import register

__all__ = ["ImageTarget", "trace_spheres", "DEFAULT_SCENE"]

DEFAULT_SCENE: list[dict[str, Any]] = [
    {"center": [0.0, 0.0, 0.0], "radius": 0.45, "color": "normal"},
    {"center": [0.42, 0.38, 0.22], "radius": 0.2, "color": [0.9, 0.15, 0.1]},
    {"center": [-0.35, -0.3, 0.35], "radius": 0.16, "color": [0.1, 0.3, 0.9]},
]


def _check_scene(scene: list[dict]) -> list[dict]:
    if not scene:
        raise ConfigError(("scene",), "the scene needs at least one sphere {center, radius, color}")
    out = []
    for i, s in enumerate(scene):
        if not isinstance(s, dict) or set(s) - {"center", "radius", "color"} or not {"center", "radius"} <= set(s):
            raise ConfigError(("scene", i), f"a sphere is {{center: [x, y, z], radius: r, color: [r, g, b] | normal}}, "
                                            f"got {s!r}")
        c, r, col = s["center"], s["radius"], s.get("color", "normal")
        if len(c) != 3 or not float(r) > 0:
            raise ConfigError(("scene", i), f"center must be 3 numbers and radius > 0, got center {c!r}, radius {r!r}")
        if col != "normal" and (not isinstance(col, list | tuple) or len(col) != 3):
            raise ConfigError(("scene", i, "color"), f"expected [r, g, b] in [0, 1] or 'normal', got {col!r}")
        out.append({"center": [float(v) for v in c], "radius": float(r), "color": col})
    return out


def trace_spheres(scene: list[dict], rays_o: torch.Tensor, rays_d: torch.Tensor, background: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact ray tracing of spheres: (rgb (..., 3), hit mask (...,), depth (...,) along the unit ray, inf on a miss)."""
    d = F.normalize(rays_d.float(), dim=-1)
    o = rays_o.float()
    best = torch.full(o.shape[:-1], float("inf"), device=o.device)
    rgb = background.to(o).expand(*o.shape[:-1], 3).clone()
    for s in scene:
        c = torch.tensor(s["center"], device=o.device)
        oc = o - c
        b = (oc * d).sum(-1)
        disc = b * b - ((oc * oc).sum(-1) - s["radius"] ** 2)
        t = -b - disc.clamp_min(0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < best)
        if s["color"] == "normal":
            n = F.normalize(oc + t[..., None] * d, dim=-1)
            col = 0.5 + 0.5 * n
        else:
            col = torch.tensor(s["color"], device=o.device).expand_as(rgb)
        rgb = torch.where(hit[..., None], col, rgb)
        best = torch.where(hit, t, best)
    return rgb, torch.isfinite(best), best


@register("guidance", "image_target")
class ImageTarget(Pretrained, Guidance, L.LightningModule):
    """Photometric loss against exact renders of an analytic sphere scene (the SDS stand-in; see the module docstring).

    ``forward(images (B, 3, H, W), prompt=None, azimuth=None, elevation=None, step=0, batch=...)`` ->
    ``{"loss_target": mean squared (or absolute) error}``; ``reference(batch) -> (B, 3, H, W)`` the
    target images of the batch's rays (``rays_o``, ``rays_d`` (B, H, W, 3)).
    """

    takes_batch = True  # the system passes the camera batch to forward (an SDS guidance needs only angles)

    def __init__(self, scene: list[dict] | None = None, background: list[float] | None = None,
                 loss: str = "mse") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.scene = _check_scene(DEFAULT_SCENE if scene is None else list(scene))
        bg = [1.0, 1.0, 1.0] if background is None else list(background)
        if len(bg) != 3:
            raise ConfigError(("background",), f"expected [r, g, b], got {bg!r}")
        if loss not in ("mse", "l1"):
            raise ConfigError(("loss",), f"expected mse or l1, got {loss!r}")
        self.register_buffer("background", torch.tensor(bg, dtype=torch.float32), persistent=False)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """No text conditioning: one empty embedding per text (the interface's method)."""
        return torch.zeros(len(texts), 0)

    def prompt_embeddings(self, prompt: str) -> None:
        """No prompt is used (the scene is the target)."""
        return None

    @torch.no_grad()
    def reference(self, batch: dict) -> torch.Tensor:
        """The exact images (B, 3, H, W) of the scene seen through the batch's rays."""
        for key in ("rays_o", "rays_d"):
            if key not in batch:
                raise KeyError(f"image_target: the batch has no '{key}' (it needs the random_cameras DataModule's rays; "
                               f"batch keys: {', '.join(sorted(map(str, batch)))})")
        rgb, _, _ = trace_spheres(self.scene, batch["rays_o"], batch["rays_d"], self.background)
        return rgb.permute(0, 3, 1, 2).contiguous()

    def forward(self, images: torch.Tensor, prompt: Any = None, azimuth: Any = None, elevation: Any = None,
                step: int = 0, batch: dict | None = None) -> dict[str, torch.Tensor]:
        """The photometric loss of ``images`` (B, 3, H, W) against the batch's reference images."""
        if batch is None:
            raise ValueError("image_target.forward: needs batch= (the camera batch whose rays the images were rendered with)")
        ref = self.reference(batch).to(images)
        if ref.shape != images.shape:
            raise ValueError(f"image_target.forward: images {tuple(images.shape)} do not match the batch's rays "
                             f"{tuple(ref.shape)}")
        err = images - ref
        loss = err.square().mean() if self.hparams.loss == "mse" else err.abs().mean()
        return {"loss_target": loss}
