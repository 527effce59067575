"""Per-image inputs of joint human-object reconstruction (PHOSA, InteractVLM's contact-guided fitting).

One folder per image (the format is documented in ``docs/reconstruction_inputs.md``)::

    image.png | image.jpg     RGB image (image.png wins when both exist)
    human_mask.png            8-bit mask of the person, > 127 = inside, same size as the image
    object_mask.png           8-bit mask of the object, > 127 = inside, same size as the image
    body.npz                  pose, shape, transl, cam_k, model_type, gender [, vertices, expression]
    object.obj | object.json  the object mesh, or {"category": NAME} of the category library (object.obj wins)
    contact_human.npy         optional (V,) float contact probabilities of the body's vertices
    contact_object.npy        optional (M,) float contact probabilities of the object mesh's vertices
    gt.json                   optional ground truth {"R", "t", "scale", "human_contact", "object_contact"}

The body is in the camera frame as DAMON stores it (:mod:`zoo.data.damon`): the body model
posed with ``pose`` (global orientation included), ``shape`` and ``transl`` gives the vertices
in the OpenCV camera frame of the image, and ``cam_k`` projects them (``u = fx X / Z + cx``).

:func:`object_library` / :func:`object_mesh` give the category library (canonical closed
meshes in metres, centred at their bounding-box centre); :class:`HOIScenes` (registered as
the ``hoi_scenes`` DataModule) reads many scene folders, validating each one.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.core.batch import DataError
from zoo.core.registry import register
from zoo.data.base import SplitDataModule, check_synthesize, synthesize_missing

# The category library lives beside the generator (which places its meshes) and is re-exported here.
from zoo.data.synthetic.scenes import CATEGORIES, INDEX_FILE, CategorySpec, object_library, object_mesh

__all__ = ["CategorySpec", "CATEGORIES", "object_library", "object_mesh", "check_watertight", "load_scene",
           "collate_scenes", "HOIScenes", "SceneDataset", "BODY_KEYS", "BODY_OPTIONAL_KEYS", "POSE_LENGTHS",
           "NUM_VERTS", "SCENE_FILES", "INDEX_FILE"]

log = logging.getLogger(__name__)

BODY_KEYS = ("pose", "shape", "transl", "cam_k", "model_type", "gender")
BODY_OPTIONAL_KEYS = ("vertices", "expression")
# Accepted pose lengths per model type (full axis-angle; a 72-d SMPL pose also poses SMPL-H / SMPL-X, hands flat).
POSE_LENGTHS = {"smpl": (72,), "smplh": (156, 72), "smplx": (165, 72)}
NUM_VERTS = {"smpl": 6890, "smplh": 6890, "smplx": 10475}
GENDERS = ("neutral", "male", "female")
# Files whose presence makes a folder a scene folder.
SCENE_FILES = ("image.png", "image.jpg", "body.npz", "human_mask.png", "object_mask.png")


# ------------------------------------------------------------------------------------------
# Category library (see zoo.data.synthetic.scenes) and the watertight check
# ------------------------------------------------------------------------------------------

def check_watertight(verts, faces, where: str) -> None:
    """Raise a DataError naming ``where`` when the mesh is not watertight (every edge shared by exactly two faces,
    consistently wound): the collision loss needs a closed object mesh to tell inside from outside."""
    import trimesh

    v = np.asarray(verts.detach().cpu() if torch.is_tensor(verts) else verts, np.float64)
    f = np.asarray(faces.detach().cpu() if torch.is_tensor(faces) else faces, np.int64)
    m = trimesh.Trimesh(v, f, process=False)
    if m.is_watertight and m.is_winding_consistent:
        return
    edges = np.sort(m.edges, axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    n_open = int((counts != 2).sum())
    why = f"{n_open} edge(s) not shared by exactly two faces" if n_open else "inconsistent face winding"
    raise DataError(f"{where}: object mesh is not watertight ({why}); the collision loss needs a closed mesh")


# ------------------------------------------------------------------------------------------
# Reading one scene folder
# ------------------------------------------------------------------------------------------

def _read_mask(path: Path, size_wh: tuple[int, int], image_name: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file not found (each scene folder needs human_mask.png and "
                                "object_mask.png)")
    try:
        with Image.open(path) as im:
            im.load()
            m = np.asarray(im.convert("L"))
    except OSError as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if (m.shape[1], m.shape[0]) != size_wh:
        raise DataError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} (W x H) but {image_name} is "
                        f"{size_wh[0]}x{size_wh[1]}")
    m = m > 127
    if not m.any():
        raise DataError(f"{path}: mask is empty (no pixel > 127)")
    return m


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        m = trimesh.load(str(path), force="mesh", process=False, maintain_order=True)
    except Exception as e:  # trimesh raises many types for broken files
        raise DataError(f"{path}: object mesh cannot be loaded ({type(e).__name__}: {e})") from e
    v = np.asarray(getattr(m, "vertices", np.zeros((0, 3))), np.float64)
    f = np.asarray(getattr(m, "faces", np.zeros((0, 3))), np.int64)
    if v.ndim != 2 or len(v) < 4 or f.ndim != 2 or len(f) < 4 or f.shape[1] != 3:
        raise DataError(f"{path}: object mesh cannot be loaded (no triangle mesh: {len(v)} vertices, "
                        f"{len(f)} faces)")
    if not np.isfinite(v).all():
        raise DataError(f"{path}: object mesh has non-finite vertex coordinates")
    if f.min() < 0 or f.max() >= len(v):
        raise DataError(f"{path}: object mesh faces index vertices outside 0..{len(v) - 1}")
    return v, f


def _read_object(d: Path) -> tuple[np.ndarray, np.ndarray, str]:
    obj, js = d / "object.obj", d / "object.json"
    category = "object"
    if js.is_file():
        try:
            meta = json.loads(js.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{js}: not readable JSON ({type(e).__name__}: {e})") from e
        if not isinstance(meta, dict) or not isinstance(meta.get("category"), str):
            raise DataError(f'{js}: expected {{"category": NAME}}, got {meta!r}')
        category = meta["category"]
        if not obj.is_file() and category not in CATEGORIES:
            raise DataError(f"{js}: unknown category {category!r} and no object.obj; the library has "
                            f"{sorted(CATEGORIES)}")
    if obj.is_file():
        v, f = _read_mesh(obj)
        v = v - (v.min(0) + v.max(0)) / 2  # canonical: centred at the bounding-box centre
        return v, f, category
    if js.is_file():
        v, f = object_mesh(category)
        return v, f, category
    raise FileNotFoundError(f"{d}: no object.obj or object.json (the object mesh, or its library category)")


def _read_body_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: body file not found (pose, shape, transl, cam_k, model_type, gender)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / pickle / value errors of a damaged file
        raise DataError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from e
    missing = [k for k in BODY_KEYS if k not in data]
    extra = [k for k in data if k not in BODY_KEYS + BODY_OPTIONAL_KEYS]
    if missing or extra:
        raise DataError(f"{path}: wrong key set: missing {missing}, unexpected {extra} (expected "
                        f"{list(BODY_KEYS)}, optionally {list(BODY_OPTIONAL_KEYS)})")
    mt, gender = str(data["model_type"]), str(data["gender"])
    if mt not in POSE_LENGTHS:
        raise DataError(f"{path}: model_type {mt!r} is not one of {sorted(POSE_LENGTHS)}")
    if gender not in GENDERS:
        raise DataError(f"{path}: gender {gender!r} is not one of {list(GENDERS)}")
    out: dict[str, Any] = {"model_type": mt, "gender": gender}
    shapes = {"pose": None, "shape": None, "transl": (3,), "cam_k": (3, 3)}
    for k, shape in shapes.items():
        a = np.asarray(data[k])
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: key '{k}' is not numeric ({a.dtype})")
        a = a.astype(np.float64)
        if a.ndim == 2 and a.shape[0] == 1 and k in ("pose", "shape", "transl"):
            a = a[0]  # a batch of one, as regressors write it
        if shape is not None and a.shape != shape:
            raise DataError(f"{path}: key '{k}' has shape {a.shape}, expected {shape}")
        if not np.isfinite(a).all():
            raise DataError(f"{path}: key '{k}' has non-finite values")
        out[k] = a
    if out["pose"].ndim != 1 or out["pose"].shape[0] not in POSE_LENGTHS[mt]:
        raise DataError(f"{path}: key 'pose' has shape {out['pose'].shape}, expected one of "
                        f"{[(n,) for n in POSE_LENGTHS[mt]]} for model_type {mt!r}")
    if out["shape"].ndim != 1 or not 1 <= out["shape"].shape[0] <= 300:
        raise DataError(f"{path}: key 'shape' has shape {out['shape'].shape}, expected (B,) betas")
    K = out["cam_k"]
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise DataError(f"{path}: key 'cam_k' is not a pinhole intrinsics matrix [[fx, s, cx], [0, fy, cy], "
                        f"[0, 0, 1]] with fx, fy > 0: {K.tolist()}")
    if "expression" in data:
        e = np.asarray(data["expression"], np.float64).reshape(-1)
        if mt != "smplx" or not np.isfinite(e).all():
            raise DataError(f"{path}: key 'expression' needs model_type 'smplx' and finite values")
        out["expression"] = e
    if "vertices" in data:
        v = np.asarray(data["vertices"], np.float64)
        if v.shape != (NUM_VERTS[mt], 3) or not np.isfinite(v).all():
            raise DataError(f"{path}: key 'vertices' has shape {v.shape}, expected ({NUM_VERTS[mt]}, 3) finite "
                            f"camera-frame vertices of the {mt} body")
        out["vertices"] = v
    return out


def _read_contact(path: Path, n: int, what: str) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from e
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{path}: has shape {a.shape}, expected ({n},) ({what})")
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DataError(f"{path}: contact probabilities must be finite and in [0, 1]")
    return torch.as_tensor(a.astype(np.float32))


def _read_gt(path: Path, n_body: int, n_obj: int) -> dict[str, torch.Tensor]:
    try:
        gt = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(gt, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(gt).__name__}")
    out: dict[str, torch.Tensor] = {}
    try:
        if "R" in gt:
            R = np.asarray(gt["R"], np.float64)
            if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
                raise DataError(f"{path}: 'R' must be a 3x3 rotation matrix, got {gt['R']!r}")
            out["gt_R"] = torch.as_tensor(R, dtype=torch.float32)
        if "t" in gt:
            t = np.asarray(gt["t"], np.float64)
            if t.shape != (3,) or not np.isfinite(t).all():
                raise DataError(f"{path}: 't' must be 3 finite numbers, got {gt['t']!r}")
            out["gt_t"] = torch.as_tensor(t, dtype=torch.float32)
        if "scale" in gt:
            s = float(gt["scale"])
            if not np.isfinite(s) or s <= 0:
                raise DataError(f"{path}: 'scale' must be positive, got {gt['scale']!r}")
            out["gt_scale"] = torch.tensor(s, dtype=torch.float32)
    except (TypeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: bad pose values ({e})") from e
    for key, n, what in (("human_contact", n_body, "body"), ("object_contact", n_obj, "object mesh")):
        if key not in gt:
            continue
        ids = np.asarray(gt[key])
        if ids.ndim != 1 or (ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0
                                           or ids.max() >= n)):
            raise DataError(f"{path}: '{key}' must be a list of {what} vertex ids in 0..{n - 1}")
        lab = torch.zeros(n)
        lab[torch.as_tensor(ids.astype(np.int64))] = 1.0
        out[f"gt_{key}"] = lab
    return out


def _resize(image: np.ndarray, masks: list[np.ndarray], K: np.ndarray, size_hw: tuple[int, int]):
    from PIL import Image

    H, W = image.shape[:2]
    h, w = size_hw
    if (h, w) == (H, W):
        return image, masks, K
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    out = [np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127 for m in masks]
    K = K.copy()
    K[0] *= w / W  # pixel-edge coordinates scale linearly: u' = u * w / W
    K[1] *= h / H
    K[2] = [0, 0, 1]
    return img, out, K


class _Bodies:
    """Body models by (model type, gender, number of betas), built on first use from ``model_dir``."""

    def __init__(self, model_dir: str | None):
        self.model_dir = model_dir
        self._models: dict[tuple, Any] = {}

    def get(self, model_type: str, gender: str, num_betas: int, where: Path):
        """The body model, or a FileNotFoundError / DataError naming ``where`` (the body file asking for it)."""
        from zoo.body.model import BodyModel

        key = (model_type, gender, max(num_betas, 10))
        if key not in self._models:
            try:
                self._models[key] = BodyModel(self.model_dir, model_type, gender, num_betas=key[2])
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{where}: {e}") from e
            except ValueError as e:
                raise DataError(f"{where}: {e}") from e
        return self._models[key]

    def part_labels(self, model) -> torch.Tensor:
        """SMPL 24-part ids (V,) of a model's vertices."""
        if not hasattr(model, "_hoi_part_labels"):
            from zoo.body.mesh import vertex_part_labels

            model._hoi_part_labels = torch.as_tensor(np.asarray(vertex_part_labels(model.lbs_weights)),
                                                     dtype=torch.long)
        return model._hoi_part_labels


def load_scene(folder: str | os.PathLike, bodies: _Bodies | str | None = None,
               image_size: int | tuple[int, int] | None = None, require_watertight: bool = False,
               name: str | None = None) -> dict[str, Any]:
    """Read and check one scene folder; returns the per-sample dict of the contract (see module docstring).

    ``bodies``: a body-model folder (or the loader's cache of models). ``image_size`` (int: square, or (H, W))
    resizes the image, both masks and K consistently. Bad input raises FileNotFoundError / DataError naming the
    file and what was expected.
    """
    from PIL import Image

    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: scene folder not found")
    bodies = bodies if isinstance(bodies, _Bodies) else _Bodies(None if bodies is None else str(bodies))
    img_path = next((d / n for n in ("image.png", "image.jpg") if (d / n).is_file()), None)
    if img_path is None:
        raise FileNotFoundError(f"{d}: no image.png or image.jpg")
    try:
        with Image.open(img_path) as im:
            im.load()
            image = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataError(f"{img_path}: not a readable image ({type(e).__name__}: {e})") from e
    size_wh = (image.shape[1], image.shape[0])
    human = _read_mask(d / "human_mask.png", size_wh, img_path.name)
    objm = _read_mask(d / "object_mask.png", size_wh, img_path.name)
    body_path = d / "body.npz"
    body = _read_body_file(body_path)
    ov, of, category = _read_object(d)
    where_obj = d / "object.obj" if (d / "object.obj").is_file() else d / "object.json"
    if require_watertight:
        check_watertight(ov, of, str(where_obj))
    model = bodies.get(body["model_type"], body["gender"], body["shape"].shape[0], body_path)
    if model.num_vertices != NUM_VERTS[body["model_type"]]:
        raise DataError(f"{body_path}: the {body['model_type']} model {model.path} has {model.num_vertices} "
                        f"vertices, expected {NUM_VERTS[body['model_type']]}")
    if "vertices" in body:
        verts = torch.as_tensor(body["vertices"], dtype=torch.float32)
    else:
        kw = {}
        if "expression" in body:
            n_exp = int(model.layer.num_expression_coeffs)
            e = np.zeros(n_exp)
            e[: min(n_exp, len(body["expression"]))] = body["expression"][:n_exp]
            kw["expression"] = torch.as_tensor(e[None], dtype=torch.float32)
        with torch.no_grad():
            verts = model(pose=torch.as_tensor(body["pose"][None], dtype=torch.float32),
                          betas=torch.as_tensor(body["shape"][None], dtype=torch.float32),
                          transl=torch.as_tensor(body["transl"][None], dtype=torch.float32), **kw)["vertices"][0]
    verts = verts.float()
    V = verts.shape[0]
    K = body["cam_k"]
    if image_size is not None:
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(int(x) for x in image_size)
        image, (human, objm), K = _resize(image, [human, objm], K, hw)
    sample: dict[str, Any] = {
        "name": name or d.name, "dir": str(d), "image": torch.from_numpy(np.array(image, np.uint8)),
        "K": torch.as_tensor(K, dtype=torch.float32), "image_size": (int(image.shape[0]), int(image.shape[1])),
        "human_mask": torch.as_tensor(human), "object_mask": torch.as_tensor(objm),
        "body_verts": verts, "body_faces": model.faces.clone().long(), "body_model_type": body["model_type"],
        "body_part_labels": bodies.part_labels(model).clone(),
        "object_verts": torch.as_tensor(ov, dtype=torch.float32), "object_faces": torch.as_tensor(of).long(),
        "category": category,
    }
    hc = _read_contact(d / "contact_human.npy", V, f"the {body['model_type']} body's vertex count")
    oc = _read_contact(d / "contact_object.npy", len(ov), f"the vertex count of {where_obj.name}'s mesh")
    if hc is not None:
        sample["human_contact"] = hc
    if oc is not None:
        sample["object_contact"] = oc
    if (d / "gt.json").is_file():
        sample.update(_read_gt(d / "gt.json", V, len(ov)))
    return sample


def collate_scenes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of scenes: ``{"samples": [per-sample dict, ...], "name": [str, ...]}`` (meshes and images keep
    their own sizes, so nothing is stacked)."""
    return {"samples": list(items), "name": [it["name"] for it in items]}


# ------------------------------------------------------------------------------------------
# DataModule
# ------------------------------------------------------------------------------------------

class SceneDataset(Dataset):
    """Scene folders read with :func:`load_scene` (samples already read while checking are reused)."""

    def __init__(self, folders: list[Path], loader, cache: dict[str, dict] | None = None):
        self.folders = list(folders)
        self.loader = loader
        self.cache = cache if cache is not None else {}

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.folders[i]
        hit = self.cache.get(str(f))
        return hit if hit is not None else self.loader(f)


def _is_scene(d: Path) -> bool:
    return d.is_dir() and any((d / n).exists() for n in SCENE_FILES)


@register("datamodule", "hoi_scenes")
class HOIScenes(SplitDataModule):
    """Scene folders of joint human-object reconstruction (one folder per image; docs/reconstruction_inputs.md).

    Which folders: ``scenes`` (a list of folders, absolute or relative to ``root``, or a text file listing one a
    line), else ``root/scenes.txt`` when present (the synthetic generator writes it), else every immediate
    sub-folder of ``root`` holding a scene file (image, masks or body.npz), sorted; a ``root`` that is itself a
    scene folder is the only scene. ``setup`` (any stage) reads and checks every scene; ``test_dataloader`` and
    ``predict_dataloader`` yield ``{"samples": [...], "name": [...]}`` batches in folder order (per-image fitting
    has no training split: ``train_dataloader`` gives the same scenes shuffled, ``val_dataloader`` in order).

    Bad scenes: with ``skip_bad`` (default: True when there is more than one scene) each bad scene is logged as a
    warning naming the folder and the reason, listed in ``skipped`` ((folder, reason) pairs) and counted in
    ``num_skipped`` / :meth:`data_report` (``data/test/skipped``); skipping all of them, or more than
    ``max_skip_fraction``, fails. Otherwise the first bad scene raises its error (naming the file).

    ``body_model_dir``: where the SMPL / SMPL-H / SMPL-X files are (default
    :func:`zoo.body.model.default_body_model_dir`). ``image_size`` (int or (H, W)) resizes image, masks and K.
    ``require_watertight`` rejects object meshes that are not closed. ``synthesize`` (keyword arguments of
    :func:`zoo.data.synthetic.scenes.generate_scenes`) writes synthetic scenes under ``root`` when it has no
    ``scenes.txt``.
    """

    data_name = "hoi_scenes"
    name_keys = ("name",)

    def __init__(self, root: str | None = None, scenes: list[str] | str | None = None,
                 body_model_dir: str | None = None, batch_size: int = 1, num_workers: int = 0,
                 image_size: int | list[int] | None = None, skip_bad: bool | None = None,
                 max_skip_fraction: float = 0.5, require_watertight: bool = False, max_samples: int | None = None,
                 synthesize: dict | None = None, cache: bool = True, seed: int = 0, pin_memory: bool = False,
                 drop_last: bool = False):
        super().__init__()
        if root is None and scenes is None:
            raise DataError("hoi_scenes: give root (a folder of scene folders) or scenes (a list of folders)")
        if batch_size <= 0:
            raise DataError(f"hoi_scenes: batch_size must be positive, got {batch_size}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise DataError(f"hoi_scenes: max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        if image_size is not None and not isinstance(image_size, int):
            image_size = [int(x) for x in image_size]
            if len(image_size) != 2:
                raise DataError(f"hoi_scenes: image_size must be an int or [H, W], got {image_size}")
        if synthesize is not None:
            if root is None:
                raise DataError("hoi_scenes: synthesize needs a root to write the scenes under")
            from zoo.data.synthetic.scenes import generate_scenes

            synthesize = check_synthesize("hoi_scenes", generate_scenes, synthesize)
        self.save_hyperparameters()
        self.root = None if root is None else Path(os.path.expandvars(str(root))).expanduser()
        self.num_skipped = 0
        self.skipped: list[tuple[str, str]] = []
        self.train_set = self.val_set = None
        self.test_set: SceneDataset | None = None
        self._bodies = _Bodies(body_model_dir)

    def folders(self) -> list[Path]:
        """The scene folders this module reads, in order (see the class docstring)."""
        sc, root = self.hparams.scenes, self.root
        if isinstance(sc, str):
            p = Path(sc) if root is None or Path(sc).is_absolute() else root / sc
            if not p.is_file():
                raise FileNotFoundError(f"hoi_scenes: scene list {p} not found")
            sc = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            base = p.parent
        else:
            base = root
        if sc is None:
            if _is_scene(root) and not (root / INDEX_FILE).is_file():
                return [root]
            index = root / INDEX_FILE
            if index.is_file():
                sc = [ln.strip() for ln in index.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
                base = root
            elif root.is_dir():
                return sorted(d for d in root.iterdir() if not d.name.startswith(".") and _is_scene(d))
            else:
                raise FileNotFoundError(f"hoi_scenes: root {root} not found")
        return [Path(s) if base is None or Path(s).is_absolute() else base / s for s in sc]

    def load(self, folder: str | os.PathLike) -> dict[str, Any]:
        """One scene read with this module's settings (:func:`load_scene`)."""
        return load_scene(folder, self._bodies, self.hparams.image_size, self.hparams.require_watertight)

    def _synthesize(self) -> None:
        from zoo.body.model import body_model_file, default_body_model_dir
        from zoo.data.synthetic.scenes import generate_scenes

        kw = dict(self.hparams.synthesize)
        kw.setdefault("model_dir", self.hparams.body_model_dir or str(default_body_model_dir()))

        def write() -> None:
            body_model_file(kw["model_dir"], "smpl", synthesize=True)
            generate_scenes(self.root, **kw)

        synthesize_missing("hoi_scenes", self.root, [self.root / INDEX_FILE], write,
                           f"[hoi_scenes] no scenes under {self.root}: writing synthetic scenes there ({kw})")

    def setup(self, stage: str | None = None) -> None:
        """Read and check every scene folder (any stage); the test / predict split is all the good ones."""
        self._ensure_data()
        if self.test_set is not None:
            return
        folders = self.folders()
        if self.hparams.max_samples is not None:
            folders = folders[: self.hparams.max_samples]
        if not folders:
            raise DataError(f"hoi_scenes: no scene folders under {self.root}")
        skip = self.hparams.skip_bad if self.hparams.skip_bad is not None else len(folders) > 1
        cache: dict[str, dict] = {}
        good = []
        for f in folders:
            try:
                s = self.load(f)
            except (ValueError, FileNotFoundError, KeyError) as e:
                if not skip:
                    raise
                reason = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
                log.warning("hoi_scenes: skipped scene %s: %s", f, reason)
                self.skipped.append((str(f), reason))
                continue
            good.append(f)
            if self.hparams.cache:
                cache[str(f)] = s
        self.num_skipped = len(self.skipped)
        self._count_skipped("test", self.root if self.root is not None else "scene list", len(folders),
                            [r for _, r in self.skipped], "samples")
        self.test_set = SceneDataset(good, self.load, cache)
        # Per-image fitting has no training split: train / val loaders give the same scenes (train shuffled).
        self.train_set = self.val_set = self.test_set

    def _collate(self):
        return collate_scenes
