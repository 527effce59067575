"""LEMON / 3DIR (LEMON, CVPR 2024) as a LightningDataModule, reading the released on-disk layout.

Files under ``root`` (LEMON's ``Data`` folder), as lemon_3d's ``dataset_3DIR.py`` reads them:
``txt_scripts/{train,val}.txt`` (image paths) and ``txt_scripts/Point_{train,val}.txt``
(object point files), ``Images/<Object>/<aff>/<name>.jpg``, ``mask/<Object>/<name>.png``,
``Objects/<Object>/*.txt``, ``smplh_contact_pkl/<Object>/<aff>/<name>.pkl``,
``smplh_param/human_label.json``. Stored paths are relative to the folder holding ``Data``
(``Data/Images/...``); they are resolved as absolute, relative to ``root``'s parent,
``root``, the working directory, or with their first component dropped relative to
``root``. The release comes from the LEMON authors (github.com/yyvhang/lemon_3d; BEHAVE
samples are not read); ``tools/make_synthetic.py lemon --out DIR`` writes a synthetic set, and
``synthesize={"n": 300, "seed": 0}`` has the DataModule write one under ``root`` when it finds
none there.

Per sample (image ``.../Images/<Object>/<aff>/<Object>_<aff>_<n>.jpg``; the object is the
first ``_`` field of the name and the affordance the second, as lemon_3d parses it):

* the object point file: 2048 rows of ``x y z`` + 17 affordance values in
  ``LEMON_AFFORDANCES`` order, no leading tokens (20 fields; strict, errors name the file
  and the 1-based line), centred and scaled to the unit sphere;
* the SMPL-H contact: the image path with ``Images`` -> ``smplh_contact_pkl`` and
  ``.jpg`` -> ``.pkl``, a pickled array of 6890 values;
* the human parameters: ``human_label.json`` under the key ``Images/<Object>/<aff>/<name>.jpg``.

Train pairs each image with a random object cloud of its class, redrawn per epoch from
(seed, epoch, sample) (exact resume); a seeded ``val_fraction`` of train.txt is the
validation split (pairs fixed); the test split is val.txt with Point_val.txt aligned.

Batch keys (B = batch size, N = num_points, S = image_size):

* ``points`` float32 (B, N, 3); ``affordance`` float32 (B, N), the image's column;
  ``affordance_all`` float32 (B, N, 17) (``LEMON_AFFORDANCES`` order);
  ``affordance_index`` long (B,); ``affordance_name`` list[str]
* ``object_index`` long (B,) into ``dm.classes`` (sorted); ``object_name`` list[str]
* ``image`` float32 (B, 3, S, S), ImageNet-normalised (masked to human + object with
  ``use_mask=True``, as lemon_3d does; absent with ``load_images=False``)
* ``contact_label`` float32 (B, 6890), SMPL-H vertex contact
* ``betas`` float32 (B, 16); ``transl`` float32 (B, 3)
* ``global_orient_rotmat`` float32 (B, 3, 3); ``body_pose_rotmat`` (B, 21, 3, 3);
  ``left_hand_pose_rotmat``, ``right_hand_pose_rotmat`` (B, 15, 3, 3) rotation matrices
* ``human_box`` float32 (B, 4), x1, y1, x2, y2 in resized-image pixels
* ``point_id``, ``image_id`` list[str] (paths as listed); ``index`` long (B,), the image's row
"""
from __future__ import annotations

import inspect
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.core.batch import DataError
from zoo.core.paths import resolve_data_path
from zoo.core.registry import register
from zoo.data.base import SplitDataModule, check_synthesize, seeded_split, synthesize_missing
from zoo.data.formats import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LEMON_AFFORDANCES,
    LEMON_OBJECTS,
    CloudCache,
    image_size,
    load_image,
    read_list,
    resolve_path,
)
from zoo.data.sampling import PairSampler, pair_draw

__all__ = ["LemonDataset", "LemonDataModule", "read_contact", "lemon_resolve"]

NUM_VERTS = 6890
_PARAM_SHAPES = {"shape": (16,), "transl": (3,), "global_orient": (3, 3), "body_pose": (21, 3, 3),
                 "left_hand_pose": (15, 3, 3), "right_hand_pose": (15, 3, 3)}
_LIST_HINT = (" (expected txt_scripts/{train,val}.txt and Point_{train,val}.txt under the Data folder; write a "
              "synthetic set with `python tools/make_synthetic.py lemon --out DIR`, or give the DataModule "
              "`synthesize: {...}` to write one there when none is found)")


def _read_list(path: str | os.PathLike) -> list[str]:
    return read_list(path, "LEMON list file", _LIST_HINT)


def lemon_resolve(stored: str, root: str) -> str | None:
    """A stored path resolved: absolute, relative to root's parent, root, the cwd, or without its
    first component (``Data/``) relative to root; None if nowhere."""
    a = os.path.abspath(root)
    found = resolve_path(stored, [os.path.dirname(a), a, os.getcwd()])
    parts = Path(stored).parts
    if found is None and not os.path.isabs(stored) and len(parts) > 1:
        found = resolve_path(os.path.join(*parts[1:]), [a])
    return found


def _strip_to(stored: str, anchor: str) -> str:
    """The part of a stored path from its ``anchor`` component on (e.g. ``Images/...``)."""
    parts = Path(stored).parts
    if anchor in parts:
        return "/".join(parts[parts.index(anchor):])
    return "/".join(parts[1:]) if len(parts) > 1 else stored


def read_contact(path: str) -> np.ndarray:
    """A pickled SMPL-H contact array as float32 (6890,); errors name the file."""
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    except Exception:
        try:  # some files may be .npy saved under a .pkl name
            data = np.load(path, allow_pickle=True)
        except Exception as e:
            raise DataError(f"{path}: not a readable contact pickle ({type(e).__name__}: {e})") from e
    arr = np.asarray(data, dtype=np.float64)
    if arr.size != NUM_VERTS:
        raise DataError(f"{path}: contact has {arr.size} values (shape {arr.shape}), expected {NUM_VERTS} "
                        f"(one per SMPL-H vertex)")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: contact has NaN/inf")
    return arr.reshape(NUM_VERTS).astype(np.float32)


class LemonDataset(Dataset):
    """(image, object cloud, human contact and parameters) samples of one LEMON list.

    ``mode``: "train" (pairs redrawn per epoch; items indexed by ``i`` or ``(i, epoch)``),
    "val" (pairs fixed) or "test" (point list aligned line by line).
    """

    def __init__(self, root: str, split: str, mode: str, rows: np.ndarray | None, classes: list[str],
                 human: dict, image_size: int = 224, num_points: int = 2048, seed: int = 0,
                 load_images: bool = True, use_mask: bool = False, cache: CloudCache | None = None):
        if mode not in ("train", "val", "test"):
            raise DataError(f"LemonDataset: mode must be train, val or test, got {mode!r}")
        self.root = str(root)
        self.mode = mode
        self.image_size = image_size
        self.seed = seed
        self.load_images = load_images
        self.use_mask = use_mask
        self.classes = classes
        self.human = human
        self.cache = cache or CloudCache(num_points, n_lead=0)
        self.img_list = os.path.join(self.root, "txt_scripts", f"{split}.txt")
        self.pt_list = os.path.join(self.root, "txt_scripts", f"Point_{split}.txt")
        self.images = _read_list(self.img_list)
        self.points = _read_list(self.pt_list)
        if mode == "test" and len(self.points) != len(self.images):
            raise DataError(f"{self.pt_list}: {len(self.points)} point files but {self.img_list} has "
                            f"{len(self.images)} images (test lists are aligned line by line)")
        self.labels = []
        for ln, p in enumerate(self.images, 1):
            fields = os.path.basename(p).rsplit(".", 1)[0].split("_")
            if len(fields) < 3 or fields[1] not in LEMON_AFFORDANCES:
                raise DataError(f"{self.img_list}: line {ln}: image name {p} does not read <Object>_<affordance>_<n> "
                                f"with an affordance among {', '.join(LEMON_AFFORDANCES)}")
            self.labels.append((fields[0], fields[1]))
        self.by_class: dict[str, list[int]] = {}
        for j, p in enumerate(self.points):
            self.by_class.setdefault(_point_class(p), []).append(j)
        self.rows = np.arange(len(self.images)) if rows is None else np.asarray(rows, dtype=np.int64)
        if mode != "test":
            for r in self.rows.tolist():
                if self.labels[r][0] not in self.by_class:
                    raise DataError(f"{self.img_list}: line {r + 1}: image {self.images[r]} is a '{self.labels[r][0]}'"
                                    f" but {self.pt_list} lists no object file of that class")

    def __len__(self) -> int:
        return len(self.rows)

    def _resolve(self, stored: str, what: str, list_file: str, row: int) -> str:
        p = lemon_resolve(stored, self.root)
        if p is None:
            raise FileNotFoundError(f"{list_file}: line {row + 1}: {what} not found: {stored} (looked under "
                                    f"{self.root} and its parent)")
        return p

    @property
    def point_list(self) -> str:
        """The point list file."""
        return self.pt_list

    @property
    def image_list(self) -> str:
        """The image list file."""
        return self.img_list

    def point_path(self, j: int) -> str:
        """The resolved object file of point-list row ``j``; FileNotFoundError naming the list line if missing."""
        return self._resolve(self.points[j], "object file", self.pt_list, j)

    def check_point(self, j: int) -> None:
        """Parse point-list row ``j``'s file (strictly, at least ``num_points`` points) into the cache; errors name it."""
        self.cache.get(self.point_path(j))

    def _data_name(self) -> str:
        return os.path.basename(os.path.abspath(self.root))

    def contact_path(self, row: int) -> str:
        """The resolved SMPL-H contact pickle of image row ``row``; FileNotFoundError naming the list line if missing."""
        img_rel = _strip_to(self.images[row], "Images")
        contact_rel = "smplh_contact_pkl/" + img_rel.split("/", 1)[1].rsplit(".", 1)[0] + ".pkl"
        cpath = lemon_resolve(os.path.join(self._data_name(), contact_rel), self.root)
        if cpath is None:
            raise FileNotFoundError(f"{self.img_list}: line {row + 1}: contact file not found: {contact_rel} "
                                    f"(under {self.root})")
        return cpath

    def mask_path(self, row: int) -> str:
        """The resolved human-object mask of image row ``row`` (``use_mask``); FileNotFoundError if missing."""
        img_rel = _strip_to(self.images[row], "Images")
        mrel = f"mask/{img_rel.split('/')[1]}/{os.path.basename(img_rel).rsplit('.', 1)[0]}.png"
        mpath = lemon_resolve(os.path.join(self._data_name(), mrel), self.root)
        if mpath is None:
            raise FileNotFoundError(f"{self.img_list}: line {row + 1}: mask not found: {mrel} (under {self.root})")
        return mpath

    def check_row(self, row: int) -> None:
        """Check image row ``row`` as a sample will read it: the image (header only, not decoded), the contact
        pickle, the human parameters, the mask (``use_mask``), in test mode the aligned object file, otherwise
        that an object file of its class is left."""
        ipath = self._resolve(self.images[row], "image", self.img_list, row)
        paths = [("image", ipath)] + ([("mask", self.mask_path(row))] if self.load_images and self.use_mask else [])
        for what, p in paths:
            try:
                image_size(p)
            except Exception as e:  # PIL raises several types for broken files
                raise DataError(f"{self.img_list}: line {row + 1}: {what} {p} is not readable "
                                f"({type(e).__name__}: {e})") from e
        read_contact(self.contact_path(row))
        self._human(row)
        if self.mode == "test":
            self.check_point(row)
        elif not self.by_class.get(self.labels[row][0]):
            raise DataError(f"{self.img_list}: line {row + 1}: image {self.images[row]} is a '{self.labels[row][0]}'"
                            f" but every object file of that class in {self.pt_list} is bad")

    def drop_points(self, bad: set[int]) -> None:
        """Remove point-list rows ``bad`` from the pools training and validation pairs are drawn from."""
        self.by_class = {c: [j for j in js if j not in bad] for c, js in self.by_class.items()}

    def point_row(self, i: int, epoch: int = 0) -> int:
        """The point-list row paired with item ``i`` in ``epoch``."""
        row = int(self.rows[i])
        if self.mode == "test":
            return row
        pool = self.by_class[self.labels[row][0]]
        return pool[pair_draw(len(pool), self.seed, epoch if self.mode == "train" else 0, i)]

    def _human(self, row: int) -> dict[str, Any]:
        key = _strip_to(self.images[row], "Images")
        rec = self.human.get(key)
        if rec is None:
            raise KeyError(f"{self.img_list}: line {row + 1}: human_label.json has no entry '{key}'")
        param = rec.get("smplh_param")
        if not isinstance(param, dict):
            raise DataError(f"human_label.json['{key}']: no 'smplh_param' dict")
        out = {}
        for k, shape in _PARAM_SHAPES.items():
            if k not in param:
                raise DataError(f"human_label.json['{key}']['smplh_param']: key '{k}' missing")
            a = np.asarray(param[k], dtype=np.float64)
            if a.size != int(np.prod(shape)) or not np.isfinite(a).all():
                raise DataError(f"human_label.json['{key}']['smplh_param']['{k}']: expected {shape} finite values, "
                                f"got shape {a.shape}")
            out[k] = a.reshape(shape)
        box = np.asarray(rec.get("human_box", [0, 0, 0, 0]), dtype=np.float64).reshape(-1)
        if box.size != 4 or not np.isfinite(box).all():
            raise DataError(f"human_label.json['{key}']['human_box']: expected [x1, y1, x2, y2], got {box.tolist()}")
        out["human_box"] = box
        return out

    def __getitem__(self, key) -> dict[str, Any]:
        from PIL import Image

        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.img_list}: index {i} out of range for {len(self)} samples")
        row = int(self.rows[i])
        prow = self.point_row(i, epoch)
        obj, aff = self.labels[row]
        xyz, aff_all = self.cache.get(self.point_path(prow))
        a_idx = LEMON_AFFORDANCES.index(aff)
        cpath = self.contact_path(row)
        h = self._human(row)
        ipath = self._resolve(self.images[row], "image", self.img_list, row)
        S = self.image_size
        w0, h0 = image_size(ipath)
        item: dict[str, Any] = {
            "points": torch.from_numpy(xyz),
            "affordance": torch.from_numpy(np.ascontiguousarray(aff_all[:, a_idx])),
            "affordance_all": torch.from_numpy(aff_all),
            "affordance_index": a_idx, "affordance_name": aff,
            "object_index": self.classes.index(obj), "object_name": obj,
            "contact_label": torch.from_numpy(read_contact(cpath)),
            "betas": torch.as_tensor(h["shape"], dtype=torch.float32),
            "transl": torch.as_tensor(h["transl"], dtype=torch.float32),
            "global_orient_rotmat": torch.as_tensor(h["global_orient"], dtype=torch.float32),
            "body_pose_rotmat": torch.as_tensor(h["body_pose"], dtype=torch.float32),
            "left_hand_pose_rotmat": torch.as_tensor(h["left_hand_pose"], dtype=torch.float32),
            "right_hand_pose_rotmat": torch.as_tensor(h["right_hand_pose"], dtype=torch.float32),
            "human_box": torch.as_tensor(h["human_box"] * np.array([S / w0, S / h0, S / w0, S / h0]),
                                         dtype=torch.float32),
            "point_id": self.points[prow], "image_id": self.images[row], "index": row,
        }
        if self.load_images:
            img, _ = load_image(ipath, S, f"{self.img_list}: line {row + 1}")
            if self.use_mask:
                with Image.open(self.mask_path(row)) as m:
                    mk = np.asarray(m.convert("L").resize((S, S), Image.NEAREST)) > 0
                # Masked-out pixels become black before normalisation, as lemon_3d multiplies the image by the mask.
                black = (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)
                img = np.where(mk[None], img, black[:, None, None])
            item["image"] = torch.from_numpy(np.ascontiguousarray(img))
        return item


def _point_class(path: str) -> str:
    """The object class of a LEMON object file: the folder after ``Objects`` (else the parent folder)."""
    parts = Path(path).parts
    if "Objects" in parts and parts.index("Objects") + 1 < len(parts) - 1:
        return parts[parts.index("Objects") + 1]
    return Path(path).parent.name


@register("datamodule", "lemon")
class LemonDataModule(SplitDataModule):
    """LEMON/3DIR train/val/test loaders (layout, pairing and batch keys in the module docstring).

    ``val_fraction`` of train.txt (seeded) is the validation split; val.txt is the test
    split. ``load_images=False`` skips the photos; ``use_mask=True`` blacks out pixels
    outside the human-object mask as lemon_3d does. ``max_samples`` caps each split.

    ``setup`` (any stage) checks every file a split will read before the first step: every object
    file a sample may be paired with (parsed strictly; fewer than ``num_points`` points is an error
    naming the file and both counts), every image (and mask) header, contact pickle and
    ``human_label.json`` entry. ``fit``/``validate``/None set up train, val and test; ``test``/
    ``predict`` the test split. ``skip_bad=True`` drops bad samples (and bad train object files)
    instead, as DAMON and PIAD do: counted in ``num_skipped``, listed in ``skipped``, logged and
    reported by :meth:`data_report`; a split left with none, or with more than
    ``max_skip_fraction`` (0.5) of it dropped, fails naming the split, the list file, the counts
    and the first problem. ``root`` is resolved with :func:`zoo.core.paths.resolve_data_path`.

    ``synthesize`` (keyword arguments of :func:`zoo.data.synthetic.lemon.generate_lemon`, e.g.
    ``{"n": 300, "seed": 0}``): when the list files and ``human_label.json`` are not under
    ``root``, ``prepare_data`` (or the first ``setup``) writes a synthetic set there, posing the
    SMPL-H model in ``body_model_dir`` (default :func:`zoo.body.model.default_body_model_dir`,
    where the synthetic stand-in is written first if no SMPL-H model is there). Existing files
    are never overwritten.
    """

    data_name = "lemon"

    def __init__(self, root: str, batch_size: int = 8, num_workers: int = 0, image_size: int = 224, seed: int = 0,
                 val_fraction: float = 0.1, num_points: int = 2048, load_images: bool = True, use_mask: bool = False,
                 max_samples: int | None = None, cache: bool = True, pin_memory: bool = False,
                 drop_last: bool = False, synthesize: dict | None = None, skip_bad: bool = False,
                 max_skip_fraction: float = 0.5):
        super().__init__()
        if batch_size <= 0:
            raise DataError(f"lemon: batch_size must be positive, got {batch_size}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise DataError(f"lemon: max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"lemon: val_fraction must be in [0, 1), got {val_fraction}")
        if synthesize is not None:
            from zoo.data.synthetic.lemon import generate_lemon

            synthesize = check_synthesize("lemon", generate_lemon, synthesize)
        self.save_hyperparameters()
        self.root = str(resolve_data_path(root))
        self._cache = CloudCache(num_points, cache, n_lead=0)
        self.num_skipped = 0
        self.skipped: list[tuple[str, int, str]] = []  # (list file, 0-based line, problem)
        self._human: dict | None = None
        self._classes: list[str] | None = None
        self.train_set: LemonDataset | None = None
        self.val_set: LemonDataset | None = None
        self.test_set: LemonDataset | None = None

    @property
    def human(self) -> dict:
        """The parsed ``smplh_param/human_label.json``."""
        if self._human is None:
            path = Path(self.root) / "smplh_param" / "human_label.json"
            if not path.is_file():
                raise FileNotFoundError(f"LEMON human parameters not found: {path} (write a synthetic set with "
                                        f"`python tools/make_synthetic.py lemon --out {self.root}`, or give the "
                                        f"DataModule `synthesize: {{n: 300, seed: 0}}` to write one there when none "
                                        f"is found)")
            try:
                self._human = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON ({e})") from e
        return self._human

    @property
    def classes(self) -> list[str]:
        """Sorted object classes: LEMON's 21 plus any other class the lists name."""
        if self._classes is None:
            found = set()
            for split in ("train", "val"):
                f = Path(self.root) / "txt_scripts" / f"{split}.txt"
                if f.is_file():
                    found |= {os.path.basename(p).split("_")[0] for p in _read_list(f)}
            self._classes = sorted(set(LEMON_OBJECTS) | found)
        return list(self._classes)

    def _dataset(self, split: str, mode: str, rows) -> LemonDataset:
        h = self.hparams
        return LemonDataset(self.root, split, mode, rows, self.classes, self.human, image_size=h.image_size,
                            num_points=h.num_points, seed=h.seed, load_images=h.load_images, use_mask=h.use_mask,
                            cache=self._cache)

    def _synthesize(self) -> None:
        """Write a synthetic LEMON set under ``root`` if its lists and human parameters are not there."""
        from zoo.body.model import body_model_file, default_body_model_dir
        from zoo.data.synthetic.lemon import generate_lemon

        r = Path(self.root)
        required = [r / "txt_scripts" / f"{pre}{split}.txt" for split in ("train", "val") for pre in ("", "Point_")]
        required.append(r / "smplh_param" / "human_label.json")
        kw = dict(self.hparams.synthesize)
        kw.setdefault("body_model_dir", str(default_body_model_dir()))
        seed = kw.get("seed", inspect.signature(generate_lemon).parameters["seed"].default)
        args = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "seed")

        def write() -> None:
            body_model_file(kw["body_model_dir"], "smplh", synthesize=True)  # the synthetic SMPL-H if none is there
            generate_lemon(self.root, **kw)

        synthesize_missing("lemon", self.root, required, write,
                           f"[lemon] no LEMON data under {self.root}: writing a synthetic LEMON-format set there "
                           f"with seed {seed} ({args})")

    def setup(self, stage: str | None = None) -> None:
        """Build and check the datasets of a stage: 'fit', 'validate' or None set up train, val and test (every
        file checked before the first training step); 'test' and 'predict' the test split."""
        self._ensure_data()
        if stage in (None, "fit", "validate") and self.train_set is None:
            n = len(_read_list(Path(self.root) / "txt_scripts" / "train.txt"))
            val_rows, train_rows = seeded_split(n, self.hparams.val_fraction, self.hparams.seed)
            val = self._dataset("train", "val", self._cap(val_rows))
            train = self._dataset("train", "train", self._cap(train_rows))
            self._check_paired(train, val)
            self.val_set, self.train_set = val, train
        if self.test_set is None:
            test = self._dataset("val", "test", None)
            test.rows = self._cap(test.rows)
            test.rows = np.asarray(self._drop_bad("test", test.image_list, test.rows.tolist(), test.check_row),
                                   dtype=np.int64)
            self.test_set = test

    def _sampler(self, n: int) -> PairSampler:
        # (index, epoch) keys: object clouds are redrawn per epoch
        return PairSampler(n, self.hparams.seed)
