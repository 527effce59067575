"""Pixel <-> vertex (point) lift maps: 2D masks of fixed views to 3D scores, and 3D labels to 2D masks.

A :class:`LiftMap` stores, for each view and pixel, the mesh face (or point) seen there and
the pixel's barycentric weights. Lifting follows InteractVLM (model/components.py,
``HumanContact3DPredictor``): per view each covered pixel votes its probability p (from a
mask logit: ``sigmoid(clamp(logit, +-20))``) for its face's three vertices with barycentric
weights w; a vertex's per-view score is
``sum(w p) / sum(w)``, and its final score the mean of the per-view scores over the views
where ``sum(w) > 0``. For point clouds every pixel votes for its one point with weight 1
(a per-view mean over the pixels showing the point, then the mean over views). Vertices
(points) no view sees get score 0 and ``seen = False``.

Maps depend only on geometry, views, resolution and backend, so :func:`cached_lift_map`
computes each once and keeps it on disk, keyed by a sha256 of all of those, by default
under the zoo's one cache root (:func:`default_cache_dir`). This module only stores and
applies maps; rendering geometry into one is :func:`zoo.render.multiview.build_lift_map`.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from zoo.core import paths
from zoo.core.atomic import atomic_path

__all__ = ["LiftMap", "LIFT_FORMAT_VERSION", "lift_map_key", "default_cache_dir", "cached_lift_map",
           "mesh_lift_map", "points_lift_map"]

LIFT_FORMAT_VERSION = 1


@dataclass
class LiftMap:
    """Per-view pixel -> face (mesh) or point (cloud) map, with barycentrics for meshes.

    Fields:
        kind: "mesh" or "points".
        pix_to_elem: (N_views, H, W) long; face id (mesh) or point id (points), -1 = background.
        bary: (N_views, H, W, 3) float32 barycentrics of the pixel in its face (mesh), else None.
        faces: (F, 3) long mesh faces (mesh), else None.
        num_elems: number of vertices (mesh) or points.
        images: optional (N_views, 3, H, W) renders the map belongs to (kept in the disk cache).
    """

    kind: Literal["mesh", "points"]
    pix_to_elem: torch.Tensor
    bary: torch.Tensor | None
    faces: torch.Tensor | None
    num_elems: int
    images: torch.Tensor | None = None
    _flat: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("mesh", "points"):
            raise ValueError(f"LiftMap: kind must be 'mesh' or 'points', got {self.kind!r}")
        p = self.pix_to_elem
        if not isinstance(p, torch.Tensor) or p.ndim != 3:
            raise ValueError(f"LiftMap: pix_to_elem must be a (N_views, H, W) tensor, got "
                             f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
        self.pix_to_elem = p.long()
        self.num_elems = int(self.num_elems)
        if self.kind == "mesh":
            if self.bary is None or self.faces is None:
                raise ValueError("LiftMap: a mesh map needs bary (N_views, H, W, 3) and faces (F, 3)")
            if tuple(self.bary.shape) != (*p.shape, 3):
                raise ValueError(f"LiftMap: bary must be {(*p.shape, 3)}, got {tuple(self.bary.shape)}")
            if self.faces.ndim != 2 or self.faces.shape[1] != 3:
                raise ValueError(f"LiftMap: faces must be (F, 3), got {tuple(self.faces.shape)}")
            self.bary = self.bary.float()
            self.faces = self.faces.long()
            if p.numel() and int(p.max()) >= self.faces.shape[0]:
                raise ValueError(f"LiftMap: pix_to_elem has face id {int(p.max())} >= F={self.faces.shape[0]}")
            if self.faces.numel() and int(self.faces.max()) >= self.num_elems:
                raise ValueError(f"LiftMap: faces index vertex {int(self.faces.max())} >= num_elems={self.num_elems}")
        elif p.numel() and int(p.max()) >= self.num_elems:
            raise ValueError(f"LiftMap: pix_to_elem has point id {int(p.max())} >= num_elems={self.num_elems}")
        if self.images is not None and (self.images.ndim != 4 or self.images.shape[0] != p.shape[0]
                                        or tuple(self.images.shape[-2:]) != tuple(p.shape[-2:])):
            raise ValueError(f"LiftMap: images must be ({p.shape[0]}, C, {p.shape[1]}, {p.shape[2]}), "
                             f"got {tuple(self.images.shape)}")

    # ------------------------------------------------------------------ shape
    @property
    def num_views(self) -> int:
        """Number of views."""
        return int(self.pix_to_elem.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the map."""
        return int(self.pix_to_elem.shape[1]), int(self.pix_to_elem.shape[2])

    @property
    def device(self) -> torch.device:
        """Device of the map's tensors."""
        return self.pix_to_elem.device

    def _pixels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Covered pixels: flat index over (view, H, W) (M,), view (M,), element ids (M, k), weights (M, k),
        per-(view, element) weight sums (N_views, num_elems). Computed once per map."""
        if self._flat is None or self._flat[0].device != self.device:
            flat = self.pix_to_elem.reshape(-1)
            pix = torch.nonzero(flat >= 0).squeeze(1)
            view = torch.div(pix, flat.numel() // max(self.num_views, 1), rounding_mode="floor")
            if self.kind == "mesh":
                elem = self.faces.to(self.device)[flat[pix]]
                w = self.bary.reshape(-1, 3)[pix]
            else:
                elem = flat[pix][:, None]
                w = torch.ones(pix.numel(), 1, device=self.device)
            wsum = torch.zeros(self.num_views * self.num_elems, device=self.device)
            wsum.index_add_(0, (view[:, None] * self.num_elems + elem).reshape(-1), w.reshape(-1))
            self._flat = (pix, view, elem, w, wsum.view(self.num_views, self.num_elems))
        return self._flat  # type: ignore[return-value]

    # ------------------------------------------------------------------ 2D -> 3D
    def lift(self, values: torch.Tensor, from_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element scores (B, num_elems) and a seen mask (num_elems,) from per-view masks.

        ``values`` (B, N_views, H, W): probabilities in [0, 1], or with ``from_logits`` mask
        logits, turned into ``sigmoid(clamp(logit, -20, 20))`` as InteractVLM's
        ``HumanContact3DPredictor`` does, but only on the pixels the map covers (the background is
        never touched). If H, W differ from the map's the values are first resized bilinearly
        (align_corners=False) to the map's size. Scores are clamped to [0, 1] (the official
        predictor's last step). Differentiable w.r.t. ``values`` (a logit beyond +-20 gets no
        gradient); all views and samples in one scatter.
        """
        if values.ndim != 4 or values.shape[1] != self.num_views:
            what = "logits" if from_logits else "probs"
            raise ValueError(f"LiftMap.lift: {what} must be (B, {self.num_views}, H, W), got {tuple(values.shape)}")
        H, W = self.image_size
        if tuple(values.shape[-2:]) != (H, W):
            values = F.interpolate(values, size=(H, W), mode="bilinear", align_corners=False)
        pix, view, elem, w, wsum = self._pixels()
        B, N, V = values.shape[0], self.num_elems, self.num_views
        vals = values.reshape(B, -1)[:, pix]  # (B, M): the covered pixels only
        if from_logits:
            vals = torch.sigmoid(vals.clamp(-20.0, 20.0))
        contrib = (vals[:, :, None] * w.to(vals.dtype)).reshape(B, -1)
        target = (view[:, None] * N + elem).reshape(-1)
        num = torch.zeros(B, V * N, dtype=vals.dtype, device=vals.device).index_add(1, target, contrib)
        num = num.view(B, V, N)
        seen_v = wsum > 0  # (V, N)
        per_view = num / torch.where(seen_v, wsum, torch.ones_like(wsum)).to(vals.dtype)
        count = seen_v.sum(0)
        total = (per_view * seen_v.to(vals.dtype)).sum(1)
        scores = (total / count.clamp(min=1).to(vals.dtype)).clamp(0.0, 1.0)
        return scores, count > 0

    # ------------------------------------------------------------------ 3D -> 2D
    def to_masks(self, labels: torch.Tensor, background: float = -1.0, hard: bool = False,
                 min_vertices: int | None = None) -> torch.Tensor:
        """Per-view 2D masks (B, N_views, H, W) of per-element labels (B, num_elems).

        Mesh pixels take the barycentric interpolation of their face's vertex labels, so a
        binary per-vertex label gives soft values along label boundaries; ``hard=True``
        takes instead the label of the face's vertex with the largest barycentric weight.
        ``min_vertices=k`` (1, 2 or 3; meshes only) is InteractVLM's rule
        (``render_mesh_utils.py::project_vertices_and_create_mask``): a pixel is 1 when at
        least k of its face's three vertices are in contact (label > 0, the official
        ``np.where(label)``), else 0; it takes precedence over ``hard``. Point pixels take
        their point's label. Background pixels get ``background``.
        """
        if labels.ndim != 2 or labels.shape[1] != self.num_elems:
            raise ValueError(f"LiftMap.to_masks: labels must be (B, {self.num_elems}), got {tuple(labels.shape)}")
        if min_vertices is not None and (self.kind != "mesh" or isinstance(min_vertices, bool)
                                         or int(min_vertices) != min_vertices or not 1 <= min_vertices <= 3):
            raise ValueError(f"LiftMap.to_masks: min_vertices must be 1, 2 or 3 on a mesh map (or None), got "
                             f"{min_vertices!r} on a {self.kind} map")
        pix, _, elem, w, _ = self._pixels()
        labels = labels.to(self.device)
        dtype = labels.dtype if labels.is_floating_point() else torch.float32
        B = labels.shape[0]
        H, W = self.image_size
        lab = labels.to(dtype)[:, elem]  # (B, M, k)
        if self.kind == "points":
            vals = lab[..., 0]
        elif min_vertices is not None:
            vals = ((lab > 0).sum(-1) >= int(min_vertices)).to(dtype)
        elif hard:
            vals = lab.gather(2, w.argmax(1)[None, :, None].expand(B, -1, 1))[..., 0]
        else:
            vals = (lab * w.to(dtype)).sum(-1)
        out = torch.full((B, self.num_views * H * W), float(background), dtype=dtype, device=self.device)
        out = out.index_copy(1, pix, vals)
        return out.view(B, self.num_views, H, W)

    # ------------------------------------------------------------------ io
    def to(self, device: torch.device | str) -> LiftMap:
        """A copy of the map on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return LiftMap(self.kind, mv(self.pix_to_elem), mv(self.bary), mv(self.faces), self.num_elems, mv(self.images))

    def state(self) -> dict[str, Any]:
        """Plain-tensor dict of the map (what :meth:`save` writes)."""
        return {"format": LIFT_FORMAT_VERSION, "kind": self.kind, "pix_to_elem": self.pix_to_elem.cpu(),
                "bary": None if self.bary is None else self.bary.cpu(),
                "faces": None if self.faces is None else self.faces.cpu(), "num_elems": self.num_elems,
                "images": None if self.images is None else self.images.cpu()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the map with torch.save, atomically (a reader never sees half a file)."""
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LiftMap:
        """Read a map written by :meth:`save`; a bad file raises ValueError naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LiftMap.load: no lift map file at {path}")
        try:
            d = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated / not a torch file
            raise ValueError(f"LiftMap.load: {path} is not a readable lift map ({type(e).__name__}: {e})") from e
        if not isinstance(d, dict) or d.get("format") != LIFT_FORMAT_VERSION:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"LiftMap.load: {path} has format {got!r}, expected {LIFT_FORMAT_VERSION}")
        missing = [k for k in ("kind", "pix_to_elem", "bary", "faces", "num_elems") if k not in d]
        if missing:
            raise ValueError(f"LiftMap.load: {path} lacks keys {missing}")
        try:
            return cls(d["kind"], d["pix_to_elem"], d["bary"], d["faces"], d["num_elems"], d.get("images"))
        except ValueError as e:
            raise ValueError(f"LiftMap.load: {path}: {e}") from e


# ---------------------------------------------------------------------- construction
def mesh_lift_map(pix_to_face: torch.Tensor, bary: torch.Tensor, faces: torch.Tensor, num_verts: int,
                  images: torch.Tensor | None = None) -> LiftMap:
    """A mesh LiftMap from per-view fragments (N, H, W) face ids and (N, H, W, 3) barycentrics."""
    return LiftMap("mesh", pix_to_face, bary, faces, num_verts, images)


def points_lift_map(pix_to_point: torch.Tensor, num_points: int, images: torch.Tensor | None = None) -> LiftMap:
    """A point LiftMap from per-view nearest point ids (N, H, W)."""
    return LiftMap("points", pix_to_point, None, None, num_points, images)


# ---------------------------------------------------------------------- disk cache
def _feed(h: hashlib._Hash, x: Any) -> None:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(x, (list, tuple)):
        h.update(f"L{len(x)}[".encode())
        for y in x:
            _feed(h, y)
        h.update(b"]")
    elif isinstance(x, dict):
        h.update(f"D{len(x)}{{".encode())
        for k in sorted(x, key=str):
            _feed(h, str(k))
            _feed(h, x[k])
        h.update(b"}")
    elif isinstance(x, float):
        h.update(f"F{x!r};".encode())
    elif isinstance(x, (bool, int, str)) or x is None:
        h.update(f"{type(x).__name__}:{x!r};".encode())
    else:
        raise TypeError(f"lift_map_key: cannot hash a {type(x).__name__} key part")


def lift_map_key(*key_parts: Any) -> str:
    """sha256 hex key of tensors (dtype, shape, bytes), numbers, strings and nested lists/dicts, plus the format version."""
    h = hashlib.sha256()
    _feed(h, ("lift_map", LIFT_FORMAT_VERSION))
    for part in key_parts:
        _feed(h, part)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """The zoo's lift-map cache, ``lift_maps`` under the one cache root ($ZOO_HOME, else ~/.cache/hoi-zoo)."""
    return paths.cache_dir("lift_maps")


def cached_lift_map(key_parts: Sequence[Any], builder: Callable[[], LiftMap],
                    cache_dir: str | os.PathLike | None = None) -> LiftMap:
    """The LiftMap for ``key_parts``: read from ``cache_dir`` if present, else ``builder()`` written there.

    The file is ``<cache_dir>/<sha256 of key_parts>.pt``. A corrupt or stale file is rebuilt
    with a warning; a cache directory that cannot be written only warns.
    """
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = d / f"{lift_map_key(*key_parts)}.pt"
    if path.is_file():
        try:
            return LiftMap.load(path)
        except (ValueError, OSError) as e:
            warnings.warn(f"lift map cache file {path} is unreadable, rebuilding it: {e}", stacklevel=2)
    lm = builder()
    if not isinstance(lm, LiftMap):
        raise TypeError(f"cached_lift_map: builder must return a LiftMap, got {type(lm).__name__}")
    try:
        lm.save(path)
    except OSError as e:
        warnings.warn(f"could not write lift map cache {path}: {e}", stacklevel=2)
    return lm
