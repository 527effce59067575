"""InterFusion (Dai et al., ECCV 2024) stage 2: a human NeRF and an object NeRF optimised together from text,
held to an anchor body pose, as the released code (sisidai/InterFusion, ``InterGen/threestudio/systems/
interfusion.py``) does it.

The anchor body (``anchor:``: a pose from a ``pose_prior`` such as ``interfusion_codebook`` queried with the
interaction text, a pose file, or a given pose) is posed with global orientation 0 and zero shape and centred
on its mean vertex (the release's placement). Every training step takes one random camera (``random_cameras``)
and derives four (the release's rules; ``cam`` is the camera position, ``c`` the traced object centre):

* object: 0.7 cam + c, rendering the object field alone (``sds_object``, prompt ``prompts.object``);
* human: 0.7 cam, the human field alone (``sds_human``, ``prompts.human``);
* interaction: 0.8 cam + c / 2, both fields composited with the human detached by default (``sds_interaction``,
  ``prompts.interaction``: the interaction term moves only the object, as in the release);
* head close-up: 0.2 cam + the head joint, the human field (``sds_head``, ``prompts.head``).

Geometry (zoo.models.field.constraints) against the anchor body's occupancy (zoo.body.occupancy, generalised
winding numbers through libigl): ``geo_human`` = BCE(NeRF occupancy 1 - exp(-0.2 sigma_H), body occupancy), weight
1 inside the body and 1 - exp(-d^2 / (2 0.4^2)) outside (d: distance to the surface); ``geo_object`` = BCE of the
object's NeRF occupancy against 0 inside the body (the object must not enter it). Regularisers on the object and
human renders: orientation and sparsity (as ``dreamfusion``). Weights are step schedules in ``loss:``; the
release's are in recipes/base/system/interfusion.yaml (object SDS weight (step // 1000) / 10; object shape weight
0.001 / 0.01 / 0.1 / 0.01 / 0.001 with boundaries 1000, 2000, 8000, 9000).

Camera tracing: every ``cameras.trace_every`` steps (1000) the object centre c moves to the centroid of the voxels
whose object occupancy exceeds 0.5 (kept where none does); c is a buffer, so it resumes with the run.

Test writes under the run directory ``test/{human,object,scene}/`` turntables (PNGs + GIF), ``scene.glb`` (both
fields' meshes), ``anchor.glb`` (the posed anchor body) and logs the object's penetration volume into the body and
its contact fraction; validation writes the scene turntable per step.
"""
from __future__ import annotations

import os
import random
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
from zoo.systems.dreamfusion import Shading, orientation_loss, sparsity_loss, write_gif
from zoo.systems.optim import Optim

__all__ = ["InterFusion", "VIEWS", "TERMS", "camera_offsets"]

VIEWS = ("object", "human", "interaction", "head")
TERMS = ("sds_object", "sds_human", "sds_interaction", "sds_head", "geo_human", "geo_object", "orient", "sparsity")
_STEP_SEED = 1_000_003
HEAD_JOINT = 15  # SMPL / SMPL-H / SMPL-X joint 15 is the head


def camera_offsets(view: str, scale: float, center: torch.Tensor, head: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(scale, offset) of a view's camera position: ``scale * cam + offset`` (the release's four rules)."""
    if view == "object":
        return scale, center
    if view == "interaction":
        return scale, center / 2
    if view == "head":
        return scale, head
    return scale, torch.zeros_like(center)


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@register("system", "interfusion")
class InterFusion(System):
    """Text -> human + object NeRFs held to an anchor pose (see the module docstring).

    Args:
        prompts: ``{human, object, interaction, head}`` texts; ``head`` defaults to "the head of <human>".
        anchor: where the anchor body pose comes from: ``{pose_prior: <pose_prior sub-recipe>, query: text}``
            (e.g. an ``interfusion_codebook`` export as its weights), ``{file: path}`` (a (21, 3) / (63,) / (1, 63)
            .npy or a pose-set file, ``index`` picks the row), or ``{pose: [63 numbers]}``; ``{}`` is the rest pose.
        body_model: `body_model` sub-recipe of the anchor (smplx as the release; tiny: synthetic smpl).
        human_field, object_field: `field` sub-recipes.
        renderer: `renderer` (nerf_volume) for the single-field renders; composite: `renderer` (composite_volume).
        guidance: one `guidance` for the four terms (DeepFloyd IF in the release, weighting uniform).
        loss: term -> weight schedule (terms: sds_object, sds_human, sds_interaction, sds_head, geo_human,
            geo_object, orient, sparsity).
        cameras: ``{object: 0.7, human: 0.7, interaction: 0.8, head: 0.2, trace_every: 1000, trace_resolution: 64,
            trace_threshold: 0.5}``.
        geometry: ``{near: 4096, uniform: 4096, box: 4096, noise: 0.05, sigma_d: 0.4}``: points per step for the
            geometric terms near the body surface (gaussian ``noise``), uniform in the fields' cube and uniform in the
            body's bounding box.
        detach_human: detach the human field in the interaction composite (the release: true).
        shading, optim, metrics, outputs: as ``dreamfusion``.
    """

    subcomponents: ClassVar[dict[str, Any]] = {
        "human_field": "field", "object_field": "field", "renderer": "renderer", "composite": "renderer",
        "guidance": "guidance", "body_model": "body_model", "pose_prior": "pose_prior", "metrics": "metric",
    }

    def __init__(
        self,
        prompts: dict,
        anchor: dict,
        body_model: dict,
        human_field: dict,
        object_field: dict,
        renderer: dict,
        composite: dict,
        guidance: dict,
        loss: dict,
        optim: Optim | dict,
        metrics: list[dict],
        cameras: dict | None = None,
        geometry: dict | None = None,
        detach_human: bool = True,
        shading: dict | None = None,
        outputs: dict | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prompt_texts = self._parse_prompts(prompts)
        bad = sorted(set(loss or {}) - set(TERMS))
        if bad:
            raise ConfigError(("loss", bad[0]), f"unknown term; interfusion's terms: {', '.join(TERMS)}")
        self.weights_sched = {k: Schedule(v, f"loss.{k}") for k, v in (loss or {}).items()}
        self.cam_cfg = self._merge("cameras", {"object": 0.7, "human": 0.7, "interaction": 0.8, "head": 0.2,
                                               "trace_every": 1000, "trace_resolution": 64, "trace_threshold": 0.5},
                                   cameras)
        self.geo_cfg = self._merge("geometry", {"near": 4096, "uniform": 4096, "box": 4096, "noise": 0.05, "sigma_d": 0.4},
                                   geometry)
        self.out_cfg = self._merge("outputs", {"mesh_resolution": 128, "mesh_threshold": None, "gif_fps": 10,
                                               "val_images": True}, outputs)
        self.shading = Shading.parse(shading)
        known = {"pose_prior", "query", "file", "index", "pose"}
        bad = sorted(set(anchor or {}) - known)
        if bad:
            raise ConfigError(("anchor", bad[0]), f"unknown anchor setting; valid keys: {', '.join(sorted(known))}")
        self.register_buffer("center", torch.zeros(3))
        self._prompt_cache: dict[str, Any] = {}
        self._frames: dict[str, list] = {}

    @staticmethod
    def _merge(section: str, defaults: dict, given: dict | None) -> dict:
        bad = sorted(set(given or {}) - set(defaults))
        if bad:
            raise ConfigError((section, bad[0]), f"unknown setting; valid keys: {', '.join(sorted(defaults))}")
        return {**defaults, **(given or {})}

    @staticmethod
    def _parse_prompts(prompts: dict) -> dict[str, str]:
        if not isinstance(prompts, dict):
            raise ConfigError(("prompts",), f"expected {{human, object, interaction[, head]}}, got {prompts!r}")
        bad = sorted(set(prompts) - {"human", "object", "interaction", "head"})
        if bad:
            raise ConfigError(("prompts", bad[0]), "unknown prompt; valid: human, object, interaction, head")
        out = {}
        for k in ("human", "object", "interaction"):
            v = prompts.get(k)
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(("prompts", k), f"the {k} prompt is empty ({v!r}); InterFusion needs the human, the "
                                                  f"object and the interaction texts")
            out[k] = v
        out["head"] = prompts.get("head") or f"the head of {out['human']}"
        return out

    # ----------------------------------------------------------------- parts
    def build(self) -> None:
        """Body (posed anchor + occupancy), fields, renderers, guidance."""
        from zoo.body.occupancy import BodyOccupancy

        self.body = self.build_part("body_model")
        pose = self._anchor_pose()
        verts, joints = self._pose_body(pose)
        self.register_buffer("anchor_pose", pose, persistent=False)
        self.register_buffer("body_verts", verts, persistent=False)
        self.register_buffer("head", joints[HEAD_JOINT].clone(), persistent=False)
        self.occupancy = BodyOccupancy(model_type=str(self.hparams.body_model.get("name", "smplx")))
        self.occupancy.set_body(verts, self.body.faces)
        self.human_field = self.build_part("human_field")
        self.object_field = self.build_part("object_field")
        self.renderer = self.build_part("renderer")
        self.composite = self.build_part("composite")
        self.guidance = self.build_part("guidance")
        for p in self.guidance.parameters():
            p.requires_grad_(False)

    def _anchor_pose(self) -> torch.Tensor:
        """The anchor body pose (21, 3) axis-angle (module docstring)."""
        a = dict(self.hparams.anchor or {})
        if a.get("pose") is not None:
            p = torch.as_tensor(a["pose"], dtype=torch.float32).reshape(-1)
            if p.numel() != 63:
                raise ConfigError(("anchor", "pose"), f"expected 63 numbers (21 body joints x 3), got {p.numel()}")
            return p.reshape(21, 3)
        if a.get("file"):
            from zoo.models.pose.posesets import read_pose_set

            poses = read_pose_set(a["file"])
            i = int(a.get("index", 0))
            if not 0 <= i < len(poses):
                raise ConfigError(("anchor", "index"), f"{a['file']} has {len(poses)} poses; index {i} is out of range")
            return torch.as_tensor(poses[i], dtype=torch.float32).reshape(21, 3)
        if a.get("pose_prior"):
            prior = self.build_part("pose_prior", a["pose_prior"])
            query = a.get("query") or self.prompt_texts["interaction"]
            with torch.no_grad():
                return prior(query).reshape(-1, 21, 3)[0].float()
        return torch.zeros(21, 3)

    def _pose_body(self, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        body_pose = pose.reshape(1, 63)
        if getattr(self.body, "model_type", "smplx") == "smpl":  # SMPL's 23 joints: flat hands
            body_pose = torch.cat([body_pose, body_pose.new_zeros(1, 6)], 1)
        with torch.no_grad():
            out = self.body(global_orient=torch.zeros(1, 3), body_pose=body_pose)
        verts, joints = out["vertices"][0], out["joints"][0]
        shift = verts.mean(0)  # the release centres the anchor on its mean vertex
        return verts - shift, joints - shift

    def _prompt(self, key: str) -> Any:
        if key not in self._prompt_cache:
            fn = getattr(self.guidance, "prompt_embeddings", None)
            text = self.prompt_texts[key]
            self._prompt_cache[key] = fn(text) if fn is not None else text
        return self._prompt_cache[key]

    def weight(self, term: str, step: int) -> float:
        """The weight of ``term`` at ``step`` (0 when the recipe leaves it out)."""
        s = self.weights_sched.get(term)
        return float(s(step)) if s is not None else 0.0

    # ----------------------------------------------------------------- rendering
    def view_rays(self, batch: dict, view: str, training: bool) -> dict[str, torch.Tensor]:
        """The batch's rays moved to ``view``'s camera (scale 1 in evaluation, as the release)."""
        scale = float(self.cam_cfg[view]) if training or view == "head" else 1.0
        s, off = camera_offsets(view, scale, self.center.to(batch["rays_o"]), self.head.to(batch["rays_o"]))
        out = {"rays_o": s * batch["rays_o"] + off, "rays_d": batch["rays_d"]}
        if "light_position" in batch:
            out["light_position"] = batch["light_position"] + off
        return out

    def render_view(self, batch: dict, view: str, training: bool, shading: str = "albedo",
                    with_normal: bool = False, generator: torch.Generator | None = None,
                    detach: bool | None = None) -> dict[str, torch.Tensor]:
        """Render one view: the object / human field alone, or the composite for ``interaction`` (and ``scene``)."""
        rays = self.view_rays(batch, "interaction" if view == "scene" else view, training)
        need_normal = with_normal or shading != "albedo"
        if view in ("interaction", "scene"):
            det = ["human"] if (self.hparams.detach_human if detach is None else detach) else []
            out = self.composite({"human": self.human_field, "object": self.object_field}, rays["rays_o"],
                                 rays["rays_d"], detach=det, with_normal=need_normal, generator=generator)
        else:
            field = self.object_field if view == "object" else self.human_field
            out = self.renderer(field, rays["rays_o"], rays["rays_d"], with_normal=need_normal, generator=generator)
        if "light_position" in rays:
            self.shading.apply(out, rays, shading)
        return out

    def _finite(self, name: str, value: torch.Tensor, step: int, what: str = "loss term") -> None:
        if not torch.isfinite(value).all():
            raise FloatingPointError(f"InterFusion: step {step}: {what} '{name}' has "
                                     f"{int((~torch.isfinite(value)).sum())} NaN/inf value(s); stopping instead of "
                                     f"training on it")

    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], Any]:
        """Training: the four SDS terms, the geometric terms and the regularisers; evaluation: render only."""
        if stage != "train":
            return {}, self._render_eval(batch, "scene")
        from zoo.models.field.constraints import human_geo_loss, nerf_occupancy, object_geo_loss, sample_geo_points

        step = int(self.global_step)
        shading = self.shading.choose(step, True, random.Random(step))
        dev = batch["rays_o"].device
        gen = torch.Generator(device=dev).manual_seed(_STEP_SEED * step + 1)
        terms: dict[str, torch.Tensor] = {}
        orient_on = self.weight("orient", step) > 0
        for view in VIEWS:
            w = self.weight(f"sds_{view}", step)
            out = self.render_view(batch, view, True, shading, with_normal=orient_on and view in ("object", "human"),
                                   generator=gen)
            self._finite(f"{view} rgb", out["rgb"], step, "the rendered image")
            if w != 0:
                kw: dict[str, Any] = {"azimuth": batch["azimuth"], "elevation": batch["elevation"], "step": step}
                if getattr(self.guidance, "takes_batch", False):
                    kw["batch"] = {**batch, **self.view_rays(batch, view, True)}
                g = self.guidance(out["rgb"].permute(0, 3, 1, 2), self._prompt(view), **kw)
                terms[f"sds_{view}"] = sum(v for k, v in g.items() if k.startswith("loss_"))
            if view in ("object", "human"):
                if orient_on:
                    o = orientation_loss(out["weights"], out["sample_normal"], out["dirs"], out["opacity"])
                    terms["orient"] = terms.get("orient", 0) + o
                terms["sparsity"] = terms.get("sparsity", 0) + sparsity_loss(out["opacity"])
        if self.weight("geo_human", step) > 0 or self.weight("geo_object", step) > 0:
            g = self.geo_cfg
            verts = self.body_verts.to(dev)
            pts = sample_geo_points(verts, int(g["near"]), int(g["uniform"]), float(self.human_field.bound),
                                    float(g["noise"]), gen)
            if int(g["box"]) > 0:  # uniform in the body's box (5 cm margin): the deep inside, which near-surface
                lo, hi = verts.min(0).values - 0.05, verts.max(0).values + 0.05  # samples never reach
                u = torch.rand(int(g["box"]), 3, generator=gen, device=dev)
                pts = torch.cat([pts, lo + u * (hi - lo)])
            occ = self.occupancy.query(pts)
            inside = occ["inside"].to(pts)
            if self.weight("geo_human", step) > 0:
                alpha = nerf_occupancy(self.human_field.density(pts))
                terms["geo_human"] = human_geo_loss(alpha, inside, occ["distance"].to(pts), float(g["sigma_d"]))
            if self.weight("geo_object", step) > 0:
                terms["geo_object"] = object_geo_loss(nerf_occupancy(self.object_field.density(pts)), inside)
        total = batch["rays_o"].new_zeros(())
        for name, value in terms.items():
            self._finite(name, value, step)
            w = self.weight(name, step)
            if w != 0:
                total = total + w * value
        for name in self.weights_sched:
            self.log(f"train_params/lambda_{name}", self.weight(name, step), on_step=True, on_epoch=False)
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}, None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Field schedules, and the object camera's centre traced every ``cameras.trace_every`` steps."""
        from zoo.models.field.constraints import occupied_centroid

        step = int(self.global_step)
        for prefix, f in (("human", self.human_field), ("object", self.object_field)):
            for k, v in (f.update_step(step) or {}).items():
                self.log(f"{prefix}_{k}", float(v), on_step=True, on_epoch=False)
        every = int(self.cam_cfg["trace_every"])
        if every > 0 and step > 0 and step % every == 0:
            with torch.no_grad():
                c = occupied_centroid(self.object_field, float(self.object_field.bound),
                                      int(self.cam_cfg["trace_resolution"]), float(self.cam_cfg["trace_threshold"]))
            if c is not None:
                self.center.copy_(c.to(self.center))
        for i, v in enumerate(self.center.tolist()):
            self.log(f"camera/center_{'xyz'[i]}", float(v), on_step=True, on_epoch=False)

    def _render_eval(self, batch: dict, view: str) -> dict[str, torch.Tensor]:
        shading = self.shading.choose(int(self.global_step), False, random.Random(0))
        with torch.inference_mode(False), torch.enable_grad():
            rays = {k: batch[k].clone() for k in ("rays_o", "rays_d", "light_position") if k in batch}
            out = self.render_view(rays, view, False, shading, with_normal=True, detach=False)
        return {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor)}

    def batch_size(self, batch: dict, out: Any) -> int:
        """Views in the batch."""
        return int(batch["rays_o"].shape[0])

    def metric_inputs(self, batch: dict, out: dict) -> tuple:
        """(scene renders (B, 3, H, W), interaction prompts) for clip_score."""
        return out["rgb"].permute(0, 3, 1, 2), [self.prompt_texts["interaction"]] * int(out["rgb"].shape[0])

    def _eval_step(self, batch: dict, stage: str) -> None:
        _, out = self.step(batch, stage)
        images, prompts = self.metric_inputs(batch, out)
        for m in self._metrics(stage):
            if getattr(m, "needs_reference", False):
                ref = getattr(self.guidance, "reference", None)
                if ref is None:
                    raise ValueError(f"InterFusion: metric {type(m).__name__} needs reference images, which only the "
                                     f"image_target guidance gives")
                m.update(images, ref({**batch, **self.view_rays(batch, "interaction", False)}).to(images))
            else:
                m.update(images, prompts)
        views = ("scene", "human", "object") if stage == "test" else ("scene",)
        for view in views:
            o = out if view == "scene" else self._render_eval(batch, view)
            self._collect(f"{stage}/{view}", batch, o)

    def predict_step(self, batch: dict, batch_idx: int = 0) -> torch.Tensor:
        """Scene renders (B, 3, H, W) of the batch's views."""
        return self._render_eval(batch, "scene")["rgb"].permute(0, 3, 1, 2)

    # ----------------------------------------------------------------- outputs
    def _frame(self, out: dict, i: int) -> np.ndarray:
        rgb = out["rgb"][i]
        normal = (F.normalize(out["normal"][i], dim=-1) * 0.5 + 0.5) * out["opacity"][i]
        return np.concatenate([_uint8(rgb), _uint8(normal), _uint8(out["opacity"][i].expand_as(rgb))], axis=1)

    def _collect(self, key: str, batch: dict, out: dict) -> None:
        idx = batch.get("index")
        frames = self._frames.setdefault(key, [])
        for i in range(out["rgb"].shape[0]):
            frames.append((int(idx[i]) if idx is not None else len(frames), self._frame(out, i)))

    def _root(self) -> Path | None:
        root = os.environ.get(RUN_DIR_ENV)
        if not root or (self._trainer is not None and not self.trainer.is_global_zero):
            return None
        return Path(root)

    def _write(self, stage: str) -> None:
        root = self._root()
        for key in [k for k in self._frames if k.startswith(f"{stage}/")]:
            frames = sorted(self._frames.pop(key), key=lambda f: f[0])
            if root is None or not frames or (stage == "val" and not self.out_cfg["val_images"]):
                continue
            view = key.split("/", 1)[1]
            out = root / "val" / f"step{int(self.global_step):06d}" if stage == "val" else root / "test" / view
            for i, img in frames:
                atomic_write_image(out / f"{i:03d}.png", img)
            write_gif(out / "turntable.gif", [img for _, img in frames], fps=float(self.out_cfg["gif_fps"]))

    def on_validation_epoch_end(self) -> None:
        """Metrics, and the scene turntable of this step."""
        super().on_validation_epoch_end()
        self._write("val")

    def on_test_epoch_end(self) -> None:
        """Metrics, turntables of the human, object and scene, the meshes, penetration and contact."""
        super().on_test_epoch_end()
        self._write("test")
        root = self._root()
        stats = self.export_meshes(root / "test" if root is not None else None)
        for k, v in stats.items():
            self.log(f"test/{k}", float(v))

    def export_meshes(self, out: Path | None) -> dict[str, float]:
        """Meshes of both fields in one ``scene.glb`` and the anchor body in ``anchor.glb`` (when ``out`` is given);
        returns the object's penetration volume into the anchor body and its own volume (cm^3), and its contact
        fraction (object surface within 2 cm of the body)."""
        import trimesh

        from zoo.models.field.constraints import penetration_volume
        from zoo.models.field.mesh import extract_mesh

        body = trimesh.Trimesh(self.body_verts.cpu().numpy(), self.body.faces.cpu().numpy(), process=False)
        meshes = {}
        for name, field in (("human", self.human_field), ("object", self.object_field)):
            try:
                meshes[name] = extract_mesh(field, resolution=int(self.out_cfg["mesh_resolution"]),
                                            threshold=self.out_cfg["mesh_threshold"])
            except ValueError as e:
                print(f"note: no {name} mesh: {e}", flush=True)
        stats: dict[str, float] = {}
        if "object" in meshes:
            pen = penetration_volume(self.body_verts.cpu(), self.body.faces.cpu(), meshes["object"])
            stats = {"penetration_cm3": float(pen["volume"]) * 1e6, "object_cm3": float(pen["object_volume"]) * 1e6,
                     "contact": float(pen["contact"])}
        if out is not None:
            scene = trimesh.Scene()
            for name, m in meshes.items():
                scene.add_geometry(m, node_name=name, geom_name=name)
            if meshes:
                with atomic_path(out / "scene.glb") as tmp:
                    scene.export(tmp, file_type="glb")
            with atomic_path(out / "anchor.glb") as tmp:
                body.export(tmp, file_type="glb")
        return stats

    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, np.ndarray]]:
        """Scene views of the first ``n`` cameras of a test batch."""
        sub = {k: (v[:n] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in batch.items()}
        out = self._render_eval(sub, "scene")
        return [(f"scene{i}", self._frame(out, i)) for i in range(out["rgb"].shape[0])]
