"""A Render-Localize-Lift branch built from one sub-recipe (surface, localizer, lifter and losses).

A system with one prompt source and one surface (MV-Loc) builds its :class:`RenderLocalizeLift` from
top-level keys; a system that drives several surfaces from the same prompt source (InteractVLM: the
``[HCON]`` token prompts the body branch, ``[OCON]`` the object branch) lists each branch as one
sub-recipe, ``{name: rll, surface: ..., localizer: ..., lifter: ..., loss_2d: ..., loss_3d: ...,
prompt_mode: shared}``, checked by the recipe checker like any other component (:data:`BRANCHES`).
The lifter's ``num_views`` / ``embed_dim`` default to the surface's and the localizer's.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from zoo.core import registry
from zoo.models.rll.pipeline import LOSSES_2D, LOSSES_3D, RenderLocalizeLift
from zoo.models.rll.surfaces import SURFACES

__all__ = ["RLLBranch", "BRANCHES"]


class RLLBranch(RenderLocalizeLift):
    """:class:`RenderLocalizeLift` whose parts are built from sub-recipes (see the module docstring).

    Args:
        surface: ``{name: body | cloud, ...}`` (zoo.models.rll.surfaces).
        localizer: a ``localizer`` sub-recipe (mvloc_sam).
        lifter: a ``lifter`` sub-recipe (camera_lifter, identity).
        loss_2d, loss_3d: the per-view mask loss and the lifted 3D loss (zoo.models.rll.pipeline).
        prompt_mode: ``shared`` (the V gated tokens prompt every view together, InteractVLM) or ``own``.
        owner: the name errors start with (the system sets it).
    """

    subcomponents: ClassVar[dict[str, Any]] = {"surface": SURFACES, "localizer": "localizer", "lifter": "lifter",
                                               "loss_2d": LOSSES_2D, "loss_3d": LOSSES_3D}

    def __init__(self, surface: dict, localizer: dict, lifter: dict, loss_2d: dict, loss_3d: dict,
                 prompt_mode: Literal["shared", "own"] = "shared", owner: str = "RLLBranch") -> None:
        surf = registry.build(SURFACES, surface, materialize=True)
        loc = registry.build("localizer", localizer, materialize=True)
        lift = registry.build("lifter", {"num_views": surf.num_views, "embed_dim": int(loc.embed_dim), **dict(lifter)},
                              materialize=True)
        super().__init__(surf, loc, lift, registry.build(LOSSES_2D, loss_2d, materialize=True),
                         registry.build(LOSSES_3D, loss_3d, materialize=True), owner=owner, prompt_mode=prompt_mode)


BRANCHES: Any = registry.Parts("Render-Localize-Lift branch", {"rll": RLLBranch})
