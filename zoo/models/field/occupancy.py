"""Occupancy grid: a coarse voxel mask of where a field has density, so renderers skip empty space.

The grid covers the field's cube [-bound, bound]^3 with ``resolution``^3 cells. Each update
evaluates the density once per cell, at a random point inside it (so, over updates, the whole
cell is probed, as instant-ngp / nerfacc do), keeps a running value ``ema = max(decay * ema,
density)``, and marks a cell occupied when ``ema > threshold``. The mask is then dilated by
``dilate`` cells so that a surface straddling a cell whose probe fell outside it is not lost, and
so density can grow into the neighbourhood of what is already there. Before the first update
every cell is occupied: a young field (DreamFusion's blob) must be free to grow anywhere.

Updates happen at steps ``step >= warmup_steps`` that are multiples of ``update_every``. The
probe points of an update are a deterministic function of its step (a seeded generator), so a
resumed run rebuilds the same grid. All state is in buffers (saved in the field's state dict).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OccupancyGrid"]


class OccupancyGrid(nn.Module):
    """Binary occupancy of [-bound, bound]^3 on a ``resolution``^3 grid (see the module docstring).

    ``threshold`` is a density (per metre): with DreamFusion's 64 samples over a ray through a
    unit-size cube a sample spans ~0.05 m, so density 0.01 is an opacity of ~5e-4 per sample,
    far below anything visible. ``decay`` lets cells whose density vanished become empty after a
    few updates. ``chunk`` bounds how many points one density call sees.
    """

    def __init__(self, resolution: int = 64, bound: float = 1.0, threshold: float = 0.01, update_every: int = 16,
                 warmup_steps: int = 256, decay: float = 0.95, dilate: int = 1, chunk: int = 65536) -> None:
        super().__init__()
        checks = (("resolution", resolution >= 2, "an int >= 2"), ("bound", bound > 0, "> 0"),
                  ("threshold", threshold >= 0, ">= 0"), ("update_every", update_every >= 1, "an int >= 1"),
                  ("warmup_steps", warmup_steps >= 0, "an int >= 0"), ("decay", 0 <= decay <= 1, "in [0, 1]"),
                  ("dilate", dilate >= 0, "an int >= 0"), ("chunk", chunk >= 1, "an int >= 1"))
        for key, ok, want in checks:
            if not ok:
                raise ValueError(f"OccupancyGrid: {key} must be {want}, got {locals()[key]!r}")
        self.resolution, self.bound = int(resolution), float(bound)
        self.threshold, self.decay = float(threshold), float(decay)
        self.update_every, self.warmup_steps = int(update_every), int(warmup_steps)
        self.dilate, self.chunk = int(dilate), int(chunk)
        r = self.resolution
        self.register_buffer("ema", torch.zeros(r, r, r))
        self.register_buffer("mask", torch.ones(r, r, r, dtype=torch.bool))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))
        self._fraction: float | None = 1.0

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: D401 - torch hook
        super()._load_from_state_dict(*args, **kwargs)
        self._fraction = None  # recomputed from the loaded mask on demand

    def cell_index(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cells (N, 3) long, inside (N,) bool): the cell (x, y, z) of each point and whether it is in the cube."""
        if points.ndim != 2 or points.shape[-1] != 3:
            raise ValueError(f"OccupancyGrid.occupied: expected points of shape (N, 3), got {tuple(points.shape)}")
        inside = (points.abs() <= self.bound).all(dim=-1)
        unit = (points.detach() + self.bound) / (2 * self.bound)
        cells = (unit * self.resolution).floor().long().clamp_(0, self.resolution - 1)
        return cells, inside

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the point lies in the cube and in an occupied cell."""
        cells, inside = self.cell_index(points)
        return self.mask[cells[:, 0], cells[:, 1], cells[:, 2]] & inside

    def due(self, step: int) -> bool:
        """Whether :meth:`update` refreshes the grid at ``step``."""
        return step >= self.warmup_steps and step % self.update_every == 0

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], step: int, force: bool = False) -> bool:
        """Refresh the grid from ``density_fn(points (M, 3)) -> (M,)`` when :meth:`due` (or ``force``).

        Returns whether it updated.
        """
        if not (force or self.due(step)):
            return False
        r, device = self.resolution, self.ema.device
        gen = torch.Generator().manual_seed(int(step))
        axis = torch.arange(r, dtype=torch.float32)
        cells = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        probes = (cells + torch.rand(cells.shape, generator=gen)) / r * (2 * self.bound) - self.bound
        probes = probes.to(device)
        values = []
        for start in range(0, probes.shape[0], self.chunk):
            part = probes[start:start + self.chunk]
            out = density_fn(part)
            if out.shape != (part.shape[0],):
                raise ValueError(f"OccupancyGrid.update: density_fn returned shape {tuple(out.shape)} for "
                                 f"{part.shape[0]} points; expected ({part.shape[0]},)")
            values.append(out.float())
        density = torch.cat(values).reshape(r, r, r).nan_to_num(nan=0.0)
        self.ema.copy_(torch.maximum(self.ema * self.decay, density))
        mask = self.ema > self.threshold
        if self.dilate > 0:
            k = 2 * self.dilate + 1
            mask = F.max_pool3d(mask[None, None].float(), k, stride=1, padding=self.dilate)[0, 0] > 0
        self.mask.copy_(mask)
        self.updates += 1
        self._fraction = None
        return True

    def fraction(self) -> float:
        """Fraction of cells that are occupied (1.0 before the first update)."""
        if self._fraction is None:
            self._fraction = float(self.mask.float().mean().item())
        return self._fraction

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, bound={self.bound}, threshold={self.threshold}, "
                f"update_every={self.update_every}, warmup_steps={self.warmup_steps}, decay={self.decay}")
