#!/usr/bin/env python
"""Run a trained InteractVLM model on your own photos.

    python tools/infer.py recipe=interactvlm/synthetic ckpt=RUN/export image=PATH|DIR [object=NAME] [out=DIR]
                          [max_new_tokens=N] [device=cpu|cuda]

ckpt: an export directory (RUN/export; its frozen base VLM is found by path and checked by hash), a Lightning
.ckpt of the run, or a registry checkpoint name. recipe: the recipe the model was trained with (its system must
be the checkpoint's). image: one image file or a folder (its .jpg / .jpeg / .png / .bmp / .webp files, sorted).
object: the object to ask about (needed by object-wise questions, e.g. semantic contact: "Which parts of the
body touch the chair?"). Per image, under out= (default: infer/ beside the checkpoint) in a folder named after
the image:

    answer.txt     the question and the generated answer
    contact.json   {image, question, answer, closed, has_token, vertex_probabilities: [V floats] | null}
    body.glb       the body in the canonical pose coloured by contact probability (grey 0 -> red 1; trimesh)
    views.png      the input photo beside the body seen from the front, back, left and right, coloured the same

An image that cannot be read is reported and skipped (listed in out/skipped.txt; exit code 1 if any was
skipped, 2 if none could be read); an answer without a contact token gives has_token false and no mesh colours
(an empty prediction), reported on the console.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import _cli  # noqa: F401  (puts the checkout on sys.path)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
USAGE = __doc__


def _args(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        if a in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if "=" not in a:
            raise SystemExit(f"error: expected key=value, got {a!r}\n{USAGE}")
        k, v = a.split("=", 1)
        if k not in ("recipe", "ckpt", "image", "object", "out", "max_new_tokens", "device"):
            raise SystemExit(f"error: unknown argument {k!r} (recipe, ckpt, image, object, out, max_new_tokens, device)")
        out[k] = v
    for k in ("ckpt", "image"):
        if k not in out:
            raise SystemExit(f"error: {k}= is required\n{USAGE}")
    return out


def list_images(path: Path) -> list[Path]:
    """The image files to run on: ``path`` itself, or the image files of a folder (sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"error: {path} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise SystemExit(f"error: image not found: {path}")
    return [path]


def read_image(path: Path):
    """The image as a PIL RGB image (EXIF orientation applied); raises OSError / ValueError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise OSError(f"{path}: cannot be decoded as an image ({exc})") from None


def load_system(args: dict[str, str]):
    """The trained system from ckpt=, checked against recipe= when given."""
    from zoo.core import hub
    from zoo.core import recipe as R

    system = hub.load(args["ckpt"])
    if args.get("recipe"):
        rec = R.load(args["recipe"])
        want = rec["system"]["name"]
        have = getattr(system, "_zoo_name", type(system).__name__)
        if want != have:
            raise SystemExit(f"error: {args['ckpt']} holds a '{have}' system, but recipe {args['recipe']} trains "
                             f"'{want}'")
    if not hasattr(system, "answer_images"):
        raise SystemExit(f"error: {args['ckpt']} holds a {type(system).__name__}, which does not answer questions "
                         f"about photos (tools/infer.py runs VLM systems such as interactvlm)")
    if args.get("max_new_tokens"):
        system.apply_eval_settings({"max_new_tokens": int(args["max_new_tokens"])})
    return system


def write_outputs(system, image, path: Path, res: dict, out: Path) -> Path:
    """answer.txt, contact.json, body.glb and views.png for one image; returns its folder."""
    import numpy as np
    import trimesh

    from zoo.core.atomic import atomic_path, atomic_write_image, atomic_write_text
    from zoo.render.viz import contact_colors, contact_views_image

    folder = out / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    scores = res["scores"]
    atomic_write_text(folder / "answer.txt", f"Q: {res['question']}\nA: {res['answer']}\n")
    doc = {"image": str(path), "question": res["question"], "answer": res["answer"], "closed": res["closed"],
           "has_token": scores is not None,
           "vertex_probabilities": None if scores is None else [round(float(s), 6) for s in scores]}
    atomic_write_text(folder / "contact.json", json.dumps(doc))
    verts, faces = system.human.surface.canonical()
    vals = scores if scores is not None else np.zeros(verts.shape[0], np.float32)
    colors = (contact_colors(vals).numpy() * 255).round().astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=verts.detach().cpu().numpy(), faces=faces.detach().cpu().numpy(),
                           vertex_colors=np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], 1),
                           process=False)
    with atomic_path(folder / "body.glb") as tmp:
        tmp.write_bytes(trimesh.exchange.gltf.export_glb(mesh))
    size = 256
    grid = contact_views_image(verts, faces, vals, views=4, size=size,
                               title=res["answer"] if scores is not None else f"{res['answer']} (no contact token)")
    photo = np.asarray(image.resize((int(round(image.width * grid.shape[0] / image.height)), grid.shape[0])))
    atomic_write_image(folder / "views.png", np.concatenate([photo, grid], axis=1))
    return folder


def main(argv: list[str]) -> int:
    """Run the model on every image; returns the exit code (see the module docstring)."""
    args = _args(argv)
    import torch
    from tqdm import tqdm

    images = list_images(Path(args["image"]))
    system = load_system(args)
    device = args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    system = system.to(device).eval()
    if system.human is None:
        raise SystemExit("error: this model has no human branch; tools/infer.py writes body contact (object-only "
                         "models need the object's point cloud)")
    ck = Path(args["ckpt"])
    out = Path(args.get("out") or ((ck if ck.is_dir() else ck.parent) / "infer"))
    out.mkdir(parents=True, exist_ok=True)
    task = system.templates[system.task_of["human"]]
    if task.object_wise and not args.get("object"):
        raise SystemExit(f"error: this model asks about an object ('{task.questions[0]}'); give object=NAME")
    skipped, empty = [], []
    for path in tqdm(images, desc="infer", unit="image", disable=len(images) < 2):
        try:
            image = read_image(path)
        except OSError as exc:
            skipped.append(str(exc))
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
            continue
        res = system.answer_images([image], [args.get("object")], branch="human")[0]
        folder = write_outputs(system, image, path, res, out)
        if res["scores"] is None:
            empty.append(path.name)
            tqdm.write(f"{path.name}: the answer has no contact token (empty prediction): {res['answer']!r}")
        else:
            tqdm.write(f"{path.name}: {res['answer']}  ->  {folder}")
    if skipped:
        from zoo.core.atomic import atomic_write_text

        atomic_write_text(out / "skipped.txt", "\n".join(skipped) + "\n")
    done = len(images) - len(skipped)
    print(f"[infer] {done} image(s) written to {out}; {len(skipped)} skipped (unreadable"
          f"{', see ' + str(out / 'skipped.txt') if skipped else ''}); {len(empty)} without a contact token")
    if done == 0:
        return 2
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
