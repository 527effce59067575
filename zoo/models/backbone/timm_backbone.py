"""A timm model used as a dense feature extractor (one feature map at a fixed stride).

DECO's encoder is the pose-estimation HRNet-W32: its four branch outputs (32, 64, 128,
256 channels at 1/4 .. 1/32 resolution) are bilinearly upsampled to the 1/4 branch and
concatenated into a 480-channel map. timm's ``hrnet_w32`` built with
``features_only=True, feature_location=''`` has exactly that branch structure (and the
same parameter names), so :class:`TimmBackbone` reproduces the encoder for any HRNet and
applies the same "upsample to the finest level and concatenate" rule to other families
(ResNets, ConvNeXts, ...), adding a 1x1 projection when the concatenated width differs
from the width the caller asked for.

Tiny CPU configuration (``recipes/base/backbone/tiny.yaml``, what the DECO demo uses)::

    {name: timm, model: test_resnet, out_indices: [3], out_channels: 64}

Pretrained HRNet weights: DECO's encoders start from the COCO pose HRNet-W32
(``pose_hrnet_w32_256x192.pth``, from the HRNet pose-estimation release, which DECO's
``utils/hrnet.py`` loads), not from ImageNet. Its key layout (``conv1``, ``bn1``, ``conv2``,
``bn2``, ``layer1``, ``transition1..3``, ``stage2..4`` and a keypoint ``final_layer``) is the
one timm's HRNet feature model uses, so :func:`convert_pose_hrnet` maps it one to one, drops
only the keypoint head (and, for a timm ImageNet checkpoint, the classification heads
``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``) and refuses any other
key, naming the file. ``weights: /path/to/pose_hrnet_w32_256x192.pth`` loads it.

``test_resnet`` and ``test_byobnet`` are timm's test networks (0.49 and 0.14 GFLOP per 256x256
image up to their 1/16 level); with either, a training step of the whole two-encoder DECO at batch
8 takes well under a second on two idle CPU cores. Any other timm model is one override away
(``system.backbone.model=resnet50``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.core.hub import Pretrained
from zoo.core.interfaces import Backbone
from zoo.core.registry import register

__all__ = ["TimmBackbone", "unwrap_state_dict", "convert_pose_hrnet", "HRNET_HEAD_PREFIXES"]

# Heads an HRNet checkpoint may carry that the feature extractor has no use for: the pose
# release's keypoint conv ``final_layer.{weight,bias}`` and timm's ImageNet classification heads.
HRNET_HEAD_PREFIXES = ("final_layer.", "incre_modules.", "downsamp_modules.", "classifier.")
_HRNET_BODY = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition1.", "transition2.", "transition3.",
               "stage2.", "stage3.", "stage4.")


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The name -> tensor dict inside a checkpoint object: one level of ``state_dict`` / ``model`` /
    ``model_state_dict`` nesting unwrapped and a DataParallel ``module.`` prefix stripped."""
    sd = obj
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise ValueError(f"backbone weights {source}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def convert_pose_hrnet(sd: dict[str, Any], own: dict[str, torch.Tensor], source: str) -> tuple[dict[str, Any], list[str]]:
    """Map a pose-HRNet state dict (``pose_hrnet_w32_256x192.pth`` layout, DECO's encoder) onto timm's HRNet
    feature model, whose state dict is ``own``: (tensors under timm's names, dropped head keys).

    The body keys keep their names; keypoint / classification heads (:data:`HRNET_HEAD_PREFIXES`) are
    dropped; any other key, or a body key timm's model does not have (another HRNet width or depth),
    raises CheckpointError naming ``source`` and the keys. Shapes are checked by the caller's load.
    """
    from zoo.core.hub import CheckpointError

    kept: dict[str, Any] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in sd.items():
        if key in own:
            kept[key] = value
        elif key.startswith(HRNET_HEAD_PREFIXES):
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown:
        body = [k for k in unknown if k.startswith(_HRNET_BODY)]
        why = (f"{len(body)} HRNet key(s) this model does not have (another width or depth?)" if body
               else "keys outside the pose-HRNet layout")
        raise CheckpointError(
            f"HRNet weights {source}: {len(unknown)} key(s) do not map onto timm's HRNet ({why}): "
            f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}; expected the pose-HRNet layout of "
            f"pose_hrnet_w32_256x192.pth ({', '.join(p.rstrip('.') for p in _HRNET_BODY)}, final_layer), optionally "
            f"under 'module.' / 'state_dict', or a timm HRNet checkpoint")
    return kept, sorted(dropped)


@register("backbone", "timm")
class TimmBackbone(Pretrained, Backbone, nn.Module):
    """Any timm model as a single dense feature map (DECO-style multi-level concatenation).

    Args:
        model: timm model name ("hrnet_w32" for DECO; "resnet50", "test_resnet", ...).
        weights: pretrained weights of the timm model: a local state-dict file (.pth / .pt /
            .safetensors) or a registry checkpoint, loaded after building through the checkpoint
            store; keys the feature model lacks (a classifier, HRNet's pose ``final_layer``) are
            ignored and listed in ``ignored_weight_keys``. None keeps random init. Never downloads.
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
        model: str = "hrnet_w32",
        weights: str | None = None,
        out_indices: list[int] | None = None,
        out_channels: int | None = 480,
        min_reduction: int = 4,
        model_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        import timm

        name = model
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

    def convert_checkpoint(self, obj: Any, source: str) -> dict[str, torch.Tensor]:
        """The timm model's tensors in ``obj`` under this module's names (``model.<key>``).

        HRNet models read the pose-HRNet layout strictly (:func:`convert_pose_hrnet`: only the heads
        are dropped, any other unknown key raises); for other models, keys the feature model does not
        have (a classifier) are dropped. Dropped keys are remembered in ``ignored_weight_keys``."""
        sd = unwrap_state_dict(obj, source)
        own = self.model.state_dict()
        if self.name.startswith("hrnet"):
            kept, self.ignored_weight_keys = convert_pose_hrnet(sd, own, source)
            return {f"model.{k}": v for k, v in kept.items()}
        self.ignored_weight_keys = sorted(k for k in sd if k not in own)
        return {f"model.{k}": v for k, v in sd.items() if k in own}

    def pretrained_keys(self) -> set[str]:
        """Every tensor of the timm model must come from the file (the 1x1 projection stays random)."""
        return {f"model.{k}" for k in self.model.state_dict()}

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
