"""What each kind of component takes and returns.

One small interface per registry kind. A component may inherit its kind's class below (it reads
well and documents intent) or just implement the methods; either way ``@register(kind, name)``
checks the class against :data:`INTERFACES` and refuses it, naming the missing method, when a
required method is absent or only inherited as a placeholder (``nn.Module.forward``, Lightning's
default hooks, an abstract method).

Shapes use B = batch, V = views (or vertices where stated), N = elements (vertices or points),
C = channels, H x W = image size. Images are float in [0, 1] unless a docstring says otherwise.
"""
from __future__ import annotations

import abc
import inspect
from typing import Any

__all__ = [
    "Interface", "System", "DataModule", "Backbone", "Localizer", "Lifter", "Renderer", "ViewRenderer",
    "BodyModel", "Metric", "VLM", "Field", "Guidance", "PosePrior", "INTERFACES", "missing_methods",
    "check_interface",
]


class Interface(abc.ABC):  # noqa: B024 - a marker base: the abstract methods live in the subclasses
    """Base of the kind interfaces; ``required`` lists the methods a registered class must implement."""

    required: tuple[str, ...] = ()


class System(Interface):
    """``system``: a LightningModule composing components into a method (zoo.systems.base.System).

    ``training_step(batch: dict, batch_idx) -> loss`` (scalar tensor); ``configure_optimizers()``
    (built from the recipe's ``optim:``); ``figures(batch: dict, n: int) -> list[(name, uint8 HxWx3)]``
    the PNG-ready figures the run loop writes and logs for the first test batch ([] for none).
    """

    required = ("training_step", "configure_optimizers", "figures")

    @abc.abstractmethod
    def figures(self, batch: dict, n: int) -> list[tuple[str, Any]]:
        """PNG-ready (name, uint8 (H, W, 3)) figures for the first ``n`` samples of ``batch``."""


class DataModule(Interface):
    """``datamodule``: a LightningDataModule. ``setup(stage)``, then ``test_dataloader()`` (and train /
    val / predict loaders where the data has those splits) yield batches as documented dicts."""

    required = ("setup", "test_dataloader")


class Backbone(Interface):
    """``backbone``: ``forward(image (B, 3, H, W)) -> (B, out_channels, H / reduction, W / reduction)``.

    Instances expose ``out_channels`` and ``reduction`` (ints) so systems size their heads from them.
    """

    required = ("forward",)


class Localizer(Interface):
    """``localizer``: prompted 2D segmentation (MV-Loc's SAM).

    ``encode(images (N, 3, H, W) in [0, 1]) -> embeddings (N, embed_dim, h, w)``;
    ``decode(embeddings (N, embed_dim, h, w), prompts (N, embed_dim) or prompt sequences (N, K, embed_dim),
    output_size=None) -> mask logits
    (N, 1, H', W')``; ``embed_dim`` (int) is the prompt width; ``encoder_frozen`` (bool) says whether
    ``encode`` is a pure function of the images (so callers may cache embeddings).
    """

    required = ("encode", "decode", "embed_dim", "encoder_frozen")

    @abc.abstractmethod
    def encode(self, images):
        """Image embeddings (N, embed_dim, h, w) of images (N, 3, H, W) in [0, 1]."""

    @abc.abstractmethod
    def decode(self, embeddings, prompts, output_size=None):
        """Mask logits (N, 1, H', W'): embedding i decoded with prompt i."""


class Lifter(Interface):
    """``lifter``: one prompt per view. ``forward(prompt (B, C), cams (V, 5)) -> (B, V, C)`` where ``cams``
    are the views' camera numbers (zoo.render.cameras.camera_numbers)."""

    required = ("forward",)


class Renderer(Interface):
    """``renderer``: turns geometry into images. ``forward(...)`` renders; what it takes depends on the
    renderer (each documents it). Renderers that serve Render-Localize-Lift also satisfy
    :class:`ViewRenderer`."""

    required = ("forward",)


class ViewRenderer(Interface):
    """A fixed-view renderer with lift maps (checked where Render-Localize-Lift builds one).

    ``num_views`` (int); ``camera_numbers() -> (V, 5)``; ``render_mesh(verts (Nv, 3), faces (F, 3),
    colors="normals", cache=True) -> (images (V, 3, H, W), LiftMap)``; ``render_points(points (P, 3))
    -> (images (V, 3, H, W), LiftMap)``.
    """

    required = ("num_views", "camera_numbers", "render_mesh", "render_points")


class BodyModel(Interface):
    """``body_model``: SMPL-family model. ``forward(pose=None, betas=None, transl=None, ...) ->
    {"vertices": (B, Nv, 3), "joints": (B, J, 3)}`` in metres; ``faces`` (F, 3) long; ``num_vertices``."""

    required = ("forward", "num_vertices")


class Metric(Interface):
    """``metric``: a torchmetrics Metric. ``update(*inputs)`` (the system's metric inputs, e.g.
    ``pred (B, N), target (B, N)``), ``compute() -> dict[str, Tensor]`` of named values, ``reset()``.

    Optional class attributes: ``batch_keys`` (batch entries ``update`` also takes, by keyword, e.g.
    ``("imgname",)``: the System passes ``update(*inputs, imgname=batch["imgname"])``), ``main_key``
    (the value a progress bar shows) and ``convention_family`` (``contact`` / ``affordance`` /
    ``damon``: what an evaluation's ``convention=`` sets, :mod:`zoo.metrics.conventions`)."""

    required = ("update", "compute", "reset")


class VLM(Interface):
    """``vlm``: a vision-language model family (InteractVLM's reasoning module).

    ``forward(inputs: dict) -> {"logits": (B, T, vocab), "loss": scalar or None, "hidden": (B, T, d)}``
    for chat inputs built by the family (images + prompt, answer tokens as labels);
    ``hidden_at(hidden (B, T, d), input_ids (B, T), token_ids) -> list of (n_b, d)`` the last hidden
    state at each occurrence of the given token ids; ``generate(images, prompts, max_new_tokens) ->
    (texts: list[str], contact_states: list of (n_b, d))``; ``add_tokens(tokens: list[str]) -> list[int]``.

    Families also provide ``build_inputs(images, prompts, answers=None) -> dict`` (``input_ids``,
    ``attention_mask``, ``pixel_values``, family extras such as Qwen2-VL's ``image_grid_thw``, and with
    answers ``labels``: -100 everywhere but the answer tokens). ``hidden`` is the language model's last
    hidden state (after its final norm); a contact state is that state at the position whose *input* is
    the contact token. ``generate`` is greedy and returns, per sample, the states at the contact tokens
    the model generated ((0, d) when it generated none), from a teacher-forced forward pass over prompt +
    generated tokens. ``add_tokens`` adds special tokens, resizes the embeddings and returns their ids
    (tokens already present keep theirs). Images are PIL images, uint8 (H, W, 3) arrays or float
    (3, H, W) tensors in [0, 1] (zoo.models.vlm.base.BaseVLM).
    """

    required = ("forward", "hidden_at", "generate", "add_tokens")


class Field(Interface):
    """``field``: a neural field. ``forward(points (N, 3)) -> {"density": (N,), "features": (N, C)}``;
    ``density(points (N, 3)) -> (N,)``."""

    required = ("forward", "density")


class Guidance(Interface):
    """``guidance``: score distillation. ``encode_prompts(texts: list[str]) -> embeddings``;
    ``forward(images (B, 3, H, W) in [0, 1], embeddings, ...) -> {"loss_sds": scalar, ...}``."""

    required = ("forward", "encode_prompts")


class PosePrior(Interface):
    """``pose_prior``: body poses from a query. ``forward(query) -> poses (B, J, 3)`` axis-angle, where the
    query is what the prior takes (a latent (B, Z) for a VAE, a text for a retrieval codebook)."""

    required = ("forward",)


INTERFACES: dict[str, type[Interface]] = {
    "system": System, "datamodule": DataModule, "backbone": Backbone, "localizer": Localizer,
    "lifter": Lifter, "renderer": Renderer, "body_model": BodyModel, "metric": Metric, "vlm": VLM,
    "field": Field, "guidance": Guidance, "pose_prior": PosePrior,
}

# Modules whose definitions of a hook are placeholders (raise, warn or do nothing), not implementations.
_PLACEHOLDER_MODULES = (
    "torch.nn.modules.module", "lightning.pytorch.core.module", "lightning.pytorch.core.hooks",
    "lightning.pytorch.core.datamodule", "pytorch_lightning.core.module", "pytorch_lightning.core.hooks",
    "pytorch_lightning.core.datamodule", "builtins", __name__,
)


def _implemented(cls: type, method: str) -> bool:
    for klass in inspect.getmro(cls):
        if method in vars(klass):
            attr = vars(klass)[method]
            if getattr(attr, "__isabstractmethod__", False):
                return False
            return klass.__module__ not in _PLACEHOLDER_MODULES
    return False


def missing_methods(cls: type, interface: type[Interface]) -> list[str]:
    """The methods (or properties) of ``interface.required`` that ``cls`` does not implement."""
    return [m for m in interface.required if not _implemented(cls, m)]


def check_interface(kind: str, cls: type) -> list[str]:
    """Missing methods of ``cls`` for ``kind`` ([] when it conforms or the kind has no interface)."""
    iface = INTERFACES.get(kind)
    return missing_methods(cls, iface) if iface is not None else []
