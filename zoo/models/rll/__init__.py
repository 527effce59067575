"""Render-Localize-Lift as a reusable part (InteractVLM's MV-Loc pipeline).

* :mod:`~zoo.models.rll.surfaces`: what is predicted on. ``body`` (a body mesh in a canonical pose,
  per-vertex labels, the same views for every sample) and ``cloud`` (one object point cloud per
  sample, per-point labels). A surface owns its renderer, its view / lift-map / embedding caches,
  its 2D targets and its figures.
* :mod:`~zoo.models.rll.prompts`: where the prompts come from (learned per class here; VLM contact
  tokens in the InteractVLM system).
* :mod:`~zoo.models.rll.pipeline`: :class:`RenderLocalizeLift` — render (cached) -> encode (cached
  when the encoder is frozen) -> per-view prompts from the lifter (all V gated tokens prompt every
  view, ``prompt_mode: shared``, as InteractVLM; or one token per view, ``own``) -> decode -> lift
  (from the mask logits), and the 2D + 3D losses.

Systems (MV-Loc, InteractVLM) compose these; nothing here is a system.
"""
