"""tools/reconstruct.py on a folder of synthetic scenes with one bad scene among them."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from zoo.data.synthetic.scenes import generate_scenes

    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root / "all", n=2, seed=0, image_size=48)
    src = root / "input"
    src.mkdir()
    for name in ("scene_00000", "scene_00001"):
        shutil.copytree(root / "all" / name, src / name)
    shutil.copytree(root / "all" / "scene_00001", src / "scene_bad")
    (src / "scene_bad" / "object_mask.png").write_bytes(b"not a png")
    return src


def test_reconstruct_writes_each_scene_and_reports_the_bad_one(scenes, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TOOLS))
    monkeypatch.setenv("ZOO_BODY_MODELS", str(scenes.parent / "all" / "body_models"))
    import reconstruct

    out = tmp_path / "out"
    rc = reconstruct.main(["recipe=hoi_recon/gt_contacts", f"input={scenes}", f"out={out}",
                           "system.silhouette.image_size=32", "system.stages=[{name: fit, steps: 3}]"])
    assert rc == 1  # one scene skipped
    assert sorted(p.name for p in out.iterdir()) == ["scene_00000", "scene_00001", "skipped.txt"]
    for name in ("scene_00000", "scene_00001"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["overlay.png", "result.json", "scene.glb",
                                                                   "views.png"]
        rec = json.loads((out / name / "result.json").read_text())
        assert rec["name"] == name and len(rec["R"]) == 3 and len(rec["t"]) == 3
    skipped = (out / "skipped.txt").read_text()
    assert "scene_bad" in skipped and "object_mask.png" in skipped
    assert "2 scene(s) written" in capsys.readouterr().out


def test_reconstruct_refuses_a_learned_system(scenes, monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import reconstruct

    with pytest.raises(SystemExit, match=r"builds 'deco', a learned system; tools/reconstruct.py runs fitting"):
        reconstruct.main(["recipe=deco/synthetic", f"input={scenes}"])
    assert sys.modules["reconstruct"] is reconstruct
