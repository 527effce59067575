"""Feature lifters: one prompt embedding -> one embedding per rendered view.

InteractVLM conditions the SAM prompt on the camera of each view ("vi_v1" camera
encoder, ``VIv1CamPoseEncoder`` in model/components.py of saidwivedi/InteractVLM, used
by ``process_embeddings`` in model/InteractVLM.py and selected by scripts/run_train.sh):
the 5 normalised camera numbers of a view (dist/10, elev/360, azim/360, (x+1)/2,
(y+1)/2) go through a shared MLP Linear(5->128) ReLU Linear(128->128) ReLU, then a
view-specific Linear(128->256) and a sigmoid; the token embedding is multiplied by that
gate, giving one prompt per view. Their weights start Xavier-uniform with zero biases.

Official weights: InteractVLM keeps the encoder under ``cam_pose_encoder.``:
``spatial_encoder.{0,2}.{weight,bias}`` (the shared MLP) and ``view_transforms.{v}.{weight,bias}``
(one Linear(128->256) per view, weight (256, 128)). :func:`convert_official_lifter` maps them onto
:class:`CameraLifter`'s ``shared.*``, ``view_weight`` (V, 128, 256) and ``view_bias`` (V, 256);
``CameraLifter(weights=...)`` reads either layout from a file.

The V gated tokens go to SAM together (``prompt_mode: shared``, zoo.models.localizer.mvloc_sam);
the identity lifter's V identical tokens are then InteractVLM's no-lifter setting.
"""
from __future__ import annotations

import re
from typing import Any

import lightning as L
import torch
from torch import nn

from zoo.core.hub import CheckpointError, Pretrained
from zoo.core.interfaces import Lifter
from zoo.core.registry import register

__all__ = ["CameraLifter", "IdentityLifter", "convert_official_lifter", "OFFICIAL_PREFIX"]

OFFICIAL_PREFIX = "cam_pose_encoder."
_OFFICIAL_KEY = re.compile(r"^(?:.*\.)?cam_pose_encoder\.(spatial_encoder\.[02]\.(?:weight|bias)|"
                           r"view_transforms\.(\d+)\.(?:weight|bias))$")
_OURS = ("shared.0.weight", "shared.0.bias", "shared.2.weight", "shared.2.bias", "view_weight", "view_bias")


def _official_expected(num_views: int | str = "V") -> str:
    views = f"0..{num_views - 1}" if isinstance(num_views, int) else "v"
    return (f"{OFFICIAL_PREFIX}spatial_encoder.{{0,2}}.{{weight,bias}} and "
            f"{OFFICIAL_PREFIX}view_transforms.{{{views}}}.{{weight,bias}} (weight (256, 128)) "
            f"(InteractVLM's VIv1CamPoseEncoder), or ours: {', '.join(_OURS)}")


def convert_official_lifter(state: dict, source: str = "state_dict", num_views: int | None = None) -> dict:
    """:class:`CameraLifter` state (shared.*, view_weight, view_bias) from InteractVLM's ``cam_pose_encoder.*`` keys.

    ``state`` may be a whole InteractVLM state dict (the other keys are ignored; any prefix before
    ``cam_pose_encoder.`` is accepted, e.g. a PEFT wrapper's) or the encoder's own keys. Per view v
    the official ``view_transforms.{v}.weight`` (out, hidden) becomes ``view_weight[v]`` (hidden, out).
    ``num_views`` (when given) must match the file's. A layout without those keys, a missing view or
    part, or inconsistent shapes raise :class:`zoo.core.hub.CheckpointError` naming ``source`` and the
    keys expected.
    """
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a state dict with {_official_expected()}, got {type(state).__name__}")
    found: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _OFFICIAL_KEY.match(str(key)) if isinstance(key, str) else None
        if m is None:
            bare = f"{OFFICIAL_PREFIX}{key}" if isinstance(key, str) else None
            m = _OFFICIAL_KEY.match(bare) if bare else None
            if m is None:
                continue
        if m.group(1) in found:
            raise CheckpointError(f"{source}: {m.group(1)} appears twice (under two prefixes); expected one "
                                  f"camera encoder with {_official_expected()}")
        found[m.group(1)] = value
    views = sorted({int(k.split(".")[1]) for k in found if k.startswith("view_transforms.")})
    nv = len(views) if num_views is None else int(num_views)
    need = [f"spatial_encoder.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    need += [f"view_transforms.{v}.{p}" for v in range(nv) for p in ("weight", "bias")]
    missing = [k for k in need if k not in found]
    extra = [f"view_transforms.{v}" for v in views if v >= nv]
    if not found:
        got = ", ".join(map(str, list(state)[:5])) + (", ..." if len(state) > 5 else "")
        what = f"no {OFFICIAL_PREFIX}* keys (got {got or 'an empty dict'})"
    elif missing:
        what = f"missing {', '.join(OFFICIAL_PREFIX + k for k in missing[:6])}"
    elif extra:
        what = f"views {extra} beyond num_views={nv}"
    elif nv < 1:
        what = f"no {OFFICIAL_PREFIX}view_transforms.* keys"
    else:
        what = ""
    if what:
        raise CheckpointError(f"{source}: not an InteractVLM camera lifter: {what}; expected "
                              f"{_official_expected(nv if nv >= 1 else 'V')}")
    if any(not isinstance(v, torch.Tensor) for v in found.values()):
        bad = next(k for k, v in found.items() if not isinstance(v, torch.Tensor))
        raise CheckpointError(f"{source}: {OFFICIAL_PREFIX}{bad} is a {type(found[bad]).__name__}, expected a tensor")
    w0, w2 = found["spatial_encoder.0.weight"], found["spatial_encoder.2.weight"]
    hidden = w0.shape[0] if w0.ndim == 2 else -1
    out_dim = found["view_transforms.0.weight"].shape[0] if found["view_transforms.0.weight"].ndim == 2 else -1
    shapes = {"spatial_encoder.0.bias": (hidden,), "spatial_encoder.2.weight": (hidden, hidden),
              "spatial_encoder.2.bias": (hidden,)}
    for v in range(nv):
        shapes[f"view_transforms.{v}.weight"] = (out_dim, hidden)
        shapes[f"view_transforms.{v}.bias"] = (out_dim,)
    bad = [f"{OFFICIAL_PREFIX}{k} {tuple(found[k].shape)} (expected {s})" for k, s in shapes.items()
           if tuple(found[k].shape) != s]
    if w0.ndim != 2 or w2.ndim != 2 or bad:
        raise CheckpointError(f"{source}: inconsistent camera lifter shapes: "
                              f"{'; '.join(bad[:3]) or f'spatial_encoder.0.weight {tuple(w0.shape)}'}; expected "
                              f"{_official_expected(nv)}")
    return {
        "shared.0.weight": w0, "shared.0.bias": found["spatial_encoder.0.bias"],
        "shared.2.weight": w2, "shared.2.bias": found["spatial_encoder.2.bias"],
        "view_weight": torch.stack([found[f"view_transforms.{v}.weight"].t() for v in range(nv)]).contiguous(),
        "view_bias": torch.stack([found[f"view_transforms.{v}.bias"] for v in range(nv)]),
    }


def _check(owner: str, prompt: torch.Tensor, cams: torch.Tensor, num_views: int, in_dim: int,
           embed_dim: int) -> None:
    if prompt.ndim != 2 or prompt.shape[1] != embed_dim:
        raise ValueError(f"{owner}.forward: expected prompt of shape (B, {embed_dim}), got {tuple(prompt.shape)}")
    if cams.ndim != 2 or tuple(cams.shape) != (num_views, in_dim):
        raise ValueError(f"{owner}.forward: expected cams of shape ({num_views}, {in_dim}) (one row of camera "
                         f"numbers per view), got {tuple(cams.shape)}")


@register("lifter", "camera_lifter")
class CameraLifter(Pretrained, Lifter, L.LightningModule):
    """Per-view sigmoid gate from camera numbers, multiplied into the prompt (InteractVLM's vi_v1 encoder).

    ``forward(prompt (B, embed_dim), cams (num_views, in_dim)) -> (B, num_views, embed_dim)``.
    The per-view output layers are one (num_views, hidden, embed_dim) weight applied with
    an einsum, equal to ``num_views`` separate Linear layers. ``weights``: a file with an
    InteractVLM checkpoint (its ``cam_pose_encoder.*`` keys, converted by
    :func:`convert_official_lifter`) or this class's own state; None keeps the Xavier init.
    """

    def __init__(self, num_views: int = 4, in_dim: int = 5, hidden: int = 128, embed_dim: int = 256,
                 weights: str | None = None) -> None:
        super().__init__()
        for name, v in (("num_views", num_views), ("in_dim", in_dim), ("hidden", hidden), ("embed_dim", embed_dim)):
            if int(v) < 1:
                raise ValueError(f"CameraLifter: {name} must be >= 1, got {v}")
        self.save_hyperparameters()
        self.shared = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.view_weight = nn.Parameter(torch.empty(num_views, hidden, embed_dim))
        self.view_bias = nn.Parameter(torch.zeros(num_views, embed_dim))
        for layer in self.shared:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        for v in range(num_views):
            # Xavier per view, as each view's own Linear(hidden -> embed_dim) would be initialised.
            nn.init.xavier_uniform_(self.view_weight.data[v].T)

    def convert_checkpoint(self, obj: Any, source: str) -> dict:
        """Our layout as is; InteractVLM's ``cam_pose_encoder.*`` layout converted (see :func:`convert_official_lifter`)."""
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if isinstance(obj, dict) and set(_OURS) <= set(obj):
            return obj
        return convert_official_lifter(obj, source, num_views=int(self.hparams.num_views))

    def gates(self, cams: torch.Tensor) -> torch.Tensor:
        """The per-view sigmoid gates (num_views, embed_dim) for camera numbers (num_views, in_dim)."""
        h = self.shared(cams.to(self.view_weight.dtype))
        return torch.sigmoid(torch.einsum("vh,vhe->ve", h, self.view_weight) + self.view_bias)

    def forward(self, prompt: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        """One prompt per view: prompt[:, None] * gates(cams)[None] -> (B, num_views, embed_dim)."""
        hp = self.hparams
        _check("CameraLifter", prompt, cams, hp.num_views, hp.in_dim, hp.embed_dim)
        return prompt.unsqueeze(1) * self.gates(cams).to(prompt.dtype).unsqueeze(0)


@register("lifter", "identity")
class IdentityLifter(Lifter, L.LightningModule):
    """No camera conditioning: the same prompt for every view (the ablation without the lifter)."""

    def __init__(self, num_views: int = 4, in_dim: int = 5, hidden: int = 128, embed_dim: int = 256) -> None:
        super().__init__()
        self.save_hyperparameters()

    def forward(self, prompt: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        """prompt (B, embed_dim) repeated per view -> (B, num_views, embed_dim); cams only checked."""
        hp = self.hparams
        _check("IdentityLifter", prompt, cams, hp.num_views, hp.in_dim, hp.embed_dim)
        return prompt.unsqueeze(1).expand(-1, hp.num_views, -1)
