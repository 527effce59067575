"""NeRF volume rendering of neural fields (DreamFusion / threestudio's nerf-volume renderer, in plain PyTorch).

A field (kind ``field``: ``bound``, ``forward(points, with_normal) -> {"density", "features"[, "normal"]}``,
optional ``occupancy`` with ``occupied(points) -> bool``) lives in the cube ``[-bound, bound]^3``. Each ray is
cut where it crosses that cube (:func:`zoo.render.rays.ray_cube`, clipped at ``near``) into ``num_samples``
equal bins with one sample per bin: uniformly jittered inside its bin in training when ``stratified``, the
bin centre otherwise. With ``delta`` the bin length (times ``|rays_d|``) and ``sigma_i`` the density,

    alpha_i = 1 - exp(-sigma_i delta),   w_i = alpha_i prod_{j<i} (1 - alpha_j),
    rgb = sum_i w_i c_i + (1 - opacity) bg,   opacity = sum_i w_i,   depth = sum_i w_i t_i,

so depth is not divided by the opacity (threestudio's convention: a transparent ray has depth 0).
Transmittance is computed as ``exp(-cumsum(sigma delta))``, which has the same value as the product and
stable gradients. Samples whose alpha is below ``alpha_threshold`` are dropped (nerfacc's ``alpha_thre``).

:class:`CompositeRenderer` samples several fields at the same t: per sample the densities add and the
colours mix by density, ``c = sum_k sigma_k c_k / sum_k sigma_k`` (InterFusion's alpha-weighted mixing of
the human and object NeRFs), with chosen fields detached.

The background behind the fields (:class:`Background`): ``learned`` (a small MLP on a sin / cos encoding of
the ray direction, sigmoid RGB: threestudio's neural environment map, whose default is 2 hidden layers of
16 ReLU units on a degree-3 spherical-harmonics encoding; here 2 hidden layers of ``hidden`` units on
``frequencies`` octaves), ``fixed`` (a colour) or ``random`` (a random colour per forward call in training,
the fixed colour in eval). It is the renderer's submodule ``background``, so a recipe can give its
parameters their own learning rate with a name pattern such as ``renderer.background.*``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.core.interfaces import Renderer
from zoo.core.recipe import ConfigError
from zoo.core.registry import register
from zoo.render.rays import ray_cube

__all__ = ["BackgroundSpec", "Background", "VolumeRenderer", "CompositeRenderer", "composite_weights"]

BACKGROUND_KINDS = ("learned", "fixed", "random")


@dataclass
class BackgroundSpec:
    """The ``background`` setting of the volume renderers.

    ``kind``: learned | fixed | random; ``color``: the fixed colour (RGB in [0, 1]; also random's eval colour);
    ``hidden``: width of the learned MLP's 2 hidden layers; ``frequencies``: octaves of the learned
    direction encoding (``d, sin(2^k pi d), cos(2^k pi d)`` for k < frequencies).
    """

    kind: str = "learned"
    color: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    hidden: int = 32
    frequencies: int = 4


def _background_spec(value: BackgroundSpec | Mapping[str, Any] | None, owner: str) -> BackgroundSpec:
    """``value`` as a checked :class:`BackgroundSpec` (ConfigError naming ``background.<key>`` otherwise)."""
    if value is None:
        spec = BackgroundSpec()
    elif isinstance(value, BackgroundSpec):
        spec = dataclasses.replace(value)
    elif isinstance(value, Mapping):
        known = [f.name for f in dataclasses.fields(BackgroundSpec)]
        for key in value:
            if key not in known:
                raise ConfigError(("background", key), f"{owner}: unknown background setting; valid: {', '.join(known)}")
        spec = BackgroundSpec(**dict(value))
    else:
        raise ConfigError(("background",), f"{owner}: must be a mapping with kind / color / hidden / frequencies, "
                                           f"got {value!r}")
    if spec.kind not in BACKGROUND_KINDS:
        raise ConfigError(("background", "kind"), f"{owner}: must be one of {', '.join(BACKGROUND_KINDS)}, "
                                                  f"got {spec.kind!r}")
    try:
        color = [float(c) for c in spec.color]
    except (TypeError, ValueError):
        color = []
    if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
        raise ConfigError(("background", "color"), f"{owner}: must be three numbers in [0, 1], got {spec.color!r}")
    spec.color = color
    if int(spec.hidden) != spec.hidden or spec.hidden <= 0:
        raise ConfigError(("background", "hidden"), f"{owner}: must be a positive int, got {spec.hidden!r}")
    if int(spec.frequencies) != spec.frequencies or spec.frequencies < 0:
        raise ConfigError(("background", "frequencies"), f"{owner}: must be an int >= 0, got {spec.frequencies!r}")
    spec.hidden, spec.frequencies = int(spec.hidden), int(spec.frequencies)
    return spec


class Background(nn.Module):
    """The colour behind the fields along each ray direction: ``forward(dirs (..., 3) unit) -> (..., 3)``."""

    def __init__(self, spec: BackgroundSpec):
        super().__init__()
        self.kind = spec.kind
        self.frequencies = spec.frequencies
        # the configured colour comes from the recipe, so it is no checkpoint state
        self.register_buffer("color", torch.tensor(spec.color, dtype=torch.float32), persistent=False)
        self.mlp: nn.Module | None = None
        if spec.kind == "learned":
            n_in = 3 + 6 * spec.frequencies
            self.mlp = nn.Sequential(nn.Linear(n_in, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.hidden),
                                     nn.ReLU(), nn.Linear(spec.hidden, 3))

    def encode(self, dirs: torch.Tensor) -> torch.Tensor:
        """``[d, sin(2^k pi d), cos(2^k pi d)]_k`` (..., 3 + 6 frequencies)."""
        if self.frequencies == 0:
            return dirs
        scales = (2.0 ** torch.arange(self.frequencies, dtype=dirs.dtype, device=dirs.device)) * math.pi
        x = dirs[..., None, :] * scales[:, None]  # (..., F, 3)
        enc = torch.cat([torch.sin(x), torch.cos(x)], -1).flatten(-2)
        return torch.cat([dirs, enc], -1)

    def forward(self, dirs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Background colour (..., 3) in [0, 1] for unit directions ``dirs`` (..., 3) (``generator``: the random
        colour's draw)."""
        if self.mlp is not None:
            return torch.sigmoid(self.mlp(self.encode(dirs)))
        color = self.color.to(dirs)
        if self.kind == "random" and self.training:
            color = torch.rand(3, generator=generator, device=dirs.device).to(dirs.dtype)
        return color.expand(*dirs.shape[:-1], 3)


def composite_weights(sigma_delta: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights (..., S) from optical thicknesses ``sigma_i delta_i`` (..., S), front to back:
    ``w_i = (1 - exp(-tau_i)) exp(-sum_{j<i} tau_j)``."""
    alpha = 1.0 - torch.exp(-sigma_delta)
    before = torch.cumsum(sigma_delta, -1) - sigma_delta  # exclusive prefix sum
    return alpha * torch.exp(-before)


def _bound_of(f: Any, name: str) -> float:
    b = getattr(f, "bound", None)
    try:
        b = float(b)
    except (TypeError, ValueError):
        raise TypeError(f"volume renderer: field {name!r} ({type(f).__name__}) has no numeric 'bound' attribute "
                        f"(the half side of the cube [-bound, bound]^3 it lives in), got {b!r}") from None
    if not b > 0 or not math.isfinite(b):
        raise ValueError(f"volume renderer: field {name!r} has bound {b}; expected a positive number")
    return b


class _VolumeBase(nn.Module):
    """Sampling, compositing, background and chunking shared by the two volume renderers."""

    def __init__(self, num_samples: int, near: float, stratified: bool,
                 background: BackgroundSpec | Mapping[str, Any] | None, chunk: int, alpha_threshold: float,
                 owner: str):
        super().__init__()
        self._generator: torch.Generator | None = None  # set for the duration of one forward call
        if int(num_samples) != num_samples or num_samples <= 0:
            raise ConfigError(("num_samples",), f"{owner}: must be a positive int, got {num_samples!r}")
        if not math.isfinite(near) or near < 0:
            raise ConfigError(("near",), f"{owner}: must be a finite number >= 0 (the smallest t), got {near!r}")
        if int(chunk) != chunk or chunk <= 0:
            raise ConfigError(("chunk",), f"{owner}: must be a positive int (rays per chunk in eval), got {chunk!r}")
        if not 0.0 <= alpha_threshold < 1.0:
            raise ConfigError(("alpha_threshold",), f"{owner}: must lie in [0, 1), got {alpha_threshold!r}")
        self.owner = owner
        self.num_samples = int(num_samples)
        self.near = float(near)
        self.stratified = bool(stratified)
        self.chunk = int(chunk)
        self.alpha_threshold = float(alpha_threshold)
        self.background = Background(_background_spec(background, owner))

    # -- inputs ---------------------------------------------------------------------------------

    def _rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        if rays_o.shape[-1:] != (3,) or rays_o.shape != rays_d.shape:
            raise ValueError(f"{self.owner}: rays_o and rays_d must both be (..., 3) of one shape, got "
                             f"{tuple(rays_o.shape)} and {tuple(rays_d.shape)}")
        lead = tuple(rays_o.shape[:-1])
        return rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), lead

    def _background(self, background: torch.Tensor | None, dirs: torch.Tensor, lead: tuple) -> torch.Tensor:
        """Background colours (N, 3) of the flat rays: the override if given, else the background module's."""
        if background is None:
            return self.background(dirs, self._generator)
        bg = torch.as_tensor(background).to(dirs)
        if bg.shape[-1:] != (3,):
            raise ValueError(f"{self.owner}: background must be (3,) or (..., 3) RGB, got {tuple(bg.shape)}")
        if bg.ndim == 2 and len(lead) > 1 and bg.shape[0] == lead[0]:
            bg = bg.reshape(bg.shape[0], *([1] * (len(lead) - 1)), 3)  # one colour per image of a (B, H, W) batch
        try:
            bg = bg.expand(*lead, 3)
        except RuntimeError:
            raise ValueError(f"{self.owner}: background of shape {tuple(bg.shape)} does not broadcast to the rays' "
                             f"{(*lead, 3)}") from None
        return bg.reshape(-1, 3)

    # -- sampling -------------------------------------------------------------------------------

    def _samples(self, o: torch.Tensor, d: torch.Tensor, bound: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t (N, S), delta (N, S) in distance units, points (N, S, 3), hit (N,)) inside the cube ``bound``."""
        t0, t1, hit = ray_cube(o, d, bound, self.near)
        S = self.num_samples
        width = (t1 - t0) / S  # bin length in t (0 for rays that miss)
        if self.training and self.stratified:
            u = torch.rand(o.shape[0], S, generator=self._generator, device=o.device).to(o.dtype)
        else:
            u = torch.full((o.shape[0], S), 0.5, dtype=o.dtype, device=o.device)
        bins = torch.arange(S, dtype=o.dtype, device=o.device)
        t = t0[:, None] + (bins + u) * width[:, None]
        delta = (width * d.norm(dim=-1))[:, None].expand(-1, S)
        points = o[:, None, :] + d[:, None, :] * t[..., None]
        return t, delta, points, hit

    def _query(self, f: Any, name: str, points: torch.Tensor, hit: torch.Tensor, with_normal: bool,
               detach: bool) -> dict[str, torch.Tensor]:
        """The field at the samples (N, S, 3) it needs to be asked about: {density (N, S), features (N, S, 3)
        [, normal (N, S, 3)]}, zero elsewhere. Skipped: samples of rays that miss, outside the field's cube
        and, when ``f.occupancy`` is set, in cells its grid marks empty."""
        N, S, _ = points.shape
        flat = points.reshape(-1, 3)
        b = _bound_of(f, name)
        keep = hit[:, None].expand(N, S).reshape(-1) & (flat.abs() <= b * (1 + 1e-6)).all(-1)
        occ = getattr(f, "occupancy", None)
        if occ is not None and bool(keep.any()):
            keep = keep & occ.occupied(flat).to(torch.bool).reshape(-1)
        idx = torch.nonzero(keep)[:, 0]
        dens = flat.new_zeros(N * S)
        feat = flat.new_zeros(N * S, 3)
        out = {"density": dens.view(N, S), "features": feat.view(N, S, 3)}
        if with_normal:
            out["normal"] = flat.new_zeros(N, S, 3)
        if idx.numel() == 0:
            return out
        pts = flat.index_select(0, idx)
        if detach and not with_normal:
            with torch.no_grad():
                res = f(pts, with_normal=False)
        else:
            res = f(pts, with_normal=with_normal)
        self._check_output(res, name, pts.shape[0], with_normal)
        if detach:
            res = {k: v.detach() for k, v in res.items()}
        out["density"] = dens.index_copy(0, idx, res["density"].to(dens)).view(N, S)
        out["features"] = feat.index_copy(0, idx, res["features"].to(feat)).view(N, S, 3)
        if with_normal:
            out["normal"] = feat.index_copy(0, idx, res["normal"].to(feat)).view(N, S, 3)
        return out

    def _check_output(self, res: Any, name: str, n: int, with_normal: bool) -> None:
        if not isinstance(res, Mapping) or "density" not in res or "features" not in res:
            raise TypeError(f"{self.owner}: field {name!r} must return a dict with 'density' (N,) and 'features' "
                            f"(N, 3), got {type(res).__name__}{' keys ' + str(list(res)) if isinstance(res, Mapping) else ''}")
        if tuple(res["density"].shape) != (n,):
            raise ValueError(f"{self.owner}: field {name!r} returned density of shape {tuple(res['density'].shape)}; "
                             f"expected ({n},) for {n} points")
        if tuple(res["features"].shape) != (n, 3):
            raise ValueError(f"{self.owner}: field {name!r} returned features of shape "
                             f"{tuple(res['features'].shape)}; expected ({n}, 3) RGB for {n} points")
        if with_normal and tuple(getattr(res.get("normal"), "shape", ())) != (n, 3):
            raise ValueError(f"{self.owner}: field {name!r} was asked for normals (with_normal=True) and must return "
                             f"'normal' ({n}, 3), got {getattr(res.get('normal'), 'shape', None)}")

    # -- compositing ----------------------------------------------------------------------------

    def _composite(self, sigma: torch.Tensor, color: torch.Tensor, normal: torch.Tensor | None, t: torch.Tensor,
                   delta: torch.Tensor, bg: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        tau = sigma * delta
        if self.alpha_threshold > 0:
            alpha = 1.0 - torch.exp(-tau)
            tau = torch.where(alpha < self.alpha_threshold, torch.zeros_like(tau), tau)
        w = composite_weights(tau)
        opacity = w.sum(-1, keepdim=True)
        out = {"rgb": (w[..., None] * color).sum(-2) + (1.0 - opacity) * bg, "opacity": opacity,
               "depth": (w * t).sum(-1, keepdim=True), "weights": w, "t": t, "dirs": dirs, "background": bg}
        if normal is not None:
            out["normal"] = (w[..., None] * normal).sum(-2)
            out["sample_normal"] = normal
        return out

    def _render_chunk(self, o: torch.Tensor, d: torch.Tensor, dirs: torch.Tensor, bg: torch.Tensor,
                      fields: list[tuple[str, Any]], detach: set[str], with_normal: bool) -> dict[str, torch.Tensor]:
        """Flat rays (n, 3) of one chunk -> flat outputs; each renderer defines how its fields are sampled."""
        raise NotImplementedError

    def _run(self, fields: list[tuple[str, Any]], rays_o: torch.Tensor, rays_d: torch.Tensor, detach: set[str],
             with_normal: bool, background: torch.Tensor | None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        # the training draws (stratified jitter, random background) come from ``generator`` when one is given, so a
        # caller that seeds it by the step makes a resumed run draw what the uninterrupted one did
        self._generator = generator
        try:
            return self._run_rays(fields, rays_o, rays_d, detach, with_normal, background)
        finally:
            self._generator = None

    def _run_rays(self, fields: list[tuple[str, Any]], rays_o: torch.Tensor, rays_d: torch.Tensor, detach: set[str],
                  with_normal: bool, background: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o, d, lead = self._rays(rays_o, rays_d)
        dirs = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        bg = self._background(background, dirs, lead)  # once for all rays: one random colour per call
        n = o.shape[0]
        if self.training or n <= self.chunk:
            out = self._render_chunk(o, d, dirs, bg, fields, detach, with_normal)
        else:  # eval: bound the memory of the per-sample tensors
            parts = [self._render_chunk(o[i:i + self.chunk], d[i:i + self.chunk], dirs[i:i + self.chunk],
                                        bg[i:i + self.chunk], fields, detach, with_normal)
                     for i in range(0, n, self.chunk)]
            out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return {k: v.reshape(*lead, *v.shape[1:]) for k, v in out.items()}


@register("renderer", "nerf_volume")
class VolumeRenderer(_VolumeBase, Renderer):
    """Volume rendering of one field (module docstring).

    ``forward(field, rays_o (..., 3), rays_d (..., 3), with_normal=False, background=None)`` returns, with the
    rays' leading shape ``...``: ``rgb`` (..., 3), ``opacity`` (..., 1), ``depth`` (..., 1) (``sum w t``),
    ``weights`` (..., S), ``t`` (..., S) (sample positions along each ray), ``dirs`` (..., 3) (unit ray
    directions), ``background`` (..., 3) (the colour behind each ray) and, with ``with_normal``, ``normal``
    (..., 3) (``sum w n``, not normalised) and ``sample_normal`` (..., S, 3). ``background`` (a (3,), (B, 3)
    for (B, H, W) rays, or (..., 3) tensor) replaces the background module's colours.

    Args:
        num_samples: samples (bins) per ray between its entry into and exit from the field's cube.
        near: the smallest t a sample may have.
        stratified: jitter each sample uniformly inside its bin in training (bin centres in eval).
        background: :class:`BackgroundSpec` fields (kind learned | fixed | random, color, hidden, frequencies);
            None or missing keys take BackgroundSpec's defaults (learned, white, 32 hidden, 4 octaves).
        chunk: rays rendered at a time when not training.
        alpha_threshold: samples with alpha below it contribute nothing (0 keeps all).
    """

    def __init__(self, num_samples: int = 64, near: float = 0.0, stratified: bool = True,
                 background: BackgroundSpec | dict | None = None, chunk: int = 8192, alpha_threshold: float = 0.0):
        super().__init__(num_samples, near, stratified, background, chunk, alpha_threshold, "nerf_volume")

    def _render_chunk(self, o, d, dirs, bg, fields, detach, with_normal):
        (name, f), = fields
        t, delta, points, hit = self._samples(o, d, _bound_of(f, name))
        q = self._query(f, name, points, hit, with_normal, detach=False)
        return self._composite(q["density"], q["features"], q.get("normal"), t, delta, bg, dirs)

    def forward(self, field: Any, rays_o: torch.Tensor, rays_d: torch.Tensor, with_normal: bool = False,
                background: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Render ``field`` along the rays (see the class docstring for the outputs); ``generator`` draws the
        training jitter and random background (default: torch's global generator)."""
        return self._run([("field", field)], rays_o, rays_d, set(), with_normal, background, generator)


@register("renderer", "composite_volume")
class CompositeRenderer(_VolumeBase, Renderer):
    """Volume rendering of several fields together (InterFusion's human + object scene).

    Every field is sampled at the same t, between the entry into and exit from the union of the fields'
    cubes. Per sample ``sigma = sum_k sigma_k`` and ``c = sum_k sigma_k c_k / sigma`` (normals mix the same
    way; both are 0 at samples where no field has density, which carry no weight). ``forward(fields, rays_o, rays_d, detach=(), with_normal=False, background=None)``: ``fields`` is a
    dict name -> field (or a list, named "0", "1", ...); fields named in ``detach`` are evaluated without
    gradient to their parameters. Outputs are :class:`VolumeRenderer`'s plus ``opacity_<name>`` (..., 1) per
    field: its share of the composite opacity, ``sum_i w_i sigma_k,i / sigma_i`` (occlusion by the other
    fields included; the shares add up to ``opacity``). Arguments as :class:`VolumeRenderer`.
    """

    def __init__(self, num_samples: int = 64, near: float = 0.0, stratified: bool = True,
                 background: BackgroundSpec | dict | None = None, chunk: int = 8192, alpha_threshold: float = 0.0):
        super().__init__(num_samples, near, stratified, background, chunk, alpha_threshold, "composite_volume")

    def _render_chunk(self, o, d, dirs, bg, fields, detach, with_normal):
        bound = max(_bound_of(f, name) for name, f in fields)
        t, delta, points, hit = self._samples(o, d, bound)
        qs = [(name, self._query(f, name, points, hit, with_normal, detach=name in detach)) for name, f in fields]
        sigma = sum(q["density"] for _, q in qs)
        share = {name: q["density"] / sigma.clamp(min=1e-10) for name, q in qs}  # sigma_k / sigma, 0 where empty
        color = sum(share[name][..., None] * q["features"] for name, q in qs)
        normal = sum(share[name][..., None] * q["normal"] for name, q in qs) if with_normal else None
        out = self._composite(sigma, color, normal, t, delta, bg, dirs)
        for name, _ in qs:
            out[f"opacity_{name}"] = (out["weights"] * share[name]).sum(-1, keepdim=True)
        return out

    def forward(self, fields: Mapping[str, Any] | Sequence[Any], rays_o: torch.Tensor, rays_d: torch.Tensor,
                detach: Sequence[str] = (), with_normal: bool = False, background: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Render the fields together along the rays (see the class docstring for the outputs); ``generator`` as
        :meth:`VolumeRenderer.forward`."""
        if isinstance(fields, Mapping):
            named = [(str(k), v) for k, v in fields.items()]
        else:
            named = [(str(i), v) for i, v in enumerate(fields)]
        if not named:
            raise ValueError("composite_volume: fields is empty; give at least one field")
        detach = [detach] if isinstance(detach, str) else list(detach)
        unknown = [n for n in detach if n not in dict(named)]
        if unknown:
            raise KeyError(f"composite_volume: detach names {unknown} that are not among the fields "
                           f"{[n for n, _ in named]}")
        return self._run(named, rays_o, rays_d, set(detach), with_normal, background, generator)
