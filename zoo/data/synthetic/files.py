"""Deterministic npz files for the synthetic generators (every other file they write goes through
:mod:`zoo.core.atomic` directly: atomic, with the mode a plain ``open`` would give)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from zoo.core.atomic import atomic_path

__all__ = ["save_npz_deterministic"]


def save_npz_deterministic(path: str | Path, **arrays) -> Path:
    """Write ``arrays`` in ``np.savez``'s format with fixed zip timestamps (equal arrays, equal bytes), atomically.

    Readable with ``np.load(path, allow_pickle=True)``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for k, a in arrays.items():
                info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=True)
                zf.writestr(info, buf.getvalue())
    return path
