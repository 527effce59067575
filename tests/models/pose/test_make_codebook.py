"""tools/make_codebook.py: builds from a pose source, exports, reports the time per 1k poses; bad input exits 2."""
import re
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))

import make_codebook  # noqa: E402

from zoo.core import hub  # noqa: E402
from zoo.data.synthetic.poses import synthetic_pose_set  # noqa: E402

TINY = ["clip.variant=tiny", "body_model.name=smpl", "body_model.synthesize=true", "vposer.hidden=32",
        "image_size=32", "min_similarity=-1.0", "candidates=3", "top_k=2"]


def test_builds_exports_and_reports(tmp_path, body_models, capsys):
    out = tmp_path / "cb"
    assert make_codebook.main(["poses=synthetic:10", f"out={out}", "clusters=3", *TINY]) == 0
    text = capsys.readouterr()
    assert re.search(r"built 3 key poses from 10 poses in [\d.]+ s \([\d.]+ s per 1k poses; ", text.out)
    assert "AnchorPoseCodebook: render + CLIP" in text.err  # the progress bar
    cb = hub.load(out)
    assert cb.size == 3 and cb.hparams.pick == "best" and cb.hparams.clusters == 3
    assert cb("sitting on a chair").shape == (1, 21, 3)
    # The baseline from a DAMON-format file: the uniform subsample of its poses.
    poses, _ = synthetic_pose_set(6, 1)
    full = np.zeros((6, 72), np.float32)
    full[:, 3:66] = poses.reshape(6, 63)
    np.savez(tmp_path / "damon.npz", pose=full)
    assert make_codebook.main([f"poses={tmp_path / 'damon.npz'}", f"out={tmp_path / 'base'}",
                               "prior=avatarclip_retrieval", "max_poses=4",
                               *[a for a in TINY if not a.startswith("vposer")]]) == 0
    # (the stored table read directly: rebuilding the prior would load CLIP once more)
    base = load_file(tmp_path / "base" / "model.safetensors")
    assert sorted(base) == ["clip_key", "image_emb", "key_poses"]
    assert torch.equal(base["key_poses"], torch.from_numpy(poses[[0, 2, 3, 5]]))


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert make_codebook.main([f"out={tmp_path}"]) == 2
    assert "error: poses= required" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((3, 24, 3)))
    assert make_codebook.main([f"poses={tmp_path / 'bad.npy'}", f"out={tmp_path / 'x'}"]) == 2
    assert f"error: {tmp_path / 'bad.npy'}: array has shape (3, 24, 3); expected (N, 63) or (N, 21, 3)" in \
        capsys.readouterr().err
    assert make_codebook.main(["poses=synthetic:0", f"out={tmp_path / 'x'}"]) == 2
    assert "poses=synthetic:0: expected synthetic or synthetic:N with N >= 1" in capsys.readouterr().err
