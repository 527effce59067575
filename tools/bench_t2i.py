#!/usr/bin/env python
"""Text-to-3D benchmark on the CPU: the pure-PyTorch hash-grid NeRF field through the volume renderer, eager vs.
torch.compile (training rays/s: forward + backward of a 4096-ray batch at 64 samples per ray, threestudio's
default field size: 16 levels x 2 features, 2^19 table); the activation memory one 64 x 64 training render
keeps for its backward pass (bytes of the tensors autograd saves, counted with saved_tensors_hooks: the
device-independent part of peak memory), at 64 samples per ray and with analytic normals; one
``dreamfusion/tiny`` training step (render + tiny SD SDS + regularisers + backward + Adam); one ``interfusion/tiny``
step; an ``interfusion_codebook`` build per 1k poses; body-occupancy queries/s (tools/bench_occupancy.py).

Run: `python tools/bench_t2i.py` (prints the rows); `bench_t2i()` returns them as {name, value, unit, target}
dicts like tools/bench.py's figures.
"""
from __future__ import annotations

import time

import _cli  # noqa: F401


def _best(fn, n: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _rays(n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    o = torch.tensor([0.0, 0.3, 2.5]).expand(n, 3).contiguous()
    d = torch.nn.functional.normalize(-o + 0.6 * (torch.rand(n, 3, generator=g) - 0.5), dim=-1)
    return o, d


def bench_field_renderer(threads: int = 2, rays: int = 4096, samples: int = 64) -> list[dict]:
    """Training rays/s (forward + backward) of hash_nerf + nerf_volume, eager and compiled."""
    import torch

    from zoo.core import registry

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        o, d = _rays(rays)
        renderer = registry.build("renderer", {"name": "nerf_volume", "num_samples": samples,
                                               "background": {"kind": "fixed", "color": [1, 1, 1]}})
        renderer.train()
        rate = {}
        for label, compile_ in (("eager", False), ("compiled", True)):
            torch.manual_seed(0)
            field = registry.build("field", {"name": "hash_nerf", "bound": 1.0, "compile": compile_, "occupancy": None})
            field.train()

            def step(field=field) -> None:
                out = renderer(field, o, d)
                out["rgb"].mean().backward()

            try:
                sec = _best(step, 3, warm=2)
            except Exception as e:  # noqa: BLE001 - a compile failure is reported, not fatal
                print(f"note: {label} field step failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            rate[label] = rays / sec
            rows.append({"name": f"hash_nerf_{label}_train_rays_per_s", "value": rays / sec, "unit": "rays/s",
                         "target": None})
        if len(rate) == 2:
            rows.append({"name": "hash_nerf_compiled_vs_eager", "value": rate["compiled"] / rate["eager"],
                         "unit": "x", "target": None})
    finally:
        torch.set_num_threads(prev)
    return rows


def bench_render_memory(size: int = 64, samples: int = 64) -> list[dict]:
    """MiB of activations one size x size training render (hash_nerf, normals on) saves for backward."""
    import torch

    from zoo.core import registry

    torch.manual_seed(0)
    field = registry.build("field", {"name": "hash_nerf", "bound": 1.0, "occupancy": None}).train()
    renderer = registry.build("renderer", {"name": "nerf_volume", "num_samples": samples,
                                           "background": {"kind": "learned"}}).train()
    o, d = _rays(size * size)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        # count each storage once (views of one tensor share it)
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except Exception:  # noqa: BLE001 - e.g. a tensor without storage
            pass
        return t

    rows = []
    for with_normal in (False, True):
        seen.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = renderer(field, o, d, with_normal=with_normal)
        mib = sum(seen.values()) / 2**20
        del out
        tag = "with_normals" if with_normal else "no_normals"
        rows.append({"name": f"render_{size}x{size}_{samples}spp_{tag}_saved_MiB", "value": mib, "unit": "MiB",
                     "target": None})
    return rows


def _train_step_seconds(recipe: str, threads: int, steps: int) -> float:
    """Best seconds per training step of ``recipe``'s system in a plain loop (step, backward, optimiser step)."""
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rec = R.load(recipe)
        system = registry.build("system", rec["system"])
        system.configure_model()
        dm = registry.build("datamodule", rec["data"])
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        opt = system.configure_optimizers()
        opt = opt["optimizer"] if isinstance(opt, dict) else opt
        system.train()

        def step() -> None:
            losses, _ = system.step(batch, "train")
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()

        return _best(step, steps, warm=2)
    finally:
        torch.set_num_threads(prev)


def bench_dreamfusion_step(threads: int = 2, steps: int = 5) -> list[dict]:
    """Seconds per dreamfusion/tiny training step (render, guidance, regularisers, backward, Adam)."""
    sec = _train_step_seconds("dreamfusion/tiny", threads, steps)
    return [{"name": "dreamfusion_tiny_train_step_s", "value": sec, "unit": "s/step", "target": None}]


def bench_interfusion_step(threads: int = 2, steps: int = 5) -> list[dict]:
    """Seconds per interfusion/tiny training step (four renders and SDS terms, geometry terms, backward, Adam)."""
    sec = _train_step_seconds("interfusion/tiny", threads, steps)
    return [{"name": "interfusion_tiny_train_step_s", "value": sec, "unit": "s/step", "target": None}]


def bench_codebook(n: int = 256, clusters: int = 64, image_size: int = 64) -> list[dict]:
    """Seconds per 1k poses of an interfusion_codebook build (VPoser encode, K-Means, decode, 4 renders per key
    pose, CLIP) on the synthetic pose set, tiny VPoser and CLIP, SMPL body."""
    import torch

    from zoo.core import registry
    from zoo.data.synthetic.poses import synthetic_pose_set

    torch.manual_seed(0)
    m = registry.build("pose_prior", {"name": "interfusion_codebook", "vposer": {"name": "vposer", "hidden": 32},
                                      "clip": {"variant": "tiny"}, "body_model": {"name": "smpl", "synthesize": True},
                                      "clusters": clusters, "pick": "best", "image_size": image_size})
    t = time.perf_counter()
    m.build(synthetic_pose_set(n, 0)[0], progress=False)
    sec = time.perf_counter() - t
    return [{"name": f"codebook_build_s_per_1k_poses_{clusters}keys_{image_size}px", "value": sec * 1000 / n,
             "unit": "s/1k poses", "target": None}]


def bench_t2i() -> list[dict]:
    """All text-to-3D rows."""
    from bench_occupancy import bench_occupancy

    return (bench_field_renderer() + bench_render_memory() + bench_dreamfusion_step() + bench_interfusion_step()
            + bench_codebook() + bench_occupancy())


if __name__ == "__main__":
    for row in bench_t2i():
        print(f"{row['name']:<52} {row['value']:>12.4g} {row['unit']}")
