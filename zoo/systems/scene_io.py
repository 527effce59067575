"""What a fitting system writes per scene: the placed object and the body as a .glb, pictures, a JSON.

A fitting result (per sample) carries::

    R (3, 3), t (3,), scale (0-d)          the object pose: v_cam = scale * R v_obj + t
    object_verts (M, 3), object_faces       the placed object in the camera frame
    body_verts (V, 3), body_faces           the body in the camera frame
    object_silhouette (H, W) bool           the placed object's hard mask at the image size
    objective {term: float}                 the final objective terms

:func:`write_scene` writes into ``<root>/<name>/``:

    scene.glb      body (light blue) and object (tan) as two meshes; contact probabilities, where the sample
                   has them, shade the vertices towards red (trimesh's glTF export)
    overlay.png    the input photo | the scene rendered with the photo's camera over it
    views.png      the scene from the side (90 degrees about the vertical axis) and from above
    result.json    object pose (R, t, scale), category, objective terms, the image's K
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.core.atomic import atomic_path, atomic_write_text
from zoo.render.raster import merge_meshes, render_mesh

__all__ = ["write_scene", "summary", "scene_colors", "scene_views"]

BODY_RGB = (0.62, 0.74, 0.90)
OBJECT_RGB = (0.85, 0.72, 0.52)
CONTACT_RGB = (0.90, 0.12, 0.10)


def _colors(n: int, base: tuple[float, float, float], contact: torch.Tensor | None) -> torch.Tensor:
    col = torch.tensor(base, dtype=torch.float32).expand(n, 3).clone()
    if contact is not None and contact.numel() == n:
        w = contact.detach().float().clamp(0, 1)[:, None]
        col = (1 - w) * col + w * torch.tensor(CONTACT_RGB)
    return col


def scene_colors(result: dict, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex colours of the body and the object (contacts towards red where the sample has them)."""
    def pick(key: str):
        for v in (result.get(key), sample.get(key), sample.get(f"gt_{key}")):
            if v is not None:
                return v
        return None

    hc, oc = pick("human_contact"), pick("object_contact")
    return (_colors(result["body_verts"].shape[0], BODY_RGB, hc),
            _colors(result["object_verts"].shape[0], OBJECT_RGB, oc))


def _rot(axis: str, deg: float) -> torch.Tensor:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "y":
        return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32)
    return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float32)


def scene_views(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, size: int = 256) -> np.ndarray:
    """Side (90 degrees about the camera's vertical axis) and top views of a camera-frame scene, side by side."""
    c = (verts.min(0).values + verts.max(0).values) / 2
    extent = float((verts.max(0).values - verts.min(0).values).norm()) or 1.0
    f = size * 1.2
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float32)
    tiles = []
    for R in (_rot("y", -90.0), _rot("x", -90.0)):
        v = (verts - c) @ R.T + torch.tensor([0.0, 0.0, extent * 1.3])
        img = render_mesh(v, faces, K, size, size, vertex_colors=colors)
        tiles.append((img.clamp(0, 1).numpy() * 255).astype(np.uint8))
    return np.concatenate(tiles, 1)


def _png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")


def summary(result: dict, sample: dict) -> dict[str, Any]:
    """A JSON-able record of one fitted scene (pose, scale, category, objective terms)."""
    return {
        "name": str(sample.get("name")),
        "category": sample.get("category"),
        "R": result["R"].detach().cpu().double().tolist(),
        "t": result["t"].detach().cpu().double().tolist(),
        "scale": float(result["scale"]),
        "objective": dict(result.get("objective", {})),
    }


def write_scene(root: str | Path, result: dict, sample: dict) -> Path:
    """Write one scene's outputs (module docstring) into ``<root>/<sample name>/``; returns the folder."""
    import trimesh

    name = str(sample.get("name") or "scene")
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    bcol, ocol = scene_colors(result, sample)
    bv, bf = result["body_verts"].detach().float().cpu(), result["body_faces"].long().cpu()
    ov, of = result["object_verts"].detach().float().cpu(), result["object_faces"].long().cpu()
    scene = trimesh.Scene()
    for key, v, f, col in (("body", bv, bf, bcol), ("object", ov, of, ocol)):
        rgba = np.concatenate([(col.numpy() * 255).astype(np.uint8), np.full((len(v), 1), 255, np.uint8)], 1)
        scene.add_geometry(trimesh.Trimesh(v.numpy(), f.numpy(), vertex_colors=rgba, process=False), node_name=key,
                           geom_name=key)
    with atomic_path(folder / "scene.glb") as tmp:
        tmp.write_bytes(scene.export(file_type="glb"))
    verts, faces, _ = merge_meshes([(bv, bf), (ov, of)])
    cols = torch.cat([bcol, ocol])
    image = sample["image"]
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    H, W = img.shape[:2]
    photo = torch.as_tensor(img, dtype=torch.float32) / 255.0
    render = render_mesh(verts, faces, sample["K"].float().cpu(), H, W, vertex_colors=cols, background=photo)
    over = (0.35 * photo + 0.65 * render).clamp(0, 1)
    _png(folder / "overlay.png", np.concatenate([img.astype(np.uint8), (over.numpy() * 255).astype(np.uint8)], 1))
    _png(folder / "views.png", scene_views(verts, faces, cols, size=max(128, min(H, 384))))
    rec = summary(result, sample) | {"K": sample["K"].detach().cpu().double().tolist(), "image_size": [H, W]}
    atomic_write_text(folder / "result.json", json.dumps(rec, indent=1) + "\n")
    return folder
