"""Convert a released InteractVLM model (saidwivedi/InteractVLM) into the zoo's InteractVLM components.

What a release is. ``fetch_data.sh`` and the README's "Model Zoo" table download zips from
``https://download.is.tue.mpg.de/download.php?domain=interactvlm&sfile=<name>.zip`` (registration at
https://interactvlm.is.tue.mpg.de) that unpack to ``trained_models/<name>/`` (``scripts/run_demo.sh``):
``interactvlm-3d-hcontact-damon``, ``interactvlm-3d-hcontact-wScene-damon-lemon-rich``,
``interactvlm-3d-oafford-lemon-piad``, ``interactvlm-2d-hcontact`` and ``interactvlm-3d-hcontact-ocontact``
(FIX.md adds ``interactvlm-3d-hcontact-damon-fix`` and ``-noParts``, recommended for DAMON from 2026-04-16).
Each directory is what ``merge_lora_weights_and_save_hf_model.py`` (``main``) writes: it builds
``InteractVLMForCausalLM`` (model/InteractVLM.py), wraps it in PEFT LoRA, loads the DeepSpeed-merged
``pytorch_model.bin``, calls ``merge_and_unload()`` and saves ``save_pretrained(save_path,
state_dict=...)`` *without every key containing "vision_tower"* (the CLIP tower is re-read from
``config.mm_vision_tower``, ``openai/clip-vit-large-patch14``, by ``initialize_vision_modules`` in
run_demo.py), then ``tokenizer.save_pretrained``. So the directory holds a LLaVA-v1 style
``config.json`` (``LlavaConfig(LlamaConfig)`` with ``model_type: llava``,
model/llava/model/language_model/llava_llama.py, plus InteractVLM's fields set in
``InteractVLMForCausalLM.__init__``: ``token_type``, ``seg_token_idx`` / ``hseg_token_idx`` /
``oseg_token_idx``, ``hC_loss_weight``, ``oC_loss_weight``, ``multiview_channels``,
``multiview_cam_cond``, ``cam_encoder_type``, ``out_dim``, ``mm_vision_select_layer``, ...), the weights
(``pytorch_model*.bin`` or ``*.safetensors``, possibly sharded with an index) and the LLaMA tokenizer.

The key layout of that state dict (``InteractVLMForCausalLM`` after ``merge_and_unload``):

* ``model.embed_tokens.weight``, ``model.layers.{i}.*``, ``model.norm.weight``, ``lm_head.weight``: the
  LLaMA-2 13B LM (base ``xinlai/LISA-13B-llama2-v1``, scripts/run_train.sh ``VERSION``), its vocabulary
  grown by the added ``[SEG]`` (and ``[HSEG]``/``[OSEG]`` or ``[ISEG]``, ``add_new_tokens`` in
  utils/utils.py) and ``<im_start>``/``<im_end>`` tokens (``resize_token_embeddings(len(tokenizer))``).
* ``model.mm_projector.{weight,bias}``: a *single* ``nn.Linear(mm_hidden_size, hidden_size)``
  (``LlavaMetaModel.__init__`` in model/llava/model/llava_arch.py). transformers' projector is
  Linear-act-Linear, so the converted model gets ``linear_1`` = that Linear, ``projector_hidden_act:
  linear`` and ``linear_2`` = the identity with zero bias, which computes the same function exactly. An
  ``mm_projector.{0,2}`` (LLaVA-1.5's mlp2x_gelu) maps to ``linear_{1,2}`` with GELU.
* ``model.vision_tower.vision_tower.vision_model.*`` (``CLIPVisionTower.vision_tower``, a
  ``CLIPVisionModel``, model/llava/model/multimodal_encoder/clip_encoder.py): absent from a release (see
  above); when absent the tower comes from a local copy of ``openai/clip-vit-large-patch14`` (``clip=``).
* ``model.visual_model.{image_encoder,prompt_encoder,mask_decoder}.*``: SAM ViT-H (``ModifiedSAM`` in
  model/InteractVLM.py, built by ``build_sam_vit_h``). The image and prompt encoders are frozen
  (``initialize_ivlm_modules`` sets ``requires_grad = False`` for all of SAM and re-enables only the mask
  decoder), so the image encoder equals ``sam_vit_h_4b8939.pth`` and is dropped here (the localizer loads it
  from the SAM file); the prompt encoder is small and kept. With a ``-DifDe`` ``token_type``
  ``ModifiedSAM`` also holds ``human_mask_decoder`` and ``object_mask_decoder`` (deep copies,
  ``initialize_separate_decoders``); its ``forward`` then routes every prompt to one of those two (its test
  ``'oafford' or 'ocontact' in ds_name`` is always true, so a non-``hcontact`` prompt takes the object
  decoder), and the shared ``mask_decoder`` goes unused and is dropped.
* ``model.text_hidden_fcs.0.{0,2}.{weight,bias}``: the projection Γ (Linear(d, d), ReLU, Linear(d,
  out_dim=256), Dropout(0)). There is exactly one (``model_forward`` asserts ``len(text_hidden_fcs) == 1``)
  and it serves every segmentation token ([SEG], [HSEG], [OSEG]), so each of our heads
  (``projection.heads.HCON``, ``.OCON``) gets a copy.
* ``cam_pose_encoder.*`` (on the top-level model, only with ``multiview_cam_cond``): the ``vi_v1``
  ``VIv1CamPoseEncoder`` (model/components.py), converted by
  :func:`zoo.models.lifter.camera_lifter.convert_official_lifter`. It is applied to every token
  (``process_embeddings``), so both branches get it. The ``simple`` / ``view_index`` encoders compute other
  functions and are refused.
* ``attention_splitter.*`` (``Gen-Hu-Obj`` / ``Gen-Int`` token types), ``model.visual_model.fusion.*`` and
  ``.uncertainty.*`` (``use_fusion`` / ``use_uncertainty``) have no zoo counterpart: refused unless
  ``drop_unsupported`` (then recorded as dropped; outputs will differ from the release). The 3D contact
  predictors hold plain tensors, not parameters, and add no keys.

Branches: a token whose key starts with ``H`` (``[HCON]``) feeds ``human.*``, with ``O`` (``[OCON]``)
``object.*``. By default the tokens follow the release's config: ``[HCON]`` when ``hC_loss_weight > 0``,
``[OCON]`` when ``oC_loss_weight > 0`` (human only when both are 0, the 2D model).

transformers' layout is read from the installed version by building ``LlavaForConditionalGeneration`` on the
meta device (no memory): every converted key and shape is checked against it, so a key the release lacks,
an unknown key or a misshapen tensor raises :class:`zoo.core.hub.CheckpointError` naming the file, the key
and what was expected (``EXPECTED_LAYOUT``). transformers needs an image placeholder token in the vocabulary
(LLaVA-v1 uses the id -200 instead): ``<image>`` is added to the tokenizer, with a zero embedding row and a
zero ``lm_head`` row (never generated: ``suppress_tokens`` in generation_config.json) when the vocabulary has
no spare row.

CLI: ``python -m zoo.systems.interactvlm_convert SRC OUT [--tokens [HCON] [OCON]] [--clip DIR]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.core.hub import CheckpointError

__all__ = ["read_released", "split_released", "convert_released", "llava_config_from_v1", "Released", "Split",
           "EXPECTED_LAYOUT", "RELEASE_HINT", "RELEASES", "HEADS_FILE", "main"]

RELEASE_PAGE = "https://interactvlm.is.tue.mpg.de"
DOWNLOAD_URL = "https://download.is.tue.mpg.de/download.php?domain=interactvlm&sfile={name}.zip"
# README.md "Model Zoo" table of saidwivedi/InteractVLM (also fetch_data.sh), plus the two re-released DAMON
# models of FIX.md (2026-04-16; same parameter layout: model/ changed no module in that commit).
RELEASES = ("interactvlm-3d-hcontact-damon", "interactvlm-3d-hcontact-wScene-damon-lemon-rich",
            "interactvlm-3d-oafford-lemon-piad", "interactvlm-2d-hcontact", "interactvlm-3d-hcontact-ocontact",
            "interactvlm-3d-hcontact-damon-fix", "interactvlm-3d-hcontact-damon-noParts")
RELEASE_HINT = (f"it comes from the InteractVLM release page {RELEASE_PAGE} (register, then `bash fetch_data.sh` of "
                f"github.com/saidwivedi/InteractVLM, or download {DOWNLOAD_URL.format(name='<model>')} with <model> one of "
                f"{', '.join(RELEASES)}) and unzips to trained_models/<model>/; nothing is downloaded automatically")
EXPECTED_LAYOUT = (
    "expected a released InteractVLM checkpoint: a Hugging Face directory (config.json of a LLaVA-v1 LlavaLlama "
    "model + pytorch_model*.bin / *.safetensors, sharded or not, + tokenizer) with merged LoRA whose state dict "
    "holds model.embed_tokens.weight, model.layers.{i}.*, model.norm.weight, lm_head.weight, "
    "model.mm_projector.{weight,bias}, optionally model.vision_tower.vision_tower.vision_model.*, "
    "model.visual_model.{image_encoder,prompt_encoder,mask_decoder}.* (SAM; optionally human_mask_decoder / "
    "object_mask_decoder), model.text_hidden_fcs.0.{0,2}.{weight,bias} and optionally cam_pose_encoder.* "
    "(vi_v1 camera lifter)"
)
HEADS_FILE = "interactvlm_heads.pt"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
IMAGE_TOKEN = "<image>"
# CLIP ViT-L/14 at 224 px (openai/clip-vit-large-patch14, LISA's / InteractVLM's --vision-tower default).
CLIP_L14 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
            "image_size": 224, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5}
_SHARD_BYTES = 4 << 30

_LM_LAYER = re.compile(r"^model\.layers\.(\d+)\.((?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight|"
                       r"(?:input|post_attention)_layernorm\.weight)$")
_UNSUPPORTED = re.compile(r"^(attention_splitter\.|model\.visual_model\.(?:fusion|uncertainty)\.)")
_DECODERS = ("mask_decoder", "human_mask_decoder", "object_mask_decoder")


@dataclass
class Released:
    """A released checkpoint as read: its state dict, its config.json (empty for a bare file) and files."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    files: list[Path]
    root: Path


@dataclass
class Split:
    """The release split into the transformers Llava state, the zoo system's heads and what was dropped."""

    llava: dict[str, torch.Tensor]
    system: dict[str, torch.Tensor]
    dropped: dict[str, str]
    tokens: list[str]
    branches: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- reading
def _weight_files(root: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index).is_file():
            try:
                weight_map = json.loads((root / index).read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{root / index}: not a sharded-checkpoint index (no weight_map: {exc}); "
                                      f"{EXPECTED_LAYOUT}") from None
            files = [root / name for name in sorted(set(weight_map.values()))]
            absent = [str(f) for f in files if not f.is_file()]
            if absent:
                raise FileNotFoundError(f"InteractVLM release {root}: shard(s) {', '.join(absent[:3])} listed in "
                                        f"{index} are missing; {RELEASE_HINT}")
            return files
    safe = sorted(root.glob("*.safetensors"))
    return safe or sorted(root.glob("pytorch_model*.bin"))


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({exc}); {EXPECTED_LAYOUT}") from None
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); {EXPECTED_LAYOUT}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__} that is not a state dict of tensors; "
                              f"{EXPECTED_LAYOUT}")
    return obj


def read_released(path: str | os.PathLike) -> Released:
    """Read a released InteractVLM model: a Hugging Face directory (config.json + weights, sharded or not) or
    a single state-dict file (.bin / .pt / .pth / .safetensors). A missing path raises FileNotFoundError
    saying what it should be and where it comes from; unreadable weights raise CheckpointError."""
    root = Path(path).expanduser()
    what = ("the released InteractVLM checkpoint (a Hugging Face directory with merged LoRA: config.json, "
            "pytorch_model*.bin or *.safetensors with the LLaVA LM plus the SAM decoder, projection "
            "(text_hidden_fcs) and camera-lifter (cam_pose_encoder) weights, and the tokenizer)")
    if not root.exists():
        raise FileNotFoundError(f"{what} not found: {root} (expected e.g. trained_models/"
                                f"interactvlm-3d-hcontact-damon/); {RELEASE_HINT}")
    if root.is_file():
        return Released(_read_weights(root), {}, [root], root.parent)
    files = _weight_files(root)
    if not (root / "config.json").is_file() or not files:
        lacks = " and no ".join(x for x, ok in (("config.json", (root / "config.json").is_file()),
                                             ("weights (pytorch_model*.bin / *.safetensors)", bool(files))) if not ok)
        raise FileNotFoundError(f"{root} has no {lacks}: expected {what}; {RELEASE_HINT}")
    try:
        config = json.loads((root / "config.json").read_text())
    except ValueError as exc:
        raise CheckpointError(f"{root / 'config.json'}: not JSON ({exc}); {EXPECTED_LAYOUT}") from None
    state: dict[str, torch.Tensor] = {}
    for f in files:
        part = _read_weights(f)
        twice = sorted(set(part) & set(state))
        if twice:
            raise CheckpointError(f"{f}: key(s) {', '.join(twice[:3])} also in another shard; {EXPECTED_LAYOUT}")
        state.update(part)
    return Released(state, config, files, root)


# ---------------------------------------------------------------------------------------------- layout
def _vision_config_from(state: dict[str, torch.Tensor], prefix: str, override: dict | None) -> dict[str, Any]:
    """CLIP vision sizes read off the tower's tensors (heads: hidden // 64 unless given)."""
    patch = state[f"{prefix}embeddings.patch_embedding.weight"]
    positions = state[f"{prefix}embeddings.position_embedding.weight"].shape[0]
    layers = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    hidden = int(patch.shape[0])
    cfg = {**CLIP_L14, "hidden_size": hidden, "patch_size": int(patch.shape[-1]),
           "image_size": int(round(math.sqrt(positions - 1))) * int(patch.shape[-1]),
           "num_hidden_layers": len(layers),
           "intermediate_size": int(state[f"{prefix}encoder.layers.0.mlp.fc1.weight"].shape[0]),
           "num_attention_heads": max(1, hidden // 64)}
    cfg.update(override or {})
    return cfg


def llava_config_from_v1(config: dict[str, Any], vision: dict[str, Any], vocab_size: int, image_token_id: int,
                         projector: str = "linear"):
    """transformers ``LlavaConfig`` from a LLaVA-v1 (LlavaLlama) config.json: ``text_config`` from its llama
    fields, ``vision_config`` CLIP (``vision``), projector act ``linear`` (single Linear) or ``gelu``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    absent = [k for k in need if k not in config]
    if absent:
        raise CheckpointError(f"config.json lacks the llama field(s) {', '.join(absent)}; {EXPECTED_LAYOUT}")
    text_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "hidden_act",
                 "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias", "pretraining_tp")
    text = {k: config[k] for k in text_keys if config.get(k) is not None}
    text.setdefault("num_key_value_heads", text["num_attention_heads"])
    if "pad_token_id" in text and not 0 <= int(text["pad_token_id"]) < vocab_size:
        text.pop("pad_token_id")
    text_config = LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=False, **text)
    feature = config.get("mm_vision_select_feature", "patch")
    return LlavaConfig(vision_config=CLIPVisionConfig(**vision), text_config=text_config,
                       image_token_id=int(image_token_id), projector_hidden_act=projector,
                       vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
                       vision_feature_select_strategy="full" if feature == "cls_patch" else "default",
                       tie_word_embeddings=False)


def _expected_llava(llava_config) -> dict[str, torch.Size]:
    """The installed transformers' LlavaForConditionalGeneration state-dict layout, built on the meta device."""
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config)
    return {k: v.shape for k, v in model.state_dict().items()}


def _expected_localizer(localizer: dict[str, Any]) -> dict[str, torch.Size]:
    """Prompt-encoder and mask-decoder shapes of ``MVLocSAM(**localizer)`` (built on the meta device)."""
    from zoo.models.localizer.mvloc_sam import MVLocSAM

    with torch.device("meta"):
        sam = MVLocSAM(**{k: v for k, v in localizer.items() if k != "weights"})
    return {k: v.shape for k, v in sam.state_dict().items() if k.startswith(("prompt_encoder.", "mask_decoder."))}


def _branch_of(token: str) -> str:
    from zoo.models.vlm.projection import ContactProjection

    key = ContactProjection.key(token)
    if key[:1].upper() == "H":
        return "human"
    if key[:1].upper() == "O":
        return "object"
    raise ValueError(f"interactvlm_convert: token {token!r} names no branch (expected a human token starting with "
                     f"H, e.g. [HCON], or an object token starting with O, e.g. [OCON])")


def default_tokens(config: dict[str, Any]) -> list[str]:
    """Our tokens for a release's config: [HCON] with hC_loss_weight > 0, [OCON] with oC_loss_weight > 0."""
    tokens = []
    if float(config.get("hC_loss_weight") or 0) > 0:
        tokens.append("[HCON]")
    if float(config.get("oC_loss_weight") or 0) > 0:
        tokens.append("[OCON]")
    return tokens or ["[HCON]"]


def split_released(state: dict[str, torch.Tensor], tokens: list[str] | tuple[str, ...] | None = None, *,
                   config: dict[str, Any] | None = None, source: str = "InteractVLM state dict",
                   clip_state: dict[str, torch.Tensor] | None = None, vision_config: dict | None = None,
                   localizer: dict[str, Any] | None = None, image_token_id: int | None = None,
                   drop_unsupported: bool = False) -> Split:
    """Split a released state dict into transformers' Llava layout, the system's heads and dropped keys.

    ``tokens``: our contact tokens (default :func:`default_tokens` of ``config``). ``clip_state``: a CLIP
    state dict (``vision_model.*``, as in openai/clip-vit-large-patch14) used when the release has no vision
    tower. ``vision_config``: CLIP sizes overriding those read off the tensors. ``localizer``: MVLocSAM
    arguments whose decoder shapes the release must have (default ``{"variant": "vit_h"}``).
    ``image_token_id``: where transformers' image token goes (default: a new row after the vocabulary).
    """
    from zoo.models.lifter.camera_lifter import convert_official_lifter
    from zoo.models.vlm.projection import ContactProjection

    config = dict(config or {})
    state = {(k[len("base_model.model."):] if k.startswith("base_model.model.") else k): v for k, v in state.items()}
    lora = [k for k in state if ".lora_" in k or k.endswith(".base_layer.weight")]
    if lora:
        raise CheckpointError(f"{source}: LoRA not merged ({', '.join(lora[:3])}); run the release's "
                              f"merge_lora_weights_and_save_hf_model.py first; {EXPECTED_LAYOUT}")
    tokens = list(tokens) if tokens else default_tokens(config)
    branches = sorted({_branch_of(t) for t in tokens}, key=("human", "object").index)
    localizer = dict(localizer or {"variant": "vit_h"})
    dropped: dict[str, str] = {}
    llava: dict[str, torch.Tensor] = {}
    system: dict[str, torch.Tensor] = {}
    sam: dict[str, dict[str, torch.Tensor]] = {"prompt_encoder": {}, **{d: {} for d in _DECODERS}}
    fcs: dict[str, torch.Tensor] = {}
    lifter: dict[str, torch.Tensor] = {}
    projector: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    unsupported: list[str] = []
    tower = "model.vision_tower.vision_tower.vision_model."
    for key, value in state.items():
        if key in ("model.embed_tokens.weight", "model.norm.weight"):
            llava[key.replace("model.", "model.language_model.", 1)] = value
        elif key == "lm_head.weight":
            llava[key] = value
        elif m := _LM_LAYER.match(key):
            llava[f"model.language_model.layers.{m.group(1)}.{m.group(2)}"] = value
        elif re.match(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", key):
            dropped[key] = "rotary frequencies: a buffer transformers recomputes from rope_theta"
        elif re.match(r"^model\.mm_projector\.(?:weight|bias|[02]\.(?:weight|bias))$", key):
            projector[key[len("model.mm_projector."):]] = value
        elif key.startswith(tower):
            rest = key[len(tower):]
            if rest == "embeddings.position_ids":
                dropped[key] = "CLIP position ids: a non-persistent buffer in transformers"
            else:
                llava[f"model.vision_tower.{rest}"] = value
        elif key.startswith("model.visual_model.image_encoder."):
            dropped[key] = ("SAM image encoder: frozen in InteractVLM (initialize_ivlm_modules), equal to "
                            "sam_vit_h_4b8939.pth; the localizer loads it from the SAM file")
        elif key.startswith("model.visual_model.prompt_encoder."):
            sam["prompt_encoder"][key[len("model.visual_model.prompt_encoder."):]] = value
        elif (m := re.match(r"^model\.visual_model\.(" + "|".join(_DECODERS) + r")\.(.+)$", key)):
            sam[m.group(1)][m.group(2)] = value
        elif m := re.match(r"^model\.text_hidden_fcs\.0\.([02]\.(?:weight|bias))$", key):
            fcs[m.group(1)] = value
        elif key.startswith("cam_pose_encoder."):
            lifter[key] = value
        elif _UNSUPPORTED.match(key):
            unsupported.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unknown key(s) {', '.join(unknown[:5])}"
                              f"{_more(unknown)}; {EXPECTED_LAYOUT}")
    if unsupported and not drop_unsupported:
        raise CheckpointError(f"{source}: key(s) {', '.join(unsupported[:3])} belong to modules the zoo has no "
                              f"counterpart for (InteractVLM's attention_splitter / LLaVASAMFusion / "
                              f"UncertaintyModule); pass drop_unsupported=True to drop them (outputs will differ)")
    for key in unsupported:
        dropped[key] = "no zoo counterpart (attention_splitter / fusion / uncertainty); dropped on request"

    # --- LM vocabulary: transformers needs an <image> token id
    embed = llava.get("model.language_model.embed_tokens.weight")
    head = llava.get("lm_head.weight")
    for name, t in (("model.embed_tokens.weight", embed), ("lm_head.weight", head)):
        if t is None:
            raise CheckpointError(f"{source}: missing key {name}; {EXPECTED_LAYOUT}")
        if t.ndim != 2:
            raise CheckpointError(f"{source}: {name} has shape {tuple(t.shape)}, expected (vocab, hidden)")
    if head.shape != embed.shape:
        raise CheckpointError(f"{source}: lm_head.weight has shape {tuple(head.shape)}, expected "
                              f"{tuple(embed.shape)} (that of model.embed_tokens.weight)")
    rows, hidden = embed.shape
    image_id = rows if image_token_id is None else int(image_token_id)
    if image_id >= rows:
        grow = image_id + 1 - rows
        pad = torch.zeros(grow, hidden, dtype=embed.dtype)
        llava["model.language_model.embed_tokens.weight"] = torch.cat([embed, pad])
        llava["lm_head.weight"] = torch.cat([head, pad.to(head.dtype)])
    vocab = max(rows, image_id + 1)

    # --- projector
    if set(projector) == {"weight", "bias"}:
        w = projector["weight"]
        if w.ndim != 2:
            raise CheckpointError(f"{source}: model.mm_projector.weight has shape {tuple(w.shape)}, expected "
                                  f"(hidden, mm_hidden)")
        llava["model.multi_modal_projector.linear_1.weight"] = w
        llava["model.multi_modal_projector.linear_1.bias"] = projector["bias"]
        llava["model.multi_modal_projector.linear_2.weight"] = torch.eye(w.shape[0], dtype=w.dtype)
        llava["model.multi_modal_projector.linear_2.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
        act, kind = "linear", "single Linear (LISA's llava_arch): linear_2 = identity, act linear"
    elif set(projector) == {"0.weight", "0.bias", "2.weight", "2.bias"}:
        for i, j in (("0", "1"), ("2", "2")):
            llava[f"model.multi_modal_projector.linear_{j}.weight"] = projector[f"{i}.weight"]
            llava[f"model.multi_modal_projector.linear_{j}.bias"] = projector[f"{i}.bias"]
        act, kind = "gelu", "mlp2x_gelu"
    else:
        raise CheckpointError(f"{source}: missing key(s) of the vision projector: expected "
                              f"model.mm_projector.{{weight,bias}} (or .{{0,2}}.{{weight,bias}}), got "
                              f"{sorted('model.mm_projector.' + k for k in projector) or 'none'}; {EXPECTED_LAYOUT}")

    # --- vision tower
    if any(k.startswith("model.vision_tower.") for k in llava):
        vision = _vision_config_from(llava, "model.vision_tower.", vision_config)
        tower_from = "release"
    elif clip_state is not None:
        prefix = "vision_model." if any(k.startswith("vision_model.") for k in clip_state) else ""
        for k, v in clip_state.items():
            if k.startswith(prefix) and not k.startswith("text_model.") and k != f"{prefix}embeddings.position_ids":
                llava[f"model.vision_tower.{k[len(prefix):]}"] = v
        vision = _vision_config_from(llava, "model.vision_tower.", vision_config)
        tower_from = "clip"
    else:
        raise CheckpointError(f"{source}: no vision tower (model.vision_tower.vision_tower.vision_model.*): the "
                              f"release's merge_lora_weights_and_save_hf_model.py saves every key but those; pass "
                              f"clip= a local copy of {config.get('mm_vision_tower') or 'openai/clip-vit-large-patch14'} "
                              f"(`hf download openai/clip-vit-large-patch14 --local-dir DIR`)")

    # --- check the whole Llava layout against the installed transformers
    if not config:  # a bare state-dict file: LLaMA sizes off the tensors (head width 128, as LLaMA-2)
        gate = llava.get("model.language_model.layers.0.mlp.gate_proj.weight")
        config = {"hidden_size": hidden, "num_attention_heads": max(1, hidden // 128),
                  "intermediate_size": int(gate.shape[0]) if gate is not None else 4 * hidden,
                  "num_hidden_layers": len({k.split(".")[3] for k in llava
                                            if k.startswith("model.language_model.layers.")})}
    llava_config = llava_config_from_v1(config, vision, vocab, image_id, act)
    want = _expected_llava(llava_config)
    _check_layout(llava, want, source, "transformers LlavaForConditionalGeneration", _official_llava_name)

    # --- SAM prompt encoder and mask decoder(s)
    sam_shapes = _expected_localizer(localizer)
    separate = bool(sam["human_mask_decoder"] or sam["object_mask_decoder"])
    decoder_of = {"human": "human_mask_decoder" if separate else "mask_decoder",
                  "object": "object_mask_decoder" if separate else "mask_decoder"}
    used = {decoder_of[b] for b in branches} | ({"mask_decoder"} if not separate else set())
    for name in _DECODERS:
        if sam[name] and name not in used:
            why = ("the shared decoder; with human_/object_mask_decoder present ModifiedSAM.forward never uses it"
                   if name == "mask_decoder" else f"the {name.split('_')[0]} decoder; no {name.split('_')[0]} token")
            for k in sam[name]:
                dropped[f"model.visual_model.{name}.{k}"] = why
    for branch in branches:
        part = {f"prompt_encoder.{k}": v for k, v in sam["prompt_encoder"].items()}
        part.update({f"mask_decoder.{k}": v for k, v in sam[decoder_of[branch]].items()})
        _check_layout(part, sam_shapes, source, f"MVLocSAM({localizer}) prompt encoder / mask decoder",
                      lambda k, b=branch: _official_sam_name(k, decoder_of[b]))
        system.update({f"{branch}.localizer.{k}": v for k, v in part.items()})

    # --- projection Γ (one official MLP for every token)
    out_dim = int(config.get("out_dim", 256))
    fc_shapes = {"0.weight": (hidden, hidden), "0.bias": (hidden,), "2.weight": (out_dim, hidden), "2.bias": (out_dim,)}
    _check_layout(fcs, {k: torch.Size(s) for k, s in fc_shapes.items()}, source,
                  f"InteractVLM's text_hidden_fcs[0] (Linear({hidden}, {hidden}), ReLU, Linear({hidden}, {out_dim}))",
                  lambda k: f"model.text_hidden_fcs.0.{k}")
    for token in tokens:
        system.update({f"projection.heads.{ContactProjection.key(token)}.{k}": v for k, v in fcs.items()})

    # --- camera lifter
    lifter_info: dict[str, Any] = {"name": "identity"}
    if lifter:
        kind_cfg = config.get("cam_encoder_type", "vi_v1")
        if kind_cfg != "vi_v1":
            raise CheckpointError(f"{source}: cam_pose_encoder is InteractVLM's {kind_cfg!r} camera encoder "
                                  f"(config.json cam_encoder_type); only 'vi_v1' (VIv1CamPoseEncoder, the zoo's "
                                  f"camera_lifter) is supported")
        views = config.get("multiview_channels")
        ours = convert_official_lifter(lifter, source, num_views=int(views) if views else None)
        nv, hid, emb = ours["view_weight"].shape
        if emb != out_dim:
            raise CheckpointError(f"{source}: cam_pose_encoder.view_transforms.0.weight has {emb} outputs, expected "
                                  f"{out_dim} (the prompt width, text_hidden_fcs.0.2 outputs)")
        lifter_info = {"name": "camera_lifter", "num_views": int(nv), "in_dim": int(ours["shared.0.weight"].shape[1]),
                       "hidden": int(hid), "embed_dim": int(emb)}
        for branch in branches:
            system.update({f"{branch}.lifter.{k}": v for k, v in ours.items()})
    elif config.get("multiview_cam_cond"):
        raise CheckpointError(f"{source}: config.json sets multiview_cam_cond but the weights hold no "
                              f"cam_pose_encoder.* keys; expected {EXPECTED_LAYOUT}")

    official = _official_tokens(config, tokens)
    info = {"projector": kind, "vision_tower_from": tower_from, "vision_config": vision,
            "text": {"vocab_size": vocab, "hidden_size": hidden, "source_vocab_rows": rows},
            "image_token_id": image_id, "separate_decoders": separate, "lifter": lifter_info,
            "official_tokens": official, "localizer": localizer, "llava_config": llava_config}
    return Split(llava=llava, system=system, dropped=dropped, tokens=tokens, branches=branches, info=info)


def _official_tokens(config: dict[str, Any], tokens: list[str]) -> dict[str, str]:
    """Which official token each of ours stands for (utils/utils.py add_new_tokens; process_embeddings)."""
    base = str(config.get("token_type", "Gen")).replace("-DifDe", "")
    out = {}
    for t in tokens:
        if base == "Gen-Hu-Obj":
            out[t] = "[HSEG]" if _branch_of(t) == "human" else "[OSEG]"
        elif base == "Gen-Int":
            out[t] = "[ISEG]"
        else:
            out[t] = "[SEG]"
    return out


def _official_llava_name(key: str) -> str:
    for ours, theirs in (("model.language_model.", "model."), ("model.vision_tower.", "model.vision_tower.vision_tower"
                                                                                      ".vision_model."),
                         ("model.multi_modal_projector.", "model.mm_projector (as ")):
        if key.startswith(ours):
            return theirs + key[len(ours):] + (")" if theirs.endswith("(as ") else "")
    return key


def _official_sam_name(key: str, decoder: str) -> str:
    comp, rest = key.split(".", 1)
    return f"model.visual_model.{decoder if comp == 'mask_decoder' else comp}.{rest}"


def _more(keys: list[str], shown: int = 5) -> str:
    return f" (+{len(keys) - shown} more)" if len(keys) > shown else ""


def _check_layout(got: dict[str, torch.Tensor], want: dict[str, torch.Size], source: str, what: str, name) -> None:
    """Missing / unexpected keys or wrong shapes against ``want`` raise CheckpointError (official key names)."""
    missing = sorted(k for k in want if k not in got)
    if missing:
        raise CheckpointError(f"{source}: missing key(s) {', '.join(name(k) for k in missing[:5])}"
                              f"{_more(missing)} needed by {what}; "
                              f"{EXPECTED_LAYOUT}")
    extra = sorted(k for k in got if k not in want)
    if extra:
        raise CheckpointError(f"{source}: unexpected key(s) {', '.join(name(k) for k in extra[:5])} for {what}; "
                              f"{EXPECTED_LAYOUT}")
    bad = [f"{name(k)} {tuple(got[k].shape)} (expected {tuple(s)})" for k, s in want.items()
           if tuple(got[k].shape) != tuple(s)]
    if bad:
        raise CheckpointError(f"{source}: wrong shape: {'; '.join(bad[:3])} for {what}; {EXPECTED_LAYOUT}")


# ---------------------------------------------------------------------------------------------- writing
def _save_llava_weights(state: dict[str, torch.Tensor], out: Path) -> list[str]:
    """model.safetensors, or model-0000i-of-0000n.safetensors + index past ~4 GiB, each written atomically."""
    from safetensors.torch import save_file

    from zoo.core.atomic import atomic_path, atomic_write_text

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        t = state[k].contiguous()
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > _SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += n
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for shard, fname in zip(shards, names, strict=True):
        with atomic_path(out / fname) as tmp:
            save_file(shard, str(tmp), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: fname for shard, fname in zip(shards, names, strict=True) for k in shard}}
        atomic_write_text(out / "model.safetensors.index.json", json.dumps(index, indent=2))
    return names


def _load_tokenizer(root: Path):
    if not any((root / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(root), local_files_only=True)


def _read_clip(clip: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    root = Path(clip).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CLIP vision tower directory not found: {root} (expected a local copy of "
                                f"openai/clip-vit-large-patch14, the release's mm_vision_tower: `hf download "
                                f"openai/clip-vit-large-patch14 --local-dir {root}`)")
    files = _weight_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no *.safetensors / pytorch_model*.bin (expected openai/clip-vit-large-patch14)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_weights(f))
    cfg = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
    vision = cfg.get("vision_config", cfg)
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size", "projection_dim", "hidden_act", "layer_norm_eps")
    return state, {k: vision[k] for k in keys if k in vision}


def convert_released(path: str | os.PathLike, out_dir: str | os.PathLike, tokens: list[str] | None = None, *,
                     clip: str | os.PathLike | None = None, vision_config: dict | None = None,
                     localizer: dict[str, Any] | None = None, drop_unsupported: bool = False) -> dict[str, Path]:
    """Convert the release at ``path`` into ``out_dir``: ``llava/`` (a transformers Llava directory with
    weights, config, generation config, tokenizer and processor), ``interactvlm_heads.pt`` (the system's
    ``projection.*``, ``{human,object}.localizer.*``, ``{human,object}.lifter.*`` tensors) and
    ``convert.json`` (source, sha256 of its files, tokens, dropped keys, sizes). Returns those paths."""
    from transformers import CLIPImageProcessor, GenerationConfig, LlavaProcessor

    from zoo.core.atomic import atomic_path, atomic_write_text, sha256_file

    released = read_released(path)
    source = str(released.files[0] if len(released.files) == 1 else released.root)
    tokenizer = _load_tokenizer(released.root)
    image_id = None
    if tokenizer is not None:
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    clip_state, clip_cfg = _read_clip(clip) if clip is not None else (None, {})
    split = split_released(released.state, tokens, config=released.config, source=source, clip_state=clip_state,
                           vision_config={**clip_cfg, **(vision_config or {})}, localizer=localizer,
                           image_token_id=image_id, drop_unsupported=drop_unsupported)
    if tokenizer is not None and len(tokenizer) > split.info["text"]["vocab_size"]:
        raise CheckpointError(f"{released.root}: the tokenizer has {len(tokenizer)} tokens but "
                              f"model.embed_tokens.weight only {split.info['text']['source_vocab_rows']} rows")

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    llava_dir = out / "llava"
    tmp = out / f".llava.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config = split.info["llava_config"]
        config.architectures = ["LlavaForConditionalGeneration"]
        config.save_pretrained(str(tmp))
        gen = GenerationConfig(bos_token_id=config.text_config.bos_token_id,
                               eos_token_id=config.text_config.eos_token_id,
                               pad_token_id=getattr(config.text_config, "pad_token_id", None),
                               suppress_tokens=[split.info["image_token_id"]])
        gen.save_pretrained(str(tmp))
        _save_llava_weights(split.llava, tmp)
        vision = split.info["vision_config"]
        size, patch = int(vision["image_size"]), int(vision["patch_size"])
        improc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                    do_resize=True, do_center_crop=True)
        if tokenizer is not None:
            processor = LlavaProcessor(image_processor=improc, tokenizer=tokenizer, patch_size=patch,
                                       vision_feature_select_strategy=config.vision_feature_select_strategy,
                                       image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
            processor.save_pretrained(str(tmp))
        else:
            improc.save_pretrained(str(tmp))
        if llava_dir.exists():
            shutil.rmtree(llava_dir)
        os.replace(tmp, llava_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    heads = out / HEADS_FILE
    with atomic_path(heads) as t:
        torch.save({k: v.contiguous() for k, v in split.system.items()}, t)
    record = {
        "source": str(Path(path).expanduser().resolve()),
        "files": {str(f.relative_to(released.root) if f.is_relative_to(released.root) else f): sha256_file(f)
                  for f in released.files},
        "clip": str(Path(clip).expanduser().resolve()) if clip is not None else None,
        "tokens": split.tokens, "official_tokens": split.info["official_tokens"], "branches": split.branches,
        "lifter": split.info["lifter"], "localizer": split.info["localizer"],
        "separate_decoders": split.info["separate_decoders"], "projector": split.info["projector"],
        "vision_tower_from": split.info["vision_tower_from"], "image_token_id": split.info["image_token_id"],
        "tokenizer": tokenizer is not None,
        "official_config": {k: released.config[k] for k in ("token_type", "hC_sam_view_type", "oC_sam_view_type",
                                                            "hC_loss_weight", "oC_loss_weight", "multiview_channels",
                                                            "multiview_cam_cond", "cam_encoder_type",
                                                            "mm_use_im_start_end", "mm_vision_tower", "img_emb_len")
                            if k in released.config},
        "dropped": split.dropped,
    }
    record_path = atomic_write_text(out / "convert.json", json.dumps(record, indent=2, default=str))
    return {"llava": llava_dir, "heads": heads, "record": record_path}


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.systems.interactvlm_convert SRC OUT [--tokens ...] [--clip DIR]``."""
    ap = argparse.ArgumentParser(prog="python -m zoo.systems.interactvlm_convert",
                                 description="Convert a released InteractVLM model into zoo components.")
    ap.add_argument("src", help="the release directory (trained_models/<model>/) or a state-dict file")
    ap.add_argument("out", help="output directory (llava/, interactvlm_heads.pt, convert.json)")
    ap.add_argument("--tokens", nargs="+", default=None, help="our contact tokens, e.g. [HCON] [OCON] "
                    "(default: from the release's hC_/oC_loss_weight)")
    ap.add_argument("--clip", default=None, help="local openai/clip-vit-large-patch14 (the release omits the tower)")
    ap.add_argument("--sam-variant", default="vit_h", help="MVLocSAM variant whose decoder shapes to expect")
    ap.add_argument("--drop-unsupported", action="store_true",
                    help="drop attention_splitter / fusion / uncertainty weights instead of refusing")
    args = ap.parse_args(argv)
    try:
        paths = convert_released(args.src, args.out, args.tokens, clip=args.clip,
                                 localizer={"variant": args.sam_variant}, drop_unsupported=args.drop_unsupported)
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, p in paths.items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
