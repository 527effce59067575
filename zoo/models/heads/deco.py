"""DECO's heads: segmentation decoder, channel cross-attention and the contact classifier.

Parameter names and shapes follow the official DECO release (sha2nkt/deco) so that its
checkpoint maps onto these modules by renaming the encoders only (see
``zoo.systems.deco_convert``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["SegDecoder", "ChannelAttention", "CrossAttention", "ContactClassifier"]


class SegDecoder(nn.Module):
    """Segmentation head: ``num_up`` stride-2 transposed convs from the feature map to class logits.

    DECO uses two (1/4 resolution -> full resolution) with BatchNorm after each and ReLU
    between them. The official module ends in a channel softmax; here the forward
    returns logits (softmax is applied by the caller) so that logits can be resized to
    the ground-truth size first. ``num_up=0`` gives a single 3x3 conv at the feature
    resolution (a cheap head for tiny CPU configurations).
    """

    def __init__(self, in_dim: int, num_classes: int, num_up: int = 2) -> None:
        super().__init__()
        if num_up < 0:
            raise ValueError(f"SegDecoder: num_up must be >= 0, got {num_up}")
        layers: list[nn.Module] = []
        if num_up == 0:
            layers += [nn.Conv2d(in_dim, num_classes, 3, padding=1), nn.BatchNorm2d(num_classes)]
        for i in range(num_up):
            if i > 0:
                layers.append(nn.ReLU())
            layers += [
                nn.ConvTranspose2d(in_dim if i == 0 else num_classes, num_classes, 3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(num_classes),
            ]
        # indices inside `upsample` match the official Sequential (0 convT, 1 BN, 2 ReLU, 3 convT, 4 BN)
        self.upsample = nn.Sequential(*layers)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B,C,h,w) -> class logits (B, num_classes, h*2^num_up, w*2^num_up)."""
        return self.upsample(x)


class ChannelAttention(nn.Module):
    """DECO's attention between two pooled feature tokens, attending over channels.

    Each of the ``dim`` channels of the (B,1,dim) query/key/value tokens is treated as a
    token with a scalar feature: 1x1 Conv1d projections give q, k, v of shape (B,dim,1);
    the attention matrix is softmax over the outer product q k^T (B,dim,dim); the output
    (attention @ v) is scaled by 1/sqrt(dim) and returned as (B,1,dim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv1d(dim, dim, 1)
        self.key_conv = nn.Conv1d(dim, dim, 1)
        self.value_conv = nn.Conv1d(dim, dim, 1)
        self.dim = dim

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Tokens (B,1,dim) each -> attended token (B,1,dim)."""
        qq = self.query_conv(q.transpose(1, 2))  # (B,dim,1)
        kk = self.key_conv(k.transpose(1, 2))
        vv = self.value_conv(v.transpose(1, 2))
        attn = torch.softmax(qq @ kk.transpose(1, 2), dim=-1)  # (B,dim,dim)
        out = (attn @ vv).transpose(1, 2)  # (B,1,dim)
        return out / math.sqrt(self.dim)


class CrossAttention(nn.Module):
    """Two-way cross attention between the scene and part tokens, fused by product + LayerNorm.

    ``shared=True`` reproduces the released DECO code, whose forward uses its first
    attention block for both directions (its second block is never called); with
    ``shared=False`` each direction has its own block (``cross_attn_2``), as the paper
    describes.
    """

    def __init__(self, dim: int, shared: bool = True) -> None:
        super().__init__()
        self.cross_attn_1 = ChannelAttention(dim)
        self.cross_attn_2 = None if shared else ChannelAttention(dim)
        self.layer_norm = nn.LayerNorm([1, dim])

    def forward(self, sem: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """Scene token (B,1,dim), part token (B,1,dim) -> fused token (B,1,dim)."""
        second = self.cross_attn_1 if self.cross_attn_2 is None else self.cross_attn_2
        a = self.cross_attn_1(sem, part, part)
        b = second(part, sem, sem)
        return self.layer_norm(a * b)


class ContactClassifier(nn.Module):
    """Per-vertex contact head: Linear(dim->hidden) ReLU Linear(hidden->num_vertices); returns logits.

    The official head ends in a sigmoid; logits are returned here so the BCE can be
    computed stably (``binary_cross_entropy_with_logits`` equals BCE on the sigmoid).
    """

    def __init__(self, dim: int, hidden: int = 4096, num_vertices: int = 6890) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_vertices))
        self.num_vertices = num_vertices

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        """Fused token (B,1,dim) or (B,dim) -> contact logits (B, num_vertices)."""
        return self.classifier(token).reshape(-1, self.num_vertices)
