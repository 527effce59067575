"""Load the official DECO checkpoint (``deco_best.pth`` from sha2nkt/deco) into :class:`zoo.systems.deco.DECO`.

The release's trainer saves ``{"epoch": int, "deco": state_dict, "f1": numpy.float64,
"sem_optim", "part_optim", "contact_optim": Adam state dicts}`` (its ``f1`` is the numpy mean
of per-image F1s, so a numpy scalar). ``torch.load(weights_only=True)`` refuses the numpy scalar
unless its types are allow-listed: :func:`official_globals` lists exactly those (numpy's
``scalar`` reconstructor under both the numpy 1 and numpy 2 module names, ``numpy.dtype`` and
the float64 dtype class). Nothing else is allowed and the file is never unpickled in full
(unless the caller passes ``trust``): a pickle that needs any other object stops with an error
naming the file, the refused object and the layout that was expected.

Its module tree is ``encoder_{sem,part}.encoder`` (pose HRNet), ``decoder_{sem,part}.upsample``,
``cross_att.cross_attn_{1,2}``, ``cross_att.layer_norm`` and ``classif.classifier``; ours
keeps every name except the encoders' inner module (``encoder_*.model``, a timm HRNet with
identical parameter names). Two official entries are dropped on purpose and only these:
the pose HRNet's ``final_layer`` (a keypoint head DECO never calls) and, for the shared
cross-attention that the released forward uses, ``cross_attn_2`` (never called either).
Everything else must map one to one: unknown top-level keys, unknown, missing or misshapen
tensors raise a :class:`zoo.core.hub.CheckpointError` naming the file and what was expected.

Only the HRNet variant is supported (the release's Swin variant has another layout).

Loading goes through the checkpoint store like every other weights file: ``DECO(weights=...)``
(or ``system.weights=.../deco_best.pth`` in a recipe) reads the file with
``torch.load(weights_only=True)`` and :meth:`zoo.systems.deco.DECO.convert_checkpoint` calls
:func:`convert_official_deco`; :func:`load_official_deco` also reads the network sizes from the file.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from zoo.core.hub import CheckpointError

__all__ = ["convert_official_deco", "load_official_deco", "read_official_deco", "is_official_layout",
           "official_deco_kwargs", "official_globals", "OFFICIAL_TOP_KEYS", "EXPECTED_LAYOUT"]

# What the release's TrainStepper.save writes (the same keys with and without context).
OFFICIAL_TOP_KEYS = ("epoch", "deco", "f1", "sem_optim", "part_optim", "contact_optim")

EXPECTED_LAYOUT = (
    "expected the DECO release's deco_best.pth: a dict with 'deco' (the model state dict: encoder_sem.encoder.*, "
    "encoder_part.encoder.*, decoder_sem.upsample.*, decoder_part.upsample.*, cross_att.*, classif.classifier.*), "
    "'epoch' (int), 'f1' (a numpy float64) and the Adam states 'sem_optim', 'part_optim', 'contact_optim'; "
    "besides tensors and plain Python values it may hold only numpy float64 scalars"
)

# (pattern on the official key, replacement or None to drop)
_RULES: list[tuple[str, str | None]] = [
    (r"^(encoder_sem|encoder_part)\.encoder\.final_layer\.(weight|bias)$", None),
    # the pose HRNet's body (utils/hrnet.py PoseHighResolutionNet), the same names in timm's HRNet
    (r"^(encoder_sem|encoder_part)\.encoder\.((?:conv1|bn1|conv2|bn2|layer1|transition[123]|stage[234])\..+)$",
     r"\1.model.\2"),
    (r"^(decoder_sem|decoder_part)\.upsample\.([0-9]+)\.(.+)$", r"\1.upsample.\2.\3"),
    (r"^cross_att\.cross_attn_1\.(query_conv|key_conv|value_conv)\.(weight|bias)$", r"cross_att.cross_attn_1.\1.\2"),
    (r"^cross_att\.cross_attn_2\.(query_conv|key_conv|value_conv)\.(weight|bias)$", r"cross_att.cross_attn_2.\1.\2"),
    (r"^cross_att\.layer_norm\.(weight|bias)$", r"cross_att.layer_norm.\1"),
    (r"^classif\.classifier\.(0|2)\.(weight|bias)$", r"classif.classifier.\1.\2"),
]


def official_globals() -> list:
    """The non-tensor types the release's checkpoint pickles, for ``torch.load(weights_only=True)``.

    Its ``f1`` is a numpy float64, pickled as ``numpy.core.multiarray.scalar(numpy.dtype('f8'), bytes)``
    by numpy 1 (the release's environment) and as ``numpy._core.multiarray.scalar`` by numpy 2; both
    names map to the installed reconstructor. ``numpy.dtype`` builds the dtype, whose class (the
    float64 DType) must be allowed to restore its state. Nothing else: no arrays, no other dtypes.
    """
    import numpy as np

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    scalar = multiarray.scalar
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, type(np.dtype(np.float64))]


def is_official_layout(obj: Any) -> bool:
    """Whether ``obj`` is the release's checkpoint dict (key ``deco``) or a state dict in its naming."""
    if isinstance(obj, dict) and "deco" in obj:
        return True
    return isinstance(obj, dict) and any(str(k).removeprefix("module.").startswith(("encoder_sem.encoder.",
                                                                                      "encoder_part.encoder."))
                                         for k in obj)


def _read_file(path: str, trust: bool = False) -> Any:
    """The object in an official checkpoint file, read with weights_only=True and the numpy float64 allow-list."""
    from zoo.core import hub

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"official DECO checkpoint not found: {path} (deco_best.pth from the DECO release, "
            "https://deco.is.tue.mpg.de, fetched by the repository's fetch_data.sh; place it there yourself)"
        )
    try:
        return hub._torch_load(Path(path), "official DECO checkpoint", trust=trust,
                               safe_globals=tuple(official_globals()))
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {EXPECTED_LAYOUT}") from None


def read_official_deco(path_or_obj: str | os.PathLike | dict, source: str | None = None,
                       trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The official DECO state dict and the checkpoint's metadata ({'epoch', 'f1'} where present).

    ``path_or_obj``: a file (read safely, see the module docstring), the checkpoint dict or a bare
    state dict in the release's naming. ``source`` names it in errors. A checkpoint dict whose
    top-level keys are not the release's, or whose ``deco`` is not a name -> tensor dict, raises
    CheckpointError naming the source and the expected layout.
    """
    obj: Any = path_or_obj
    if isinstance(obj, (str, os.PathLike)):
        source = source or str(obj)
        obj = _read_file(str(obj), trust=trust)
    where = source or "official DECO checkpoint"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}; {EXPECTED_LAYOUT}")
    meta: dict[str, Any] = {}
    if "deco" in obj:
        unknown = sorted(str(k) for k in obj if k not in OFFICIAL_TOP_KEYS)
        if unknown:
            raise CheckpointError(f"{where}: unexpected top-level key(s) {unknown} beside 'deco'; {EXPECTED_LAYOUT}")
        meta = {k: obj[k] for k in ("epoch", "f1") if k in obj}
        obj = obj["deco"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where}: key 'deco' holds a {type(obj).__name__}, not the model state dict; "
                                  f"{EXPECTED_LAYOUT}")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{where}: no key 'deco' and not a state dict (entries that are not tensors: "
                              f"{bad[:5]}); {EXPECTED_LAYOUT}")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    return sd, meta


def convert_official_deco(path_or_obj: str | os.PathLike | dict, shared_cross_attn: bool = True,
                          source: str | None = None) -> dict[str, torch.Tensor]:
    """Map the official DECO checkpoint (path, checkpoint dict or state dict) to our DECO's state-dict names.

    ``shared_cross_attn`` must match the target module: True (as released) drops the
    never-used ``cross_attn_2``. Keys no rule knows raise a CheckpointError naming ``source``
    (the file), the first unknown keys and the expected layout.
    """
    sd, _ = read_official_deco(path_or_obj, source=source)
    where = source or (str(path_or_obj) if isinstance(path_or_obj, (str, os.PathLike)) else "official DECO checkpoint")
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
        raise CheckpointError(
            f"{where}: {len(unmapped)} key(s) of the official checkpoint have no mapping: "
            f"{unmapped[:10]}{' ...' if len(unmapped) > 10 else ''} (only the HRNet DECO layout is supported; "
            f"{EXPECTED_LAYOUT})"
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


def load_official_deco(path: str | os.PathLike, trust: bool = False, **deco_kwargs: Any):
    """Build a :class:`DECO` sized like the official checkpoint at ``path`` and load it (strictly).

    Sizes are read from the file unless given in ``deco_kwargs`` (``backbone`` keys merge into the
    inferred backbone sub-recipe); other kwargs (loss weights, optim, metrics, ...) pass through.
    The weights load through the checkpoint store (``weights_only=True`` with :func:`official_globals`,
    DECO.convert_checkpoint). The checkpoint's epoch and F1 are kept in ``model.official_meta``.
    """
    from zoo.core import hub, registry

    sd, meta = read_official_deco(path, trust=trust)
    kwargs = official_deco_kwargs(sd)
    backbone = {**kwargs["backbone"], **(deco_kwargs.pop("backbone", None) or {})}
    kwargs.update(deco_kwargs, backbone=backbone)
    kwargs.setdefault("shared_cross_attn", True)
    kwargs.setdefault("optim", {"name": "adam", "lr": 5e-5, "weight_decay": 1e-4})
    kwargs.setdefault("metrics", [{"name": "contact_prf", "threshold": 0.5}])
    with hub.pretrained_disabled():
        model = registry.build("system", {"name": "deco", **kwargs})
    hub.load_weights(model, path, trust=trust)
    model.official_meta = {k: (float(v) if k == "f1" else v) for k, v in meta.items()}
    return model
