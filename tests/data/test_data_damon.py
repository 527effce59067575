"""DAMON DataModule: batch keys, shapes, dtypes and values; splits; bad-input errors; skip_bad counting."""
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.damon import DamonDataModule
from zoo.data.formats import IMAGENET_MEAN, IMAGENET_STD

N = 6
W0, H0 = 40, 30  # original image size
COLOR = (255, 0, 128)


def _write_damon(root, n=N, contact_cols=6890):
    """A tiny DAMON-layout dataset with known images, label maps and masks (no body model needed)."""
    rel = "datasets/HOT-Annotated"
    for sub in ("images", "annotations", "segmentation_masks", "parts"):
        (root / rel / sub).mkdir(parents=True, exist_ok=True)
    for split in ("trainval", "test"):
        rec = {k: [] for k in ("imgname", "polygon_2d_contact", "scene_seg", "part_seg")}
        for i in range(n):
            name = f"{split}_{i}"
            Image.new("RGB", (W0, H0), COLOR).save(root / rel / "images" / f"{name}.png")
            scene = np.zeros((H0, W0), np.uint8)
            scene[:, W0 // 2:] = 131
            Image.fromarray(scene).save(root / rel / "segmentation_masks" / f"{name}.png")
            part = np.full((H0, W0), (i + 1) % 26, np.uint8)
            part[: H0 // 2] = 0
            Image.fromarray(part).save(root / rel / "parts" / f"{name}.png")
            poly = np.zeros((H0, W0, 3), np.uint8)
            poly[: H0 // 2, :, 1] = 255  # only one channel set, as a coloured polygon drawing may be
            Image.fromarray(poly).save(root / rel / "annotations" / f"{name}.png")
            rec["imgname"].append(f"{rel}/images/{name}.png")
            rec["polygon_2d_contact"].append(f"{rel}/annotations/{name}.png")
            rec["scene_seg"].append(f"{rel}/segmentation_masks/{name}.png")
            rec["part_seg"].append(f"{rel}/parts/{name}.png")
        contact = np.zeros((n, contact_cols))
        contact[np.arange(n), np.arange(n) * 10] = 1
        K = np.tile(np.array([[50.0, 0, 20], [0, 60, 15], [0, 0, 1]]), (n, 1, 1))
        np.savez(root / f"hot_dca_{split}.npz", imgname=np.array(rec["imgname"]), pose=np.full((n, 72), 0.1),
                 shape=np.zeros((n, 10)), transl=np.tile([0.0, 0.0, 5.0], (n, 1)), cam_k=K, contact_label=contact,
                 polygon_2d_contact=np.array(rec["polygon_2d_contact"]), scene_seg=np.array(rec["scene_seg"]),
                 part_seg=np.array(rec["part_seg"]))
    return root


def _edit_npz(path, **changes):
    d = dict(np.load(path, allow_pickle=True))
    d.update(changes)
    np.savez(path, **d)


@pytest.fixture
def damon_root(tmp_path):
    return _write_damon(tmp_path / "damon")


def test_batch_keys_shapes_dtypes_and_values(damon_root):
    dm = DamonDataModule(str(damon_root), batch_size=4, image_size=32, seg_size=16, val_fraction=0.2)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (4, 3, 32, 32) and b["image"].dtype == torch.float32
    expect = (torch.tensor(COLOR) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(b["image"][:, :, 5, 7], expect.expand(4, 3), atol=1e-5)
    assert b["scene_seg"].shape == (4, 133, 16, 16) and b["scene_seg"].dtype == torch.uint8
    assert (b["scene_seg"].sum(1) == 1).all()
    assert (b["scene_seg"][:, 0, :, :8] == 1).all() and (b["scene_seg"][:, 131, :, 8:] == 1).all()
    assert b["part_seg"].shape == (4, 26, 16, 16) and b["part_seg"].dtype == torch.uint8
    assert (b["part_seg"].sum(1) == 1).all()
    idx = b["index"]
    assert idx.dtype == torch.long
    labels = b["part_seg"].argmax(1)
    assert (labels[:, :8] == 0).all()
    assert torch.equal(labels[:, 8:], ((idx + 1) % 26).view(-1, 1, 1).expand(-1, 8, 16))
    assert b["contact_2d"].shape == (4, 1, 32, 32) and b["contact_2d"].dtype == torch.float32
    assert (b["contact_2d"][:, 0, :16] == 1).all() and (b["contact_2d"][:, 0, 16:] == 0).all()
    assert b["contact_label"].shape == (4, 6890) and b["contact_label"].dtype == torch.float32
    assert torch.equal(b["contact_label"].argmax(1), idx * 10) and (b["contact_label"].sum(1) == 1).all()
    assert b["pose"].shape == (4, 72) and b["shape"].shape == (4, 10) and b["transl"].shape == (4, 3)
    # Intrinsics follow the resize 40x30 -> 32x32: x scales by 0.8, y by 32/30.
    assert torch.allclose(b["cam_k"][0], torch.tensor([[40.0, 0, 16], [0, 64, 16], [0, 0, 1]]))
    assert b["imgname"][0] == f"datasets/HOT-Annotated/images/trainval_{int(idx[0])}.png"


def test_seeded_split_and_test_set(damon_root):
    dm = DamonDataModule(str(damon_root), val_fraction=0.34, seed=3)
    dm.setup("fit")
    tr, va = set(dm.train_set.rows.tolist()), set(dm.val_set.rows.tolist())
    assert len(va) == 2 and not tr & va and tr | va == set(range(N))
    dm2 = DamonDataModule(str(damon_root), val_fraction=0.34, seed=3)
    dm2.setup("fit")
    assert dm2.val_set.rows.tolist() == dm.val_set.rows.tolist()
    dm.setup("test")
    assert dm.test_set.rows.tolist() == list(range(N))
    assert next(iter(dm.test_dataloader()))["imgname"][0].endswith("test_0.png")
    capped = DamonDataModule(str(damon_root), max_samples=2, val_fraction=0.0)
    capped.setup(None)
    assert len(capped.train_set) == 2 and len(capped.val_set) == 0 and len(capped.test_set) == 2


def test_missing_npz_names_path_and_source(tmp_path):
    dm = DamonDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"DAMON file not found: .*nowhere/hot_dca_trainval\.npz.*"
                                                r"https://deco\.is\.tue\.mpg\.de.*make_synthetic\.py damon"):
        dm.setup("fit")


def test_missing_png_error(damon_root):
    (damon_root / "datasets/HOT-Annotated/segmentation_masks/trainval_3.png").unlink()
    dm = DamonDataModule(str(damon_root))
    msg = (re.escape(str(damon_root / "hot_dca_trainval.npz")) + r": sample 3: key 'scene_seg' file not found: "
           r"datasets/HOT-Annotated/segmentation_masks/trainval_3\.png")
    with pytest.raises(FileNotFoundError, match=msg):
        dm.setup("fit")


def test_wrong_vertex_count_error(tmp_path):
    root = _write_damon(tmp_path / "d", contact_cols=6889)
    with pytest.raises(ValueError, match=r"hot_dca_trainval\.npz: sample 0: key 'contact_label' has 6889 values, "
                                         r"expected 6890 \(one per SMPL vertex\)"):
        DamonDataModule(str(root)).setup("fit")


def test_nan_pose_error(damon_root):
    pose = np.full((N, 72), 0.1)
    pose[2, 5] = np.nan
    _edit_npz(damon_root / "hot_dca_trainval.npz", pose=pose)
    with pytest.raises(ValueError, match=r"hot_dca_trainval\.npz: sample 2: key 'pose' has NaN/inf"):
        DamonDataModule(str(damon_root)).setup("fit")


def test_unreadable_png_error(damon_root):
    (damon_root / "datasets/HOT-Annotated/parts/trainval_1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"sample 1: key 'part_seg' file .*trainval_1\.png is not a readable image"):
        DamonDataModule(str(damon_root)).setup("fit")


def test_label_out_of_range_error(damon_root):
    Image.fromarray(np.full((H0, W0), 30, np.uint8)).save(damon_root / "datasets/HOT-Annotated/parts/test_0.png")
    dm = DamonDataModule(str(damon_root))
    dm.setup("test")
    with pytest.raises(ValueError, match=r"sample 0: key 'part_seg' file .*test_0\.png has label 30, expected 0\.\.25"):
        dm.test_set[0]


def test_skip_bad_counts_and_logs(damon_root, caplog):
    pose = np.full((N, 72), 0.1)
    pose[2, 0] = np.inf
    _edit_npz(damon_root / "hot_dca_trainval.npz", pose=pose)
    (damon_root / "datasets/HOT-Annotated/images/trainval_4.png").unlink()
    dm = DamonDataModule(str(damon_root), skip_bad=True, val_fraction=0.0, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="zoo.data.damon"):
        dm.setup("fit")
    assert dm.num_skipped == 2
    assert sorted(r for _, r, _ in dm.skipped) == [2, 4]
    assert dm.train_set.rows.tolist() == [0, 1, 3, 5]
    assert "skipped 2 bad sample(s)" in caplog.text
    b = next(iter(dm.train_dataloader()))
    assert sorted(b["index"].tolist()) == [0, 1, 3, 5]


def test_registry_builds_damon(damon_root):
    from zoo.core.registry import build

    dm = build("datamodule", {"name": "damon", "root": str(damon_root), "batch_size": 2})
    assert isinstance(dm, DamonDataModule) and dm.hparams.batch_size == 2


def _objectwise(n):
    """Row i: {'chair': [i*10], 'floor': [i*10, 6889]} except row 1 which has no contact at all."""
    ow = np.empty(n, dtype=object)
    for i in range(n):
        ow[i] = {} if i == 1 else {"floor": np.array([i * 10, 6889]), "chair": np.array([i * 10])}
    return ow


def test_semantic_pairs_labels_only(damon_root):
    for split in ("trainval", "test"):
        _edit_npz(damon_root / f"hot_dca_{split}.npz", contact_label_objectwise=_objectwise(N))
    # the images are gone: label-only loading must not open them
    for p in (damon_root / "datasets/HOT-Annotated/images").iterdir():
        p.unlink()
    dm = DamonDataModule(str(damon_root), batch_size=16, contact_mode="semantic", load_images=False)
    assert dm.classes == ["chair", "floor"]
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert "image" not in batch and "scene_seg" not in batch
    # rows 0, 2..5 give two pairs each (sorted names: chair, floor); row 1 none
    assert batch["object_name"] == ["chair", "floor"] * (N - 1)
    assert batch["index"].tolist() == [0, 0, 2, 2, 3, 3, 4, 4, 5, 5]
    lab = batch["contact_label"]
    assert lab.shape == (10, 6890)
    assert lab[0].nonzero().flatten().tolist() == [0]            # row 0, chair
    assert lab[3].nonzero().flatten().tolist() == [20, 6889]     # row 2, floor
    assert lab.sum().item() == 5 * 1 + 5 * 2


def test_semantic_needs_objectwise_key(damon_root):
    dm = DamonDataModule(str(damon_root), contact_mode="semantic", load_images=False)
    dm.setup("test")
    with pytest.raises(ValueError, match=r"hot_dca_test\.npz: contact_mode='semantic' needs key 'contact_label_objectwise'"):
        dm.test_dataloader()


def test_semantic_bad_vertex_ids(damon_root):
    ow = _objectwise(N)
    ow[3] = {"cup": np.array([7000])}
    _edit_npz(damon_root / "hot_dca_test.npz", contact_label_objectwise=ow)
    dm = DamonDataModule(str(damon_root), contact_mode="semantic", load_images=False)
    dm.setup("test")
    with pytest.raises(ValueError, match=r"hot_dca_test\.npz: sample 3: contact_label_objectwise\['cup'\] has vertex ids outside"):
        dm.test_dataloader()
