"""pytorch3d reference backend: the same views and fragments as the CPU-fast path, rendered by pytorch3d.

Settings are InteractVLM's: ``FoVPerspectiveCameras(R, T)`` from
:func:`zoo.render.cameras.view_cameras`; meshes through ``MeshRasterizer`` with
``faces_per_pixel=1``, ``blur_radius=0`` (render_mesh_utils.py); points through
``PointsRasterizer`` with a fixed NDC radius and ``points_per_pixel=10``, composited with
``AlphaCompositor`` (utils_obj_pc.py). On CPU ``bin_size=0`` (naive rasterization; the
coarse-to-fine path is CUDA-only). pytorch3d is imported inside the functions, so importing
:mod:`zoo.render` never loads it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.render.cameras import FOV_DEG, view_cameras
from zoo.render.points import PointFragments

__all__ = ["p3d_mesh_fragments", "p3d_points_fragments", "p3d_render_points"]


def _cameras(views: Sequence[Sequence[float]], device: torch.device):
    from pytorch3d.renderer import FoVPerspectiveCameras

    R, T = view_cameras(views, device=device)
    return FoVPerspectiveCameras(R=R, T=T, fov=FOV_DEG, device=device)


def _bin_size(device: torch.device) -> int | None:
    return None if device.type == "cuda" else 0


def p3d_mesh_fragments(verts: torch.Tensor, faces: torch.Tensor, views: Sequence[Sequence[float]], image_size: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pix_to_face (N, H, W) long (-1 background), bary (N, H, W, 3), zbuf (N, H, W) of a mesh from each view."""
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes

    dev = verts.device
    n = len(views)
    cams = _cameras(views, dev)
    settings = RasterizationSettings(image_size=int(image_size), blur_radius=0.0, faces_per_pixel=1,
                                     bin_size=_bin_size(dev))
    mesh = Meshes(verts=[verts.detach().float()] * n, faces=[faces.long().to(dev)] * n)
    frags = MeshRasterizer(cameras=cams, raster_settings=settings)(mesh)
    p2f = frags.pix_to_face[..., 0].long()
    # Meshes packs the n copies one after another; bring face ids back to the single mesh.
    F = faces.shape[0]
    p2f = torch.where(p2f >= 0, p2f - torch.arange(n, device=dev).view(n, 1, 1) * F, p2f)
    bary = frags.bary_coords[..., 0, :].float()
    bary = torch.where((p2f >= 0)[..., None], bary, torch.zeros_like(bary))
    return p2f, bary, frags.zbuf[..., 0].float()


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
