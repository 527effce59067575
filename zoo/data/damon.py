"""DAMON (DECO, ICCV 2023) as a LightningDataModule, reading the released on-disk layout.

Files under ``root``: ``hot_dca_trainval.npz`` and ``hot_dca_test.npz`` (np.load with
allow_pickle) with keys imgname, pose (N,72), shape (N,10), transl (N,3), cam_k (N,3,3),
contact_label (N,6890) [contact_label_smplx (N,10475) for model_type="smplx"],
polygon_2d_contact, scene_seg, part_seg (N,) image paths. Stored paths are absolute or
relative to ``root``, its parent, its grandparent or the working directory (the same rule
as ``tools/check_formats.py``). The real release comes from https://deco.is.tue.mpg.de
(after registration); ``tools/make_synthetic.py damon --n 600 --out DIR`` writes a
synthetic set in the same layout, and ``synthesize={"n": 700, "seed": 0}`` has the DataModule
write one under ``root`` when it finds none there.

Preprocessing: the image is resized to ``image_size`` (bilinear) and ImageNet-normalised;
the scene (133 classes) and part (26 classes) label maps are resized to ``seg_size`` and
one-hot encoded as uint8; the polygon contact mask is resized and binarised (> 0). Two
options choose between our defaults and what the DECO release does:

* ``channel_order``: ``"rgb"`` (default) feeds RGB; ``"bgr"`` feeds the channels in
  cv2's order, B, G, R, still normalised with ImageNet's mean and std in their R, G, B
  order (the release reads images with ``cv2.imread`` and never converts them, so its
  weights expect exactly this).
* ``resize``: ``"pil"`` (default) resizes the image with PIL's bilinear filter (which
  antialiases when shrinking; JPEGs are decoded at reduced scale first) and the label maps
  and contact mask by nearest neighbour; ``"cv2"`` reproduces the release's
  ``cv2.resize(x, (256, 256), cv2.INTER_CUBIC)``, whose third positional argument is
  ``dst``, not the interpolation, so the image, both label maps and the contact mask are all
  resized with cv2's default INTER_LINEAR: bilinear without antialiasing, in cv2's 11-bit
  fixed point (:func:`cv2_linear_resize`, bit-identical to cv2 4.x without needing it;
  label maps therefore get interpolated ids at class borders, as in the release). The full
  JPEG is decoded and its EXIF orientation applied, as ``cv2.imread`` does.

Batch keys (B = batch size, S = image_size, s = seg_size, V = 6890 or 10475):

* ``image``          float32 (B, 3, S, S), ImageNet-normalised RGB (BGR with ``channel_order="bgr"``)
* ``contact_label``  float32 (B, V), per-vertex 0/1 contact
* ``scene_seg``      uint8 (B, 133, s, s), one-hot scene classes (COCO-panoptic ids)
* ``part_seg``       uint8 (B, 26, s, s), one-hot body parts (0 = background)
* ``contact_2d``     float32 (B, 1, S, S), polygon contact mask in {0, 1}
* ``pose`` (B, 72), ``shape`` (B, 10), ``transl`` (B, 3) float32 SMPL parameters
* ``cam_k``          float32 (B, 3, 3), intrinsics rescaled to the resized image
* ``index``          long (B,), row of the sample in its npz file
* ``imgname``        list[str], the image path as stored in the npz

With ``load_images=False`` only the labels and parameters are read (no image, scene_seg,
part_seg, contact_2d keys and no image files are opened): for models that never see the
photo, such as the MV-Loc localizer trained on its own.

With ``contact_mode="semantic"`` a sample is one (image, object) pair from the npz key
``contact_label_objectwise`` (a dict object name -> SMPL vertex ids per image), and
``contact_label`` is that object's contact only; the batch also carries
``object_name`` list[str]. Images whose dict is empty give no pairs. Pairs are ordered by
row, then object name.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.core.batch import DataError
from zoo.core.paths import resolve_data_path
from zoo.core.registry import register
from zoo.data.base import SplitDataModule, check_synthesize, seeded_split, synthesize_missing
from zoo.data.formats import IMAGENET_MEAN, IMAGENET_STD, path_roots, resolve_path

__all__ = ["DamonDataset", "DamonDataModule", "collate_damon", "NUM_SCENE_CLASSES", "NUM_PART_CLASSES", "SPLIT_FILES",
           "DamonObjectPairs", "clip_contact", "cv2_linear_resize", "CHANNEL_ORDERS", "RESIZE_MODES"]

log = logging.getLogger(__name__)

NUM_SCENE_CLASSES = 133
NUM_PART_CLASSES = 26
SPLIT_FILES = {"trainval": "hot_dca_trainval.npz", "test": "hot_dca_test.npz"}
_N_VERTS = {"smpl": 6890, "smplx": 10475}
_CONTACT_KEY = {"smpl": "contact_label", "smplx": "contact_label_smplx"}
_PATH_KEYS = ("imgname", "polygon_2d_contact", "scene_seg", "part_seg")
_PARAM_KEYS = {"pose": (72,), "shape": (10,), "transl": (3,), "cam_k": (3, 3)}
CHANNEL_ORDERS = ("rgb", "bgr")
RESIZE_MODES = ("pil", "cv2")
_COEF_BITS = 11  # cv2's INTER_RESIZE_COEF_BITS: interpolation weights in 1/2048


def _linear_taps(n_src: int, n_dst: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2's INTER_LINEAR source indices (i0, i1) and fixed-point weights (w0, w1) along one axis.

    The sample position ``(d + 0.5) * scale - 0.5`` is computed in float32 as cv2 does, with
    ``scale = 1 / (n_dst / n_src)``. Columns (``clamp``) outside the source are pinned to the edge
    pixel with weight 2048 on it; rows keep their fractional weight and clip the two indices,
    which rounds differently: both are cv2's behaviour.
    """
    scale = 1.0 / (n_dst / n_src)
    pos = ((np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0.astype(np.float32)).astype(np.float32)
    if clamp:
        low, high = i0 < 0, i0 >= n_src - 1
        i0[low], frac[low] = 0, 0.0
        i0[high], frac[high] = n_src - 1, 0.0
    i1 = np.clip(i0 + 1, 0, n_src - 1)
    i0 = np.clip(i0, 0, n_src - 1)
    one = np.float32(1 << _COEF_BITS)
    w1 = np.rint(frac * one).astype(np.int64)
    w0 = np.rint((np.float32(1.0) - frac) * one).astype(np.int64)
    return i0, i1, w0, w1


def cv2_linear_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height))`` (INTER_LINEAR) of a uint8 (H, W) or (H, W, C) array, without cv2.

    Horizontal pass with 11-bit integer weights, then the vertical pass as cv2's SIMD code
    computes it (``((w0 * (a >> 4)) >> 16) + ((w1 * (b >> 4)) >> 16) + 2) >> 2``); no
    antialiasing when shrinking. Measured bit-identical to opencv-python-headless 4.14 on 300
    random sizes (2 to 700 pixels, 1 and 3 channels, shrinking and enlarging).
    """
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"cv2_linear_resize: expected a uint8 (H, W) or (H, W, C) array, got {a.dtype} {a.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"cv2_linear_resize: width and height must be positive, got {width}, {height}")
    x0, x1, u0, u1 = _linear_taps(a.shape[1], width, clamp=True)
    y0, y1, v0, v1 = _linear_taps(a.shape[0], height, clamp=False)
    src = a.astype(np.int64)
    extra = (None,) * (a.ndim - 2)
    rows = src[:, x0] * u0[(slice(None), *extra)] + src[:, x1] * u1[(slice(None), *extra)]  # (H, width[, C])
    v0, v1 = v0[(slice(None), None, *extra)], v1[(slice(None), None, *extra)]
    out = (((v0 * (rows[y0] >> 4)) >> 16) + ((v1 * (rows[y1] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _missing_npz_message(path: Path, root: str) -> str:
    return (f"DAMON file not found: {path}. The real DAMON release (hot_dca_trainval.npz, hot_dca_test.npz and "
            f"the HOT images) comes from https://deco.is.tue.mpg.de (after registration); point `root` (e.g. "
            f"DAMON_ROOT) at its folder, or write a synthetic set in the same layout with "
            f"`python tools/make_synthetic.py damon --n 600 --out {root}`, or give the DataModule "
            f"`synthesize: {{n: 700, seed: 0}}` to write one there when none is found.")


class DamonDataset(Dataset):
    """Samples of one DAMON npz file (``rows`` selects and orders them), preprocessed as DECO does.

    Items carry the batch keys of the module docstring without the batch dimension. With
    ``one_hot=False`` ``scene_seg``/``part_seg`` are uint8 label maps (s, s) instead, which
    ``collate_damon`` one-hot encodes per batch (one allocation instead of a copy per sample).

    ``validate(i)`` checks a row cheaply (values, vertex count, files present and readable
    headers) and returns the problem or None; ``__getitem__`` raises a ValueError /
    FileNotFoundError naming the npz file, the key or file and the row. Contact labels must be
    0 or 1; with ``clip_labels=True`` they are clipped to [0, 1] (see :func:`clip_contact`;
    already done when ``data`` is given) and any value in [0, 1] is accepted.
    """

    def __init__(self, npz_path: str | os.PathLike, root: str | os.PathLike, rows: list[int] | np.ndarray | None = None,
                 image_size: int = 256, seg_size: int = 256, model_type: str = "smpl", cache: bool = True,
                 cache_limit: int = 4000, data: dict[str, np.ndarray] | None = None, one_hot: bool = True,
                 load_images: bool = True, clip_labels: bool = False, channel_order: str = "rgb",
                 resize: str = "pil"):
        if model_type not in _N_VERTS:
            raise DataError(f"DamonDataset: model_type must be one of {sorted(_N_VERTS)}, got {model_type!r}")
        _check_preprocessing("DamonDataset", channel_order, resize)
        if image_size <= 0 or seg_size <= 0:
            raise DataError(f"DamonDataset: image_size and seg_size must be positive, got {image_size}, {seg_size}")
        self.npz_path = str(npz_path)
        self.root = str(root)
        self.roots = path_roots(root)
        self.image_size = image_size
        self.seg_size = seg_size
        self.model_type = model_type
        self.n_verts = _N_VERTS[model_type]
        self.contact_key = _CONTACT_KEY[model_type]
        self.data = data if data is not None else load_npz(self.npz_path, self.root, model_type)
        self.clip_labels = clip_labels
        if clip_labels and data is None:
            clip_contact(self.data, self.contact_key, self.npz_path)
        n = len(self.data["imgname"])
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        self.cache_enabled = cache and len(self.rows) <= cache_limit
        self.one_hot = one_hot
        self.load_images = load_images
        self.channel_order = channel_order
        self.resize = resize
        self._cache: dict[int, tuple] = {}
        self._mean_np = np.asarray(IMAGENET_MEAN, np.float32)
        self._std_np = np.asarray(IMAGENET_STD, np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    # -- validation -------------------------------------------------------------------------

    def _where(self, row: int) -> str:
        return f"{self.npz_path}: sample {row}"

    def check_values(self, row: int) -> None:
        """Raise ValueError if row ``row`` has a wrong vertex count or NaN/inf parameters."""
        c = np.asarray(self.data[self.contact_key][row])
        if c.ndim != 1 or c.shape[0] != self.n_verts:
            raise DataError(f"{self._where(row)}: key '{self.contact_key}' has {c.size} values, expected "
                            f"{self.n_verts} (one per {self.model_type.upper()} vertex)")
        c = c.astype(np.float64)
        if not np.isfinite(c).all():
            raise DataError(f"{self._where(row)}: key '{self.contact_key}' has NaN/inf")
        bad = ((c < 0) | (c > 1)) if self.clip_labels else ((c != 0) & (c != 1))
        if bad.any():
            j = int(np.argmax(bad))
            raise DataError(f"{self.npz_path}: sample {row} (image {self.data['imgname'][row]}): key "
                            f"'{self.contact_key}' has value {c[j]:g} at vertex {j}, expected 0 or 1 "
                            f"(data.clip_labels=true clips labels to [0, 1])")
        for k, shape in _PARAM_KEYS.items():
            a = np.asarray(self.data[k][row], dtype=np.float64)
            if a.shape != shape:
                raise DataError(f"{self._where(row)}: key '{k}' has shape {a.shape}, expected {shape}")
            if not np.isfinite(a).all():
                raise DataError(f"{self._where(row)}: key '{k}' has NaN/inf")

    def path(self, key: str, row: int) -> str:
        """The resolved file of ``key`` for row ``row``; FileNotFoundError naming it if missing."""
        stored = str(self.data[key][row])
        p = resolve_path(stored, self.roots)
        if p is None:
            raise FileNotFoundError(f"{self._where(row)}: key '{key}' file not found: {stored} "
                                    f"(looked relative to {', '.join(self.roots)})")
        return p

    def check_files(self, row: int, open_headers: bool = True) -> None:
        """Raise if a file of row ``row`` is missing or (with ``open_headers``) not a readable image."""
        from PIL import Image

        for key in _PATH_KEYS:
            p = self.path(key, row)
            if open_headers:
                try:
                    with Image.open(p) as im:
                        _ = im.size  # header only: cheap
                except Exception as e:  # PIL raises several types for broken files
                    raise DataError(f"{self._where(row)}: key '{key}' file {p} is not a readable image "
                                    f"({type(e).__name__}: {e})") from e

    def validate(self, row: int) -> str | None:
        """The problem with row ``row`` as a message, or None if it looks fine."""
        try:
            self.check_values(row)
            if self.load_images:
                self.check_files(row)
        except (ValueError, FileNotFoundError) as e:
            return str(e)
        return None

    # -- loading ----------------------------------------------------------------------------

    def _read_image(self, key: str, row: int, mode: str):
        """(image, resolved path, (w, h) of the file's pixels: a draft-decoded JPEG is smaller)."""
        from PIL import Image, ImageOps

        p = self.path(key, row)
        try:
            im = Image.open(p)
            size = im.size
            if mode == "RGB" and im.format == "JPEG" and self.resize == "pil":
                im.draft("RGB", (self.image_size, self.image_size))  # decode JPEGs at reduced scale
            im.load()
            if mode == "RGB" and self.resize == "cv2":
                im = ImageOps.exif_transpose(im)  # cv2.imread applies the EXIF orientation
                size = im.size
        except Exception as e:
            raise DataError(f"{self._where(row)}: key '{key}' file {p} is not a readable image "
                            f"({type(e).__name__}: {e})") from e
        return im, p, size

    def _labels(self, key: str, row: int, n_classes: int) -> np.ndarray:
        from PIL import Image

        im, p, _ = self._read_image(key, row, "L")
        if im.mode in ("RGB", "RGBA"):
            # DECO reads label maps with cv2 (BGR) and keeps channel 0: blue in RGB order.
            im = im.getchannel("B")
        elif im.mode not in ("L", "P"):
            im = Image.fromarray(np.asarray(im).astype(np.int64).clip(0, 255).astype(np.uint8))
        if self.resize == "cv2":  # the release's bilinear resize, ids interpolated at class borders
            lab = cv2_linear_resize(np.asarray(im, dtype=np.uint8), self.seg_size, self.seg_size)
        else:
            lab = np.array(im.resize((self.seg_size, self.seg_size), Image.NEAREST), dtype=np.uint8)
        if lab.max() >= n_classes:
            raise DataError(f"{self._where(row)}: key '{key}' file {p} has label {int(lab.max())}, "
                            f"expected 0..{n_classes - 1}")
        return lab

    def _decode(self, row: int) -> tuple:
        from PIL import Image

        S = self.image_size
        im, _, (w, h) = self._read_image("imgname", row, "RGB")  # cam_k is in the file's pixels
        if self.resize == "cv2":
            rgb = cv2_linear_resize(np.asarray(im.convert("RGB"), np.uint8), S, S)
        else:
            rgb = np.array(im.convert("RGB").resize((S, S), Image.BILINEAR), np.uint8)
        if self.channel_order == "bgr":
            rgb = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.imread hands the release
        scene = self._labels("scene_seg", row, NUM_SCENE_CLASSES)
        part = self._labels("part_seg", row, NUM_PART_CLASSES)
        cm, _, _ = self._read_image("polygon_2d_contact", row, "L")
        cm = np.asarray(cm)
        cm = cm.reshape(cm.shape[0], cm.shape[1], -1)
        if self.resize == "cv2":  # each channel resized bilinearly, then > 0 (the release), any channel
            c2d = (cv2_linear_resize(np.ascontiguousarray(cm.astype(np.uint8)), S, S).reshape(S, S, -1) > 0).any(-1)
        else:
            cm = (cm > 0).any(-1).astype(np.uint8) * 255
            c2d = np.asarray(Image.fromarray(cm).resize((S, S), Image.NEAREST)) > 0
        return rgb, scene, part, c2d, (w, h)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self.rows):
            raise IndexError(f"{self.npz_path}: index {i} out of range for {len(self.rows)} samples")
        row = int(self.rows[i])
        self.check_values(row)
        if not self.load_images:
            return self._params(row)
        dec = self._cache.get(row)
        if dec is None:
            dec = self._decode(row)
            if self.cache_enabled:
                self._cache[row] = dec
        rgb, scene, part, c2d, (w, h) = dec
        S = self.image_size
        # numpy, not torch: these per-sample ops are single-threaded by nature, and torch's
        # intra-op threads made them ~10x slower on a busy 2-core machine.
        img = (rgb.astype(np.float32) * (1.0 / 255.0) - self._mean_np) / self._std_np
        img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if self.one_hot:
            scene_oh = torch.from_numpy(_one_hot(scene, NUM_SCENE_CLASSES))
            part_oh = torch.from_numpy(_one_hot(part, NUM_PART_CLASSES))
        else:  # label maps; collate_damon one-hot encodes the whole batch in one allocation
            scene_oh, part_oh = torch.from_numpy(scene), torch.from_numpy(part)
        item = self._params(row)
        item["cam_k"][0] *= S / w
        item["cam_k"][1] *= S / h
        item.update(image=img, scene_seg=scene_oh, part_seg=part_oh, contact_2d=torch.from_numpy(c2d.astype(np.float32))[None])
        return item

    def _params(self, row: int) -> dict[str, Any]:
        """Labels and parameters of a row (cam_k as stored, i.e. for the original image size)."""
        return {
            "contact_label": torch.as_tensor(np.asarray(self.data[self.contact_key][row], dtype=np.float32)),
            "pose": torch.as_tensor(np.asarray(self.data["pose"][row], dtype=np.float32)),
            "shape": torch.as_tensor(np.asarray(self.data["shape"][row], dtype=np.float32)),
            "transl": torch.as_tensor(np.asarray(self.data["transl"][row], dtype=np.float32)),
            "cam_k": torch.as_tensor(np.asarray(self.data["cam_k"][row], dtype=np.float64), dtype=torch.float32).clone(),
            "index": row,
            "imgname": str(self.data["imgname"][row]),
        }


class DamonObjectPairs(Dataset):
    """(image, object) pairs of a DamonDataset for semantic (object-wise) contact.

    Reads ``contact_label_objectwise`` (per row a dict object name -> vertex ids); each item
    is the base item with ``contact_label`` replaced by that object's contact and
    ``object_name`` added. ``rows`` of the base dataset decide which images take part.
    """

    def __init__(self, base: DamonDataset):
        if "contact_label_objectwise" not in base.data:
            raise DataError(f"{base.npz_path}: contact_mode='semantic' needs key 'contact_label_objectwise' "
                            f"(per image a dict object name -> vertex ids); the file has {sorted(base.data)}")
        if base.model_type != "smpl":
            raise DataError(f"{base.npz_path}: contact_mode='semantic' reads SMPL vertex ids; "
                            f"model_type={base.model_type!r} is not supported")
        self.base = base
        self.pairs: list[tuple[int, str, np.ndarray]] = []
        for pos, row in enumerate(base.rows.tolist()):
            ow = base.data["contact_label_objectwise"][row]
            ow = ow.item() if isinstance(ow, np.ndarray) and ow.shape == () else ow
            if not isinstance(ow, dict):
                raise DataError(f"{base._where(row)}: key 'contact_label_objectwise' is {type(ow).__name__}, "
                                f"expected a dict object name -> vertex ids")
            for name in sorted(ow):
                ids = np.asarray(ow[name]).astype(np.int64).ravel()
                if ids.size and (ids.min() < 0 or ids.max() >= base.n_verts):
                    raise DataError(f"{base._where(row)}: contact_label_objectwise['{name}'] has vertex ids outside "
                                    f"[0, {base.n_verts})")
                self.pairs.append((pos, str(name), ids))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pos, name, ids = self.pairs[i]
        item = self.base[pos]
        label = torch.zeros(self.base.n_verts, dtype=torch.float32)
        label[torch.from_numpy(ids)] = 1.0
        item["contact_label"] = label
        item["object_name"] = name
        return item


def _check_preprocessing(owner: str, channel_order: str, resize: str) -> None:
    if channel_order not in CHANNEL_ORDERS:
        raise DataError(f"{owner}: channel_order must be 'rgb' or 'bgr' (the DECO release's cv2 order), "
                        f"got {channel_order!r}")
    if resize not in RESIZE_MODES:
        raise DataError(f"{owner}: resize must be 'pil' or 'cv2' (the DECO release's bilinear resize of images and "
                        f"labels), got {resize!r}")


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """uint8 one-hot (C, H, W) of an (H, W) label map with values < n_classes."""
    h, w = labels.shape
    out = np.zeros((n_classes, h * w), np.uint8)
    out[labels.reshape(-1).astype(np.intp), np.arange(h * w)] = 1
    return out.reshape(n_classes, h, w)


def collate_damon(items: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate, plus one-hot encoding of ``scene_seg``/``part_seg`` given as label maps."""
    from torch.utils.data import default_collate

    maps = {}
    for key in ("scene_seg", "part_seg"):
        if items and key in items[0] and items[0][key].ndim == 2:
            maps[key] = np.stack([it[key].numpy() for it in items])
            items = [{k: v for k, v in it.items() if k != key} for it in items]
    batch = default_collate(items)
    for key, lab in maps.items():
        n_classes = NUM_SCENE_CLASSES if key == "scene_seg" else NUM_PART_CLASSES
        b, h, w = lab.shape
        out = np.zeros((b, n_classes, h * w), np.uint8)
        np.put_along_axis(out, lab.reshape(b, 1, -1).astype(np.intp), 1, axis=1)
        batch[key] = torch.from_numpy(out.reshape(b, n_classes, h, w))
    return batch


def load_npz(path: str | os.PathLike, root: str, model_type: str = "smpl") -> dict[str, np.ndarray]:
    """The arrays of a DAMON npz file; errors name the file and the missing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_npz_message(path, root))
    try:
        with np.load(path, allow_pickle=True) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from e
    need = list(_PATH_KEYS) + list(_PARAM_KEYS) + [_CONTACT_KEY[model_type]]
    for k in need:
        if k not in data:
            raise DataError(f"{path}: key '{k}' missing (has {sorted(data)})")
    n = len(data["imgname"])
    for k in need:
        if len(data[k]) != n:
            raise DataError(f"{path}: key '{k}' has {len(data[k])} rows, expected {n} (as imgname)")
    return data


def clip_contact(data: dict[str, np.ndarray], key: str, path: str | os.PathLike) -> tuple[int, int]:
    """Clip ``data[key]`` (contact labels) to [0, 1] in place; returns (values clipped, samples with one) and
    prints one counted warning naming ``path`` when any value was clipped. NaN/inf are left for the checks."""
    c = np.asarray(data[key])
    out = np.zeros(c.shape, bool)
    if c.dtype.kind in "biuf":
        with np.errstate(invalid="ignore"):
            out = (c < 0) | (c > 1)
    n_values = int(out.sum())
    if not n_values:
        return 0, 0
    n_rows = int(out.reshape(len(c), -1).any(1).sum())
    data[key] = np.clip(c, 0, 1)  # NaN stays NaN (rejected by the checks)
    print(f"[damon] warning: clipped {n_values} values in {n_rows} samples of {path} to [0, 1] "
          f"(key '{key}', clip_labels=true)", flush=True)
    return n_values, n_rows


@register("datamodule", "damon")
class DamonDataModule(SplitDataModule):
    """DAMON train/val/test loaders (train/val split from trainval by a seeded fraction; test from the test npz).

    ``setup`` (any stage) reads both npz files (every key, so a truncated or damaged file fails
    before the first step) and checks every sample of every split it sets up: values, vertex
    count, contact labels in {0, 1}, and that every file it names exists with a readable image
    header (images are not decoded). ``fit``/``validate``/None set up train, val and test;
    ``test``/``predict`` the test split only.

    ``skip_bad=True`` drops the bad samples instead, counted in ``num_skipped`` (and listed in
    ``skipped``), logged as a warning and reported by :meth:`data_report`; a split where that
    leaves no sample, or drops more than ``max_skip_fraction`` (default 0.5) of it, fails with an
    error naming the split, the file, the counts and the first problem. Otherwise the first bad
    sample raises an error naming the npz file, the key or file and the row.
    ``clip_labels=True`` clips contact labels outside [0, 1] (one counted warning per file)
    instead of rejecting them. ``root`` is resolved with :func:`zoo.core.paths.resolve_data_path`
    (a relative root is under the data home, ``$ZOO_DATA`` or the checkout's ``data/``) into
    ``self.root``.
    ``channel_order`` ('rgb' / 'bgr') and ``resize`` ('pil' / 'cv2') choose the preprocessing (module
    docstring); recipes that start from the official DECO weights set ``bgr`` and ``cv2``.
    ``max_samples`` caps each split (quick runs). ``contact_mode="semantic"`` yields (image,
    object) pairs with per-object contact; ``load_images=False`` reads labels only (see the
    module docstring). ``cache`` keeps decoded, resized arrays
    in memory for splits of at most ``cache_limit`` samples.

    ``synthesize`` (keyword arguments of :func:`zoo.data.synthetic.damon.generate_damon`, e.g.
    ``{"n": 700, "seed": 0}``): when neither npz file is under ``root``, ``prepare_data`` (or
    the first ``setup``) writes a synthetic set there, posing the SMPL model in ``model_dir``
    (default :func:`zoo.body.model.default_body_model_dir`, where the synthetic stand-in is
    written first if no SMPL model is there). Existing files are never overwritten.
    """

    data_name = "damon"

    def __init__(self, root: str, batch_size: int = 16, num_workers: int = 0, image_size: int = 256,
                 seg_size: int = 256, val_fraction: float = 0.1, skip_bad: bool = False, model_type: str = "smpl",
                 seed: int = 0, max_samples: int | None = None, cache: bool = True, cache_limit: int = 4000,
                 pin_memory: bool = False, drop_last: bool = False,
                 contact_mode: Literal["binary", "semantic"] = "binary", load_images: bool = True,
                 synthesize: dict | None = None, max_skip_fraction: float = 0.5, clip_labels: bool = False,
                 channel_order: Literal["rgb", "bgr"] = "rgb", resize: Literal["pil", "cv2"] = "pil"):
        super().__init__()
        if batch_size <= 0:
            raise DataError(f"damon: batch_size must be positive, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"damon: val_fraction must be in [0, 1), got {val_fraction}")
        if model_type not in _N_VERTS:
            raise DataError(f"damon: model_type must be one of {sorted(_N_VERTS)}, got {model_type!r}")
        if max_samples is not None and max_samples <= 0:
            raise DataError(f"damon: max_samples must be positive or None, got {max_samples}")
        if contact_mode not in ("binary", "semantic"):
            raise DataError(f"damon: contact_mode must be 'binary' or 'semantic', got {contact_mode!r}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise DataError(f"damon: max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        _check_preprocessing("damon", channel_order, resize)
        if synthesize is not None:
            from zoo.data.synthetic.damon import generate_damon

            synthesize = check_synthesize("damon", generate_damon, synthesize)
        self.save_hyperparameters()
        self.root = str(resolve_data_path(root))
        self.num_skipped = 0
        self.skipped: list[tuple[str, int, str]] = []
        self.train_set: DamonDataset | None = None
        self.val_set: DamonDataset | None = None
        self.test_set: DamonDataset | None = None
        self._checked: set[str] = set()

    @property
    def name_keys(self) -> tuple[str, ...]:
        """Per-sample name keys of a batch: ``imgname``, and ``object_name`` with ``contact_mode="semantic"``."""
        return ("imgname", "object_name") if self.hparams.contact_mode == "semantic" else ("imgname",)

    @property
    def classes(self) -> list[str]:
        """Sorted object names of ``contact_label_objectwise`` in the trainval file (the semantic-contact
        vocabulary; [] in binary mode). Read once from the npz."""
        if self.hparams.contact_mode != "semantic":
            return []
        if getattr(self, "_classes", None) is None:
            data = load_npz(self.npz_path("trainval"), self.root, self.hparams.model_type)
            if "contact_label_objectwise" not in data:
                raise DataError(f"{self.npz_path('trainval')}: contact_mode='semantic' needs key "
                                f"'contact_label_objectwise'; the file has {sorted(data)}")
            names = set()
            for ow in data["contact_label_objectwise"]:
                ow = ow.item() if isinstance(ow, np.ndarray) and ow.shape == () else ow
                if isinstance(ow, dict):
                    names.update(str(k) for k in ow)
            self._classes = sorted(names)
        return list(self._classes)

    def npz_path(self, split: str) -> Path:
        """Path of the npz file of ``split`` ('trainval' or 'test')."""
        return Path(self.root) / SPLIT_FILES[split]

    def _dataset(self, split: str, rows: np.ndarray | None, data: dict | None = None) -> DamonDataset:
        return DamonDataset(self.npz_path(split), self.root, rows, image_size=self.hparams.image_size, seg_size=self.hparams.seg_size,
                            model_type=self.hparams.model_type, cache=self.hparams.cache, cache_limit=self.hparams.cache_limit, data=data,
                            one_hot=False, load_images=self.hparams.load_images, clip_labels=self.hparams.clip_labels,
                            channel_order=self.hparams.channel_order, resize=self.hparams.resize)

    def _load(self, split: str) -> dict[str, np.ndarray]:
        """The arrays of ``split``'s npz file, contact labels clipped when ``clip_labels`` says so."""
        data = load_npz(self.npz_path(split), self.root, self.hparams.model_type)
        if self.hparams.clip_labels:
            clip_contact(data, _CONTACT_KEY[self.hparams.model_type], self.npz_path(split))
        return data

    def _pairs(self, ds: DamonDataset | None) -> Dataset | None:
        return DamonObjectPairs(ds) if ds is not None and self.hparams.contact_mode == "semantic" else ds

    def _filter(self, ds: DamonDataset, name: str) -> DamonDataset:
        """Validate every row once; drop and count bad rows (skip_bad) or raise on the first."""
        good = []
        for row in ds.rows.tolist():
            problem = ds.validate(row)
            if problem is None:
                good.append(row)
                continue
            if not self.hparams.skip_bad:
                ds.check_values(row)  # re-raise with the precise exception type
                ds.check_files(row)
            self.skipped.append((ds.npz_path, row, problem))
        n_bad = len(ds.rows) - len(good)
        if n_bad:
            self.num_skipped += n_bad
            log.warning("damon: skipped %d bad sample(s) of %s (%s split); first: %s", n_bad, ds.npz_path, name,
                        self.skipped[-n_bad][2])
        self._count_skipped(name, ds.npz_path, len(ds.rows), [p for _, _, p in self.skipped[len(self.skipped) - n_bad:]])
        ds.rows = np.asarray(good, dtype=np.int64)
        return ds

    def _synthesize(self) -> None:
        """Write a synthetic DAMON set under ``root`` if neither split file is there (see the class docstring)."""
        from zoo.body.model import body_model_file, default_body_model_dir
        from zoo.data.synthetic.damon import generate_damon

        kw = dict(self.hparams.synthesize)
        kw.setdefault("model_dir", str(default_body_model_dir()))
        seed = kw.get("seed", inspect.signature(generate_damon).parameters["seed"].default)
        args = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "seed")

        def write() -> None:
            body_model_file(kw["model_dir"], "smpl", synthesize=True)  # the synthetic SMPL if none is there
            generate_damon(self.root, **kw)

        synthesize_missing("damon", self.root, [self.npz_path(s) for s in SPLIT_FILES], write,
                           f"[damon] no DAMON data under {self.root}: writing a synthetic DAMON-format set there "
                           f"with seed {seed} ({args})")

    def setup(self, stage: str | None = None) -> None:
        """Build and check the datasets of a stage: 'fit', 'validate' or None set up train, val and test (the
        test file is checked before the first training step); 'test' and 'predict' the test split."""
        self._ensure_data()
        if stage in (None, "fit", "validate") and "trainval" not in self._checked:
            data = self._load("trainval")
            val_rows, train_rows = seeded_split(len(data["imgname"]), self.hparams.val_fraction, self.hparams.seed)
            train = self._filter(self._dataset("trainval", self._cap(train_rows), data), "train")
            val = self._filter(self._dataset("trainval", self._cap(val_rows), data), "val")
            self.train_set, self.val_set = train, val
            self._checked.add("trainval")
        if "test" not in self._checked:
            data = self._load("test")
            rows = self._cap(np.arange(len(data["imgname"])))
            self.test_set = self._filter(self._dataset("test", rows, data), "test")
            self._checked.add("test")

    def _loader_dataset(self, ds: DamonDataset | None) -> Dataset | None:
        return self._pairs(ds)

    def _collate(self):
        return collate_damon
