"""View-dependent prompts (DreamFusion's, as threestudio's prompt processor builds them).

Each camera gets the prompt with a view suffix chosen from its azimuth and elevation
(:func:`view_direction`): "overhead" above 60 degrees elevation, else "front" within 45 degrees of
azimuth 0 (the body's front, +Z), "back" within 45 degrees of azimuth 180, else "side". The
inequalities are strict, as threestudio's: azimuth exactly 45 is "side", exactly 135 is "side",
elevation exactly 60 is not "overhead". Azimuths are wrapped into [-180, 180) first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DIRECTIONS", "view_direction", "direction_index", "view_prompt", "PromptEmbeddings",
           "FRONT_THRESHOLD", "BACK_THRESHOLD", "OVERHEAD_THRESHOLD"]

DIRECTIONS = ("front", "side", "back", "overhead")
FRONT_THRESHOLD = 45.0  # degrees either side of azimuth 0
BACK_THRESHOLD = 45.0  # degrees either side of azimuth 180
OVERHEAD_THRESHOLD = 60.0  # elevation, degrees


def view_prompt(prompt: str, direction: str) -> str:
    """The prompt of a view direction: ``"<prompt>, <direction> view"``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"view_prompt: unknown direction {direction!r}; expected one of {', '.join(DIRECTIONS)}")
    return f"{prompt}, {direction} view"


def direction_index(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """Index into :data:`DIRECTIONS` (B,) long of each camera (azimuth and elevation in degrees, (B,))."""
    azimuth = torch.as_tensor(azimuth, dtype=torch.float64).reshape(-1)
    elevation = torch.as_tensor(elevation, dtype=torch.float64).reshape(-1)
    if azimuth.shape != elevation.shape:
        raise ValueError(f"view direction: azimuth {tuple(azimuth.shape)} and elevation {tuple(elevation.shape)} "
                         f"must have one value per camera")
    az = torch.remainder(azimuth + 180.0, 360.0) - 180.0
    idx = torch.full(az.shape, DIRECTIONS.index("side"), dtype=torch.long)
    idx[az.abs() < FRONT_THRESHOLD] = DIRECTIONS.index("front")
    idx[az.abs() > 180.0 - BACK_THRESHOLD] = DIRECTIONS.index("back")
    idx[elevation > OVERHEAD_THRESHOLD] = DIRECTIONS.index("overhead")  # overrides the azimuth rule
    return idx


def view_direction(azimuth, elevation) -> list[str]:
    """The view direction name of each camera (see the module docstring for the rule)."""
    return [DIRECTIONS[i] for i in direction_index(azimuth, elevation).tolist()]


@dataclass
class PromptEmbeddings:
    """Text embeddings of one prompt: one conditional embedding per view direction and the unconditional one.

    ``cond`` maps each of :data:`DIRECTIONS` to an (L, D) embedding (all the plain prompt's when
    ``view_dependent`` is False); ``uncond`` (L, D) is the negative prompt's ("" by default).
    """

    prompt: str
    cond: dict[str, torch.Tensor]
    uncond: torch.Tensor
    view_dependent: bool = True
    negative_prompt: str = ""

    def select(self, azimuth, elevation) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond (B, L, D), uncond (B, L, D)) for cameras at ``azimuth`` / ``elevation`` (degrees, (B,))."""
        idx = direction_index(azimuth, elevation)
        stack = torch.stack([self.cond[d] for d in DIRECTIONS])
        if not self.view_dependent:
            idx = torch.zeros_like(idx)  # every direction holds the plain prompt
        cond = stack[idx.to(stack.device)]
        return cond, self.uncond.unsqueeze(0).expand(len(idx), *self.uncond.shape)

    def to(self, *args, **kwargs) -> PromptEmbeddings:
        """A copy with every tensor moved / cast as ``Tensor.to(*args, **kwargs)``."""
        return PromptEmbeddings(self.prompt, {k: v.to(*args, **kwargs) for k, v in self.cond.items()},
                                self.uncond.to(*args, **kwargs), self.view_dependent, self.negative_prompt)
