"""Guidance for text-to-3D: score distillation with diffusion models and CLIP.

* :mod:`zoo.models.guidance.sds`: ``guidance/stable_diffusion_sds`` (:class:`~zoo.models.guidance.sds.StableDiffusionSDS`)
  and ``guidance/deepfloyd_if_sds`` (:class:`~zoo.models.guidance.sds.DeepFloydSDS`), one SDS base class.
* :mod:`zoo.models.guidance.prompts`: view-dependent prompts (:func:`view_direction`, :class:`PromptEmbeddings`).
* :mod:`zoo.models.guidance.text_cache`: the on-disk text-embedding cache.
* :mod:`zoo.models.guidance.clip`: :class:`~zoo.models.guidance.clip.CLIPEncoder` and ``guidance/clip_guidance``.
* :mod:`zoo.models.guidance.tiny`: tiny random model directories (CPU tests, demos).

The heavy modules (lightning, diffusers, transformers) load only when those submodules are imported.
"""
from zoo.models.guidance.prompts import DIRECTIONS, PromptEmbeddings, view_direction

__all__ = ["DIRECTIONS", "PromptEmbeddings", "view_direction"]
