#!/usr/bin/env python
"""Fitting benchmarks (`make bench` includes them): one hoi_recon fit and PHOSA's per-image time on CPU.

* one ``hoi_recon`` fit as its recipe runs it (ICP + 250 Adam steps, 128^2 soft silhouettes) on a synthetic
  scene whose object is a 2048-face cylinder (the scene's library bottle swapped for it, same pose);
* PHOSA per image with its default candidate count (2000 random rotations x 50 Adam steps, chunks of 250, at
  the recipe's 128^2): one chunk of 250 candidates is timed for 5 steps and scaled to 50 steps and the 8 chunks
  (the steps and chunks are alike), plus the 400 joint steps timed in full. Printed as the estimate it is.

Run alone: `python tools/bench_fitting.py`; `bench_fitting()` returns {name, value, unit, target} rows.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import _cli  # noqa: F401


def _scene(tmp: Path) -> dict:
    import torch
    import trimesh

    from zoo.data.scenes import HOIScenes

    dm = HOIScenes(root=str(tmp / "scenes"), synthesize={"n": 1, "seed": 3, "image_size": 256})
    dm.setup("test")
    sample = next(iter(dm.test_dataloader()))["samples"][0]
    cyl = trimesh.creation.cylinder(radius=0.04, height=0.26, sections=512)  # 2048 faces, axis along z
    cyl.apply_transform(trimesh.transformations.rotation_matrix(-1.5707963, [1, 0, 0]))
    sample["object_verts"] = torch.tensor(cyl.vertices, dtype=torch.float32)
    sample["object_faces"] = torch.tensor(cyl.faces, dtype=torch.long)
    sample["gt_object_contact"] = torch.ones(len(cyl.vertices))
    return sample


def bench_fitting(threads: int = 2) -> list[dict]:
    """Seconds of one hoi_recon fit and the estimated seconds of PHOSA per image (module docstring)."""
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sample = _scene(Path(tmp))
            rec = R.load("hoi_recon/gt_contacts")
            system = registry.build("system", rec["system"])
            t0 = time.perf_counter()
            system.fit_samples([dict(sample)])
            rows.append({"name": "hoi_recon fit (ICP + 250 steps, 128^2, 2048 faces)",
                         "value": time.perf_counter() - t0, "unit": "s", "target": None})
            rec = R.load("phosa/default")
            search = dict(rec["system"]["search"])
            chunks = -(-int(search["candidates"]) // int(search["batch"]))
            measured = 5
            one = registry.build("system", dict(rec["system"]) | {
                "search": search | {"candidates": int(search["batch"]), "steps": measured},
                "stages": [{"name": "joint", "steps": 0}]})
            t0 = time.perf_counter()
            one.fit_samples([dict(sample)])
            chunk = (time.perf_counter() - t0) * int(search["steps"]) / measured
            joint = registry.build("system", dict(rec["system"]) | {"search": {"candidates": 1}})
            t0 = time.perf_counter()
            joint.fit_samples([dict(sample)])
            steps = time.perf_counter() - t0
            rows += [
                {"name": f"phosa search: one chunk ({search['batch']} x {search['steps']} steps, est.)", "value": chunk,
                 "unit": "s", "target": None},
                {"name": "phosa joint stage (400 steps)", "value": steps, "unit": "s", "target": None},
                {"name": f"phosa per image, {search['candidates']} candidates (est.)", "value": chunk * chunks + steps,
                 "unit": "s", "target": None},
            ]
    finally:
        torch.set_num_threads(prev)
    return rows


def main() -> int:
    for r in bench_fitting():
        print(f"{r['name']:55s} {r['value']:10.3f} {r['unit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
