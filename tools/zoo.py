#!/usr/bin/env python
"""Browse and check the zoo: list / show components, verify checkpoints, generate the reference docs.

    python tools/zoo.py list [KIND] [PATTERN]     table of registered components (fnmatch pattern)
    python tools/zoo.py show NAME                 kind/name or a unique bare name, or a checkpoint name
    python tools/zoo.py verify NAME|PATH          integrity of a checkpoint (exit 1 on failure)
    python tools/zoo.py docs [--check] [--out F]  write docs/reference.md (--check: exit 1 if stale)

``list`` and ``show`` never import torch: signatures are read from the source
with ``ast``, so they answer instantly.
"""
from __future__ import annotations

import sys
from pathlib import Path

_TOOLS = Path(__file__).resolve().parent
_ROOT = _TOOLS.parent

if __name__ == "zoo":
    # Another script in tools/ ran `import zoo` with tools/ first on sys.path and
    # found this file instead of the package. Step aside: drop tools/ from the
    # path and put the real package in sys.modules, which the import statement
    # then returns.
    import importlib

    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TOOLS]
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    del sys.modules["zoo"]
    sys.modules["zoo"] = importlib.import_module("zoo")
else:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TOOLS]
    sys.path.insert(0, str(_ROOT))  # run from a checkout without install

    import argparse
    import ast
    import difflib
    import fnmatch
    import importlib.util
    from typing import Any

    from zoo.core import registry

    DOCS_FILE = _ROOT / "docs" / "reference.md"

    # ------------------------------------------------------------------ signatures

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

    def _rows_from_ast(fn: ast.FunctionDef) -> list[tuple[str, str, str]]:
        a = fn.args
        positional = a.posonlyargs + a.args
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        rows = []
        for i, (arg, default) in enumerate(zip(positional, defaults)):
            if i == 0 and arg.arg in ("self", "cls"):
                continue
            rows.append((arg.arg, ast.unparse(arg.annotation) if arg.annotation else "",
                         ast.unparse(default) if default is not None else "required"))
        if a.vararg:
            rows.append(("*" + a.vararg.arg, ast.unparse(a.vararg.annotation) if a.vararg.annotation else "", ""))
        for arg, default in zip(a.kwonlyargs, a.kw_defaults):
            rows.append((arg.arg, ast.unparse(arg.annotation) if arg.annotation else "",
                         ast.unparse(default) if default is not None else "required"))
        if a.kwarg:
            rows.append(("**" + a.kwarg.arg, ast.unparse(a.kwarg.annotation) if a.kwarg.annotation else "", ""))
        return rows

    def _ast_signature(path: Path, cls_name: str) -> list[tuple[str, str, str]] | None:
        """Constructor rows (arg, annotation, default) read from source; None if it needs importing."""
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

    def _inspect_signature(kind: str, name: str) -> list[tuple[str, str, str]]:
        """Fallback that imports the component (may import torch)."""
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

    def signature_rows(kind: str, name: str) -> list[tuple[str, str, str]]:
        """(arg, type, default) for a component's constructor; 'required' marks no default."""
        module, _, attr = registry.entry(kind, name)["import"].partition(":")
        path = _module_file(module)
        rows = _ast_signature(path, attr) if path is not None else None
        return rows if rows is not None else _inspect_signature(kind, name)

    def _signature_text(cls_name: str, rows: list[tuple[str, str, str]]) -> str:
        parts = []
        for arg, ann, default in rows:
            text = arg + (f": {ann}" if ann else "")
            if default and default != "required":
                text += f" = {default}" if ann else f"={default}"
            parts.append(text)
        return f"{cls_name}({', '.join(parts)})"

    # ------------------------------------------------------------------ lookups

    def _components() -> list[tuple[str, str, dict]]:
        comps = registry.index()["components"]
        return [(k, n, e) for k in registry.KINDS for n, e in sorted((comps.get(k) or {}).items())]

    def _find(name: str) -> tuple[str, str, Any]:
        """('component', kind/name, entry) or ('checkpoint', name, entry); SystemExit(2) with hints otherwise."""
        if "/" in name:
            kind, _, short = name.partition("/")
            try:
                return "component", f"{kind}/{short}", registry.entry(kind, short)
            except registry.RegistryError as exc:
                _fail(str(exc))
        hits = [(k, n, e) for k, n, e in _components() if n == name]
        if len(hits) > 1:
            _fail(f"'{name}' is ambiguous: " + ", ".join(f"{k}/{n}" for k, n, _ in hits) + "; use kind/name")
        if hits:
            k, n, e = hits[0]
            return "component", f"{k}/{n}", e
        cks = registry.index()["checkpoints"]
        if name in cks:
            return "checkpoint", name, cks[name]
        every = [n for _, n, _ in _components()] + list(cks)
        close = difflib.get_close_matches(name, every, n=3, cutoff=0.4)
        _fail(f"no component or checkpoint named '{name}'" + (f"; closest: {', '.join(close)}" if close else ""))
        raise AssertionError  # unreachable

    def _fail(msg: str, code: int = 2) -> None:
        print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(code)

    def _table(headers: list[str], rows: list[list[str]]) -> str:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)

    # ------------------------------------------------------------------ commands

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
            from zoo.core.hub import zoo_home

            local = zoo_home() / "checkpoints" / full / str(ent.get("file", ""))
            print(f"  {'local:':<11}{local} ({'present' if local.exists() else 'missing'})")
            return 0
        kind, name = full.split("/")
        cls_name = ent["import"].partition(":")[2]
        rows = signature_rows(kind, name)
        print(full)
        print(f"  import:    {ent['import']}")
        print(f"  summary:   {ent.get('summary', '')}")
        print(f"  signature: {_signature_text(cls_name, rows)}")
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

    def _md(text: str) -> str:
        return text.replace("|", "\\|")

    def _recipe_rows() -> list[tuple[str, str]]:
        from zoo.core.recipe import recipes_root

        root = recipes_root()
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
               "Generated by `python tools/zoo.py docs` from registry.yaml, the recipes and the component",
               "constructors. Do not edit by hand; CI runs `python tools/zoo.py docs --check`.", ""]
        out += ["## Recipes", ""]
        recipes = _recipe_rows()
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

    def cmd_docs(args: argparse.Namespace) -> int:
        """Write (or with --check, compare) the generated reference page."""
        out = Path(args.out) if args.out else DOCS_FILE
        text = render_reference()
        if args.check:
            current = out.read_text(encoding="utf-8") if out.is_file() else None
            if current != text:
                why = "is missing" if current is None else "is out of date"
                print(f"{out} {why}: run `python tools/zoo.py docs` and commit the result", file=sys.stderr)
                return 1
            print(f"{out} is up to date")
            return 0
        from zoo.core.atomic import atomic_open

        with atomic_open(out, "w") as fh:
            fh.write(text)
        print(f"wrote {out}")
        return 0

    def main(argv: list[str] | None = None) -> int:
        """Entry point: parse ``argv`` and run one sub-command; returns the exit status."""
        ap = argparse.ArgumentParser(prog="zoo.py", description="Browse and check the hoi-zoo registry.")
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
        p = sub.add_parser("docs", help="generate docs/reference.md")
        p.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
        p.add_argument("--out", help=f"output file (default {DOCS_FILE})")
        p.set_defaults(fn=cmd_docs)
        args = ap.parse_args(argv)
        try:
            return args.fn(args)
        except (registry.RegistryError, FileNotFoundError, ImportError) as exc:
            _fail(str(exc))
        return 2

    if __name__ == "__main__":
        raise SystemExit(main())
