#!/usr/bin/env python
"""Soft-silhouette benchmark: seconds per forward + backward step of zoo.render.silhouette's cpu_fast backend
vs. pytorch3d's CPU rasterizer + SoftSilhouetteShader at 128 x 128 (sigma 1e-4, 50 faces per pixel), on a
1280-face icosphere and a 2048-face cylinder, both timed in one run on 2 threads (target ratio >= 10x).

Run: `python tools/bench_silhouette.py` (prints the rows; best of 10 cpu_fast steps after a warm-up, best
of 2 pytorch3d steps); `bench_silhouette()` returns them as
{name, value, unit, target} dicts like tools/bench.py's figures.
"""
from __future__ import annotations

import time

import _cli  # noqa: F401


def bench_silhouette(size: int = 128, threads: int = 2, steps_fast: int = 10, steps_p3d: int = 2) -> list[dict]:
    """Forward+backward seconds per step, cpu_fast and pytorch3d, and their ratio, for two meshes."""
    import torch
    import trimesh

    from zoo.render.cameras import intrinsics
    from zoo.render.silhouette import soft_silhouette

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    K = intrinsics(1.2 * size, 1.2 * size, size / 2, size / 2)
    meshes = {
        "icosphere1280": trimesh.creation.icosphere(subdivisions=3, radius=0.5),
        "cylinder2048": trimesh.creation.cylinder(radius=0.4, height=1.0, sections=512),
    }
    target = torch.zeros(1, size, size)
    target[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    rows = []
    try:
        for label, m in meshes.items():
            v = torch.tensor(m.vertices, dtype=torch.float32)
            v = v @ torch.tensor([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]]).T + torch.tensor([0.05, -0.03, 2.5])
            f = torch.tensor(m.faces, dtype=torch.long)

            def step(backend: str, v: torch.Tensor = v, f: torch.Tensor = f) -> None:
                vv = v.clone().requires_grad_(True)
                s = soft_silhouette(vv, f, K, size, sigma=1e-4, backend=backend, faces_per_pixel=50)
                loss = 1 - (s * target).sum() / (s + target - s * target).sum()
                loss.backward()

            def timed(backend: str, n: int, warm_up: bool) -> float:
                if warm_up:
                    step(backend)
                best = float("inf")
                for _ in range(n):
                    t = time.perf_counter()
                    step(backend)
                    best = min(best, time.perf_counter() - t)
                return best

            fast = timed("cpu_fast", steps_fast, True)
            p3d = timed("pytorch3d", steps_p3d, False)  # seconds per step: a warm-up changes nothing that matters
            rows += [
                {"name": f"silhouette_{label}_{size}_cpu_fast_s", "value": fast, "unit": "s/step", "target": None},
                {"name": f"silhouette_{label}_{size}_pytorch3d_s", "value": p3d, "unit": "s/step", "target": None},
                {"name": f"silhouette_{label}_{size}_speedup", "value": p3d / fast, "unit": "x", "target": ">= 10"},
            ]
    finally:
        torch.set_num_threads(prev)
    return rows


def main() -> int:
    """Print the benchmark rows."""
    rows = bench_silhouette()
    print(f"{'name':45s} {'value':>12s} {'unit':>10s}  target")
    for r in rows:
        print(f"{r['name']:45s} {r['value']:12.4g} {r['unit']:>10s}  {r['target'] or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
