"""Tiny diffusion and CLIP model directories, written offline and cached (CPU tests and demos).

A tiny model is the real model's own diffusers / transformers classes at CPU size with random weights,
saved with ``save_pretrained`` into a directory laid out like the downloaded model, so it loads through
exactly the same ``from_pretrained(path, subfolder=...)`` calls:

* ``sd``: Stable Diffusion: ``unet/`` (UNet2DConditionModel, 4 latent channels, cross-attention width 32),
  ``vae/`` (AutoencoderKL, 8x downsampling like SD's, scaling factor 0.18215), ``text_encoder/``
  (CLIPTextModel), ``tokenizer/``, ``scheduler/`` (DDPMScheduler with SD's schedule: scaled_linear betas
  0.00085..0.012, 1000 steps).
* ``if``: DeepFloyd IF stage I: ``unet/`` (3 pixel channels in, 6 out: the noise and the learned variance),
  ``text_encoder/`` (T5EncoderModel), ``tokenizer/``, ``scheduler/`` (DDPMScheduler, squaredcos_cap_v2,
  1000 steps, learned_range variance).
* ``clip``: a CLIPModel and its tokenizer in one flat directory (the openai/clip-vit-* layout).

Tokenizers are built offline: a ``tokenizers`` WordLevel vocabulary over the words of
:data:`zoo.models.vlm.tiny.WORDS` plus text-to-3D prompt words (:data:`PROMPT_WORDS`, with the view
suffixes "front / side / back / overhead view" so view-dependent prompts tokenize differently), lower-cased,
split on whitespace and punctuation, with the family's start / end tokens added by a template post-processor.

Directories live in ``$ZOO_HOME/guidance/<family>-tiny-<hash of the configuration and seed>``; each is
written once into a temporary folder and renamed into place (a ``.complete`` marker closes it).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from zoo.core.paths import cache_dir
from zoo.models.vlm.tiny import WORDS

__all__ = ["tiny_model_dir", "word_tokenizer", "TINY_SIZES", "PROMPT_WORDS", "TINY_FORMAT", "FAMILIES"]

TINY_FORMAT = 1  # bump when the written layout changes (part of the cache key)
FAMILIES = ("sd", "if", "clip")

PROMPT_WORDS = tuple("""
    front side back overhead view views a an the of photo dslr photograph zoomed out in high quality detailed
    3d model render rendered realistic highly beautiful cute small large big red green blue yellow white black
    astronaut riding horse dog cat squirrel car bunny teddy bear hamburger pancakes corgi robot castle tree house
    man woman person boy girl child people sitting standing lying holding playing reading drinking eating wearing
    guitar book coffee sofa couch skateboard bicycle motorcycle chair cup bed bench table ball umbrella laptop
    is on with and at by his her its their while under over next to top
    ugly blurry low resolution bad anatomy oversaturated cropped text watermark
""".split())

# Per family: the text / UNet / VAE / vision sizes of the tiny configuration (part of the cache key).
TINY_SIZES: dict[str, dict] = {
    "sd": {"text_hidden": 32, "text_layers": 2, "text_heads": 4, "text_ff": 64, "max_length": 77,
           "unet_channels": [16, 32], "unet_groups": 8, "head_dim": 8, "vae_channels": [8, 8, 8, 8], "vae_groups": 4},
    "if": {"text_hidden": 32, "text_layers": 2, "text_heads": 4, "text_ff": 64, "max_length": 77,
           "unet_channels": [16, 32], "unet_groups": 8, "head_dim": 8},
    "clip": {"text_hidden": 32, "text_layers": 2, "text_heads": 4, "text_ff": 64, "max_length": 77,
             "vision_hidden": 32, "vision_layers": 2, "vision_heads": 4, "vision_ff": 64, "image_size": 32,
             "patch_size": 8, "projection_dim": 16},
}

_CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
_T5_SPECIAL = ["<pad>", "</s>", "<unk>"]  # T5's ids: pad 0, eos 1, unk 2


def word_tokenizer(special: list[str], *, unk: str, pad: str, bos: str | None, eos: str, max_length: int):
    """A fast tokenizer over :data:`WORDS` + :data:`PROMPT_WORDS` whose first ids are ``special``; every
    sequence gets ``bos`` (when given) before and ``eos`` after it, like CLIP's and T5's tokenizers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(special)}
    for w in (*WORDS, *PROMPT_WORDS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    single = f"{bos} $A {eos}" if bos else f"$A {eos}"
    pair = f"{bos} $A {eos} $B {eos}" if bos else f"$A {eos} $B {eos}"
    specials = [(t, vocab[t]) for t in (bos, eos) if t]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    kw = {"unk_token": unk, "pad_token": pad, "eos_token": eos, "model_max_length": int(max_length)}
    if bos:
        kw["bos_token"] = bos
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def _clip_text_config(s: dict, vocab: int):
    return {"vocab_size": vocab, "hidden_size": s["text_hidden"], "intermediate_size": s["text_ff"],
            "num_hidden_layers": s["text_layers"], "num_attention_heads": s["text_heads"],
            "max_position_embeddings": s["max_length"], "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}


def _unet(s: dict, in_ch: int, out_ch: int, cross: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=in_ch, out_channels=out_ch, layers_per_block=1,
        block_out_channels=tuple(s["unet_channels"]), norm_num_groups=s["unet_groups"],
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, attention_head_dim=s["head_dim"])


def _write_sd(out: Path, s: dict) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = word_tokenizer(_CLIP_SPECIAL, unk="<unk>", pad="<|endoftext|>", bos="<|startoftext|>",
                         eos="<|endoftext|>", max_length=s["max_length"])
    tok.save_pretrained(out / "tokenizer")
    CLIPTextModel(CLIPTextConfig(**_clip_text_config(s, len(tok)))).save_pretrained(out / "text_encoder")
    _unet(s, 4, 4, s["text_hidden"]).save_pretrained(out / "unet")
    n = len(s["vae_channels"])
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(s["vae_channels"]),
                  down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                  layers_per_block=1, norm_num_groups=s["vae_groups"], sample_size=32,
                  scaling_factor=0.18215).save_pretrained(out / "vae")
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, prediction_type="epsilon", steps_offset=1).save_pretrained(out / "scheduler")


def _write_if(out: Path, s: dict) -> None:
    from diffusers import DDPMScheduler
    from transformers import T5Config, T5EncoderModel

    tok = word_tokenizer(_T5_SPECIAL, unk="<unk>", pad="<pad>", bos=None, eos="</s>", max_length=s["max_length"])
    tok.save_pretrained(out / "tokenizer")
    cfg = T5Config(vocab_size=len(tok), d_model=s["text_hidden"], d_kv=s["text_hidden"] // s["text_heads"],
                   d_ff=s["text_ff"], num_layers=s["text_layers"], num_heads=s["text_heads"],
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(out / "text_encoder")
    _unet(s, 3, 6, s["text_hidden"]).save_pretrained(out / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                  prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0, thresholding=True,
                  dynamic_thresholding_ratio=0.95, sample_max_value=1.5).save_pretrained(out / "scheduler")


def _write_clip(out: Path, s: dict) -> None:
    from transformers import CLIPConfig, CLIPModel

    tok = word_tokenizer(_CLIP_SPECIAL, unk="<unk>", pad="<|endoftext|>", bos="<|startoftext|>",
                         eos="<|endoftext|>", max_length=s["max_length"])
    tok.save_pretrained(out)
    vision = {"hidden_size": s["vision_hidden"], "intermediate_size": s["vision_ff"],
              "num_hidden_layers": s["vision_layers"], "num_attention_heads": s["vision_heads"],
              "image_size": s["image_size"], "patch_size": s["patch_size"]}
    cfg = CLIPConfig(text_config=_clip_text_config(s, len(tok)), vision_config=vision,
                     projection_dim=s["projection_dim"])
    CLIPModel(cfg).save_pretrained(out)


_WRITERS = {"sd": _write_sd, "if": _write_if, "clip": _write_clip}


def tiny_model_dir(family: str, seed: int = 0) -> Path:
    """The cached tiny model directory of ``family`` (``sd``, ``if`` or ``clip``), written once with ``seed``."""
    if family not in _WRITERS:
        raise ValueError(f"tiny_model_dir: unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    sizes = TINY_SIZES[family]
    text = json.dumps({"family": family, "sizes": sizes, "seed": int(seed), "format": TINY_FORMAT,
                       "words": hashlib.sha256(" ".join((*WORDS, *PROMPT_WORDS)).encode()).hexdigest()},
                      sort_keys=True)
    root = cache_dir("guidance")
    out = root / f"{family}-tiny-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if (out / ".complete").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
    try:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            _WRITERS[family](tmp, dict(sizes))
        (tmp / ".complete").write_text(text)
        try:
            os.replace(tmp, out)
        except OSError:  # another process renamed its copy into place first
            if not (out / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
