"""pytorch3d reference backend: the same views and fragments as the CPU-fast path, rendered by pytorch3d.

Settings are InteractVLM's: ``FoVPerspectiveCameras(R, T)`` from
:func:`zoo.render.cameras.view_cameras`; meshes through ``MeshRasterizer`` with
``faces_per_pixel=1``, ``blur_radius=0`` (render_mesh_utils.py); points through
``PointsRasterizer`` with a fixed NDC radius and ``points_per_pixel=10``, composited with
``AlphaCompositor`` (utils_obj_pc.py). Mesh images are shaded by pytorch3d too
(:func:`p3d_render_mesh`): ``HardPhongShader`` with one ``PointLights`` per view
(render_mesh_utils.py ``render_mesh``), or the unlit vertex colours. On CPU ``bin_size=0`` (naive rasterization; the
coarse-to-fine path is CUDA-only). pytorch3d is imported inside the functions, so importing
:mod:`zoo.render` never loads it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.render.cameras import FOV_DEG, view_cameras
from zoo.render.points import PointFragments

__all__ = ["p3d_mesh_fragments", "p3d_render_mesh", "p3d_points_fragments", "p3d_render_points"]


def _cameras(views: Sequence[Sequence[float]], device: torch.device):
    from pytorch3d.renderer import FoVPerspectiveCameras

    R, T = view_cameras(views, device=device)
    return FoVPerspectiveCameras(R=R, T=T, fov=FOV_DEG, device=device)


def _bin_size(device: torch.device) -> int | None:
    return None if device.type == "cuda" else 0


def _rasterize_mesh(verts: torch.Tensor, faces: torch.Tensor, views: Sequence[Sequence[float]], image_size: int,
                    colors: torch.Tensor | None = None):
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings, TexturesVertex
    from pytorch3d.structures import Meshes

    dev = verts.device
    n = len(views)
    cams = _cameras(views, dev)
    settings = RasterizationSettings(image_size=int(image_size), blur_radius=0.0, faces_per_pixel=1,
                                     bin_size=_bin_size(dev))
    tex = None if colors is None else TexturesVertex(verts_features=[colors.detach().float().to(dev)] * n)
    mesh = Meshes(verts=[verts.detach().float()] * n, faces=[faces.long().to(dev)] * n, textures=tex)
    return mesh, cams, MeshRasterizer(cameras=cams, raster_settings=settings)(mesh)


def _unpack_fragments(frags, n: int, F: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p2f = frags.pix_to_face[..., 0].long()
    # Meshes packs the n copies one after another; bring face ids back to the single mesh.
    p2f = torch.where(p2f >= 0, p2f - torch.arange(n, device=dev).view(n, 1, 1) * F, p2f)
    bary = frags.bary_coords[..., 0, :].float()
    bary = torch.where((p2f >= 0)[..., None], bary, torch.zeros_like(bary))
    return p2f, bary, frags.zbuf[..., 0].float()


def p3d_mesh_fragments(verts: torch.Tensor, faces: torch.Tensor, views: Sequence[Sequence[float]], image_size: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pix_to_face (N, H, W) long (-1 background), bary (N, H, W, 3), zbuf (N, H, W) of a mesh from each view."""
    _, _, frags = _rasterize_mesh(verts, faces, views, image_size)
    return _unpack_fragments(frags, len(views), faces.shape[0], verts.device)


def p3d_render_mesh(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, views: Sequence[Sequence[float]],
                    image_size: int, shading: str = "phong", lights: Sequence[Sequence[float]] | None = None,
                    ambient: float = 0.5, diffuse: float = 0.3, specular: float = 0.2, shininess: float = 64.0,
                    background: float = 1.0) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Images (N, 3, H, W) of a mesh with vertex colours (V, 3), and its fragments as :func:`p3d_mesh_fragments`.

    ``shading="phong"``: pytorch3d's ``HardPhongShader`` with grey ``PointLights`` (ambient,
    diffuse, specular colours, one location per view in ``lights``) and default ``Materials``
    but for ``shininess``; ``"unlit"``: the interpolated vertex colours. One rasterization serves
    both the images and the fragments.
    """
    from pytorch3d.renderer import BlendParams, HardPhongShader, Materials, PointLights

    dev = verts.device
    n = len(views)
    mesh, cams, frags = _rasterize_mesh(verts, faces, views, image_size, colors)
    bg = (float(background),) * 3
    if shading == "phong":
        if lights is None or len(lights) != n:
            raise ValueError(f"p3d_render_mesh: phong shading needs one light location per view ({n}), got {lights!r}")
        pl = PointLights(device=dev, location=torch.as_tensor(lights, dtype=torch.float32, device=dev),
                         ambient_color=((ambient,) * 3,), diffuse_color=((diffuse,) * 3,),
                         specular_color=((specular,) * 3,))
        shader = HardPhongShader(device=dev, cameras=cams, lights=pl, materials=Materials(device=dev, shininess=shininess),
                                 blend_params=BlendParams(background_color=bg))
        images = shader(frags, mesh)[..., :3]
    elif shading == "unlit":
        texels = mesh.sample_textures(frags)[..., 0, :]
        bgt = torch.tensor(bg, device=dev)
        images = torch.where((frags.pix_to_face[..., :1] >= 0), texels, bgt)
    else:
        raise ValueError(f"p3d_render_mesh: shading must be 'phong' or 'unlit', got {shading!r}")
    return images.permute(0, 3, 1, 2).contiguous().float(), _unpack_fragments(frags, n, faces.shape[0], dev)


def p3d_points_fragments(points: torch.Tensor, views: Sequence[Sequence[float]], image_size: int, radius: float,
                         points_per_pixel: int = 10) -> PointFragments:
    """PointFragments (N, H, W, K) of a point cloud (P, 3) from each view (point ids index ``points``)."""
    from pytorch3d.renderer import PointsRasterizationSettings, PointsRasterizer
    from pytorch3d.structures import Pointclouds

    dev = points.device
    n = len(views)
    cams = _cameras(views, dev)
    settings = PointsRasterizationSettings(image_size=int(image_size), radius=float(radius),
                                           points_per_pixel=int(points_per_pixel), bin_size=_bin_size(dev))
    pc = Pointclouds(points=[points.detach().float()] * n)
    frags = PointsRasterizer(cameras=cams, raster_settings=settings)(pc)
    idx = frags.idx.long()
    P = points.shape[0]
    idx = torch.where(idx >= 0, idx - torch.arange(n, device=dev).view(n, 1, 1, 1) * P, idx)
    return PointFragments(idx, frags.zbuf.float(), frags.dists.float())


def p3d_render_points(points: torch.Tensor, colors: torch.Tensor, views: Sequence[Sequence[float]], image_size: int,
                      radius: float, points_per_pixel: int = 10, background: float = 1.0) -> torch.Tensor:
    """Images (N, 3, H, W) of a coloured point cloud by pytorch3d's PointsRenderer + AlphaCompositor."""
    from pytorch3d.renderer import AlphaCompositor, PointsRasterizationSettings, PointsRasterizer, PointsRenderer
    from pytorch3d.structures import Pointclouds

    dev = points.device
    n = len(views)
    settings = PointsRasterizationSettings(image_size=int(image_size), radius=float(radius),
                                           points_per_pixel=int(points_per_pixel), bin_size=_bin_size(dev))
    renderer = PointsRenderer(rasterizer=PointsRasterizer(cameras=_cameras(views, dev), raster_settings=settings),
                              compositor=AlphaCompositor(background_color=(background,) * 3))
    pc = Pointclouds(points=[points.detach().float()] * n, features=[colors.float().to(dev)] * n)
    return renderer(pc)[..., :3].permute(0, 3, 1, 2).contiguous()
