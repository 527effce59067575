"""A vectorised CPU point-cloud rasterizer with pytorch3d's ``PointsRasterizer`` semantics, and NOCS colours.

Semantics matched (pytorch3d ``rasterize_points``): each point is a disc of radius ``r``
given in NDC units, where the image spans [-1, 1] across its width, so a disc is
``r * S / 2`` pixels wide in radius on an S x S image (InteractVLM passes a fixed 0.05, i.e.
25.6 px at 1024^2 -- preprocess_data/generate_piad_obj_heatmap.py, ``FIXED_RADIUS``). A
pixel is covered by a point when the squared NDC distance from the pixel centre to the
projected point is strictly below ``r^2`` and the point's view depth is >= 0; a pixel keeps
its ``K`` nearest points by depth (InteractVLM: ``points_per_pixel=10``, and its pixel->point
map takes the nearest one). ``dists`` are those squared NDC distances, ``zbuf`` the view
depths, -1 where fewer than K points cover the pixel.

The image of a point cloud follows pytorch3d's ``PointsRenderer`` with ``AlphaCompositor``
(what InteractVLM renders): alpha ``a_k = 1 - dists_k / r^2`` and colour
``sum_k a_k prod_{l<k} (1 - a_l) c_k`` on covered pixels, the background colour elsewhere.

Speed: every (point, pixel) candidate in the point's disc bounding box is tested at once
(points of one cloud share a disc size, so one offset grid serves all), several images
(views x clouds) in the same pass; points are visited nearest-first, so the K nearest per pixel
come from one stable sort of the candidates by pixel.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["PointFragments", "rasterize_points", "composite_points", "normalize_unit_sphere", "nocs_colors"]


class PointFragments(NamedTuple):
    """Point rasterizer output for M images: nearest-first point ids (-1 empty), depths and squared NDC distances."""

    idx: torch.Tensor  # (M, H, W, K) long
    zbuf: torch.Tensor  # (M, H, W, K) float32
    dists: torch.Tensor  # (M, H, W, K) float32


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """Centre a cloud (P, 3) or batch (B, P, 3) on its mean and scale its farthest point to distance 1.

    As InteractVLM's ``normalize_point_cloud`` (preprocess_data/utils_obj_pc.py).
    """
    if points.ndim not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f"normalize_unit_sphere: points must be (P, 3) or (B, P, 3), got {tuple(points.shape)}")
    c = points - points.mean(-2, keepdim=True)
    r = c.norm(dim=-1).amax(-1)[..., None, None]
    if (r <= 0).any():
        raise ValueError("normalize_unit_sphere: a point cloud has all its points at one position")
    return c / r


def nocs_colors(points: torch.Tensor) -> torch.Tensor:
    """NOCS-like colours (P, 3): each axis min-max normalised to [0, 1], then mapped to [0.1, 0.9].

    As InteractVLM's ``get_pc_color_by_position``; a flat axis (max == min) gets 0.5.
    """
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"nocs_colors: points must be (P, 3), got {tuple(points.shape)}")
    lo, hi = points.amin(0), points.amax(0)
    span = hi - lo
    unit = torch.where(span > 0, (points - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.full_like(points, 0.5))
    return unit * 0.8 + 0.1


def rasterize_points(
    points_screen: torch.Tensor,
    image_id: torch.Tensor | None,
    num_images: int,
    H: int,
    W: int,
    radius: float,
    points_per_pixel: int = 1,
    chunk: int = 1 << 22,
) -> PointFragments:
    """Rasterize projected points as discs into ``num_images`` images at once.

    Args:
        points_screen: (P, 3) pixel x (column), pixel y (row) -- pixel centres at +0.5 --
            and view depth, e.g. from :func:`zoo.render.cameras.project_opencv`.
        image_id: (P,) long, which image each point belongs to (None: all in image 0).
            Point ids in the output are indices into ``points_screen``.
        radius: disc radius in NDC units (the image width spans 2), as pytorch3d.
        points_per_pixel: K nearest points kept per pixel.
        chunk: most candidate (point, pixel) pairs tested at once.

    Returns:
        PointFragments with (num_images, H, W, K) tensors.
    """
    if points_screen.ndim != 2 or points_screen.shape[-1] != 3:
        raise ValueError(f"rasterize_points: points_screen must be (P, 3), got {tuple(points_screen.shape)}")
    if H <= 0 or W <= 0 or H != W:
        raise ValueError(f"rasterize_points: needs a square image with positive size, got H={H}, W={W}")
    if radius <= 0:
        raise ValueError(f"rasterize_points: radius must be positive, got {radius}")
    if points_per_pixel < 1:
        raise ValueError(f"rasterize_points: points_per_pixel must be >= 1, got {points_per_pixel}")
    dev = points_screen.device
    P = points_screen.shape[0]
    if image_id is None:
        image_id = torch.zeros(P, dtype=torch.long, device=dev)
    image_id = image_id.to(device=dev, dtype=torch.long)
    if image_id.shape != (P,):
        raise ValueError(f"rasterize_points: image_id must be ({P},), got {tuple(image_id.shape)}")
    if P and (image_id.min() < 0 or image_id.max() >= num_images):
        raise ValueError(f"rasterize_points: image_id must lie in [0, {num_images})")
    K = int(points_per_pixel)
    M = int(num_images)
    p = points_screen.detach().to(torch.float32)
    # Work in NDC-scaled pixel units so the coverage test is pytorch3d's dist2 < r^2.
    to_ndc = 2.0 / W
    r_px = radius / to_ndc
    r2 = float(radius) ** 2
    ok = (p[:, 2] >= 0) & torch.isfinite(p).all(1)
    pid = torch.nonzero(ok).squeeze(1)
    idx = torch.full((M * H * W * K,), -1, dtype=torch.long, device=dev)
    zbuf = torch.full((M * H * W * K,), -1.0, dtype=torch.float32, device=dev)
    dists = torch.full((M * H * W * K,), -1.0, dtype=torch.float32, device=dev)
    out_shape = (M, H, W, K)
    if pid.numel() == 0:
        return PointFragments(idx.view(out_shape), zbuf.view(out_shape), dists.view(out_shape))
    # Visit points nearest-first (ties: lower id), so candidates come out depth-ordered and the
    # K nearest per pixel need only one stable sort by pixel.
    pid = pid[torch.argsort(p[pid, 2], stable=True)]
    u, v, z = p[pid, 0], p[pid, 1], p[pid, 2]
    # Pixel c is covered only if |c + 0.5 - u| < r_px, so c lies in (u - 0.5 - r_px, u - 0.5 + r_px).
    x0 = torch.floor(u - 0.5 - r_px).long() + 1
    y0 = torch.floor(v - 0.5 - r_px).long() + 1
    n = int(2 * r_px) + 2  # widest possible span of covered pixel indices
    off = torch.arange(n, device=dev)
    per = max(1, chunk // (n * n))
    cand_pix, cand_z, cand_p, cand_d = [], [], [], []
    for c0 in range(0, pid.numel(), per):
        sl = slice(c0, c0 + per)
        px = x0[sl, None, None] + off.view(1, 1, n)  # (m, 1, n)
        py = y0[sl, None, None] + off.view(1, n, 1)  # (m, n, 1)
        dx = (px.float() + 0.5 - u[sl, None, None]) * to_ndc
        dy = (py.float() + 0.5 - v[sl, None, None]) * to_ndc
        d2 = dx * dx + dy * dy
        inside = (d2 < r2) & (px >= 0) & (px < W) & (py >= 0) & (py < H)
        nz = torch.nonzero(inside, as_tuple=True)
        if nz[0].numel() == 0:
            continue
        pi = nz[0] + c0
        img = image_id[pid[pi]]
        cand_pix.append((img * H + y0[pi] + nz[1]) * W + x0[pi] + nz[2])
        cand_z.append(z[pi])
        cand_p.append(pid[pi])
        cand_d.append(d2[inside])
    if not cand_pix:
        return PointFragments(idx.view(out_shape), zbuf.view(out_shape), dists.view(out_shape))
    cp, cz, cpt, cd = torch.cat(cand_pix), torch.cat(cand_z), torch.cat(cand_p), torch.cat(cand_d)
    if K == 1:
        # Nearest only: two scatter-mins (depth, then the lower point id among depth ties).
        zmin = torch.full((M * H * W,), float("inf"), device=dev).scatter_reduce_(0, cp, cz, "amin")
        win = cz <= zmin[cp]
        big = torch.iinfo(torch.long).max
        best = torch.full((M * H * W,), big, dtype=torch.long, device=dev).scatter_reduce_(0, cp[win], cpt[win], "amin")
        cov = torch.nonzero(best != big).squeeze(1)
        # The winner's own candidate row gives its distance.
        sel = torch.nonzero(win & (cpt == best[cp])).squeeze(1)
        idx[cov] = best[cov]
        zbuf[cov] = zmin[cov]
        dists[cp[sel]] = cd[sel]
        return PointFragments(idx.view(out_shape), zbuf.view(out_shape), dists.view(out_shape))
    # K nearest: candidates are already in (depth, id) order; a stable sort by pixel ranks them per pixel.
    o = torch.argsort(cp, stable=True)
    cp, cz, cpt, cd = cp[o], cz[o], cpt[o], cd[o]
    first = torch.ones_like(cp, dtype=torch.bool)
    first[1:] = cp[1:] != cp[:-1]
    start = torch.cummax(torch.where(first, torch.arange(cp.numel(), device=dev), torch.zeros_like(cp)), 0).values
    rank = torch.arange(cp.numel(), device=dev) - start
    keep = rank < K
    slot = cp[keep] * K + rank[keep]
    idx[slot] = cpt[keep]
    zbuf[slot] = cz[keep]
    dists[slot] = cd[keep]
    return PointFragments(idx.view(out_shape), zbuf.view(out_shape), dists.view(out_shape))


def composite_points(frags: PointFragments, colors: torch.Tensor, radius: float,
                     background: float | tuple[float, float, float] = 1.0) -> torch.Tensor:
    """Alpha-composite point colours (P, 3) into images (M, 3, H, W), as pytorch3d's AlphaCompositor.

    ``frags.idx`` indexes rows of ``colors``. Pixels no point covers take ``background``.
    """
    if colors.ndim != 2 or colors.shape[-1] != 3:
        raise ValueError(f"composite_points: colors must be (P, 3), got {tuple(colors.shape)}")
    idx = frags.idx
    valid = idx >= 0
    alpha = torch.where(valid, 1.0 - frags.dists / (radius * radius), torch.zeros_like(frags.dists))
    # Transmittance before each layer: product of (1 - alpha) over the nearer layers.
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1]], -1), -1)
    w = alpha * trans  # (M, H, W, K)
    col = colors.to(torch.float32)[idx.clamp(min=0)]  # (M, H, W, K, 3)
    img = (w[..., None] * col).sum(-2)
    bg = torch.as_tensor(background, dtype=torch.float32, device=img.device).expand(3)
    img = torch.where(valid[..., :1], img, bg)
    return img.permute(0, 3, 1, 2).contiguous()
