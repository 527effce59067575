"""LLaVA-1.5 (transformers ``LlavaForConditionalGeneration``: CLIP vision tower, MLP projector, Llama LM).

Chat text (LLaVA-1.5, as llava-hf's chat template): ``USER: <image>\\n{prompt} ASSISTANT:`` and the answer
after a space, closed by ``</s>``. The processor expands ``<image>`` into one token per vision patch
(``vision_feature_select_strategy: default`` drops CLIP's class token). Full size from a local copy of
e.g. ``llava-hf/llava-1.5-7b-hf`` (``path:``); ``variant: tiny`` writes the same classes at CPU size
(CLIP 32 px / patch 8 -> 16 image tokens, Llama width 64, 2 layers).
"""
from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.registry import register
from zoo.models.vlm.base import BaseVLM

__all__ = ["LLaVA", "TINY_DEFAULTS"]

TINY_DEFAULTS = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
                 "vision_hidden_size": 32, "vision_layers": 2, "vision_heads": 2, "image_size": 32, "patch_size": 8}
CHAT_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}USER: "
                 "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %} {% else %}ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}"
                 "{% endfor %}</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


@register("vlm", "llava")
class LLaVA(BaseVLM):
    """LLaVA-1.5 behind the ``vlm`` interface (see :class:`zoo.models.vlm.base.BaseVLM` for the arguments)."""

    family = "llava"
    model_class_name = "LlavaForConditionalGeneration"
    source_hint = ("llava-hf/llava-1.5-7b-hf (or llava-hf/llava-1.5-13b-hf) on Hugging Face, e.g. "
                   "`hf download llava-hf/llava-1.5-7b-hf --local-dir PATH`")
    tiny_defaults = TINY_DEFAULTS

    def prompt_text(self, prompt: str) -> str:
        return f"USER: <image>\n{prompt.strip()} ASSISTANT:"

    def vision_modules(self) -> list[torch.nn.Module]:
        core = self.hf_model().model
        return [core.vision_tower, core.multi_modal_projector]

    @staticmethod
    def write_tiny(out: Path, sizes: dict, seed: int) -> None:
        """A tiny LLaVA directory: config + random weights, WordLevel tokenizer, CLIP image processor."""
        from transformers import (
            CLIPImageProcessor,
            CLIPVisionConfig,
            LlamaConfig,
            LlavaConfig,
            LlavaForConditionalGeneration,
            LlavaProcessor,
        )

        from zoo.models.vlm.tiny import tiny_tokenizer

        tok = tiny_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk="<unk>", pad="<pad>", bos="<s>",
                             eos="</s>")
        tok.add_bos_token = True
        size, patch = int(sizes["image_size"]), int(sizes["patch_size"])
        vision = CLIPVisionConfig(hidden_size=sizes["vision_hidden_size"], intermediate_size=2 * sizes["vision_hidden_size"],
                                  num_hidden_layers=sizes["vision_layers"], num_attention_heads=sizes["vision_heads"],
                                  image_size=size, patch_size=patch, projection_dim=sizes["vision_hidden_size"])
        text = LlamaConfig(vocab_size=len(tok), hidden_size=sizes["hidden_size"], intermediate_size=sizes["intermediate_size"],
                           num_hidden_layers=sizes["num_layers"], num_attention_heads=sizes["num_heads"],
                           num_key_value_heads=sizes["num_heads"], max_position_embeddings=512,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                           tie_word_embeddings=False)
        config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                             vision_feature_select_strategy="default", vision_feature_layer=-1,
                             tie_word_embeddings=False)
        config.pad_token_id = tok.pad_token_id
        model = LlavaForConditionalGeneration(config)
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.bos_token_id = tok.bos_token_id
        improc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                    do_center_crop=True, do_resize=True)
        proc = LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=patch,
                              vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                              image_token="<image>", num_additional_image_tokens=1)
        model.save_pretrained(str(out))
        proc.save_pretrained(str(out))
