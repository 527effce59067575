"""What the zoo's readers of the released data formats share (DAMON, PIAD, LEMON/3DIR).

Constants of the formats (ImageNet normalisation, PIAD's and LEMON's affordance columns
and object classes), list files, the resolution of stored relative paths, strict point-file
parsing with IAGNet's normalisation, and image loading. Format-specific reading (npz keys,
LabelMe boxes, contact pickles, ...) stays in :mod:`zoo.data.damon`, :mod:`zoo.data.piad`
and :mod:`zoo.data.lemon`; the synthetic generators (:mod:`zoo.data.synthetic`) write the
same formats with the constants from here.

``pc_normalize`` here and :func:`zoo.render.points.normalize_unit_sphere` compute the same
centring and scaling but are kept apart on purpose: this one is the readers' numpy float64
step (a degenerate cloud is returned unchanged, as IAGNet does), the renderer's is float32
torch on batches and rejects a degenerate cloud; one in terms of the other would change
the last bits of every normalised cloud.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from zoo.core.batch import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AFFORDANCES", "PIAD_OBJECTS", "LEMON_AFFORDANCES", "LEMON_OBJECTS",
           "read_list", "path_roots", "resolve_path", "pc_normalize", "read_point_file", "CloudCache",
           "load_image", "image_size"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PIAD's 17 affordance columns, in the order of its point files (IAGNet).
AFFORDANCES = ["grasp", "contain", "lift", "open", "lay", "sit", "support", "wrapgrasp", "pour", "move",
               "display", "push", "listen", "wear", "press", "cut", "stab"]
# The 23 object classes of PIAD's Seen setting (Unseen uses a subset); dm.classes adds any others found.
PIAD_OBJECTS = ("Bag", "Bed", "Bottle", "Bowl", "Chair", "Clock", "Dishwasher", "Display", "Door", "Earphone",
                "Faucet", "Hat", "Keyboard", "Knife", "Laptop", "Microwave", "Mug", "Refrigerator", "Scissors",
                "StorageFurniture", "Table", "TrashCan", "Vase")
# LEMON's 17 affordance columns (lemon_3d's order, not PIAD's) and its 21 object classes.
LEMON_AFFORDANCES = ["grasp", "lift", "open", "lay", "sit", "support", "wrapgrasp", "pour", "move", "pull", "listen",
                     "press", "cut", "stab", "ride", "play", "carry"]
LEMON_OBJECTS = ("Backpack", "Bag", "Baseballbat", "Bed", "Bicycle", "Bottle", "Bowl", "Chair", "Earphone", "Guitar",
                 "Keyboard", "Knife", "Motorcycle", "Mug", "Scissors", "Skateboard", "Suitcase", "Surfboard",
                 "Tennisracket", "Umbrella", "Vase")


def read_list(path: str | os.PathLike, what: str = "list file", hint: str = "") -> list[str]:
    """Non-empty, stripped lines of a list file; a missing one raises FileNotFoundError "<what> not found: <path><hint>"."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}{hint}")
    with open(path) as fh:
        return [ln.strip() for ln in fh if ln.strip()]


def path_roots(root: str | os.PathLike) -> list[str]:
    """Folders a stored relative path may be relative to: root, its parent, its grandparent, the cwd."""
    a = os.path.abspath(root)
    return [str(root), os.path.dirname(a), os.path.dirname(os.path.dirname(a)), os.getcwd()]


def resolve_path(path: str, roots: list[str]) -> str | None:
    """A stored path resolved like check_formats.py: absolute, or the first root where it exists."""
    path = str(path)
    if os.path.isabs(path):
        return path if os.path.exists(path) else None
    for r in roots:
        p = os.path.join(r, path)
        if os.path.exists(p):
            return p
    return None


def pc_normalize(pc: np.ndarray) -> np.ndarray:
    """Centre points (N, 3) on their mean and scale the farthest to distance 1 (IAGNet's ``pc_normalize``)."""
    pc = pc - pc.mean(0)
    m = float(np.sqrt((pc ** 2).sum(1)).max())
    return pc / m if m > 0 else pc


def read_point_file(path: str | os.PathLike, n_lead: int = 2, n_aff: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """Parse a point file strictly: (xyz (N, 3) float64, affordances (N, n_aff) float64), not normalised.

    Each non-empty line must hold ``n_lead`` skipped tokens, xyz and ``n_aff`` values;
    errors name the file and the 1-based line.
    """
    path = str(path)
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise FileNotFoundError(f"point file not readable: {path} ({e})") from e
    want = n_lead + 3 + n_aff
    lines = text.splitlines()
    rows, numbers = [], []
    for ln, line in enumerate(lines, 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != want:
            raise DataError(f"{path}: line {ln}: {len(tok)} fields, expected {want} "
                            f"({n_lead} leading tokens, x y z, {n_aff} affordance values)")
        rows.append(ln)
        numbers.extend(tok[n_lead:])
    if not rows:
        raise DataError(f"{path}: no points (empty file)")
    try:
        arr = np.array(numbers, dtype=np.float64).reshape(len(rows), 3 + n_aff)
    except ValueError:
        for i, ln in enumerate(rows):  # find the offending line only on failure
            chunk = numbers[i * (3 + n_aff):(i + 1) * (3 + n_aff)]
            try:
                np.array(chunk, dtype=np.float64)
            except ValueError as e:
                raise DataError(f"{path}: line {ln}: not a number ({e})") from None
        raise
    bad = ~np.isfinite(arr).all(1)
    if bad.any():
        raise DataError(f"{path}: line {rows[int(np.argmax(bad))]}: non-finite value (NaN or inf)")
    aff = arr[:, 3:]
    out = (aff < 0).any(1) | (aff > 1).any(1)
    if out.any():
        raise DataError(f"{path}: line {rows[int(np.argmax(out))]}: affordance value outside [0, 1]")
    return arr[:, :3], aff


def load_image(path: str, size: int, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB image resized to (size, size) as float32 (3, S, S) ImageNet-normalised, and its original (w, h)."""
    from PIL import Image

    try:
        im = Image.open(path)
        if im.format == "JPEG":
            im.draft("RGB", (size, size))  # decode at reduced scale; the box scale uses the decoded size
        im = im.convert("RGB")
    except Exception as e:  # PIL raises several types for broken files
        raise DataError(f"{where}: image {path} is not readable ({type(e).__name__}: {e})") from e
    w, h = im.size
    arr = np.asarray(im.resize((size, size), Image.BILINEAR), np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), (w, h)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


class CloudCache:
    """Parsed, normalised and resampled point clouds keyed by resolved path.

    A file with more than ``num_points`` points gives a fixed subset of them; one with fewer is
    rejected (ValueError naming the file and both counts) rather than repeated to fill the cloud.
    """

    def __init__(self, num_points: int, enabled: bool = True, n_lead: int = 2):
        self.num_points = num_points
        self.n_lead = n_lead
        self.enabled = enabled
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """(xyz (num_points, 3), affordances (num_points, A)) float32 of the point file at ``path``."""
        # The resampling seed is the path string, so the same file gives the same subset in every
        # worker and run (and the path, as resolved, is part of what the numbers depend on).
        hit = self._data.get(path)
        if hit is not None:
            return hit
        xyz, aff = read_point_file(path, n_lead=self.n_lead)
        n = len(xyz)
        if n < self.num_points:
            raise DataError(f"{path}: {n} point(s), expected at least num_points={self.num_points} (the cloud "
                            f"size the recipe asks for; fewer points would have to be repeated)")
        xyz = pc_normalize(xyz)
        if n != self.num_points:
            rng = np.random.default_rng(zlib.crc32(path.encode()))
            idx = rng.choice(n, self.num_points, replace=False)
            xyz, aff = xyz[idx], aff[idx]
        val = (xyz.astype(np.float32), aff.astype(np.float32))
        if self.enabled:
            self._data[path] = val
        return val
