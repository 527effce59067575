"""InteractVLM's multi-view renderer: fixed views of a body mesh or an object point cloud, with lift maps.

``MultiViewRenderer`` renders a mesh coloured by its vertex normals ``(n + 1) / 2`` or a
unit-sphere point cloud coloured NOCS-like, from a fixed view set
(:data:`zoo.render.cameras.VIEW_SETS`), and returns the images together with the
:class:`~zoo.render.lift.LiftMap` that lifts per-view masks back to vertices/points.
Meshes are Phong-shaded by default, as InteractVLM renders its body views
(``preprocess_data/render_mesh_utils.py::render_mesh``: pytorch3d ``HardPhongShader``, one
grey point light per view, ambient 0.5, diffuse 0.3, specular 0.2, default material of
shininess 64): per pixel, with the barycentric interpolation of the vertex colours ``c``,
positions ``p`` and normals ``n`` (renormalised), light direction ``l`` and view direction
``v`` (both unit, from ``p``), ``colour = (ambient + diffuse max(n.l, 0)) c + specular
(max(v.r, 0) [n.l > 0])^shininess`` with ``r = 2 (n.l) n - l``; ``shading="unlit"`` gives
the plain interpolated colours ``c``. :func:`build_lift_map` gives the map alone. The canonical body it shows comes posed from
:mod:`zoo.body.canonical`.

Backends: ``cpu_fast`` (:mod:`zoo.render.raster` and :mod:`zoo.render.points`, vectorised
torch on any device) and ``pytorch3d`` (:mod:`zoo.render.p3d`, the reference). Results are
moved to the input's device. Mesh maps are cached on disk (``cache_dir``, default
:func:`zoo.render.lift.default_cache_dir`) since the canonical body never changes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from zoo.body.canonical import canonical_body
from zoo.body.mesh import vertex_normals
from zoo.core.registry import register
from zoo.render.cameras import (
    VIEW_SET_POINT_RADIUS,
    camera_centers,
    camera_numbers,
    opencv_cameras,
    project_opencv,
    resolve_lights,
    resolve_views,
)
from zoo.render.lift import LiftMap, cached_lift_map, mesh_lift_map, points_lift_map
from zoo.render.points import PointFragments, composite_points, nocs_colors, normalize_unit_sphere, rasterize_points
from zoo.render.raster import rasterize

__all__ = ["MultiViewRenderer", "mesh_fragments", "points_fragments", "shade_mesh", "shade_mesh_phong",
           "build_lift_map", "POINTS_PER_PIXEL", "SHADINGS"]

POINTS_PER_PIXEL = 10  # InteractVLM's PointsRasterizationSettings(points_per_pixel=10)
BACKENDS = ("cpu_fast", "pytorch3d")
SHADINGS = ("phong", "unlit")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; expected one of {BACKENDS}")


def _check_mesh(verts: torch.Tensor, faces: torch.Tensor, where: str) -> None:
    if not isinstance(verts, torch.Tensor) or verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"{where}: verts must be a (V, 3) tensor, got "
                         f"{tuple(verts.shape) if isinstance(verts, torch.Tensor) else type(verts).__name__}")
    if not isinstance(faces, torch.Tensor) or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{where}: faces must be a (F, 3) tensor, got "
                         f"{tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts.shape[0]):
        raise ValueError(f"{where}: faces index vertices outside [0, {verts.shape[0]})")


def _check_points(points: torch.Tensor, where: str, batched: bool = False) -> None:
    want = 3 if batched else 2
    shape = "(B, P, 3)" if batched else "(P, 3)"
    if not isinstance(points, torch.Tensor) or points.ndim != want or points.shape[-1] != 3 or points.shape[-2] == 0:
        raise ValueError(f"{where}: points must be a {shape} tensor, got "
                         f"{tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__}")


def mesh_fragments(verts: torch.Tensor, faces: torch.Tensor, views: Sequence[Sequence[float]], image_size: int,
                   backend: str = "cpu_fast") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-view pix_to_face (N, H, W), bary (N, H, W, 3), zbuf (N, H, W) of a mesh, on the CPU."""
    _check_mesh(verts, faces, "mesh_fragments")
    _check_backend(backend)
    verts = verts.detach().float().cpu()
    faces = faces.long().cpu()
    if backend == "pytorch3d":
        from zoo.render.p3d import p3d_mesh_fragments

        return p3d_mesh_fragments(verts, faces, views, image_size)
    R, t, K = opencv_cameras(views, image_size)
    outs = [rasterize(project_opencv(verts @ R[i].T + t[i], K), faces, image_size, image_size)
            for i in range(R.shape[0])]
    return (torch.stack([o.pix_to_face for o in outs]), torch.stack([o.bary for o in outs]),
            torch.stack([o.zbuf for o in outs]))


def points_fragments(points: torch.Tensor, views: Sequence[Sequence[float]], image_size: int, radius: float,
                     points_per_pixel: int = 1, backend: str = "cpu_fast") -> PointFragments:
    """PointFragments (N_views, H, W, K) of one cloud (P, 3) or (B*N_views, ...) of a batch (B, P, 3), on the CPU.

    For a batch, image ``b * N_views + v`` is cloud b from view v and point ids index the
    cloud's own points.
    """
    _check_backend(backend)
    pts = points.detach().float().cpu()
    batched = pts.ndim == 3
    if not batched:
        pts = pts[None]
    B, P = pts.shape[:2]
    if backend == "pytorch3d":
        from zoo.render.p3d import p3d_points_fragments

        fr = [p3d_points_fragments(pts[b], views, image_size, radius, points_per_pixel) for b in range(B)]
        return PointFragments(*(torch.cat([getattr(f, k) for f in fr]) for k in ("idx", "zbuf", "dists")))
    R, t, K = opencv_cameras(views, image_size)
    nV = R.shape[0]
    cam = torch.einsum("vij,bpj->bvpi", R, pts) + t[None, :, None, :]  # (B, nV, P, 3)
    screen = project_opencv(cam, K).reshape(-1, 3)
    image_id = torch.arange(B * nV).repeat_interleave(P)
    fr = rasterize_points(screen, image_id, B * nV, image_size, image_size, radius, points_per_pixel)
    # Ids index the flattened (B, nV, P) candidates; bring them back to each cloud's own points.
    idx = torch.where(fr.idx >= 0, fr.idx % P, fr.idx)
    return PointFragments(idx, fr.zbuf, fr.dists)


def shade_mesh(pix_to_face: torch.Tensor, bary: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor,
               background: float = 1.0) -> torch.Tensor:
    """Unlit images (N, 3, H, W): barycentric interpolation of vertex colours (V, 3); background elsewhere."""
    n, H, W = pix_to_face.shape
    out = torch.full((n * H * W, 3), float(background), dtype=torch.float32)
    flat = pix_to_face.reshape(-1)
    pix = torch.nonzero(flat >= 0).squeeze(1)
    corner = faces.long()[flat[pix]]
    out[pix] = (colors.float()[corner] * bary.reshape(-1, 3)[pix][..., None]).sum(1)
    return out.view(n, H, W, 3).permute(0, 3, 1, 2).contiguous()


def shade_mesh_phong(pix_to_face: torch.Tensor, bary: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                     colors: torch.Tensor, lights: torch.Tensor, eyes: torch.Tensor, normals: torch.Tensor | None = None,
                     ambient: float = 0.5, diffuse: float = 0.3, specular: float = 0.2, shininess: float = 64.0,
                     background: float = 1.0) -> torch.Tensor:
    """Phong-shaded images (N, 3, H, W) of a mesh from per-view fragments (pytorch3d ``HardPhongShader``'s model).

    Args:
        pix_to_face, bary: (N, H, W) face ids (-1 background) and (N, H, W, 3) barycentrics.
        verts, faces: the mesh in world coordinates, (V, 3) and (F, 3).
        colors: (V, 3) vertex colours. normals: (V, 3) vertex normals (default: area-weighted,
            :func:`zoo.body.mesh.vertex_normals`, as pytorch3d's ``verts_normals``).
        lights: (N, 3) point-light location per view; eyes: (N, 3) camera centre per view (world).
        ambient, diffuse, specular: grey light intensities; shininess: the specular exponent.

    The formula is in the module docstring. Plain torch, no gradients needed.
    """
    n, H, W = pix_to_face.shape
    out = torch.full((n * H * W, 3), float(background), dtype=torch.float32)
    flat = pix_to_face.reshape(-1)
    pix = torch.nonzero(flat >= 0).squeeze(1)
    view = torch.div(pix, H * W, rounding_mode="floor")
    f = faces.long()
    v = verts.detach().float()
    nrm = vertex_normals(v, f) if normals is None else normals.detach().float()
    corner = f[flat[pix]]  # (M, 3)
    b = bary.reshape(-1, 3)[pix].float()[..., None]  # (M, 3, 1)
    tex = (colors.float()[corner] * b).sum(1)
    pos = (v[corner] * b).sum(1)
    nn = torch.nn.functional.normalize((nrm[corner] * b).sum(1), dim=-1, eps=1e-6)
    to_light = torch.nn.functional.normalize(lights.float()[view] - pos, dim=-1, eps=1e-6)
    to_eye = torch.nn.functional.normalize(eyes.float()[view] - pos, dim=-1, eps=1e-6)
    cos = (nn * to_light).sum(-1)
    refl = 2 * cos[:, None] * nn - to_light
    spec = ((to_eye * refl).sum(-1).clamp(min=0) * (cos > 0).float()) ** shininess
    out[pix] = (ambient + diffuse * cos.clamp(min=0))[:, None] * tex + specular * spec[:, None]
    return out.view(n, H, W, 3).permute(0, 3, 1, 2).contiguous()


def build_lift_map(kind: Literal["mesh", "points"], geometry: torch.Tensor, views: Sequence[Sequence[float]],
                   image_size: int, faces: torch.Tensor | None = None, backend: str = "cpu_fast",
                   radius: float = 0.05) -> LiftMap:
    """Render ``geometry`` (mesh vertices with ``faces``, or points) from ``views`` and return its LiftMap.

    Points are used as given (normalise them first if needed). No images, no disk cache
    (:class:`MultiViewRenderer` adds both).
    """
    if kind == "mesh":
        if faces is None:
            raise ValueError("build_lift_map: kind='mesh' needs faces (F, 3)")
        p2f, bary, _ = mesh_fragments(geometry, faces, views, image_size, backend)
        return mesh_lift_map(p2f, bary, faces, geometry.shape[0])
    if kind == "points":
        frags = points_fragments(geometry, views, image_size, radius, 1, backend)
        return points_lift_map(frags.idx[..., 0], geometry.shape[0])
    raise ValueError(f"build_lift_map: kind must be 'mesh' or 'points', got {kind!r}")


@register("renderer", "multiview")
class MultiViewRenderer(nn.Module):
    """Fixed-view renderer of InteractVLM's Render-Localize-Lift: images plus pixel -> vertex/point lift maps.

    Args:
        view_set: "body" or "object" (:data:`zoo.render.cameras.VIEW_SETS`), used when ``views`` is None.
        views: explicit list of (dist, elev, azim, x, y) views.
        image_size: side of the square renders (InteractVLM: 1024).
        backend: "cpu_fast" (vectorised torch) or "pytorch3d" (reference).
        point_radius: point disc radius in NDC units; None takes the view set's
            (:data:`zoo.render.cameras.VIEW_SET_POINT_RADIUS`: object 0.05, lemon 0.03), else 0.05.
        cache_dir: where mesh lift maps are cached (default :func:`zoo.render.lift.default_cache_dir`,
            ``lift_maps`` under $ZOO_HOME or ~/.cache/hoi-zoo).
        background: grey level of background pixels in the images.
        shading: how mesh images are shaded: "phong" (InteractVLM's body renders) or "unlit"
            (the interpolated vertex colours). Point clouds are never lit.
        lights: (x, y, z) point-light location (world) per view; None takes the view set's
            (:data:`zoo.render.cameras.VIEW_SET_LIGHTS`: body (0,0,3) (0,0,-3) (0,0,-3) (0,0,3))
            or, for explicit views, a light at each camera.
        ambient, diffuse, specular: grey light intensities (InteractVLM: 0.5, 0.3, 0.2).
        shininess: specular exponent (pytorch3d's default material: 64).
    """

    def __init__(
        self,
        view_set: str = "body",
        views: list[list[float]] | None = None,
        image_size: int = 1024,
        backend: Literal["cpu_fast", "pytorch3d"] = "cpu_fast",
        point_radius: float | None = None,
        cache_dir: str | None = None,
        background: float = 1.0,
        shading: Literal["phong", "unlit"] = "phong",
        lights: list[list[float]] | None = None,
        ambient: float = 0.5,
        diffuse: float = 0.3,
        specular: float = 0.2,
        shininess: float = 64.0,
    ) -> None:
        super().__init__()
        _check_backend(backend)
        if int(image_size) != image_size or image_size <= 0:
            raise ValueError(f"MultiViewRenderer: image_size must be a positive int, got {image_size!r}")
        if point_radius is None:
            point_radius = VIEW_SET_POINT_RADIUS.get(view_set, 0.05) if views is None else 0.05
        if point_radius <= 0:
            raise ValueError(f"MultiViewRenderer: point_radius must be positive, got {point_radius}")
        if shading not in SHADINGS:
            raise ValueError(f"MultiViewRenderer: shading must be one of {SHADINGS}, got {shading!r}")
        for name, x in (("ambient", ambient), ("diffuse", diffuse), ("specular", specular), ("shininess", shininess)):
            if not float(x) >= 0:
                raise ValueError(f"MultiViewRenderer: {name} must be >= 0, got {x!r}")
        self.view_set = view_set
        self.views = resolve_views(view_set, views)
        self.image_size = int(image_size)
        self.backend = backend
        self.point_radius = float(point_radius)
        self.cache_dir = cache_dir
        self.background = float(background)
        self.shading = shading
        try:
            self.lights = resolve_lights(view_set, views, lights, len(self.views))
        except ValueError as e:
            raise ValueError(f"MultiViewRenderer: {e}") from e
        self.ambient, self.diffuse, self.specular = float(ambient), float(diffuse), float(specular)
        self.shininess = float(shininess)

    @property
    def num_views(self) -> int:
        """Number of views rendered."""
        return len(self.views)

    def camera_numbers(self) -> torch.Tensor:
        """Per-view camera input of the lifter (N_views, 5), see :func:`zoo.render.cameras.camera_numbers`."""
        return camera_numbers(self.views)

    def extra_repr(self) -> str:
        return f"views={self.views}, image_size={self.image_size}, backend={self.backend}, shading={self.shading}"

    def _shading_key(self) -> list:
        if self.shading == "unlit":
            return ["unlit"]
        return ["phong", [list(x) for x in self.lights], self.ambient, self.diffuse, self.specular, self.shininess]

    # ------------------------------------------------------------------ meshes
    def render_mesh(self, verts: torch.Tensor, faces: torch.Tensor, colors: str | torch.Tensor = "normals",
                    cache: bool = True) -> tuple[torch.Tensor, LiftMap]:
        """Images (N_views, 3, H, W) in [0, 1] and the mesh LiftMap, on ``verts``' device.

        ``colors``: "normals" ((n + 1) / 2 of area-weighted vertex normals) or a (V, 3)
        tensor; the images are shaded as ``shading`` says. With ``cache`` the map and images
        are kept on disk under a key of the geometry, colours, views, size, backend,
        background and shading (with its lights and intensities).
        """
        _check_mesh(verts, faces, "MultiViewRenderer.render_mesh")
        dev = verts.device
        v = verts.detach().float().cpu()
        f = faces.long().cpu()
        if isinstance(colors, str):
            if colors != "normals":
                raise ValueError(f"MultiViewRenderer.render_mesh: colors must be 'normals' or a (V, 3) tensor, got {colors!r}")
            col = (vertex_normals(v, f) + 1) / 2
        else:
            if not isinstance(colors, torch.Tensor) or colors.shape != (v.shape[0], 3):
                raise ValueError(f"MultiViewRenderer.render_mesh: colors must be ({v.shape[0]}, 3), got "
                                 f"{tuple(colors.shape) if isinstance(colors, torch.Tensor) else type(colors).__name__}")
            col = colors.detach().float().cpu()

        def build() -> LiftMap:
            if self.backend == "pytorch3d":
                from zoo.render.p3d import p3d_render_mesh

                images, (p2f, bary, _) = p3d_render_mesh(
                    v, f, col, self.views, self.image_size, self.shading, self.lights, self.ambient, self.diffuse,
                    self.specular, self.shininess, self.background)
                return mesh_lift_map(p2f, bary, f, v.shape[0], images)
            p2f, bary, _ = mesh_fragments(v, f, self.views, self.image_size, self.backend)
            if self.shading == "phong":
                images = shade_mesh_phong(p2f, bary, v, f, col, torch.tensor(self.lights), camera_centers(self.views),
                                          None, self.ambient, self.diffuse, self.specular, self.shininess,
                                          self.background)
            else:
                images = shade_mesh(p2f, bary, f, col, self.background)
            return mesh_lift_map(p2f, bary, f, v.shape[0], images)

        if cache:
            key = ("mesh", v, f, colors if isinstance(colors, str) else col, [list(x) for x in self.views],
                   self.image_size, self.backend, self.background, self._shading_key())
            lm = cached_lift_map(key, build, self.cache_dir)
        else:
            lm = build()
        if dev.type != "cpu":
            lm = lm.to(dev)
        return lm.images, lm

    def render_body(self, body_model) -> tuple[torch.Tensor, LiftMap]:
        """The canonical body (zoo BodyModel) in normal colours, shaded: images and LiftMap (cached on disk).

        The same as ``render_mesh(*zoo.body.canonical.canonical_body(body_model))``: the body
        package poses the model, this renders the mesh it gives.
        """
        verts, faces = canonical_body(body_model)
        return self.render_mesh(verts, faces, "normals", cache=True)

    # ------------------------------------------------------------------ points
    def _point_colors(self, pts: torch.Tensor, colors: str | torch.Tensor, where: str) -> torch.Tensor:
        if isinstance(colors, str):
            if colors != "nocs":
                raise ValueError(f"{where}: colors must be 'nocs' or a (P, 3) tensor, got {colors!r}")
            return nocs_colors(pts)
        if not isinstance(colors, torch.Tensor) or colors.shape != pts.shape:
            raise ValueError(f"{where}: colors must be {tuple(pts.shape)}, got "
                             f"{tuple(colors.shape) if isinstance(colors, torch.Tensor) else type(colors).__name__}")
        return colors.detach().float().cpu()

    def _render_points(self, pts: torch.Tensor, cols: list[torch.Tensor]) -> tuple[torch.Tensor, list[LiftMap]]:
        """Images (B, nV, 3, H, W) and maps of clouds (B, P, 3) (already normalised, CPU)."""
        B, P = pts.shape[:2]
        nV, S = self.num_views, self.image_size
        fr = points_fragments(pts, self.views, S, self.point_radius, POINTS_PER_PIXEL, self.backend)
        if self.backend == "pytorch3d":
            from zoo.render.p3d import p3d_render_points

            images = torch.stack([p3d_render_points(pts[b], cols[b], self.views, S, self.point_radius,
                                                    POINTS_PER_PIXEL, self.background) for b in range(B)])
        else:
            # Offsetting ids per cloud lets one compositing pass serve the whole batch.
            off = (torch.arange(B).repeat_interleave(nV) * P).view(-1, 1, 1, 1)
            gidx = torch.where(fr.idx >= 0, fr.idx + off, fr.idx)
            images = composite_points(PointFragments(gidx, fr.zbuf, fr.dists), torch.cat(cols), self.point_radius,
                                      self.background).view(B, nV, 3, S, S)
        near = fr.idx[..., 0].view(B, nV, S, S)
        maps = [points_lift_map(near[b], P, images[b]) for b in range(B)]
        return images, maps

    def render_points(self, points: torch.Tensor, colors: str | torch.Tensor = "nocs",
                      normalize: bool = True) -> tuple[torch.Tensor, LiftMap]:
        """Images (N_views, 3, H, W) and the point LiftMap of a cloud (P, 3), on ``points``' device.

        With ``normalize`` the cloud is first centred and scaled to the unit sphere
        (:func:`zoo.render.points.normalize_unit_sphere`). ``colors``: "nocs" or (P, 3).
        """
        _check_points(points, "MultiViewRenderer.render_points")
        dev = points.device
        pts = points.detach().float().cpu()
        if normalize:
            pts = normalize_unit_sphere(pts)
        cols = self._point_colors(pts, colors, "MultiViewRenderer.render_points")
        images, maps = self._render_points(pts[None], [cols])
        lm = maps[0] if dev.type == "cpu" else maps[0].to(dev)
        return images[0].to(dev), lm

    def render_points_batch(self, points: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, list[LiftMap]]:
        """Images (B, N_views, 3, H, W) and one LiftMap per cloud of a batch (B, P, 3), NOCS colours."""
        _check_points(points, "MultiViewRenderer.render_points_batch", batched=True)
        dev = points.device
        pts = points.detach().float().cpu()
        if normalize:
            pts = normalize_unit_sphere(pts)
        cols = [nocs_colors(p) for p in pts]
        images, maps = self._render_points(pts, cols)
        if dev.type != "cpu":
            maps = [m.to(dev) for m in maps]
        return images.to(dev), maps

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, list[LiftMap]]:
        """Same as :meth:`render_points_batch`."""
        return self.render_points_batch(points)
