"""Argument handling shared by the tools: `recipe=NAME key=value ... [--print]`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def split_args(argv: list[str], usage: str) -> tuple[str, list[str], set[str]]:
    """(recipe name, overrides, flags) from the command line; exits with usage on error."""
    flags = {a for a in argv if a.startswith("--")}
    rest = [a for a in argv if not a.startswith("--")]
    if "--help" in flags or "-h" in argv:
        print(usage)
        raise SystemExit(0)
    recipe = [a.partition("=")[2] for a in rest if a.startswith("recipe=")]
    if len(recipe) != 1 or not recipe[0]:
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    return recipe[0], [a for a in rest if not a.startswith("recipe=")], flags


def fail(msg: str, code: int = 2) -> None:
    """Print an error for the user (no traceback) and exit."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)
