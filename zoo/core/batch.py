"""Batch-key checks with clear messages, shared by systems and the parts they compose, and the error
type of bad data files (the command line reports it without a traceback, exit code 2)."""
from __future__ import annotations

from typing import Any

__all__ = ["BatchKeyError", "DataError", "need"]


class DataError(ValueError):
    """A data file or sample is bad (truncated, missing keys, wrong lengths, values out of range); the
    message names the file, key or sample. A ValueError, so callers that catch ValueError still do."""


class BatchKeyError(KeyError):
    """A batch lacks a key a step needs (the message names the owner, the step, the key and what was expected)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def need(batch: dict, key: str, owner: str, where: str, expected: str) -> Any:
    """``batch[key]``, or a BatchKeyError naming the owner (system or part), the step, the key, what was
    expected and the keys the batch has."""
    if key not in batch:
        raise BatchKeyError(f"{owner}.{where}: batch is missing key '{key}' (expected {expected}; "
                            f"batch keys: {sorted(batch)})")
    return batch[key]
