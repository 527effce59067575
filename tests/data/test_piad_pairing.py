"""PIAD pairing options (InteractVLM's): a retrieval list read from its released pickle format (safely), the
released (object, affordance) image filter, clouds with zero ground truth skipped, validation on Test; and
the synthetic generator's retrieval list in the same format."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.data.formats import AFFORDANCES
from zoo.data.piad import PIAD_OBJECT_AFFORDANCES, PiadDataModule, read_retrieval_list

POUR = AFFORDANCES.index("pour")
XYZ = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])


def _cloud(path: Path, aff: np.ndarray, cls: str = "Mug") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"id {cls} " + " ".join(f"{x:.4f}" for x in list(p) + list(a)) + "\n"
                            for p, a in zip(XYZ, aff, strict=True)))


def _image(root: Path, split: str, name: str) -> tuple[str, str]:
    img = root / "Img" / name
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (90, 40, 20)).save(img)
    box = root / "Box" / name.replace(".jpg", ".json")
    box.parent.mkdir(parents=True, exist_ok=True)
    box.write_text(json.dumps({"shapes": [{"label": "object", "points": [[0, 0], [8, 8]]}]}))
    return f"Seen/Img/{name}", f"Seen/Box/{box.name}"


def _aff(columns: dict[int, float]) -> np.ndarray:
    a = np.zeros((4, len(AFFORDANCES)))
    for c, v in columns.items():
        a[:, c] = v
    return a


@pytest.fixture
def piad(tmp_path):
    """Seen/: four Mug train clouds (cloud 3 has no 'pour' anywhere), train images Mug pour x2, Mug lift (not in
    InteractVLM's list for Mug), Mug wear (no cloud has it); one aligned test pair."""
    root = tmp_path / "Seen"
    clouds = [_aff({POUR: 0.5, 0: 0.2}), _aff({POUR: 0.8}), _aff({POUR: 0.3, 2: 0.4}), _aff({0: 0.9, 2: 0.1})]
    names = []
    for k, a in enumerate(clouds):
        _cloud(root / "Point" / f"Point_Train_Mug_{k}.txt", a)
        names.append(f"Seen/Point/Point_Train_Mug_{k}.txt")
    (root / "Point_Train.txt").write_text("\n".join(names) + "\n")
    imgs, boxes = zip(*[_image(root, "Train", f"Img_Train_Mug_{a}_{k}.jpg")
                        for k, a in enumerate(["pour", "pour", "lift", "wear"])], strict=True)
    (root / "Img_Train.txt").write_text("\n".join(imgs) + "\n")
    (root / "Box_Train.txt").write_text("\n".join(boxes) + "\n")
    _cloud(root / "Point" / "Point_Test_Mug_0.txt", _aff({0: 0.5}))
    ti, tb = _image(root, "Test", "Img_Test_Mug_lift_0.jpg")
    (root / "Img_Test.txt").write_text(ti + "\n")
    (root / "Box_Test.txt").write_text(tb + "\n")
    (root / "Point_Test.txt").write_text("Seen/Point/Point_Test_Mug_0.txt\n")
    return tmp_path


def _dm(root, **kw) -> PiadDataModule:
    kw = {"num_points": 4, "image_size": 8, "load_images": False, "val_fraction": 0.0, **kw}
    return PiadDataModule(str(root), **kw)


def _write_lookup(root: Path, lookup, name: str = "piad_lookup_results_Train.pkl") -> Path:
    f = root / "Seen" / name
    f.write_bytes(pickle.dumps(lookup, protocol=4))
    return f


def _partners(ds, epochs=range(12)) -> dict[str, set[str]]:
    """image id -> the point ids it was paired with over ``epochs``."""
    out: dict[str, set[str]] = {}
    for e in epochs:
        for i in range(len(ds)):
            item = ds[(i, e)]
            out.setdefault(item["image_id"], set()).add(item["point_id"])
    return out


def test_retrieval_list_pairs_images_with_their_listed_clouds(piad):
    # the released format: {image path as in Img_Train.txt: [point file path, ...]}, best first; stored paths may
    # differ from the lists' (absolute, another machine): they are matched by file name
    lookup = {"Seen/Img/Img_Train_Mug_pour_0.jpg": ["Seen/Point/Point_Train_Mug_2.txt", "Seen/Point/Point_Train_Mug_0.txt"],
              "/cluster/piad/Seen/Img/Img_Train_Mug_pour_1.jpg": ["/cluster/piad/Seen/Point/Point_Train_Mug_1.txt"],
              "Seen/Img/Img_Train_Mug_lift_2.jpg": ["Seen/Point/Point_Train_Mug_3.txt"],
              "Seen/Img/Img_Train_Mug_wear_3.jpg": ["Seen/Point/Point_Train_Mug_0.txt"],
              "Seen/Img/Img_Train_Vase_wrapgrasp_9.jpg": ["Seen/Point/Point_Train_Vase_0.txt"]}  # not in this list
    _write_lookup(piad, lookup)
    dm = _dm(piad, pairing="retrieval")
    dm.setup("fit")
    seen = _partners(dm.train_set)
    assert seen["Seen/Img/Img_Train_Mug_pour_0.jpg"] == {"Seen/Point/Point_Train_Mug_2.txt", "Seen/Point/Point_Train_Mug_0.txt"}
    assert seen["Seen/Img/Img_Train_Mug_pour_1.jpg"] == {"Seen/Point/Point_Train_Mug_1.txt"}
    assert seen["Seen/Img/Img_Train_Mug_lift_2.jpg"] == {"Seen/Point/Point_Train_Mug_3.txt"}
    fixed = _dm(piad, pairing="retrieval", retrieval_ranking="fixed")
    fixed.setup("fit")
    assert _partners(fixed.train_set)["Seen/Img/Img_Train_Mug_pour_0.jpg"] == {"Seen/Point/Point_Train_Mug_2.txt"}
    # the test split stays aligned line by line
    assert dm.test_set[0]["point_id"] == "Seen/Point/Point_Test_Mug_0.txt"
    # numpy arrays of paths (another way such lists get saved) read the same
    lookup = {k: np.array(v) for k, v in lookup.items()}
    assert read_retrieval_list(_write_lookup(piad, lookup, "alt.pkl")) == {k: v.tolist() for k, v in lookup.items()}


def test_auto_pairing_uses_the_released_file_only_when_present(piad, capsys):
    dm = _dm(piad, pairing="auto")
    dm.setup("fit")
    assert "no retrieval list (piad_lookup_results_Train.pkl" in capsys.readouterr().out
    assert dm.train_set.candidates is None  # random clouds of the class, as pairing=class
    ref = _dm(piad)
    ref.setup("fit")
    assert [dm.train_set.point_row(i, 3) for i in range(4)] == [ref.train_set.point_row(i, 3) for i in range(4)]
    f = _write_lookup(piad, {f"Seen/Img/Img_Train_Mug_{a}_{k}.jpg": ["Seen/Point/Point_Train_Mug_1.txt"]
                             for k, a in enumerate(["pour", "pour", "lift", "wear"])})
    dm = _dm(piad, pairing="auto")
    dm.setup("fit")
    assert f"training pairs from the retrieval list {f}" in capsys.readouterr().out
    assert _partners(dm.train_set, range(3)) == {k: {"Seen/Point/Point_Train_Mug_1.txt"} for k in _partners(ref.train_set)}
    with pytest.raises(FileNotFoundError, match=r"PIAD retrieval list not found: .*nope\.pkl"):
        _dm(piad, pairing="retrieval", retrieval_file="nope.pkl").setup("fit")


def test_retrieval_pairing_without_the_file_says_where_it_looked(piad):
    with pytest.raises(FileNotFoundError, match=r"pairing=retrieval looks for .*Seen/piad_lookup_results_Train\.pkl or "
                                                r".*piad_unseen_lookup_results_Train\.pkl"):
        _dm(piad, pairing="retrieval").setup("fit")


def test_retrieval_list_naming_a_missing_cloud_stops_naming_file_and_cloud(piad):
    f = _write_lookup(piad, {"Seen/Img/Img_Train_Mug_pour_0.jpg": ["Seen/Point/Point_Train_Mug_1.txt",
                                                                   "Seen/Point/Point_Train_Mug_7.txt"]})
    with pytest.raises(ValueError, match=rf"{f}: image Seen/Img/Img_Train_Mug_pour_0\.jpg is paired with point cloud "
                                         r"Seen/Point/Point_Train_Mug_7\.txt, which .*Point_Train\.txt does not list"):
        _dm(piad, pairing="retrieval").setup("fit")


def test_retrieval_list_without_an_image_is_a_bad_sample(piad):
    f = _write_lookup(piad, {"Seen/Img/Img_Train_Mug_pour_0.jpg": ["Seen/Point/Point_Train_Mug_1.txt"]})
    with pytest.raises(ValueError, match=rf"{f}: no entry for image Seen/Img/Img_Train_Mug_pour_1\.jpg"):
        _dm(piad, pairing="retrieval").setup("fit")
    dm = _dm(piad, pairing="retrieval", skip_bad=True, max_skip_fraction=1.0)
    dm.setup("fit")
    assert len(dm.train_set) == 1 and dm.num_skipped == 3


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo unpickled > boom.txt",))


def test_retrieval_pickle_needing_code_is_refused(piad, monkeypatch):
    monkeypatch.chdir(piad)
    f = _write_lookup(piad, {"Seen/Img/Img_Train_Mug_pour_0.jpg": [_Boom()]})
    with pytest.raises(ValueError, match=rf"{f}: refusing to unpickle: it needs (posix|os)\.system, and a PIAD retrieval "
                                         r"list may hold only dicts, lists"):
        _dm(piad, pairing="retrieval").setup("fit")
    assert not (piad / "boom.txt").exists()
    f.write_bytes(pickle.dumps(["Seen/Img/Img_Train_Mug_pour_0.jpg"]))
    with pytest.raises(ValueError, match=rf"{f}: holds a list, expected a pickled dict \{{image path"):
        read_retrieval_list(f)
    f.write_bytes(pickle.dumps({"Seen/Img/Img_Train_Mug_pour_0.jpg": 3}))
    with pytest.raises(ValueError, match=r"entry 'Seen/Img/Img_Train_Mug_pour_0\.jpg' -> int is not an image path mapped"):
        read_retrieval_list(f)
    f.write_bytes(b"\x80\x04trunc")
    with pytest.raises(ValueError, match=rf"{f}: not a readable pickle"):
        read_retrieval_list(f)


def test_official_image_filter_keeps_the_released_object_affordance_pairs(piad):
    assert "lift" not in PIAD_OBJECT_AFFORDANCES["Mug"] and "pour" in PIAD_OBJECT_AFFORDANCES["Mug"]
    assert len(PIAD_OBJECT_AFFORDANCES) == 23
    assert all(set(v) <= set(AFFORDANCES) for v in PIAD_OBJECT_AFFORDANCES.values())
    dm = _dm(piad, image_filter="official")
    dm.setup("fit")
    kept = {dm.train_set.images[r] for r in dm.train_set.rows}
    assert kept == {"Seen/Img/Img_Train_Mug_pour_0.jpg", "Seen/Img/Img_Train_Mug_pour_1.jpg"}
    assert dm.filtered == {"train": {"image_filter": 2}} and dm.num_skipped == 0
    assert len(dm.test_set) == 1  # the test split (a Mug 'lift') is never filtered
    custom = _dm(piad, image_filter={"Mug": ["lift", "wear"]})
    custom.setup("fit")
    assert [custom.train_set.labels[r][1] for r in custom.train_set.rows] == ["lift", "wear"]
    with pytest.raises(ValueError, match=r"image_filter\['Mug'\] names unknown affordance\(s\) \['fly'\]"):
        _dm(piad, image_filter={"Mug": ["fly"]})
    with pytest.raises(ValueError, match="image_filter must be null, 'official' or a mapping"):
        _dm(piad, image_filter="all")


def test_clouds_without_ground_truth_for_the_affordance_are_skipped(piad):
    dm = _dm(piad, skip_empty_affordance=True, pairs_per_image=3)
    dm.setup("fit")
    seen = _partners(dm.train_set)
    # cloud 3 has no 'pour' anywhere: never paired with a pour image; the 'wear' image (no cloud has it) is dropped
    assert seen["Seen/Img/Img_Train_Mug_pour_0.jpg"] == {f"Seen/Point/Point_Train_Mug_{k}.txt" for k in (0, 1, 2)}
    assert seen["Seen/Img/Img_Train_Mug_lift_2.jpg"] == {f"Seen/Point/Point_Train_Mug_{k}.txt" for k in (2, 3)}
    assert "Seen/Img/Img_Train_Mug_wear_3.jpg" not in seen
    assert dm.filtered == {"train": {"empty_affordance": 1}}
    for key in [(i, e) for i in range(len(dm.train_set)) for e in range(3)]:
        assert dm.train_set[key]["affordance"].max() > 0
    # today's behaviour without it: the zero-'pour' cloud is drawn for pour images too
    plain = _dm(piad, pairs_per_image=3)
    plain.setup("fit")
    assert "Seen/Point/Point_Train_Mug_3.txt" in _partners(plain.train_set)["Seen/Img/Img_Train_Mug_pour_0.jpg"]
    # with a retrieval list and the fixed ranking: the first usable of the best matches
    _write_lookup(piad, {f"Seen/Img/Img_Train_Mug_{a}_{k}.jpg": ["Seen/Point/Point_Train_Mug_3.txt",
                                                                 "Seen/Point/Point_Train_Mug_1.txt"]
                         for k, a in enumerate(["pour", "pour", "lift", "wear"])})
    fixed = _dm(piad, pairing="retrieval", retrieval_ranking="fixed", skip_empty_affordance=True)
    fixed.setup("fit")
    got = _partners(fixed.train_set, range(2))
    assert got["Seen/Img/Img_Train_Mug_pour_0.jpg"] == {"Seen/Point/Point_Train_Mug_1.txt"}
    assert got["Seen/Img/Img_Train_Mug_lift_2.jpg"] == {"Seen/Point/Point_Train_Mug_3.txt"}
    assert "Seen/Img/Img_Train_Mug_wear_3.jpg" not in got


def test_validation_on_the_test_split(piad):
    dm = _dm(piad, val_split="test", val_fraction=0.5)
    dm.setup("fit")
    assert dm.val_set is dm.test_set and len(dm.train_set) == 4  # every training image trains
    batch = next(iter(dm.val_dataloader()))
    assert batch["point_id"] == ["Seen/Point/Point_Test_Mug_0.txt"]
    default = _dm(piad, val_fraction=0.5)
    default.setup("fit")
    assert default.val_set is not default.test_set and len(default.train_set) + len(default.val_set) == 4
    with pytest.raises(ValueError, match="val_split must be one of train, test"):
        _dm(piad, val_split="Test")
    with pytest.raises(ValueError, match="pairing must be one of class, retrieval, auto"):
        _dm(piad, pairing="lookup")


def test_synthetic_generator_writes_the_retrieval_list_in_the_released_format(tmp_path):
    from zoo.data.synthetic.piad import RETRIEVAL_TOP, generate_piad

    generate_piad(tmp_path, n_objects=22, n_images=22, image_size=32)
    f = tmp_path / "Seen" / "piad_lookup_results_Train.pkl"
    with open(f, "rb") as fh:
        lookup = pickle.load(fh)  # a plain pickle of builtin types, as joblib.load reads it
    images = (tmp_path / "Seen" / "Img_Train.txt").read_text().split()
    points = set((tmp_path / "Seen" / "Point_Train.txt").read_text().split())
    assert type(lookup) is dict and list(lookup) == images
    for img, clouds in lookup.items():
        assert type(clouds) is list and 1 <= len(clouds) <= RETRIEVAL_TOP and set(clouds) <= points
        assert all(c.split("_")[-2] == img.split("_")[-3] for c in clouds)  # the image's class
    dm = PiadDataModule(str(tmp_path), pairing="retrieval", load_images=False, val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.train_set) == len(images)
