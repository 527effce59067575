"""DreamFusion (Poole et al., 2022) as structured in threestudio: text -> NeRF by score distillation.

One prompt per run. Every training step renders the ``field`` through the ``renderer`` from a random
camera (the ``random_cameras`` DataModule), shades it, and the ``guidance`` (SDS over Stable
Diffusion or DeepFloyd IF, or the analytic stand-in ``image_target``) returns its loss; the field and
the background are the only trained tensors (the diffusion weights never enter a checkpoint).

Losses, each weighted by a step schedule in ``loss:`` (zoo.core.schedule; threestudio's
``dreamfusion-sd`` values in recipes/base/system/dreamfusion.yaml):

* the guidance's terms (``loss_sds``, ``loss_clip``, ``loss_target``: weight ``loss.sds`` ...);
* orientation: sum_i w_i relu(n_i . d)^2 over the samples, with the weights w detached, divided by
  the number of rays with opacity > 0 (normals that face away from the camera are penalised);
* sparsity: mean sqrt(opacity^2 + 0.01); opaque: BCE(opacity, opacity), opacity clamped to
  [1e-3, 1 - 1e-3] (pushes opacity to 0 or 1).

Shading (``shading:``; threestudio's diffuse-with-point-light material): albedo only for the first
``ambient_only_steps``; then per batch ``albedo`` with probability 1 - diffuse_prob, else
``textureless`` (probability textureless_prob) or ``diffuse``: albedo x (ambient + diffuse max(n . l, 0))
with the light at the batch's ``light_position``. It is applied to the ray's composited albedo and
normal (deferred shading), where threestudio shades each sample before compositing; ``mode: albedo``
turns shading off (the stand-in target, whose reference is unlit).

Validation and test render turntable views (the DataModule's val / test cameras) and, when the run
loop gave a run directory, write ``<run>/val/step<N>/`` and ``<run>/test/`` PNGs (rgb | normal |
opacity) and a ``turntable.gif``; the test also writes ``mesh.glb`` (marching cubes on the density,
vertex colours from the albedo: zoo.models.field.mesh). Metrics: ``clip_score`` (renders against the
prompt) or ``psnr`` against the guidance's reference images (the stand-in target only).

A NaN or inf in the rendered image or in any loss term stops the run with the step number and the
term (``FloatingPointError``); the SDS guidance raises the same for its gradient.
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from zoo.core.atomic import atomic_path, atomic_write_image
from zoo.core.recipe import ConfigError
from zoo.core.registry import register
from zoo.core.run import RUN_DIR_ENV
from zoo.core.schedule import Schedule
from zoo.systems.base import System
from zoo.systems.optim import Optim

__all__ = ["DreamFusion", "Shading", "LOSS_TERMS", "orientation_loss", "sparsity_loss", "opaque_loss"]

# The terms the system computes itself; guidance terms (loss_<name>) are weighted by loss.<name> too.
LOSS_TERMS = ("orient", "sparsity", "opaque")
_STEP_SEED = 1_000_003  # renderer draws at step k come from a generator seeded with _STEP_SEED * k + 1


@dataclass
class Shading:
    """Shading augmentation (threestudio's diffuse-with-point-light material; see the module docstring)."""

    mode: str = "random"  # random | albedo | diffuse | textureless
    ambient_only_steps: int = 2001
    ambient: float = 0.1
    diffuse: float = 0.9
    diffuse_prob: float = 0.75
    textureless_prob: float = 0.5

    @classmethod
    def parse(cls, cfg: dict | None) -> Shading:
        """A Shading from its sub-recipe; unknown keys or a bad mode raise ConfigError naming the key."""
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        for k in cfg:
            if k not in known:
                raise ConfigError(("shading", k), f"unknown shading setting; valid keys: {', '.join(sorted(known))}")
        out = cls(**cfg)
        if out.mode not in ("random", "albedo", "diffuse", "textureless"):
            raise ConfigError(("shading", "mode"), f"expected random, albedo, diffuse or textureless, got {out.mode!r}")
        for k in ("diffuse_prob", "textureless_prob"):
            if not 0.0 <= float(getattr(out, k)) <= 1.0:
                raise ConfigError(("shading", k), f"must be a probability in [0, 1], got {getattr(out, k)!r}")
        return out

    def choose(self, step: int, training: bool, rng: random.Random) -> str:
        """The shading of a batch at ``step``: albedo, textureless or diffuse."""
        if self.mode != "random":
            return self.mode
        if step < self.ambient_only_steps:
            return "albedo"
        if not training:
            return "diffuse"
        if rng.random() > self.diffuse_prob:
            return "albedo"
        return "textureless" if rng.random() < self.textureless_prob else "diffuse"

    def apply(self, out: dict, rays: dict, shading: str) -> dict:
        """Shade a render in place (deferred: the ray's composited albedo and normal, the light at the rays'
        ``light_position``): ``diffuse`` albedo x (ambient + diffuse max(n . l, 0)), ``textureless`` the same with
        white albedo, ``albedo`` unchanged. The background keeps its colour."""
        if shading == "albedo":
            return out
        bg = out["background"] * (1 - out["opacity"])
        albedo = out["rgb"] - bg
        pts = rays["rays_o"] + rays["rays_d"] * (out["depth"] / out["opacity"].clamp_min(1e-6))
        light = rays["light_position"][:, None, None, :].to(pts)
        n = F.normalize(out["normal"], dim=-1)
        lam = (n * F.normalize(light - pts, dim=-1)).sum(-1, keepdim=True).clamp_min(0.0)
        shade = self.ambient + self.diffuse * lam
        out["rgb"] = (albedo if shading == "diffuse" else out["opacity"]) * shade + bg
        return out


def orientation_loss(weights: torch.Tensor, sample_normal: torch.Tensor, dirs: torch.Tensor,
                     opacity: torch.Tensor) -> torch.Tensor:
    """sum_i w_i relu(n_i . d)^2 (weights detached) over the rays with opacity > 0 (their count divides)."""
    dots = (sample_normal * dirs[..., None, :]).sum(-1).clamp_min(0.0)
    return (weights.detach() * dots.square()).sum() / (opacity > 0).sum().clamp_min(1)


def sparsity_loss(opacity: torch.Tensor) -> torch.Tensor:
    """mean sqrt(opacity^2 + 0.01): a smooth L1 on the accumulated opacity."""
    return (opacity.square() + 0.01).sqrt().mean()


def opaque_loss(opacity: torch.Tensor) -> torch.Tensor:
    """BCE(opacity, opacity) with opacity clamped to [1e-3, 1 - 1e-3]: the entropy of each ray's opacity."""
    # BCE(p, p) is the binary entropy -(p ln p + (1 - p) ln(1 - p)), written out: CUDA autocast refuses
    # F.binary_cross_entropy on probabilities (tests/models/test_bce_logits.py)
    o = opacity.clamp(1e-3, 1 - 1e-3)
    return -(o * torch.log(o) + (1 - o) * torch.log1p(-o)).mean()


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@register("system", "dreamfusion")
class DreamFusion(System):
    """Text -> NeRF by score distillation (see the module docstring).

    Args:
        prompt: the text (non-empty).
        field: `field` sub-recipe (hash_nerf at full size, dense_grid tiny).
        renderer: `renderer` sub-recipe (nerf_volume; its learned background trains with the field).
        guidance: `guidance` sub-recipe (stable_diffusion_sds, deepfloyd_if_sds, clip_guidance or the
            stand-in image_target).
        aux_guidance: an optional second guidance whose terms are added (e.g. a CLIP loss for an
            ablation); null for none.
        loss: term name -> weight schedule (``sds``, ``clip``, ``target``, ``orient``, ``sparsity``,
            ``opaque``); every term a guidance returns needs a weight.
        shading: shading augmentation (:class:`Shading`).
        optim: optimiser (threestudio: Adam 0.01 betas (0.9, 0.99) eps 1e-15, background 0.001).
        metrics: registered metrics of the turntable renders (clip_score, psnr).
        outputs: what validation / test write: ``{mesh_resolution: 128, mesh_threshold: null, gif_fps: 10,
            val_images: true}``.
        weights: optional whole-system weights (an export or checkpoint of this system).
    """

    subcomponents: ClassVar[dict[str, Any]] = {
        "field": "field", "renderer": "renderer", "guidance": "guidance", "aux_guidance": "guidance",
        "metrics": "metric",
    }

    def __init__(
        self,
        prompt: str,
        field: dict,
        renderer: dict,
        guidance: dict,
        loss: dict,
        optim: Optim | dict,
        metrics: list[dict],
        shading: dict | None = None,
        aux_guidance: dict | None = None,
        outputs: dict | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(("prompt",), f"the prompt is empty ({prompt!r}); give the text to generate, "
                                           f"e.g. system.prompt='a ceramic mug'")
        self.save_hyperparameters()
        self.shading = Shading.parse(shading)
        if not isinstance(loss, dict) or not loss:
            raise ConfigError(("loss",), "expected a mapping of term -> weight schedule, e.g. {sds: 1.0, orient: ...}")
        self.weights_sched = {str(k): Schedule(v, f"loss.{k}") for k, v in loss.items()}
        known = {"mesh_resolution", "mesh_threshold", "gif_fps", "val_images"}
        bad = sorted(set(outputs or {}) - known)
        if bad:
            raise ConfigError(("outputs", bad[0]), f"unknown output setting; valid keys: {', '.join(sorted(known))}")
        self.out_cfg = {"mesh_resolution": 128, "mesh_threshold": None, "gif_fps": 10, "val_images": True,
                        **(outputs or {})}
        self._prompt_cache: dict[int, Any] = {}
        self._frames: dict[str, list] = {}

    # ----------------------------------------------------------------- parts
    def build(self) -> None:
        """Field, renderer, guidance (and the auxiliary guidance), in that order."""
        self.field = self.build_part("field")
        self.renderer = self.build_part("renderer")
        self.guidance = self.build_part("guidance")
        aux = self.hparams.get("aux_guidance")
        self.aux_guidance = self.build_part("aux_guidance") if aux else None
        for g in self._guidances():
            for p in g.parameters():
                p.requires_grad_(False)

    def _guidances(self) -> list:
        return [g for g in (self.guidance, self.aux_guidance) if g is not None]

    def _prompt(self, guidance: Any) -> Any:
        """The guidance's prompt embeddings (computed once per guidance, on its device)."""
        key = id(guidance)
        if key not in self._prompt_cache:
            fn = getattr(guidance, "prompt_embeddings", None)
            self._prompt_cache[key] = fn(self.hparams.prompt) if fn is not None else self.hparams.prompt
        return self._prompt_cache[key]

    def weight(self, term: str, step: int) -> float:
        """The weight of loss term ``term`` at ``step`` (0 for a system term the recipe leaves out)."""
        sched = self.weights_sched.get(term)
        if sched is None:
            if term in LOSS_TERMS:
                return 0.0
            raise ConfigError(("loss", term), f"the guidance returns loss_{term}, but system.loss gives it no weight "
                                              f"(weights given: {', '.join(sorted(self.weights_sched))})")
        return float(sched(step))

    # ----------------------------------------------------------------- rendering
    def render(self, batch: dict, shading: str = "albedo", with_normal: bool | None = None,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Render the batch's rays: ``rgb`` (B, H, W, 3) shaded, plus the renderer's outputs (``generator``: the
        renderer's training draws)."""
        if with_normal is None:
            with_normal = shading != "albedo"
        out = self.renderer(self.field, batch["rays_o"], batch["rays_d"], with_normal=with_normal, generator=generator)
        return self.shading.apply(out, batch, shading)

    def _check_finite(self, name: str, value: torch.Tensor, step: int, what: str = "loss term") -> None:
        if not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise FloatingPointError(f"DreamFusion: step {step}: {what} '{name}' has {bad} NaN/inf value(s); stopping "
                                     f"instead of training on it (prompt {self.hparams.prompt!r})")

    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], Any]:
        """Training: render, guidance terms and the regularisers; evaluation: render only (no loss)."""
        if stage != "train":
            return {}, self._render_eval(batch)
        step = int(self.global_step)
        # a pure function of the step, so a resumed run shades its batches as the uninterrupted one did
        shading = self.shading.choose(step, True, random.Random(step))
        need_normal = shading != "albedo" or self.weight("orient", step) > 0
        # the renderer's jitter from a generator seeded by the step (not torch's global one, which a resumed run's
        # new DataLoader iterator advances), so a resumed run draws the samples the uninterrupted one drew
        gen = torch.Generator(device=batch["rays_o"].device).manual_seed(_STEP_SEED * step + 1)
        out = self.render(batch, shading, with_normal=need_normal, generator=gen)
        self._check_finite("rgb", out["rgb"], step, "the rendered image")
        images = out["rgb"].permute(0, 3, 1, 2)
        terms: dict[str, torch.Tensor] = {}
        for g in self._guidances():
            kw: dict[str, Any] = {"azimuth": batch["azimuth"], "elevation": batch["elevation"], "step": step}
            if getattr(g, "takes_batch", False):
                kw["batch"] = batch
            for k, v in g(images, self._prompt(g), **kw).items():
                if k.startswith("loss_"):
                    terms[k[len("loss_"):]] = terms.get(k[len("loss_"):], 0) + v
                elif isinstance(v, int | float) or isinstance(v, torch.Tensor) and v.numel() >= 1:
                    # the guidance's diagnostics (timestep range, drawn t, gradient norm), per step
                    value = float(v.float().mean()) if isinstance(v, torch.Tensor) else float(v)
                    self.log(f"guidance/{k}", value, on_step=True, on_epoch=False)
        if need_normal and self.weight("orient", step) > 0:
            terms["orient"] = orientation_loss(out["weights"], out["sample_normal"], out["dirs"], out["opacity"])
        terms["sparsity"] = sparsity_loss(out["opacity"])
        terms["opaque"] = opaque_loss(out["opacity"])
        total = images.new_zeros(())
        for name, value in terms.items():
            self._check_finite(name, value, step)
            w = self.weight(name, step)
            if w != 0:
                total = total + w * value
        for name in self.weights_sched:
            self.log(f"train_params/lambda_{name}", self.weight(name, step), on_step=True, on_epoch=False)
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}, out

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Advance the field's schedules (progressive levels, occupancy refresh) to this step, and log them."""
        for k, v in (self.field.update_step(int(self.global_step)) or {}).items():
            self.log(k, float(v), on_step=True, on_epoch=False)

    def _render_eval(self, batch: dict) -> dict[str, torch.Tensor]:
        shading = self.shading.choose(int(self.global_step), False, random.Random(0))
        # Analytic normals differentiate the density, which Lightning's evaluation (inference mode) forbids:
        # render with autograd on, from copies of the (inference-mode) batch tensors.
        with torch.inference_mode(False), torch.enable_grad():
            rays = {k: batch[k].clone() for k in ("rays_o", "rays_d", "light_position") if k in batch}
            out = self.render(rays, shading, with_normal=True)
        return {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor)}

    def batch_size(self, batch: dict, out: Any) -> int:
        """Views in the batch."""
        return int(batch["rays_o"].shape[0])

    def metric_inputs(self, batch: dict, out: dict) -> tuple:
        """(renders (B, 3, H, W), prompts) for clip_score."""
        return out["rgb"].permute(0, 3, 1, 2), [self.hparams.prompt] * int(out["rgb"].shape[0])

    def _eval_step(self, batch: dict, stage: str) -> None:
        _, out = self.step(batch, stage)
        images, prompts = self.metric_inputs(batch, out)
        for m in self._metrics(stage):
            if getattr(m, "needs_reference", False):
                ref_fn = getattr(self.guidance, "reference", None)
                if ref_fn is None:
                    raise ValueError(f"DreamFusion: metric {type(m).__name__} compares renders with reference images, "
                                     f"but guidance {self.hparams.guidance.get('name')!r} has none (only image_target "
                                     f"does); use clip_score for text guidance")
                m.update(images, ref_fn(batch).to(images))
            else:
                m.update(images, prompts)
        self._collect(stage, batch, out)

    def predict_step(self, batch: dict, batch_idx: int = 0) -> torch.Tensor:
        """Renders (B, 3, H, W) of the batch's views."""
        return self._render_eval(batch)["rgb"].permute(0, 3, 1, 2)

    # ----------------------------------------------------------------- outputs
    def _frame(self, out: dict, i: int) -> np.ndarray:
        rgb = out["rgb"][i]
        normal = out["normal"][i] if "normal" in out else torch.zeros_like(rgb)
        normal = (F.normalize(normal, dim=-1) * 0.5 + 0.5) * out["opacity"][i]
        opacity = out["opacity"][i].expand_as(rgb)
        return np.concatenate([_uint8(rgb), _uint8(normal), _uint8(opacity)], axis=1)

    def _collect(self, stage: str, batch: dict, out: dict) -> None:
        idx = batch.get("index")
        frames = self._frames.setdefault(stage, [])
        for i in range(out["rgb"].shape[0]):
            frames.append((int(idx[i]) if idx is not None else len(frames), self._frame(out, i)))

    def _out_dir(self, stage: str) -> Path | None:
        root = os.environ.get(RUN_DIR_ENV)
        if not root or (self._trainer is not None and not self.trainer.is_global_zero):
            return None
        if stage == "val":
            return Path(root) / "val" / f"step{int(self.global_step):06d}"
        return Path(root) / "test"

    def _write_frames(self, stage: str) -> list[Path]:
        frames = sorted(self._frames.pop(stage, []), key=lambda f: f[0])
        out = self._out_dir(stage)
        if out is None or not frames or (stage == "val" and not self.out_cfg["val_images"]):
            return []
        paths = [atomic_write_image(out / f"{i:03d}.png", img) for i, img in frames]
        paths.append(write_gif(out / "turntable.gif", [img for _, img in frames], fps=float(self.out_cfg["gif_fps"])))
        return paths

    def on_validation_epoch_end(self) -> None:
        """Log the metrics and write the turntable of this step."""
        super().on_validation_epoch_end()
        self._write_frames("val")

    def on_test_epoch_end(self) -> None:
        """Log the metrics, write the test turntable and the mesh."""
        super().on_test_epoch_end()
        self._write_frames("test")
        out = self._out_dir("test")
        if out is not None:
            try:
                self.export_mesh(out / "mesh.glb")
            except ValueError as e:  # an empty field: the run's metrics and turntable are kept, the mesh is not
                print(f"note: no mesh written: {e}", flush=True)

    def export_mesh(self, path: str | os.PathLike) -> Path:
        """Marching cubes on the field's density, vertex-coloured, written as .glb (zoo.models.field.mesh)."""
        from zoo.models.field.mesh import export_glb, extract_mesh

        mesh = extract_mesh(self.field, resolution=int(self.out_cfg["mesh_resolution"]),
                            threshold=self.out_cfg["mesh_threshold"])
        return export_glb(mesh, path)

    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, np.ndarray]]:
        """The first ``n`` views of a test batch (rgb | normal | opacity)."""
        out = self._render_eval({k: (v[:n] if isinstance(v, torch.Tensor) and v.ndim > 0 else v)
                                 for k, v in batch.items()})
        return [(f"view{i}", self._frame(out, i)) for i in range(out["rgb"].shape[0])]


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """An animated GIF of uint8 (H, W, 3) frames, looping, written atomically."""
    from PIL import Image

    if not frames:
        raise ValueError(f"write_gif: no frames for {path}")
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(int(round(1000.0 / fps)), 20), loop=0)
    return Path(path)
