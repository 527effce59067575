"""The ``hoi-zoo`` command: one entry point for training, evaluation and browsing the registry.

    hoi-zoo train recipe=NAME [key=value ...] [--print]
    hoi-zoo eval  recipe=NAME ckpt=PATH|NAME [key=value ...] [out=FILE]
    hoi-zoo predict recipe=NAME [ckpt=PATH|NAME] [key=value ...]
    hoi-zoo list [KIND] [PATTERN] | show NAME | verify NAME|PATH | docs [--check]

``tools/train.py``, ``tools/eval.py`` and ``tools/catalog.py`` are the same commands for a checkout.
"""
from __future__ import annotations

import sys

USAGE = __doc__

CATALOG_COMMANDS = ("list", "show", "verify", "docs")
RUN_COMMANDS = ("train", "eval", "predict")


def run_command(command: str, argv: list[str]) -> int:
    """``train`` / ``eval`` / ``predict`` with recipe arguments; returns the exit code."""
    from zoo.core import run

    return run.cli(command, argv, usage=USAGE)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hoi-zoo`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in CATALOG_COMMANDS:
        from zoo.core import catalog

        return catalog.main([command, *rest])
    if command in RUN_COMMANDS:
        return run_command(command, rest)
    import difflib

    close = difflib.get_close_matches(command, (*RUN_COMMANDS, *CATALOG_COMMANDS), n=1)
    from zoo.core.run import fail

    fail(f"unknown command '{command}'" + (f"; did you mean {close[0]}?" if close else "")
         + f" (commands: {', '.join((*RUN_COMMANDS, *CATALOG_COMMANDS))})")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
