"""Load the official DECO checkpoint (``deco_best.pth`` from sha2nkt/deco) into :class:`zoo.systems.deco.DECO`.

The release saves ``{"deco": state_dict, "epoch": int, "f1": float, <optimizer states>}``.
Its module tree is ``encoder_{sem,part}.encoder`` (pose HRNet), ``decoder_{sem,part}.upsample``,
``cross_att.cross_attn_{1,2}``, ``cross_att.layer_norm`` and ``classif.classifier``; ours
keeps every name except the encoders' inner module (``encoder_*.model``, a timm HRNet with
identical parameter names). Two official entries are dropped on purpose and only these:
the pose HRNet's ``final_layer`` (a keypoint head DECO never calls) and, for the shared
cross-attention that the released forward uses, ``cross_attn_2`` (never called either).
Everything else must map one to one: unknown, missing or misshapen keys raise, naming them.

Only the HRNet variant is supported (the release's Swin variant has another layout).

Loading goes through the checkpoint store like every other weights file: ``DECO(weights=...)``
(or ``system.weights=.../deco_best.pth`` in a recipe) reads the file with
``torch.load(weights_only=True)`` and :meth:`zoo.systems.deco.DECO.convert_checkpoint` calls
:func:`convert_official_deco`; :func:`load_official_deco` also reads the network sizes from the file.
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch

__all__ = ["convert_official_deco", "load_official_deco", "read_official_deco", "is_official_layout",
           "official_deco_kwargs", "official_globals"]

# (pattern on the official key, replacement or None to drop, why)
_RULES: list[tuple[str, str | None]] = [
    (r"^(encoder_sem|encoder_part)\.encoder\.final_layer\.(weight|bias)$", None),
    (r"^(encoder_sem|encoder_part)\.encoder\.(.+)$", r"\1.model.\2"),
    (r"^(decoder_sem|decoder_part)\.upsample\.([0-9]+)\.(.+)$", r"\1.upsample.\2.\3"),
    (r"^cross_att\.cross_attn_1\.(query_conv|key_conv|value_conv)\.(weight|bias)$", r"cross_att.cross_attn_1.\1.\2"),
    (r"^cross_att\.cross_attn_2\.(query_conv|key_conv|value_conv)\.(weight|bias)$", r"cross_att.cross_attn_2.\1.\2"),
    (r"^cross_att\.layer_norm\.(weight|bias)$", r"cross_att.layer_norm.\1"),
    (r"^classif\.classifier\.(0|2)\.(weight|bias)$", r"classif.classifier.\1.\2"),
]


def official_globals() -> list:
    """The non-tensor types the release's checkpoint pickles, for torch.load(weights_only=True)."""
    import numpy as np

    # The release's trainer stores `f1` as a numpy float64 (see REFERENCE.md); allow exactly those types.
    return [np._core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))]


def is_official_layout(obj: Any) -> bool:
    """Whether ``obj`` is the release's checkpoint dict (key ``deco``) or a state dict in its naming."""
    if isinstance(obj, dict) and isinstance(obj.get("deco"), dict):
        return True
    return isinstance(obj, dict) and any(str(k).removeprefix("module.").startswith(("encoder_sem.encoder.",
                                                                                      "encoder_part.encoder."))
                                         for k in obj)


def read_official_deco(path_or_state_dict: str | os.PathLike | dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The official DECO state dict and the checkpoint's metadata ({'epoch', 'f1'} where present)."""
    where = "state dict"
    obj: Any = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        where = str(obj)
        if not os.path.isfile(where):
            raise FileNotFoundError(
                f"official DECO checkpoint not found: {where} (deco_best.pth from the DECO release, "
                "https://deco.is.tue.mpg.de, fetched by the repository's fetch_data.sh; place it there yourself)"
            )
        with torch.serialization.safe_globals(official_globals()):
            obj = torch.load(where, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise TypeError(f"{where}: expected a dict (checkpoint with key 'deco' or a state dict), got {type(obj).__name__}")
    meta: dict[str, Any] = {}
    if "deco" in obj:
        meta = {k: obj[k] for k in ("epoch", "f1") if k in obj}
        obj = obj["deco"]
        if not isinstance(obj, dict):
            raise TypeError(f"{where}: key 'deco' should hold the model state dict, got {type(obj).__name__}")
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KeyError(f"{where}: no key 'deco' and not a plain state dict (keys: {sorted(obj)[:10]})")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    return sd, meta


def convert_official_deco(path_or_state_dict: str | os.PathLike | dict, shared_cross_attn: bool = True) -> dict[str, torch.Tensor]:
    """Map the official DECO checkpoint (path, checkpoint dict or state dict) to our DECO's state-dict names.

    ``shared_cross_attn`` must match the target module: True (as released) drops the
    never-used ``cross_attn_2``. Keys no rule knows raise a KeyError listing them.
    """
    sd, _ = read_official_deco(path_or_state_dict)
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in sd.items():
        for pattern, repl in _RULES:
            if re.match(pattern, key):
                if repl is not None and not (shared_cross_attn and key.startswith("cross_att.cross_attn_2.")):
                    out[re.sub(pattern, repl, key)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise KeyError(
            f"convert_official_deco: {len(unmapped)} keys of the official checkpoint have no mapping: "
            f"{unmapped[:10]}{' ...' if len(unmapped) > 10 else ''} (only the HRNet DECO layout is supported)"
        )
    return out


def official_deco_kwargs(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """DECO constructor arguments implied by the official tensors' shapes (backbone width, feature width,
    classifier width, class and vertex counts)."""
    kw: dict[str, Any] = {}
    w0 = sd.get("classif.classifier.0.weight")
    w2 = sd.get("classif.classifier.2.weight")
    feat = None
    if w0 is not None:
        kw["classifier_hidden"], feat = int(w0.shape[0]), int(w0.shape[1])
    if w2 is not None:
        kw["num_vertices"] = int(w2.shape[0])
    for name, key in (("num_scene_classes", "decoder_sem"), ("num_part_classes", "decoder_part")):
        t = sd.get(f"{key}.upsample.1.weight")
        if t is not None:
            kw[name] = int(t.shape[0])
    t = sd.get("encoder_sem.encoder.transition1.0.0.weight")
    backbone: dict[str, Any] = {"name": "timm", "model": f"hrnet_w{int(t.shape[0])}" if t is not None else "hrnet_w32"}
    if feat is not None:
        backbone["out_channels"] = feat
    kw["backbone"] = backbone
    return kw


def load_official_deco(path: str | os.PathLike, **deco_kwargs: Any):
    """Build a :class:`DECO` sized like the official checkpoint at ``path`` and load it (strictly).

    Sizes are read from the file unless given in ``deco_kwargs`` (``backbone`` keys merge into the
    inferred backbone sub-recipe); other kwargs (loss weights, optim, metrics, ...) pass through.
    The weights load through the checkpoint store (``weights_only=True``, DECO.convert_checkpoint).
    The checkpoint's epoch and F1 are kept in ``model.official_meta``.
    """
    from zoo.core import hub, registry

    sd, meta = read_official_deco(path)
    kwargs = official_deco_kwargs(sd)
    backbone = {**kwargs["backbone"], **(deco_kwargs.pop("backbone", None) or {})}
    kwargs.update(deco_kwargs, backbone=backbone)
    kwargs.setdefault("shared_cross_attn", True)
    kwargs.setdefault("optim", {"name": "adam", "lr": 5e-5, "weight_decay": 1e-4})
    kwargs.setdefault("metrics", [{"name": "contact_prf", "threshold": 0.5}])
    with hub.pretrained_disabled():
        model = registry.build("system", {"name": "deco", **kwargs})
    hub.load_weights(model, path)
    model.official_meta = {k: (float(v) if k == "f1" else v) for k, v in meta.items()}
    return model
