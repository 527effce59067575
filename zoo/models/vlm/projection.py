"""InteractVLM's projection Γ of a contact token's last hidden state to the 256-d localizer prompt.

Γ = Linear(d, d), ReLU, Linear(d, 256), one per token kind (``[HCON]``, ``[OCON]``), held in a ModuleDict
keyed by the token. No registry kind fits a projection head (the ``vlm`` interface is a whole
vision-language model), so it is a part: :data:`PROJECTIONS` (a :class:`zoo.core.registry.Parts` table) lets a
system list it in ``subcomponents`` and a recipe pick it with ``name: mlp``.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.core.registry import Parts

__all__ = ["ContactProjection", "PROJECTIONS"]


class ContactProjection(nn.Module):
    """One MLP Γ_k: Linear(d, d) ReLU Linear(d, out_dim) per contact token k.

    ``forward(states (n, d), token) -> (n, out_dim)``; ``tokens`` are the ModuleDict keys (brackets allowed:
    they are stored under a sanitised key, see :meth:`key`).
    """

    def __init__(self, in_dim: int | None = None, out_dim: int = 256, tokens: list[str] | None = None) -> None:
        super().__init__()
        if in_dim is None:
            raise ValueError("ContactProjection: in_dim (the VLM's hidden width) is needed; a system that owns the "
                             "projection sets it from its VLM")
        if int(in_dim) < 1 or int(out_dim) < 1:
            raise ValueError(f"ContactProjection: in_dim and out_dim must be >= 1, got {in_dim}, {out_dim}")
        self.tokens = list(tokens) if tokens is not None else ["[HCON]", "[OCON]"]
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.heads = nn.ModuleDict({self.key(t): nn.Sequential(nn.Linear(self.in_dim, self.in_dim), nn.ReLU(),
                                                               nn.Linear(self.in_dim, self.out_dim))
                                    for t in self.tokens})

    @staticmethod
    def key(token: str) -> str:
        """The ModuleDict key of a token ('[HCON]' -> 'HCON'; module names may not contain '.')."""
        return token.strip("[]<>").replace(".", "_")

    def forward(self, states: torch.Tensor, token: str) -> torch.Tensor:
        """Γ_token(states): (n, in_dim) -> (n, out_dim)."""
        k = self.key(token)
        if k not in self.heads:
            raise KeyError(f"ContactProjection: no head for token {token!r} (heads: {', '.join(self.tokens)})")
        if states.shape[-1] != self.in_dim:
            raise ValueError(f"ContactProjection: expected states (n, {self.in_dim}), got {tuple(states.shape)}")
        return self.heads[k](states)


PROJECTIONS = Parts("projection", {"mlp": ContactProjection})
