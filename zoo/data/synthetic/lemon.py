"""Synthetic LEMON / 3DIR: posed SMPL-H bodies interacting with synthetic objects, in LEMON's layout.

Each sample poses the (synthetic or real) SMPL-H body for an interaction (holding a
Mug/Bottle/Bowl/Knife in the right hand, sitting on a Chair, lying on a Bed), places a
``zoo.data.synthetic.objects`` instance so that the region of the held/used affordance touches the
intended body part (slid along a direction until 3 mm clear of the whole body), and
derives SMPL-H contact from geometry: a vertex is in contact when it lies within
``contact_eps`` (2 cm) of the object's surface (densely sampled). The image is rendered
with the zoo's CPU rasterizer.

Layout under ``<out>`` (as lemon_3d's ``dataset_3DIR.py`` reads it; stored paths start
with ``Data/`` like the release's, i.e. relative to the folder holding ``Data``)::

    Images/<Object>/<aff>/<Object>_<aff>_<n>.jpg
    mask/<Object>/<Object>_<aff>_<n>.png                 human + object mask (255 / 0)
    Objects/<Object>/<Object>_<n>.txt                    2048 rows: x y z + 17 affordances (LEMON order)
    smplh_contact_pkl/<Object>/<aff>/<Object>_<aff>_<n>.pkl   pickled float32 (6890,) 0/1 contact
    obj_center/<Object>/<Object>_<aff>_<n>.pkl           pickled float32 (1, 3) object centre (camera frame)
    smplh_param/human_label.json                         {"Images/...jpg": {"smplh_param": {...}, "human_box": [...]}}
    txt_scripts/train.txt, val.txt, Point_train.txt, Point_val.txt
    body_models/                                         the synthetic body (when no model dir is given)

``smplh_param`` holds ``shape`` (16; the body's 10 betas then zeros), ``body_pose``
(21x3x3), ``left_hand_pose``/``right_hand_pose`` (15x3x3), ``global_orient`` (3x3) rotation
matrices and ``transl`` (3), in the camera frame (OpenCV: x right, y down, z forward;
smplx rotates about the root joint, which ``transl`` accounts for). ``human_box`` is
[x1, y1, x2, y2] in image pixels. Object point clouds are in the object's own frame
(LEMON normalises them on reading). Point list row i is sample i's own object instance.

Deterministic: sample ``i`` of split ``s`` draws from ``default_rng([seed, s, i])``. Files are
written atomically (:mod:`zoo.core.atomic`), ``human_label.json`` last.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from zoo.core.atomic import atomic_write_bytes, atomic_write_image, atomic_write_text
from zoo.data.formats import AFFORDANCES, LEMON_AFFORDANCES
from zoo.data.synthetic.objects import make_object, sample_surface
from zoo.render.cameras import framing_pose, project_opencv
from zoo.render.raster import render_mesh

__all__ = ["INTERACTIONS", "generate_lemon", "to_lemon_columns", "cli"]

# class -> [(image affordance, affordance whose region touches the body, body interaction)]
INTERACTIONS: dict[str, list[tuple[str, str, str]]] = {
    "Mug": [("grasp", "grasp", "hold"), ("wrapgrasp", "wrapgrasp", "hold"), ("pour", "grasp", "hold")],
    "Bottle": [("grasp", "grasp", "hold"), ("wrapgrasp", "wrapgrasp", "hold"), ("pour", "wrapgrasp", "hold")],
    "Bowl": [("wrapgrasp", "wrapgrasp", "hold"), ("pour", "wrapgrasp", "hold")],
    "Knife": [("grasp", "grasp", "hold"), ("cut", "grasp", "hold"), ("stab", "grasp", "hold")],
    "Chair": [("sit", "sit", "sit")],
    "Bed": [("lay", "lay", "lay")],
}
_NUM_VERTS = 6890
_SKIN = np.array([0.86, 0.68, 0.56])
_JOINT = dict(pelvis=0, l_hip=1, r_hip=2, spine1=3, l_knee=4, r_knee=5, spine2=6, spine3=9, neck=12, head=15,
              l_shoulder=16, r_shoulder=17, l_elbow=18, r_elbow=19)


def to_lemon_columns(aff_piad: np.ndarray) -> np.ndarray:
    """Re-order (N, 17) affordances from PIAD's column order to LEMON's (absent ones are 0)."""
    out = np.zeros((aff_piad.shape[0], len(LEMON_AFFORDANCES)), np.float32)
    for j, name in enumerate(LEMON_AFFORDANCES):
        if name in AFFORDANCES:
            out[:, j] = aff_piad[:, AFFORDANCES.index(name)]
    return out


def _pose(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A (22, 3) axis-angle pose (root + 21 body joints; world Y up, facing +Z) for an interaction."""
    u = rng.uniform
    p = np.zeros((22, 3))
    for j in ("spine1", "spine2", "spine3", "neck", "head"):
        p[_JOINT[j]] = u(-0.06, 0.06, 3)
    p[_JOINT["l_shoulder"]] = [u(-0.2, 0.2), u(-0.2, 0.2), -u(1.0, 1.3)]
    p[_JOINT["r_shoulder"]] = [u(-0.2, 0.2), u(-0.2, 0.2), u(1.0, 1.3)]
    if kind == "hold":  # right arm forward, elbow slightly bent
        p[_JOINT["r_shoulder"]] = [0.0, u(0.8, 1.4), -u(-0.3, 0.3)]
        p[_JOINT["r_elbow"]] = [0.0, u(0.0, 0.5), 0.0]
    elif kind == "sit":
        for side, sgn in (("l", 1), ("r", -1)):
            p[_JOINT[f"{side}_hip"]] = [-u(1.4, 1.6), 0.0, sgn * u(0.0, 0.15)]
            p[_JOINT[f"{side}_knee"]] = [u(1.3, 1.7), 0.0, 0.0]
    elif kind == "lay":
        p[0] = [-math.pi / 2 + u(-0.03, 0.03), 0.0, u(-0.03, 0.03)]  # supine: back down, head towards -Z
        for side, sgn in (("l", 1), ("r", -1)):
            p[_JOINT[f"{side}_hip"]] = [u(-0.1, 0.05), 0.0, sgn * u(0.0, 0.2)]
    return p


def _place(obj_v: np.ndarray, region: np.ndarray, body: np.ndarray, anchor: np.ndarray, d: np.ndarray,
           clearance: float = 0.003) -> np.ndarray:
    """Offset for ``obj_v`` (its points ``region`` moved onto ``anchor``, then slid along ``d``)
    such that the object is ``clearance`` metres clear of the body."""
    from scipy.spatial import cKDTree

    tree = cKDTree(body)
    d = d / np.linalg.norm(d)
    base = anchor - region.mean(0)

    def gap(s: float) -> float:
        return float(tree.query(obj_v + base + d * s, k=1)[0].min())

    lo, hi = 0.0, 0.05
    while gap(hi) < clearance and hi < 3.0:
        lo, hi = hi, hi * 2
    for _ in range(24):
        mid = (lo + hi) / 2
        if gap(mid) < clearance:
            lo = mid
        else:
            hi = mid
    return base + d * hi


def _camera(rng, pts: np.ndarray, size: int, kind: str):
    u = rng.uniform
    az = math.radians(u(-60, 60) if kind != "lay" else rng.choice([-1, 1]) * u(50, 110))
    el = math.radians(u(5, 25) if kind != "lay" else u(25, 50))
    f = size * u(1.1, 1.4)
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    R, t = framing_pose(pts, az, el, f, 0.45 * size)
    return R, t, K


def _pkl(obj) -> bytes:
    return pickle.dumps(obj, protocol=4)


def _sample(rng, i: int, split: str, model, faces_b: torch.Tensor, parts: dict[str, np.ndarray], out: Path,
            size: int, contact_eps: float, classes: list[str]) -> dict:
    """Generate and write one sample; returns its list entries and json record."""
    from scipy.spatial import cKDTree

    cls = classes[i % len(classes)]
    aff, hold_aff, kind = INTERACTIONS[cls][int(rng.integers(len(INTERACTIONS[cls])))]
    pose = _pose(rng, kind)
    betas = np.clip(rng.normal(0, 0.6, 10), -2, 2)
    with torch.no_grad():
        res = model(global_orient=torch.as_tensor(pose[:1].reshape(1, 3), dtype=torch.float32),
                    body_pose=torch.as_tensor(pose[1:].reshape(1, 63), dtype=torch.float32),
                    betas=torch.as_tensor(betas[None], dtype=torch.float32))
        rest = model(betas=torch.as_tensor(betas[None], dtype=torch.float32))
    body = res["vertices"][0].numpy().astype(np.float64)
    root = rest["joints"][0, 0].numpy().astype(np.float64)
    yaw = {"hold": None, "sit": rng.uniform(-0.2, 0.2), "lay": rng.uniform(-0.05, 0.05)}[kind]
    obj = make_object(cls, rng, yaw=yaw)
    vals = obj.values(hold_aff)
    region = obj.points[vals > 0.5 * vals.max()].astype(np.float64)
    ov = obj.verts.astype(np.float64)
    dense, _, _ = sample_surface(ov, obj.faces, 20000, rng)
    if kind == "hold":
        hand = body[parts["right_hand"]]
        anchor = hand.mean(0)
        d = anchor - body[parts["torso"]].mean(0)
        d[1] *= 0.3
    elif kind == "sit":
        anchor = body[parts["buttocks"]].mean(0)
        d = np.array([0.0, -1.0, 0.0])
    else:
        anchor = body[parts["back"]].mean(0)
        d = np.array([0.0, -1.0, 0.0])
    off = _place(dense[:4000], region, body, anchor, d)  # a subset suffices to find the gap (and is 5x faster)
    ov, dense = ov + off, dense + off
    dist, _ = cKDTree(dense).query(body, k=1)
    contact = (dist <= contact_eps).astype(np.float32)

    R, t, K = _camera(rng, np.concatenate([body, ov]), size, kind)
    verts = np.concatenate([body, ov]) @ R.T + t
    faces = np.concatenate([faces_b.numpy(), obj.faces + len(body)])
    skin = np.clip(_SKIN * rng.uniform(0.8, 1.1), 0, 1)
    fcol = np.concatenate([np.repeat(skin[None], len(faces_b), 0), obj.face_colors]).astype(np.float32)
    Kt = torch.as_tensor(K, dtype=torch.float32)
    vt = torch.as_tensor(verts, dtype=torch.float32)
    top = rng.uniform(0.55, 0.95, 3)
    bg = torch.as_tensor(top * np.ones((size, size, 3)) * np.linspace(1, 0.75, size)[:, None, None], dtype=torch.float32)
    img, frags = render_mesh(vt, torch.as_tensor(faces), Kt, size, size, face_colors=torch.as_tensor(fcol),
                             background=bg, return_fragments=True)
    image = (img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    mask = np.where(frags.pix_to_face.numpy() >= 0, 255, 0).astype(np.uint8)
    uv = project_opencv(vt[: len(body)], Kt)[:, :2].numpy()
    box = [float(np.clip(uv[:, 0].min(), 0, size)), float(np.clip(uv[:, 1].min(), 0, size)),
           float(np.clip(uv[:, 0].max(), 0, size)), float(np.clip(uv[:, 1].max(), 0, size))]

    k = i + 1
    stem = f"{cls}_{aff}_{k}" if split == "train" else f"{cls}_{aff}_val{k}"
    rel_img = f"Images/{cls}/{aff}/{stem}.jpg"
    rel_obj = f"Objects/{cls}/{cls}_{split}{k}.txt"
    files = {
        rel_img: None,
        f"mask/{cls}/{stem}.png": mask,
        f"smplh_contact_pkl/{cls}/{aff}/{stem}.pkl": _pkl(contact),
        f"obj_center/{cls}/{stem}.pkl": _pkl((ov.mean(0) @ R.T + t)[None].astype(np.float32)),
    }
    for rel, data in files.items():
        if rel == rel_img:
            atomic_write_image(out / rel, image, "JPEG", quality=92)
        elif isinstance(data, np.ndarray):
            atomic_write_image(out / rel, data, "PNG")
        else:
            atomic_write_bytes(out / rel, data)
    rows = np.concatenate([obj.points.astype(np.float64), to_lemon_columns(obj.affordance).astype(np.float64)], 1)
    line = " ".join(["%.6f"] * 3 + ["%.4f"] * len(LEMON_AFFORDANCES)) + "\n"
    atomic_write_text(out / rel_obj, "".join([line % tuple(r) for r in rows.tolist()]))

    rots = Rotation.from_rotvec(pose).as_matrix()  # (22, 3, 3)
    go = R @ rots[0]
    transl = R @ root + t - root
    eye15 = np.repeat(np.eye(3)[None], 15, 0)
    param = {"shape": np.concatenate([betas, np.zeros(6)]).tolist(), "body_pose": rots[1:].tolist(),
             "left_hand_pose": eye15.tolist(), "right_hand_pose": eye15.tolist(), "global_orient": go.tolist(),
             "transl": transl.tolist()}
    return {"image": f"Data/{rel_img}", "point": f"Data/{rel_obj}", "key": rel_img,
            "record": {"smplh_param": param, "human_box": box}, "contact": contact}


def generate_lemon(out: str | Path, n: int = 300, seed: int = 0, image_size: int = 224,
                   body_model_dir: str | None = None, test_fraction: float = 0.2, contact_eps: float = 0.02,
                   classes: tuple[str, ...] | list[str] | None = None, verbose: bool = False) -> Path:
    """Write a synthetic LEMON dataset of ``n`` samples (``test_fraction`` in val.txt) to ``out``; returns ``out``.

    ``body_model_dir`` is a smplx model folder with ``smplh/SMPLH_NEUTRAL.pkl|npz``; without
    one the synthetic body is written to ``out/body_models``. ``classes`` (default: all of
    ``INTERACTIONS``) are cycled through sample by sample.
    """
    from zoo.body import mesh as bm
    from zoo.body.model import SMPLHBody

    classes = list(classes or INTERACTIONS)
    unknown = [c for c in classes if c not in INTERACTIONS]
    if unknown:
        raise ValueError(f"generate_lemon: no interaction defined for {unknown} (classes: {', '.join(INTERACTIONS)})")
    if n < 2:
        raise ValueError(f"generate_lemon: n must be >= 2 (one train and one val sample), got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if body_model_dir is None:
        from zoo.body.synthetic import write_synthetic_body_models

        body_model_dir = str(write_synthetic_body_models(out / "body_models"))
    model = SMPLHBody(body_model_dir)
    if model.num_vertices != _NUM_VERTS:
        raise ValueError(f"{model.path}: {model.num_vertices} vertices, LEMON contact needs {_NUM_VERTS} (SMPL-H)")
    faces = torch.as_tensor(np.asarray(model.faces), dtype=torch.long)
    parts = {g: np.asarray(bm.part_vertex_ids(model, g)) for g in ("right_hand", "torso", "buttocks", "back")}
    n_test = max(1, int(round(n * test_fraction)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-sample tensors: intra-op threads only add overhead
    labels: dict[str, dict] = {}
    try:
        for s_id, (split, count, lst) in enumerate((("train", n - n_test, "train"), ("val", n_test, "val"))):
            imgs, pts = [], []
            for i in range(count):
                rec = _sample(np.random.default_rng([seed, s_id, i]), i, split, model, faces, parts, out, image_size,
                              contact_eps, classes)
                imgs.append(rec["image"])
                pts.append(rec["point"])
                labels[rec["key"]] = rec["record"]
            atomic_write_text(out / "txt_scripts" / f"{lst}.txt", "".join(p + "\n" for p in imgs))
            atomic_write_text(out / "txt_scripts" / f"Point_{lst}.txt", "".join(p + "\n" for p in pts))
            if verbose:
                print(f"{split}: {count} samples ({time.time() - t0:.1f} s)")
    finally:
        torch.set_num_threads(threads)
    # The human parameters of every listed image: written last, so once it exists the whole set does.
    atomic_write_text(out / "smplh_param" / "human_label.json", json.dumps(labels))
    return out


def cli(args: list[str]) -> int:
    """``make_synthetic.py lemon --out DIR [--n 300] [--seed 0] [--size 224] [--model-dir DIR]``."""
    ap = argparse.ArgumentParser(prog="make_synthetic.py lemon", description="Write a synthetic LEMON/3DIR dataset.")
    ap.add_argument("--out", required=True, help="dataset root to write (LEMON's Data folder)")
    ap.add_argument("--n", type=int, default=300, help="samples (train + val)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--model-dir", default=None, help="smplx model dir with smplh/ (default: write the synthetic body)")
    a = ap.parse_args(args)
    t0 = time.time()
    out = generate_lemon(a.out, n=a.n, seed=a.seed, image_size=a.size, body_model_dir=a.model_dir, verbose=True)
    print(f"wrote synthetic LEMON ({a.n} samples) to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
