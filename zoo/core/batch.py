"""Batch-key checks with clear messages, shared by systems and the parts they compose."""
from __future__ import annotations

from typing import Any

__all__ = ["BatchKeyError", "need"]


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
