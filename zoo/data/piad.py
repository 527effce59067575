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

Official pairing options (InteractVLM's PIAD training; each off by default, see ``PiadDataModule``):
``pairing="retrieval"`` draws a training image's clouds from a precomputed retrieval list (InteractVLM's
``piad_lookup_results_Train.pkl``, Unseen ``piad_unseen_lookup_results_Train.pkl``, in the setting
folder: a pickled dict ``{image path as in Img_Train.txt: [point file path, ...]}``, best match
first; read with :func:`read_retrieval_list`, which refuses anything but plain containers, strings,
numbers and numpy arrays); ``image_filter="official"`` keeps the training images whose (object,
affordance) is in :data:`PIAD_OBJECT_AFFORDANCES`; ``skip_empty_affordance=True`` never pairs an image
with a cloud whose ground truth for its affordance is zero everywhere; ``val_split="test"`` validates
on the Test split (line by line), as IAGNet and InteractVLM do.

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
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
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

__all__ = ["PiadDataModule", "PiadDataset", "read_boxes", "resolve_setting_dir", "parse_image_name", "point_file_class",
           "read_retrieval_list", "retrieval_file_names", "PIAD_OBJECT_AFFORDANCES"]

_log = logging.getLogger(__name__)

# The (object, affordance) pairs InteractVLM trains on (its released PIAD list; the affordances here in
# PIAD's column order): image_filter="official" keeps the training images naming one of them.
PIAD_OBJECT_AFFORDANCES: dict[str, tuple[str, ...]] = {
    "Bag": ("grasp", "contain", "lift", "open"),
    "Bed": ("lay", "sit"),
    "Bottle": ("contain", "open", "wrapgrasp", "pour"),
    "Bowl": ("contain", "wrapgrasp", "pour"),
    "Chair": ("sit", "move"),
    "Clock": ("display",),
    "Dishwasher": ("contain", "open"),
    "Display": ("display",),
    "Door": ("open", "push"),
    "Earphone": ("grasp", "listen"),
    "Faucet": ("grasp", "open"),
    "Hat": ("grasp", "wear"),
    "Keyboard": ("press",),
    "Knife": ("grasp", "cut", "stab"),
    "Laptop": ("display", "press"),
    "Microwave": ("contain", "open"),
    "Mug": ("grasp", "contain", "wrapgrasp", "pour"),
    "Refrigerator": ("contain", "open"),
    "Scissors": ("grasp", "cut", "stab"),
    "StorageFurniture": ("contain", "open"),
    "Table": ("support", "move"),
    "TrashCan": ("contain", "open", "pour"),
    "Vase": ("contain", "wrapgrasp"),
}

_RETRIEVAL_NAMES = {"Seen": "piad_lookup_results_{split}.pkl", "Unseen": "piad_unseen_lookup_results_{split}.pkl"}
_RETRIEVAL_TRIES = 5  # ranking="fixed": the first usable of the five best matches (InteractVLM tries five)
_PAIRINGS = ("class", "retrieval", "auto")
_RANKINGS = ("random", "fixed")
_VAL_SPLITS = ("train", "test")

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


# Globals a retrieval-list pickle may name: plain containers, and numpy arrays (of strings) with what
# rebuilding them takes. Strings, numbers, lists, dicts and tuples need no global at all.
_PICKLE_ALLOWED = frozenset({
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "tuple"), ("collections", "OrderedDict"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})


class _Refused(pickle.UnpicklingError):
    pass


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only data: any global outside ``_PICKLE_ALLOWED`` (a class, a function) is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def _str_list(value) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def read_retrieval_list(path: str | os.PathLike) -> dict[str, list[str]]:
    """A PIAD retrieval list: ``{image path: [point file path, ...]}``, best match first.

    The released file (InteractVLM's ``piad_lookup_results_Train.pkl``, written with joblib) is a
    pickled dict from each image path, as Img_Train.txt lists it, to a list of point file paths. It is
    read without running anything it names: only dicts, lists, tuples, sets, strings, numbers and numpy
    arrays may appear, and a pickle needing anything else (a class, a function) raises a DataError naming
    the file and the global it asked for. A file of another structure raises a DataError saying what
    was expected.
    """
    expected = "a pickled dict {image path as in Img_Train.txt: [point file path, ...]} (best match first)"
    try:
        with open(path, "rb") as fh:
            data = _PlainUnpickler(fh).load()
    except _Refused as e:
        raise DataError(f"{path}: refusing to unpickle: it needs {e}, and a PIAD retrieval list may hold only dicts, "
                        f"lists, tuples, strings, numbers and numpy arrays (expected {expected})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"PIAD retrieval list not found: {path} (expected {expected})") from None
    except Exception as e:  # truncated or not a pickle: several exception types
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); expected {expected}") from e
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: holds a {type(data).__name__}, expected {expected}")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        paths = _str_list(value)
        if not isinstance(key, str) or paths is None:
            raise DataError(f"{path}: entry {key!r} -> {type(value).__name__} is not an image path mapped to a list "
                            f"of point file paths (expected {expected})")
        out[str(key)] = paths
    return out


def retrieval_file_names(setting: str, split: str = "Train") -> list[str]:
    """The released retrieval-list file names to look for in a setting folder, the setting's own first."""
    own = _RETRIEVAL_NAMES.get(setting, _RETRIEVAL_NAMES["Seen"])
    return [n.format(split=split) for n in [own] + [v for v in _RETRIEVAL_NAMES.values() if v != own]]


def _image_filter(spec) -> dict[str, frozenset[str]] | None:
    """``image_filter`` as {object: affordances}: None, "official" (PIAD_OBJECT_AFFORDANCES) or a mapping."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "official":
            raise DataError(f"piad: image_filter must be null, 'official' or a mapping {{object: [affordance, ...]}}, "
                            f"got {spec!r}")
        spec = PIAD_OBJECT_AFFORDANCES
    if not isinstance(spec, Mapping):
        raise DataError(f"piad: image_filter must be null, 'official' or a mapping {{object: [affordance, ...]}}, "
                        f"got {type(spec).__name__}")
    out = {}
    for obj, affs in spec.items():
        affs = [affs] if isinstance(affs, str) else list(affs) if isinstance(affs, Sequence) else None
        if affs is None or not all(isinstance(a, str) for a in affs):
            raise DataError(f"piad: image_filter[{obj!r}] must be a list of affordance names, got {spec[obj]!r}")
        unknown = [a for a in affs if a not in AFFORDANCES]
        if unknown:
            raise DataError(f"piad: image_filter[{obj!r}] names unknown affordance(s) {unknown}; PIAD's are "
                            f"{', '.join(AFFORDANCES)}")
        out[str(obj)] = frozenset(affs)
    return out


class PiadDataset(Dataset):
    """(image, point cloud) pairs of one PIAD split.

    ``mode``: "train" (pairs redrawn per epoch: items are indexed by ``i`` or ``(i, epoch)``),
    "val" (pairs fixed: epoch 0) or "test" (lists aligned line by line). ``rows`` selects
    image rows of the list files. Items carry the batch keys of the module docstring.

    Pairing options of "train" and "val" (the test mode ignores them; see ``PiadDataModule``):
    ``retrieval`` (a dict as :func:`read_retrieval_list` returns, read from ``retrieval_file``, which
    it is read from when ``retrieval`` is None) pairs each image with the clouds listed for it,
    ``ranking`` "random" (a seeded draw among them) or "fixed" (the first usable of the five best);
    ``image_filter`` ({object: affordances}) keeps the images naming one of those pairs;
    ``skip_empty_affordance`` leaves out clouds whose ground truth for the image's affordance is zero
    everywhere (:meth:`finish_pools` then drops the images left with none). ``point_flags`` (shared
    between datasets of one list) holds which affordance columns of each point row are non-zero.
    """

    def __init__(self, setting_dir: str, split: str, mode: str, rows: np.ndarray | None = None, classes: list[str] | None = None,
                 image_size: int = 224, num_points: int = 2048, seed: int = 0, pairs_per_image: int = 1,
                 load_images: bool = True, cache: CloudCache | None = None, retrieval: dict[str, list[str]] | None = None,
                 retrieval_file: str | None = None, ranking: str = "random",
                 image_filter: Mapping[str, Sequence[str]] | str | None = None, skip_empty_affordance: bool = False,
                 point_flags: dict[int, np.ndarray] | None = None):
        if mode not in ("train", "val", "test"):
            raise DataError(f"PiadDataset: mode must be train, val or test, got {mode!r}")
        if ranking not in _RANKINGS:
            raise DataError(f"PiadDataset: ranking must be one of {', '.join(_RANKINGS)}, got {ranking!r}")
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
        paired = mode != "test"
        self.ranking = ranking
        self.skip_empty = bool(skip_empty_affordance) and paired
        self.point_flags = point_flags if point_flags is not None else {}
        self._bad_points: set[int] = set()
        self._pools: dict = {}
        self.filtered: dict[str, int] = {}  # images left out by image_filter / skip_empty_affordance
        allowed = _image_filter(image_filter) if paired else None
        if allowed is not None:
            keep = [r for r in self.rows.tolist() if self.labels[r][1] in allowed.get(self.labels[r][0], ())]
            self.filtered["image_filter"] = len(self.rows) - len(keep)
            self.rows = np.asarray(keep, dtype=np.int64)
        self.classes = classes if classes is not None else sorted(set(PIAD_OBJECTS) | set(self.by_class))
        self.retrieval_file = str(retrieval_file) if retrieval_file is not None else None
        self.candidates: dict[int, list[int]] | None = None  # image row -> point rows, best first
        if paired and (retrieval is not None or retrieval_file is not None):
            if retrieval is None:
                retrieval = read_retrieval_list(retrieval_file)
            self.retrieval_file = self.retrieval_file or "retrieval list"
            self._map_retrieval(retrieval)
        elif paired:
            for r in self.rows.tolist():
                if self.labels[r][0] not in self.by_class:
                    raise DataError(f"{self.lists['Img']}: line {r + 1}: image {self.images[r]} is a "
                                    f"'{self.labels[r][0]}' but {self.lists['Point']} lists no point file of that "
                                    f"class (classes there: {', '.join(sorted(self.by_class))})")

    def _map_retrieval(self, retrieval: dict[str, list[str]]) -> None:
        """Image rows -> candidate point rows from a retrieval list (paths matched as stored, then by file name);
        a listed cloud that the point list does not hold is an error naming the retrieval file and the cloud.
        ``by_class`` becomes the clouds the list gives the images of each class (what set-up parses)."""
        def index(paths: list[str]) -> tuple[dict[str, int], dict[str, int]]:
            exact: dict[str, int] = {}
            by_name: dict[str, int] = {}
            twice: set[str] = set()
            for k, path in enumerate(paths):
                exact.setdefault(path, k)
                name = os.path.basename(path)
                if name in by_name:
                    twice.add(name)
                by_name.setdefault(name, k)
            return exact, {n: k for n, k in by_name.items() if n not in twice}

        def find(path: str, exact: dict[str, int], by_name: dict[str, int]) -> int | None:
            k = exact.get(path)
            return k if k is not None else by_name.get(os.path.basename(path))

        images, points = index(self.images), index(self.points)
        self.candidates = {}
        for key, clouds in retrieval.items():
            row = find(key, *images)
            if row is None:
                continue  # an image of another list (the released file covers all of PIAD's training images)
            rows = []
            for cloud in clouds:
                j = find(cloud, *points)
                if j is None:
                    raise DataError(f"{self.retrieval_file}: image {key} is paired with point cloud {cloud}, which "
                                    f"{self.lists['Point']} does not list (matched by path, then by file name); a "
                                    f"retrieval list names clouds of this setting's point list")
                rows.append(j)
            self.candidates[row] = rows
        pools: dict[str, set[int]] = {}
        for row, rows in self.candidates.items():
            pools.setdefault(self.labels[row][0], set()).update(rows)
        self.by_class = {c: sorted(js) for c, js in pools.items()}

    def pool(self, row: int) -> list[int]:
        """The point-list rows image row ``row`` may be paired with ("train"/"val" modes): its class's clouds, or
        its retrieval-list clouds in rank order (the five best with ``ranking="fixed"``), less the bad ones and,
        with ``skip_empty_affordance``, those whose ground truth for the image's affordance is all zero."""
        key = row if self.candidates is not None else self.labels[row]
        hit = self._pools.get(key)
        if hit is not None:
            return hit
        if self.candidates is not None:
            js = [j for j in self.candidates.get(row, []) if j not in self._bad_points]
            if self.ranking == "fixed":
                js = js[:_RETRIEVAL_TRIES]
        else:
            js = list(self.by_class.get(self.labels[row][0], []))
        if self.skip_empty:
            a = AFFORDANCES.index(self.labels[row][1])
            js = [j for j in js if self.point_flag(j)[a]]
        self._pools[key] = js
        return js

    def point_flag(self, j: int) -> np.ndarray:
        """(17,) bool: which affordance columns of point-list row ``j``'s cloud are non-zero anywhere."""
        if j not in self.point_flags:
            self.check_point(j)
        return self.point_flags[j]

    def finish_pools(self) -> int:
        """With ``skip_empty_affordance``, drop the images no cloud is left for (after set-up's checks); returns
        how many, also kept in ``filtered["empty_affordance"]``."""
        if not self.skip_empty:
            return 0
        keep = [r for r in self.rows.tolist() if self.pool(r)]
        self.filtered["empty_affordance"] = len(self.rows) - len(keep)
        self.rows = np.asarray(keep, dtype=np.int64)
        return self.filtered["empty_affordance"]

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
        """Parse point-list row ``j``'s file (strictly, at least ``num_points`` points) into the cache; errors name it.
        Records which of its affordance columns are non-zero (``point_flags``)."""
        _, aff = self.cache.get(self.point_path(j))
        self.point_flags[j] = (aff > 0).any(axis=0)

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
        elif self.candidates is not None:
            if row not in self.candidates:
                raise DataError(f"{self.retrieval_file}: no entry for image {self.images[row]} ({self.lists['Img']} "
                                f"line {row + 1}); the retrieval list must pair every training image with clouds")
            if not [j for j in self.candidates[row] if j not in self._bad_points]:
                raise DataError(f"{self.lists['Img']}: line {row + 1}: image {self.images[row]}: "
                                + ("the retrieval list " + self.retrieval_file + " gives it no cloud"
                                   if not self.candidates[row] else
                                   "every point file the retrieval list " + self.retrieval_file + " gives it is bad"))
        elif not self.by_class.get(self.labels[row][0]):
            raise DataError(f"{self.lists['Img']}: line {row + 1}: image {self.images[row]} is a "
                            f"'{self.labels[row][0]}' but every point file of that class in {self.lists['Point']} "
                            f"is bad")

    def drop_points(self, bad: set[int]) -> None:
        """Remove point-list rows ``bad`` from the pools training and validation pairs are drawn from."""
        self.by_class = {c: [j for j in js if j not in bad] for c, js in self.by_class.items()}
        self._bad_points |= set(bad)
        self._pools.clear()

    def point_row(self, i: int, epoch: int = 0) -> int:
        """The point-list row paired with item ``i`` in ``epoch``."""
        row = int(self.rows[i // self.pairs])
        if self.mode == "test":
            return row
        pool = self.pool(row)
        if not pool:
            raise DataError(f"{self.lists['Img']}: line {row + 1}: image {self.images[row]} has no point cloud left to "
                            f"pair with (set-up drops such images; was this dataset set up?)")
        if self.candidates is not None and self.ranking == "fixed":
            return pool[0]
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

    Pairing (defaults: the zoo's own, as before; the official InteractVLM choices are options, and
    ``recipes/mvloc/piad.yaml`` sets them):

    * ``pairing``: "class" (default: each training image with ``pairs_per_image`` random clouds of
      its class, redrawn per epoch), "retrieval" (with the clouds a precomputed retrieval list gives
      it, as InteractVLM trains) or "auto" (retrieval when the list is found, else class; one printed
      line says which). The list is ``retrieval_file`` (relative to the setting folder) or, by
      default, the released ``piad_lookup_results_Train.pkl`` (Unseen:
      ``piad_unseen_lookup_results_Train.pkl``) in the setting folder; see :func:`read_retrieval_list`.
      A list naming a cloud that Point_Train.txt does not hold is an error naming the file and the
      cloud; a training image it has no entry for is a bad sample (an error, or skipped with
      ``skip_bad``).
    * ``retrieval_ranking``: "random" (default, InteractVLM's ``oC_ranking``: a seeded draw among the
      image's listed clouds, redrawn per epoch) or "fixed" (the first usable of its five best).
    * ``image_filter``: null (default: every image), "official" (only the training images whose
      (object, affordance) is in :data:`PIAD_OBJECT_AFFORDANCES`, InteractVLM's list) or a mapping
      ``{object: [affordance, ...]}``. Train and the validation fraction only; Test is never filtered.
    * ``skip_empty_affordance``: false (default) or true: a cloud whose ground truth for the image's
      affordance is zero at every point is never paired with that image (InteractVLM skips them in
      training), and an image left with no cloud is dropped.
    * ``val_split``: "train" (default: the seeded ``val_fraction`` of the training images) or "test"
      (validate on the Test split, lists line by line, as IAGNet and InteractVLM do; ``val_fraction``
      is then unused and every training image trains).

    Images left out by ``image_filter`` or ``skip_empty_affordance`` are not bad data: they are counted
    in ``filtered`` (``{split: {reason: n}}``), logged, and not held against ``max_skip_fraction``.
    """

    data_name = "piad"

    def __init__(self, root: str, setting: str = "Seen", batch_size: int = 8, num_workers: int = 0,
                 image_size: int = 224, seed: int = 0, pairs_per_image: int = 1, val_fraction: float = 0.1,
                 num_points: int = 2048, load_images: bool = True, max_samples: int | None = None,
                 cache: bool = True, pin_memory: bool = False, drop_last: bool = False,
                 synthesize: dict | None = None, skip_bad: bool = False, max_skip_fraction: float = 0.5,
                 pairing: str = "class", retrieval_file: str | None = None, retrieval_ranking: str = "random",
                 image_filter: str | dict | None = None, skip_empty_affordance: bool = False,
                 val_split: str = "train"):
        super().__init__()
        if pairing not in _PAIRINGS:
            raise DataError(f"piad: pairing must be one of {', '.join(_PAIRINGS)}, got {pairing!r}")
        if retrieval_ranking not in _RANKINGS:
            raise DataError(f"piad: retrieval_ranking must be one of {', '.join(_RANKINGS)}, got {retrieval_ranking!r}")
        if val_split not in _VAL_SPLITS:
            raise DataError(f"piad: val_split must be one of {', '.join(_VAL_SPLITS)}, got {val_split!r}")
        if retrieval_file is not None and pairing == "class":
            raise DataError("piad: retrieval_file is given but pairing is 'class'; set pairing: retrieval (or auto)")
        _image_filter(image_filter)  # fail at construction on a bad filter, not at set-up
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
        self.filtered: dict[str, dict[str, int]] = {}
        self._point_flags: dict[int, np.ndarray] = {}
        self._retrieval: tuple[str, dict[str, list[str]]] | None = None

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

    def retrieval_path(self) -> Path | None:
        """The retrieval list training pairs come from: ``retrieval_file`` (relative to the setting folder), else
        the released file found in the setting folder; None with ``pairing="class"``, or with "auto" when no
        file is found. "retrieval" without a file raises FileNotFoundError naming where it looked."""
        h = self.hparams
        if h.pairing == "class":
            return None
        folder = self.setting_dir
        if h.retrieval_file is not None:
            p = Path(os.path.expanduser(str(h.retrieval_file)))
            p = p if p.is_absolute() else folder / p
            if not p.is_file():
                raise FileNotFoundError(f"PIAD retrieval list not found: {p} (data.retrieval_file)")
            return p
        names = retrieval_file_names(h.setting)
        for name in names:
            if (folder / name).is_file():
                return folder / name
        if h.pairing == "auto":
            return None
        raise FileNotFoundError(
            f"PIAD retrieval list not found: pairing=retrieval looks for {folder / names[0]}"
            f"{' or ' + ', '.join(str(folder / n) for n in names[1:]) if names[1:] else ''} (InteractVLM's precomputed "
            f"image -> point-cloud matches, a pickled dict {{image path: [point file path, ...]}}); put it there, "
            f"give data.retrieval_file, or use pairing: class (random clouds of the image's class)")

    def _retrieval_list(self) -> tuple[str, dict[str, list[str]]] | None:
        if self._retrieval is None:
            path = self.retrieval_path()
            if self.hparams.pairing == "auto":
                print("[piad] pairing=auto: " + (f"training pairs from the retrieval list {path}" if path else
                      f"no retrieval list ({', '.join(retrieval_file_names(self.hparams.setting))}) in "
                      f"{self.setting_dir}: random clouds of each image's class"), flush=True)
            self._retrieval = (str(path), read_retrieval_list(path)) if path is not None else ("", {})
        return self._retrieval if self._retrieval[0] else None

    def _dataset(self, split: str, mode: str, rows: np.ndarray | None) -> PiadDataset:
        h = self.hparams
        retrieval = self._retrieval_list() if mode != "test" else None
        return PiadDataset(str(self.setting_dir), split, mode, rows, classes=self.classes, image_size=h.image_size,
                           num_points=h.num_points, seed=h.seed, pairs_per_image=h.pairs_per_image,
                           load_images=h.load_images, cache=self._cache,
                           retrieval=retrieval[1] if retrieval else None,
                           retrieval_file=retrieval[0] if retrieval else None, ranking=h.retrieval_ranking,
                           image_filter=h.image_filter, skip_empty_affordance=h.skip_empty_affordance,
                           point_flags=self._point_flags)

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
        on_test = self.hparams.val_split == "test"
        if stage in (None, "fit", "validate") and self.train_set is None:
            n = len(_read_list(self.setting_dir / "Img_Train.txt"))
            if on_test:
                val, train = None, self._dataset("Train", "train", self._cap(np.arange(n)))
            else:
                val_rows, train_rows = seeded_split(n, self.hparams.val_fraction, self.hparams.seed)
                val = self._dataset("Train", "val", self._cap(val_rows))
                train = self._dataset("Train", "train", self._cap(train_rows))
            if val is None:  # no validation fraction: check the training images and their clouds only
                classes = {train.labels[r][0] for r in train.rows.tolist()}
                used = sorted(j for c in classes for j in train.by_class.get(c, []))
                good = self._drop_bad("train", train.point_list, used, train.check_point, "point_files")
                train.drop_points(set(used) - set(good))
                train.rows = np.asarray(self._drop_bad("train", train.image_list, train.rows.tolist(),
                                                       train.check_row), dtype=np.int64)
            else:
                self._check_paired(train, val)
            for name, ds in (("train", train), ("val", val)):
                if ds is None:
                    continue
                ds.finish_pools()
                self._note_filtered(name, ds)
            self.val_set, self.train_set = val, train
        if self.test_set is None:
            test = self._dataset("Test", "test", None)
            test.rows = self._cap(test.rows)
            test.rows = np.asarray(self._drop_bad("test", test.image_list, test.rows.tolist(), test.check_row),
                                   dtype=np.int64)
            self.test_set = test
        if on_test and self.train_set is not None:
            self.val_set = self.test_set

    def _note_filtered(self, split: str, ds: PiadDataset) -> None:
        """Record (and log) the images an option left out of a split; a split left with none is an error."""
        counts = {k: v for k, v in ds.filtered.items() if v}
        if not counts:
            return
        self.filtered[split] = counts
        _log.info("piad: %s split: left out %s", split, ", ".join(f"{v} image(s) by {k}" for k, v in counts.items()))
        if len(ds.rows) == 0 and split == "train":
            raise DataError(f"piad: the {split} split of {ds.image_list} has no image left after "
                            + ", ".join(f"{k} left out {v}" for k, v in counts.items())
                            + " (check image_filter / skip_empty_affordance against the data)")

    def _sampler(self, n: int) -> PairSampler:
        # (index, epoch) keys: each training image is paired with a cloud redrawn per epoch
        return PairSampler(n, self.hparams.seed)
