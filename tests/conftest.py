"""Shared test set-up: run from the checkout, never touch the network, keep W&B offline; session fixtures with
synthetic body models and small synthetic DAMON- and PIAD-format datasets."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist (make test runs two workers on the two cores) each worker keeps torch to one thread: two
# workers with torch's default of one thread per core would oversubscribe the cores (small steps ~10x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


# The shared format checker (`check_formats.py damon|piad|smplx PATH`), beside the repository.
CHECK_FORMATS = ROOT.parent / "shared" / "tools" / "check_formats.py"


@pytest.fixture
def check_formats():
    """A function running the shared format checker on a path; returns its stdout after asserting it passed
    ("0 problem(s)"). Tests using it skip, saying so, where the checker is not beside the repository."""
    import subprocess

    if not CHECK_FORMATS.is_file():
        pytest.skip(f"the shared format checker is not at {CHECK_FORMATS}")

    def run(kind: str, path) -> str:
        r = subprocess.run([sys.executable, str(CHECK_FORMATS), kind, str(path)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and "0 problem(s)" in r.stdout, r.stdout + r.stderr
        return r.stdout

    return run


@pytest.fixture
def zoo_files(tmp_path, monkeypatch):
    """A function writing a registry.yaml and named recipes under tmp_path, pointing ZOO_REGISTRY / ZOO_RECIPES
    at them, putting ``modules_dir`` (where the test components live) on sys.path and moving into tmp_path;
    returns the recipes dir. The registry index cache is cleared afterwards."""
    from zoo.core import registry

    def write(registry_yaml: str, recipes: dict[str, str], modules_dir: Path) -> Path:
        monkeypatch.syspath_prepend(str(modules_dir))
        (tmp_path / "registry.yaml").write_text(registry_yaml)
        for name, text in recipes.items():
            path = tmp_path / "recipes" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
        monkeypatch.setenv("ZOO_RECIPES", str(tmp_path / "recipes"))
        monkeypatch.chdir(tmp_path)
        registry.index(reload=True)
        return tmp_path / "recipes"

    yield write
    registry._INDEX_CACHE.clear()


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """(body_models_dir, damon_root) written once per test session."""
    from zoo.body.synthetic import write_synthetic_body_models
    from zoo.data.synthetic.damon import cli

    root = tmp_path_factory.mktemp("synth")
    body = write_synthetic_body_models(root / "body_models")
    damon = root / "damon"
    assert cli(["--n", "40", "--out", str(damon), "--seed", "1", "--model-dir", str(body)]) in (0, None)
    return Path(body), damon


@pytest.fixture(scope="session")
def synth_learn(synth, tmp_path_factory):
    """A synthetic DAMON set to learn from in a test's time: 200 images (160 trainval, 40 test) of two
    scenarios whose contact differs (sit, lean), 96 px, written once per session with ``synth``'s body
    models. On it the strongest constant predictor reaches F1 0.53 and the per-scenario prior 0.71
    (binary contact), so a model that reads the image has room to beat the constant."""
    from zoo.data.synthetic.damon import generate_damon

    root = tmp_path_factory.mktemp("learn") / "damon"
    generate_damon(root, n=200, seed=1, image_size=96, model_dir=str(synth[0]), scenarios=("sit", "lean"))
    return root


def _split_labels(data: dict, split: str) -> tuple:
    """(labels (N, V) as numpy, class names or []) of one split of a DataModule config, read through the
    DataModule itself (so the train split is the one a run trains on, after its validation hold-out)."""
    import numpy as np

    from zoo.core import registry

    dm = registry.build("datamodule", {**data, "load_images": False})
    dm.setup("fit" if split == "train" else "test")
    labels, names = [], []
    for b in dm.train_dataloader() if split == "train" else dm.test_dataloader():
        labels.append((b["contact_label"] if "contact_label" in b else b["affordance"]).numpy())
        names += list(b.get("object_name", []))
    return np.concatenate(labels), names


@pytest.fixture
def split_labels():
    """``split_labels(data_config, "train" | "test") -> (labels, class names)`` (see _split_labels)."""
    return _split_labels


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, synth):
    """Run in a temporary directory with the synthetic body models configured."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_BODY_MODELS", str(synth[0]))
    monkeypatch.delenv("ZOO_RUN_DIR", raising=False)
    os.environ.setdefault("WANDB_MODE", "offline")
    return tmp_path


@pytest.fixture(scope="session")
def synth_piad(tmp_path_factory):
    """A small synthetic PIAD-format dataset (Seen setting), written once per test session."""
    from zoo.data.synthetic.piad import generate_piad

    root = tmp_path_factory.mktemp("piad")
    generate_piad(root, n_objects=48, n_images=48, seed=3, image_size=64)
    return Path(root)


def _assert_same_last_checkpoint(full: Path, resumed: Path) -> None:
    """The resumed run's last.ckpt equals the uninterrupted one's: step, every weight, every
    optimiser state tensor and the LR schedulers' state."""
    import torch

    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] > 0
    assert set(a["state_dict"]) == set(b["state_dict"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), f"{k} differs after resume"
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert set(sa) == set(sb) and sa
    for i in sa:
        for key, v in sa[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][key])), f"optimizer state {i}/{key} differs"
    assert a.get("lr_schedulers") == b.get("lr_schedulers")


@pytest.fixture
def same_last_checkpoint():
    """Asserts that two runs' last checkpoints are equal (see _assert_same_last_checkpoint)."""
    return _assert_same_last_checkpoint


GOLDEN_DIR = Path(__file__).resolve().parent / "fixtures" / "golden"


def _load_golden(name: str) -> dict:
    """The arrays of tests/fixtures/golden/<name>.npz (outputs of the official code; see its README)."""
    import numpy as np

    path = GOLDEN_DIR / (name if name.endswith(".npz") else f"{name}.npz")
    if not path.is_file():
        pytest.fail(f"golden file missing: {path} (copy it from ../shared/golden/ with the same name)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def golden_npz():
    """Loader of a golden file by name: ``golden_npz("lift_human")`` -> {key: array}."""
    return _load_golden
