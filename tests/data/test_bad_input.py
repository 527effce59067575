"""Bad input found at set-up, before the first step (issue 8, items 6, 7, 14, 16, 17): every split's files
are checked by ``setup("fit")`` (the test split too), ``skip_bad`` stops when it leaves nothing or more than
``max_skip_fraction``, ``data_report`` counts, contact labels outside {0, 1}, too-small point clouds, and
relative data roots resolved under one data home from any working directory."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.core import paths
from zoo.data.damon import DamonDataModule
from zoo.data.lemon import LemonDataModule
from zoo.data.piad import PiadDataModule

ROOT = Path(__file__).resolve().parents[2]
SMALL_CLOUD = "(the cloud size the recipe asks for; fewer points would have to be repeated)"
LIMIT_HINT = "allows with skip_bad=true (fix the data, or raise data.max_skip_fraction)"


# -- DAMON: a copy of the session's synthetic set (npz files copied, images shared through a symlink) ---------

@pytest.fixture
def damon(tmp_path, synth):
    """A DAMON root whose two npz files may be edited: 32 trainval and 8 test samples."""
    src, root = synth[1], tmp_path / "damon"
    root.mkdir()
    for name in ("hot_dca_trainval.npz", "hot_dca_test.npz"):
        shutil.copy(src / name, root / name)
    (root / "datasets").symlink_to(src / "datasets", target_is_directory=True)
    return root


def _edit(path: Path, **changes) -> None:
    d = dict(np.load(path, allow_pickle=True))
    d.update(changes)
    np.savez(path, **d)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    return dict(np.load(path, allow_pickle=True))


def test_damon_truncated_test_npz_fails_at_fit_setup(damon):
    test = damon / "hot_dca_test.npz"
    data = test.read_bytes()
    test.write_bytes(data[: len(data) // 2])
    dm = DamonDataModule(str(damon), image_size=32, seg_size=16)
    with pytest.raises(ValueError) as e:
        dm.setup("fit")
    assert str(e.value) == f"{test}: not a readable npz file (BadZipFile: File is not a zip file)"
    assert dm.train_set is not None and dm.test_set is None  # trainval was fine; nothing half set up for test


def test_damon_bad_test_sample_fails_at_fit_setup(damon):
    test = damon / "hot_dca_test.npz"
    names = _arrays(test)["imgname"].copy()
    names[2] = "datasets/HOT-Annotated/images/gone.jpg"
    _edit(test, imgname=names)
    with pytest.raises(FileNotFoundError) as e:
        DamonDataModule(str(damon)).setup("fit")
    assert str(e.value).startswith(f"{test}: sample 2: key 'imgname' file not found: "
                                   f"datasets/HOT-Annotated/images/gone.jpg (looked relative to {damon}, ")


def test_damon_test_stage_checks_only_the_test_split(damon):
    (damon / "hot_dca_trainval.npz").unlink()  # evaluation needs only the test file
    dm = DamonDataModule(str(damon))
    dm.setup("test")
    assert dm.data_report() == {"data/test/samples": 8.0, "data/test/skipped": 0.0}


def test_damon_skip_bad_with_every_sample_bad_fails(damon):
    tv = damon / "hot_dca_trainval.npz"
    pose = _arrays(tv)["pose"].copy()
    pose[:, 0] = np.nan
    _edit(tv, pose=pose)
    dm = DamonDataModule(str(damon), skip_bad=True, val_fraction=0.0)
    with pytest.raises(ValueError) as e:
        dm.setup("fit")
    assert str(e.value) == (f"damon: 32 of 32 samples of the train split ({tv}) are bad: skip_bad=true leaves none. "
                            f"First: {tv}: sample 0: key 'pose' has NaN/inf")
    assert dm.train_set is None


def test_damon_skip_fraction_limit_and_data_report(damon):
    tv = damon / "hot_dca_trainval.npz"
    pose = _arrays(tv)["pose"].copy()
    pose[[4, 9, 30], 1] = np.inf
    _edit(tv, pose=pose)
    strict = DamonDataModule(str(damon), skip_bad=True, val_fraction=0.0, max_skip_fraction=0.05)
    with pytest.raises(ValueError) as e:
        strict.setup("fit")
    assert str(e.value) == (f"damon: 3 of 32 samples of the train split ({tv}) are bad (9%), more than "
                            f"max_skip_fraction=0.05 {LIMIT_HINT}. First: {tv}: sample 4: key 'pose' has NaN/inf")
    dm = DamonDataModule(str(damon), skip_bad=True, val_fraction=0.0, image_size=32, seg_size=16, batch_size=64)
    dm.setup("fit")
    assert dm.data_report() == {"data/train/samples": 29.0, "data/train/skipped": 3.0, "data/val/samples": 0.0,
                                "data/val/skipped": 0.0, "data/test/samples": 8.0, "data/test/skipped": 0.0}
    assert sorted(next(iter(dm.train_dataloader()))["index"].tolist()) == [i for i in range(32) if i not in (4, 9, 30)]


@pytest.mark.parametrize("cls, name", [(DamonDataModule, "damon"), (PiadDataModule, "piad"), (LemonDataModule, "lemon")])
def test_max_skip_fraction_must_be_a_fraction(cls, name, tmp_path):
    with pytest.raises(ValueError) as e:
        cls(str(tmp_path), max_skip_fraction=1.5)
    assert str(e.value) == f"{name}: max_skip_fraction must be in [0, 1], got 1.5"


@pytest.mark.parametrize("value, shown", [(2.0, "2"), (-1.0, "-1"), (0.5, "0.5")])
def test_damon_contact_label_outside_0_1_is_rejected(damon, value, shown):
    tv = damon / "hot_dca_trainval.npz"
    d = _arrays(tv)
    contact = d["contact_label"].astype(np.float64)
    contact[3, 17] = value
    _edit(tv, contact_label=contact)
    with pytest.raises(ValueError) as e:
        DamonDataModule(str(damon), val_fraction=0.0).setup("fit")
    assert str(e.value) == (f"{tv}: sample 3 (image {d['imgname'][3]}): key 'contact_label' has value {shown} at "
                            f"vertex 17, expected 0 or 1 (data.clip_labels=true clips labels to [0, 1])")


def test_damon_clip_labels_clips_with_one_counted_warning(damon, capsys):
    tv = damon / "hot_dca_trainval.npz"
    contact = _arrays(tv)["contact_label"].astype(np.float64)
    contact[1, [5, 6]] = 2.0
    contact[4, 7] = -1.0
    contact[6, 8] = 0.25  # inside [0, 1]: kept as a soft label
    _edit(tv, contact_label=contact)
    dm = DamonDataModule(str(damon), val_fraction=0.0, clip_labels=True, load_images=False)
    dm.setup("fit")
    out = capsys.readouterr().out
    assert out.count("clipped") == 1
    assert (f"[damon] warning: clipped 3 values in 2 samples of {tv} to [0, 1] (key 'contact_label', "
            f"clip_labels=true)") in out
    rows = dm.train_set.rows.tolist()
    item = {r: dm.train_set[rows.index(r)]["contact_label"] for r in (1, 4, 6)}
    assert item[1][[5, 6]].tolist() == [1.0, 1.0] and item[4][7].item() == 0.0 and item[6][8].item() == 0.25
    assert dm.data_report()["data/train/skipped"] == 0.0


# -- PIAD: a hand-written setting folder (one class, 4-point clouds) -----------------------------------------

def _cloud(path: Path, n: int, seed: int, fields: int = 22) -> Path:
    rng = np.random.default_rng(seed)
    rows = [["id", "Mug"] + [f"{v:.4f}" for v in rng.normal(size=3)] + [f"{v:.3f}" for v in rng.uniform(size=17)]
            for _ in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(r[:fields]) for r in rows) + "\n")
    return path


@pytest.fixture
def piad(tmp_path):
    """<root>/Seen: Train 4 images and 2 clouds, Test 2 images aligned with 2 clouds, all Mug, 4 points each."""
    root = tmp_path / "piad"
    s = root / "Seen"
    for split, n_img, n_pts in (("Train", 4, 2), ("Test", 2, 2)):
        imgs, boxes, pts = [], [], []
        for i in range(n_img):
            name = f"Img_{split}_Mug_grasp_{i}"
            (s / "Img").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 10), (9, 99, 199)).save(s / "Img" / f"{name}.jpg")
            (s / "Box").mkdir(parents=True, exist_ok=True)
            (s / "Box" / f"{name}.json").write_text(json.dumps(
                {"shapes": [{"label": "object", "points": [[1, 1], [8, 6]]}]}))
            imgs.append(f"Seen/Img/{name}.jpg")
            boxes.append(f"Seen/Box/{name}.json")
        for j in range(n_pts):
            _cloud(s / "Point" / f"Point_{split}_Mug_{j}.txt", 4, seed=j + 10 * (split == "Test"))
            pts.append(f"Seen/Point/Point_{split}_Mug_{j}.txt")
        for kind, lines in (("Img", imgs), ("Box", boxes), ("Point", pts)):
            (s / f"{kind}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _piad_dm(root, **kw) -> PiadDataModule:
    return PiadDataModule(str(root), num_points=4, image_size=8, val_fraction=0.25, batch_size=8, **kw)


def test_piad_one_point_cloud_is_rejected_at_setup(piad):
    f = _cloud(piad / "Seen" / "Point" / "Point_Train_Mug_1.txt", 1, seed=5)
    with pytest.raises(ValueError) as e:
        _piad_dm(piad).setup("fit")
    assert str(e.value) == f"{f}: 1 point(s), expected at least num_points=4 {SMALL_CLOUD}"


def test_piad_bad_train_point_file_fails_at_setup_not_in_the_loader(piad):
    f = _cloud(piad / "Seen" / "Point" / "Point_Train_Mug_0.txt", 4, seed=1)
    lines = f.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:-1])
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as e:
        _piad_dm(piad).setup("fit")
    assert str(e.value) == f"{f}: line 3: 21 fields, expected 22 (2 leading tokens, x y z, 17 affordance values)"


def test_piad_truncated_test_point_file_fails_at_fit_setup(piad):
    f = piad / "Seen" / "Point" / "Point_Test_Mug_1.txt"
    text = f.read_text()
    f.write_text(text[: len(text) - 20])  # cut inside the last line
    dm = _piad_dm(piad)
    with pytest.raises(ValueError) as e:
        dm.setup("fit")
    assert str(e.value).startswith(f"{f}: line 4: ") and "fields, expected 22" in str(e.value)
    assert dm.test_set is None


def test_piad_missing_test_image_fails_at_fit_setup(piad):
    (piad / "Seen" / "Img" / "Img_Test_Mug_grasp_1.jpg").unlink()
    with pytest.raises(FileNotFoundError) as e:
        _piad_dm(piad).setup("fit")
    assert str(e.value).startswith(f"{piad / 'Seen' / 'Img_Test.txt'}: line 2: image not found: "
                                   f"Seen/Img/Img_Test_Mug_grasp_1.jpg (looked relative to ")


def test_piad_skip_bad_drops_a_bad_cloud_counts_and_limits(piad):
    bad = _cloud(piad / "Seen" / "Point" / "Point_Train_Mug_1.txt", 1, seed=5)
    problem = f"{bad}: 1 point(s), expected at least num_points=4 {SMALL_CLOUD}"
    point_list = piad / "Seen" / "Point_Train.txt"
    dm = _piad_dm(piad, skip_bad=True)
    dm.setup("fit")
    assert dm.train_set.by_class["Mug"] == [0] and dm.val_set.by_class["Mug"] == [0]
    assert dm.skipped == [(str(point_list), 1, problem)] and dm.num_skipped == 1
    assert dm.data_report() == {"data/train/point_files": 1.0, "data/train/skipped_point_files": 1.0,
                                "data/train/samples": 3.0, "data/train/skipped": 0.0,
                                "data/val/samples": 1.0, "data/val/skipped": 0.0,
                                "data/test/samples": 2.0, "data/test/skipped": 0.0}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["point_id"]) == {"Seen/Point/Point_Train_Mug_0.txt"}
    with pytest.raises(ValueError) as e:
        _piad_dm(piad, skip_bad=True, max_skip_fraction=0.4).setup("fit")
    assert str(e.value) == (f"piad: 1 of 2 point files of the train split ({point_list}) are bad (50%), more than "
                            f"max_skip_fraction=0.4 {LIMIT_HINT}. First: {problem}")


def test_piad_skip_bad_with_every_cloud_bad_fails(piad):
    first = _cloud(piad / "Seen" / "Point" / "Point_Train_Mug_0.txt", 1, seed=5)
    _cloud(piad / "Seen" / "Point" / "Point_Train_Mug_1.txt", 2, seed=6)
    with pytest.raises(ValueError) as e:
        _piad_dm(piad, skip_bad=True, max_skip_fraction=1.0).setup("fit")
    assert str(e.value) == (f"piad: 2 of 2 point files of the train split ({piad / 'Seen' / 'Point_Train.txt'}) are "
                            f"bad: skip_bad=true leaves none. First: {first}: 1 point(s), expected at least "
                            f"num_points=4 {SMALL_CLOUD}")


def test_piad_skip_bad_test_split(piad):
    (piad / "Seen" / "Img" / "Img_Test_Mug_grasp_0.jpg").write_bytes(b"not a jpeg")
    dm = _piad_dm(piad, skip_bad=True)
    dm.setup("test")
    assert dm.test_set.rows.tolist() == [1]
    assert dm.data_report() == {"data/test/samples": 1.0, "data/test/skipped": 1.0}
    assert dm.skipped[0][2].startswith(f"{piad / 'Seen' / 'Img_Test.txt'}: line 1: image ")
    assert "is not readable (UnidentifiedImageError" in dm.skipped[0][2]


# -- LEMON: a copy of a small generated set ------------------------------------------------------------------

@pytest.fixture(scope="module")
def lemon_src(tmp_path_factory, synth):
    from zoo.data.synthetic.lemon import generate_lemon

    out = tmp_path_factory.mktemp("lemon_bad") / "Data"
    generate_lemon(out, n=10, seed=2, image_size=32, body_model_dir=str(synth[0]))
    return out


@pytest.fixture
def lemon(tmp_path, lemon_src):
    root = tmp_path / "Data"
    shutil.copytree(lemon_src, root)
    return root


def test_lemon_one_point_object_file_is_rejected_at_setup(lemon):
    f = lemon / "Objects" / "Mug" / "tiny.txt"
    f.write_text(" ".join(["0.1"] * 20) + "\n")
    lst = lemon / "txt_scripts" / "Point_train.txt"
    lines = lst.read_text().splitlines()
    assert lines[0].startswith("Data/Objects/Mug/")
    lst.write_text("\n".join([str(f)] + lines[1:]) + "\n")
    with pytest.raises(ValueError) as e:
        LemonDataModule(str(lemon), image_size=32).setup("fit")
    assert str(e.value) == f"{f}: 1 point(s), expected at least num_points=2048 {SMALL_CLOUD}"


def test_lemon_bad_test_contact_fails_at_fit_setup_or_is_skipped(lemon):
    first = (lemon / "txt_scripts" / "val.txt").read_text().split()[0]  # Data/Images/<Object>/<aff>/<name>.jpg
    rel = first.split("/", 2)[2].rsplit(".", 1)[0]
    pkl = lemon / "smplh_contact_pkl" / f"{rel}.pkl"
    pkl.write_bytes(b"\x80garbage")
    with pytest.raises(ValueError) as e:
        LemonDataModule(str(lemon), image_size=32).setup("fit")
    assert str(e.value).startswith(f"{pkl}: not a readable contact pickle (")
    dm = LemonDataModule(str(lemon), image_size=32, skip_bad=True)
    dm.setup("fit")
    report = dm.data_report()
    assert report["data/test/samples"] == 1.0 and report["data/test/skipped"] == 1.0
    assert report["data/train/skipped"] == 0.0 and report["data/train/skipped_point_files"] == 0.0
    assert dm.test_set.rows.tolist() == [1]


# -- relative data roots ---------------------------------------------------------------------------------------

def test_data_home_checkout_env_and_installed(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA", raising=False)
    assert paths.data_home() == ROOT / "data"
    assert paths.resolve_data_path("damon") == ROOT / "data" / "damon"
    assert paths.resolve_data_path(tmp_path / "x") == tmp_path / "x"  # absolute stays
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.resolve_data_path("~/d") == tmp_path / "d"
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "store"))
    assert paths.resolve_data_path("damon") == tmp_path / "store" / "damon"
    monkeypatch.delenv("ZOO_DATA")
    monkeypatch.setattr(paths, "repo_root", lambda: None)  # an installed copy
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    assert paths.data_home() == tmp_path / "home" / "data"


def test_recipe_data_root_is_the_same_from_any_directory(tmp_path, monkeypatch):
    from zoo.core import recipe as R
    from zoo.core import registry

    for var in ("ZOO_DATA", "DAMON_ROOT", "PIAD_ROOT"):
        monkeypatch.delenv(var, raising=False)
    roots = {}
    for cwd in (ROOT, tmp_path):
        monkeypatch.chdir(cwd)
        for recipe in ("deco/damon", "mvloc/piad", "deco/synthetic"):
            rec = R.load(recipe)
            roots.setdefault(recipe, set()).add(registry.build("datamodule", dict(rec["data"])).root)
    assert roots == {"deco/damon": {str(ROOT / "data" / "damon")}, "mvloc/piad": {str(ROOT / "data" / "piad")},
                     "deco/synthetic": {str(ROOT / "data" / "damon_synthetic")}}
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "elsewhere"))
    assert registry.build("datamodule", dict(R.load("deco/damon")["data"])).root == str(tmp_path / "elsewhere" / "damon")


# -- the same checks through the run loop: exit code 2 before training, skipped counts in metrics.json ----------

DECO_FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
             "trainer.limit_test_batches=1", "data.batch_size=8", "data.image_size=64", "logger=none"]


def test_run_loop_stops_on_a_bad_test_file_before_training(damon, in_tmp, capsys):
    from zoo.core import run

    test = damon / "hot_dca_test.npz"
    test.write_bytes(test.read_bytes()[:1000])
    with pytest.raises(SystemExit) as e:
        run.cli("train", ["recipe=deco/synthetic", f"data.root={damon}", *DECO_FAST])
    assert e.value.code == 2
    assert f"error: {test}: not a readable npz file" in capsys.readouterr().err
    assert not list(in_tmp.glob("runs/**/*.ckpt")), "nothing was trained"


def test_run_loop_reports_skipped_samples_in_metrics_json(damon, in_tmp):
    from zoo.core import recipe as R
    from zoo.core import run

    tv = damon / "hot_dca_trainval.npz"
    pose = _arrays(tv)["pose"].copy()
    pose[[4, 9, 30], 1] = np.inf
    _edit(tv, pose=pose)
    res = run.train(R.load("deco/synthetic", [f"data.root={damon}", "data.skip_bad=true", *DECO_FAST]))
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert m["data/train/skipped"] + m["data/val/skipped"] == 3.0
    assert m["data/train/samples"] + m["data/val/samples"] == 29.0 and m["data/test/skipped"] == 0.0
    assert "test/f1" in m and m == res.metrics


def test_a_relative_data_root_on_the_command_line_is_from_the_working_directory(tmp_path, monkeypatch):
    from zoo.core import recipe as R

    monkeypatch.chdir(tmp_path)
    rec = R.load("deco/synthetic", ["data.root=my/damon"])
    assert rec["data"]["root"] == str(tmp_path / "my" / "damon")
    assert R.load("deco/synthetic", ["data.root=/abs/damon"])["data"]["root"] == "/abs/damon"
    monkeypatch.delenv("DAMON_ROOT", raising=False)
    assert R.load("deco/synthetic")["data"]["root"] == "damon_synthetic", "a recipe file's value is left as written"
