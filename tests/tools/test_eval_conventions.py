"""``convention=deco|interactvlm|both`` of tools/eval.py / run.evaluate, and the DAMON metrics it adds.

Hand cases where the two conventions must differ (an empty prediction: DECO P = 1, InteractVLM P = 0;
an image with two objects, whose union is not the mean of its entries), the metrics ``damon_binary``
and ``damon_semantic`` against the golden values of the official code (as the functions are in
tests/metrics/test_golden_contact.py), their states merged and synchronised over two gloo processes
(one of them without any entry), the mapping of the switch, and an end-to-end evaluation of a tiny
DECO checkpoint under each convention and under ``both``, checked against values recomputed from
the checkpoint's own predictions.
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from zoo.core import registry
from zoo.metrics.contact import (
    ContactPRF,
    DamonBinaryContact,
    DamonSemanticContact,
    contact_prf_per_image,
    damon_binary_contact,
    damon_semantic_contact,
    name_id,
)
from zoo.metrics.conventions import metrics_for_convention

# Three (image, object) entries over six vertices.
#   a.jpg / chair: pred {0},       GT {0, 1}  -> tp 1, |P| 1, |G| 2: P 1,   R 1/2, F1 2/3
#   a.jpg / cup:   pred {2, 3, 4}, GT {2, 3}  -> tp 2, |P| 3, |G| 2: P 2/3, R 1,   F1 4/5
#   b.jpg / chair: pred {},        GT {5}     -> empty prediction: DECO (1, 0, 0), InteractVLM (0, 0, 0)
PRED = torch.tensor([[0.9, 0.2, 0.1, 0.0, 0.0, 0.0],
                     [0.0, 0.0, 0.8, 0.7, 0.6, 0.0],
                     [0.1, 0.1, 0.1, 0.1, 0.1, 0.4]])
GT = torch.tensor([[1, 1, 0, 0, 0, 0],
                   [0, 0, 1, 1, 0, 0],
                   [0, 0, 0, 0, 0, 1]], dtype=torch.float32)
IMAGES = ["a.jpg", "a.jpg", "b.jpg"]
OBJECTS = ["chair", "cup", "Chair"]  # lower-cased: two chair entries
F1_ENTRY_MEAN = (2 / 3 + 4 / 5 + 0) / 3


def _close(a, b, tol=1e-9):
    assert float(a) == pytest.approx(float(b), abs=tol), (float(a), float(b))


# ------------------------------------------------------------------ hand cases
def test_empty_prediction_deco_p1_interactvlm_p0_recall_agrees():
    out = {}
    for conv in ("deco", "interactvlm"):
        m = ContactPRF(convention=conv)
        m.update(PRED, GT)
        out[conv] = m.compute()
    _close(out["deco"]["precision"], (1 + 2 / 3 + 1) / 3)  # the empty prediction scores P = 1 ...
    _close(out["interactvlm"]["precision"], (1 + 2 / 3 + 0) / 3, 1e-8)  # ... and P = 0
    _close(out["deco"]["recall"], 0.5)
    _close(out["interactvlm"]["recall"], 0.5, 1e-8)  # every entry has GT contact: recall agrees
    _close(out["deco"]["f1"], F1_ENTRY_MEAN)
    _close(out["interactvlm"]["f1"], F1_ENTRY_MEAN, 1e-8)


def test_damon_binary_union_differs_from_the_entry_mean():
    """a.jpg: union pred {0, 2, 3, 4}, GT {0, 1, 2, 3} -> tp 3: P = R = F1 = 3/4; b.jpg: F1 0.
    F1 = mean over the 2 images = 3/8 (entry mean 22/45); P pooled = 3/4, R pooled = 3/5."""
    m = DamonBinaryContact()
    m.update(PRED[:1], GT[:1], imgname=IMAGES[:1])  # a.jpg's two objects in different batches
    m.update(PRED[1:], GT[1:], imgname=IMAGES[1:])
    out = m.compute()
    _close(out["damon_binary/f1"], 3 / 8)
    _close(out["damon_binary/precision"], 3 / 4)
    _close(out["damon_binary/recall"], 3 / 5)
    assert float(out["damon_binary/images"]) == 2
    assert abs(float(out["damon_binary/f1"]) - F1_ENTRY_MEAN) > 0.1
    ref = damon_binary_contact(PRED, GT, IMAGES)
    for k in ("f1", "precision", "recall"):
        _close(out[f"damon_binary/{k}"], ref[k], 0)
    # integer image ids (e.g. an index the datamodule provides) give the same table
    ids = DamonBinaryContact()
    ids.update(PRED, GT, imgname=torch.tensor([7, 7, 9]))
    _close(ids.compute()["damon_binary/f1"], 3 / 8)


def test_damon_semantic_rows_by_hand():
    """chair: entries 1 and 3 -> n 2, F1 (2/3 + 0)/2, P 1/1, R 1/3; cup: n 1, F1 4/5, P 2/3, R 1."""
    m = DamonSemanticContact()
    m.update(PRED, GT, object_name=OBJECTS)
    out = m.compute()
    want = {"chair": (2, 1 / 3, 1.0, 1 / 3), "cup": (1, 4 / 5, 2 / 3, 1.0)}
    for obj, (n, f1, p, r) in want.items():
        base = f"damon_semantic/object/{obj}"
        for key, value in zip(("n", "f1", "precision", "recall"), (n, f1, p, r), strict=True):
            _close(out[f"{base}/{key}"], value, 1e-8)
    _close(out["damon_semantic/category/furniture/n"], 2)
    _close(out["damon_semantic/category/kitchen/f1"], 4 / 5, 1e-8)
    _close(out["damon_semantic/weighted_f1"], F1_ENTRY_MEAN, 1e-8)  # weighted F1 = the entry mean
    ref = damon_semantic_contact(PRED, GT, OBJECTS)
    _close(out["damon_semantic/weighted_f1"], ref["weighted_f1"], 0)


def test_names_are_checked_and_hashed_stably():
    m = DamonBinaryContact()
    with pytest.raises(TypeError, match="imgname must be a list of 3 strings"):
        m.update(PRED, GT, imgname="a.jpg")
    with pytest.raises(ValueError, match="2 imgname entries for 3 predictions"):
        m.update(PRED, GT, imgname=IMAGES[:2])
    assert not m.image_id and not m.hit, "a refused batch leaves no partial rows"
    with pytest.raises(ValueError, match="at most 64"):
        DamonSemanticContact().update(PRED[:1], GT[:1], object_name=["x" * 65])
    assert name_id("a.jpg") == name_id("a.jpg") != name_id("b.jpg")
    assert 0 <= name_id("a.jpg") < 2 ** 63


# ------------------------------------------------------------------ golden values of the official code
def _batches(n: int) -> list[slice]:
    cuts = sorted({0, n // 3, n // 3 + 1, (2 * n) // 3, n})
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def test_metric_classes_reproduce_the_golden_tables(golden_npz):
    g = golden_npz("contact_metrics_interactvlm")
    pred, gt, dist = torch.from_numpy(g["pred"]), torch.from_numpy(g["gt"]), torch.from_numpy(g["geodesic"])
    images, objects = g["image_name"].tolist(), g["object_name"].tolist()
    b = registry.build("metric", {"name": "damon_binary", "threshold": 0.5, "geodesic": dist})
    s = registry.build("metric", {"name": "damon_semantic", "threshold": 0.5, "geodesic": dist})
    for sl in _batches(len(pred)):
        b.update(pred[sl], gt[sl], imgname=images[sl])
        s.update(pred[sl], gt[sl], object_name=objects[sl])
    out = b.compute()
    for k in ("precision", "recall", "f1"):
        _close(out[f"damon_binary/{k}"], g[f"binary_global_{k}"], 1e-6)
    assert float(out["damon_binary/images"]) == len(g["binary_image_order"])
    fn = damon_binary_contact(g["pred"], g["gt"], g["image_name"], 0.5, geodesic=g["geodesic"])
    _close(out["damon_binary/fp_geo_cm"], 100 * fn["fp_geo"], 1e-9)  # signature order, as the function

    sem = s.compute()
    _close(sem["damon_semantic/weighted_f1"], g["semantic_weighted_f1"], 1e-6)
    gold = g["semantic_table_n_f1_precision_recall_geo"]
    for name, row in zip(g["semantic_objects"].tolist(), gold, strict=True):
        assert float(sem[f"damon_semantic/object/{name}/n"]) == row[0]
        _close(sem[f"damon_semantic/object/{name}/f1"], row[1], 1e-6)
    for name, row in zip(g["category_names"].tolist(), g["category_table_n_f1_precision_recall_geo"], strict=True):
        assert float(sem[f"damon_semantic/category/{name}/n"]) == row[0]
        _close(sem[f"damon_semantic/category/{name}/f1"], row[1], 1e-6)
    fs = damon_semantic_contact(g["pred"], g["gt"], g["object_name"], 0.5, geodesic=g["geodesic"])
    for name, row in zip(fs["objects"], fs["table"], strict=True):  # thresholded P / R and geo: as the function
        _close(sem[f"damon_semantic/object/{name}/precision"], row[2], 1e-12)
        _close(sem[f"damon_semantic/object/{name}/recall"], row[3], 1e-12)
        _close(sem[f"damon_semantic/object/{name}/fp_geo_cm"], 100 * row[4], 1e-9)
    _close(sem["damon_semantic/weighted_fp_geo_cm"], 100 * fs["weighted_fp_geo"], 1e-9)


# ------------------------------------------------------------------ DDP: merged states, two gloo processes
def _shard_data():
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(10, 40, generator=g)
    gt = (torch.rand(10, 40, generator=g) > 0.6).float()
    images = ["i0", "i0", "i1", "i2", "i2", "i2", "i3", "i4", "i4", "i5"]
    objects = ["chair", "cup", "bed", "chair", "bench", "cup", "bottle", "chair", "skis", "tie"]
    return pred, gt, images, objects


def _both(pred, gt, images, objects, sl):
    b, s = DamonBinaryContact(), DamonSemanticContact()
    if sl is not None:
        b.update(pred[sl], gt[sl], imgname=images[sl])
        s.update(pred[sl], gt[sl], object_name=objects[sl])
    return b, s


def _values(*metrics) -> dict[str, float]:
    out = {}
    for m in metrics:
        out.update({k: float(v) for k, v in m.compute().items()})
    return out


def test_merged_states_equal_one_process():
    pred, gt, images, objects = _shard_data()
    want = _values(*_both(pred, gt, images, objects, slice(None)))
    # i2's entries are split between the two shards
    b1, s1 = _both(pred, gt, images, objects, slice(0, 4))
    b2, s2 = _both(pred, gt, images, objects, slice(4, None))
    b1.merge_state(b2)
    s1.merge_state(s2)
    got = _values(b1, s1)
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_states_sync_through_torch_distributed():
    """Every state goes through torch.distributed's gather (a one-process gloo group here; two processes,
    one of them idle, in tests/metrics/test_metrics_ddp.py): a metric that saw no entry offers
    torchmetrics' empty float placeholder, which must gather with the int64 rows of the others."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    pred, gt, images, objects = _shard_data()
    want = _values(*_both(pred, gt, images, objects, slice(None)))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        b, s = _both(pred, gt, images, objects, slice(None))
        got = _values(b, s)
        assert b._is_synced is False and set(got) == set(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-12), k
        idle_b, idle_s = _both(pred, gt, images, objects, None)
        idle_b.sync()  # the empty placeholder is gathered as int64
        assert all(t.dtype == torch.int64 for t in (idle_b.image_id, idle_b.hit, idle_b.gt))
        idle_b.unsync()
        with pytest.warns(UserWarning, match="compute"):
            assert float(idle_b.compute()["damon_binary/images"]) == 0
            assert np.isnan(float(idle_s.compute()["damon_semantic/weighted_f1"]))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the switch
METRICS = [{"name": "contact_prf", "threshold": 0.4},
           {"name": "contact_geodesic", "body_model": {"name": "smpl"}, "method": "edges"},
           {"name": "affordance"}]


def test_switch_maps_every_family():
    deco = metrics_for_convention(METRICS, "deco", ("imgname", "object_name"))
    assert [m.get("convention") for m in deco] == ["deco", "deco", "iagnet"]
    assert [m["name"] for m in deco] == ["contact_prf", "contact_geodesic", "affordance"]
    ivlm = metrics_for_convention(METRICS, "interactvlm", ("imgname",))
    assert [m["name"] for m in ivlm] == ["contact_prf", "contact_geodesic", "affordance", "damon_binary"]
    assert [m.get("convention") for m in ivlm[:3]] == ["interactvlm"] * 3
    # the summary takes the contact threshold and the geodesic source
    assert ivlm[3] == {"name": "damon_binary", "threshold": 0.4, "body_model": {"name": "smpl"}, "method": "edges"}
    sem = metrics_for_convention(METRICS[:1], "interactvlm", ("imgname", "object_name"))
    assert [m["name"] for m in sem] == ["contact_prf", "damon_binary", "damon_semantic"]
    assert [m["name"] for m in metrics_for_convention(METRICS[:1], "interactvlm", ())] == ["contact_prf"]
    assert [m["name"] for m in metrics_for_convention([{"name": "affordance"}], "interactvlm", ("imgname",))] == \
        ["affordance"]  # no contact metric: no DAMON summary
    # deco leaves the DAMON summaries out; both keeps the two sets apart
    assert [m["name"] for m in metrics_for_convention(sem, "deco", ("imgname",))] == ["contact_prf"]
    both = metrics_for_convention(METRICS[:1], "both", ("imgname",))
    assert [(m.get("log_prefix"), m["name"], m.get("convention")) for m in both] == [
        ("deco/", "contact_prf", "deco"), ("interactvlm/", "contact_prf", "interactvlm"),
        ("interactvlm/", "damon_binary", None)]
    assert METRICS[0] == {"name": "contact_prf", "threshold": 0.4}, "the input list is not modified"
    with pytest.raises(ValueError, match="deco, interactvlm, both"):
        metrics_for_convention(METRICS, "iagnet")


def test_unknown_convention_is_refused_and_other_keys_stay_strict(tmp_path):
    from zoo.core import recipe as R
    from zoo.core import run

    damon = tmp_path / "no_data_needed"
    with pytest.raises(R.RecipeError, match=r"'convention'.*deco, interactvlm, both.*'decoo'"):
        R.load("deco/synthetic", [f"data.root={damon}", "convention=decoo"])
    rec = R.load("deco/synthetic", [f"data.root={damon}", "convention=interactvlm", "logger=csv"])
    with pytest.raises(R.RecipeError, match=r"logger\.name \(not used when evaluating\)"):
        run.check_eval_overrides(rec, None, None)
    ok = R.load("deco/synthetic", [f"data.root={damon}", "convention=both"])
    assert run.check_eval_overrides(ok, None, None) == {}
    with pytest.raises(R.RecipeError, match="applies to evaluation only"):
        run.execute(R.load("deco/synthetic", [f"data.root={damon}", "convention=deco", "run.mode=predict"]))


# ------------------------------------------------------------------ end to end on a tiny DECO checkpoint
DATA = ["data.image_size=64", "data.batch_size=8", "data.seg_size=16"]


@pytest.fixture(scope="module")
def tiny_deco(synth, tmp_path_factory):
    """A deco/synthetic export trained for one step, and its test-split predictions (binary and semantic)."""
    from zoo.core import recipe as R
    from zoo.core import run

    body, damon = synth
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path_factory.mktemp("tiny_deco"))
    mp.setenv("ZOO_BODY_MODELS", str(body))
    mp.delenv("ZOO_RUN_DIR", raising=False)
    try:
        res = run.train(R.load("deco/synthetic", [
            f"data.root={damon}", *DATA, "data.max_samples=8", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
            "logger=none", "test=false", "checkpoint.monitor=null", "run.name=conv"]))
        import zoo

        model = zoo.load(res.export_dir).eval()
        preds = {}
        for mode in ("binary", "semantic"):
            dm = registry.build("datamodule", {"name": "damon", "root": str(damon), "image_size": 64,
                                               "batch_size": 8, "seg_size": 16, "contact_mode": mode})
            dm.setup("test")
            p, g, names, objs = [], [], [], []
            with torch.no_grad():
                for batch in dm.test_dataloader():
                    p.append(model(batch["image"])["contact"])
                    g.append(batch["contact_label"])
                    names += batch["imgname"]
                    objs += batch.get("object_name", [])
            preds[mode] = (torch.cat(p), torch.cat(g), names, objs)
        yield res.export_dir, damon, preds
    finally:
        mp.undo()


def _thresholds(pred: torch.Tensor) -> tuple[float, float]:
    """(a threshold near the median score, in the widest gap between scores there; one above every score):
    the first predicts contact on every image, the second on none."""
    v = pred.flatten().double().unique().sort().values
    mid = v[int(0.4 * len(v)):int(0.6 * len(v)) + 1]
    k = int((mid[1:] - mid[:-1]).argmax())
    low = float((mid[k] + mid[k + 1]) / 2)
    assert (pred.double() - low).abs().min() > 1e-6 and (pred >= low).any(1).all()
    return low, min(1.0, float(v[-1]) + 0.01)


def _metrics_override(low: float, high: float) -> str:
    """Two contact_prf entries: at ``low``, and at ``high`` logged under ``none/`` (every prediction empty)."""
    return (f"system.metrics=[{{name: contact_prf, threshold: {low}}}, "
            f"{{name: contact_prf, threshold: {high}, log_prefix: none/}}]")


def _eval(export, damon, tmp_path, name, *extra):
    from zoo.core import recipe as R
    from zoo.core import run

    out = tmp_path / f"{name}.json"
    ev = run.evaluate(R.load("deco/synthetic", [f"data.root={damon}", *DATA, f"ckpt={export}", *extra]), out=out)
    assert json.loads(out.read_text()) == ev.metrics
    return ev.metrics


def test_eval_deco_and_interactvlm_tables(tiny_deco, tmp_path, monkeypatch, capsys):
    export, damon, preds = tiny_deco
    monkeypatch.chdir(tmp_path)
    pred, gt, names, _ = preds["binary"]
    assert (gt > 0).any(1).all(), "every test image has contact"
    low, high = _thresholds(pred)
    metrics = _metrics_override(low, high)
    deco = _eval(export, damon, tmp_path, "deco", metrics, "convention=deco")
    ivlm = _eval(export, damon, tmp_path, "ivlm", metrics, "convention=interactvlm")
    printed = capsys.readouterr().out
    assert "convention=deco" in printed and "convention=interactvlm" in printed and "damon_binary/f1" in printed
    assert {"test/precision", "test/recall", "test/f1", "test/none/precision"} <= set(deco)
    assert not any("damon" in k for k in deco)
    assert {"test/damon_binary/f1", "test/damon_binary/precision", "test/damon_binary/recall"} <= set(ivlm)
    # each table holds the values its rules give on the checkpoint's own predictions
    for conv, got in (("deco", deco), ("interactvlm", ivlm)):
        for prefix, t in (("", low), ("none/", high)):
            p, r, f = contact_prf_per_image(pred, gt, t, conv)
            for key, v in (("precision", p), ("recall", r), ("f1", f)):
                assert got[f"test/{prefix}{key}"] == pytest.approx(float(v.mean()), abs=1e-6), (conv, prefix, key)
    # they differ where the rules say: an empty prediction scores P = 1 under deco, 0 under interactvlm ...
    assert deco["test/none/precision"] == 1.0 and ivlm["test/none/precision"] == 0.0
    assert deco["test/none/recall"] == ivlm["test/none/recall"] == 0.0
    # ... and agree where they must: with GT and predicted contact on every image, P, R and F1 are the same
    for key in ("precision", "recall", "f1"):
        assert deco[f"test/{key}"] == pytest.approx(ivlm[f"test/{key}"], abs=1e-6), key
    b = damon_binary_contact(pred, gt, names, low)
    for key in ("precision", "recall", "f1"):
        assert ivlm[f"test/damon_binary/{key}"] == pytest.approx(b[key], abs=1e-6), key
    # one entry per image (binary mode): the per-image F1 mean is the per-entry one
    assert ivlm["test/damon_binary/f1"] == pytest.approx(ivlm["test/f1"], abs=1e-6)

    # convention=both: one pass, the two tables side by side, the same values
    both = _eval(export, damon, tmp_path, "both", metrics, "convention=both")
    printed = capsys.readouterr().out
    assert "convention=both" in printed and "│ deco" not in printed  # columns, not rows, carry the convention
    for key in ("precision", "recall", "f1", "none/precision"):
        assert both[f"test/deco/{key}"] == pytest.approx(deco[f"test/{key}"], abs=1e-7)
        assert both[f"test/interactvlm/{key}"] == pytest.approx(ivlm[f"test/{key}"], abs=1e-7)
    assert both["test/interactvlm/damon_binary/f1"] == pytest.approx(ivlm["test/damon_binary/f1"], abs=1e-7)
    assert not any(k.startswith("test/deco/damon") for k in both)


def test_eval_semantic_mode_adds_the_semantic_tables(tiny_deco, tmp_path, monkeypatch, capsys):
    export, damon, preds = tiny_deco
    monkeypatch.chdir(tmp_path)
    pred, gt, names, objects = preds["semantic"]
    assert len(set(names)) < len(names), "some image has two objects"
    low, _ = _thresholds(pred)
    got = _eval(export, damon, tmp_path, "sem", "data.contact_mode=semantic", "convention=interactvlm",
                f"system.metrics=[{{name: contact_prf, threshold: {low}}}]")
    printed = capsys.readouterr().out
    assert "damon_semantic per object" in printed and "damon_semantic per category" in printed
    b = damon_binary_contact(pred, gt, names, low)
    s = damon_semantic_contact(pred, gt, objects, low)
    for key in ("precision", "recall", "f1"):
        assert got[f"test/damon_binary/{key}"] == pytest.approx(b[key], abs=1e-6), key
    assert got["test/damon_binary/images"] == len(set(names))
    assert got["test/damon_semantic/weighted_f1"] == pytest.approx(s["weighted_f1"], abs=1e-6)
    for name, row in zip(s["objects"], s["table"], strict=True):
        assert got[f"test/damon_semantic/object/{name}/n"] == row[0]
        assert got[f"test/damon_semantic/object/{name}/f1"] == pytest.approx(row[1], abs=1e-6)
    # per entry (contact_prf, = the weighted semantic F1) vs per image after the union over objects
    assert got["test/f1"] == pytest.approx(s["weighted_f1"], abs=1e-6)
    assert abs(b["f1"] - s["weighted_f1"]) > 1e-3
