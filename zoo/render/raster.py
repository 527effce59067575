"""A vectorised CPU triangle rasterizer (torch), one face per pixel with a z-buffer.

Conventions
-----------
* Screen space: ``verts_screen[:, 0]`` is the pixel column x, ``[:, 1]`` the pixel row y
  (origin top-left, y down), ``[:, 2]`` the depth (camera Z, larger = farther). Pixel
  ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)``.
* Cameras: OpenCV pinhole, ``X_cam = R @ X_world + t``, ``u = fx X/Z + cx``,
  ``v = fy Y/Z + cy``, Z > 0 in front of the camera (:mod:`zoo.render.cameras` builds and
  projects them). With pytorch3d's ``cameras_from_opencv_projection`` this gives the same
  image as pytorch3d's ``MeshRasterizer`` (faces_per_pixel=1, blur 0).
* Outputs follow pytorch3d's fragments: ``pix_to_face`` -1 and ``zbuf`` -1 on background,
  barycentrics 0 there.

Speed: faces are grouped by the size of their pixel bounding box (sizes 1, 2, 3, 4, 6,
8, 12, ...), and each group tests all its candidate pixels at once in bounded chunks, so
a 13.8k-face body rasterizes in tens of milliseconds on one CPU core.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from zoo.body.mesh import vertex_normals
from zoo.core.registry import register
from zoo.render.cameras import project_opencv

__all__ = ["Fragments", "rasterize", "render_mesh", "merge_meshes", "CpuRasterizer"]


class Fragments(NamedTuple):
    """Rasterizer output: face id per pixel (-1 background), barycentrics and depth (-1 background)."""

    pix_to_face: torch.Tensor  # (H, W) long
    bary: torch.Tensor  # (H, W, 3) float32
    zbuf: torch.Tensor  # (H, W) float32


def _size_levels(limit: int) -> torch.Tensor:
    """Bucket edges 1, 2, 3, 4, 6, 8, 12, 16, ... up to ``limit`` (at most 1.5x waste per axis)."""
    levels, a = [1, 2, 3], 4
    while levels[-1] < limit:
        levels += [a, a * 3 // 2]
        a *= 2
    return torch.tensor(sorted(set(levels)), dtype=torch.long)


def rasterize(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    H: int,
    W: int,
    perspective_correct: bool = True,
    near: float = 1e-6,
    chunk: int = 1 << 21,
) -> Fragments:
    """Rasterize a triangle mesh given in screen space; the nearest face wins each pixel.

    Args:
        verts_screen: (V, 3) pixel x, pixel y, depth.
        faces: (F, 3) vertex indices.
        H, W: image size in pixels.
        perspective_correct: barycentrics and depth interpolated in 1/Z (pinhole camera,
            depth = camera Z); ``False`` for orthographic / plain screen-space depth.
        near: faces with a vertex at depth <= near are dropped when ``perspective_correct``.
        chunk: most candidate pixels tested at once (bounds peak memory).

    Returns:
        Fragments(pix_to_face (H, W) long, bary (H, W, 3), zbuf (H, W)). Ties in depth
        go to the lower face index.
    """
    if verts_screen.ndim != 2 or verts_screen.shape[-1] != 3:
        raise ValueError(f"rasterize: verts_screen must be (V, 3), got {tuple(verts_screen.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be (F, 3), got {tuple(faces.shape)}")
    if H <= 0 or W <= 0:
        raise ValueError(f"rasterize: image size must be positive, got H={H}, W={W}")
    dev = verts_screen.device
    faces = faces.to(device=dev, dtype=torch.long)
    if faces.numel() and (faces.min() < 0 or faces.max() >= verts_screen.shape[0]):
        raise ValueError(f"rasterize: faces index vertices outside [0, {verts_screen.shape[0]})")
    v = verts_screen.detach().to(torch.float32)
    tri = v[faces]  # (F, 3, 3)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    xmin = torch.ceil(x.min(1).values - 0.5).clamp(min=0)
    xmax = torch.floor(x.max(1).values - 0.5).clamp(max=W - 1)
    ymin = torch.ceil(y.min(1).values - 0.5).clamp(min=0)
    ymax = torch.floor(y.max(1).values - 0.5).clamp(max=H - 1)
    ok = (area.abs() > 1e-12) & (xmax >= xmin) & (ymax >= ymin) & torch.isfinite(tri).flatten(1).all(1)
    if perspective_correct:
        ok &= z.min(1).values > near
    fidx = torch.nonzero(ok).squeeze(1)

    pix_to_face = torch.full((H * W,), -1, dtype=torch.long, device=dev)
    zbuf = torch.full((H * W,), -1.0, dtype=torch.float32, device=dev)
    bary = torch.zeros((H * W, 3), dtype=torch.float32, device=dev)
    if fidx.numel() == 0:
        return Fragments(pix_to_face.view(H, W), bary.view(H, W, 3), zbuf.view(H, W))

    xmin_l, ymin_l = xmin[fidx].long(), ymin[fidx].long()
    bw = xmax[fidx].long() - xmin_l + 1
    bh = ymax[fidx].long() - ymin_l + 1
    levels = _size_levels(max(H, W)).to(dev)
    ibw = torch.searchsorted(levels, bw)
    ibh = torch.searchsorted(levels, bh)
    key = ibw * len(levels) + ibh
    order = torch.argsort(key, stable=True)
    ukeys, counts = torch.unique_consecutive(key[order], return_counts=True)

    cand_pix, cand_z, cand_f = [], [], []
    start = 0
    for k, cnt in zip(ukeys.tolist(), counts.tolist(), strict=True):
        sel_all = order[start:start + cnt]
        start += cnt
        Bw, Bh = int(levels[k // len(levels)]), int(levels[k % len(levels)])
        per = max(1, chunk // (Bw * Bh))
        ox = torch.arange(Bw, device=dev).view(1, 1, Bw)
        oy = torch.arange(Bh, device=dev).view(1, Bh, 1)
        for c0 in range(0, cnt, per):
            sel = sel_all[c0:c0 + per]
            f = fidx[sel]
            px = xmin_l[sel].view(-1, 1, 1) + ox  # (n, 1, Bw)
            py = ymin_l[sel].view(-1, 1, 1) + oy  # (n, Bh, 1)
            inbox = (px < (xmin_l[sel] + bw[sel]).view(-1, 1, 1)) & (py < (ymin_l[sel] + bh[sel]).view(-1, 1, 1))
            w0, w1, w2 = _edge_weights(x[f], y[f], area[f], px.float() + 0.5, py.float() + 0.5)
            # A small negative tolerance closes hairline cracks on shared edges from rounding;
            # the z-test decides between the two faces that then both claim the pixel.
            inside = inbox & (w0 >= -1e-5) & (w1 >= -1e-5) & (w2 >= -1e-5)
            nz = torch.nonzero(inside, as_tuple=True)
            if nz[0].numel() == 0:
                continue
            fi = nz[0]
            zz = z[f]
            a0, a1, a2 = w0[inside], w1[inside], w2[inside]
            if perspective_correct:
                depth = 1.0 / (a0 / zz[fi, 0] + a1 / zz[fi, 1] + a2 / zz[fi, 2])
            else:
                depth = a0 * zz[fi, 0] + a1 * zz[fi, 1] + a2 * zz[fi, 2]
            pxx = (xmin_l[sel][fi] + nz[2])
            pyy = (ymin_l[sel][fi] + nz[1])
            cand_pix.append(pyy * W + pxx)
            cand_z.append(depth)
            cand_f.append(f[fi])
    if not cand_pix:
        return Fragments(pix_to_face.view(H, W), bary.view(H, W, 3), zbuf.view(H, W))
    cp, cz, cf = torch.cat(cand_pix), torch.cat(cand_z), torch.cat(cand_f)
    zmin = torch.full((H * W,), float("inf"), device=dev).scatter_reduce_(0, cp, cz, "amin")
    win = cz <= zmin[cp]
    big = torch.iinfo(torch.long).max
    best = torch.full((H * W,), big, dtype=torch.long, device=dev).scatter_reduce_(0, cp[win], cf[win], "amin")
    covered = torch.nonzero(best != big).squeeze(1)
    fw = best[covered]
    pix_to_face[covered] = fw
    zbuf[covered] = zmin[covered]
    cx = (covered % W).float() + 0.5
    cy = torch.div(covered, W, rounding_mode="floor").float() + 0.5
    w0, w1, w2 = _edge_weights(x[fw], y[fw], area[fw], cx, cy)
    b = torch.stack([w0, w1, w2], -1)
    if perspective_correct:
        b = b / z[fw]
    b = b.clamp(min=0)
    bary[covered] = b / b.sum(-1, keepdim=True).clamp(min=1e-12)
    return Fragments(pix_to_face.view(H, W), bary.view(H, W, 3), zbuf.view(H, W))


def _edge_weights(x: torch.Tensor, y: torch.Tensor, area: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor):
    """Screen-space barycentrics of points (cx, cy) in triangles with corner coordinates x, y (n, 3)."""
    shape = (-1,) + (1,) * (cx.ndim - 1)
    x0, x1, x2 = (x[:, i].view(shape) for i in range(3))
    y0, y1, y2 = (y[:, i].view(shape) for i in range(3))
    inv = 1.0 / area.view(shape)
    w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) * inv
    w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) * inv
    return w0, w1, 1.0 - w0 - w1


def merge_meshes(meshes: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate meshes [(verts, faces), ...] into one; also returns each face's mesh index (F,)."""
    vs, fs, ids, off = [], [], [], 0
    for i, (v, f) in enumerate(meshes):
        vs.append(v)
        fs.append(f.long() + off)
        ids.append(torch.full((f.shape[0],), i, dtype=torch.long))
        off += v.shape[0]
    return torch.cat(vs), torch.cat(fs), torch.cat(ids)


def render_mesh(
    verts_cam: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    H: int,
    W: int,
    vertex_colors: torch.Tensor | None = None,
    face_colors: torch.Tensor | None = None,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    ambient: float = 0.35,
    diffuse: float = 0.65,
    light_dir: Sequence[float] = (0.3, -0.5, -1.0),
    smooth: bool = True,
    return_fragments: bool = False,
):
    """Shade a camera-space mesh into an RGB image (H, W, 3) in [0, 1] with two-sided Lambert lighting.

    Colours come from ``vertex_colors`` (V, 3) interpolated with barycentrics, else
    ``face_colors`` (F, 3), else light grey. ``light_dir`` points from the scene towards the
    light in camera coordinates (default: from above-left of the camera). ``background`` is
    a colour (3,) or an image (H, W, 3). With ``return_fragments=True`` returns
    ``(image, Fragments)``.
    """
    faces = faces.long()
    frags = rasterize(project_opencv(verts_cam, K), faces, H, W)
    p2f, bary = frags.pix_to_face, frags.bary
    bg = torch.as_tensor(background, dtype=torch.float32)
    img = bg.expand(H, W, 3).clone() if bg.ndim == 1 else bg.to(torch.float32).clone()
    if img.shape != (H, W, 3):
        raise ValueError(f"render_mesh: background must be (3,) or ({H}, {W}, 3), got {tuple(bg.shape)}")
    mask = p2f >= 0
    if not mask.any():
        return (img, frags) if return_fragments else img
    f = p2f[mask]
    b = bary[mask]
    corner = faces[f]  # (P, 3)
    if vertex_colors is not None:
        col = (vertex_colors.float()[corner] * b[..., None]).sum(1)
    elif face_colors is not None:
        col = face_colors.float()[f]
    else:
        col = torch.full((f.shape[0], 3), 0.75)
    vc = verts_cam.detach().float()
    if smooth:
        n = (vertex_normals(vc, faces)[corner] * b[..., None]).sum(1)
    else:
        tri = vc[faces[f]]
        n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    light = torch.tensor(light_dir, dtype=torch.float32)
    light = light / light.norm()
    shade = ambient + diffuse * (n @ light).abs()
    img[mask] = (col * shade[:, None]).clamp(0, 1)
    return (img, frags) if return_fragments else img


@register("renderer", "cpu_raster")
class CpuRasterizer(nn.Module):
    """Registered renderer wrapper: shades camera-space meshes with the CPU rasterizer (no gradients).

    ``forward(verts_cam (V,3), faces (F,3), K (3,3), vertex_colors=None)`` returns an
    (H, W, 3) image; ``fragments(...)`` returns the raw per-pixel face ids and barycentrics.
    """

    def __init__(self, image_size: int = 256, ambient: float = 0.35, diffuse: float = 0.65,
                 background: list[float] | None = None, smooth: bool = True):
        super().__init__()
        if image_size <= 0:
            raise ValueError(f"cpu_raster: image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.ambient = ambient
        self.diffuse = diffuse
        self.background = list(background) if background is not None else [1.0, 1.0, 1.0]
        self.smooth = smooth

    def fragments(self, verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor) -> Fragments:
        """Face id, barycentrics and depth per pixel of a camera-space mesh."""
        s = self.image_size
        return rasterize(project_opencv(verts_cam, K), faces, s, s)

    def forward(self, verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor,
                vertex_colors: torch.Tensor | None = None) -> torch.Tensor:
        """Shaded RGB image (H, W, 3) in [0, 1]."""
        s = self.image_size
        return render_mesh(verts_cam, faces, K, s, s, vertex_colors=vertex_colors, background=self.background,
                           ambient=self.ambient, diffuse=self.diffuse, smooth=self.smooth)
