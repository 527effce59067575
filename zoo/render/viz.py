"""Contact visualisation: a body rendered from several sides, coloured by per-vertex contact.

``contact_views_image`` returns a uint8 grid (rows: prediction, then ground truth if given;
columns: front, back, left, right) for W&B logging; ``contact_views_png`` writes the same
grid to a PNG atomically. Bodies are taken as Y-up, facing +Z (SMPL's canonical frame).

For Render-Localize-Lift models: ``mask_grid_image`` shows the rendered views with the
predicted and ground-truth masks overlaid, and ``points_views_image`` a point cloud
rendered through a multi-view renderer, coloured by predicted and ground-truth scores.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from zoo.core.atomic import atomic_write_image
from zoo.render.cameras import intrinsics, look_at_opencv, world_to_camera
from zoo.render.raster import render_mesh

__all__ = ["contact_colors", "contact_views_image", "contact_views_png", "VIEW_AZIMUTHS", "mask_grid_image",
           "points_views_image"]

# Degrees about +Y; 0 looks at the body's front (+Z side).
VIEW_AZIMUTHS = {"front": 0.0, "back": 180.0, "left": 90.0, "right": 270.0}
_GREY = torch.tensor([0.78, 0.78, 0.78])
_RED = torch.tensor([0.90, 0.10, 0.10])


def contact_colors(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Per-vertex colours (V, 3): grey at 0, red at 1, linear ramp for probabilities in between."""
    p = torch.as_tensor(np.asarray(values, dtype=np.float32)).clamp(0, 1).view(-1, 1)
    return (1 - p) * _GREY + p * _RED


def _as_tensor(a, name: str, shape_tail: tuple[int, ...] | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a))
    if shape_tail is not None and tuple(t.shape[1:]) != shape_tail:
        raise ValueError(f"contact views: {name} must be (N, {', '.join(map(str, shape_tail))}), got {tuple(t.shape)}")
    return t


def _view_names(views: int) -> list[tuple[str, float]]:
    if views <= 0:
        raise ValueError(f"contact views: views must be >= 1, got {views}")
    named = list(VIEW_AZIMUTHS.items())
    if views <= 4:
        return named[:views]
    return [(f"az{a:.0f}", a) for a in np.linspace(0.0, 360.0, views, endpoint=False)]


def contact_views_image(verts, faces, pred, gt=None, views: int = 4, size: int = 256,
                        title: str | None = None) -> np.ndarray:
    """Render the body from ``views`` sides coloured by ``pred`` (and ``gt`` in a second row).

    Args:
        verts: (V, 3) vertices in metres, Y up. faces: (F, 3).
        pred: (V,) contact probabilities or 0/1 labels. gt: (V,) 0/1 labels or None.
        views: number of views (front, back, left, right for <= 4; evenly spaced beyond).
        size: side of each view in pixels. title: optional caption above the grid.

    Returns:
        uint8 array (H, W, 3).
    """
    v = _as_tensor(verts, "verts", (3,)).float()
    f = _as_tensor(faces, "faces", (3,)).long()
    nv = v.shape[0]
    rows = [("pred", _as_tensor(pred, "pred").float().reshape(-1))]
    if gt is not None:
        rows.append(("gt", _as_tensor(gt, "gt").float().reshape(-1)))
    for name, vals in rows:
        if vals.shape[0] != nv:
            raise ValueError(f"contact views: {name} has {vals.shape[0]} values, expected one per vertex ({nv})")
    centre = (v.max(0).values + v.min(0).values) / 2
    radius = float((v - centre).norm(dim=-1).max().clamp(min=1e-6))
    dist = 3.0 * radius
    # Focal length so that the bounding sphere fills ~90% of the view at distance `dist`.
    focal = 0.45 * size * math.sqrt(dist ** 2 - radius ** 2) / radius
    K = intrinsics(focal, focal, size / 2, size / 2)
    header = 24 if title else 0
    grid = np.full((header + size * len(rows), size * len(_view_names(views)), 3), 255, np.uint8)
    for r, (_, vals) in enumerate(rows):
        cols = contact_colors(vals)
        for c, (_, az) in enumerate(_view_names(views)):
            a = math.radians(az)
            eye = centre + dist * torch.tensor([math.sin(a), 0.0, math.cos(a)])
            R, t = look_at_opencv(eye, centre)
            img = render_mesh(world_to_camera(v, R, t), f, K, size, size, vertex_colors=cols)
            grid[header + r * size: header + (r + 1) * size, c * size:(c + 1) * size] = \
                (img.numpy() * 255 + 0.5).astype(np.uint8)
    _annotate(grid, title, [n for n, _ in rows], [n for n, _ in _view_names(views)], size, header)
    return grid


def _annotate(grid: np.ndarray, title: str | None, row_names: list[str], col_names: list[str], size: int,
              header: int) -> None:
    """Write the title and small row/column labels into the grid in place (PIL's built-in font)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(grid)
    d = ImageDraw.Draw(im)
    if title:
        d.text((4, 6), str(title), fill=(0, 0, 0))
    for r, rn in enumerate(row_names):
        for c, cn in enumerate(col_names):
            d.text((c * size + 4, header + r * size + 4), f"{rn} {cn}", fill=(40, 40, 40))
    grid[...] = np.asarray(im)


def contact_views_png(verts, faces, pred, gt=None, path: str | Path = "contact.png", views: int = 4,
                      size: int = 256, title: str | None = None) -> Path:
    """Write ``contact_views_image(...)`` as a PNG at ``path`` atomically; returns the path."""
    grid = contact_views_image(verts, faces, pred, gt, views=views, size=size, title=title)
    return atomic_write_image(path, grid)


def _tile(img: torch.Tensor, size: int) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float image in [0, 1] -> uint8 (size, size, 3), bilinear resize."""
    t = img.detach().float().cpu()
    if t.shape[0] == 3 and t.shape[-1] != 3:
        t = t.permute(1, 2, 0)
    if t.shape[:2] != (size, size):
        t = torch.nn.functional.interpolate(t.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                            align_corners=False)[0].permute(1, 2, 0)
    return (t.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def _overlay(view: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A (3, H, W) view with a (H, W) mask in [0, 1] blended in red; mask values < 0 (ignored pixels) are dimmed."""
    m = mask.detach().float().cpu()
    if m.shape != view.shape[-2:]:
        m = torch.nn.functional.interpolate(m[None, None], size=view.shape[-2:], mode="nearest")[0, 0]
    ignored = m < 0
    a = m.clamp(0, 1)[None]
    # grey base so the normal-map colours of the render cannot be mistaken for the red mask
    v = view.detach().float().cpu()
    grey = (0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2])[None].expand(3, -1, -1) * 0.6 + 0.35
    out = grey * (1 - a) + _RED.view(3, 1, 1) * a
    return torch.where(ignored[None], torch.ones_like(out), out)


def mask_grid_image(views: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor | None = None, size: int = 192,
                    title: str | None = None) -> np.ndarray:
    """Rows: rendered views, predicted masks, ground-truth masks (if given); one column per view.

    Args:
        views: (nV, 3, H, W) renders in [0, 1]. pred: (nV, h, w) mask probabilities.
        gt: (nV, h, w) target masks in [0, 1], -1 where ignored (render background).
        size: side of each tile in pixels. title: optional caption.
    Returns:
        uint8 array (H, W, 3).
    """
    if views.ndim != 4 or views.shape[1] != 3:
        raise ValueError(f"mask_grid_image: views must be (nV, 3, H, W), got {tuple(views.shape)}")
    nv = views.shape[0]
    for name, m in (("pred", pred), ("gt", gt)):
        if m is not None and (m.ndim != 3 or m.shape[0] != nv):
            raise ValueError(f"mask_grid_image: {name} must be ({nv}, h, w), got {tuple(m.shape)}")
    if gt is not None:  # show the prediction only where the target is defined (the rendered object)
        g = gt.detach().float().cpu()
        if g.shape[-2:] != pred.shape[-2:]:
            g = torch.nn.functional.interpolate(g[:, None], size=pred.shape[-2:], mode="nearest")[:, 0]
        pred = torch.where(g < 0, g, pred.detach().float().cpu())
    rows = [("view", [views[i] for i in range(nv)]), ("pred", [_overlay(views[i], pred[i]) for i in range(nv)])]
    if gt is not None:
        rows.append(("gt", [_overlay(views[i], gt[i]) for i in range(nv)]))
    header = 24 if title else 0
    grid = np.full((header + size * len(rows), size * nv, 3), 255, np.uint8)
    for r, (_, tiles) in enumerate(rows):
        for c, t in enumerate(tiles):
            grid[header + r * size: header + (r + 1) * size, c * size:(c + 1) * size] = _tile(t, size)
    _annotate(grid, title, [n for n, _ in rows], [f"v{c}" for c in range(nv)], size, header)
    return grid


def points_views_image(renderer, points: torch.Tensor, pred, gt=None, size: int = 192,
                       title: str | None = None) -> np.ndarray:
    """A point cloud through ``renderer`` (a MultiViewRenderer) coloured by ``pred`` (and ``gt`` in a second row)."""
    pts = torch.as_tensor(points).float()
    rows = [("pred", pred)] + ([("gt", gt)] if gt is not None else [])
    header = 24 if title else 0
    grid = None
    for r, (name, vals) in enumerate(rows):
        v = _as_tensor(vals, name).float().reshape(-1)
        if v.shape[0] != pts.shape[0]:
            raise ValueError(f"points_views_image: {name} has {v.shape[0]} values, expected one per point ({pts.shape[0]})")
        images, _ = renderer.render_points(pts, colors=contact_colors(v))
        if grid is None:
            grid = np.full((header + size * len(rows), size * images.shape[0], 3), 255, np.uint8)
        for c in range(images.shape[0]):
            grid[header + r * size: header + (r + 1) * size, c * size:(c + 1) * size] = _tile(images[c], size)
    _annotate(grid, title, [n for n, _ in rows], [f"v{c}" for c in range(grid.shape[1] // size)], size, header)
    return grid
