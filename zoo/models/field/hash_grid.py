"""Multi-resolution hash encoding (instant-ngp, Müller et al. 2022) in pure PyTorch.

The encoding of a point x in [0, 1]^3 is the concatenation over L levels of F features, each
trilinearly interpolated from the 8 grid vertices around x at that level's resolution. Level l
has resolution ``floor(base * b**l)`` cells per axis with ``b = exp((ln max - ln base) / (L - 1))``,
so the vertices are the integer points 0..res of each axis. A level whose ``(res + 1)**3`` vertices
fit in the table (``T = 2**log2_table`` rows) stores one row per vertex (dense indexing,
``i + j (res + 1) + k (res + 1)**2``, and only that many rows); finer levels share T rows through the
spatial hash ``(i * 1 xor j * 2654435761 xor k * 805459861) mod T`` of tiny-cuda-nn. tcnn multiplies
in uint32 (wrapping); for a power-of-two T the low bits of the unwrapped int64 products are the
same, so the row is identical.

Progressive levels (threestudio's ProgressiveBandHashGrid): only the first ``active_levels``
levels contribute; the others give zero features (and their rows get no gradient), so coarse
structure forms before fine detail. The rows start uniform in [-1e-4, 1e-4] as in tcnn.

Used by :class:`zoo.models.field.nerf.HashNeRF`; :func:`trilinear_corners` and
:func:`dense_index` also serve the dense voxel field.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["HashGridEncoding", "PRIMES", "level_resolutions", "spatial_hash", "dense_index", "trilinear_corners"]

PRIMES = (1, 2654435761, 805459861)  # tiny-cuda-nn's per-axis hash multipliers (x, y, z)

# The 8 corners of a cell: corner c has offsets (c & 1, (c >> 1) & 1, (c >> 2) & 1) along (x, y, z).
_CORNERS = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.long)


def level_resolutions(levels: int, base: int, max_resolution: int) -> list[int]:
    """Cells per axis of each level: ``floor(base * b**l)``, b the geometric growth from base to max."""
    if levels == 1:
        return [int(base)]
    growth = math.exp((math.log(max_resolution) - math.log(base)) / (levels - 1))
    # the small epsilon keeps the last level at max_resolution despite rounding in exp/log
    return [int(math.floor(base * growth**level + 1e-6)) for level in range(levels)]


def spatial_hash(corners: torch.Tensor, table_size: int) -> torch.Tensor:
    """Table rows ``(i * 1 xor j * 2654435761 xor k * 805459861) mod table_size`` of integer corners (..., 3)."""
    c = corners.long()
    h = (c[..., 0] * PRIMES[0]) ^ (c[..., 1] * PRIMES[1]) ^ (c[..., 2] * PRIMES[2])
    return torch.remainder(h, table_size)


def dense_index(corners: torch.Tensor, resolution: int) -> torch.Tensor:
    """Row of integer vertex (i, j, k) (..., 3) in a dense grid of ``resolution`` cells per axis: x fastest."""
    c = corners.long()
    side = resolution + 1
    return c[..., 0] + c[..., 1] * side + c[..., 2] * (side * side)


def trilinear_corners(x: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 vertices around each point of ``x`` (N, 3) in [0, 1]^3 on a grid of ``resolution`` cells per
    axis, and their trilinear weights: (corners (N, 8, 3) long, weights (N, 8), summing to 1).

    The weights are differentiable in ``x`` (so analytic normals work); a point on the upper face
    (x = 1) lies in the last cell with fraction 1.
    """
    pos = x * resolution
    cell = pos.detach().floor().clamp_(0, resolution - 1)
    frac = pos - cell
    offsets = _CORNERS.to(x.device)
    corners = cell.long().unsqueeze(1) + offsets
    frac = frac.unsqueeze(1)
    weights = torch.where(offsets.bool(), frac, 1.0 - frac).prod(dim=-1)
    return corners, weights


class HashGridEncoding(nn.Module):
    """Multi-resolution hash grid: ``forward(x (N, 3) in [0, 1]^3) -> (N, levels * features)``.

    Defaults are the full-size configuration of DreamFusion / threestudio's implicit volume:
    16 levels x 2 features, 2^19 rows per level, resolutions 16 to 4096. ``table`` holds every
    level's rows one after another (``offsets[l]`` is level l's first row); ``dense[l]`` says
    whether level l is densely indexed. ``active_levels`` (saved in the state dict) is how many
    levels contribute.
    """

    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19, base: int = 16,
                 max_resolution: int = 4096, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.levels, self.features = int(levels), int(features)
        self.table_size = 2 ** int(log2_table)
        self.resolutions = level_resolutions(self.levels, int(base), int(max_resolution))
        self.dense = [(r + 1) ** 3 <= self.table_size for r in self.resolutions]
        self.level_sizes = [(r + 1) ** 3 if d else self.table_size for r, d in zip(self.resolutions, self.dense, strict=True)]
        self.offsets = [sum(self.level_sizes[:i]) for i in range(self.levels)]
        self.table = nn.Parameter(torch.empty(sum(self.level_sizes), self.features).uniform_(-init_scale, init_scale))
        self.register_buffer("active", torch.tensor(self.levels, dtype=torch.long))
        self._active = self.levels  # python copy of ``active``: no device sync per forward

    @property
    def output_dim(self) -> int:
        """Width of the encoding: levels * features."""
        return self.levels * self.features

    @property
    def active_levels(self) -> int:
        """How many (coarsest-first) levels contribute; the rest give zero features."""
        return self._active

    def set_active_levels(self, count: int) -> None:
        """Let the first ``count`` levels contribute (clamped to [1, levels])."""
        count = max(1, min(int(count), self.levels))
        self._active = count
        self.active.fill_(count)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 - torch hook
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._active = int(self.active.item())  # a resumed field keeps its progressive level

    def level_index(self, level: int, corners: torch.Tensor) -> torch.Tensor:
        """Rows of ``table`` for integer vertices ``corners`` (..., 3) of level ``level`` (offset included)."""
        if self.dense[level]:
            rows = dense_index(corners, self.resolutions[level])
        else:
            rows = spatial_hash(corners, self.table_size)
        return rows + self.offsets[level]

    def level_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(levels * features,) 1 for the features of active levels, 0 for the others."""
        on = torch.arange(self.levels, device=self.active.device) < self.active
        return on.to(dtype).repeat_interleave(self.features)

    def forward(self, x: torch.Tensor, all_levels: bool = False) -> torch.Tensor:
        """Encode points ``x`` (N, 3) in [0, 1]^3 (clamped) -> (N, levels * features).

        Eager mode skips inactive levels; ``all_levels=True`` evaluates every level and multiplies by
        :meth:`level_mask` instead (same values, shape-static: what torch.compile wants).
        """
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"HashGridEncoding.forward: expected points of shape (N, 3) in [0, 1]^3, "
                             f"got {tuple(x.shape)}")
        x = x.clamp(0.0, 1.0)
        count = self.levels if all_levels else self._active
        n = x.shape[0]
        rows, weights = [], []
        for level in range(count):
            corners, w = trilinear_corners(x, self.resolutions[level])
            rows.append(self.level_index(level, corners))
            weights.append(w)
        # one gather for all levels: its backward builds one table-sized gradient, not one per level;
        # index_select (backward: index_add) is 2x faster on the CPU than F.embedding's dense backward, and is
        # twice differentiable (orientation loss on analytic normals)
        idx = torch.stack(rows, dim=1)
        values = self.table.index_select(0, idx.reshape(-1)).view(*idx.shape, self.features)  # (N, count, 8, F)
        weights = torch.stack(weights, dim=1).unsqueeze(-1).to(values.dtype)
        enc = (values * weights).sum(dim=2).reshape(n, count * self.features)
        if count < self.levels:
            enc = torch.cat([enc, enc.new_zeros(n, (self.levels - count) * self.features)], dim=-1)
        return enc * self.level_mask(enc.dtype) if all_levels else enc

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, features={self.features}, table_size={self.table_size}, "
                f"resolutions={self.resolutions[0]}..{self.resolutions[-1]}, dense_levels={sum(self.dense)}")
