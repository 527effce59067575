"""Browse and check the zoo: list / show components, verify checkpoints, generate the reference docs.

    hoi-zoo list [KIND] [PATTERN]     table of registered components (fnmatch pattern), or `list checkpoint`
    hoi-zoo show NAME                 kind/name or a unique bare name, or a checkpoint name
    hoi-zoo verify NAME|PATH          integrity of a checkpoint (exit 1 on failure)
    hoi-zoo docs [--check] [--out F]  write docs/reference.md (--check: exit 1 if stale)

``python tools/catalog.py ...`` is the same for a checkout. ``list`` and ``show`` never import
torch: constructor signatures are read from the source with ``ast``, so they answer instantly
(a signature that cannot be read that way falls back to importing the component).

The registry and recipes come from :mod:`zoo.core.paths` (checkout, packaged copy, or
``$ZOO_REGISTRY`` / ``$ZOO_RECIPES``); ``docs/reference.md`` exists only in a source checkout, so
``docs`` without ``--out`` needs one.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import importlib.util
import sys
from pathlib import Path
from typing import Any

from zoo.core import registry
from zoo.core.paths import cache_dir, recipes_dir, repo_root

__all__ = ["CatalogError", "Row", "signature_rows", "signature_text", "recipe_rows", "render_reference",
           "reference_file", "main"]

Row = tuple[str, str, str]  # (arg, annotation text, default text; "required" when there is none)

REFERENCE = Path("docs") / "reference.md"  # relative to the checkout
REGENERATE = "python tools/catalog.py docs"


class CatalogError(Exception):
    """A lookup or command failed; ``main`` prints ``error: <message>`` and returns ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- signatures


def _module_file(module: str) -> Path | None:
    """Source file of a dotted module, found without importing it (or its parent packages)."""
    parts = module.split(".")
    loaded = sys.modules.get(parts[0])
    spec = getattr(loaded, "__spec__", None) if loaded is not None else importlib.util.find_spec(parts[0])
    if spec is None:
        return None
    if len(parts) == 1:
        return Path(spec.origin) if spec.origin else None
    if not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0])
    for part in parts[1:-1]:
        base = base / part
    for cand in (base / f"{parts[-1]}.py", base / parts[-1] / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _unparse(node: ast.AST | None) -> str:
    return ast.unparse(node) if node is not None else ""


def _rows_from_ast(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Row]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    rows = []
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        if i == 0 and arg.arg in ("self", "cls"):
            continue
        rows.append((arg.arg, _unparse(arg.annotation), _unparse(default) if default is not None else "required"))
    if a.vararg:
        rows.append(("*" + a.vararg.arg, _unparse(a.vararg.annotation), ""))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        rows.append((arg.arg, _unparse(arg.annotation), _unparse(default) if default is not None else "required"))
    if a.kwarg:
        rows.append(("**" + a.kwarg.arg, _unparse(a.kwarg.annotation), ""))
    return rows


def _ast_signature(path: Path, cls_name: str) -> list[Row] | None:
    """Constructor rows read from source; None when they can only be had by importing."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    seen = set()
    while cls_name in classes and cls_name not in seen:
        seen.add(cls_name)
        node = classes[cls_name]
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "__init__":
                return _rows_from_ast(item)
        # inherited __init__: follow a base defined in the same file
        local = [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in classes]
        if not local:
            return None
        cls_name = local[0]
    return None


def _inspect_signature(kind: str, name: str) -> list[Row]:
    """Fallback that imports the component (and so may import torch)."""
    import inspect

    cls = registry.get(kind, name)
    rows = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        ann = p.annotation
        ann_text = "" if ann is p.empty else (ann if isinstance(ann, str) else inspect.formatannotation(ann))
        default = "required" if p.default is p.empty else repr(p.default)
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        if prefix:
            default = ""
        rows.append((prefix + p.name, ann_text, default))
    return rows


def signature_rows(kind: str, name: str) -> list[Row]:
    """(arg, type, default) for a component's constructor; 'required' marks no default."""
    module, _, attr = registry.entry(kind, name)["import"].partition(":")
    path = _module_file(module)
    rows = _ast_signature(path, attr) if path is not None else None
    return rows if rows is not None else _inspect_signature(kind, name)


def signature_text(cls_name: str, rows: list[Row]) -> str:
    """``Cls(a: int = 1, b='x', c: str)`` from :func:`signature_rows`."""
    parts = []
    for arg, ann, default in rows:
        text = arg + (f": {ann}" if ann else "")
        if default and default != "required":
            text += f" = {default}" if ann else f"={default}"
        parts.append(text)
    return f"{cls_name}({', '.join(parts)})"


# ---------------------------------------------------------------------- lookups


def _components() -> list[tuple[str, str, dict]]:
    comps = registry.index()["components"]
    return [(k, n, e) for k in registry.KINDS for n, e in sorted((comps.get(k) or {}).items())]


def _find(name: str) -> tuple[str, str, Any]:
    """('component', kind/name, entry) or ('checkpoint', name, entry); CatalogError with hints otherwise."""
    if "/" in name:
        kind, _, short = name.partition("/")
        try:
            return "component", f"{kind}/{short}", registry.entry(kind, short)
        except registry.RegistryError as exc:
            raise CatalogError(str(exc)) from None
    hits = [(k, n, e) for k, n, e in _components() if n == name]
    if len(hits) > 1:
        raise CatalogError(f"'{name}' is ambiguous: " + ", ".join(f"{k}/{n}" for k, n, _ in hits) + "; use kind/name")
    if hits:
        k, n, e = hits[0]
        return "component", f"{k}/{n}", e
    cks = registry.index()["checkpoints"]
    if name in cks:
        return "checkpoint", name, cks[name]
    every = [n for _, n, _ in _components()] + list(cks)
    close = difflib.get_close_matches(name, every, n=3, cutoff=0.4)
    raise CatalogError(f"no component or checkpoint named '{name}'" + (f"; closest: {', '.join(close)}" if close else ""))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------- reference page


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def recipe_rows() -> list[tuple[str, str]]:
    """(recipe name, first comment line) for every recipe under :func:`zoo.core.paths.recipes_dir`."""
    root = recipes_dir()
    rows = []
    if root.is_dir():
        for path in sorted(root.rglob("*.yaml"), key=lambda p: p.relative_to(root).as_posix()):
            desc = "(no description)"
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.lstrip().startswith("#"):
                    desc = line.lstrip().lstrip("#").strip() or desc
                    break
            rows.append((path.relative_to(root).with_suffix("").as_posix(), desc))
    return rows


def render_reference() -> str:
    """The text of docs/reference.md: recipes, components by kind with signatures, checkpoints."""
    out = ["# Reference", "",
           f"Generated by `{REGENERATE}` from registry.yaml, the recipes and the component",
           f"constructors. Do not edit by hand; CI runs `{REGENERATE} --check`.", ""]
    out += ["## Recipes", ""]
    recipes = recipe_rows()
    if recipes:
        out += ["| recipe | description |", "| --- | --- |"]
        out += [f"| `{n}` | {_md(d)} |" for n, d in recipes]
    else:
        out.append("(none)")
    out.append("")
    out += ["## Components", ""]
    comps = registry.index()["components"]
    for kind in registry.KINDS:
        entries = comps.get(kind) or {}
        if not entries:
            continue
        out += [f"### {kind}", ""]
        for name in sorted(entries):
            ent = entries[name]
            out += [f"#### `{kind}/{name}`", "", _md(str(ent.get("summary", "")).strip()), "",
                    f"Import: `{ent['import']}`", ""]
            rows = signature_rows(kind, name)
            if rows:
                out += ["| arg | type | default |", "| --- | --- | --- |"]
                out += [f"| `{a}` | {('`' + _md(t) + '`') if t else ''} | "
                        f"{('`' + _md(d) + '`') if d and d != 'required' else d} |" for a, t, d in rows]
            else:
                out.append("No constructor arguments.")
            out.append("")
    out += ["## Checkpoints", ""]
    cks = registry.index()["checkpoints"]
    if cks:
        out += ["| name | component | file | licence | source |", "| --- | --- | --- | --- | --- |"]
        for n in sorted(cks):
            e = cks[n]
            out.append(f"| `{n}` | `{e.get('component', '')}` | `{e.get('file', '')}` | "
                       f"{_md(str(e.get('licence', '')))} | {_md(str(e.get('source', '')))} |")
    else:
        out.append("(none)")
    return "\n".join(out).rstrip() + "\n"


def reference_file() -> Path | None:
    """docs/reference.md of the source checkout, or None for an installed copy (it has no docs/)."""
    root = repo_root()
    return root / REFERENCE if root is not None else None


# ---------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    """Print kind / name / summary for components matching an optional kind and fnmatch pattern."""
    kind, pattern = args.kind, args.pattern
    if kind is not None and kind not in registry.KINDS and kind not in ("checkpoint", "checkpoints"):
        if pattern is not None:
            registry._check_kind(kind)  # raises with suggestions
        kind, pattern = None, kind  # a single argument that is not a kind is a pattern
    rows = []
    if kind in ("checkpoint", "checkpoints"):
        for n, e in sorted(registry.index()["checkpoints"].items()):
            rows.append(["checkpoint", n, f"{e.get('component', '?')}; licence: {e.get('licence', '?')}"])
    else:
        rows = [[k, n, str(e.get("summary", ""))] for k, n, e in _components() if kind in (None, k)]
    if pattern is not None:
        rows = [r for r in rows if fnmatch.fnmatchcase(r[1], pattern)]
    if not rows:
        print("no matching entries", file=sys.stderr)
        return 0
    print(_table(["KIND", "NAME", "SUMMARY"], rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a component's import path, summary and constructor signature, or a checkpoint entry."""
    what, full, ent = _find(args.name)
    if what == "checkpoint":
        print(f"checkpoint {full}")
        for key in ("component", "file", "source", "sha256", "licence", "recipe", "metrics"):
            print(f"  {key + ':':<11}{ent.get(key, '')}")
        local = cache_dir("checkpoints") / full / str(ent.get("file", ""))
        print(f"  {'local:':<11}{local} ({'present' if local.exists() else 'missing'})")
        return 0
    kind, name = full.split("/")
    cls_name = ent["import"].partition(":")[2]
    rows = signature_rows(kind, name)
    print(full)
    print(f"  import:    {ent['import']}")
    print(f"  summary:   {ent.get('summary', '')}")
    print(f"  signature: {signature_text(cls_name, rows)}")
    if rows:
        print(_table(["    ARG", "TYPE", "DEFAULT"], [["    " + a, t or "-", d or "-"] for a, t, d in rows]))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a checkpoint's structure and hash; exit 1 on any failure."""
    from zoo.core.hub import verify

    rep = verify(args.target)
    if rep["ok"]:
        note = "matches " + rep["expected"] if rep["expected"] else "no recorded hash to compare"
        print(f"OK {rep['path']}\n  size {rep['size']} bytes\n  sha256 {rep['sha256']} ({note})")
        return 0
    print(f"FAILED {rep['path'] or args.target}\n  {rep['error']}", file=sys.stderr)
    return 1


def cmd_docs(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) the generated reference page."""
    out = Path(args.out) if args.out else reference_file()
    if out is None:
        raise CatalogError(f"no source checkout here to hold {REFERENCE.as_posix()} (this zoo is installed at "
                           f"{Path(__file__).resolve().parents[1]}); run it from a checkout, or pass --out FILE")
    text = render_reference()
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            why = "is missing" if current is None else "is out of date"
            print(f"{out} {why}: run `{REGENERATE}` and commit the result", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    from zoo.core.atomic import atomic_open

    with atomic_open(out, "w") as fh:
        fh.write(text)
    print(f"wrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hoi-zoo", description="Browse and check the hoi-zoo registry.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="list components (or `list checkpoint`)")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(registry.KINDS)}, or checkpoint")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern on the name, e.g. 'contact*'")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("show", help="show a component or checkpoint")
    p.add_argument("name", help="kind/name, a unique bare name, or a checkpoint name")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("verify", help="verify a checkpoint file, export directory or checkpoint name")
    p.add_argument("target")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("docs", help=f"generate {REFERENCE.as_posix()}")
    p.add_argument("--check", action="store_true", help="exit 1 if the file is missing or out of date")
    p.add_argument("--out", help=f"output file (default: {REFERENCE.as_posix()} in the source checkout)")
    p.set_defaults(fn=cmd_docs)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (``[command, *args]``; default ``sys.argv[1:]``), run one command, return its exit status.

    Usage errors exit through argparse (status 2); failed lookups print ``error: ...`` and return 2.
    """
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.fn(args)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except (registry.RegistryError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
