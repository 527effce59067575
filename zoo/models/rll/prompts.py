"""Where the prompts of Render-Localize-Lift come from: learned class embeddings (MV-Loc without a VLM).

A prompt source turns a batch into one prompt per sample (B, C) plus, when samples share a prompt,
integer ids (B,) the pipeline uses to decode each distinct prompt once. InteractVLM's prompts (the
VLM's contact tokens, projected) come from its system instead; the pipeline takes either.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.core import registry
from zoo.core.batch import need

__all__ = ["LearnedPrompts", "PROMPTS"]


class LearnedPrompts(nn.Module):
    """One learned embedding per class, chosen by the batch key naming each sample's class.

    Args:
        classes: the vocabulary; None with a ``key`` takes it from the DataModule's ``classes``
            when training starts (:meth:`bind`); None without a ``key`` is one shared prompt
            (binary contact).
        key: batch key holding each sample's class name (``object_name`` for DAMON semantic
            contact, ``affordance_name`` for PIAD / LEMON).
        init_std: standard deviation of the initial embeddings.
        dim: prompt width (the localizer's ``embed_dim``; the system passes it).
    """

    def __init__(self, classes: list[str] | None = None, key: str | None = None, init_std: float = 1.0,
                 dim: int = 256) -> None:
        super().__init__()
        if classes is not None and not classes:
            raise ValueError("prompts: classes is empty (use null for one shared prompt)")
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError(f"prompts: classes has duplicates: {classes}")
        self.key = key
        self.init_std = float(init_std)
        self.dim = int(dim)
        self.embedding: nn.Embedding | None = None
        self.class_names: list[str] = []
        self._index: dict[str, int] = {}
        if classes is not None or key is None:
            self.bind(classes)

    @property
    def bound(self) -> bool:
        """Whether the vocabulary is known (the embeddings exist)."""
        return self.embedding is not None

    def bind(self, classes: list[str] | None) -> None:
        """Create the embeddings for ``classes`` (None: one prompt named 'contact')."""
        names = list(classes) if classes is not None else ["contact"]
        self.class_names = names
        self._index = {n: i for i, n in enumerate(names)}
        emb = nn.Embedding(len(names), self.dim)
        nn.init.normal_(emb.weight, std=self.init_std)
        self.embedding = emb

    def forward(self, batch: dict, batch_size: int, owner: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompts (B, dim), class ids (B,)) for the batch; an unknown class name is an error naming it."""
        if self.embedding is None:
            raise RuntimeError(f"{owner}.{where}: the prompt vocabulary is not set: give prompts.classes in the "
                               f"recipe, or train with a DataModule that lists its classes")
        dev = self.embedding.weight.device
        if self.key is None:
            idx = torch.zeros(batch_size, dtype=torch.long, device=dev)
        else:
            names = need(batch, self.key, owner, where, f"list[str] of {batch_size} class names")
            try:
                idx = torch.tensor([self._index[str(n)] for n in names], dtype=torch.long, device=dev)
            except KeyError as e:
                raise ValueError(f"{owner}.{where}: batch['{self.key}'] has class {e.args[0]!r}, not in the prompt "
                                 f"vocabulary {self.class_names} (system.prompts.classes)") from None
        return self.embedding(idx), idx


PROMPTS: Any = registry.Parts("prompt source", {"learned": LearnedPrompts})
