"""DAMON loading on real files: a camera JPEG and label maps stored as palette, RGB and grayscale PNGs.

The images are byte-identical copies of tests/fixtures/photos/grace_hopper.jpg (a real camera JPEG, 512 x 600,
4:2:0 chroma subsampling; see its README). Each loaded image is compared with an independent decode of the
file (PIL, or a float bilinear resize written here for ``resize="cv2"``) normalised with the documented
ImageNet statistics; each label map must load as exactly the class ids written at hand-chosen pixels.
"""
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from zoo.core.batch import DataError
from zoo.data.damon import DamonDataModule, DamonDataset
from zoo.data.synthetic.files import save_npz_deterministic

PHOTO = Path(__file__).resolve().parents[1] / "fixtures" / "photos" / "grace_hopper.jpg"
PHOTO_SHA256 = "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"
W0, H0 = 512, 600  # the photo's size; the label maps and masks have the same
MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet statistics (R, G, B), as the module docstring says
STD = np.array([0.229, 0.224, 0.225])
REL = "datasets/HOT-Annotated"
FORMATS = ("P", "RGB", "L")  # row i stores both of its label maps as FORMATS[i]
K = np.array([[600.0, 0.0, 256.0], [0.0, 610.0, 300.0], [0.0, 0.0, 1.0]])

# --- layout "marks" (resize="pil", nearest neighbour to SEG x SEG) -------------------------------------------
# Output cell d samples source pixel floor((d + 0.5) * n / SEG). The marks sit where that position is not an
# integer (PIL's float arithmetic can land an exact integer one pixel low): rows 12.5, 87.5, 262.5, 437.5, 587.5
# and columns 10.67, 53.33, 117.33, 202.67, 501.33. Their 4-neighbours hold a decoy id that must never appear.
SEG = 24
SCENE_MARKS = [(0, 0, 13), (3, 2, 32), (10, 9, 122), (17, 23, 132), (23, 5, 10)]  # (cell row, cell col, id)
PART_MARKS = [(0, 23, 25), (3, 5, 1), (10, 0, 7), (17, 9, 16), (23, 2, 21)]
SCENE_DECOY, PART_DECOY = 50, 11

# --- layout "blocks" (resize="cv2", bilinear to 8 x 8) --------------------------------------------------------
# 8 x 8 constant blocks of 64 columns x 75 rows. cv2's INTER_LINEAR samples column 64c + 31.5 (taps 64c + 31 and
# 64c + 32, weights 1/2 each) and row 75r + 37 exactly (weight 1 on it), all inside block (r, c): each cell gets
# its block's id. One block per map is split at its middle column, so its two taps differ: the cell gets the
# midpoint, rounded half up by cv2's fixed point ((10 + 31) / 2 = 20.5 -> 21, (25 + 0) / 2 = 12.5 -> 13).
BLOCK_SCENE = (np.arange(8)[:, None] * 13 + np.arange(8)[None, :] * 17) % 133
BLOCK_PART = (np.arange(8)[:, None] * 5 + np.arange(8)[None, :] * 3) % 26
SCENE_SPLIT, PART_SPLIT = (2, 3, 10, 31, 21), (5, 6, 25, 0, 13)  # (row, col, left id, right id, loaded id)


def _palette() -> list[int]:
    """Index i is drawn as (255 - i, i + 85, i + 170) mod 256: no channel and no grey level equals the index."""
    return [v for i in range(256) for v in (255 - i, (i + 85) % 256, (i + 170) % 256)]


def _save_labels(ids: np.ndarray, path: Path, fmt: str) -> None:
    """Write an (H, W) id map as an 8-bit palette ("P"), RGB (blue = id, as cv2's channel 0) or grayscale PNG."""
    ids = np.ascontiguousarray(ids, np.uint8)
    if fmt == "P":
        im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
        im.putpalette(_palette())
    elif fmt == "RGB":  # red and green hold other values: reading them, or grey, gives wrong ids
        im = Image.fromarray(np.stack([255 - ids, (ids.astype(np.int64) * 7 % 256).astype(np.uint8), ids], -1))
    else:
        im = Image.fromarray(ids)
    im.save(path)
    with Image.open(path) as back:  # the file is what the test claims it is
        assert back.mode == fmt and np.array_equal(np.asarray(back)[..., 2] if fmt == "RGB" else np.asarray(back), ids)
        if fmt == "P":
            assert not np.array_equal(np.asarray(back.convert("RGB"))[..., 2], ids)  # colours are not the ids


def _marks_map(background: np.ndarray, marks, decoy: int) -> np.ndarray:
    lab = background.copy()
    for r, c, cid in marks:
        y, x = int((r + 0.5) * H0 / SEG), int((c + 0.5) * W0 / SEG)
        lab[y - 1, x] = lab[y + 1, x] = lab[y, x - 1] = lab[y, x + 1] = decoy
        lab[y, x] = cid
    return lab


def _scene_part(layout: str) -> tuple[np.ndarray, np.ndarray]:
    """The full-size (H0, W0) scene and part id maps of a layout."""
    if layout == "marks":
        scene = np.zeros((H0, W0), np.uint8)
        scene[:, W0 // 2:] = 131  # person | wall-other-merged
        part = np.zeros((H0, W0), np.uint8)
        part[H0 // 2:] = 3
        return _marks_map(scene, SCENE_MARKS, SCENE_DECOY), _marks_map(part, PART_MARKS, PART_DECOY)
    scene = np.kron(BLOCK_SCENE, np.ones((75, 64), np.int64)).astype(np.uint8)
    part = np.kron(BLOCK_PART, np.ones((75, 64), np.int64)).astype(np.uint8)
    for lab, (r, c, left, right, _) in ((scene, SCENE_SPLIT), (part, PART_SPLIT)):
        lab[75 * r: 75 * (r + 1), 64 * c: 64 * c + 32] = left
        lab[75 * r: 75 * (r + 1), 64 * c + 32: 64 * (c + 1)] = right
    return scene, part


def _write_root(root: Path, layout: str = "marks", photo: bytes | None = None,
                formats: tuple[str, ...] = FORMATS) -> Path:
    """A DAMON-layout folder: row i (both splits) has a copy of the photo and label maps in formats[i]."""
    for sub in ("images", "annotations", "segmentation_masks", "parts"):
        (root / REL / sub).mkdir(parents=True, exist_ok=True)
    scene, part = _scene_part(layout)
    mask = np.zeros((H0, W0), np.uint8)
    mask[: H0 // 2, : W0 // 2] = 255  # contact polygon in the top-left quadrant
    rec = {k: [] for k in ("imgname", "polygon_2d_contact", "scene_seg", "part_seg")}
    for i, fmt in enumerate(formats):
        name = f"photo_{i}"
        if photo is None:
            shutil.copyfile(PHOTO, root / REL / "images" / f"{name}.jpg")
        else:
            (root / REL / "images" / f"{name}.jpg").write_bytes(photo)
        _save_labels(scene, root / REL / "segmentation_masks" / f"{name}.png", fmt)
        _save_labels(part, root / REL / "parts" / f"{name}.png", fmt)
        Image.fromarray(mask).save(root / REL / "annotations" / f"{name}.png")
        for key, sub, ext in (("imgname", "images", "jpg"), ("polygon_2d_contact", "annotations", "png"),
                              ("scene_seg", "segmentation_masks", "png"), ("part_seg", "parts", "png")):
            rec[key].append(f"{REL}/{sub}/{name}.{ext}")
    n = len(formats)
    contact = np.zeros((n, 6890))
    objectwise = np.empty(n, dtype=object)
    for i in range(n):
        contact[i, [100 + i, 3000]] = 1
        objectwise[i] = {"chair": np.array([100 + i, 3000])}
    arrays = dict(pose=np.zeros((n, 72)), shape=np.zeros((n, 10)), transl=np.tile([0.0, 0.0, 3.0], (n, 1)),
                  cam_k=np.tile(K, (n, 1, 1)), contact_label=contact, contact_label_objectwise=objectwise,
                  **{k: np.array(v) for k, v in rec.items()})
    for split in ("trainval", "test"):
        save_npz_deterministic(root / f"hot_dca_{split}.npz", **arrays)
    return root


def _normalise(rgb: np.ndarray, stats=(MEAN, STD)) -> np.ndarray:
    """(H, W, 3) values in [0, 255] -> (3, H, W) ImageNet-normalised."""
    mean, std = stats
    return ((np.asarray(rgb, np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)


def _bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """Float bilinear resize to (size, size) without antialiasing, sampling (d + 0.5) * n / size - 0.5 (cv2's
    INTER_LINEAR rule, in float instead of cv2's 11-bit fixed point)."""
    def taps(n):
        pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        i0 = np.floor(pos).astype(np.int64)
        return i0, np.minimum(i0 + 1, n - 1), pos - i0

    a = img.astype(np.float64)
    y0, y1, fy = taps(a.shape[0])
    x0, x1, fx = taps(a.shape[1])
    fx = fx[None, :, None]

    def rows(y):
        return a[y][:, x0] * (1 - fx) + a[y][:, x1] * fx

    return rows(y0) * (1 - fy)[:, None, None] + rows(y1) * fy[:, None, None]


def _full_decode() -> np.ndarray:
    with Image.open(PHOTO) as im:
        return np.asarray(im.convert("RGB"))


def _check_cam_k(item, image_size: int, w: int = W0, h: int = H0) -> None:
    want = K.copy()
    want[0] *= image_size / w
    want[1] *= image_size / h
    np.testing.assert_allclose(item["cam_k"].numpy(), want, rtol=1e-6)


def _check_labels(item, layout: str) -> None:
    """scene_seg / part_seg one-hot maps hold exactly the ids written (one class per pixel)."""
    scene_full, part_full = _scene_part(layout)
    for key, full, n_classes in (("scene_seg", scene_full, 133), ("part_seg", part_full, 26)):
        oh = item[key].numpy()
        assert oh.shape[0] == n_classes and (oh.sum(0) == 1).all(), key
        lab = oh.argmax(0)
        if layout == "marks":
            ys, xs = [int((d + 0.5) * H0 / SEG) for d in range(SEG)], [int((d + 0.5) * W0 / SEG) for d in range(SEG)]
            np.testing.assert_array_equal(lab, full[np.ix_(ys, xs)], err_msg=key)
            for r, c, cid in SCENE_MARKS if key == "scene_seg" else PART_MARKS:
                assert lab[r, c] == cid, (key, r, c)
            assert (SCENE_DECOY if key == "scene_seg" else PART_DECOY) not in lab, key
        else:
            r, c, _, _, loaded = SCENE_SPLIT if key == "scene_seg" else PART_SPLIT
            want = (BLOCK_SCENE if key == "scene_seg" else BLOCK_PART).copy()
            want[r, c] = loaded
            np.testing.assert_array_equal(lab, want, err_msg=key)


def test_photo_fixture_is_the_documented_real_jpeg():
    data = PHOTO.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PHOTO_SHA256
    with Image.open(PHOTO) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (W0, H0))
        assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0 chroma subsampling
        assert PHOTO_SHA256 in (PHOTO.parent / "README.md").read_text()


@pytest.mark.parametrize("image_size", [300, 128])
def test_pil_path_decodes_the_photo_and_reads_every_label_format(tmp_path, image_size):
    root = _write_root(tmp_path / "damon")
    ds = DamonDataset(root / "hot_dca_test.npz", root, image_size=image_size, seg_size=SEG)  # rgb, pil
    full = _full_decode()
    by_full = _normalise(np.asarray(Image.fromarray(full).resize((image_size, image_size), Image.BILINEAR)))
    with Image.open(PHOTO) as im:  # the documented reduced-scale JPEG decode, then the bilinear resize
        im.draft("RGB", (image_size, image_size))
        drafted = im.size
        by_draft = _normalise(np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)))
    assert drafted == ((W0, H0) if image_size == 300 else (W0 // 4, H0 // 4))
    for row, fmt in enumerate(FORMATS):
        item = ds[row]
        img = item["image"].numpy()
        assert img.shape == (3, image_size, image_size)
        np.testing.assert_allclose(img, by_draft, rtol=0, atol=1e-5)  # equal up to float32 rounding
        if image_size == 300:  # 512 // 300 = 1: no reduced-scale decode, the plain PIL decode + resize
            np.testing.assert_allclose(img, by_full, rtol=0, atol=1e-5)
        else:  # decoded at 1/4 scale: the same picture, on average within 3 of 255 grey levels per value
            diff = np.abs(img - by_full) * STD[:, None, None] * 255
            assert diff.mean() < 3.0, diff.mean()
        _check_cam_k(item, image_size)  # in the file's pixels, even when the JPEG was decoded at 1/4 scale
        _check_labels(item, "marks")
        c2d = item["contact_2d"][0].numpy()
        half = image_size // 2
        assert (c2d[:half, :half] == 1).all() and c2d[half:].sum() == 0 and c2d[:, half:].sum() == 0, fmt


def test_cv2_path_bgr_matches_float_bilinear_of_the_full_decode(tmp_path):
    S = 256
    root = _write_root(tmp_path / "damon", layout="blocks")
    ds = DamonDataset(root / "hot_dca_test.npz", root, image_size=S, seg_size=8, channel_order="bgr", resize="cv2")
    ref = _bilinear(_full_decode(), S)[..., ::-1]  # B, G, R planes, normalised with the R, G, B statistics
    for row, fmt in enumerate(FORMATS):
        item = ds[row]
        img = item["image"].numpy()
        err = np.abs(img * STD[:, None, None] + MEAN[:, None, None] - ref.transpose(2, 0, 1) / 255) * 255
        assert err.max() <= 1.0, (fmt, err.max())  # cv2's 11-bit fixed point vs float: within one grey level
        assert err.mean() < 0.5, (fmt, err.mean())
        _check_cam_k(item, S)
        _check_labels(item, "blocks")


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The same JPEG (same scan bytes) with an EXIF APP1 segment holding Orientation, after the JFIF APP0."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    assert jpeg[:4] == b"\xff\xd8\xff\xe0"
    end_app0 = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:end_app0] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[end_app0:]


def test_cv2_path_applies_exif_orientation_and_rescales_cam_k_to_it(tmp_path):
    S = 64
    root = _write_root(tmp_path / "damon", photo=_with_exif_orientation(PHOTO.read_bytes(), 6), formats=("L",))
    with Image.open(root / REL / "images" / "photo_0.jpg") as im:
        assert im.size == (W0, H0) and im.getexif()[0x0112] == 6
    item = DamonDataset(root / "hot_dca_test.npz", root, image_size=S, seg_size=8, resize="cv2")[0]
    upright = np.rot90(_full_decode(), k=-1)  # orientation 6: shown rotated 90 degrees clockwise, 600 x 512
    err = np.abs(item["image"].numpy() - _normalise(_bilinear(upright, S))) * STD[:, None, None] * 255
    assert err.max() <= 1.0, err.max()
    _check_cam_k(item, S, w=H0, h=W0)


@pytest.mark.parametrize("key, bad, n_classes", [("scene_seg", 133, 133), ("part_seg", 90, 26)])
def test_palette_index_beyond_the_classes_fails_naming_the_file(tmp_path, key, bad, n_classes):
    root = _write_root(tmp_path / "damon", formats=("P",))
    sub = "segmentation_masks" if key == "scene_seg" else "parts"
    path = root / REL / sub / "photo_0.png"
    ids = np.zeros((H0, W0), np.uint8)
    ids[H0 // 2:] = bad  # drawn in colour (255 - bad, ..., (bad + 170) % 256): blue 47 or 4, in range
    _save_labels(ids, path, "P")
    ds = DamonDataset(root / "hot_dca_test.npz", root, image_size=32, seg_size=SEG)
    with pytest.raises(DataError) as e:
        ds[0]
    assert str(e.value) == (f"{root / 'hot_dca_test.npz'}: sample 0: key '{key}' file {path} has label {bad}, "
                            f"expected 0..{n_classes - 1}")


def test_folder_passes_the_shared_checker_and_the_datamodule_batch(tmp_path, check_formats):
    root = _write_root(tmp_path / "damon")
    out = check_formats("damon", root)
    assert "hot_dca_test.npz: 3 samples checked" in out
    dm = DamonDataModule(str(root), batch_size=3, image_size=64, seg_size=SEG, val_fraction=0.0)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))  # collate_damon one-hot encodes the label maps per batch
    assert batch["index"].tolist() == [0, 1, 2]
    with Image.open(PHOTO) as im:
        im.draft("RGB", (64, 64))
        want = _normalise(np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR)))
    for i in range(3):
        item = {k: batch[k][i] for k in ("image", "cam_k", "scene_seg", "part_seg")}
        np.testing.assert_allclose(item["image"].numpy(), want, rtol=0, atol=1e-5)
        _check_cam_k(item, 64)
        _check_labels(item, "marks")
