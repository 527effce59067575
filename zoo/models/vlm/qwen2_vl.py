"""Qwen2-VL (transformers ``Qwen2VLForConditionalGeneration``: ViT with 2x2 patch merger, Qwen2 LM with M-RoPE).

Chat text (Qwen2-VL's ChatML): ``<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\\n
<|im_start|>assistant\\n``, the answer closed by ``<|im_end|>``. The processor expands ``<|image_pad|>`` to
one token per merged 2x2 patch group and gives ``pixel_values`` as flattened patches
(n_patches, 3 * temporal_patch * patch * patch) with ``image_grid_thw`` (n_images, 3); the forward also
takes ``mm_token_type_ids`` (1 at image tokens), which :meth:`Qwen2VL.family_inputs` adds. Full size from
a local copy of ``Qwen/Qwen2-VL-2B-Instruct`` / ``-7B-Instruct`` (``path:``); ``variant: tiny`` writes the
same classes at CPU size (32 px images, patch 4 -> 8x8 patches -> 16 image tokens; LM width 64, 2 layers).
"""
from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.registry import register
from zoo.models.vlm.base import BaseVLM

__all__ = ["Qwen2VL", "TINY_DEFAULTS"]

TINY_DEFAULTS = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128,
                 "vision_embed_dim": 32, "vision_layers": 2, "vision_heads": 2, "image_size": 32, "patch_size": 4}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")


@register("vlm", "qwen2_vl")
class Qwen2VL(BaseVLM):
    """Qwen2-VL behind the ``vlm`` interface (see :class:`zoo.models.vlm.base.BaseVLM` for the arguments)."""

    family = "qwen2_vl"
    model_class_name = "Qwen2VLForConditionalGeneration"
    source_hint = ("Qwen/Qwen2-VL-7B-Instruct (or Qwen/Qwen2-VL-2B-Instruct) on Hugging Face, e.g. "
                   "`hf download Qwen/Qwen2-VL-7B-Instruct --local-dir PATH`")
    tiny_defaults = TINY_DEFAULTS
    answer_prefix = ""

    def prompt_text(self, prompt: str) -> str:
        return ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                f"{prompt.strip()}<|im_end|>\n<|im_start|>assistant\n")

    def answer_suffix(self) -> list[int]:
        return [self.tokenizer.convert_tokens_to_ids("<|im_end|>")]

    def vision_modules(self) -> list[torch.nn.Module]:
        return [self.hf_model().model.visual]  # the patch merger (projector) is part of `visual`

    def family_inputs(self, enc: dict, input_ids: torch.Tensor) -> dict:
        return {"image_grid_thw": torch.cat(enc["image_grid_thw"]),
                "mm_token_type_ids": (input_ids == self.image_token_id).long()}

    def _refresh_extras(self, inputs: dict) -> dict:
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).long()
        return inputs

    @staticmethod
    def write_tiny(out: Path, sizes: dict, seed: int) -> None:
        """A tiny Qwen2-VL directory: config + random weights, WordLevel tokenizer, Qwen2-VL image processor."""
        from transformers import (
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLImageProcessor,
            Qwen2VLProcessor,
            Qwen2VLVideoProcessor,
        )

        from zoo.models.vlm.tiny import tiny_tokenizer

        tok = tiny_tokenizer(SPECIAL, unk="<|endoftext|>", pad="<|endoftext|>", bos=None, eos="<|im_end|>")
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
        d, heads = int(sizes["hidden_size"]), int(sizes["num_heads"])
        half = d // heads // 2  # M-RoPE splits the rotary half-dimension over (t, h, w)
        section = [half - 2 * (half // 3), half // 3, half // 3]
        size, patch = int(sizes["image_size"]), int(sizes["patch_size"])
        config = Qwen2VLConfig(
            text_config={"vocab_size": len(tok), "hidden_size": d, "intermediate_size": sizes["intermediate_size"],
                         "num_hidden_layers": sizes["num_layers"], "num_attention_heads": heads,
                         "num_key_value_heads": sizes["num_kv_heads"], "max_position_embeddings": 512,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
                         "tie_word_embeddings": False, "eos_token_id": ids["<|im_end|>"],
                         "pad_token_id": ids["<|endoftext|>"], "bos_token_id": None},
            vision_config={"depth": sizes["vision_layers"], "embed_dim": sizes["vision_embed_dim"], "hidden_size": d,
                           "num_heads": sizes["vision_heads"], "patch_size": patch, "spatial_merge_size": 2,
                           "temporal_patch_size": 2, "mlp_ratio": 2},
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False)
        model = Qwen2VLForConditionalGeneration(config)
        model.generation_config.pad_token_id = ids["<|endoftext|>"]
        model.generation_config.eos_token_id = ids["<|im_end|>"]
        model.generation_config.bos_token_id = None
        pixels = size * size
        improc = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                       size={"shortest_edge": pixels, "longest_edge": pixels})
        video = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": pixels, "longest_edge": pixels})
        proc = Qwen2VLProcessor(image_processor=improc, tokenizer=tok, video_processor=video,
                                chat_template=CHAT_TEMPLATE)
        model.save_pretrained(str(out))
        proc.save_pretrained(str(out))
