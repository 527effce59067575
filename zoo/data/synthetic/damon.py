"""Synthetic DAMON: posed bodies touching primitive objects, written in DAMON's exact on-disk layout.

Each sample poses the (synthetic or real) SMPL body in one of a few interaction
scenarios, places primitive objects (box, cylinder, sphere, ground plane) so the
intended body part touches them, and derives exact ground truth: a vertex is in
contact with an object when its distance to the object's surface (the exact signed
distance of the primitive, penetration included) is at most ``contact_eps`` (2 cm).
Images are rendered with the zoo's CPU rasterizer.

Scenarios (intended contact part -> object): ``stand`` (feet -> ground, optionally a
hand -> sphere/box/cylinder), ``reach`` (one hand -> sphere/box/cylinder), ``table``
(both hands -> box top), ``sit`` (hips -> box, feet -> ground), ``lean`` (back ->
box/cylinder), ``lie`` (back -> ground), ``head`` (head -> sphere/box).

Layout written under ``<out>`` (the same as the DAMON release, read by
``zoo.data.damon.DamonDataModule`` and ``check_formats.py damon``)::

    hot_dca_trainval.npz, hot_dca_test.npz
    datasets/HOT-Annotated/images/<name>.jpg               RGB image
    datasets/HOT-Annotated/annotations/<name>.png          2D contact mask (0 / 255)
    datasets/HOT-Annotated/segmentation_masks/<name>.png   scene label map, 0..132
    datasets/HOT-Annotated/parts/<name>.png                body-part label map, 0..25
    body_models/                                           synthetic body model (if none given)

npz keys: imgname, pose (N,72), shape (N,10), transl (N,3), cam_k (N,3,3),
contact_label (N,6890), contact_label_objectwise (N,) dicts {object name -> vertex ids},
polygon_2d_contact, scene_seg, part_seg (N,) relative paths.

Camera convention: camera at the origin looking down +Z (OpenCV, y down); the body's
vertices in camera space are ``BodyModel(pose, shape, transl)`` and project with
``cam_k`` as ``u = fx X/Z + cx``, ``v = fy Y/Z + cy``.

Scene classes (COCO-panoptic 133 contiguous ids, detectron2 order; see ``SCENE_CLASSES``):
person 0, box -> 13 "bench", cylinder -> 10 "fire hydrant", sphere -> 32 "sports ball",
ground -> 122 "floor-other-merged", background -> 131 "wall-other-merged".
Object names in ``contact_label_objectwise`` say what the primitive stands for in its
scenario, as DAMON names objects (``OBJECT_LABELS``: name -> primitive kind): "chair" (sit),
"dining table" (table), "wall" / "pole" (lean), "sports ball", "bottle", "handbag" (held),
"sports ball" / "suitcase" (on the head) and "supporting" for the ground (DAMON's key for
supporting surfaces).
Part classes: 0 background, 1..25 body parts of the body model's 26-class DECO-like
scheme (``zoo.body.mesh``).

Deterministic: sample ``i`` of split ``s`` draws from ``numpy.random.default_rng([seed, s, i])``
and every file (npz included, written with fixed zip timestamps) has the same bytes for
the same seed. Files are written atomically (:mod:`zoo.core.atomic`) and the two
npz files last, so a folder holding both holds the whole set.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from zoo.body.mesh import vertex_normals
from zoo.core.atomic import atomic_write_bytes
from zoo.data.synthetic.files import save_npz_deterministic
from zoo.render.cameras import framing_pose, project_opencv
from zoo.render.raster import merge_meshes, rasterize

__all__ = [
    "SCENE_CLASSES", "OBJECT_CLASS", "OBJECT_LABELS", "PERSON_CLASS", "BACKGROUND_CLASS", "SCENARIOS", "IMAGE_DIR",
    "Primitive", "primitive_sdf", "primitive_mesh", "generate_damon", "cli",
]

PERSON_CLASS = 0
BACKGROUND_CLASS = 131
OBJECT_CLASS = {"box": 13, "cylinder": 10, "sphere": 32, "ground": 122}
SCENE_CLASSES = {0: "person", 10: "fire hydrant", 13: "bench", 32: "sports ball",
                 122: "floor-other-merged", 131: "wall-other-merged"}
# Semantic object names (contact_label_objectwise keys) -> primitive kind.
OBJECT_LABELS = {"chair": "box", "dining table": "box", "wall": "box", "pole": "cylinder", "sports ball": "sphere",
                 "bottle": "cylinder", "handbag": "box", "suitcase": "box", "supporting": "ground"}
SCENARIOS = ("stand", "reach", "table", "sit", "lean", "lie", "head")
IMAGE_DIR = "datasets/HOT-Annotated"
NUM_VERTS = 6890

# Base colours (linear RGB in [0, 1]); each sample jitters them a little.
_OBJECT_COLOR = {"box": (0.80, 0.45, 0.15), "cylinder": (0.15, 0.40, 0.85), "sphere": (0.20, 0.75, 0.25)}

# SMPL joint indices used by the pose builders.
_J = dict(pelvis=0, l_hip=1, r_hip=2, spine1=3, l_knee=4, r_knee=5, spine2=6, l_ankle=7, r_ankle=8, spine3=9,
          neck=12, l_collar=13, r_collar=14, head=15, l_shoulder=16, r_shoulder=17, l_elbow=18, r_elbow=19,
          l_wrist=20, r_wrist=21)


# ------------------------------------------------------------------------------------------
# Primitives: exact signed distances and render meshes
# ------------------------------------------------------------------------------------------

@dataclass
class Primitive:
    """A primitive object in world space (Y up). ``size``: box half-extents (3,), cylinder
    (radius, half-height), sphere (radius,), ground (height y0,). ``yaw`` rotates about +Y."""

    kind: str
    center: np.ndarray
    size: np.ndarray
    yaw: float = 0.0
    color: np.ndarray = field(default_factory=lambda: np.ones(3))
    label: str = ""

    @property
    def name(self) -> str:
        """The semantic object name (``label``), else the primitive kind."""
        return self.label or self.kind

    def local(self, p: np.ndarray) -> np.ndarray:
        """Points (N, 3) in the primitive's frame (centre at origin, yaw undone)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        q = p - self.center
        return np.stack([c * q[:, 0] - s * q[:, 2], q[:, 1], s * q[:, 0] + c * q[:, 2]], -1)


def primitive_sdf(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """Exact signed distance (N,) from points (N, 3) to a primitive's surface (negative inside)."""
    if prim.kind == "ground":
        return p[:, 1] - prim.size[0]
    q = prim.local(p)
    if prim.kind == "sphere":
        return np.linalg.norm(q, axis=1) - prim.size[0]
    if prim.kind == "box":
        d = np.abs(q) - prim.size[None, :]
        return np.linalg.norm(np.maximum(d, 0), axis=1) + np.minimum(d.max(1), 0)
    if prim.kind == "cylinder":
        d = np.stack([np.hypot(q[:, 0], q[:, 2]) - prim.size[0], np.abs(q[:, 1]) - prim.size[1]], -1)
        return np.linalg.norm(np.maximum(d, 0), axis=1) + np.minimum(d.max(1), 0)
    raise ValueError(f"primitive_sdf: unknown primitive kind {prim.kind!r} (box, cylinder, sphere, ground)")


def _yaw_apply(prim: Primitive, v: np.ndarray) -> np.ndarray:
    c, s = math.cos(prim.yaw), math.sin(prim.yaw)
    # Inverse of Primitive.local's rotation.
    return np.stack([c * v[:, 0] + s * v[:, 2], v[:, 1], -s * v[:, 0] + c * v[:, 2]], -1) + prim.center


def primitive_mesh(prim: Primitive, ground_extent: float = 4.0, ground_cells: int = 24,
                   ground_center: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A render mesh of a primitive: (verts (V,3), faces (F,3), face colours (F,3)).

    Boxes get separate vertices per side (flat shading); the ground is a subdivided
    checkerboard so faces behind the camera can be dropped without losing the rest.
    """
    col = np.asarray(prim.color, dtype=np.float32)
    if prim.kind == "box":
        h = prim.size
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * h
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        v, f = [], []
        for qi, q in enumerate(quads):
            v += [corners[i] for i in q]
            b = 4 * qi
            f += [(b, b + 1, b + 2), (b, b + 2, b + 3)]
        v, f = np.array(v), np.array(f)
        return _yaw_apply(prim, v), f, np.repeat(col[None], len(f), 0)
    if prim.kind in ("sphere", "cylinder"):
        n_az = 32
        az = np.linspace(0, 2 * np.pi, n_az, endpoint=False)
        if prim.kind == "sphere":
            el = np.linspace(0, np.pi, 17)[1:-1]
            r = prim.size[0]
            rings = [np.stack([r * np.sin(e) * np.cos(az), np.full(n_az, r * np.cos(e)), r * np.sin(e) * np.sin(az)], -1)
                     for e in el]
            caps = np.array([[0, r, 0], [0, -r, 0]])
        else:
            r, hh = prim.size
            rings = [np.stack([r * np.cos(az), np.full(n_az, y), r * np.sin(az)], -1) for y in (hh, hh, -hh, -hh)]
            caps = np.array([[0, hh, 0], [0, -hh, 0]])
        v = np.concatenate(rings + [caps])
        nr = len(rings)
        top, bot = nr * n_az, nr * n_az + 1
        f = []
        for i in range(nr - 1):
            if prim.kind == "cylinder" and i != 1:
                continue  # rings 0/1 and 2/3 duplicate the rims so caps and side shade apart
            for j in range(n_az):
                a, b = i * n_az + j, i * n_az + (j + 1) % n_az
                c, d = a + n_az, b + n_az
                f += [(a, b, d), (a, d, c)]
        for j in range(n_az):
            f.append((top, (j + 1) % n_az, j))
            f.append((bot, (nr - 1) * n_az + j, (nr - 1) * n_az + (j + 1) % n_az))
        f = np.array(f)
        return _yaw_apply(prim, v), f, np.repeat(col[None], len(f), 0)
    if prim.kind == "ground":
        c0 = np.zeros(3) if ground_center is None else ground_center
        n = ground_cells
        xs = np.linspace(-ground_extent, ground_extent, n + 1)
        gx, gz = np.meshgrid(xs + c0[0], xs + c0[2], indexing="ij")
        v = np.stack([gx.ravel(), np.full(gx.size, prim.size[0]), gz.ravel()], -1)
        f, fc = [], []
        dark = col * 0.72
        for i in range(n):
            for j in range(n):
                a, b = i * (n + 1) + j, (i + 1) * (n + 1) + j
                f += [(a, b, b + 1), (a, b + 1, a + 1)]
                fc += [col if (i + j) % 2 == 0 else dark] * 2
        return v, np.array(f), np.array(fc, np.float32)
    raise ValueError(f"primitive_mesh: unknown primitive kind {prim.kind!r}")


# ------------------------------------------------------------------------------------------
# Poses
# ------------------------------------------------------------------------------------------

def _pose(rng: np.random.Generator, scenario: str) -> tuple[np.ndarray, dict]:
    """A 72-d SMPL axis-angle pose (world frame: Y up, facing +Z) for a scenario, plus hints."""
    p = np.zeros((24, 3))
    u = rng.uniform
    hint: dict = {}
    # Everyday variation: slight asymmetric bends everywhere.
    for j in (_J["spine1"], _J["spine2"], _J["spine3"], _J["neck"], _J["head"]):
        p[j] = u(-0.08, 0.08, 3)

    def arms_down() -> None:
        # One statement per joint, in this order: the draws from `rng` must keep their sequence.
        p[_J["l_shoulder"]] = [u(-0.2, 0.2), u(-0.2, 0.2), -u(1.0, 1.35)]
        p[_J["r_shoulder"]] = [u(-0.2, 0.2), u(-0.2, 0.2), u(1.0, 1.35)]
        p[_J["l_elbow"]] = [0, -u(0.0, 0.6), 0]
        p[_J["r_elbow"]] = [0, u(0.0, 0.6), 0]

    def legs_stand() -> None:
        p[_J["l_hip"]] = [u(-0.15, 0.1), 0, u(0.0, 0.12)]
        p[_J["r_hip"]] = [u(-0.15, 0.1), 0, -u(0.0, 0.12)]
        p[_J["l_knee"]] = [u(0.0, 0.15), 0, 0]
        p[_J["r_knee"]] = [u(0.0, 0.15), 0, 0]

    arms_down()
    if scenario in ("stand", "reach", "lean", "head", "table"):
        legs_stand()
    if scenario == "reach" or (scenario == "stand" and rng.random() < 0.5):
        side = "l" if rng.random() < 0.5 else "r"
        sgn = 1 if side == "l" else -1
        # Arm forward (about Y), raised or lowered (about Z), slightly bent elbow.
        p[_J[f"{side}_shoulder"]] = [0, -sgn * u(0.6, 1.5), sgn * u(-0.5, 0.5)]
        p[_J[f"{side}_elbow"]] = [0, -sgn * u(0.0, 0.5), 0]
        hint["hand"] = side
    if scenario == "table":
        p[_J["spine1"]] += [u(0.15, 0.35), 0, 0]
        p[_J["spine2"]] += [u(0.05, 0.2), 0, 0]
        for side, sgn in (("l", 1), ("r", -1)):
            p[_J[f"{side}_shoulder"]] = [0, -sgn * u(0.9, 1.3), -sgn * u(0.6, 1.0)]
            p[_J[f"{side}_elbow"]] = [0, -sgn * u(0.0, 0.3), 0]
    if scenario == "sit":
        for side, sgn in (("l", 1), ("r", -1)):
            p[_J[f"{side}_hip"]] = [-u(1.35, 1.65), 0, sgn * u(0.0, 0.2)]
            p[_J[f"{side}_knee"]] = [u(1.3, 1.75), 0, 0]
            p[_J[f"{side}_ankle"]] = [u(-0.2, 0.2), 0, 0]
    if scenario == "lean":
        p[_J["spine1"]] += [-u(0.0, 0.12), 0, 0]
    if scenario == "head":
        p[_J["neck"]] += [u(-0.3, 0.2), u(-0.3, 0.3), u(-0.2, 0.2)]
    if scenario == "lie":
        for side, sgn in (("l", 1), ("r", -1)):
            p[_J[f"{side}_hip"]] = [u(-0.4, 0.05), 0, sgn * u(0.0, 0.3)]
            p[_J[f"{side}_knee"]] = [u(0.0, 0.8), 0, 0]
            p[_J[f"{side}_shoulder"]] = [u(-0.2, 0.2), u(-0.3, 0.3), -sgn * u(0.2, 1.4)]
        p[_J["pelvis"]] = [-math.pi / 2 + u(-0.05, 0.05), 0, u(-0.05, 0.05)]  # supine on the ground
    return p.reshape(72), hint


# ------------------------------------------------------------------------------------------
# Object placement
# ------------------------------------------------------------------------------------------

def _place_along(prim: Primitive, verts: np.ndarray, part: np.ndarray, direction: np.ndarray,
                 penetration: float) -> bool:
    """Slide ``prim`` along ``direction`` (pointing from the part outwards) until the part's
    vertex closest to it sits ``penetration`` metres inside its surface.

    ``prim.center`` fixes the position across ``direction``; along it the offset is found by
    bisection, starting with the centre level with the part's outermost vertex (which must
    then be inside the object). Returns False when the object does not cover the part.
    """
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    pv = verts[part]
    anchor = pv[np.argmax(pv @ d)]
    c0 = prim.center - d * float(prim.center @ d) + d * float(anchor @ d)
    prim.center = c0
    if primitive_sdf(prim, pv).min() >= -penetration:
        return False
    lo, hi = 0.0, 3.0
    for _ in range(36):
        mid = (lo + hi) / 2
        prim.center = c0 + d * mid
        if primitive_sdf(prim, pv).min() < -penetration:
            lo = mid
        else:
            hi = mid
    prim.center = c0 + d * hi
    return True


def _rest_on_floor(box: Primitive, floor_y: float) -> None:
    """Extend a box downwards (keeping its top) so that it stands on the floor."""
    top = box.center[1] + box.size[1]
    half = max((top - floor_y) / 2, 0.02)
    box.size = np.array([box.size[0], half, box.size[2]])
    box.center = np.array([box.center[0], top - half, box.center[2]])


def _jitter_color(rng, base) -> np.ndarray:
    return np.clip(np.asarray(base) + rng.uniform(-0.1, 0.1, 3), 0.05, 0.95).astype(np.float32)


def _try_object(rng: np.random.Generator, scenario: str, hint: dict, verts: np.ndarray,
                parts: dict[str, np.ndarray], floor_y: float, pen: float) -> Primitive | None:
    """One attempt at the scenario's (non-ground) object; None when it cannot be placed."""
    u = rng.uniform

    def color(kind):
        return _jitter_color(rng, _OBJECT_COLOR[kind])

    def small_object(kind: str, anchor_part: np.ndarray, d: np.ndarray) -> Primitive | None:
        if kind == "sphere":
            size = np.array([u(0.08, 0.2)])
        elif kind == "box":
            size = np.array([u(0.08, 0.25), u(0.08, 0.25), u(0.08, 0.25)])
        else:
            size = np.array([u(0.05, 0.15), u(0.15, 0.4)])
        pv = verts[anchor_part]
        prim = Primitive(kind, pv[np.argmax(pv @ d)].copy(), size, yaw=u(0, np.pi), color=color(kind))
        return prim if _place_along(prim, verts, anchor_part, d, pen) else None

    if scenario in ("stand", "reach"):
        if "hand" not in hint:
            return None
        hand = parts["left_hand" if hint["hand"] == "l" else "right_hand"]
        d = verts[hand].mean(0) - verts[parts["torso"]].mean(0)
        d[1] *= 0.5
        prim = small_object(["sphere", "box", "cylinder"][rng.integers(3)], hand, d)
        if prim is not None:
            prim.label = {"sphere": "sports ball", "box": "handbag", "cylinder": "bottle"}[prim.kind]
        return prim
    if scenario == "head":
        d = np.array([u(-0.6, 0.6), 1.0, u(-0.6, 0.6)]) if rng.random() < 0.6 else \
            np.array([rng.choice([-1.0, 1.0]), u(-0.1, 0.3), u(-0.3, 0.3)])
        prim = small_object("sphere" if rng.random() < 0.7 else "box", parts["head"], d)
        if prim is not None:
            prim.label = "sports ball" if prim.kind == "sphere" else "suitcase"
        return prim
    down = np.array([0.0, -1.0, 0.0])
    if scenario == "table":
        both = np.concatenate([parts["left_hand"], parts["right_hand"]])
        hc = verts[both].mean(0)
        half = np.array([u(0.35, 0.6), 0.05, u(0.18, 0.3)])
        top = verts[both, 1].min()
        # Keep the box's near face in front of the legs and hips below the hands.
        below = verts[verts[:, 1] < top - 0.02]
        front = below[:, 2].max() if len(below) else hc[2] - half[2]
        cz = max(hc[2] + u(-0.05, 0.1), front + half[2] + 0.01)
        box = Primitive("box", np.array([hc[0], 0.0, cz]), half, yaw=0.0, color=color("box"), label="dining table")
        if not _place_along(box, verts, both, down, pen):
            return None
        _rest_on_floor(box, floor_y)
        return box
    if scenario == "sit":
        hips = parts["hips"]
        hc = verts[hips].mean(0)
        half = np.array([u(0.22, 0.35), 0.05, u(0.16, 0.24)])
        box = Primitive("box", np.array([hc[0], 0.0, hc[2] + u(-0.1, 0.0)]), half, yaw=u(-0.2, 0.2),
                        color=color("box"), label="chair")
        if not _place_along(box, verts, hips, down, pen):
            return None
        _rest_on_floor(box, floor_y)
        return box
    if scenario == "lean":
        back = parts["back"]
        top = verts[back, 1].max()
        if rng.random() < 0.6:
            half_y = (top - floor_y) / 2 + u(-0.1, 0.2)
            prim = Primitive("box", np.zeros(3), np.array([u(0.3, 0.6), half_y, u(0.1, 0.25)]),
                             yaw=u(-0.15, 0.15), color=color("box"), label="wall")
        else:
            half_y = (top - floor_y) / 2 + u(0.0, 0.2)
            prim = Primitive("cylinder", np.zeros(3), np.array([u(0.12, 0.25), half_y]), color=color("cylinder"),
                             label="pole")
        prim.center = np.array([verts[back, 0].mean(), floor_y + half_y, 0.0])
        return prim if _place_along(prim, verts, back, np.array([0.0, 0.0, -1.0]), pen) else None
    return None  # "lie": the ground is the only object


def _build_objects(rng: np.random.Generator, scenario: str, hint: dict, verts: np.ndarray,
                   parts: dict[str, np.ndarray], tries: int = 6) -> list[Primitive]:
    """Objects touching the intended parts of a posed body (world frame, transl 0), ground last.

    An object that would sink more than 3 cm into any part of the body is redrawn; after
    ``tries`` failures the sample keeps only the ground.
    """
    u = rng.uniform
    # How far the supporting surface sinks into the body: a rigid body model has no soft
    # tissue, so lying and sitting bodies get a deeper press to give realistic contact patches.
    pen = {"lie": u(0.03, 0.05), "sit": u(0.015, 0.03)}.get(scenario, u(0.004, 0.012))
    floor_y = float(verts[:, 1].min())
    objs: list[Primitive] = []
    for _ in range(tries):
        prim = _try_object(rng, scenario, hint, verts, parts, floor_y, pen)
        if prim is None:
            if scenario in ("lie",) or (scenario == "stand" and "hand" not in hint):
                break
            continue
        if primitive_sdf(prim, verts).min() >= -(pen + 0.03):
            objs.append(prim)
            break
    tone = u(0.45, 0.75)
    ground_pen = pen if scenario == "lie" else u(0.004, 0.012)
    objs.append(Primitive("ground", np.zeros(3), np.array([floor_y + ground_pen]),
                          color=np.array([tone, tone * u(0.85, 1.0), tone * u(0.7, 0.95)], np.float32),
                          label="supporting"))
    return objs


# ------------------------------------------------------------------------------------------
# Body model helpers
# ------------------------------------------------------------------------------------------

def _load_body(model_dir: str | None, out: Path):
    """The body model (writing the synthetic one under ``out/body_models`` when no dir is given)."""
    from zoo.body.model import BodyModel

    if model_dir is None:
        from zoo.body.synthetic import write_synthetic_body_models

        model_dir = str(write_synthetic_body_models(out / "body_models"))
    return BodyModel(model_dir, model_type="smpl", gender="neutral", num_betas=10)


def _part_info(model) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-vertex DECO part labels (1..25; 0 is background) and the vertex ids of the regions
    objects are placed against (``zoo.body.mesh`` part groups)."""
    from zoo.body import mesh as bm

    labels = np.asarray(bm.deco_part_labels(model.lbs_weights)).astype(np.int64).reshape(-1)
    if labels.shape[0] != NUM_VERTS:
        raise ValueError(f"deco_part_labels returned {labels.shape[0]} labels, expected {NUM_VERTS}")
    if labels.min() < 1 or labels.max() > 25:
        raise ValueError(f"deco_part_labels gives labels in {labels.min()}..{labels.max()}, expected 1..25")
    # Sitting presses the buttocks (pelvis and upper thighs, back-facing), not the whole pelvis.
    groups = {"left_hand": "left_hand", "right_hand": "right_hand", "feet": "feet", "back": "back",
              "hips": "buttocks", "head": "head", "torso": "torso"}
    parts = {}
    for name, group in groups.items():
        ids = np.asarray(bm.part_vertex_ids(model, group)).astype(np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError(f"body part group '{group}' has no vertices on this body model")
        parts[name] = ids
    return labels, parts


# ------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------

def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _camera(rng, scenario: str, pts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World->camera (R, t) and K of an OpenCV camera that frames the points ``pts``."""
    u = rng.uniform
    if scenario in ("sit", "lean"):
        az = math.radians(rng.choice([-1, 1]) * u(35, 95))
    elif scenario == "lie":
        az = math.radians(rng.choice([-1, 1]) * u(40, 100))
    else:
        az = math.radians(u(-70, 70))
    el = math.radians(u(25, 45) if scenario == "lie" else u(0, 25))
    f = size * u(1.1, 1.5)
    K = np.array([[f, 0, size / 2 + u(-4, 4)], [0, f, size / 2 + u(-4, 4)], [0, 0, 1]])
    # Distance at which the bounding sphere spans about 85% of the image.
    R, t = framing_pose(pts, az, el, f, 0.425 * size)
    return R, t, K


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _jpg(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _ground_layer(ground: Primitive, R: np.ndarray, t: np.ndarray, K: np.ndarray, size: int, cell: float):
    """Per-pixel depth (inf where not hit) and checkerboard colour of an infinite ground plane,
    by intersecting each pixel's ray with it (a mesh would need huge, mostly clipped faces)."""
    c = np.arange(size) + 0.5
    u, v = np.meshgrid(c, c)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d_w = d_cam @ R  # rows are R^T d
    C = -R.T @ t
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (ground.size[0] - C[1]) / d_w[..., 1]
    hit = np.isfinite(s) & (s > 0) & (s < 40.0)
    s = np.where(hit, s, np.inf)  # s is the camera depth Z because d_cam has z = 1
    P = C + np.where(hit, s, 0)[..., None] * d_w
    checker = (np.floor(P[..., 0] / cell) + np.floor(P[..., 2] / cell)).astype(np.int64) % 2
    col = np.where(checker[..., None] == 0, ground.color, ground.color * 0.72)
    return s, col


def backdrop(rng: np.random.Generator, size: int):
    """A photo's background and light: a vertical gradient of a random light colour with faint noise (S, S, 3)
    float32, and a two-sided Lambert shading function of normals (..., 3) for a random light from above."""
    top = rng.uniform(0.55, 0.95, 3)
    bot = top * rng.uniform(0.6, 0.9)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = (top * (1 - ramp) + bot * ramp) * np.ones((size, size, 3)) + rng.normal(0, 0.015, (size, size, 1))
    img = torch.as_tensor(img, dtype=torch.float32)
    light = torch.tensor([rng.uniform(-0.5, 0.5), rng.uniform(-0.9, -0.3), -1.0])
    light = light / light.norm()

    def lambert(n: torch.Tensor) -> torch.Tensor:
        n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return 0.35 + 0.65 * (n @ light).abs()

    return img, lambert


def _render_sample(rng, body_cam: np.ndarray, faces: torch.Tensor, part_labels: np.ndarray, contact: np.ndarray,
                   objects: list[Primitive], R: np.ndarray, t: np.ndarray, K: np.ndarray, size: int,
                   body_color: np.ndarray):
    """Image (S,S,3) uint8, contact mask (0/255), scene labels and part labels of one sample.

    Body, objects and ground are drawn as separate depth layers and composed by depth: the
    body-only layer then also gives the contact mask, where contact hidden behind an
    object is still marked (as annotators draw it, and as DECO's pixel-anchoring loss sees it).
    """
    Kt = torch.as_tensor(K, dtype=torch.float32)
    vb = torch.as_tensor(body_cam, dtype=torch.float32)
    fb = rasterize(project_opencv(vb, Kt), faces, size, size)
    inf = torch.full((size, size), float("inf"))
    z_body = torch.where(fb.pix_to_face >= 0, fb.zbuf, inf)
    solid = [o for o in objects if o.kind != "ground"]
    z_obj = inf
    if solid:
        meshes, cols, kinds = [], [], []
        for o in solid:
            v, f, fc = primitive_mesh(o)
            meshes.append((torch.as_tensor(v @ R.T + t, dtype=torch.float32), torch.as_tensor(f)))
            cols.append(torch.as_tensor(fc, dtype=torch.float32))
            kinds.append(o.kind)
        vo, fo, oid = merge_meshes(meshes)
        of = rasterize(project_opencv(vo, Kt), fo, size, size)
        z_obj = torch.where(of.pix_to_face >= 0, of.zbuf, inf)
    grounds = [o for o in objects if o.kind == "ground"]
    z_ground = inf
    if grounds:
        zg, gcol = _ground_layer(grounds[0], R, t, K, size, cell=rng.uniform(0.3, 0.6))
        z_ground = torch.as_tensor(zg, dtype=torch.float32)
    layer = torch.stack([z_body, z_obj, z_ground]).argmin(0)
    zmin = torch.minimum(torch.minimum(z_body, z_obj), z_ground)
    layer[torch.isinf(zmin)] = 3  # background
    body_vis, obj_vis, ground_vis = layer == 0, layer == 1, layer == 2

    img, lambert = backdrop(rng, size)

    if ground_vis.any():
        shade = float(lambert(torch.as_tensor(R[:, 1], dtype=torch.float32)[None])[0])
        img[ground_vis] = torch.as_tensor(gcol, dtype=torch.float32)[ground_vis] * shade
    if obj_vis.any():
        f = of.pix_to_face[obj_vis]
        tri = vo[fo[f]]
        n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # flat: crisp box edges
        round_ = torch.as_tensor([k != "box" for k in kinds])[oid[f]]
        if round_.any():
            ns = (vertex_normals(vo, fo)[fo[f]] * of.bary[obj_vis][..., None]).sum(1)
            n = torch.where(round_[:, None], ns, n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12))
        img[obj_vis] = (torch.cat(cols)[f] * lambert(n)[:, None]).clamp(0, 1)
    if body_vis.any():
        f = fb.pix_to_face[body_vis]
        n = (vertex_normals(vb, faces)[faces[f]] * fb.bary[body_vis][..., None]).sum(1)
        img[body_vis] = (torch.as_tensor(body_color, dtype=torch.float32) * lambert(n)[:, None]).clamp(0, 1)
    image = (img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)

    scene = np.full((size, size), BACKGROUND_CLASS, np.uint8)
    if obj_vis.any():
        cls = torch.as_tensor([OBJECT_CLASS[k] for k in kinds])
        scene[obj_vis.numpy()] = cls[oid[of.pix_to_face[obj_vis]]].numpy().astype(np.uint8)
    scene[ground_vis.numpy()] = OBJECT_CLASS["ground"]
    scene[body_vis.numpy()] = PERSON_CLASS

    # A body pixel takes the part of its face's corner with the largest barycentric weight.
    part = np.zeros((size, size), np.uint8)
    if body_vis.any():
        corner = faces[fb.pix_to_face[body_vis]].gather(1, fb.bary[body_vis].argmax(-1, keepdim=True)).squeeze(1)
        part[body_vis.numpy()] = part_labels[corner.numpy()]
    cmask = np.zeros((size, size), np.uint8)
    covered = fb.pix_to_face >= 0
    if covered.any():
        cv = (torch.as_tensor(contact, dtype=torch.float32)[faces[fb.pix_to_face[covered]]] * fb.bary[covered]).sum(1)
        cmask[covered.numpy()] = np.where(cv.numpy() >= 0.5, 255, 0).astype(np.uint8)
    return image, cmask, scene, part


def _generate_split(model, faces: torch.Tensor, part_labels, parts, n: int, split_id: int, split: str,
                    seed: int, out: Path, size: int, contact_eps: float,
                    scenarios: tuple[str, ...] = SCENARIOS) -> dict:
    """Generate ``n`` samples of one split and write their image files; returns the npz arrays."""
    rngs = [np.random.default_rng([seed, split_id, i]) for i in range(n)]
    scen, poses, betas, hints = [], [], [], []
    for rng in rngs:
        s = scenarios[rng.integers(len(scenarios))]
        p, h = _pose(rng, s)
        scen.append(s)
        poses.append(p)
        hints.append(h)
        betas.append(np.clip(rng.normal(0, 0.7, 10), -2, 2))
    poses_t = torch.as_tensor(np.stack(poses), dtype=torch.float32) if n else torch.zeros(0, 72)
    betas_t = torch.as_tensor(np.stack(betas), dtype=torch.float32) if n else torch.zeros(0, 10)
    with torch.no_grad():
        world = model(pose=poses_t, betas=betas_t, transl=torch.zeros(n, 3))["vertices"].numpy().astype(np.float64)
        rest = model(pose=torch.zeros(n, 72), betas=betas_t, transl=torch.zeros(n, 3))
        root = rest["joints"][:, 0].numpy().astype(np.float64)

    keys = ("imgname", "pose", "shape", "transl", "cam_k", "contact_label", "contact_label_objectwise",
            "polygon_2d_contact", "scene_seg", "part_seg")
    rec: dict[str, list] = {k: [] for k in keys}
    for i, rng in enumerate(rngs):
        verts = world[i]
        objs = _build_objects(rng, scen[i], hints[i], verts, parts)
        sdf = np.stack([primitive_sdf(o, verts) for o in objs])  # (O, V)
        objectwise = {}
        for o, d in zip(objs, sdf, strict=True):
            ids = np.flatnonzero(d <= contact_eps).astype(np.int64)
            if ids.size:
                objectwise[o.name] = ids
        contact = np.zeros(NUM_VERTS, np.uint8)
        for ids in objectwise.values():
            contact[ids] = 1
        pts = np.concatenate([verts] + [primitive_mesh(o)[0] for o in objs if o.kind != "ground"])
        R, t, K = _camera(rng, scen[i], pts, size)
        body_cam = verts @ R.T + t
        body_color = np.clip(np.array([0.85, 0.68, 0.55]) * rng.uniform(0.75, 1.1) + rng.uniform(-0.06, 0.06, 3),
                             0.1, 1.0)
        image, cmask, scene, part = _render_sample(rng, body_cam, faces, part_labels, contact, objs, R, t, K,
                                                   size, body_color)
        # Camera-frame SMPL parameters: global orientation gets the camera rotation, and the
        # translation absorbs the rotation about the root joint (smplx rotates about it).
        go = Rotation.from_matrix(R) * Rotation.from_rotvec(poses[i][:3])
        pose_cam = poses[i].copy()
        pose_cam[:3] = go.as_rotvec()
        transl = R @ root[i] + t - root[i]
        name = f"synth_{split}_{i:05d}"
        rel = {
            "imgname": f"{IMAGE_DIR}/images/{name}.jpg",
            "polygon_2d_contact": f"{IMAGE_DIR}/annotations/{name}.png",
            "scene_seg": f"{IMAGE_DIR}/segmentation_masks/{name}.png",
            "part_seg": f"{IMAGE_DIR}/parts/{name}.png",
        }
        for k, data in (("imgname", _jpg(image)), ("polygon_2d_contact", _png(cmask)),
                        ("scene_seg", _png(scene)), ("part_seg", _png(part))):
            atomic_write_bytes(out / rel[k], data)
            rec[k].append(rel[k])
        rec["pose"].append(pose_cam)
        rec["shape"].append(betas[i])
        rec["transl"].append(transl)
        rec["cam_k"].append(K)
        rec["contact_label"].append(contact)
        rec["contact_label_objectwise"].append(objectwise)
    arrays = {}
    for k in keys:
        if k == "contact_label_objectwise":
            a = np.empty(n, dtype=object)
            for j, d in enumerate(rec[k]):
                a[j] = d
            arrays[k] = a
        elif k in ("imgname", "polygon_2d_contact", "scene_seg", "part_seg"):
            arrays[k] = np.array(rec[k], dtype=str)
        elif k == "contact_label":
            arrays[k] = np.stack(rec[k]).astype(np.float64) if n else np.zeros((0, NUM_VERTS))
        else:
            shape = {"pose": (72,), "shape": (10,), "transl": (3,), "cam_k": (3, 3)}[k]
            arrays[k] = np.stack(rec[k]).astype(np.float64) if n else np.zeros((0,) + shape)
    arrays["scenario"] = np.array(scen, dtype=str)
    return arrays


def generate_damon(out: str | Path, n: int = 600, seed: int = 0, test_fraction: float = 0.2, image_size: int = 256,
                   model_dir: str | None = None, contact_eps: float = 0.02, verbose: bool = False,
                   scenarios: tuple[str, ...] | list[str] | None = None) -> Path:
    """Write a synthetic DAMON dataset of ``n`` samples (``test_fraction`` of them in the test split) to ``out``.

    Returns ``out``. ``model_dir`` is a smplx model folder (with ``smpl/SMPL_NEUTRAL.pkl``);
    without one the synthetic body model is written to ``out/body_models``. ``scenarios``
    restricts the draw to some of :data:`SCENARIOS` (all by default; the default draws are
    unchanged by the option), e.g. two with disjoint contact for a quick learning check.
    """
    scenarios = SCENARIOS if scenarios is None else tuple(scenarios)
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise ValueError(f"generate_damon: scenarios must be a non-empty subset of {list(SCENARIOS)}, "
                         f"got {list(scenarios)}")
    if n < 2:
        raise ValueError(f"generate_damon: n must be >= 2 (one train and one test sample), got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"generate_damon: test_fraction must be in (0, 1), got {test_fraction}")
    out = Path(out)
    for sub in ("images", "annotations", "segmentation_masks", "parts"):
        (out / IMAGE_DIR / sub).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = _load_body(model_dir, out)
    faces = torch.as_tensor(np.asarray(model.faces), dtype=torch.long)
    part_labels, parts = _part_info(model)
    n_test = max(1, int(round(n * test_fraction)))
    n_train = n - n_test
    threads = torch.get_num_threads()
    # Per-sample tensors are small: intra-op threads only add sync overhead (10x slower on a
    # busy 2-core machine), so generate single-threaded and restore the setting afterwards.
    torch.set_num_threads(1)
    splits = {}
    try:
        for split_id, (split, count, fname) in enumerate((("trainval", n_train, "hot_dca_trainval.npz"),
                                                          ("test", n_test, "hot_dca_test.npz"))):
            splits[fname] = _generate_split(model, faces, part_labels, parts, count, split_id, split, seed, out,
                                            image_size, contact_eps, scenarios)
            if verbose:
                print(f"{fname}: {count} samples ({time.time() - t0:.1f} s)")
    finally:
        torch.set_num_threads(threads)
    # The npz files name every image: written last, so once both exist the whole set does.
    for fname, arrays in splits.items():
        save_npz_deterministic(out / fname, **arrays)
    return out


def cli(args: list[str]) -> int:
    """``make_synthetic.py damon --n N --out DIR --seed S [--size 256] [--test-fraction 0.2] [--model-dir DIR]
    [--scenarios a,b]``."""
    ap = argparse.ArgumentParser(prog="make_synthetic.py damon", description="Write a synthetic DAMON dataset.")
    ap.add_argument("--n", type=int, default=600, help="total samples (train+val+test)")
    ap.add_argument("--out", required=True, help="dataset root to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--model-dir", default=None, help="smplx model dir (default: write the synthetic body)")
    ap.add_argument("--scenarios", default=None, help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    a = ap.parse_args(args)
    t0 = time.time()
    out = generate_damon(a.out, n=a.n, seed=a.seed, test_fraction=a.test_fraction, image_size=a.size,
                         model_dir=a.model_dir, verbose=True,
                         scenarios=None if a.scenarios is None else a.scenarios.split(","))
    print(f"wrote synthetic DAMON ({a.n} samples) to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
