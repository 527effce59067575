"""The registry-wide contract (in the spirit of timm's tests over ``list_models()``): every entry of
registry.yaml builds from its ``tiny`` configuration, runs forward (and backward when it has trainable
parameters), exports, reloads, and gives the same outputs after the reload. An entry without a tiny
configuration fails here."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch

from zoo.core import hub, registry
from zoo.core.interfaces import ViewRenderer, missing_methods


def _entries() -> list[tuple[str, str, int, dict | None]]:
    out = []
    for kind, ents in registry.index(reload=True)["components"].items():
        for name, ent in (ents or {}).items():
            tiny = ent.get("tiny")
            configs = tiny if isinstance(tiny, list) else [tiny]
            out += [(kind, name, i, cfg) for i, cfg in enumerate(configs)]
    return out


ENTRIES = _entries()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A shared synthetic body-model folder and cache root for the whole module."""
    root = tmp_path_factory.mktemp("contract")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_BODY_MODELS", str(root / "body_models"))
    mp.setenv("ZOO_HOME", str(root / "home"))
    yield root
    mp.undo()


def test_every_entry_has_a_tiny_configuration():
    missing = [f"{k}/{n}" for k, n, _, cfg in ENTRIES if cfg is None]
    assert not missing, f"registry.yaml entries without a `tiny` configuration: {missing}"


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{where} differs after export + reload")
    else:
        assert a == b, where


def _backward(module: torch.nn.Module, out: torch.Tensor) -> None:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    out.float().square().mean().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params), "no trainable parameter got a gradient"
    module.zero_grad()


def _reload(module, tmp_path):
    out = hub.export(module, tmp_path / "export")
    return hub.load(out)


def _inputs(kind: str, m) -> tuple:
    g = torch.Generator().manual_seed(0)
    if kind == "backbone":
        return (torch.rand(2, 3, 64, 64, generator=g),)
    if kind == "lifter":
        return torch.randn(2, m.hparams.embed_dim, generator=g), torch.rand(m.hparams.num_views, 5, generator=g)
    if kind == "body_model":
        return ()
    raise AssertionError(kind)


def _tiny_field(seed: int = 0):
    """A small dense-grid field with seeded (non-trivial) values, for renderer contracts."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f = registry.build("field", {"name": "dense_grid", "resolution": 8, "occupancy": None})
        with torch.no_grad():
            for p in f.parameters():
                p.add_(torch.randn_like(p))
    return f.eval()


def _rays(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rays_o = torch.tensor([0.0, 0.2, 2.5]).expand(n, 3) + 0.05 * torch.randn(n, 3, generator=g)
    rays_d = torch.nn.functional.normalize(-rays_o + 0.2 * torch.randn(n, 3, generator=g), dim=-1)
    return rays_o, rays_d


def _camera_batch(size: int = 8) -> dict:
    dm = registry.build("datamodule", {"name": "random_cameras", "height": size, "width": size, "batch_size": 1,
                                       "epoch_size": 1})
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _volume_renderer(m) -> bool:
    first = next(iter(inspect.signature(m.forward).parameters), "")
    return first in ("field", "fields")


def _run(kind: str, m, step: int = 0):
    """Forward of a model component on fixed inputs (what the contract compares before and after reload). ``step``:
    a guidance's training step (its noise draw is a function of the step and the calls made at it)."""
    if kind == "pose_prior":
        if hasattr(m, "build"):  # retrieval priors: built once on the synthetic pose set, then queried by text
            if not getattr(m, "size", 0):
                from zoo.data.synthetic.poses import synthetic_pose_set

                m.build(synthetic_pose_set(16, 0)[0], progress=False)
            return m("sitting on a chair")
        return m(torch.randn(2, m.hparams.latent_dim, generator=torch.Generator().manual_seed(0)))
    if kind == "field":
        pts = (torch.rand(64, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * float(m.bound)
        out = m(pts)
        return torch.cat([out["density"][:, None], out["features"]], 1)
    if kind == "renderer" and _volume_renderer(m):
        rays_o, rays_d = _rays()
        fields = _tiny_field(0)
        if next(iter(inspect.signature(m.forward).parameters)) == "fields":
            fields = {"a": fields, "b": _tiny_field(1)}
        out = m(fields, rays_o, rays_d)
        return torch.cat([out["rgb"], out["opacity"], out["depth"]], -1)
    if kind == "guidance":
        images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        fn = getattr(m, "prompt_embeddings", None)
        prompt = fn("a ceramic mug") if fn is not None else "a ceramic mug"
        kw = {"azimuth": torch.tensor([10.0]), "elevation": torch.tensor([15.0]), "step": step}
        if getattr(m, "takes_batch", False):
            batch = _camera_batch(16)
            kw["batch"] = batch
        out = m(images, prompt, **kw)
        return torch.stack([v.float() for k, v in sorted(out.items()) if k.startswith("loss_")])
    if kind == "localizer":
        g = torch.Generator().manual_seed(0)
        emb = m.encode(torch.rand(2, 3, 64, 64, generator=g))
        return m.decode(emb, torch.randn(2, m.embed_dim, generator=g), output_size=(32, 32))
    if kind == "renderer":
        if not missing_methods(type(m), ViewRenderer):
            images, lift = m.render_points(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)))
            return images, lift.pix_to_elem
        verts = torch.tensor([[-1.0, -1.0, 3.0], [1.0, -1.0, 3.0], [0.0, 1.0, 3.0]])
        K = torch.tensor([[20.0, 0, 16.0], [0, 20.0, 16.0], [0, 0, 1.0]])
        return m(verts, torch.tensor([[0, 1, 2]]), K)
    if kind == "body_model":
        from zoo.body.model import POSE_DIMS

        pose = torch.zeros(2, POSE_DIMS[m.model_type])
        pose[:, 5] = 0.4
        return m(pose=pose)["vertices"]
    if kind == "vlm":
        g = torch.Generator().manual_seed(0)
        images = [torch.rand(3, 32, 32, generator=g) for _ in range(2)]
        inputs = m.build_inputs(images, ["which parts of the body are in contact ?"] * 2,
                                ["hands feet [HCON]", "back [HCON]"])
        return m(inputs)["logits"]
    return m(*_inputs(kind, m))


# Values of the batch keys a metric may declare in ``batch_keys`` (six samples: two images with two objects each).
BATCH_NAMES = {"imgname": ["a.jpg", "a.jpg", "b.jpg", "c.jpg", "c.jpg", "d.jpg"],
               "object_name": ["chair", "cup", "chair", "bed", "cup", "bench"]}


def _data(cfg: dict, tmp_path, name: str):
    # a root only for DataModules that read files (random cameras read none)
    root = {"root": str(tmp_path / name)} if "root" in inspect.signature(registry.lookup("datamodule", name)).parameters else {}
    dm = registry.build("datamodule", {"name": name, **cfg, **root})
    dm.setup("fit")
    dm.setup("test")
    return dm


def _first(loader):
    return next(iter(loader))


@pytest.mark.parametrize("kind,name,i,tiny", ENTRIES, ids=[f"{k}/{n}[{i}]" for k, n, i, _ in ENTRIES])
def test_contract(kind, name, i, tiny, env, tmp_path):
    if tiny is None:
        pytest.fail(f"{kind}/{name} has no tiny configuration in registry.yaml")
    torch.manual_seed(0)
    tiny = copy.deepcopy(tiny)
    if kind == "system":
        _system_contract(tiny, tmp_path)
    elif kind == "datamodule":
        dm = _data(tiny, tmp_path, name)
        batch = _first(dm.train_dataloader())
        assert isinstance(batch, dict) and batch, "a batch is a dict of documented keys"
        again = registry.build("datamodule", {"name": name, **dm._zoo_config})  # rebuilt from its recorded config
        again.setup("fit")
        again.setup("test")
        _same(_first(dm.test_dataloader()), _first(again.test_dataloader()), f"{name} test batch")
    elif kind == "metric" and _fit_metric(name):
        _fit_metric_contract(name, tiny, tmp_path)
    elif kind == "metric" and _prompt_metric(name):
        m = registry.build("metric", {"name": name, **tiny})
        images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        m.update(images, ["a ceramic mug", "a wooden chair"])
        res = m.compute()
        assert res and all(torch.isfinite(torch.as_tensor(v)).all() for v in res.values()), res
        assert list(m.state_dict()) == [], "a CLIP metric keeps its encoder weights out of the state dict"
        m2 = _reload(m, tmp_path)
        m2.update(images, ["a ceramic mug", "a wooden chair"])
        _same(res, m2.compute(), name)
    elif kind == "metric":
        m = registry.build("metric", {"name": name, **tiny})
        V = m.geodesic.shape[0] if hasattr(m, "geodesic") else 50
        g = torch.Generator().manual_seed(0)
        pred, target = torch.rand(6, V, generator=g), (torch.rand(6, V, generator=g) > 0.7).float()
        keys = tuple(getattr(m, "batch_keys", ()) or ())
        assert set(keys) <= set(BATCH_NAMES), f"{name} asks for batch keys {keys}; the contract knows {list(BATCH_NAMES)}"
        extra = {k: BATCH_NAMES[k] for k in keys}
        m.update(pred, target, **extra)
        res = m.compute()
        assert res and all(torch.isfinite(torch.as_tensor(v)).all() for v in res.values()), res
        m2 = _reload(m, tmp_path)
        m2.update(pred, target, **extra)
        _same(res, m2.compute(), name)
    else:
        m = registry.build(kind, {"name": name, **tiny}).eval()
        out = _run(kind, m)
        if isinstance(m, torch.nn.Module) and isinstance(out, torch.Tensor):
            m.train()
            _backward(m, _run(kind, m))
            m.eval()
        with torch.no_grad():
            ref = _run(kind, m, step=1)  # the first call at step 1, before and after the reload
            _same(ref, _run(kind, _reload(m, tmp_path), step=1), f"{kind}/{name}")


def _prompt_metric(name: str) -> bool:
    """Text-to-3D metrics update from (renders, prompts) instead of (pred, target) tensors."""
    return "prompts" in inspect.signature(registry.lookup("metric", name).update).parameters


def _fit_metric(name: str) -> bool:
    """Reconstruction metrics update from (fitting results, samples) instead of (pred, target) tensors."""
    import inspect

    return "results" in inspect.signature(registry.lookup("metric", name).update).parameters


def _fit_metric_contract(name: str, tiny: dict, tmp_path) -> None:
    from fixtures.toy_scene import toy_sample

    sample = toy_sample()
    placed = sample["object_verts"] @ sample["gt_R"].T + sample["gt_t"] + torch.tensor([0.01, 0.0, 0.0])
    result = {"R": sample["gt_R"], "t": sample["gt_t"] + torch.tensor([0.01, 0.0, 0.0]), "scale": torch.tensor(1.0),
              "object_verts": placed, "object_faces": sample["object_faces"], "body_verts": sample["body_verts"],
              "body_faces": sample["body_faces"], "object_silhouette": sample["object_mask"]}
    m = registry.build("metric", {"name": name, **tiny})
    m.update([result], [sample])
    res = m.compute()
    assert res and all(torch.isfinite(torch.as_tensor(v)).all() for v in res.values()), res
    m2 = _reload(m, tmp_path)
    m2.update([result], [sample])
    _same(res, m2.compute(), name)


def _fit_system_contract(rec, system_cfg: dict, tmp_path) -> None:
    """A fitting system fits the tiny data's first test batch (finite objective, a result per sample), and a
    rebuild from its recorded configuration gives the same result."""
    data_name = rec["data"]["name"]
    data_tiny = registry.entry("datamodule", data_name)["tiny"]
    data_cfg = {k: v for k, v in rec["data"].items() if k not in ("name", "root", "synthesize")}
    dm = _data({**data_cfg, **data_tiny}, tmp_path, data_name)
    system = registry.build("system", system_cfg)
    batch = _first(dm.test_dataloader())
    results, final = system.fit_samples(batch["samples"])
    assert len(results) == len(batch["samples"]) and all(torch.isfinite(torch.tensor(f["loss"])) for f in final)
    again = registry.build("system", {"name": system_cfg["name"], **system._zoo_config})
    results2, _ = again.fit_samples(batch["samples"])
    _same([r["t"] for r in results], [r["t"] for r in results2], system_cfg["name"])


def _system_contract(tiny: dict, tmp_path) -> None:
    from zoo.core import recipe as R

    rec = R.load(tiny["recipe"])
    if not getattr(registry.lookup("system", rec["system"]["name"]), "learned", True):
        cfg = dict(rec["system"]) | dict(tiny.get("system") or {})
        return _fit_system_contract(rec, cfg, tmp_path)
    data_name = rec["data"]["name"]
    data_tiny = registry.entry("datamodule", data_name)["tiny"]
    data_cfg = {k: v for k, v in rec["data"].items() if k not in ("name", "root", "synthesize")}
    dm = _data({**data_cfg, **data_tiny}, tmp_path, data_name)
    system = registry.build("system", rec["system"])
    batch = _first(dm.train_dataloader())
    system.train()
    losses, _ = system.step(batch, "train")
    assert torch.isfinite(losses["loss"]), losses
    _backward(system, losses["loss"])
    system.eval()
    test_batch = _first(dm.test_dataloader())
    with torch.no_grad():
        ref = system.predict_step(test_batch, 0)
        again = _reload(system, tmp_path)
        _same(ref, again.predict_step(test_batch, 0), rec["system"]["name"])
