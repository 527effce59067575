"""On-disk cache of text-encoder embeddings (one file per prompt and text encoder).

Encoding a prompt with a multi-GB text encoder (T5-XXL for DeepFloyd IF) costs more than many SDS
steps, and the same prompts come back in every run, so embeddings are kept in
``$ZOO_HOME/text_embeddings/<model key>/<sha256 of the prompt>.pt``. The model key
(:func:`model_key`) hashes what identifies the text encoder without reading its weights: its
``config.json`` and tokenizer files (small, hashed in full), the names and sizes of its weight files,
and the dtype it runs in. Files are written atomically (a temporary file renamed into place), hold the
prompt and the model key beside the tensor, and are checked when read: a truncated, corrupt or foreign
file is reported by a warning naming it and recomputed (then overwritten).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from zoo.core.atomic import atomic_open
from zoo.core.paths import cache_dir

__all__ = ["TextEmbeddingCache", "model_key", "prompt_hash", "CACHE_FORMAT"]

CACHE_FORMAT = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


def prompt_hash(text: str) -> str:
    """The file stem of a prompt's cache entry: the sha256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_key(text_encoder_dir: str | Path, tokenizer_dir: str | Path, extra: dict | None = None) -> str:
    """A short hash identifying a text encoder: its config and tokenizer files (content), its weight files
    (names and sizes only: hashing GBs of weights on every start would cost more than encoding), and
    ``extra`` (e.g. the dtype and the model family)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "extra": extra or {}}, sort_keys=True, default=str).encode())
    enc, tok = Path(text_encoder_dir), Path(tokenizer_dir)
    for f in sorted(p for p in enc.rglob("*") if p.is_file()):
        rel = f.relative_to(enc).as_posix()
        if f.name.endswith(_WEIGHT_SUFFIXES):
            h.update(f"weights:{rel}:{f.stat().st_size}\n".encode())
        elif f.suffix == ".json":
            h.update(f"config:{rel}\n".encode() + f.read_bytes())
    for f in sorted(p for p in tok.rglob("*") if p.is_file()):
        h.update(f"tokenizer:{f.relative_to(tok).as_posix()}\n".encode() + f.read_bytes())
    return h.hexdigest()[:20]


class TextEmbeddingCache:
    """Embeddings of prompts under ``root/<key>/`` (``root`` defaults to ``cache_dir("text_embeddings")``)."""

    def __init__(self, key: str, root: str | Path | None = None) -> None:
        self.key = key
        self.dir = Path(root) if root is not None else cache_dir("text_embeddings")
        self.dir = self.dir / key

    def path(self, text: str) -> Path:
        """The cache file of ``text``."""
        return self.dir / f"{prompt_hash(text)}.pt"

    def get(self, text: str) -> torch.Tensor | None:
        """The cached embedding of ``text``, or None when absent or unreadable (warned, to be recomputed)."""
        path = self.path(text)
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or not isinstance(obj.get("embedding"), torch.Tensor):
                raise ValueError("no 'embedding' tensor in it")
            if obj.get("prompt") != text or obj.get("model_key") != self.key:
                raise ValueError(f"it holds prompt {obj.get('prompt')!r} of model {obj.get('model_key')}, "
                                 f"expected {text!r} of {self.key}")
            emb = obj["embedding"]
            if not torch.isfinite(emb.float()).all():
                raise ValueError("its embedding is not finite")
            return emb
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed, never fatal
            warnings.warn(f"text-embedding cache file {path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                          f"recomputing it", RuntimeWarning, stacklevel=2)
            return None

    def put(self, text: str, embedding: torch.Tensor) -> Path:
        """Store ``embedding`` for ``text`` atomically (a crash mid-write leaves no partial file)."""
        path = self.path(text)
        obj = {"format": CACHE_FORMAT, "prompt": text, "model_key": self.key,
               "embedding": embedding.detach().to("cpu").contiguous().clone()}
        with atomic_open(path, "wb") as fh:
            torch.save(obj, fh)
        return path

    def lookup(self, texts: Sequence[str], encode: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """Embeddings (N, ...) of ``texts``: cached entries are read, the others encoded in one
        ``encode(missing_texts)`` call and written; the result is on the device ``encode`` returns
        (CPU when every entry was cached)."""
        texts = list(texts)
        found: dict[str, torch.Tensor] = {}
        for t in dict.fromkeys(texts):
            emb = self.get(t)
            if emb is not None:
                found[t] = emb
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        device = None
        if missing:
            new = encode(missing)
            device = new.device
            for t, emb in zip(missing, new, strict=True):
                try:
                    self.put(t, emb)
                except OSError as exc:  # a full or read-only disk: the run goes on, uncached
                    warnings.warn(f"could not write text-embedding cache file {self.path(t)} ({exc}); continuing "
                                  f"without caching it", RuntimeWarning, stacklevel=2)
                found[t] = emb
        out = torch.stack([found[t] for t in texts])
        return out if device is None else out.to(device)
