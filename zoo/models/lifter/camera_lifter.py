"""Feature lifters: one prompt embedding -> one embedding per rendered view.

InteractVLM conditions the SAM prompt on the camera of each view ("vi_v1" camera
encoder, ``VIv1CamPoseEncoder`` in model/components.py of saidwivedi/InteractVLM, used
by ``process_embeddings`` in model/InteractVLM.py and selected by scripts/run_train.sh):
the 5 normalised camera numbers of a view (dist/10, elev/360, azim/360, (x+1)/2,
(y+1)/2) go through a shared MLP Linear(5->128) ReLU Linear(128->128) ReLU, then a
view-specific Linear(128->256) and a sigmoid; the token embedding is multiplied by that
gate, giving one prompt per view. Their weights start Xavier-uniform with zero biases.
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn

from zoo.core.interfaces import Lifter
from zoo.core.registry import register

__all__ = ["CameraLifter", "IdentityLifter"]


def _check(owner: str, prompt: torch.Tensor, cams: torch.Tensor, num_views: int, in_dim: int,
           embed_dim: int) -> None:
    if prompt.ndim != 2 or prompt.shape[1] != embed_dim:
        raise ValueError(f"{owner}.forward: expected prompt of shape (B, {embed_dim}), got {tuple(prompt.shape)}")
    if cams.ndim != 2 or tuple(cams.shape) != (num_views, in_dim):
        raise ValueError(f"{owner}.forward: expected cams of shape ({num_views}, {in_dim}) (one row of camera "
                         f"numbers per view), got {tuple(cams.shape)}")


@register("lifter", "camera_lifter")
class CameraLifter(Lifter, L.LightningModule):
    """Per-view sigmoid gate from camera numbers, multiplied into the prompt (InteractVLM's vi_v1 encoder).

    ``forward(prompt (B, embed_dim), cams (num_views, in_dim)) -> (B, num_views, embed_dim)``.
    The per-view output layers are one (num_views, hidden, embed_dim) weight applied with
    an einsum, equal to ``num_views`` separate Linear layers.
    """

    def __init__(self, num_views: int = 4, in_dim: int = 5, hidden: int = 128, embed_dim: int = 256) -> None:
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
