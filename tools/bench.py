#!/usr/bin/env python
"""Benchmarks (`make bench`): prints a table and writes runs/bench/latest.json, a list of
{name, value, unit, target}. Ratios are measured in one run on this machine.

Figures: damon DataModule samples/s; the zoo's DECO and MV-Loc training steps (Lightning Trainer) vs.
the same modules in a plain PyTorch loop (target ratio <= 1.10 each); contact metric update cost per
sample; the 4 InteractVLM body views: lift-map build time and the cpu_fast renderer's speed-up
over pytorch3d's CPU rasterizer at 256^2 and 512^2 (target >= 10x) with face-id agreement;
lift throughput (views/s, batch 8 x 4 views) vs. a per-view scatter loop at 256^2 and 1024^2
(target >= 5x at 1024^2), and our lift from logits vs. a re-implementation of InteractVLM's
per-sample, per-view predictor on the same maps at 1024^2 (target >= 5x); mvloc training step time
with cached renders vs. rebuilt ones; tiny InteractVLM: training step zoo vs. plain loop (target <= 1.10),
the split of a step between the VLM, the localizer's decoder, the lift and the backward pass, and greedy
generation tokens/s; soft silhouettes at 128^2, cpu_fast vs. pytorch3d per forward+backward step (target
>= 10x; tools/bench_silhouette.py); one hoi_recon fit and PHOSA's per-image time (tools/bench_fitting.py);
text-to-3D (tools/bench_t2i.py): hash-grid NeRF + volume renderer training rays/s eager vs. torch.compile,
the activations one 64^2 render saves for backward, one dreamfusion/tiny training step.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import _cli  # noqa: F401
from bench_fitting import bench_fitting
from bench_silhouette import bench_silhouette
from bench_t2i import bench_t2i

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench" / "latest.json"


def _data(tmp: Path) -> Path:
    from zoo.body.synthetic import write_synthetic_body_models
    from zoo.data.synthetic.damon import cli as make_damon

    body = write_synthetic_body_models(tmp / "body_models")
    os.environ["ZOO_BODY_MODELS"] = str(body)
    root = tmp / "damon"
    if not (root / "hot_dca_test.npz").is_file():
        make_damon(["--n", "96", "--out", str(root), "--seed", "0", "--model-dir", str(body)])
    return root


def bench_datamodule(root: Path) -> list[dict]:
    """Samples/s through the damon DataModule (decode + DECO preprocessing), cold cache."""
    from zoo.core import registry

    dm = registry.build("datamodule", {"name": "damon", "root": str(root), "batch_size": 16, "cache": False})
    dm.setup("fit")
    n = 0
    t = time.perf_counter()
    for batch in dm.train_dataloader():
        n += batch["image"].shape[0]
    dt = time.perf_counter() - t
    return [{"name": "damon_datamodule_samples_per_s", "value": n / dt, "unit": "samples/s", "target": None}]


def _train_step_ratio(label: str, recipe: str, overrides: list[str], steps: int) -> list[dict]:
    """Seconds per training step of ``recipe``'s system under lightning.Trainer vs. the same modules in a plain
    PyTorch loop (same batches, optimiser from the system's optim sub-recipe)."""
    import lightning as L
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry

    rec = R.load(recipe, overrides)
    dm = registry.build("datamodule", {**rec["data"], "batch_size": 8})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batches = [batch] * steps

    def optimizer_of(system):
        opt = system.configure_optimizers()
        return opt["optimizer"] if isinstance(opt, dict) else opt

    def plain() -> float:
        L.seed_everything(0, verbose=False)
        system = registry.build("system", rec["system"])
        opt = optimizer_of(system)
        system.train()

        def one(b):
            loss = system.step(b, "train")[0]["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        for b in batches[:3]:  # warm-up (fills render / embedding caches)
            one(b)
        t = time.perf_counter()
        for b in batches:
            one(b)
        return (time.perf_counter() - t) / steps

    class Timer(L.Callback):
        def __init__(self):
            self.t = None

        def on_train_batch_start(self, trainer, *a):
            if trainer.global_step == 3:
                self.t = time.perf_counter()

        def on_train_end(self, trainer, *a):
            self.dt = (time.perf_counter() - self.t) / steps

    def zoo() -> float:
        L.seed_everything(0, verbose=False)
        system = registry.build("system", rec["system"], materialize=False)
        timer = Timer()
        tr = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 3, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                       num_sanity_val_steps=0, limit_val_batches=0)
        tr.fit(system, train_dataloaders=torch.utils.data.DataLoader(batches + batches[:3], batch_size=None))
        return timer.dt

    # Alternate the two so a change in machine load hits both alike; keep each one's best.
    runs = [(plain(), zoo()) for _ in range(2)]
    p, z = min(r[0] for r in runs), min(r[1] for r in runs)
    return [
        {"name": f"{label}_train_step_plain_s", "value": p, "unit": "s/step", "target": None},
        {"name": f"{label}_train_step_zoo_s", "value": z, "unit": "s/step", "target": None},
        {"name": f"{label}_train_step_zoo_vs_plain_ratio", "value": z / p, "unit": "ratio", "target": "<= 1.10"},
    ]


def bench_train_step(root: Path, steps: int = 20) -> list[dict]:
    """DECO (tiny) and MV-Loc (tiny SAM, body views) training steps: zoo (Lightning) vs. a plain loop."""
    return (_train_step_ratio("deco", "deco/synthetic", [f"data.root={root}"], steps)
            + _train_step_ratio("mvloc", "mvloc/synthetic_human", [f"data.root={root}"], steps))


def bench_metrics(n: int = 512) -> list[dict]:
    """Microseconds per sample for ContactPRF and GeodesicError updates (V = 6890)."""
    import torch

    from zoo.metrics.contact import ContactPRF, GeodesicError

    g = torch.Generator().manual_seed(0)
    pred = torch.rand(n, 6890, generator=g)
    gt = (torch.rand(n, 6890, generator=g) > 0.97).float()
    out = []
    m = ContactPRF()
    t = time.perf_counter()
    for i in range(0, n, 32):
        m.update(pred[i:i + 32], gt[i:i + 32])
    m.compute()
    out.append({"name": "contact_prf_update_us_per_sample", "value": (time.perf_counter() - t) / n * 1e6,
                "unit": "us/sample", "target": None})
    geo = torch.rand(6890, 6890, generator=g)
    geo = (geo + geo.T) / 2  # a valid distance matrix: symmetric, zero diagonal
    geo.fill_diagonal_(0)
    m = GeodesicError(geo)
    pred = (torch.rand(64, 6890, generator=g) > 0.97).float()
    t = time.perf_counter()
    for i in range(0, 64, 16):
        m.update(pred[i:i + 16], gt[i:i + 16])
    m.compute()
    out.append({"name": "geodesic_error_update_us_per_sample", "value": (time.perf_counter() - t) / 64 * 1e6,
                "unit": "us/sample", "target": None})
    return out


def _lift_loop(lm, probs):
    """Baseline lift: for each sample and view, gather the covered pixels and scatter-add their votes."""
    import torch

    B, N = probs.shape[0], lm.num_elems
    acc = torch.zeros(B, N)
    cnt = torch.zeros(B, N)
    for b in range(B):
        for v in range(lm.num_views):
            m = lm.pix_to_elem[v] >= 0
            ids = lm.faces[lm.pix_to_elem[v][m]].reshape(-1)
            w = lm.bary[v][m]
            p = probs[b, v][m]
            num = torch.zeros(N).index_add_(0, ids, (w * p[:, None]).reshape(-1))
            den = torch.zeros(N).index_add_(0, ids, w.reshape(-1))
            seen = den > 0
            acc[b] += torch.where(seen, num / den.clamp(min=1e-12), torch.zeros_like(num))
            cnt[b] += seen.float()
    return acc / cnt.clamp(min=1)


def _official_lift(p2v, bary, logits, num_verts: int):
    """InteractVLM's HumanContact3DPredictor algorithm (re-implemented): for each sample and view, sigmoid of the
    clamped logits over the whole view, the pixels whose three vertices are valid found anew on every call, three
    scatter-adds of votes and weights, the per-view normalisation, then the mean over the views that saw a vertex
    and a clamp to [0, 1]. ``p2v`` (V, H, W, 3) vertex ids (-1 on background) and ``bary`` (V, H, W, 3) are the
    predictor's stored maps."""
    import torch

    B, V = logits.shape[:2]
    scores = torch.zeros(B, num_verts, dtype=logits.dtype)
    count = torch.zeros(B, num_verts, dtype=logits.dtype)
    for b in range(B):
        for v in range(V):
            p = torch.sigmoid(torch.clamp(logits[b, v], -20.0, 20.0)).reshape(-1)
            verts, w = p2v[v].reshape(-1, 3), bary[v].reshape(-1, 3)
            ok = ((verts >= 0) & (verts < num_verts)).all(dim=1)
            verts, w, p = verts[ok], w[ok], p[ok]
            if verts.numel() == 0:
                continue
            votes = torch.zeros(num_verts, dtype=logits.dtype)
            wsum = torch.zeros(num_verts, dtype=logits.dtype)
            for i in range(3):
                votes.scatter_add_(0, verts[:, i], w[:, i] * p)
                wsum.scatter_add_(0, verts[:, i], w[:, i])
            hit = wsum > 0
            votes[hit] = votes[hit] / wsum[hit]
            scores[b] = scores[b] + votes
            count[b] = count[b] + hit.to(logits.dtype)
    hit = count > 0
    scores[hit] = scores[hit] / count[hit]
    return scores.clamp(0.0, 1.0)


def bench_render(cache: Path) -> list[dict]:
    """Render / lift figures on the synthetic body's 4 InteractVLM views: lift-map build time (cpu_fast),
    speed-up over pytorch3d's CPU rasterizer, and vectorised lift vs. a per-sample, per-view loop."""
    import torch

    from zoo.body.canonical import canonical_body
    from zoo.body.model import BodyModel
    from zoo.body.synthetic import write_synthetic_body_models
    from zoo.render.cameras import VIEW_SETS
    from zoo.render.lift import mesh_lift_map
    from zoo.render.multiview import mesh_fragments

    body = BodyModel(str(write_synthetic_body_models(cache / "body_models")), model_type="smpl")
    verts, faces = canonical_body(body)
    views = VIEW_SETS["body"]
    out, maps = [], {}

    def build(size: int, backend: str):
        p2f, bary, _ = mesh_fragments(verts, faces, views, size, backend)
        return mesh_lift_map(p2f, bary, faces, verts.shape[0])

    for size in (256, 512):
        build(size, "cpu_fast")  # warm-up
        t = time.perf_counter()
        maps[size] = build(size, "cpu_fast")
        fast = time.perf_counter() - t
        out.append({"name": f"render_liftmap_build_s_{size}", "value": fast, "unit": "s", "target": None})
        t = time.perf_counter()
        ref = build(size, "pytorch3d")
        slow = time.perf_counter() - t
        cov = (ref.pix_to_elem >= 0) | (maps[size].pix_to_elem >= 0)
        agree = float((ref.pix_to_elem == maps[size].pix_to_elem)[cov].float().mean())
        out.append({"name": f"render_speedup_vs_pytorch3d_{size}", "value": slow / fast, "unit": "x", "target": 10})
        out.append({"name": f"render_face_agreement_vs_pytorch3d_{size}", "value": agree, "unit": "frac",
                    "target": 0.99})
    from zoo.render.multiview import MultiViewRenderer

    maps[1024] = MultiViewRenderer("body", image_size=1024).render_mesh(verts, faces, cache=False)[1]
    g = torch.Generator().manual_seed(0)
    for size in (256, 1024):
        lm = maps[size]
        probs = torch.rand(8, 4, size, size, generator=g)
        lm.lift(probs)  # warm-up (builds the map's pixel lists once)
        reps = 5 if size == 256 else 2
        t = time.perf_counter()
        for _ in range(reps):
            s_vec = lm.lift(probs)[0]
        vec = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for _ in range(reps):
            s_loop = _lift_loop(lm, probs)
        loop = (time.perf_counter() - t) / reps
        if not torch.allclose(s_vec, s_loop, atol=1e-4):
            raise RuntimeError(f"bench_render: vectorised and loop lifts disagree at {size}^2")
        out.append({"name": f"lift_views_per_s_{size}", "value": 32 / vec, "unit": "views/s", "target": None})
        out.append({"name": f"lift_loop_views_per_s_{size}", "value": 32 / loop, "unit": "views/s", "target": None})
        if size == 1024:
            out.append({"name": "lift_speedup_vs_loop_1024", "value": loop / vec, "unit": "x", "target": 5})
            out += _bench_lift_vs_official(lm, g)
    return out


def _bench_lift_vs_official(lm, g) -> list[dict]:
    """Our lift from logits (clamp + sigmoid on the covered pixels only, one scatter) vs. InteractVLM's predictor
    algorithm (:func:`_official_lift`) on the same map, B = 8 x 4 views; the two are checked to agree."""
    import torch

    H, W = lm.image_size
    logits = torch.randn(8, lm.num_views, H, W, generator=g) * 8.0  # some beyond the +-20 clamp
    p2v = lm.faces[lm.pix_to_elem.clamp(min=0)]
    p2v[lm.pix_to_elem < 0] = -1
    lm.lift(logits, from_logits=True)  # warm-up
    ours, official = [], []
    for _ in range(2):  # alternate the two so a change in machine load hits both; keep each one's best
        t = time.perf_counter()
        s_ours = lm.lift(logits, from_logits=True)[0]
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        s_off = _official_lift(p2v, lm.bary, logits, lm.num_elems)
        official.append(time.perf_counter() - t)
    if not torch.allclose(s_ours, s_off, atol=1e-5):
        raise RuntimeError("bench_render: our lift from logits and the official predictor's algorithm disagree")
    o, f = min(ours), min(official)
    n = logits.shape[0] * logits.shape[1]
    print(f"lift_speedup_vs_official_1024: {f / o:.1f}x (ours {o:.3f} s, official loop {f:.3f} s for {n} views)")
    return [{"name": "lift_from_logits_views_per_s_1024", "value": n / o, "unit": "views/s", "target": None},
            {"name": "lift_official_views_per_s_1024", "value": n / f, "unit": "views/s", "target": None},
            {"name": "lift_speedup_vs_official_1024", "value": f / o, "unit": "x", "target": 5}]


def bench_mvloc_step(root: Path, cache: Path, steps: int = 6) -> list[dict]:
    """Seconds per mvloc (tiny SAM, 128^2 views) optimisation step, with the renders, lift maps and frozen-encoder
    embeddings cached (the default) and with them rebuilt every step; human (damon semantic) and object (piad)."""
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry
    from zoo.data.synthetic.piad import generate_piad

    piad = cache / "piad"
    if not (piad / "Seen" / "Point_Test.txt").is_file():
        generate_piad(piad, n_objects=64, n_images=64, seed=0, image_size=64)
    out = []
    for task, recipe, data_root in (("human", "mvloc/synthetic_human", root), ("object", "mvloc/synthetic_object", piad)):
        rec = R.load(recipe, [f"data.root={data_root}"])
        dm = registry.build("datamodule", {**rec["data"], "batch_size": 8})
        dm.setup("fit")
        torch.manual_seed(0)
        sys_cfg = dict(rec["system"])
        if task == "human":  # the vocabulary of whatever synthetic set is cached here
            sys_cfg["prompts"] = {**sys_cfg["prompts"], "classes": dm.classes}
        system = registry.build("system", sys_cfg)
        batches = list(itertools.islice(dm.train_dataloader(), steps))
        opt = torch.optim.AdamW([p for p in system.parameters() if p.requires_grad], lr=1e-4)
        system.train()

        def run(system, opt, batches, clear: bool) -> float:
            # first pass fills the caches (not timed)
            for b in batches[:1]:
                system.step(b, "train")[0]["loss"].backward()
            t = time.perf_counter()
            for b in batches:
                if clear:
                    system.rll.surface.cache_clear()
                loss = system.step(b, "train")[0]["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
            return (time.perf_counter() - t) / len(batches)

        cached, fresh = run(system, opt, batches, False), run(system, opt, batches, True)
        out.append({"name": f"mvloc_{task}_step_s_cached_renders", "value": cached, "unit": "s", "target": None})
        out.append({"name": f"mvloc_{task}_step_s_uncached", "value": fresh, "unit": "s", "target": None})
        out.append({"name": f"mvloc_{task}_render_cache_speedup", "value": fresh / cached, "unit": "x", "target": None})
    return out


def bench_interactvlm(root: Path, steps: int = 10) -> list[dict]:
    """Tiny InteractVLM: the Lightning step vs. a plain loop, the split of a training step's time between the
    VLM (inputs + forward), the localizer (decode), the lift and the backward pass, and generation tokens/s."""
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry

    rows = _train_step_ratio("interactvlm", "interactvlm/synthetic", [f"data.root={root}"], steps)
    rec = R.load("interactvlm/synthetic", [f"data.root={root}"])
    dm = registry.build("datamodule", {**rec["data"], "batch_size": 8})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    system = registry.build("system", rec["system"])
    system.train()
    spent = {"vlm": 0.0, "localizer": 0.0, "lift": 0.0}

    def timed(key, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            spent[key] += time.perf_counter() - t
            return out
        return wrapper

    vlm_forward, build_inputs = system.vlm.forward, system.vlm.build_inputs
    system.vlm.forward = timed("vlm", vlm_forward)
    system.vlm.build_inputs = timed("vlm", build_inputs)
    system.human.localizer.decode = timed("localizer", system.human.localizer.decode)
    views = system.human.surface.views(batch, system.human.localizer, torch.device("cpu"), "bench")
    lift = views.lifts[0]
    lift.lift = timed("lift", lift.lift)
    total = backward = 0.0
    for i in range(steps + 2):
        if i == 2:  # after warm-up
            spent.update(vlm=0.0, localizer=0.0, lift=0.0)
            total = backward = 0.0
        t = time.perf_counter()
        loss = system.step(batch, "train")[0]["loss"]
        tb = time.perf_counter()
        loss.backward()
        system.zero_grad()
        backward += time.perf_counter() - tb
        total += time.perf_counter() - t
    rest = total - backward - sum(spent.values())
    for key, val in (*spent.items(), ("backward", backward), ("other", rest)):
        rows.append({"name": f"interactvlm_step_share_{key}", "value": val / total, "unit": "fraction", "target": None})
    system.eval()
    q, _ = system.texts(batch, "human", "test")
    images = system.images(batch, "bench")
    with torch.no_grad():
        system.vlm.generate_answers(images, q, 24)  # warm-up
        t = time.perf_counter()
        gens = system.vlm.generate_answers(images, q, 24)
        dt = time.perf_counter() - t
    n = sum(len(g.tokens) for g in gens)
    rows.append({"name": "interactvlm_generation_tokens_per_s", "value": n / dt, "unit": "tok/s",
                 "target": None})
    return rows


def main() -> int:
    """Run every benchmark, print the table, write runs/bench/latest.json."""
    import tempfile

    torch_threads = os.environ.get("BENCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    cache = ROOT / "runs" / "bench" / "data"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory():
        root = _data(cache)
        rows = (bench_datamodule(root) + bench_train_step(root) + bench_metrics() + bench_render(cache)
                + bench_mvloc_step(root, cache) + bench_interactvlm(root) + bench_silhouette() + bench_fitting() + bench_t2i())
    from zoo.core.atomic import atomic_write_text

    atomic_write_text(OUT, json.dumps(rows, indent=2) + "\n")
    print(f"{'name':45s} {'value':>12s} {'unit':>10s}  target")
    for r in rows:
        print(f"{r['name']:45s} {r['value']:12.4g} {r['unit']:>10s}  {r['target'] or ''}")
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
