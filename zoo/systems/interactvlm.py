"""InteractVLM (CVPR 2025): a VLM's contact tokens prompt Render-Localize-Lift.

The VLM reads the image and a question and answers in text that names the touching body parts before a
contact token ("The left hand, right hand touch the chair: [HCON]"). The language model's last hidden
state at the position whose input is that token is projected to the localizer's width by Γ
(:class:`zoo.models.vlm.projection.ContactProjection`, one MLP per token kind), gated per view by the
camera lifter, and prompts the multi-view SAM localizer; the masks are lifted onto the body's vertices
(``human`` branch, ``[HCON]``) or the object's points (``object`` branch, ``[OCON]``), each a
:class:`zoo.models.rll.branch.RLLBranch` (the reusable Render-Localize-Lift part).

Modes (``mode``):

* ``binary``: DAMON binary human contact, question ``tasks.binary`` (default template task
  ``human_contact``);
* ``semantic``: per-object human contact, one question per (image, object) naming the object
  (``human_contact_object``; DAMON with ``contact_mode: semantic``, batches carry ``object_name``);
* ``object``: object affordance (PIAD / LEMON batches with ``points``), ``object_affordance``;
* ``joint``: both branches; each batch goes to the branch its keys ask for (a batch with ``points``
  is an object batch), as the ``mixed`` DataModule gives one dataset per batch.

Loss (InteractVLM): ``w_token`` x token cross-entropy on the answer + the branch's 2D loss per view
(focal x2 + Dice x1, + heatmap MSE x2 for objects) + its 3D loss (human: focal + sparsity, x3;
object: Dice + beta MSE), every weight in the recipe. Answers name the touching parts before the
token, left out with probability ``part_dropout`` (0.5, the fixed official code) in training.

Evaluation (``eval_mode: generate``, the fixed official code): validation and test *generate* the
answer greedily and take the token state from the generated sequence; a sample whose answer holds no
contact token is an empty prediction (all scores 0; counted as ``<stage>/gen_empty``, and named in a
warning), an answer that does not close within ``max_new_tokens`` is counted as
``<stage>/gen_unclosed`` (its token, if any, is still used). ``eval_mode: teacher_forced`` evaluates
with the target answer fed in (the first release's behaviour, the bug its FIX.md describes; kept for
comparison only).

Metrics: every entry of ``metrics`` applies to the branch of its ``log_prefix`` (``object/...`` ->
object branch, ``human/...`` -> human branch; no prefix -> the only branch, or the human one in
``joint`` mode).
"""
from __future__ import annotations

import zlib
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from zoo.core.batch import need
from zoo.core.registry import register
from zoo.data.formats import IMAGENET_MEAN, IMAGENET_STD
from zoo.data.templates import DEFAULT_TEMPLATES, load_templates
from zoo.models.rll.branch import BRANCHES
from zoo.models.vlm.projection import PROJECTIONS
from zoo.systems.base import System
from zoo.systems.optim import Optim

__all__ = ["InteractVLM", "MODES", "DEFAULT_TASKS", "PART_PHRASES", "contact_parts"]

MODES = ("binary", "semantic", "object", "joint")
DEFAULT_TASKS = {"binary": "human_contact", "semantic": "human_contact_object", "object": "object_affordance"}

# SMPL part (skinning joint) -> the words an answer uses for it; parts with the same words are one part.
PART_PHRASES = {
    "pelvis": "hips", "left_hip": "left thigh", "right_hip": "right thigh", "spine1": "torso", "spine2": "torso",
    "spine3": "chest", "left_knee": "left leg", "right_knee": "right leg", "left_ankle": "left foot",
    "right_ankle": "right foot", "left_foot": "left foot", "right_foot": "right foot", "neck": "neck",
    "left_collar": "left shoulder", "right_collar": "right shoulder", "head": "head", "left_shoulder": "left arm",
    "right_shoulder": "right arm", "left_elbow": "left forearm", "right_elbow": "right forearm",
    "left_wrist": "left hand", "right_wrist": "right hand", "left_hand": "left hand", "right_hand": "right hand",
}


def contact_parts(label: np.ndarray, part_of_vertex: np.ndarray, min_vertices: int = 5) -> list[str]:
    """The body parts an answer names for per-vertex contact ``label`` (N,): the phrases of
    :data:`PART_PHRASES` with at least ``min_vertices`` contact vertices, in SMPL part order."""
    from zoo.body.mesh import SMPL_PART_NAMES

    hit = np.asarray(label).reshape(-1) > 0.5
    counts = np.bincount(part_of_vertex[hit], minlength=len(SMPL_PART_NAMES))
    phrases: dict[str, int] = {}
    for idx, name in enumerate(SMPL_PART_NAMES):
        words = PART_PHRASES[name]
        phrases[words] = phrases.get(words, 0) + int(counts[idx])
    order = list(dict.fromkeys(PART_PHRASES[n] for n in SMPL_PART_NAMES))
    return [w for w in order if phrases[w] >= int(min_vertices)]


def _subset(batch: dict, keep: list[int], size: int) -> dict:
    """The samples ``keep`` of a batch (tensors / lists with ``size`` rows are indexed; the rest kept)."""
    idx = torch.as_tensor(keep, dtype=torch.long)
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == size:
            out[k] = v[idx.to(v.device)]
        elif isinstance(v, (list, tuple)) and len(v) == size:
            out[k] = [v[i] for i in keep]
        else:
            out[k] = v
    return out


@register("system", "interactvlm")
class InteractVLM(System):
    """VLM contact tokens -> Render-Localize-Lift (see the module docstring).

    Args:
        vlm: a ``vlm`` sub-recipe (llava, qwen2_vl; tiny or a local full model).
        mode: binary | semantic | object | joint.
        human, object: Render-Localize-Lift branch sub-recipes (``{name: rll, surface, localizer, lifter,
            loss_2d, loss_3d, prompt_mode}``); the modes need ``human`` (binary, semantic), ``object``
            (object) or both (joint).
        projection: Γ, ``{name: mlp, out_dim: null}`` (null: the localizer's width, 256 for SAM).
        templates: the question / answer template file (zoo.data.templates).
        tasks: template task per mode, overriding :data:`DEFAULT_TASKS`.
        part_dropout: probability that a training answer leaves out the body parts (0.5).
        part_min_vertices: contact vertices a body part needs to be named in an answer.
        w_token: weight of the token cross-entropy.
        eval_mode: ``generate`` (validation / test generate the answer) or ``teacher_forced``.
        max_new_tokens: the generation budget per answer.
        template_seed: seed of the question / answer draws (per sample, epoch and object).
        optim, metrics, weights: as every system (zoo.systems.base).
    """

    subcomponents: ClassVar[dict[str, Any]] = {"vlm": "vlm", "projection": PROJECTIONS, "human": BRANCHES,
                                               "object": BRANCHES, "metrics": "metric"}
    eval_settings: ClassVar[tuple[str, ...]] = ("metrics", "eval_mode", "max_new_tokens")

    def __init__(
        self,
        vlm: dict,
        optim: Optim | dict,
        metrics: list[dict],
        mode: Literal["binary", "semantic", "object", "joint"] = "semantic",
        human: dict | None = None,
        object: dict | None = None,  # noqa: A002 - the recipe key
        projection: dict | None = None,
        templates: str = DEFAULT_TEMPLATES,
        tasks: dict[str, str] | None = None,
        part_dropout: float = 0.5,
        part_min_vertices: int = 5,
        w_token: float = 1.0,
        eval_mode: Literal["generate", "teacher_forced"] = "generate",
        max_new_tokens: int = 32,
        template_seed: int = 0,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"InteractVLM: mode must be one of {', '.join(MODES)}, got {mode!r}")
        need_human, need_object = mode in ("binary", "semantic", "joint"), mode in ("object", "joint")
        for key, needed, cfg in (("human", need_human, human), ("object", need_object, object)):
            if needed and not cfg:
                raise ValueError(f"InteractVLM: mode '{mode}' needs the '{key}' branch (system.{key}: {{name: rll, "
                                 f"surface: ..., localizer: ..., lifter: ..., loss_2d: ..., loss_3d: ...}})")
        if not 0.0 <= part_dropout <= 1.0:
            raise ValueError(f"InteractVLM: part_dropout must be in [0, 1], got {part_dropout}")
        if eval_mode not in ("generate", "teacher_forced"):
            raise ValueError(f"InteractVLM: eval_mode must be generate or teacher_forced, got {eval_mode!r}")
        self.save_hyperparameters()
        self._gen_log: dict[str, dict[str, list[str]]] = {}

    # ----------------------------------------------------------------- build
    def build(self) -> None:
        """VLM, branches and projection heads (one per branch token), templates checked against the VLM's tokens."""
        hp = self.hparams
        self.templates = load_templates(hp.templates)
        self.vlm = self.build_part("vlm")
        mode = hp.mode
        self.branch_names = [b for b in ("human", "object") if (b == "human" and mode in ("binary", "semantic", "joint"))
                             or (b == "object" and mode in ("object", "joint"))]
        tasks = {**DEFAULT_TASKS, **dict(hp.tasks or {})}
        unknown = sorted(set(hp.tasks or {}) - set(DEFAULT_TASKS))
        if unknown:
            raise ValueError(f"InteractVLM: tasks has unknown mode(s) {unknown} (modes with a task: "
                             f"{', '.join(DEFAULT_TASKS)})")
        self.task_of = {"human": tasks["semantic" if mode in ("semantic", "joint") else "binary"],
                        "object": tasks["object"]}
        if mode == "joint" and hp.tasks and "binary" in hp.tasks and "semantic" not in hp.tasks:
            self.task_of["human"] = tasks["binary"]
        self.token_of: dict[str, str] = {}
        for b in self.branch_names:
            task = self.templates[self.task_of[b]]
            if task.token not in self.vlm.tokens:
                raise ValueError(f"InteractVLM: template task '{task.name}' ({self.templates.path}) answers with "
                                 f"{task.token}, which is not one of the VLM's contact tokens {self.vlm.tokens} "
                                 f"(system.vlm.tokens)")
            if b == "human" and mode == "semantic" and not task.object_wise:
                raise ValueError(f"InteractVLM: mode 'semantic' asks per object, but template task '{task.name}' "
                                 f"({self.templates.path}) is not object_wise")
            self.token_of[b] = task.token
        branches = {}
        for b in self.branch_names:
            branches[b] = self.build_part(b, {**dict(hp[b]), "owner": f"InteractVLM.{b}"})
        self.human = branches.get("human")
        self.object = branches.get("object")
        width = {int(br.embed_dim) for br in branches.values()}
        if len(width) != 1:
            raise ValueError(f"InteractVLM: the branches' localizers have different prompt widths {sorted(width)}")
        d = int(self.vlm.hf_model().config.get_text_config().hidden_size)
        proj = {"name": "mlp", **dict(hp.projection or {})}
        if proj.get("out_dim") is None:
            proj["out_dim"] = width.pop()
        proj.setdefault("tokens", sorted({self.token_of[b] for b in self.branch_names}))
        self.projection = self.build_part("projection", {**proj, "in_dim": d})
        self._part_of_vertex: np.ndarray | None = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # noqa: D102
        theirs = ((checkpoint.get("hyper_parameters") or {}).get("vlm") or {}).get("tokens")
        if theirs is not None and list(theirs) != list(self.vlm.tokens):
            raise ValueError(f"InteractVLM: the checkpoint was trained with contact tokens {list(theirs)}, but the "
                             f"recipe's system.vlm.tokens are {list(self.vlm.tokens)}; the new embedding rows and "
                             f"projection heads belong to the checkpoint's tokens (set system.vlm.tokens={list(theirs)})")

    def convert_checkpoint(self, obj: Any, source: str) -> dict:
        """A whole-system weights file; an export trained with other contact tokens is refused, naming both."""
        from pathlib import Path

        import yaml

        cfg = Path(source) / "config.yaml" if Path(source).is_dir() else Path(source).with_name("config.yaml")
        if cfg.is_file():
            hp = (yaml.safe_load(cfg.read_text()) or {}).get("hparams") or {}
            theirs = (hp.get("vlm") or {}).get("tokens")
            if theirs is not None and list(theirs) != list(self.vlm.tokens):
                raise ValueError(f"InteractVLM: {source} was trained with contact tokens {list(theirs)}, but the "
                                 f"recipe's system.vlm.tokens are {list(self.vlm.tokens)} (set system.vlm.tokens="
                                 f"{list(theirs)})")
        return super().convert_checkpoint(obj, source)

    # ----------------------------------------------------------------- data -> text
    def branch_of(self, batch: dict) -> str:
        """Which branch a batch is for: the only one, or (joint) object when it carries ``points``."""
        if len(self.branch_names) == 1:
            return self.branch_names[0]
        return "object" if "points" in batch else "human"

    def _rll(self, branch: str):
        return self.human if branch == "human" else self.object

    def _token(self, branch: str) -> tuple[str, int]:
        """The contact token a branch answers with, and its id in the VLM's tokenizer."""
        token = self.token_of[branch]
        return token, self.vlm.token_ids[self.vlm.tokens.index(token)]

    def part_of_vertex(self) -> np.ndarray:
        """SMPL part index per body vertex (from the human branch body's skinning weights), cached."""
        if self._part_of_vertex is None:
            from zoo.body.mesh import vertex_part_labels

            self._part_of_vertex = vertex_part_labels(self.human.surface.body().lbs_weights)
        return self._part_of_vertex

    def images(self, batch: dict, where: str) -> list[torch.Tensor]:
        """The batch's photos as (3, H, W) tensors in [0, 1] (the DataModules give them ImageNet-normalised)."""
        img = need(batch, "image", "InteractVLM", where, "(B, 3, H, W) ImageNet-normalised photos (data.load_images: true)")
        mean = torch.tensor(IMAGENET_MEAN, device=img.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=img.device).view(1, 3, 1, 1)
        return list((img.float() * std + mean).clamp(0, 1).cpu())

    def _slots(self, batch: dict, b: int, task, where: str) -> dict[str, str]:
        slots = {}
        if task.object_wise:
            names = need(batch, "object_name", "InteractVLM", where,
                         f"per-sample object names for the object-wise template task '{task.name}'")
            slots["object"] = str(names[b])
        if "affordance_name" in batch:
            slots["affordance"] = str(batch["affordance_name"][b])
        return slots

    def texts(self, batch: dict, branch: str, stage: str) -> tuple[list[str], list[str]]:
        """(questions, answers) of a batch: drawn per sample from the templates, seeded by sample, object and
        (in training) epoch; training answers drop the body parts with probability ``part_dropout``."""
        hp = self.hparams
        where = self.where(stage)
        task = self.templates[self.task_of[branch]]
        rll = self._rll(branch)
        B = rll.surface.batch_size(batch, where)
        index = batch.get("index")
        epoch = int(self.current_epoch) if (stage == "train" and self._trainer is not None) else 0
        labels = batch.get(rll.surface.label_key) if branch == "human" else None
        questions, answers = [], []
        for b in range(B):
            slots = self._slots(batch, b, task, where)
            i = int(index[b]) if index is not None else b
            rng = np.random.default_rng([int(hp.template_seed), int(stage == "train"), epoch, i,
                                         zlib.crc32("/".join(sorted(slots.values())).encode())])
            questions.append(task.question(rng, **slots))
            parts = (contact_parts(labels[b].detach().cpu().numpy(), self.part_of_vertex(), hp.part_min_vertices)
                     if labels is not None else [])
            answers.append(task.answer(parts, rng, drop_prob=float(hp.part_dropout) if stage == "train" else 0.0,
                                       **slots))
        return questions, answers

    # ----------------------------------------------------------------- model
    def _prompts(self, states: list[torch.Tensor], token: str, where: str, names: list[str]) -> torch.Tensor:
        firsts = []
        for s, name in zip(states, names, strict=True):
            if s.shape[0] == 0:
                raise ValueError(f"InteractVLM.{where}: sample {name}: the answer has no {token} token (the answer "
                                 f"was cut? check the template's answers end in {{token}})")
            firsts.append(s[0])
        return self.projection(torch.stack(firsts).float(), token)

    def sample_names(self, batch: dict, n: int) -> list[str]:
        """Names of the batch's samples for logs (image name, object / affordance, else the index)."""
        out = []
        for b in range(n):
            parts = [str(batch[k][b]) for k in ("imgname", "image_id", "object_name", "affordance_name")
                     if isinstance(batch.get(k), (list, tuple)) and len(batch[k]) > b]
            if not parts and batch.get("index") is not None:
                parts = [f"index {int(batch['index'][b])}"]
            out.append(" / ".join(parts) or f"sample {b}")
        return out

    def teacher_forced(self, batch: dict, branch: str, stage: str) -> dict[str, Any]:
        """The target answer fed in: token CE, the states at the contact token and the branch's outputs."""
        where = self.where(stage)
        questions, answers = self.texts(batch, branch, stage)
        images = self.images(batch, where)
        inputs = self.vlm.build_inputs(images, questions, answers)
        vout = self.vlm(inputs)
        token, tid = self._token(branch)
        states = self.vlm.hidden_at(vout["hidden"], inputs["input_ids"].to(vout["hidden"].device), tid)
        prompts = self._prompts(states, token, where, self.sample_names(batch, len(states)))
        out = self._rll(branch)(batch, prompts, None, where)
        out.update(token_loss=vout["loss"], answers=answers, questions=questions, branch=branch,
                   has_token=[True] * len(answers))
        return out

    def generated(self, batch: dict, branch: str, stage: str) -> dict[str, Any]:
        """Generation: the answers the VLM writes, the states at the contact tokens it wrote, the branch's
        outputs for the samples that have one and all-zero scores (an empty prediction) for the others."""
        where = self.where(stage)
        rll = self._rll(branch)
        questions, answers = self.texts(batch, branch, stage)
        images = self.images(batch, where)
        token, tid = self._token(branch)
        gens = self.vlm.generate_answers(images, questions, int(self.hparams.max_new_tokens), token_ids=[tid])
        B = len(gens)
        keep = [b for b, g in enumerate(gens) if g.states.shape[0] > 0]
        labels = need(batch, rll.surface.label_key, "InteractVLM", where, "per-element labels")
        scores = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        out: dict[str, Any] = {"sub": None}
        if keep:
            sub = _subset(batch, keep, B)
            prompts = self.projection(torch.stack([gens[b].states[0] for b in keep]).float(), token)
            sub_out = rll(sub, prompts, None, where)
            scores[torch.as_tensor(keep, device=scores.device)] = sub_out["scores"].float()
            out["sub"], out["sub_batch"] = sub_out, sub
        names = self.sample_names(batch, B)
        out.update(scores=scores, answers=[g.text for g in gens], questions=questions, targets=answers, branch=branch,
                   images=images,
                   has_token=[g.states.shape[0] > 0 for g in gens], closed=[g.closed for g in gens], names=names)
        return out

    def forward(self, batch: dict, stage: str = "test") -> dict[str, Any]:
        """Outputs for a batch: generated (validation / test / predict with ``eval_mode: generate``) or
        teacher-forced (training)."""
        branch = self.branch_of(batch)
        if stage == "train" or self.hparams.eval_mode == "teacher_forced":
            return self.teacher_forced(batch, branch, stage)
        return self.generated(batch, branch, stage)

    def step(self, batch: dict, stage: str) -> tuple[dict[str, torch.Tensor], dict]:
        """Training: token CE + the branch's 2D and 3D losses. Evaluation: the same on the generated answers'
        samples that have a contact token (the token CE teacher-forced), and the generation counts."""
        hp = self.hparams
        where = self.where(stage)
        out = self(batch, stage)
        branch = out["branch"]
        rll = self._rll(branch)
        if "token_loss" in out:
            losses = rll.losses(batch, out, where)
            tok = out["token_loss"]
        else:
            questions, targets = out["questions"], out["targets"]
            inputs = self.vlm.build_inputs(out["images"], questions, targets)
            with torch.no_grad():
                tok = self.vlm(inputs)["loss"]
            if out["sub"] is not None:
                losses = rll.losses(out["sub_batch"], out["sub"], where)
            else:
                zero = out["scores"].sum() * 0.0
                losses = {"loss": zero, "loss_2d": zero, "loss_3d": zero}
            self._count(out, stage)
        losses = {**losses, "loss": losses["loss"] + float(hp.w_token) * tok, "loss_token": tok}
        if stage != "train":
            losses = {f"{branch}_{k}" if len(self.branch_names) > 1 else k: v for k, v in losses.items()}
        elif len(self.branch_names) > 1:
            losses = {"loss": losses["loss"], **{f"{branch}_{k}": v for k, v in losses.items()}}
        return losses, out

    def _count(self, out: dict, stage: str) -> None:
        """Log how many generated answers had no contact token / did not close, and keep their names."""
        log = self._gen_log.setdefault(stage, {"empty": [], "unclosed": []})
        empty = [n for n, h in zip(out["names"], out["has_token"], strict=True) if not h]
        unclosed = [n for n, c in zip(out["names"], out["closed"], strict=True) if not c]
        log["empty"].extend(empty)
        log["unclosed"].extend(unclosed)
        B = len(out["names"])
        dev = out["scores"].device
        self.log(f"{stage}/gen_empty", torch.tensor(float(len(empty)), device=dev), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True, batch_size=B)
        self.log(f"{stage}/gen_unclosed", torch.tensor(float(len(unclosed)), device=dev), on_step=False,
                 on_epoch=True, reduce_fx="sum", sync_dist=True, batch_size=B)

    def _eval_epoch_end(self, stage: str) -> None:
        log = self._gen_log.pop(stage, None)
        if log:
            for what, text in (("empty", "generated no contact token (scored as empty predictions)"),
                               ("unclosed", f"did not close within max_new_tokens={self.hparams.max_new_tokens}")):
                names = log[what]
                if names:
                    shown = "; ".join(names[:5]) + (f"; ... ({len(names) - 5} more)" if len(names) > 5 else "")
                    rank_zero_warn(f"InteractVLM {stage}: {len(names)} answer(s) {text}: {shown}")
        super()._eval_epoch_end(stage)

    def batch_size(self, batch: dict, out: Any) -> int:
        """Samples in the batch."""
        return int(out["scores"].shape[0])

    def metric_inputs(self, batch: dict, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, labels): per-vertex contact (human) or per-point affordance (object)."""
        rll = self._rll(out["branch"])
        labels = need(batch, rll.surface.label_key, "InteractVLM", "metric_inputs", "per-element labels")
        return out["scores"].float(), labels.float()

    def _metric_branch(self, i: int) -> str:
        prefix = (getattr(self, "metric_prefixes", None) or [""] * (i + 1))[i]
        for b in ("object", "human"):
            if prefix.startswith(b):
                return b
        return self.branch_names[0]

    def _eval_step(self, batch: dict, stage: str) -> None:
        losses, out = self.step(batch, stage)
        self.log_losses(losses, stage, self.batch_size(batch, out))
        inputs = self.metric_inputs(batch, out)
        for i, m in enumerate(self._metrics(stage)):
            if self._metric_branch(i) == out["branch"]:
                m.update(*inputs, **self.metric_batch_inputs(m, batch, stage))

    def predict_step(self, batch: dict, batch_idx: int = 0) -> dict[str, Any]:
        """{answers, scores (B, N)} for a batch (generated)."""
        out = self(batch, "predict")
        return {"answers": out["answers"], "scores": out["scores"], "branch": out["branch"]}

    # ----------------------------------------------------------------- inference on photos
    @torch.no_grad()
    def answer_images(self, images: list, objects: list[str | None] | None = None, branch: str = "human",
                      points: torch.Tensor | None = None, affordance: str | None = None) -> list[dict[str, Any]]:
        """Answer for photos without labels (tools/infer.py): per image {question, answer, closed, scores (N,)
        or None when the answer has no contact token}. ``images``: PIL images or uint8 arrays; ``objects``:
        the object asked about per image (object-wise tasks); ``points`` (B, P, 3) for the object branch."""
        from zoo.models.vlm.base import _to_pil

        if branch not in self.branch_names:
            raise ValueError(f"InteractVLM: this model has no '{branch}' branch (branches: {self.branch_names})")
        task = self.templates[self.task_of[branch]]
        objects = list(objects) if objects is not None else [None] * len(images)
        questions = []
        for i, obj in enumerate(objects):
            if task.object_wise and not obj:
                raise ValueError(f"InteractVLM: template task '{task.name}' asks about an object; give object=NAME "
                                 f"(image {i})")
            slots = {"object": str(obj)} if task.object_wise else {}
            if affordance:
                slots["affordance"] = affordance
            questions.append(task.question(np.random.default_rng([int(self.hparams.template_seed), i]), **slots))
        pil = [_to_pil(im) for im in images]
        token, tid = self._token(branch)
        gens = self.vlm.generate_answers(pil, questions, int(self.hparams.max_new_tokens), token_ids=[tid])
        rll = self._rll(branch)
        results = []
        for i, g in enumerate(gens):
            res = {"question": questions[i], "answer": g.text, "closed": g.closed, "scores": None}
            if g.states.shape[0]:
                batch = {rll.surface.label_key: torch.zeros(1, 1)}
                if points is not None:
                    batch["points"] = points[i:i + 1]
                prompts = self.projection(g.states[:1].float(), token)
                res["scores"] = rll(batch, prompts, None, "answer_images")["scores"][0].float().cpu()
            results.append(res)
        return results

    @torch.no_grad()
    def figures(self, batch: dict, n: int = 3) -> list[tuple[str, np.ndarray]]:
        """For the first ``n`` samples whose generated answer has a contact token: the views with predicted
        and ground-truth masks and the lifted scores, titled with the generated answer."""
        B = int(batch[self._rll(self.branch_of(batch)).surface.label_key].shape[0])
        sub = _subset(batch, list(range(min(n, B))), B)
        out = self(sub, "test")
        if "token_loss" in out:
            return self._rll(out["branch"]).figures(sub, out, list(out["answers"]))
        if out["sub"] is None:
            return []
        titles = [f"\"{out['answers'][b]}\"" for b, h in enumerate(out["has_token"]) if h]
        return self._rll(out["branch"]).figures(out["sub_batch"], out["sub"], titles)
