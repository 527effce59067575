#!/usr/bin/env python
"""Place the object next to the body for every scene folder: joint human-object reconstruction.

    python tools/reconstruct.py recipe=hoi_recon/gt_contacts|hoi_recon/interactvlm|phosa/default input=DIR
                                [out=DIR] [key=value ...]

input: one scene folder or a folder of them (docs/reconstruction_inputs.md: image, human / object masks,
body.npz, object.obj or object.json, optional contact_*.npy and gt.json). key=value: recipe overrides, e.g.
system.stages=[{name: fit, steps: 100}] or system.silhouette.image_size=256. Per scene, under out= (default:
runs/reconstruct/<recipe>/<time>/) in a folder named after the scene:

    scene.glb     body and placed object (contacts shaded red where known)
    overlay.png   the photo | the scene rendered with the photo's camera over it
    views.png     the scene from the side and from above
    result.json   object rotation R, translation t (camera frame, metres), scale, category, final objective terms

A progress bar runs over the scenes (and one over each scene's optimisation steps). A scene that cannot be
read (a missing or empty mask, a mask of another size than the image, a mesh that does not load, a body file of
the wrong model or vertex count, a contact file of the wrong length) is reported with the file it names and
skipped; the others continue (exit code 1 if any was skipped, 2 if none could be reconstructed).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import _cli  # noqa: F401  (puts the checkout on sys.path)

USAGE = __doc__


def _args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    mine, overrides = {}, []
    for a in argv:
        if a in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if "=" not in a:
            raise SystemExit(f"error: expected key=value, got {a!r}\n{USAGE}")
        k, v = a.split("=", 1)
        if k in ("recipe", "input", "out"):
            mine[k] = v
        else:
            overrides.append(a)
    for k in ("recipe", "input"):
        if k not in mine:
            raise SystemExit(f"error: {k}= is required\n{USAGE}")
    return mine, overrides


def main(argv: list[str]) -> int:
    """Reconstruct every scene of input=; returns the exit code (module docstring)."""
    args, overrides = _args(argv)
    import torch
    from tqdm import tqdm

    from zoo.core import recipe as R
    from zoo.core import registry
    from zoo.core.batch import DataError
    from zoo.core.recipe import RecipeError
    from zoo.core.run import apply_threads
    from zoo.systems.scene_io import write_scene

    src = Path(args["input"])
    if not src.exists():
        raise SystemExit(f"error: input not found: {src}")
    try:
        rec = R.load(args["recipe"], [f"data.root={src.resolve()}", "data.synthesize=null", *overrides])
    except RecipeError as e:
        raise SystemExit(f"error: {e}") from None
    system_cls = registry.lookup("system", rec["system"]["name"])
    if getattr(system_cls, "learned", True):
        raise SystemExit(f"error: recipe {args['recipe']} builds '{rec['system']['name']}', a learned system; "
                         f"tools/reconstruct.py runs fitting systems (phosa, hoi_recon)")
    apply_threads(rec)
    torch.manual_seed(int(rec.get("seed", 0)))
    system = registry.build("system", rec["system"])
    system.hparams["progress"] = True
    data = registry.build("datamodule", rec["data"])
    try:
        data.setup("predict")
    except (DataError, FileNotFoundError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.get("out") or Path(rec["run"]["dir"]) / "reconstruct" / args["recipe"] / time.strftime(
        "%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    skipped = [f"{folder}: {why}" for folder, why in getattr(data, "skipped", [])]
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    done = 0
    loader = data.predict_dataloader()
    for batch in tqdm(loader, desc="scenes", unit="scene", position=0):
        try:
            results, _ = system.fit_samples(batch["samples"])
        except (ValueError, FloatingPointError) as e:
            names = ", ".join(batch["name"])
            skipped.append(f"{names}: {e}")
            tqdm.write(f"skipped: {names}: {e}", file=sys.stderr)
            continue
        for r, s in zip(results, batch["samples"], strict=True):
            folder = write_scene(out, r, s)
            done += 1
            obj = r["objective"]
            tqdm.write(f"{s['name']}: {s.get('category')} at t = {[round(float(x), 3) for x in r['t']]} m, scale "
                       f"{float(r['scale']):.3f}, objective {obj.get('loss', float('nan')):.4f}  ->  {folder}")
    if skipped:
        from zoo.core.atomic import atomic_write_text

        atomic_write_text(out / "skipped.txt", "\n".join(skipped) + "\n")
    print(f"[reconstruct] {done} scene(s) written to {out}; {len(skipped)} skipped"
          f"{' (see ' + str(out / 'skipped.txt') + ')' if skipped else ''}")
    if done == 0:
        return 2
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
