"""PIAD reader: strict point-file parsing, exact normalisation, label column, boxes, pairing, generator format."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.formats import AFFORDANCES, read_point_file
from zoo.data.piad import PiadDataModule, PiadDataset
from zoo.data.sampling import PairSampler

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _write_points(path: Path, xyz, aff, token="abc", cls="Mug"):
    lines = [f"{token} {cls} " + " ".join(f"{v:.6f}" for v in list(p) + list(a)) for p, a in zip(xyz, aff, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + " \n")


# Four points around (5, 5, 5): mean (5, 5, 5), farthest at distance 2 -> normalised exactly.
XYZ = np.array([[6.0, 5, 5], [4.0, 5, 5], [5.0, 7, 5], [5.0, 3, 5]])
NORM = np.array([[0.5, 0, 0], [-0.5, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])


def _aff(offset):
    return np.array([[(c + offset) / 40 + r / 100 for c in range(17)] for r in range(4)])


@pytest.fixture
def tiny(tmp_path):
    """A hand-written PIAD setting folder: two Mug clouds, one image per split (100x50 px)."""
    root = tmp_path / "Seen"
    _write_points(root / "Point" / "Point_Train_Mug_1.txt", XYZ, _aff(0))
    _write_points(root / "Point" / "Point_Test_Mug_2.txt", XYZ * 2, _aff(3))
    for split, aff in (("Train", "pour"), ("Test", "grasp")):
        img = root / "Img" / f"Img_{split}_Mug_{aff}_1.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (100, 50), (200, 100, 50)).save(img)
        shapes = [{"label": "object", "points": [[50, 25], [10, 5]], "shape_type": "rectangle"}]
        if split == "Test":
            shapes.append({"label": "subject", "points": [[0, 0], [100, 50]], "shape_type": "rectangle"})
        box = root / "Box" / f"Img_{split}_Mug_{aff}_1.json"
        box.parent.mkdir(parents=True, exist_ok=True)
        box.write_text(json.dumps({"shapes": shapes}))
        (root / f"Img_{split}.txt").write_text(f"Seen/Img/{img.name}\n")
        (root / f"Box_{split}.txt").write_text(f"Seen/Box/{box.name}\n")
    (root / "Point_Train.txt").write_text("Seen/Point/Point_Train_Mug_1.txt\n")
    (root / "Point_Test.txt").write_text("Seen/Point/Point_Test_Mug_2.txt\n")
    return tmp_path


def test_tiny_folder_exact_values(tiny):
    dm = PiadDataModule(str(tiny), setting="Seen", batch_size=2, image_size=8, num_points=4, val_fraction=0.0)
    dm.setup()
    test = dm.test_set[0]
    assert torch.allclose(test["points"], torch.tensor(NORM, dtype=torch.float32), atol=1e-6)
    assert test["affordance_name"] == "grasp" and test["affordance_index"] == 0
    assert np.allclose(test["affordance"].numpy(), _aff(3)[:, 0], atol=1e-6)
    assert np.allclose(test["affordance_all"].numpy(), _aff(3), atol=1e-6)
    assert test["object_name"] == "Mug" and dm.classes[test["object_index"]] == "Mug"
    assert dm.classes == sorted(dm.classes) and "Chair" in dm.classes
    # object box given as [[50, 25], [10, 5]] on a 100x50 image, resized to 8x8
    assert torch.allclose(test["box_object"], torch.tensor([0.8, 0.8, 4.0, 4.0]))
    assert torch.allclose(test["box_subject"], torch.tensor([0.0, 0.0, 8.0, 8.0]))
    assert test["image"].shape == (3, 8, 8)
    assert test["point_id"] == "Seen/Point/Point_Test_Mug_2.txt"
    train = dm.train_set[0]
    assert train["affordance_name"] == "pour" and train["affordance_index"] == AFFORDANCES.index("pour")
    assert np.allclose(train["affordance"].numpy(), _aff(0)[:, AFFORDANCES.index("pour")], atol=1e-6)
    assert torch.equal(train["box_subject"], torch.zeros(4))  # no subject shape -> zeros
    batch = next(iter(dm.test_dataloader()))
    assert batch["points"].shape == (1, 4, 3) and batch["affordance_index"].dtype == torch.long
    # root pointing at the setting folder itself works too
    dm2 = PiadDataModule(str(tiny / "Seen"), num_points=4, load_images=False, val_fraction=0.0)
    dm2.setup("test")
    item = dm2.test_set[0]
    assert "image" not in item and torch.allclose(item["box_object"], torch.tensor([0.8 * 28, 0.8 * 28 * 2 / 2, 112.0, 112.0]))


@pytest.mark.parametrize("line_no, text, message", [
    (7, "id Mug 1 2 3 " + " ".join(["0.5"] * 16), r"Point_Train_Mug_1\.txt: line 7: 21 fields, expected 22"),
    (3, "id Mug nan 2 3 " + " ".join(["0.5"] * 17), r"Point_Train_Mug_1\.txt: line 3: non-finite"),
    (5, "id Mug 1 x 3 " + " ".join(["0.5"] * 17), r"Point_Train_Mug_1\.txt: line 5: not a number"),
    (9, "id Mug 1 2 3 " + " ".join(["1.5"] * 17), r"Point_Train_Mug_1\.txt: line 9: affordance value outside \[0, 1\]"),
])
def test_bad_point_files_name_file_and_line(tmp_path, line_no, text, message):
    lines = [f"id Mug {i} {i} {i} " + " ".join(["0.5"] * 17) for i in range(10)]
    lines[line_no - 1] = text
    f = tmp_path / "Point_Train_Mug_1.txt"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_point_file(f)


def test_missing_list_file_is_named(tiny):
    (tiny / "Seen" / "Point_Train.txt").unlink()
    dm = PiadDataModule(str(tiny), num_points=4)
    with pytest.raises(FileNotFoundError, match=r"Point_Train\.txt"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="neither it nor"):
        PiadDataModule(str(tiny / "nowhere")).setup("fit")


def test_bad_image_affordance_names_list_line(tiny):
    (tiny / "Seen" / "Img_Test.txt").write_text("Seen/Img/Img_Test_Mug_fly_1.jpg\n")
    with pytest.raises(ValueError, match=r"Img_Test\.txt: line 1: .*affordance 'fly'"):
        PiadDataset(str(tiny / "Seen"), "Test", "test")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("piad")
    r = subprocess.run([PY, str(ROOT / "tools" / "make_synthetic.py"), "piad", "--n", "22", "--out", str(out),
                        "--settings", "Seen", "Unseen", "--workers", "1"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return out


def test_generator_passes_check_formats(generated, check_formats):
    for setting in ("Seen", "Unseen"):
        check_formats("piad", generated / setting)
    # Unseen: test classes never appear in train
    train = (generated / "Unseen" / "Img_Train.txt").read_text()
    test = (generated / "Unseen" / "Img_Test.txt").read_text()
    assert "Bed" in test and "Laptop" in test and "_Bed_" not in train and "_Laptop_" not in train


def test_generated_set_reads_with_labels_from_geometry(generated):
    dm = PiadDataModule(str(generated), batch_size=4, val_fraction=0.0)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["points"].shape == (4, 2048, 3) and batch["image"].shape == (4, 3, 224, 224)
    assert torch.allclose(batch["points"].norm(dim=-1).amax(1), torch.ones(4), atol=1e-5)
    assert torch.allclose(batch["points"].mean(1), torch.zeros(4, 3), atol=1e-5)
    # the label is the named column and its region is present (peak near 1)
    idx = batch["affordance_index"]
    assert torch.equal(batch["affordance"], batch["affordance_all"][torch.arange(4), :, idx])
    assert (batch["affordance"].amax(1) > 0.9).all()
    b = batch["box_object"]
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and (b >= 0).all() and (b <= 224).all()


def test_training_pairs_are_a_function_of_seed_and_epoch(generated):
    def ds():
        return PiadDataset(str(generated / "Unseen"), "Train", "train", pairs_per_image=2, seed=3, load_images=False)

    a, b = ds(), ds()
    assert len(a) == 2 * len(a.rows)
    for i in range(len(a)):
        assert a.point_row(i, 5) == b.point_row(i, 5)
        obj = a.labels[int(a.rows[i // 2])][0]
        assert a.points[a.point_row(i, 5)].split("_")[-2] == obj  # same class as the image
    assert any(a.point_row(i, 0) != a.point_row(i, 1) for i in range(len(a)))
    s1, s2 = PairSampler(len(a), seed=3), PairSampler(len(a), seed=3)
    s1.set_epoch(2)
    s2.set_epoch(2)
    keys = list(s1)
    assert keys == list(s2) and all(e == 2 for _, e in keys) and sorted(i for i, _ in keys) == list(range(len(a)))
    ids1 = [a[k]["point_id"] for k in keys[:6]]
    ids2 = [b[k]["point_id"] for k in keys[:6]]
    assert ids1 == ids2
