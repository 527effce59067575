"""NeRF fields for text-to-3D: density + albedo in a cube, as DreamFusion / threestudio's implicit volume.

Both fields live in [-bound, bound]^3 (density 0 outside) and share :class:`NeRFField`:

* density = softplus(raw + blob_density * (1 - |x| / blob_radius)): the "blob" bias of Magic3D /
  threestudio (``blob_magic3d``) starts training from a soft ball of radius ~blob_radius at the origin
  (blob_density 0 disables it);
* features = sigmoid(logits): RGB albedo in [0, 1] (``feature_dim`` 3);
* normals are analytic, ``-grad / |grad|`` of the pre-activation density (raw + blob) by autograd.
  softplus is increasing, so this is the direction of ``-grad(density)``; the pre-activation
  gradient does not underflow where softplus flattens (threestudio / multinerf do the same). With
  gradients enabled the graph is kept (create_graph), so an orientation loss trains the field.
* ``occupancy``: an :class:`~zoo.models.field.occupancy.OccupancyGrid` (or None) refreshed by
  :meth:`NeRFField.update_step`; renderers evaluate the field only where it is occupied.

:class:`HashNeRF` (``hash_nerf``) encodes points with the multi-resolution hash grid
(:mod:`zoo.models.field.hash_grid`, progressive levels) and two small MLPs, as threestudio's
implicit-volume geometry. :class:`DenseGridNeRF` (``dense_grid``) interpolates a dense voxel grid
(optionally decoded by a tiny MLP): the field for CPU-size runs and tests.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.hub import Pretrained
from zoo.core.interfaces import Field
from zoo.core.recipe import ConfigError
from zoo.core.registry import register
from zoo.models.field.hash_grid import HashGridEncoding, dense_index, trilinear_corners
from zoo.models.field.occupancy import OccupancyGrid

__all__ = ["NeRFField", "HashNeRF", "DenseGridNeRF", "build_occupancy", "DEFAULT_LEVEL_SCHEDULE"]

# threestudio's DreamFusion hash grid: 8 levels, one more every 500 steps from step 2000, up to 16.
DEFAULT_LEVEL_SCHEDULE = {"start_value": 8, "increment": 1, "every": 500, "start_step": 2000, "max_value": 16}
_OCCUPANCY_KEYS = ("resolution", "threshold", "update_every", "warmup_steps", "decay", "dilate", "chunk")


def _need(ok: bool, key: str, want: str, got: Any) -> None:
    if not ok:
        raise ConfigError((key,), f"must be {want}, got {got!r}")


def build_occupancy(spec: dict | None, bound: float) -> OccupancyGrid | None:
    """An OccupancyGrid covering [-bound, bound]^3 from a recipe dict of its kwargs (None: no grid).

    Keys: resolution, threshold, update_every, warmup_steps, decay, dilate, chunk (see OccupancyGrid).
    The grid's bound is the field's; a ``bound`` key must agree with it.
    """
    if spec is None:
        return None
    if hasattr(spec, "_metadata"):  # an omegaconf DictConfig from a recipe
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, dict):
        raise ConfigError(("occupancy",), f"must be null or a dict of OccupancyGrid settings "
                                          f"({', '.join(_OCCUPANCY_KEYS)}), got {spec!r}")
    spec = dict(spec)
    if "bound" in spec:
        if float(spec["bound"]) != float(bound):
            raise ConfigError(("occupancy", "bound"), f"the occupancy grid covers the field's cube: bound "
                                                      f"{spec['bound']!r} differs from the field's {bound!r}")
        spec.pop("bound")
    for key in spec:
        if key not in _OCCUPANCY_KEYS:
            raise ConfigError(("occupancy", str(key)), f"unknown occupancy setting (known: {', '.join(_OCCUPANCY_KEYS)})")
    try:
        return OccupancyGrid(bound=float(bound), **spec)
    except (ValueError, TypeError) as err:
        key = next((k for k in spec if k in str(err)), None)
        raise ConfigError(("occupancy",) + ((key,) if key else ()), str(err)) from err


class NeRFField(Pretrained, Field, L.LightningModule):
    """Shared base of the NeRF fields (see the module docstring): subclasses implement :meth:`raw`.

    ``forward(points (N, 3), with_normal=False) -> {"density": (N,) >= 0, "features": (N, 3) in [0, 1],
    "normal": (N, 3) unit (only with_normal)}``; ``density(points) -> (N,)``; ``normals(points) -> (N, 3)``;
    ``update_step(step) -> dict`` of values to log.
    """

    feature_dim = 3

    def _init_field(self, bound: float, blob_density: float, blob_radius: float, occupancy: dict | None) -> None:
        _need(isinstance(bound, int | float) and bound > 0, "bound", "a number > 0", bound)
        _need(isinstance(blob_density, int | float) and math.isfinite(blob_density), "blob_density",
              "a finite number (0 disables the blob)", blob_density)
        _need(isinstance(blob_radius, int | float) and blob_radius > 0, "blob_radius", "a number > 0", blob_radius)
        self.bound = float(bound)
        self.blob_density, self.blob_radius = float(blob_density), float(blob_radius)
        self.occupancy: OccupancyGrid | None = build_occupancy(occupancy, self.bound)

    # -- what subclasses provide

    def raw(self, unit: torch.Tensor, for_normal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(density logits (N,), colour logits (N, 3)) at points ``unit`` (N, 3) in [0, 1]^3 (before the blob)."""
        raise NotImplementedError

    # -- shared

    def _check(self, method: str, points: torch.Tensor) -> None:
        if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[-1] != 3:
            got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ValueError(f"{type(self).__name__}.{method}: expected points of shape (N, 3), got {got}")

    def blob(self, points: torch.Tensor) -> torch.Tensor:
        """The pre-activation density bias (N,): blob_density * (1 - |x| / blob_radius)."""
        if self.blob_density == 0:
            return points.new_zeros(points.shape[0])
        return self.blob_density * (1.0 - points.norm(dim=-1) / self.blob_radius)

    def _pre(self, points: torch.Tensor, for_normal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        unit = (points + self.bound) / (2.0 * self.bound)
        raw, logits = self.raw(unit, for_normal=for_normal)
        return raw + self.blob(points), logits

    def _activate(self, points: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        inside = (points.abs() <= self.bound).all(dim=-1)
        return torch.where(inside, F.softplus(pre), torch.zeros_like(pre))

    def forward(self, points: torch.Tensor, with_normal: bool = False) -> dict[str, torch.Tensor]:
        """Density (N,), albedo features (N, 3) and, with ``with_normal``, unit normals (N, 3) at points (N, 3)."""
        self._check("forward", points)
        if not with_normal:
            pre, logits = self._pre(points)
            return {"density": self._activate(points, pre), "features": torch.sigmoid(logits)}
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            p = points if points.requires_grad else points.detach().requires_grad_(True)
            pre, logits = self._pre(p, for_normal=True)
            (grad,) = torch.autograd.grad(pre, p, torch.ones_like(pre), create_graph=keep_graph)
        out = {"density": self._activate(p, pre), "features": torch.sigmoid(logits),
               "normal": F.normalize(-grad, dim=-1)}
        return out if keep_graph else {k: v.detach() for k, v in out.items()}

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (N,) >= 0 at points (N, 3); 0 outside [-bound, bound]^3."""
        self._check("density", points)
        pre, _ = self._pre(points)
        return self._activate(points, pre)

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """Analytic unit normals (N, 3) at points (N, 3): -grad / |grad| of the pre-activation density."""
        self._check("normals", points)
        return self.forward(points, with_normal=True)["normal"]

    def update_step(self, step: int) -> dict[str, float]:
        """Apply step schedules and refresh the occupancy grid when due; returns values to log."""
        out: dict[str, float] = {}
        if self.occupancy is not None:
            self.occupancy.update(self.density, int(step))
            out["field/occupied"] = self.occupancy.fraction()
        return out


def _mlp(dim_in: int, hidden: int, layers: int, dim_out: int) -> nn.Sequential:
    """ReLU MLP without biases (threestudio's VanillaMLP / tcnn's FullyFusedMLP have none)."""
    mods: list[nn.Module] = []
    width = dim_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden, bias=False), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, dim_out, bias=False))
    return nn.Sequential(*mods)


@register("field", "hash_nerf")
class HashNeRF(NeRFField):
    """NeRF on a multi-resolution hash grid with progressive levels (DreamFusion as in threestudio).

    Defaults are the full-size configuration: 16 levels x 2 features, 2^19 table rows, resolutions
    16..4096, levels from :data:`DEFAULT_LEVEL_SCHEDULE` (a :class:`zoo.core.schedule.Schedule` spec;
    None keeps every level on), two MLPs (density, colour) of ``hidden_layers`` x ``hidden`` ReLU units,
    as threestudio's implicit volume. ``bound`` 1.0 is the zoo's object cube (threestudio's DreamFusion
    configs use radius 2.0 with cameras 1.5-2 away; ours sit 1-1.5 away). ``compile``: run the encoding
    + MLPs through torch.compile (every level evaluated and masked, so level changes do not recompile;
    the normal path, which needs double backward, stays eager). Measured on CPU (1 thread, 4096 points,
    forward + backward): the tiny configuration runs ~22 ms compiled vs ~45-85 ms eager, but compiling
    took ~50 s, and the full-size one had not finished compiling after ~165 s (eager: ~240 ms at 8
    levels, ~400 ms at 16), so it is off by default: it only pays in long runs. ``weights``: a trained
    field's file (zoo.core.hub).
    """

    def __init__(self, bound: float = 1.0, levels: int = 16, features: int = 2, log2_table: int = 19, base: int = 16,
                 max_resolution: int = 4096, level_schedule: float | list | dict | None = DEFAULT_LEVEL_SCHEDULE, hidden: int = 64,
                 hidden_layers: int = 1, blob_density: float = 10.0, blob_radius: float = 0.5,
                 occupancy: dict | None = None, compile: bool = False, weights: str | None = None) -> None:
        super().__init__()
        for key, value, low in (("levels", levels, 1), ("features", features, 1), ("log2_table", log2_table, 1),
                                ("base", base, 1), ("hidden", hidden, 1), ("hidden_layers", hidden_layers, 1)):
            _need(isinstance(value, int) and not isinstance(value, bool) and value >= low, key, f"an int >= {low}",
                  value)
        _need(log2_table <= 30, "log2_table", "<= 30 (2^30 rows per level)", log2_table)
        _need(isinstance(max_resolution, int) and max_resolution >= base, "max_resolution",
              f"an int >= base ({base})", max_resolution)
        self.save_hyperparameters()
        self._init_field(bound, blob_density, blob_radius, occupancy)
        self.encoding = HashGridEncoding(levels, features, log2_table, base, max_resolution)
        self.density_net = _mlp(self.encoding.output_dim, hidden, hidden_layers, 1)
        self.feature_net = _mlp(self.encoding.output_dim, hidden, hidden_layers, self.feature_dim)
        self.level_schedule = None
        if level_schedule is not None:
            from zoo.core.schedule import Schedule

            self.level_schedule = Schedule.of(level_schedule, "level_schedule")
            self.encoding.set_active_levels(self._levels_at(0))
        self.use_compile = bool(compile)  # (not self.compile: that is nn.Module's method)
        self.__dict__["_compiled"] = None  # built on first use, kept out of the module tree

    def _levels_at(self, step: int) -> int:
        return max(1, min(int(round(self.level_schedule(step))), self.encoding.levels))

    def _net(self, unit: torch.Tensor, all_levels: bool = False) -> torch.Tensor:
        enc = self.encoding(unit, all_levels=all_levels)
        return torch.cat([self.density_net(enc), self.feature_net(enc)], dim=-1)

    def raw(self, unit: torch.Tensor, for_normal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(density logits (N,), colour logits (N, 3)) from the hash encoding of ``unit`` (N, 3) in [0, 1]^3."""
        if self.use_compile and not for_normal:
            if self.__dict__["_compiled"] is None:
                self.__dict__["_compiled"] = torch.compile(lambda u: self._net(u, all_levels=True), dynamic=True)
            out = self.__dict__["_compiled"](unit)
        else:
            out = self._net(unit)
        return out[:, 0], out[:, 1:]

    def update_step(self, step: int) -> dict[str, float]:
        """Set the active hash levels from ``level_schedule`` at ``step``, refresh the occupancy grid when due."""
        if self.level_schedule is not None:
            self.encoding.set_active_levels(self._levels_at(int(step)))
        return {"field/levels": float(self.encoding.active_levels), **super().update_step(step)}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state = dict(state)
        state["_compiled"] = None  # compiled callables neither pickle nor deep-copy
        return state


@register("field", "dense_grid")
class DenseGridNeRF(NeRFField):
    """NeRF on a dense voxel grid: trilinear interpolation of ``resolution``^3 vertices spanning the cube.

    Without a decoder (``decoder_hidden`` 0) the grid holds 4 channels: the density logit and 3
    colour logits. With ``decoder_hidden`` > 0 it holds ``decoder_channels`` features decoded by a
    one-hidden-layer ReLU MLP. The grid (``grid`` (resolution, resolution, resolution, C), indexed
    [z, y, x]) starts at 0, so the initial density is the blob and the initial albedo grey. The
    interpolation is written with gathers, equal to ``F.grid_sample(align_corners=True)``, because
    grid_sample has no double backward and an orientation loss on the normals needs one.
    Defaults (128^3, no decoder) are the full-size configuration; the tiny one is 16^3.
    """

    def __init__(self, bound: float = 1.0, resolution: int = 128, decoder_hidden: int = 0, decoder_channels: int = 8,
                 blob_density: float = 10.0, blob_radius: float = 0.5, occupancy: dict | None = None,
                 weights: str | None = None) -> None:
        super().__init__()
        _need(isinstance(resolution, int) and resolution >= 2, "resolution", "an int >= 2", resolution)
        _need(isinstance(decoder_hidden, int) and decoder_hidden >= 0, "decoder_hidden",
              "an int >= 0 (0: no decoder)", decoder_hidden)
        _need(isinstance(decoder_channels, int) and decoder_channels >= 1, "decoder_channels", "an int >= 1",
              decoder_channels)
        self.save_hyperparameters()
        self._init_field(bound, blob_density, blob_radius, occupancy)
        channels = decoder_channels if decoder_hidden > 0 else 1 + self.feature_dim
        self.resolution = resolution
        self.grid = nn.Parameter(torch.zeros(resolution, resolution, resolution, channels))
        self.decoder = _mlp(channels, decoder_hidden, 1, 1 + self.feature_dim) if decoder_hidden > 0 else None

    def interpolate(self, unit: torch.Tensor) -> torch.Tensor:
        """Trilinear grid values (N, C) at points ``unit`` (N, 3) in [0, 1]^3 (clamped)."""
        cells = self.resolution - 1
        corners, weights = trilinear_corners(unit.clamp(0.0, 1.0), cells)
        idx = dense_index(corners, cells)
        # index_select, not F.embedding: its backward (index_add) is 2x faster on the CPU and twice differentiable
        rows = self.grid.reshape(-1, self.grid.shape[-1]).index_select(0, idx.reshape(-1)).view(*idx.shape, -1)
        return (rows * weights.unsqueeze(-1)).sum(dim=1)

    def raw(self, unit: torch.Tensor, for_normal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(density logits (N,), colour logits (N, 3)) interpolated (and decoded) at ``unit`` (N, 3)."""
        out = self.interpolate(unit)
        if self.decoder is not None:
            out = self.decoder(out)
        return out[:, 0], out[:, 1:]
