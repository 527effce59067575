"""Body pose sets for the pose codebooks: mocap / HOI pose files -> (N, 21, 3) float32 axis-angle body poses.

Accepted inputs (body = the 21 joints after the root, axis-angle, SMPL-family order):

* AMASS-style ``.npz`` with ``poses`` (T, 156) SMPL-H or (T, 165) SMPL-X: the body is columns 3:66;
* DAMON-format ``.npz`` with ``pose`` (N, 72) SMPL: columns 3:66 (SMPL's two hand joints dropped);
* ``.npy`` of (N, 63) or (N, 21, 3);
* a folder: every ``.npz`` / ``.npy`` file under it (recursively, sorted by path), concatenated.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["read_pose_set", "ACCEPTED"]

ACCEPTED = ("npz 'poses' (T, 156) SMPL-H or (T, 165) SMPL-X (AMASS), npz 'pose' (N, 72) SMPL (DAMON), "
            "npy (N, 63) or (N, 21, 3)")


def _body(arr: np.ndarray, path: Path, key: str, widths: tuple[int, ...]) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[1] not in widths:
        raise ValueError(f"{path}: key '{key}' has shape {tuple(arr.shape)}; expected (N, "
                         f"{' or '.join(map(str, widths))}) (accepted: {ACCEPTED})")
    return arr[:, 3:66]


def _read_file(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 3 and tuple(arr.shape[1:]) == (21, 3):
            return arr.reshape(arr.shape[0], 63)
        if arr.ndim == 2 and arr.shape[1] == 63:
            return arr
        raise ValueError(f"{path}: array has shape {tuple(arr.shape)}; expected (N, 63) or (N, 21, 3) "
                         f"(accepted: {ACCEPTED})")
    if path.suffix != ".npz":
        raise ValueError(f"{path}: not a pose file (expected .npz or .npy; accepted: {ACCEPTED})")
    with np.load(path, allow_pickle=False) as data:
        if "poses" in data.files:
            return _body(np.asarray(data["poses"]), path, "poses", (156, 165))
        if "pose" in data.files:
            return _body(np.asarray(data["pose"]), path, "pose", (72,))
        raise ValueError(f"{path}: no 'poses' (AMASS) or 'pose' (DAMON) key (found {', '.join(data.files) or 'none'}); "
                         f"accepted: {ACCEPTED}")


def read_pose_set(path: str | os.PathLike) -> np.ndarray:
    """(N, 21, 3) float32 body poses from a pose file or a folder of them (see the module docstring).

    A wrong shape raises ValueError naming the file, the key, the shape found and the shapes accepted; a
    folder without pose files or a missing path raises FileNotFoundError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"pose set {p} not found (expected a pose file or a folder of them: {ACCEPTED})")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".npz", ".npy"))
        if not files:
            raise FileNotFoundError(f"pose set folder {p} holds no .npz / .npy files ({ACCEPTED})")
        arrs = [_read_file(f) for f in files]
    else:
        arrs = [_read_file(p)]
    out = np.concatenate(arrs).astype(np.float32).reshape(-1, 21, 3)
    if not np.isfinite(out).all():
        raise ValueError(f"pose set {p}: {int((~np.isfinite(out)).any(axis=(1, 2)).sum())} pose(s) hold NaN or inf")
    return out
