"""Synthetic PIAD: object point clouds with geometric affordances and rendered interaction images,
written in PIAD's on-disk layout (as IAGNet reads it).

Layout under ``<out>`` for each setting S in ``settings`` ("Seen", "Unseen")::

    S/Point_Train.txt, S/Img_Train.txt, S/Box_Train.txt     one path per line, relative to <out>
    S/Point_Test.txt,  S/Img_Test.txt,  S/Box_Test.txt      (test lists aligned line by line)
    S/Point/<Split>/<Object>/Point_<Split>_<Object>_<n>.txt   2048 lines: "<id> <Object> x y z a_1 .. a_17"
    S/Img/<Split>/<Object>/<aff>/Img_<Split>_<Object>_<aff>_<n>.jpg
    S/Box/<Split>/<Object>/<aff>/Img_<Split>_<Object>_<aff>_<n>.json  LabelMe: 'subject' and 'object' rectangles
    S/piad_lookup_results_Train.pkl (Unseen: piad_unseen_lookup_results_Train.pkl)   retrieval list

Point clouds come from ``zoo.data.synthetic.objects`` (exact affordance fields; values are
``exp(-d^2/sigma^2)`` from each functional region). Images show a *different* instance of
the same class (PIAD pairs are not one-to-one), rendered with the zoo's CPU rasterizer
from a random view, with a skin-coloured "actor" blob touching the object where the
image's affordance is strongest (so the image says which affordance is meant); the
``subject`` box frames the actor and the ``object`` box the object.

The retrieval list is in InteractVLM's format (a pickled dict ``{image path as in Img_Train.txt:
[point file path as in Point_Train.txt, ...]}``, best match first): each training image's
``RETRIEVAL_TOP`` training clouds of its class closest in shape to the object it shows (distance
between six numbers of the normalised cloud: its extent and spread along each axis), standing in for
InteractVLM's OpenShape look-up.

Seen: every class in both splits (a fifth of each class's clouds and images in Test).
Unseen: the classes of ``UNSEEN_CLASSES`` only in Test, the others only in Train (as in
IAGNet, where Bed and Laptop are among the unseen test classes).

Deterministic: point cloud ``j`` of setting ``s`` draws from ``default_rng([seed, s, 0, j])``
and image ``i`` from ``default_rng([seed, s, 1, i])``. Files are written atomically
(:mod:`zoo.core.atomic`), each setting's six list files last, so a setting folder
holding all six holds the whole setting.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

from zoo.core.atomic import atomic_write_bytes, atomic_write_image, atomic_write_text
from zoo.data.formats import AFFORDANCES
from zoo.data.synthetic.objects import OBJECT_CLASSES, SyntheticObject, make_object
from zoo.render.cameras import framing_pose, project_opencv
from zoo.render.raster import render_mesh

__all__ = ["UNSEEN_CLASSES", "RETRIEVAL_TOP", "generate_piad", "write_point_file", "render_interaction", "sphere_mesh",
           "shape_descriptor", "cli"]

UNSEEN_CLASSES = ("Bed", "Laptop")
RETRIEVAL_TOP = 10  # clouds listed per training image in the retrieval list
_RETRIEVAL_FILE = {"Seen": "piad_lookup_results_Train.pkl", "Unseen": "piad_unseen_lookup_results_Train.pkl"}
_SKIN = np.array([0.87, 0.68, 0.56])


def sphere_mesh(center, radius: float, n_lat: int = 8, n_lon: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere (verts (V, 3), faces (F, 3))."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack([np.sin(th)[:, None] * np.cos(ph), np.cos(th)[:, None] * np.ones_like(ph),
                     np.sin(th)[:, None] * np.sin(ph)], -1).reshape(-1, 3)
    v = np.concatenate([ring, [[0, 1, 0], [0, -1, 0]]]) * radius + np.asarray(center)
    top, bot = len(ring), len(ring) + 1
    f = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            f += [(a, a + n_lon, b + n_lon), (a, b + n_lon, b)]
    last = (n_lat - 2) * n_lon
    for j in range(n_lon):
        f += [(top, j, (j + 1) % n_lon), (bot, last + (j + 1) % n_lon, last + j)]
    return v, np.asarray(f, np.int64)


def write_point_file(path: Path, obj: SyntheticObject, token: str) -> None:
    """Write a PIAD point file: one line per point, "<token> <Object> x y z" and 17 affordances."""
    data = np.concatenate([obj.points.astype(np.float64), obj.affordance.astype(np.float64)], 1)
    line = f"{token} {obj.name} " + " ".join(["%.6f"] * 3 + ["%.4f"] * len(AFFORDANCES)) + "\n"
    atomic_write_text(path, "".join([line % tuple(row) for row in data.tolist()]))  # 2-3x faster than np.savetxt


def _camera(rng, pts: np.ndarray, size: int):
    u = rng.uniform
    az, el = u(0, 2 * np.pi), math.radians(u(10, 45))
    f = size * u(1.1, 1.4)
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    R, t = framing_pose(pts, az, el, f, 0.45 * size)
    return R, t, K


def _bbox(uv: np.ndarray, size: int) -> list[list[float]]:
    lo = np.clip(uv.min(0), 0, size - 1)
    hi = np.clip(uv.max(0), 0, size - 1)
    return [[round(float(lo[0]), 2), round(float(lo[1]), 2)], [round(float(hi[0]), 2), round(float(hi[1]), 2)]]


def render_interaction(obj: SyntheticObject, affordance: str, rng: np.random.Generator, size: int = 224
                       ) -> tuple[np.ndarray, list[list[float]], list[list[float]]]:
    """Render ``obj`` with an actor blob touching its ``affordance`` region.

    Returns (image (S, S, 3) uint8, subject box, object box), boxes as LabelMe corner pairs
    [[x0, y0], [x1, y1]] in pixels.
    """
    vals = obj.values(affordance)
    k = int(np.argmax(vals))
    extent = float(np.ptp(obj.verts, axis=0).max())
    r = extent * rng.uniform(0.12, 0.2)
    centre = obj.points[k] + obj.normals[k] * r * 0.9
    # Face normals of closed shells point either way (the lathe winding is not oriented):
    # flip towards the outside, judged from the object's centre.
    if np.dot(obj.normals[k], obj.points[k] - obj.verts.mean(0)) < 0:
        centre = obj.points[k] - obj.normals[k] * r * 0.9
    sv, sf = sphere_mesh(centre, r)
    verts = np.concatenate([obj.verts, sv])
    faces = np.concatenate([obj.faces, sf + len(obj.verts)])
    skin = np.clip(_SKIN * rng.uniform(0.8, 1.1), 0, 1)
    colors = np.concatenate([obj.face_colors, np.repeat(skin[None], len(sf), 0)]).astype(np.float32)
    R, t, K = _camera(rng, verts, size)
    vc = torch.as_tensor(verts @ R.T + t, dtype=torch.float32)
    Kt = torch.as_tensor(K, dtype=torch.float32)
    top = rng.uniform(0.6, 0.95, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    bg = torch.as_tensor((top * (1 - ramp) + top * 0.75 * ramp) * np.ones((size, size, 3)), dtype=torch.float32)
    img = render_mesh(vc, torch.as_tensor(faces), Kt, size, size, face_colors=torch.as_tensor(colors),
                      background=bg, smooth=False)
    image = (img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    uv = project_opencv(vc, Kt)[:, :2].numpy()
    obj_box = _bbox(uv[: len(obj.verts)], size)
    subj_box = _bbox(uv[len(obj.verts):], size)
    return image, subj_box, obj_box


def _labelme(image_rel: str, subj, obj_box, size: int) -> str:
    shapes = [{"label": "object", "points": obj_box, "group_id": None, "shape_type": "rectangle", "flags": {}},
              {"label": "subject", "points": subj, "group_id": None, "shape_type": "rectangle", "flags": {}}]
    return json.dumps({"version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": image_rel, "imageData": None,
                       "imageHeight": size, "imageWidth": size}, indent=1)


def _split_classes(setting: str) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    classes = list(OBJECT_CLASSES)
    if setting == "Seen":
        return classes, {c: ("Train", "Test") for c in classes}
    if setting == "Unseen":
        return classes, {c: (("Test",) if c in UNSEEN_CLASSES else ("Train",)) for c in classes}
    raise ValueError(f"generate_piad: unknown setting {setting!r} (expected 'Seen' or 'Unseen')")


def _assign(n: int, classes: list[str], splits: dict[str, tuple[str, ...]], test_fraction: float):
    """(class, split, per-class number) for items 0..n-1, classes round-robin."""
    per = {c: [i for i in range(n) if i % len(classes) == ci] for ci, c in enumerate(classes)}
    out: list[tuple[str, str, int]] = [None] * n  # type: ignore[list-item]
    for c, items in per.items():
        if splits[c] == ("Train", "Test"):
            n_test = max(1, int(round(len(items) * test_fraction))) if len(items) >= 2 else 0
            names = ["Train"] * (len(items) - n_test) + ["Test"] * n_test
        else:
            names = [splits[c][0]] * len(items)
        counter = {"Train": 0, "Test": 0}
        for i, s in zip(items, names, strict=True):
            counter[s] += 1
            out[i] = (c, s, counter[s])
    return out


def generate_piad(out: str | Path, n_objects: int = 440, n_images: int = 440, seed: int = 0, image_size: int = 224,
                  settings: tuple[str, ...] | list[str] = ("Seen",), test_fraction: float = 0.2,
                  workers: int = 1, verbose: bool = False) -> Path:
    """Write a synthetic PIAD dataset (``n_objects`` point clouds, ``n_images`` images per setting) to ``out``.

    Returns ``out``. Every class gets at least one train and one test cloud and image
    (Seen) when ``n_objects`` and ``n_images`` are at least twice the number of classes.
    ``workers`` > 1 renders in that many forked processes (same files as with one).
    """
    n_cls = len(OBJECT_CLASSES)
    if n_objects < 2 * n_cls or n_images < 2 * n_cls:
        raise ValueError(f"generate_piad: n_objects and n_images must be >= {2 * n_cls} (two per class for "
                         f"{n_cls} classes), got {n_objects} and {n_images}")
    out = Path(out)
    t0 = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny per-image tensors: intra-op threads only add overhead
    try:
        for s_id, setting in enumerate(settings):
            _generate_setting(out, setting, s_id, n_objects, n_images, seed, image_size, test_fraction, workers)
            if verbose:
                print(f"{setting}: {n_objects} point clouds, {n_images} images ({time.time() - t0:.1f} s)")
    finally:
        torch.set_num_threads(threads)
    return out


def shape_descriptor(points: np.ndarray) -> np.ndarray:
    """Six numbers describing a cloud's shape: per-axis extent and spread after centring and scaling the
    farthest point to distance 1 (what the synthetic retrieval list ranks clouds by)."""
    p = np.asarray(points, dtype=np.float64)
    p = p - p.mean(0)
    p = p / max(float(np.linalg.norm(p, axis=1).max()), 1e-12)
    return np.concatenate([np.ptp(p, axis=0), p.std(0)])


def _point_job(job: tuple) -> np.ndarray:
    """Write one point file (runs in a worker process when ``workers`` > 1); returns its shape descriptor."""
    out, setting, s_id, seed, j, c, rel = job
    rng = np.random.default_rng([seed, s_id, 0, j])
    obj = make_object(c, rng)
    token = hashlib.md5(f"{seed}-{setting}-{j}".encode()).hexdigest()
    write_point_file(out / rel, obj, token)
    return shape_descriptor(obj.points)


def _image_job(job: tuple) -> tuple[str, str, np.ndarray]:
    """Render and write one image and its box file; returns their paths relative to ``out`` and the shape
    descriptor of the object it shows."""
    out, setting, s_id, seed, i, c, split, k, size = job
    rng = np.random.default_rng([seed, s_id, 1, i])
    obj = make_object(c, rng)
    desc = shape_descriptor(obj.points)
    aff = str(rng.choice(obj.active_affordances))
    image, subj, obox = render_interaction(obj, aff, rng, size)
    stem = f"Img_{split}_{c}_{aff}_{k}"
    img_rel = f"{setting}/Img/{split}/{c}/{aff}/{stem}.jpg"
    box_rel = f"{setting}/Box/{split}/{c}/{aff}/{stem}.json"
    atomic_write_image(out / img_rel, image, "JPEG", quality=92)
    atomic_write_text(out / box_rel, _labelme(f"../../../../Img/{split}/{c}/{aff}/{stem}.jpg", subj, obox, size))
    return img_rel, box_rel, desc


def _run(fn, jobs: list, workers: int) -> list:
    if workers <= 1 or len(jobs) < 2:
        return [fn(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers inherit the imported modules (spawn would re-import torch in each)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as ex:
        return list(ex.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _generate_setting(out: Path, setting: str, s_id: int, n_objects: int, n_images: int, seed: int, size: int,
                      test_fraction: float, workers: int = 1) -> None:
    classes, splits = _split_classes(setting)
    root = out / setting
    root.mkdir(parents=True, exist_ok=True)
    points: dict[str, dict[str, list[str]]] = {"Train": {}, "Test": {}}
    pjobs = []
    for j, (c, split, k) in enumerate(_assign(n_objects, classes, splits, test_fraction)):
        rel = f"{setting}/Point/{split}/{c}/Point_{split}_{c}_{k}.txt"
        pjobs.append((out, setting, s_id, seed, j, c, rel))
        points[split].setdefault(c, []).append(rel)
    shape = {job[6]: d for job, d in zip(pjobs, _run(_point_job, pjobs, workers), strict=True)}
    lists = {s: {"Point": [], "Img": [], "Box": []} for s in ("Train", "Test")}
    for c in classes:
        lists["Train"]["Point"] += points["Train"].get(c, [])
    ijobs = []
    for i, (c, split, k) in enumerate(_assign(n_images, classes, splits, test_fraction)):
        if points[split].get(c):  # an image without a cloud of its class in its split cannot be paired
            ijobs.append((out, setting, s_id, seed, i, c, split, k, size))
    test_used: dict[str, int] = {}
    lookup: dict[str, list[str]] = {}
    for job, (img_rel, box_rel, desc) in zip(ijobs, _run(_image_job, ijobs, workers), strict=True):
        c, split = job[5], job[6]
        lists[split]["Img"].append(img_rel)
        lists[split]["Box"].append(box_rel)
        if split == "Train":
            pool = points["Train"][c]
            dist = [float(np.linalg.norm(shape[rel] - desc)) for rel in pool]
            lookup[img_rel] = [pool[k] for k in np.argsort(dist, kind="stable")[:RETRIEVAL_TOP]]
        if split == "Test":
            pool = points["Test"][c]
            n_used = test_used.get(c, 0)
            lists["Test"]["Point"].append(pool[n_used % len(pool)])
            test_used[c] = n_used + 1
    # Plain pickle of builtin types (what InteractVLM's joblib.load reads), before the list files.
    atomic_write_bytes(root / _RETRIEVAL_FILE[setting], pickle.dumps(lookup, protocol=4))
    for s, kinds in lists.items():
        for kind, paths in kinds.items():
            atomic_write_text(root / f"{kind}_{s}.txt", "".join(p + "\n" for p in paths))


def cli(args: list[str]) -> int:
    """``make_synthetic.py piad --out DIR [--n 440] [--images N] [--seed 0] [--size 224] [--settings Seen Unseen]
    [--workers 2]``."""
    ap = argparse.ArgumentParser(prog="make_synthetic.py piad", description="Write a synthetic PIAD dataset.")
    ap.add_argument("--out", required=True, help="dataset root to write (settings become sub-folders)")
    ap.add_argument("--n", type=int, default=440, help="point clouds per setting")
    ap.add_argument("--images", type=int, default=None, help="images per setting (default: same as --n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--settings", nargs="+", default=["Seen"], choices=["Seen", "Unseen"])
    ap.add_argument("--workers", type=int, default=2, help="processes rendering in parallel")
    a = ap.parse_args(args)
    t0 = time.time()
    out = generate_piad(a.out, n_objects=a.n, n_images=a.images or a.n, seed=a.seed, image_size=a.size,
                        settings=tuple(a.settings), workers=a.workers, verbose=True)
    print(f"wrote synthetic PIAD to {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
