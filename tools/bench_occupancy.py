#!/usr/bin/env python
"""Body-occupancy benchmark: query points per second of zoo.body.occupancy.BodyOccupancy against a posed
synthetic SMPL-X body (10475 vertices, 20946 faces), for the two methods, with 80k points per query as
InterFusion's geometric losses sample them each step (half near the body surface, vertices + 5 cm gaussian
noise, half uniform in the fields' cube; zoo.models.field.constraints.sample_geo_points).

Rows: points/s of ``winding`` (fast winding number + AABB distance, the default), of ``winding`` without the
distance (what L^O_geo needs), of ``signed_distance`` (pseudonormal sign), and the per-body build time of the
winding method's hierarchies (once per anchor body). Target: 80k points within a second, i.e. >= 80k points/s.

Run: `python tools/bench_occupancy.py` (prints the rows; best of 3 queries after a warm-up, on 2 threads);
`bench_occupancy()` returns them as {name, value, unit, target} dicts like tools/bench.py's figures.
"""
from __future__ import annotations

import tempfile
import time

import _cli  # noqa: F401


def _posed_smplx(model_dir: str):
    """(vertices (V, 3), faces (F, 3)) of the synthetic SMPL-X body sitting (hips and knees bent 90 degrees,
    arms lowered), so the body has the self-contacts and concavities a posed anchor has."""
    import math

    import torch

    from zoo.body.model import BodyModel

    body = BodyModel(model_dir, model_type="smplx", synthesize=True)
    pose = torch.zeros(1, 63)
    # SMPL-X body joints 1..21 (pose index = joint - 1): 1/2 hips, 4/5 knees, 16/17 shoulders.
    for joint, axis, angle in ((1, 0, -90), (2, 0, -90), (4, 0, 90), (5, 0, 90), (16, 2, -60), (17, 2, 60)):
        pose[0, 3 * (joint - 1) + axis] = math.radians(angle)
    with torch.no_grad():
        v = body(body_pose=pose)["vertices"][0]
    return v.numpy(), body.faces.numpy()


def bench_occupancy(n_points: int = 80_000, threads: int = 2, repeats: int = 3,
                    model_dir: str | None = None) -> list[dict]:
    """Points/s of BodyOccupancy.query (winding, winding without distance, signed_distance) and the winding
    method's build time, against the posed synthetic SMPL-X body (written to a temporary folder unless
    ``model_dir`` holds one)."""
    import torch

    from zoo.body.occupancy import BodyOccupancy
    from zoo.models.field.constraints import sample_geo_points

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            verts, faces = _posed_smplx(model_dir or tmp)
        v = torch.as_tensor(verts, dtype=torch.float32)
        bound = float(v.abs().max()) + 0.1
        points = sample_geo_points(v, n_points // 2, n_points - n_points // 2, bound=bound, sigma=0.05,
                                   generator=torch.Generator().manual_seed(0))

        def best(fn) -> float:
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        rows = []
        build = best(lambda: BodyOccupancy("smplx", "winding").set_body(verts, faces))
        rows.append({"name": "occupancy_smplx_winding_build_ms", "value": 1e3 * build, "unit": "ms/body",
                     "target": None})
        for label, method, kwargs in (("winding", "winding", {}), ("winding_inside_only", "winding",
                                      {"distance": False}), ("signed_distance", "signed_distance", {})):
            occ = BodyOccupancy("smplx", method).set_body(verts, faces)
            s = best(lambda occ=occ, kwargs=kwargs: occ.query(points, **kwargs))
            rows.append({"name": f"occupancy_smplx_{label}_points_per_s", "value": n_points / s, "unit": "points/s",
                         "target": ">= 80000" if label == "winding" else None})
    finally:
        torch.set_num_threads(prev)
    return rows


def main() -> int:
    """Print the benchmark rows."""
    rows = bench_occupancy()
    print(f"{'name':45s} {'value':>12s} {'unit':>10s}  target")
    for r in rows:
        print(f"{r['name']:45s} {r['value']:12.4g} {r['unit']:>10s}  {r['target'] or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
