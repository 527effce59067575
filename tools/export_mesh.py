#!/usr/bin/env python
"""Extract a text-to-3D result as a coloured mesh: marching cubes on the field's density, vertex colours from
its albedo, written as .glb (trimesh).

    python tools/export_mesh.py ckpt=RUN/export|RUN/checkpoints/last.ckpt [out=mesh.glb] [resolution=128]
                                [threshold=T]

ckpt: a dreamfusion (or any system with a ``field``) export directory or Lightning checkpoint. threshold: the
density level of the surface (default: zoo.models.field.mesh's). A field with no density above the threshold
is an error naming the threshold and the largest density found (exit 2).
"""
from __future__ import annotations

import sys
from pathlib import Path

import _cli  # noqa: F401  (puts the checkout on sys.path)

USAGE = __doc__


def main(argv: list[str]) -> int:
    """Write the mesh; returns the exit code (module docstring)."""
    args: dict[str, str] = {}
    for a in argv:
        if a in ("-h", "--help"):
            print(USAGE)
            return 0
        if "=" not in a:
            print(f"error: expected key=value, got {a!r}\n{USAGE}", file=sys.stderr)
            return 2
        k, v = a.split("=", 1)
        if k not in ("ckpt", "out", "resolution", "threshold"):
            print(f"error: unknown argument {k!r} (ckpt, out, resolution, threshold)\n{USAGE}", file=sys.stderr)
            return 2
        args[k] = v
    if "ckpt" not in args:
        print(f"error: ckpt= is required\n{USAGE}", file=sys.stderr)
        return 2
    from zoo.core import hub
    from zoo.models.field.mesh import export_glb, extract_mesh

    system = hub.load(args["ckpt"])
    field = getattr(system, "field", None)
    if field is None:
        print(f"error: {args['ckpt']} is a {type(system).__name__}, which has no field to extract", file=sys.stderr)
        return 2
    out = Path(args.get("out", "mesh.glb"))
    try:
        mesh = extract_mesh(field, resolution=int(args.get("resolution", 128)),
                            threshold=float(args["threshold"]) if "threshold" in args else None)
    except ValueError as e:
        print(f"error: {args['ckpt']}: {e}", file=sys.stderr)
        return 2
    export_glb(mesh, out)
    print(f"wrote {out} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, watertight: {mesh.is_watertight})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
