"""Synthetic scene folders for joint human-object reconstruction, with known object pose and contact.

Each scene poses the SMPL body in a synthetic-DAMON scenario (:mod:`zoo.data.synthetic.damon`):
``reach`` (one hand holds a ball, box or bottle of the category library) or ``sit`` (the hips
rest on a stool), places the category's library mesh (:func:`zoo.data.scenes.object_mesh`)
with a random yaw and scale so that the intended body part touches it (pressed 4 to 12 mm in
for the hand, 15 to 30 mm for the hips), frames both with a camera, and renders the image with
the zoo's CPU rasterizer (body, object and a checkerboard floor composed by depth).

Written under ``out`` (the format of ``docs/reconstruction_inputs.md``, read by
:class:`zoo.data.scenes.HOIScenes`)::

    scene_00000/ image.png, human_mask.png, object_mask.png   visible pixels of each instance (occlusion handled)
                 body.npz      pose (72,), shape (10,), transl (3,), cam_k (3,3), model_type "smpl", gender "neutral"
                 object.obj    the category's library mesh, canonical (as object_mesh gives it)
                 object.json   {"category": NAME}
                 gt.json       R, t, scale (library mesh -> camera frame: v_cam = scale * R @ v + t),
                               human_contact / object_contact (vertex ids), category, scenario, contact_eps
                 [contact_human.npy, contact_object.npy]   only with contact_files=True (soft ground truth)
    scenes.txt     the scene folder names, one a line, written last (all of them exist once it does)
    body_models/   the synthetic body model, when no model_dir is given

Ground-truth contact: a body vertex is in contact when its signed distance to the placed
object mesh (negative outside, penetration counted as contact) is at most ``contact_eps``
(2 cm); an object vertex is in contact when its distance to the body surface is at most
``contact_eps``. With ``contact_files=True`` the contact files hold soft probabilities
``clip((2 eps - d) / eps, 0, 1)`` of the same distances (1 within eps, 0 beyond 2 eps).

Deterministic: scene ``i`` draws from ``numpy.random.default_rng([seed, i])`` and every file has
the same bytes for the same seed; files are written atomically.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from zoo.body.mesh import vertex_normals
from zoo.core.atomic import atomic_write_bytes, atomic_write_text
from zoo.data.synthetic.damon import (
    Primitive,
    _camera,
    _ground_layer,
    _jitter_color,
    _load_body,
    _part_info,
    _place_along,
    _pose,
    _rot_y,
    backdrop,
    primitive_sdf,
)
from zoo.data.synthetic.files import save_npz_deterministic
from zoo.render.cameras import project_opencv
from zoo.render.raster import rasterize

__all__ = ["generate_scenes", "place_object", "cli", "HELD", "SEATS", "CategorySpec", "CATEGORIES", "object_library",
           "object_mesh", "INDEX_FILE"]

INDEX_FILE = "scenes.txt"  # the scene folder names, one a line, written last

# ------------------------------------------------------------------------------------------
# Category library (re-exported by zoo.data.scenes)
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CategorySpec:
    """A library category: the primitive it is (``kind``: sphere / box / cylinder), its canonical size in metres
    (``size``: sphere (radius,), box half-extents (x, y, z), cylinder (radius, half-height) with its axis along
    +Y), the typical scale of the canonical mesh (``scale``, 1.0: the mesh has the category's typical size) and
    the range of scales seen in practice (``scale_range``, what the synthetic generator draws from)."""

    name: str
    kind: str
    size: tuple[float, ...]
    scale: float = 1.0
    scale_range: tuple[float, float] = (0.8, 1.25)


CATEGORIES: dict[str, CategorySpec] = {
    "ball": CategorySpec("ball", "sphere", (0.11,)),
    "box": CategorySpec("box", "box", (0.15, 0.10, 0.12)),
    "bottle": CategorySpec("bottle", "cylinder", (0.04, 0.13)),
    "stool": CategorySpec("stool", "cylinder", (0.18, 0.23), scale_range=(0.9, 1.1)),
}


@cache
def _library_mesh(category: str) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    spec = CATEGORIES[category]
    if spec.kind == "sphere":
        m = trimesh.creation.icosphere(subdivisions=3, radius=spec.size[0])  # 1280 faces
    elif spec.kind == "box":
        m = trimesh.creation.box(extents=[2 * s for s in spec.size])
        v, f = trimesh.remesh.subdivide(m.vertices, m.faces)
        v, f = trimesh.remesh.subdivide(v, f)
        v, f = trimesh.remesh.subdivide(v, f)  # 768 faces
        m = trimesh.Trimesh(v, f, process=True)
    else:
        r, hh = spec.size
        m = trimesh.creation.cylinder(radius=r, height=2 * hh, sections=48)  # axis along +Z
        v, f = trimesh.remesh.subdivide(m.vertices, m.faces)  # 768 faces
        m = trimesh.Trimesh(v, f, process=True)
        m.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # axis -> +Y
    v = np.asarray(m.vertices, np.float64)
    v = v - (v.min(0) + v.max(0)) / 2
    v.setflags(write=False)
    f = np.asarray(m.faces, np.int64)
    f.setflags(write=False)
    return v, f


def object_library() -> dict[str, CategorySpec]:
    """The object categories of the library (name -> :class:`CategorySpec`); meshes via :func:`object_mesh`."""
    return dict(CATEGORIES)


def object_mesh(category: str) -> tuple[np.ndarray, np.ndarray]:
    """The canonical mesh of a library category: (verts (M, 3) float64 metres, centred at the bounding-box
    centre; faces (G, 3) int64), closed and consistently wound, built deterministically with trimesh.creation.
    Returns copies (the cached arrays stay untouched)."""
    if category not in CATEGORIES:
        raise KeyError(f"object_mesh: unknown category {category!r}; the library has {sorted(CATEGORIES)}")
    v, f = _library_mesh(category)
    return v.copy(), f.copy()


# ------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------

HELD = ("ball", "box", "bottle")  # categories a hand holds (scenario "reach")
SEATS = ("stool",)  # categories the hips rest on (scenario "sit")
_COLOR = {"ball": (0.20, 0.75, 0.25), "box": (0.80, 0.45, 0.15), "bottle": (0.15, 0.40, 0.85),
          "stool": (0.55, 0.35, 0.70)}


def place_object(verts_obj: np.ndarray, R: np.ndarray, t: np.ndarray, scale: float) -> np.ndarray:
    """Placed vertices ``scale * R @ v + t`` (rows: ``verts @ R.T * scale + t``) of canonical vertices (M, 3)."""
    return np.asarray(verts_obj) @ np.asarray(R).T * float(scale) + np.asarray(t)


def _try_place(rng, scenario: str, hint: dict, verts: np.ndarray, parts: dict) -> tuple[str, Primitive, float] | None:
    """(category, placed primitive in the world frame, scale) touching the scenario's part, or None."""
    u = rng.uniform
    cat = HELD[rng.integers(len(HELD))] if scenario == "reach" else SEATS[rng.integers(len(SEATS))]
    spec = CATEGORIES[cat]
    s = float(u(*spec.scale_range))
    size = np.asarray(spec.size, np.float64) * s
    if scenario == "reach":
        pen = u(0.004, 0.012)
        hand = parts["left_hand" if hint["hand"] == "l" else "right_hand"]
        d = verts[hand].mean(0) - verts[parts["torso"]].mean(0)
        d[1] *= 0.5
        pv = verts[hand]
        prim = Primitive(spec.kind, pv[np.argmax(pv @ d)].copy(), size, yaw=u(0, np.pi))
        ok = _place_along(prim, verts, hand, d, pen)
    else:
        pen = u(0.015, 0.03)
        hips = parts["hips"]
        hc = verts[hips].mean(0)
        prim = Primitive(spec.kind, np.array([hc[0], 0.0, hc[2] + u(-0.08, 0.0)]), size, yaw=u(0, np.pi))
        ok = _place_along(prim, verts, hips, np.array([0.0, -1.0, 0.0]), pen)
    if not ok or primitive_sdf(prim, verts).min() < -(pen + 0.03):
        return None
    return cat, prim, s


def _signed_distance(verts: np.ndarray, faces: np.ndarray, pts: np.ndarray, far: float) -> np.ndarray:
    """Signed distance (N,) of points to a closed mesh surface (libigl, sign by winding number), negative inside;
    points outside the mesh's bounding box grown by ``far`` get +inf."""
    import igl

    out = np.full(len(pts), np.inf)
    lo, hi = verts.min(0) - far, verts.max(0) + far
    near = np.flatnonzero(((pts >= lo) & (pts <= hi)).all(1))
    if near.size:
        s = igl.signed_distance(np.ascontiguousarray(pts[near], np.float64), np.ascontiguousarray(verts, np.float64),
                                np.ascontiguousarray(faces, np.int64),
                                sign_type=igl.SignedDistanceType.SIGNED_DISTANCE_TYPE_WINDING_NUMBER)[0]
        out[near] = s
    return out


def _surface_distance(verts: np.ndarray, faces: np.ndarray, pts: np.ndarray, far: float) -> np.ndarray:
    """Unsigned distance (N,) of points to the surface of the faces near them (libigl; inf beyond ``far``)."""
    import igl

    lo, hi = pts.min(0) - far, pts.max(0) + far
    keep = ((verts[faces] >= lo) & (verts[faces] <= hi)).all(2).any(1)
    out = np.full(len(pts), np.inf)
    if not keep.any():
        return out
    sq = igl.point_mesh_squared_distance(np.ascontiguousarray(pts, np.float64), np.ascontiguousarray(verts, np.float64),
                                         np.ascontiguousarray(faces[keep], np.int64))[0]
    d = np.sqrt(sq)
    out[d <= far] = d[d <= far]
    return out


def _render(rng, body_cam: np.ndarray, body_faces: torch.Tensor, obj_cam: np.ndarray, obj_faces: np.ndarray,
            obj_color: np.ndarray, ground: Primitive, Rc: np.ndarray, tc: np.ndarray, K: np.ndarray, size: int):
    """(image (S,S,3) uint8, human mask, object mask (S,S) bool): visible pixels of body and object, by depth."""
    Kt = torch.as_tensor(K, dtype=torch.float32)
    vb = torch.as_tensor(body_cam, dtype=torch.float32)
    vo = torch.as_tensor(obj_cam, dtype=torch.float32)
    fo = torch.as_tensor(obj_faces, dtype=torch.long)
    fb_ = rasterize(project_opencv(vb, Kt), body_faces, size, size)
    fo_ = rasterize(project_opencv(vo, Kt), fo, size, size)
    inf = torch.full((size, size), float("inf"))
    z_body = torch.where(fb_.pix_to_face >= 0, fb_.zbuf, inf)
    z_obj = torch.where(fo_.pix_to_face >= 0, fo_.zbuf, inf)
    zg, gcol = _ground_layer(ground, Rc, tc, K, size, cell=rng.uniform(0.3, 0.6))
    z_ground = torch.as_tensor(zg, dtype=torch.float32)
    layer = torch.stack([z_body, z_obj, z_ground]).argmin(0)
    layer[torch.isinf(torch.minimum(torch.minimum(z_body, z_obj), z_ground))] = 3
    body_vis, obj_vis, ground_vis = layer == 0, layer == 1, layer == 2

    img, lambert = backdrop(rng, size)

    if ground_vis.any():
        shade = float(lambert(torch.as_tensor(Rc[:, 1], dtype=torch.float32)[None])[0])
        img[ground_vis] = torch.as_tensor(gcol, dtype=torch.float32)[ground_vis] * shade
    for vis, frag, v, f, col in ((obj_vis, fo_, vo, fo, obj_color),
                                 (body_vis, fb_, vb, body_faces, None)):
        if not vis.any():
            continue
        face = frag.pix_to_face[vis]
        n = (vertex_normals(v, f)[f[face]] * frag.bary[vis][..., None]).sum(1)
        c = torch.as_tensor(col if col is not None else _BODY_COLOR, dtype=torch.float32)
        img[vis] = (c * lambert(n)[:, None]).clamp(0, 1)
    image = (img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    return image, body_vis.numpy(), obj_vis.numpy()


_BODY_COLOR = (0.85, 0.68, 0.55)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _obj_text(v: np.ndarray, f: np.ndarray) -> str:
    lines = [f"v {a:.9g} {b:.9g} {c:.9g}" for a, b, c in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    return "\n".join(lines) + "\n"


def generate_scenes(out: str | Path, n: int = 50, seed: int = 0, image_size: int = 256, model_dir: str | None = None,
                    contact_eps: float = 0.02, contact_files: bool = False, sit_fraction: float = 0.25,
                    verbose: bool = False) -> Path:
    """Write ``n`` synthetic scene folders (``scene_00000`` ...) and ``scenes.txt`` under ``out``; returns ``out``.

    ``model_dir``: a smplx model folder with ``smpl/SMPL_NEUTRAL.pkl`` (default: the synthetic body model written
    to ``out/body_models``). ``sit_fraction`` of the scenes (drawn per scene) sit on a stool, the others hold a
    ball, box or bottle. ``contact_files`` also writes contact_human.npy / contact_object.npy (soft ground truth).
    """
    if n < 1:
        raise ValueError(f"generate_scenes: n must be >= 1, got {n}")
    if image_size < 16:
        raise ValueError(f"generate_scenes: image_size must be >= 16 pixels, got {image_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = _load_body(model_dir, out)
    faces = torch.as_tensor(np.asarray(model.faces), dtype=torch.long)
    faces_np = faces.numpy()
    _, parts = _part_info(model)
    min_pixels = max(6, image_size * image_size // 4000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-scene tensors: threads only add overhead (see generate_damon)
    names = []
    try:
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            scene = _one_scene(rng, model, faces, faces_np, parts, image_size, contact_eps, sit_fraction, min_pixels)
            name = f"scene_{i:05d}"
            d = out / name
            _write_scene(d, scene, contact_files, contact_eps)
            names.append(name)
            if verbose and (i + 1) % 10 == 0:
                print(f"{i + 1}/{n} scenes ({time.time() - t0:.1f} s)", flush=True)
    finally:
        torch.set_num_threads(threads)
    atomic_write_text(out / INDEX_FILE, "\n".join(names) + "\n")
    return out


def _one_scene(rng, model, faces, faces_np, parts, size, eps, sit_fraction, min_pixels) -> dict:
    """Draw one scene (retrying poses, placements and cameras until the object is placed and visible)."""
    for _attempt in range(50):
        scenario = "sit" if rng.random() < sit_fraction else "reach"
        pose, hint = _pose(rng, scenario)
        betas = np.clip(rng.normal(0, 0.7, 10), -2, 2)
        with torch.no_grad():
            b = torch.as_tensor(betas[None], dtype=torch.float32)
            verts = model(pose=torch.as_tensor(pose[None], dtype=torch.float32), betas=b)["vertices"][0]
            verts = verts.numpy().astype(np.float64)
            root = model(betas=b)["joints"][0, 0].numpy().astype(np.float64)
        placed = None
        for _ in range(6):
            placed = _try_place(rng, scenario, hint, verts, parts)
            if placed is not None:
                break
        if placed is None:
            continue
        cat, prim, s = placed
        ov, of = object_mesh(cat)
        Ry = _rot_y(prim.yaw)
        obj_world = place_object(ov, Ry, prim.center, s)
        floor_y = float(verts[:, 1].min())
        tone = rng.uniform(0.45, 0.75)
        ground = Primitive("ground", np.zeros(3), np.array([min(floor_y, obj_world[:, 1].min()) + 0.005]),
                           color=np.array([tone, tone * rng.uniform(0.85, 1.0), tone * rng.uniform(0.7, 0.95)]))
        obj_color = _jitter_color(rng, _COLOR[cat])
        for _cam in range(5):
            Rc, tc, K = _camera(rng, scenario, np.concatenate([verts, obj_world]), size)
            body_cam = verts @ Rc.T + tc
            obj_cam = obj_world @ Rc.T + tc
            image, hmask, omask = _render(rng, body_cam, faces, obj_cam, of, obj_color, ground, Rc, tc, K, size)
            if omask.sum() >= min_pixels and hmask.sum() >= min_pixels:
                break
        else:
            continue
        R = Rc @ Ry
        t = Rc @ prim.center + tc
        # Contact distances in the camera frame (the same geometry as in the world frame).
        d_body = _signed_distance(obj_cam, of, body_cam, 2 * eps + 0.01)
        d_obj = _surface_distance(body_cam, faces_np, obj_cam, 2 * eps + 0.01)
        go = Rotation.from_matrix(Rc) * Rotation.from_rotvec(pose[:3])
        pose_cam = pose.copy()
        pose_cam[:3] = go.as_rotvec()
        return dict(image=image, human_mask=hmask, object_mask=omask, pose=pose_cam, shape=betas,
                    transl=Rc @ root + tc - root, cam_k=K, category=cat, scenario=scenario, R=R, t=t, scale=s,
                    obj_verts=ov, obj_faces=of, d_body=d_body, d_obj=d_obj)
    raise RuntimeError("generate_scenes: could not place a visible object in 50 attempts")


def _write_scene(d: Path, sc: dict, contact_files: bool, eps: float) -> None:
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "image.png", _png(sc["image"]))
    atomic_write_bytes(d / "human_mask.png", _png(sc["human_mask"].astype(np.uint8) * 255))
    atomic_write_bytes(d / "object_mask.png", _png(sc["object_mask"].astype(np.uint8) * 255))
    save_npz_deterministic(d / "body.npz", pose=sc["pose"].astype(np.float64), shape=sc["shape"].astype(np.float64),
                           transl=sc["transl"].astype(np.float64), cam_k=sc["cam_k"].astype(np.float64),
                           model_type=np.array("smpl"), gender=np.array("neutral"))
    atomic_write_text(d / "object.obj", _obj_text(sc["obj_verts"], sc["obj_faces"]))
    atomic_write_text(d / "object.json", json.dumps({"category": sc["category"]}) + "\n")
    gt = {"R": np.round(sc["R"], 12).tolist(), "t": np.round(sc["t"], 12).tolist(), "scale": round(sc["scale"], 12),
          "human_contact": np.flatnonzero(sc["d_body"] <= eps).tolist(),
          "object_contact": np.flatnonzero(sc["d_obj"] <= eps).tolist(),
          "category": sc["category"], "scenario": sc["scenario"], "contact_eps": eps}
    atomic_write_text(d / "gt.json", json.dumps(gt) + "\n")
    if contact_files:
        for name, dist in (("contact_human.npy", sc["d_body"]), ("contact_object.npy", sc["d_obj"])):
            p = np.clip((2 * eps - dist) / eps, 0.0, 1.0).astype(np.float32)
            buf = io.BytesIO()
            np.save(buf, p)
            atomic_write_bytes(d / name, buf.getvalue())


def cli(args: list[str]) -> int:
    """``make_synthetic.py scenes --n N --out DIR --seed S [--size 256] [--model-dir DIR] [--contact-files]``."""
    ap = argparse.ArgumentParser(prog="make_synthetic.py scenes",
                                 description="Write synthetic human-object scene folders with known object pose.")
    ap.add_argument("--n", type=int, default=50, help="number of scene folders")
    ap.add_argument("--out", required=True, help="folder to write the scenes under")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--model-dir", default=None, help="smplx model dir (default: write the synthetic body)")
    ap.add_argument("--contact-files", action="store_true", help="also write contact_human/object.npy (soft gt)")
    a = ap.parse_args(args)
    t0 = time.time()
    out = generate_scenes(a.out, n=a.n, seed=a.seed, image_size=a.size, model_dir=a.model_dir,
                          contact_files=a.contact_files, verbose=True)
    print(f"wrote {a.n} synthetic scenes to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
