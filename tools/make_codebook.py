#!/usr/bin/env python
"""Build a pose codebook (InterFusion's anchor poses, or the AvatarCLIP baseline) and export it.

    python tools/make_codebook.py poses=FILE|DIR|synthetic[:N] out=DIR [prior=interfusion_codebook|avatarclip_retrieval]
        [clusters=K] [vposer.weights=PATH] [clip.path=DIR | clip.variant=tiny] [body_model.name=smplx ...]
        [pick=best|sample|index|judge judge.name=llava judge.path=DIR] [image_size=224] [seed=0] [...]

poses: an AMASS-style npz (``poses`` (T, 156) / (T, 165)), a DAMON-format npz (``pose`` (N, 72)), a
(N, 63) / (N, 21, 3) npy, a folder of those, or ``synthetic[:N]`` (zoo.data.synthetic.poses, N = 256 by
default, seeded by ``seed``). Every other key=value is a constructor argument of the prior (dotted keys
reach into the sub-recipes). Without a judge the pick defaults to ``best``. A progress bar runs over the
renders; the build time per 1k poses is printed. The export loads with ``zoo.core.hub.load(out)``.
Exit codes: 0 written, 2 bad arguments or input.
"""
from __future__ import annotations

import sys
import time

import _cli  # noqa: F401  (puts the checkout on sys.path)

USAGE = __doc__
PRIORS = ("interfusion_codebook", "avatarclip_retrieval")


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_poses(spec: str, seed: int = 0):
    """(N, 21, 3) float32 poses of a ``poses=`` value (a path or ``synthetic[:N]``)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from zoo.data.synthetic.poses import synthetic_pose_set

        n = spec.partition(":")[2] or "256"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"poses={spec}: expected synthetic or synthetic:N with N >= 1")
        return synthetic_pose_set(int(n), seed)[0]
    from zoo.models.pose.posesets import read_pose_set

    return read_pose_set(spec)


def main(argv: list[str]) -> int:
    """Build and export; returns the exit code (module docstring)."""
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from zoo.core.recipe import RecipeError, parse_overrides

    try:
        args = parse_overrides(list(argv))
    except RecipeError as e:
        print(f"error: {e}\n{USAGE}", file=sys.stderr)
        return 2
    missing = [k for k in ("poses", "out") if k not in args]
    if missing:
        print(f"error: {' and '.join(k + '=' for k in missing)} required\n{USAGE}", file=sys.stderr)
        return 2
    spec, out, prior = str(args.pop("poses")), str(args.pop("out")), str(args.pop("prior", PRIORS[0]))
    if prior not in PRIORS:
        print(f"error: prior={prior}: expected one of {', '.join(PRIORS)}", file=sys.stderr)
        return 2
    cfg = _deep_merge({"pick": "judge" if args.get("judge") else "best"}, args)
    try:
        poses = load_poses(spec, int(cfg.get("seed", 0)))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from zoo.core import hub, registry

    t0 = time.perf_counter()
    try:
        model = registry.build("pose_prior", {"name": prior, **cfg})
    except (TypeError, ValueError, FileNotFoundError) as e:
        print(f"error: pose_prior/{prior}: {e}", file=sys.stderr)
        return 2
    t_setup = time.perf_counter() - t0
    model.build(poses, progress=True)
    t_build = time.perf_counter() - t0 - t_setup
    path = hub.export(model, out, extra={"poses": spec, "num_poses": int(poses.shape[0]),
                                         "build_seconds": round(t_build, 3)})
    bs = model.build_seconds
    print(f"built {model.size} key poses from {len(poses)} poses in {t_build:.1f} s "
          f"({t_build / len(poses) * 1000:.1f} s per 1k poses; selection {bs['select']:.1f} s, render + CLIP "
          f"{bs['render_clip'] / max(model.size, 1) * 1000:.1f} s per 1k key poses; models loaded in {t_setup:.1f} s)")
    print(f"wrote {path} (load with zoo.core.hub.load)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
