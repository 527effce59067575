"""Atomic file writes and file hashing.

A reader (another rank, a crashed run resumed later, ``hoi-zoo verify``) must
never see a half-written checkpoint or config: everything is written to a
temporary file in the destination directory, flushed to disk, then moved over
the target with ``os.replace`` (atomic on POSIX and Windows within one
filesystem). Dependency-free on purpose: ``zoo.core`` imports nothing else.

A temporary file is named ``.<target>.zoo<pid>@<host>.<random>.tmp``: a writer killed with
SIGKILL (or a power cut) cannot remove it, but the name says whose it was, so
:func:`clean_stale_temporaries` can remove the files of processes that no longer exist.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_image", "sha256_file",
           "clean_stale_temporaries"]

_CHUNK = 1 << 20


def _fsync_dir(directory: Path) -> None:
    # The rename itself lives in the directory entry; without this a power cut
    # can lose the replace even though the file data reached the disk.
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.zoo(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)\.[^.]+\.tmp$")
_LEGACY_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # before the pid was in the name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def clean_stale_temporaries(directory: str | os.PathLike, depth: int = 3, legacy_age_s: float = 86400.0) -> list[Path]:
    """Remove the temporary files of atomic writes whose writer is dead; returns the removed paths.

    Looks in ``directory`` and its sub-folders down to ``depth`` levels. A file written by a
    process of this host that no longer runs is removed; files of live processes and of other
    hosts (a shared filesystem) are kept. Temporaries named before the writer's pid was
    recorded are removed once older than ``legacy_age_s`` seconds.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    host, now, removed = _host(), time.time(), []
    for level in range(depth + 1):
        pattern = "/".join(["*"] * level + [".*.tmp"])
        for f in root.glob(pattern):
            m = _TMP_NAME.match(f.name)
            try:
                if m:
                    stale = m["host"] == host and not _alive(int(m["pid"]))
                else:
                    stale = bool(_LEGACY_TMP_NAME.match(f.name)) and now - f.stat().st_mtime > legacy_age_s
                if stale and f.is_file():
                    f.unlink()
                    removed.append(f)
            except FileNotFoundError:
                continue  # removed by someone else meanwhile
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it is fsynced and moved onto ``path``.

    For writers that want a file name rather than a file object (e.g.
    ``safetensors.torch.save_file``). If the block raises, the temporary file is
    removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.zoo{os.getpid()}@{_host()}.", suffix=".tmp",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); the target gets the mode a plain open() would give it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic write of {target}: the writer did not create {tmp}")
        # again after the writer: some (safetensors' save_file) replace the file mkstemp made, mode and all
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing so that it only appears, complete, when the block exits cleanly.

    ``mode`` must be a write mode ("w", "wb", "wt"); append/read modes make no
    sense for an atomic replace and are rejected.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open({str(path)!r}): mode must be 'w', 'wt' or 'wb', got {mode!r}")
    if "b" in mode and encoding is not None:
        raise ValueError(f"atomic_open({str(path)!r}): encoding given for binary mode {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes({str(path)!r}): expected bytes, got {type(data).__name__}")
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_image(path: str | os.PathLike, array, format: str = "PNG", **params) -> Path:
    """Encode a uint8 image array (H, W[, C]) with PIL (``format`` "PNG" / "JPEG", encoder ``params``) and
    write it atomically; returns the path."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format=format, **params)
    return atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (checkpoints can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
