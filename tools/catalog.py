#!/usr/bin/env python
"""Browse and check the zoo from a checkout: the same commands as ``hoi-zoo list|show|verify|docs``.

    python tools/catalog.py list [KIND] [PATTERN]     table of registered components (fnmatch pattern)
    python tools/catalog.py show NAME                 kind/name or a unique bare name, or a checkpoint name
    python tools/catalog.py verify NAME|PATH          integrity of a checkpoint (exit 1 on failure)
    python tools/catalog.py docs [--check] [--out F]  write docs/reference.md (--check: exit 1 if stale)

The logic lives in :mod:`zoo.core.catalog`; ``list`` and ``show`` never import torch.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from zoo.core.catalog import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
