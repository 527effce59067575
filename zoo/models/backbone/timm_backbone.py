"""A timm model used as a dense feature extractor (one feature map at a fixed stride).

DECO's encoder is the pose-estimation HRNet-W32: its four branch outputs (32, 64, 128,
256 channels at 1/4 .. 1/32 resolution) are bilinearly upsampled to the 1/4 branch and
concatenated into a 480-channel map. timm's ``hrnet_w32`` built with
``features_only=True, feature_location=''`` has exactly that branch structure (and the
same parameter names), so :class:`TimmBackbone` reproduces the encoder for any HRNet and
applies the same "upsample to the finest level and concatenate" rule to other families
(ResNets, ConvNeXts, ...), adding a 1x1 projection when the concatenated width differs
from the width the caller asked for.

Tiny CPU configuration (what the DECO demo and tests use)::

    TimmBackbone("test_byobnet", out_indices=[3], out_channels=64)

``test_byobnet`` is timm's 0.1 M-parameter test network (0.14 GFLOP per 256x256 image
up to its 1/16 level, 128 channels); with it a 256x256 training step of a whole
two-encoder DECO at batch 8 takes about 0.25 s on two idle CPU cores (see
``zoo.systems.deco.TINY_DECO``). ``test_resnet`` works too but costs 3.5x the FLOPs.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.registry import register

__all__ = ["TimmBackbone", "load_backbone_weights"]


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors / .pth / .pt / .bin file, unwrapping common containers."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd: Any = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    # checkpoints often nest the weights one level down
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise ValueError(f"backbone weights {path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    # DataParallel / DDP checkpoints carry a 'module.' prefix
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_backbone_weights(model: nn.Module, path: str) -> list[str]:
    """Load pretrained weights from a local file into a timm feature model.

    Every parameter and buffer of ``model`` must be present with the right shape (an
    incompletely initialised backbone is an error); keys the model does not have (a
    classifier or a pose head such as HRNet's ``final_layer``) are ignored and returned.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"backbone weights not found: {path} (a local state-dict file for the timm model; "
            "nothing is downloaded: fetch e.g. the timm/ImageNet or pose-HRNet checkpoint yourself and pass its path)"
        )
    sd = _read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise KeyError(
            f"backbone weights {path}: {len(missing)} keys of the model are missing, e.g. {missing[:5]} "
            f"(file has {len(sd)} keys, e.g. {list(sd)[:5]})"
        )
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"backbone weights {path}: shape mismatch for {len(bad)} keys, e.g. {bad[:5]}")
    model.load_state_dict({k: sd[k] for k in own}, strict=True)
    return sorted(k for k in sd if k not in own)


@register("backbone", "timm")
class TimmBackbone(nn.Module):
    """Any timm model as a single dense feature map (DECO-style multi-level concatenation).

    Args:
        name: timm model name ("hrnet_w32" for DECO; "resnet50", "test_resnet", ...).
        weights: local state-dict file with pretrained weights; None keeps random init.
            Never downloads.
        out_indices: which timm feature levels to use (indices into ``feature_info``);
            None takes every level with stride >= ``min_reduction`` (for HRNet: the four
            branches).
        out_channels: width of the returned map; a 1x1 conv projects when the
            concatenated width differs. None returns the concatenation as is.
        min_reduction: smallest stride kept when ``out_indices`` is None.
        model_kwargs: extra keyword arguments for ``timm.create_model``.

    ``forward(image (B,3,H,W)) -> (B, out_channels, H/r, W/r)`` with ``r = self.reduction``.
    """

    def __init__(
        self,
        name: str = "hrnet_w32",
        weights: str | None = None,
        out_indices: list[int] | None = None,
        out_channels: int | None = 480,
        min_reduction: int = 4,
        model_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        import timm

        if name not in timm.list_models():
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.5)
            raise ValueError(f"unknown timm model '{name}' for backbone 'timm'" + (f"; closest: {', '.join(close)}" if close else ""))
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        if name.startswith("hrnet") and "feature_location" not in kwargs:
            # '' gives the raw branch outputs of the last stage (pose-HRNet layout), not the
            # classification 'incre' widening used by timm's default
            kwargs["feature_location"] = ""
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
        self.model = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        info = self.model.feature_info
        chans, reds = info.channels(), info.reduction()
        if out_indices is None:
            keep = [i for i, r in enumerate(reds) if r >= min_reduction]
            if not keep:
                raise ValueError(f"timm model '{name}' has no feature level with stride >= {min_reduction} (strides {reds})")
        else:
            keep = list(range(len(chans)))  # timm already returns only the requested levels
        self._keep = keep
        self.reduction = int(reds[keep[0]])
        concat = int(sum(chans[i] for i in keep))
        self.concat_channels = concat
        self.out_channels = concat if out_channels is None else int(out_channels)
        self.proj: nn.Module = nn.Identity() if self.out_channels == concat else nn.Conv2d(concat, self.out_channels, 1)
        self.name = name
        self.ignored_weight_keys: list[str] = []
        if weights is not None:
            self.ignored_weight_keys = load_backbone_weights(self.model, weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B,3,H,W) -> feature map (B, out_channels, H/reduction, W/reduction)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"TimmBackbone({self.name}): expected image of shape (B,3,H,W), got {tuple(image.shape)}")
        feats = self.model(image)
        feats = [feats[i] for i in self._keep]
        size = feats[0].shape[-2:]
        # align_corners=True matches the official DECO/HRNet concatenation
        ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in feats[1:]]
        x = torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]
        return self.proj(x)
