"""PIAD (IAGNet, ICCV 2023) as a LightningDataModule, reading the released on-disk layout.

Files under ``root`` (the folder holding the ``Seen``/``Unseen`` setting folders, or a
setting folder itself): ``Point_{Train,Test}.txt``, ``Img_{Train,Test}.txt``,
``Box_{Train,Test}.txt``, one path per line. Stored paths are absolute or relative to the
setting folder, its parent, its grandparent or the working directory (the release stores
``Data/Seen/...`` relative to IAGNet's checkout). The real PIAD comes from the IAGNet
authors (github.com/yyvhang/IAGNet); ``tools/make_synthetic.py piad --out DIR`` writes a
synthetic set in the same layout, and ``synthesize={"seed": 0}`` has the DataModule write one
under ``root`` when it finds none there.

Point files: one point per line, whitespace-separated: two leading tokens (an id and the
class; skipped), ``x y z`` and the 17 affordance values (22 fields). A line with another
field count, a non-number, a non-finite value or an affordance outside [0, 1] raises a
ValueError naming the file and the 1-based line. Points are centred on their mean and
scaled so the farthest point is at distance 1 (IAGNet's ``pc_normalize``). A file with
more than ``num_points`` (2048) points gives a fixed subset of them (seeded by the file's
path), so clouds batch; a file with fewer is an error naming it and both counts.
Parsed clouds are cached in memory. Every file is checked at ``setup`` (see ``PiadDataModule``).

Names: the object class of a point file is the second-to-last ``_`` field of its name;
an image name ends ``..._<Object>_<affordance>_<n>.jpg`` and only that affordance's
column is the label. Train pairs every image with ``pairs_per_image`` random clouds of its
class, redrawn each epoch from (seed, epoch, sample) so a resumed run sees the same
pairs; a seeded ``val_fraction`` of the train images forms the validation split (pairs
fixed); Test pairs the lists line by line.

Batch keys (B = batch size, N = num_points, S = image_size):

* ``points``           float32 (B, N, 3), centred, unit-sphere normalised
* ``affordance``       float32 (B, N), the image's affordance column
* ``affordance_all``   float32 (B, N, 17), all columns (``AFFORDANCES`` order)
* ``affordance_index`` long (B,), column of the label in ``AFFORDANCES``
* ``affordance_name``  list[str]
* ``object_index``     long (B,), index into ``dm.classes`` (sorted)
* ``object_name``      list[str]
* ``image``            float32 (B, 3, S, S), ImageNet-normalised RGB (absent with ``load_images=False``)
* ``box_subject``      float32 (B, 4), x0, y0, x1, y1 in resized-image pixels; zeros when the
  box file has no ``subject`` shape (some PIAD files lack one, as IAGNet also fills zeros)
* ``box_object``       float32 (B, 4), same for the ``object`` shape
* ``point_id``         list[str], the point file path as listed (a stable cache key)
* ``image_id``         list[str], the image path as listed
* ``index``            long (B,), the sample's image row in its list file
"""
from __future__ import annotations

import inspect
import json
import os
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
    AFFORDANCES,
    PIAD_OBJECTS,
    CloudCache,
    image_size,
    load_image,
    path_roots,
    read_list,
    resolve_path,
)
from zoo.data.sampling import PairSampler, pair_draw

__all__ = ["PiadDataModule", "PiadDataset", "read_boxes", "resolve_setting_dir", "parse_image_name", "point_file_class"]

_LIST_HINT = (" (expected Point_/Img_/Box_{Train,Test}.txt in the setting folder; write a synthetic set with "
              "`python tools/make_synthetic.py piad --out DIR`, or give the DataModule `synthesize: {...}` to "
              "write one there when none is found)")


def _read_list(path: str | os.PathLike) -> list[str]:
    return read_list(path, "PIAD list file", _LIST_HINT)


def point_file_class(path: str) -> str:
    """The object class of a point file: the second-to-last ``_`` field of its name."""
    fields = os.path.basename(path).rsplit(".", 1)[0].split("_")
    if len(fields) < 2:
        raise DataError(f"point file name {path} does not end _<Object>_<n>")
    return fields[-2]


def parse_image_name(path: str) -> tuple[str, str]:
    """(object, affordance) of an image name ``..._<Object>_<affordance>_<n>.<ext>``."""
    fields = os.path.basename(path).rsplit(".", 1)[0].split("_")
    if len(fields) < 3:
        raise DataError(f"image name {path} does not end _<Object>_<affordance>_<n>")
    return fields[-3], fields[-2]


def read_boxes(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(subject, object) boxes (4,) x0, y0, x1, y1 from a LabelMe JSON; a missing subject is zeros."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable LabelMe JSON box file ({type(e).__name__}: {e})") from e
    boxes: dict[str, np.ndarray] = {}
    for shape in data.get("shapes", []):
        label = shape.get("label")
        if label in ("subject", "object"):
            pts = np.asarray(shape.get("points", []), dtype=np.float64)
            if pts.shape != (2, 2) or not np.isfinite(pts).all():
                raise DataError(f"{path}: shape '{label}' needs two finite corner points, got {pts.tolist()}")
            boxes[label] = np.concatenate([pts.min(0), pts.max(0)])
    if "object" not in boxes:
        raise DataError(f"{path}: no 'object' shape (LabelMe JSON with 'subject' and 'object' rectangles)")
    return boxes.get("subject", np.zeros(4)), boxes["object"]


class PiadDataset(Dataset):
    """(image, point cloud) pairs of one PIAD split.

    ``mode``: "train" (pairs redrawn per epoch: items are indexed by ``i`` or ``(i, epoch)``),
    "val" (pairs fixed: epoch 0) or "test" (lists aligned line by line). ``rows`` selects
    image rows of the list files. Items carry the batch keys of the module docstring.
    """

    def __init__(self, setting_dir: str, split: str, mode: str, rows: np.ndarray | None = None, classes: list[str] | None = None,
                 image_size: int = 224, num_points: int = 2048, seed: int = 0, pairs_per_image: int = 1,
                 load_images: bool = True, cache: CloudCache | None = None):
        if mode not in ("train", "val", "test"):
            raise DataError(f"PiadDataset: mode must be train, val or test, got {mode!r}")
        self.dir = str(setting_dir)
        self.roots = path_roots(setting_dir)
        self.mode = mode
        self.image_size = image_size
        self.seed = seed
        self.pairs = max(1, int(pairs_per_image)) if mode == "train" else 1
        self.load_images = load_images
        self.cache = cache or CloudCache(num_points)
        self.lists = {k: os.path.join(self.dir, f"{k}_{split}.txt") for k in ("Point", "Img", "Box")}
        self.points = _read_list(self.lists["Point"])
        self.images = _read_list(self.lists["Img"])
        self.boxes = _read_list(self.lists["Box"])
        if len(self.images) != len(self.boxes):
            raise DataError(f"{self.lists['Img']}: {len(self.images)} images but {self.lists['Box']} has "
                            f"{len(self.boxes)} box files (expected one per image)")
        if mode == "test" and len(self.points) != len(self.images):
            raise DataError(f"{self.lists['Point']}: {len(self.points)} point files but {self.lists['Img']} has "
                            f"{len(self.images)} images (test lists are aligned line by line)")
        self.labels = []
        for ln, p in enumerate(self.images, 1):
            try:
                obj, aff = parse_image_name(p)
            except ValueError as e:
                raise DataError(f"{self.lists['Img']}: line {ln}: {e}") from None
            if aff not in AFFORDANCES:
                raise DataError(f"{self.lists['Img']}: line {ln}: image {p} names affordance '{aff}', expected one "
                                f"of {', '.join(AFFORDANCES)}")
            self.labels.append((obj, aff))
        self.by_class: dict[str, list[int]] = {}
        for j, p in enumerate(self.points):
            try:
                self.by_class.setdefault(point_file_class(p), []).append(j)
            except ValueError as e:
                raise DataError(f"{self.lists['Point']}: line {j + 1}: {e}") from None
        self.rows = np.arange(len(self.images)) if rows is None else np.asarray(rows, dtype=np.int64)
        if mode != "test":
            for r in self.rows.tolist():
                if self.labels[r][0] not in self.by_class:
                    raise DataError(f"{self.lists['Img']}: line {r + 1}: image {self.images[r]} is a "
                                    f"'{self.labels[r][0]}' but {self.lists['Point']} lists no point file of that "
                                    f"class (classes there: {', '.join(sorted(self.by_class))})")
        self.classes = classes if classes is not None else sorted(set(PIAD_OBJECTS) | set(self.by_class))

    def __len__(self) -> int:
        return len(self.rows) * self.pairs

    def _resolve(self, stored: str, what: str, list_key: str, row: int) -> str:
        p = resolve_path(stored, self.roots)
        if p is None:
            raise FileNotFoundError(f"{self.lists[list_key]}: line {row + 1}: {what} not found: {stored} "
                                    f"(looked relative to {', '.join(self.roots)})")
        return p

    @property
    def point_list(self) -> str:
        """The point list file."""
        return self.lists["Point"]

    @property
    def image_list(self) -> str:
        """The image list file."""
        return self.lists["Img"]

    def point_path(self, j: int) -> str:
        """The resolved point file of point-list row ``j``; FileNotFoundError naming the list line if missing."""
        return self._resolve(self.points[j], "point file", "Point", j)

    def check_point(self, j: int) -> None:
        """Parse point-list row ``j``'s file (strictly, at least ``num_points`` points) into the cache; errors name it."""
        self.cache.get(self.point_path(j))

    def check_row(self, row: int) -> None:
        """Check image row ``row`` as a sample will read it: the image (header only, not decoded), the box file,
        in test mode the aligned point file, otherwise that a point file of its class is left."""
        ipath = self._resolve(self.images[row], "image", "Img", row)
        try:
            image_size(ipath)
        except Exception as e:  # PIL raises several types for broken files
            raise DataError(f"{self.lists['Img']}: line {row + 1}: image {ipath} is not readable "
                            f"({type(e).__name__}: {e})") from e
        read_boxes(self._resolve(self.boxes[row], "box file", "Box", row))
        if self.mode == "test":
            self.check_point(row)
        elif not self.by_class.get(self.labels[row][0]):
            raise DataError(f"{self.lists['Img']}: line {row + 1}: image {self.images[row]} is a "
                            f"'{self.labels[row][0]}' but every point file of that class in {self.lists['Point']} "
                            f"is bad")

    def drop_points(self, bad: set[int]) -> None:
        """Remove point-list rows ``bad`` from the pools training and validation pairs are drawn from."""
        self.by_class = {c: [j for j in js if j not in bad] for c, js in self.by_class.items()}

    def point_row(self, i: int, epoch: int = 0) -> int:
        """The point-list row paired with item ``i`` in ``epoch``."""
        row = int(self.rows[i // self.pairs])
        if self.mode == "test":
            return row
        pool = self.by_class[self.labels[row][0]]
        return pool[pair_draw(len(pool), self.seed, epoch if self.mode == "train" else 0, i)]

    def __getitem__(self, key) -> dict[str, Any]:
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.lists['Img']}: index {i} out of range for {len(self)} samples")
        row = int(self.rows[i // self.pairs])
        prow = self.point_row(i, epoch)
        obj, aff = self.labels[row]
        ppath = self._resolve(self.points[prow], "point file", "Point", prow)
        xyz, aff_all = self.cache.get(ppath)
        a_idx = AFFORDANCES.index(aff)
        if obj not in self.classes:
            raise DataError(f"{self.lists['Img']}: line {row + 1}: object '{obj}' is not among the classes "
                            f"{self.classes}")
        bpath = self._resolve(self.boxes[row], "box file", "Box", row)
        subj, objb = read_boxes(bpath)
        item: dict[str, Any] = {
            "points": torch.from_numpy(xyz),
            "affordance": torch.from_numpy(np.ascontiguousarray(aff_all[:, a_idx])),
            "affordance_all": torch.from_numpy(aff_all),
            "affordance_index": a_idx,
            "affordance_name": aff,
            "object_index": self.classes.index(obj),
            "object_name": obj,
            "point_id": self.points[prow],
            "image_id": self.images[row],
            "index": row,
        }
        ipath = self._resolve(self.images[row], "image", "Img", row)
        S = self.image_size
        if self.load_images:
            img, (w, h) = load_image(ipath, S, f"{self.lists['Img']}: line {row + 1}")
            item["image"] = torch.from_numpy(img)
            w0, h0 = image_size(ipath)  # boxes are in the file's pixels, not the draft-decoded ones
        else:
            w0, h0 = image_size(ipath)
        scale = np.array([S / w0, S / h0, S / w0, S / h0])
        item["box_subject"] = torch.as_tensor(subj * scale, dtype=torch.float32)
        item["box_object"] = torch.as_tensor(objb * scale, dtype=torch.float32)
        return item


def resolve_setting_dir(root: str, setting: str) -> Path:
    """``root`` itself if it holds the list files, else ``root/setting``; errors say what is missing."""
    r = Path(root)
    if (r / "Img_Train.txt").is_file() or (r / "Img_Test.txt").is_file():
        return r
    if (r / setting).is_dir():
        return r / setting
    raise FileNotFoundError(f"PIAD root {root}: neither it nor {r / setting} holds Img_/Point_/Box_{{Train,Test}}.txt "
                            f"(point `root` at the PIAD folder with Seen/ and Unseen/, or at a setting folder; "
                            f"write a synthetic set with `python tools/make_synthetic.py piad --out {root}`, or give "
                            f"the DataModule `synthesize: {{seed: 0}}` to write one there when none is found)")


@register("datamodule", "piad")
class PiadDataModule(SplitDataModule):
    """PIAD train/val/test loaders (see the module docstring for layout, pairing and batch keys).

    ``setting`` picks the ``Seen``/``Unseen`` folder under ``root`` (ignored when ``root`` is a
    setting folder). ``val_fraction`` of the train images (seeded) become the validation
    split; ``max_samples`` caps each split's images. ``load_images=False`` skips decoding
    the photos (no ``image`` key). ``cache`` keeps parsed clouds in memory.

    ``setup`` (any stage) checks every file a split will read before the first step: it parses
    every point file a sample may be paired with (strictly; fewer than ``num_points`` points is
    an error naming the file and both counts), opens every image header (not decoding it) and
    reads every box file. ``fit``/``validate``/None set up train, val and test; ``test``/
    ``predict`` the test split. Parsed clouds go into the cache (``cache=True``), so the parse
    is not repeated in the first epoch. ``skip_bad=True`` drops bad samples instead (a bad train
    point file leaves the pools; an image whose class has no point file left is dropped), as
    DAMON does: counted in ``num_skipped``, listed in ``skipped``, logged and reported by
    :meth:`data_report` (``point_files`` / ``skipped_point_files`` for the train list's clouds);
    a split left with none, or with more than ``max_skip_fraction`` (0.5) of its images or point
    files dropped, fails naming the split, the list file, the counts and the first problem.
    ``root`` is resolved with :func:`zoo.core.paths.resolve_data_path` into ``self.root``.

    ``synthesize`` (keyword arguments of :func:`zoo.data.synthetic.piad.generate_piad`, e.g.
    ``{"n_objects": 440, "n_images": 440, "seed": 0}``): when the setting's six list files are
    not under ``root``, ``prepare_data`` (or the first ``setup``) writes a synthetic set there
    (the ``setting`` folder; ``settings`` may add others). Existing files are never overwritten.
    """

    data_name = "piad"

    def __init__(self, root: str, setting: str = "Seen", batch_size: int = 8, num_workers: int = 0,
                 image_size: int = 224, seed: int = 0, pairs_per_image: int = 1, val_fraction: float = 0.1,
                 num_points: int = 2048, load_images: bool = True, max_samples: int | None = None,
                 cache: bool = True, pin_memory: bool = False, drop_last: bool = False,
                 synthesize: dict | None = None, skip_bad: bool = False, max_skip_fraction: float = 0.5):
        super().__init__()
        if batch_size <= 0:
            raise DataError(f"piad: batch_size must be positive, got {batch_size}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise DataError(f"piad: max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"piad: val_fraction must be in [0, 1), got {val_fraction}")
        if pairs_per_image < 1:
            raise DataError(f"piad: pairs_per_image must be >= 1, got {pairs_per_image}")
        if image_size <= 0 or num_points <= 0:
            raise DataError(f"piad: image_size and num_points must be positive, got {image_size}, {num_points}")
        if synthesize is not None:
            from zoo.data.synthetic.piad import generate_piad

            synthesize = check_synthesize("piad", generate_piad, synthesize)
        self.save_hyperparameters()
        self.root = str(resolve_data_path(root))
        self._cache = CloudCache(num_points, cache)
        self.num_skipped = 0
        self.skipped: list[tuple[str, int, str]] = []  # (list file, 0-based line, problem)
        self.train_set: PiadDataset | None = None
        self.val_set: PiadDataset | None = None
        self.test_set: PiadDataset | None = None
        self._classes: list[str] | None = None

    @property
    def setting_dir(self) -> Path:
        """The folder holding the list files."""
        return resolve_setting_dir(self.root, self.hparams.setting)

    @property
    def classes(self) -> list[str]:
        """Sorted object classes: PIAD's 23 plus any other class named by the point lists."""
        if self._classes is None:
            found = set()
            for split in ("Train", "Test"):
                f = self.setting_dir / f"Point_{split}.txt"
                if f.is_file():
                    found |= {point_file_class(p) for p in _read_list(f)}
            self._classes = sorted(set(PIAD_OBJECTS) | found)
        return list(self._classes)

    def _dataset(self, split: str, mode: str, rows: np.ndarray | None) -> PiadDataset:
        h = self.hparams
        return PiadDataset(str(self.setting_dir), split, mode, rows, classes=self.classes, image_size=h.image_size,
                           num_points=h.num_points, seed=h.seed, pairs_per_image=h.pairs_per_image,
                           load_images=h.load_images, cache=self._cache)

    def _synthesize(self) -> None:
        """Write a synthetic PIAD set under ``root`` if the setting's list files are not there (class docstring)."""
        from zoo.data.synthetic.piad import generate_piad

        r, setting = Path(self.root), self.hparams.setting
        # A root holding list files is itself a setting folder (as resolve_setting_dir reads it).
        folder = r if (r / "Img_Train.txt").is_file() or (r / "Img_Test.txt").is_file() else r / setting
        lists = [folder / f"{k}_{split}.txt" for split in ("Train", "Test") for k in ("Point", "Img", "Box")]
        kw = dict(self.hparams.synthesize)
        settings = tuple(kw.pop("settings", None) or (setting,))
        if setting not in settings:
            settings += (setting,)
        seed = kw.get("seed", inspect.signature(generate_piad).parameters["seed"].default)
        args = ", ".join([f"{k}={v}" for k, v in kw.items() if k != "seed"] + [f"settings={list(settings)}"])
        synthesize_missing("piad", self.root, lists, lambda: generate_piad(self.root, settings=settings, **kw),
                           f"[piad] no PIAD {setting} lists under {self.root}: writing a synthetic PIAD-format set "
                           f"there with seed {seed} ({args})")

    def setup(self, stage: str | None = None) -> None:
        """Build and check the datasets of a stage: 'fit', 'validate' or None set up train, val and test (every
        file checked before the first training step); 'test' and 'predict' the test split."""
        self._ensure_data()
        if stage in (None, "fit", "validate") and self.train_set is None:
            n = len(_read_list(self.setting_dir / "Img_Train.txt"))
            val_rows, train_rows = seeded_split(n, self.hparams.val_fraction, self.hparams.seed)
            val = self._dataset("Train", "val", self._cap(val_rows))
            train = self._dataset("Train", "train", self._cap(train_rows))
            self._check_paired(train, val)
            self.val_set, self.train_set = val, train
        if self.test_set is None:
            test = self._dataset("Test", "test", None)
            test.rows = self._cap(test.rows)
            test.rows = np.asarray(self._drop_bad("test", test.image_list, test.rows.tolist(), test.check_row),
                                   dtype=np.int64)
            self.test_set = test

    def _sampler(self, n: int) -> PairSampler:
        # (index, epoch) keys: each training image is paired with a cloud redrawn per epoch
        return PairSampler(n, self.hparams.seed)
