"""MV-Loc's localizer: Segment Anything prompted with 256-d embeddings instead of points or boxes.

InteractVLM (and LISA before it) keep SAM's image encoder and prompt encoder frozen
and fine-tune only the mask decoder. Instead of points or boxes, the sparse prompt is
made of 256-d embeddings (the VLM's contact token projected to 256-d, or a learned
class embedding); the dense prompt is the prompt encoder's "no mask" embedding;
``multimask_output=False`` keeps the decoder's first mask token.

Multi-view prompts (:func:`view_prompt_sequences`): InteractVLM gates the token once per
view (the camera lifter) and hands the V gated tokens to SAM *together*, as one sparse
prompt sequence of V tokens shared by the V view embeddings (SAM's decoder broadcasts the
token batch of 1 over the V images), so the mask of view v depends on every gated token.
That is ``prompt_mode="shared"``, the default; ``"own"`` decodes view v with its own gated
token only (the zoo's earlier behaviour).

The network is built from segment-anything's own classes (``ImageEncoderViT``,
``PromptEncoder``, ``MaskDecoder``, ``TwoWayTransformer``) at the sizes of
``segment_anything.build_sam`` (ViT-B / ViT-L / ViT-H), plus a ``tiny`` configuration of
the same classes that trains in seconds on a CPU. Parameter names match the official
checkpoints (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so the
released ``sam_vit_*.pth`` files load directly (see :func:`load_sam_state_dict`).

Decoding is vectorised over images: segment-anything's ``MaskDecoder.predict_masks``
repeats every image embedding once per prompt (``repeat_interleave``), which would pair
N embeddings with N prompts N*N times, so :meth:`MVLocSAM.decode` runs the decoder's
own sub-modules (transformer, upscaling, first hypernetwork MLP) with embedding i and
prompt sequence i aligned. For one image and one prompt sequence it equals
``MaskDecoder.forward``.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.hub import Pretrained
from zoo.core.interfaces import Localizer
from zoo.core.registry import register

__all__ = ["MVLocSAM", "load_sam_state_dict", "sam_state_for", "view_prompt_sequences", "PROMPT_MODES",
           "SAM_VARIANTS", "SAM_FILES", "DECODER_DEFAULTS"]

# Encoder sizes as in segment_anything/build_sam.py (build_sam_vit_b/_l/_h).
SAM_VARIANTS: dict[str, dict[str, Any]] = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": (5, 11, 17, 23)},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": (7, 15, 23, 31)},
}
# Official release file names (facebookresearch/segment-anything README, "Model Checkpoints").
SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
PROMPT_DIM = 256
# segment-anything's prompt encoder / mask decoder sizes besides the width (build_sam._build_sam);
# ``mlp_dim`` of the tiny variant defaults to tiny_decoder_mlp_dim instead.
DECODER_DEFAULTS: dict[str, int] = {
    "depth": 2, "num_heads": 8, "mlp_dim": 2048, "attention_downsample_rate": 2, "num_multimask_outputs": 3,
    "iou_head_depth": 3, "iou_head_hidden_dim": 256, "mask_in_chans": 16,
}
PROMPT_MODES = ("shared", "own")
# SAM's pixel statistics on the 0-255 scale (segment_anything/build_sam.py).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
_COMPONENTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


def _resize_pos_embed(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Bicubic resize of an absolute position grid (1, H, W, C) to ``shape`` (checkpoint trained at 1024)."""
    x = t.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(shape[1], shape[2]), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(t.dtype)


def _resize_rel_pos(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Linear resize of a relative-position table (2S-1, C) along its length, as SAM's get_rel_pos does."""
    x = t.float().t().unsqueeze(0)
    x = F.interpolate(x, size=shape[0], mode="linear", align_corners=False)
    return x[0].t().to(t.dtype)


def sam_state_for(module: nn.Module, state_dict: Any, source: str = "SAM state_dict",
                  resize_positional: bool = True) -> dict[str, torch.Tensor]:
    """An official-layout SAM state dict made to fit ``module`` (shapes that still differ are left for the
    caller's strict check).

    Accepts the key layout of the released ``sam_vit_*.pth`` files (``image_encoder.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``), also wrapped as ``{"state_dict": ...}``. With
    ``resize_positional`` the encoder's absolute position grid and the global-attention
    relative-position tables are interpolated when the module runs at another ``image_size`` than
    the checkpoint (1024).
    """
    from zoo.core.hub import CheckpointError

    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{source}: expected a SAM state_dict (a dict of tensors with keys image_encoder.*, "
                              f"prompt_encoder.*, mask_decoder.*), got {type(state_dict).__name__}")
    own = module.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in own or not isinstance(value, torch.Tensor):
            state[key] = value
            continue
        want = own[key].shape
        if value.shape != want and resize_positional and value.ndim == own[key].ndim:
            if key.endswith("pos_embed") and value.ndim == 4:
                value = _resize_pos_embed(value, want)
            elif key.endswith(("rel_pos_h", "rel_pos_w")) and value.ndim == 2 and value.shape[1] == want[1]:
                value = _resize_rel_pos(value, want)
        state[key] = value
    return state


def load_sam_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True,
                        source: str | os.PathLike | None = None,
                        resize_positional: bool = True) -> tuple[list[str], list[str]]:
    """Load an official-layout SAM state dict held in memory into ``module`` (an :class:`MVLocSAM` or upstream
    ``Sam``), e.g. reference weights stored in a test file; a weights *file* loads through the checkpoint store
    (``MVLocSAM(weights=...)``). See :func:`sam_state_for` for the layout and resizing. Returns (missing,
    unexpected) key lists; with ``strict`` a missing / unexpected key or a shape mismatch raises
    :class:`zoo.core.hub.CheckpointError` naming the first few keys and ``source``.
    """
    from zoo.core.hub import fit_state

    where = str(source) if source is not None else "SAM state_dict"
    state = sam_state_for(module, state_dict, where, resize_positional)
    hparams = getattr(module, "hparams", None)
    variant = hparams.get("variant") if isinstance(hparams, dict) else None
    what = f"MVLocSAM(variant={variant!r})" if variant else type(module).__name__
    loadable = fit_state(module, state, f"{where} does not fit {what} (expected the official SAM key layout "
                                        f"image_encoder.*, prompt_encoder.*, mask_decoder.* of the same variant)", strict=strict)
    own = module.state_dict()
    module.load_state_dict(loadable, strict=False)
    return sorted(k for k in own if k not in state), sorted(k for k in state if k not in own)


def view_prompt_sequences(per_view: torch.Tensor, mode: str = "shared") -> torch.Tensor:
    """The sparse prompt sequences (P * V, K, C) of per-view prompts (P, V, C), one per view embedding.

    ``shared`` (InteractVLM): every view of sample p gets the same sequence of all V gated tokens
    [t*g_1 ... t*g_V] (K = V), what SAM's decoder does when it is given a token batch of 1 and V
    image embeddings. ``own``: view v gets its own token only (K = 1). Row p * V + v pairs with
    the embedding of view v of sample p.
    """
    if per_view.ndim != 3:
        raise ValueError(f"view_prompt_sequences: expected per-view prompts (P, V, C), got {tuple(per_view.shape)}")
    P, V, C = per_view.shape
    if mode == "shared":
        return per_view.unsqueeze(1).expand(P, V, V, C).reshape(P * V, V, C)
    if mode == "own":
        return per_view.reshape(P * V, 1, C)
    raise ValueError(f"prompt_mode must be one of {', '.join(PROMPT_MODES)}; got {mode!r}")


def check_weights(weights: str, variant: str) -> None:
    """Fail early, before a large encoder is built, when ``weights`` names a file that is not there."""
    from zoo.core import hub

    text = os.fspath(weights)
    if text.startswith("zoo://") or text in hub.registry.index()["checkpoints"]:
        name = text.removeprefix("zoo://")
        ent = hub.registry.checkpoint_entry(name)
        if not hub.checkpoint_path(name).exists():
            raise FileNotFoundError(hub._missing_message(name, ent, hub.checkpoint_path(name)))
        return
    path = Path(text).expanduser()
    if path.exists():
        return
    if variant in SAM_FILES:
        fname = SAM_FILES[variant]
        what = f"SAM {variant.replace('_', '-').upper().replace('VIT', 'ViT')} weights ({fname})"
        origin = (f"the official segment-anything release, {SAM_URL}{fname} (Apache-2.0); or place it at "
                  f"$ZOO_HOME/checkpoints/sam-{variant.replace('_', '-')}/{fname} and pass "
                  f"weights='zoo://sam-{variant.replace('_', '-')}'")
    else:
        what = "tiny SAM weights (a state_dict or export saved from MVLocSAM(variant='tiny'))"
        origin = "a state_dict you saved from this class"
    raise FileNotFoundError(f"MVLocSAM: weights not found: {path}. Expected {what}; it comes from {origin}. "
                            f"Nothing is downloaded automatically.")


@register("localizer", "mvloc_sam")
class MVLocSAM(Pretrained, Localizer, L.LightningModule):
    """SAM mask decoder prompted with 256-d embeddings (InteractVLM's MV-Loc localizer).

    Args:
        variant: encoder size: vit_b / vit_l / vit_h (segment-anything sizes) or tiny.
        weights: official SAM weights: ``zoo://sam-vit-h`` (a registry checkpoint, hash-checked)
            or a file path; loaded after the modules are built (zoo.core.hub.Pretrained); None
            keeps the random initialisation.
        image_size: encoder input size (images are resized to a square of this size);
            default 1024 for full variants, 128 for tiny.
        tiny_embed_dim, tiny_depth, tiny_patch, tiny_heads, tiny_window,
        tiny_decoder_mlp_dim: the tiny encoder / decoder sizes (ignored for full variants).
        prompt_dim: the prompt / transformer width (SAM: 256, what the released checkpoints need);
            also the image encoder's output channels.
        decoder: overrides of the prompt encoder / mask decoder sizes, segment-anything's names:
            depth, num_heads, mlp_dim, attention_downsample_rate, num_multimask_outputs,
            iou_head_depth, iou_head_hidden_dim, mask_in_chans (defaults :data:`DECODER_DEFAULTS`,
            mlp_dim = tiny_decoder_mlp_dim for tiny, iou_head_hidden_dim = prompt_dim).
        freeze_image_encoder: keep the image encoder frozen, in eval mode and under no_grad.
        freeze_prompt_encoder: keep the prompt encoder frozen (only its no-mask embedding and
            positional encoding are used).
        freeze_unused_decoder_heads: freeze the IoU head and the hypernetwork MLPs of mask
            tokens 1-3, which never reach the output with multimask_output=False (so DDP sees
            no parameters without gradients).
        encode_chunk_size: default number of images per encoder pass in :meth:`encode`
            (bounds memory; None = all at once).
    """

    def __init__(
        self,
        variant: Literal["vit_b", "vit_l", "vit_h", "tiny"] = "vit_h",
        weights: str | None = None,
        image_size: int | None = None,
        tiny_embed_dim: int = 64,
        tiny_depth: int = 2,
        tiny_patch: int = 8,
        tiny_heads: int = 2,
        tiny_window: int = 4,
        tiny_decoder_mlp_dim: int = 256,
        prompt_dim: int = PROMPT_DIM,
        decoder: dict | None = None,
        freeze_image_encoder: bool = True,
        freeze_prompt_encoder: bool = True,
        freeze_unused_decoder_heads: bool = True,
        encode_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

        if variant not in (*SAM_VARIANTS, "tiny"):
            raise ValueError(f"MVLocSAM: variant must be one of vit_b, vit_l, vit_h, tiny; got {variant!r}")
        self.save_hyperparameters()
        if weights:
            from zoo.core.hub import pretrained_skipped

            if not pretrained_skipped():
                check_weights(weights, variant)  # before a large encoder is built
        if variant == "tiny":
            size = int(image_size or 128)
            patch = int(tiny_patch)
            enc = {"embed_dim": tiny_embed_dim, "depth": tiny_depth, "num_heads": tiny_heads,
                   # SAM puts a global-attention block at the end of each stage; one stage here.
                   "global_attn_indexes": (tiny_depth - 1,)}
            window, mlp_dim = int(tiny_window), int(tiny_decoder_mlp_dim)
        else:
            size, patch = int(image_size or 1024), 16
            enc, window, mlp_dim = SAM_VARIANTS[variant], 14, 2048
        if size % patch:
            raise ValueError(f"MVLocSAM: image_size {size} must be a multiple of the patch size {patch}")
        if encode_chunk_size is not None and encode_chunk_size < 1:
            raise ValueError(f"MVLocSAM: encode_chunk_size must be >= 1 or None, got {encode_chunk_size}")
        dim = int(prompt_dim)
        dec = {**DECODER_DEFAULTS, "mlp_dim": mlp_dim, "iou_head_hidden_dim": dim}
        unknown = sorted(set(decoder or {}) - set(dec))
        if unknown:
            raise ValueError(f"MVLocSAM: unknown decoder size(s) {unknown}; expected some of {sorted(dec)}")
        dec.update({k: int(v) for k, v in (decoder or {}).items()})
        if dim < 8 or dim % 8 or dim % dec["num_heads"] or (dim // dec["attention_downsample_rate"]) % dec["num_heads"]:
            raise ValueError(f"MVLocSAM: prompt_dim {dim} must be a multiple of 8 and of decoder.num_heads "
                             f"{dec['num_heads']} (also after the attention downsampling by "
                             f"{dec['attention_downsample_rate']})")
        self.image_size = size
        self.prompt_dim = dim
        grid = size // patch
        self.image_encoder = ImageEncoderViT(
            depth=int(enc["depth"]), embed_dim=int(enc["embed_dim"]), img_size=size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=int(enc["num_heads"]), patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(enc["global_attn_indexes"]),
            window_size=window, out_chans=dim,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(size, size),
            mask_in_chans=dec["mask_in_chans"],
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=dec["num_multimask_outputs"],
            transformer=TwoWayTransformer(depth=dec["depth"], embedding_dim=dim, mlp_dim=dec["mlp_dim"],
                                          num_heads=dec["num_heads"],
                                          attention_downsample_rate=dec["attention_downsample_rate"]),
            transformer_dim=dim, iou_head_depth=dec["iou_head_depth"], iou_head_hidden_dim=dec["iou_head_hidden_dim"],
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

        if freeze_image_encoder:
            self.image_encoder.requires_grad_(False)
        if freeze_prompt_encoder:
            self.prompt_encoder.requires_grad_(False)
        if freeze_unused_decoder_heads:
            self.mask_decoder.iou_prediction_head.requires_grad_(False)
            for mlp in self.mask_decoder.output_hypernetworks_mlps[1:]:
                mlp.requires_grad_(False)
        self.train(self.training)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> MVLocSAM:
        """Set train/eval mode, keeping frozen encoders in eval mode."""
        super().train(mode)
        if self.hparams.freeze_image_encoder:
            self.image_encoder.eval()
        if self.hparams.freeze_prompt_encoder:
            self.prompt_encoder.eval()
        return self

    # ------------------------------------------------------------------ weights
    def convert_checkpoint(self, obj: Any, source: str) -> dict[str, torch.Tensor]:
        """The official SAM layout (``sam_vit_*.pth``) made to fit this module (positional tables resized)."""
        return sam_state_for(self, obj, source)

    # ------------------------------------------------------------------ interface
    @property
    def embed_dim(self) -> int:
        """Width of a prompt and of the image embeddings (256 for SAM, ``prompt_dim``)."""
        return self.prompt_dim

    @property
    def encoder_frozen(self) -> bool:
        """True when the image encoder has no trainable parameter, so its embeddings may be cached."""
        return not any(p.requires_grad for p in self.image_encoder.parameters())

    @property
    def embedding_size(self) -> tuple[int, int]:
        """(h, w) of the image embeddings :meth:`encode` returns."""
        return tuple(self.prompt_encoder.image_embedding_size)

    # ------------------------------------------------------------------ encoder
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (N,3,H,W) images in [0,1] to the encoder size and apply SAM's pixel normalisation."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"MVLocSAM.encode: expected images of shape (N, 3, H, W), got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"MVLocSAM.encode: expected float images in [0, 1], got dtype {images.dtype}")
        flat = images.detach().flatten(1)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        bad = (lo < -1e-3) | (hi > 1 + 1e-3) | ~torch.isfinite(lo) | ~torch.isfinite(hi)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"MVLocSAM.encode: image {i} has values in [{lo[i].item():.4g}, {hi[i].item():.4g}], "
                             f"expected [0, 1] (pass renders / photos scaled to [0, 1], not 0-255)")
        x = images
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            down = x.shape[-2] > self.image_size or x.shape[-1] > self.image_size
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=down)
        return (x * 255.0 - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def encode(self, images: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """SAM image embeddings (N, prompt_dim, h, w) of images (N, 3, H, W) in [0, 1].

        Runs under ``torch.no_grad()`` when the encoder is frozen; ``chunk_size`` (default
        ``encode_chunk_size``) bounds how many images go through the encoder at once.
        """
        x = self.preprocess(images)
        chunk = chunk_size or self.hparams.encode_chunk_size or x.shape[0]
        frozen = self.hparams.freeze_image_encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            outs = [self.image_encoder(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    # ------------------------------------------------------------------ decoder
    def decode(self, embeddings: torch.Tensor, prompts: torch.Tensor,
               output_size: tuple[int, int] | None = None,
               return_iou: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (N, 1, H_out, W_out): embedding i decoded with prompt (sequence) i.

        ``embeddings`` (N, C, h, w) from :meth:`encode`; ``prompts`` (N, C) (one token per embedding)
        or (N, K, C) (a sequence of K sparse prompt tokens per embedding, e.g. the V gated tokens of
        :func:`view_prompt_sequences`); the dense prompt is the no-mask embedding. Without
        ``output_size`` the decoder's low-resolution masks (4h x 4w) are returned, otherwise they are
        upsampled bilinearly to ``output_size``. ``return_iou`` also returns the IoU head's
        prediction for the kept mask (N, 1), as ``MaskDecoder.forward(multimask_output=False)``.
        """
        h, w = self.embedding_size
        C = self.prompt_dim
        if embeddings.ndim != 4 or tuple(embeddings.shape[1:]) != (C, h, w):
            raise ValueError(f"MVLocSAM.decode: expected embeddings of shape (N, {C}, {h}, {w}) "
                             f"(from encode at image_size {self.image_size}), got {tuple(embeddings.shape)}")
        n = embeddings.shape[0]
        if prompts.ndim == 2:
            if prompts.shape != (n, C):
                raise ValueError(f"MVLocSAM.decode: expected prompts of shape ({n}, {C}) "
                                 f"(one per embedding), got {tuple(prompts.shape)}")
            prompts = prompts.unsqueeze(1)
        elif prompts.ndim != 3 or prompts.shape[0] != n or prompts.shape[2] != C or prompts.shape[1] < 1:
            raise ValueError(f"MVLocSAM.decode: expected prompts of shape ({n}, {C}) or ({n}, K, {C}) "
                             f"(one prompt sequence per embedding), got {tuple(prompts.shape)}")
        md = self.mask_decoder
        # Same token order as MaskDecoder.predict_masks: IoU token, the mask tokens, then the sparse prompts.
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(n, -1, -1).to(prompts.dtype), prompts], dim=1)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = embeddings + dense.to(embeddings.dtype)
        pos = self.prompt_encoder.get_dense_pe().to(src.dtype)  # (1, C, h, w), broadcast over N in attention
        hs, src = md.transformer(src, pos, tokens)
        src = src.transpose(1, 2).reshape(n, C, h, w)
        upscaled = md.output_upscaling(src)
        # multimask_output=False keeps mask token 0 only, so only its hypernetwork is evaluated.
        hyper = md.output_hypernetworks_mlps[0](hs[:, 1, :])
        masks = torch.einsum("nc,nchw->nhw", hyper, upscaled).unsqueeze(1)
        if output_size is not None:
            masks = F.interpolate(masks, size=tuple(int(s) for s in output_size), mode="bilinear", align_corners=False)
        if return_iou:
            return masks, md.iou_prediction_head(hs[:, 0, :])[:, :1]
        return masks

    def forward(self, images: torch.Tensor, prompts: torch.Tensor,
                output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Mask logits (N, 1, H_out, W_out) = decode(encode(images), prompts, output_size)."""
        return self.decode(self.encode(images), prompts, output_size)
