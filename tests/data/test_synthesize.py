"""DataModules with ``synthesize``: a recipe on synthetic data that finds none writes it, once, in the real format."""
import threading
import time
from pathlib import Path

import pytest

from zoo.data.base import LOCK_NAME, synthesize_missing
from zoo.data.damon import DamonDataModule
from zoo.data.lemon import LemonDataModule
from zoo.data.piad import PiadDataModule


def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def body_models(tmp_path_factory):
    """An empty body-model folder: the first DataModule that needs a body writes the synthetic one there."""
    return tmp_path_factory.mktemp("body_models")


def test_damon_writes_real_format_files_once(tmp_path, monkeypatch, capsys, body_models, check_formats):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(body_models))
    root = tmp_path / "damon"
    dm = DamonDataModule(str(root), batch_size=2, image_size=32, seg_size=32,
                         synthesize={"n": 6, "image_size": 32, "seed": 3})
    dm.prepare_data()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"[damon] no DAMON data under {root}: writing a synthetic DAMON-format set there with seed 3 "
                      f"(n=6, image_size=32, model_dir={body_models})")
    if len(out) > 1:  # the first test of the session to need a body writes it
        assert out[1:] == [f"[body] no SMPL model under {body_models}: writing the synthetic stand-in body models "
                           f"there"]
    assert (body_models / "smpl" / "SMPL_NEUTRAL.pkl").is_file()
    check_formats("damon", root)
    stamps = _stamps(root)
    dm.setup()  # after prepare_data: nothing more to write
    assert len(dm.train_set) + len(dm.val_set) == 5 and len(dm.test_set) == 1
    again = DamonDataModule(str(root), image_size=32, seg_size=32, synthesize={"n": 6, "image_size": 32, "seed": 3})
    again.setup("fit")  # no Trainer: setup runs the same check, finds the files and writes nothing
    assert capsys.readouterr().out == ""
    assert _stamps(root) == stamps


def test_piad_setup_without_trainer_writes_the_setting(tmp_path, capsys, check_formats):
    root = tmp_path / "piad"
    syn = {"n_objects": 22, "n_images": 22, "image_size": 32, "seed": 1}
    dm = PiadDataModule(str(root), batch_size=2, image_size=32, num_points=64, synthesize=syn)
    dm.setup("fit")
    assert capsys.readouterr().out == (f"[piad] no PIAD Seen lists under {root}: writing a synthetic PIAD-format set "
                                       f"there with seed 1 (n_objects=22, n_images=22, image_size=32, "
                                       f"settings=['Seen'])\n")
    check_formats("piad", root / "Seen")
    assert len(dm.train_set) > 0 and dm.train_set[0]["points"].shape == (64, 3)
    stamps = _stamps(root)
    dm.setup("test")  # the same module again: checked once, not again
    PiadDataModule(str(root), num_points=64, synthesize=syn).prepare_data()
    assert capsys.readouterr().out == "" and _stamps(root) == stamps
    # Another setting is written next to the first, which stays as it is.
    PiadDataModule(str(root), setting="Unseen", synthesize=syn).prepare_data()
    assert "[piad] no PIAD Unseen lists under" in capsys.readouterr().out
    assert (root / "Unseen" / "Box_Test.txt").is_file()
    seen = {k: v for k, v in stamps.items() if k.startswith("Seen/")}
    assert len(seen) > 60 and {k: v for k, v in _stamps(root).items() if k.startswith("Seen/")} == seen


def test_lemon_writes_its_layout_once(tmp_path, monkeypatch, capsys, body_models):
    monkeypatch.setenv("ZOO_BODY_MODELS", str(body_models))
    root = tmp_path / "Data"
    syn = {"n": 4, "image_size": 32, "seed": 2}
    dm = LemonDataModule(str(root), batch_size=2, image_size=32, num_points=64, val_fraction=0.5, synthesize=syn)
    dm.prepare_data()
    out = capsys.readouterr().out
    assert out.startswith(f"[lemon] no LEMON data under {root}: writing a synthetic LEMON-format set there with seed 2 "
                          f"(n=4, image_size=32, body_model_dir={body_models})\n")
    assert (root / "smplh_param" / "human_label.json").is_file()
    assert not (root / "body_models").exists()  # the body came from the body-model folder
    stamps = _stamps(root)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 3 and len(dm.test_set) == 1
    assert dm.test_set[0]["contact_label"].shape == (6890,)
    LemonDataModule(str(root), synthesize=syn).setup("test")
    assert capsys.readouterr().out == "" and _stamps(root) == stamps


def test_without_synthesize_missing_data_says_how_to_get_some(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"DAMON file not found: .*synthesize: \{n: 700, seed: 0\}"):
        DamonDataModule(str(tmp_path / "none")).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"neither it nor .*`synthesize: \{seed: 0\}`"):
        PiadDataModule(str(tmp_path / "none")).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"LEMON list file not found: .*`synthesize: \{\.\.\.\}`"):
        LemonDataModule(str(tmp_path / "none")).setup("fit")
    assert not (tmp_path / "none").exists()  # nothing was written


def test_unknown_synthesize_keys_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"damon: synthesize has unknown key\(s\) \['samples'\]; generate_damon takes "
                                         r"n, seed, test_fraction, image_size, model_dir"):
        DamonDataModule(str(tmp_path), synthesize={"samples": 10})
    with pytest.raises(ValueError, match=r"piad: synthesize has unknown key\(s\) \['out'\]"):
        PiadDataModule(str(tmp_path), synthesize={"out": "x"})
    with pytest.raises(TypeError, match="lemon: synthesize must be a dict"):
        LemonDataModule(str(tmp_path), synthesize=[1])


def test_an_incomplete_dataset_is_never_overwritten(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    (root / "hot_dca_trainval.npz").write_bytes(b"mine")
    dm = DamonDataModule(str(root), synthesize={"n": 4})
    with pytest.raises(FileExistsError, match=r"incomplete dataset .*hot_dca_trainval\.npz but not .*hot_dca_test\.npz"
                                              r".*never overwrites existing files"):
        dm.prepare_data()
    assert (root / "hot_dca_trainval.npz").read_bytes() == b"mine" and capsys.readouterr().out == ""


def test_a_second_writer_waits_and_finds_the_files(tmp_path, capsys):
    required = [tmp_path / "a.txt", tmp_path / "b.txt"]
    calls = []

    def slow_write():
        calls.append(threading.current_thread().name)
        for p in required:
            time.sleep(0.2)
            p.write_text("x")

    first = threading.Thread(target=synthesize_missing, name="first",
                             args=("toy", tmp_path, required, slow_write, "writing toy data"))
    first.start()
    while not calls:  # the first writer holds the lock
        time.sleep(0.01)
    assert synthesize_missing("toy", tmp_path, required, slow_write, "writing toy data") is False
    first.join()
    assert calls == ["first"] and all(p.read_text() == "x" for p in required)
    assert capsys.readouterr().out == "writing toy data\n" and (tmp_path / LOCK_NAME).is_file()
