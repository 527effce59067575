"""Lift maps: hand-computed aggregation, gradients, masks, round trips on the synthetic body, disk cache."""
import pytest
import torch

from zoo.render.lift import LiftMap, cached_lift_map, lift_map_key


def _tri_map():
    """One triangle (vertices 0, 1, 2) plus an unused vertex 3; two views of 1 x 2 pixels."""
    p2f = torch.tensor([[[0, 0]], [[0, -1]]])
    bary = torch.zeros(2, 1, 2, 3)
    bary[0, 0, 0] = torch.tensor([0.5, 0.5, 0.0])
    bary[0, 0, 1] = torch.tensor([0.0, 0.2, 0.8])
    bary[1, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    return LiftMap("mesh", p2f, bary, torch.tensor([[0, 1, 2]]), 4)


def _loop_lift(lm, probs):
    """Straightforward reference: per sample, per view, per pixel."""
    B = probs.shape[0]
    out = torch.zeros(B, lm.num_elems, dtype=torch.float64)
    for b in range(B):
        count = torch.zeros(lm.num_elems, dtype=torch.float64)
        for v in range(lm.num_views):
            num = torch.zeros(lm.num_elems, dtype=torch.float64)
            den = torch.zeros(lm.num_elems, dtype=torch.float64)
            for (r, c) in torch.nonzero(lm.pix_to_elem[v] >= 0).tolist():
                e = int(lm.pix_to_elem[v, r, c])
                ids, ws = (lm.faces[e], lm.bary[v, r, c]) if lm.kind == "mesh" else ([e], [1.0])
                for i, w in zip(ids, ws, strict=True):
                    num[int(i)] += float(w) * float(probs[b, v, r, c])
                    den[int(i)] += float(w)
            seen = den > 0
            out[b, seen] += num[seen] / den[seen]
            count += seen.double()
        out[b] = torch.where(count > 0, out[b] / count.clamp(min=1), out[b])
    return out


def test_lift_hand_computed_with_unseen_vertex():
    lm = _tri_map()
    probs = torch.tensor([[[[0.2, 0.6]], [[0.9, 0.7]]]], requires_grad=True)
    scores, seen = lm.lift(probs)
    # view 0: v0 = .5*.2/.5 = .2; v1 = (.5*.2 + .2*.6)/.7; v2 = .8*.6/.8 = .6; view 1 sees v0 only (0.9).
    expected = torch.tensor([[(0.2 + 0.9) / 2, 0.22 / 0.7, 0.6, 0.0]])
    assert torch.allclose(scores, expected, atol=1e-6)
    assert seen.tolist() == [True, True, True, False]
    scores.sum().backward()
    grad = torch.tensor([[[[0.5 + 0.5 / 0.7, 0.2 / 0.7 + 1.0]], [[0.5, 0.0]]]])
    assert torch.allclose(probs.grad, grad, atol=1e-6)


def test_lift_matches_loop_on_random_maps_and_batches():
    g = torch.Generator().manual_seed(0)
    V, F, nV, H, W = 30, 40, 3, 6, 7
    faces = torch.randint(0, V - 5, (F, 3), generator=g)  # the last 5 vertices are never seen
    p2f = torch.randint(-1, F, (nV, H, W), generator=g)
    bary = torch.rand(nV, H, W, 3, generator=g)
    bary = bary / bary.sum(-1, keepdim=True)
    lm = LiftMap("mesh", p2f, bary, faces, V)
    probs = torch.rand(4, nV, H, W, generator=g)
    scores, seen = lm.lift(probs)
    assert torch.allclose(scores.double(), _loop_lift(lm, probs), atol=1e-5)
    assert not seen[-5:].any() and (scores[:, -5:] == 0).all()
    # Each sample of a batch lifts as it would alone.
    assert torch.allclose(lm.lift(probs[2:3])[0], scores[2:3], atol=1e-6)
    pm = LiftMap("points", torch.randint(-1, 12, (nV, H, W), generator=g), None, None, 15)
    ps, pseen = pm.lift(probs)
    assert torch.allclose(ps.double(), _loop_lift(pm, probs), atol=1e-5)
    assert pseen.tolist() == [bool((pm.pix_to_elem == i).any()) for i in range(15)]


def test_lift_from_logits_clamps_and_touches_covered_pixels_only():
    lm = _tri_map()
    # view 1 pixel (0, 1) is background: a NaN there must not reach the scores (no full-image sigmoid)
    logits = torch.tensor([[[[0.0, 45.0]], [[-30.0, float("nan")]]]], requires_grad=True)
    scores, seen = lm.lift(logits, from_logits=True)
    assert torch.isfinite(scores).all()
    probs = torch.sigmoid(logits.detach().nan_to_num(0.0).clamp(-20, 20))
    torch.testing.assert_close(scores, lm.lift(probs)[0], rtol=0, atol=1e-7)
    scores.sum().backward()
    # clamped logits (45 and -30, beyond +-20) get no gradient; the covered logit 0 does
    assert logits.grad[0, 0, 0, 0] > 0 and logits.grad[0, 0, 0, 1] == 0 and logits.grad[0, 1, 0, 0] == 0
    assert logits.grad[0, 1, 0, 1] == 0
    with pytest.raises(ValueError, match=r"logits must be \(B, 2, H, W\), got \(1, 3, 1, 2\)"):
        lm.lift(torch.zeros(1, 3, 1, 2), from_logits=True)


def test_lift_resizes_probs_bilinearly():
    lm = _tri_map()
    probs = torch.full((2, 2, 4, 8), 0.3)
    scores, seen = lm.lift(probs)
    assert torch.allclose(scores[:, seen], torch.full((2, 3), 0.3), atol=1e-6)
    with pytest.raises(ValueError, match=r"probs must be \(B, 2, H, W\), got \(2, 3, 4, 8\)"):
        lm.lift(torch.zeros(2, 3, 4, 8))


def test_to_masks_soft_hard_and_points():
    lm = _tri_map()
    labels = torch.tensor([[1.0, 0.0, 1.0, 5.0]])
    soft = lm.to_masks(labels)
    assert soft.shape == (1, 2, 1, 2)
    assert torch.allclose(soft[0, 0, 0], torch.tensor([0.5, 0.8]))
    assert soft[0, 1, 0].tolist() == [1.0, -1.0]
    hard = lm.to_masks(labels, background=7.0, hard=True)
    # Pixel (0,0) ties v0/v1 at 0.5 and takes the first; pixel (0,1) is nearest v2.
    assert hard[0, 0, 0].tolist() == [1.0, 1.0] and hard[0, 1, 0].tolist() == [1.0, 7.0]
    pm = LiftMap("points", torch.tensor([[[2, -1], [0, 2]]]), None, None, 3)
    m = pm.to_masks(torch.tensor([[0.1, 0.2, 0.3]]), background=0.0)
    assert torch.allclose(m[0, 0], torch.tensor([[0.3, 0.0], [0.1, 0.3]]))
    with pytest.raises(ValueError, match=r"labels must be \(B, 4\), got \(1, 3\)"):
        lm.to_masks(torch.zeros(1, 3))


def test_bad_maps_raise():
    with pytest.raises(ValueError, match="kind must be 'mesh' or 'points'"):
        LiftMap("mesh2", torch.zeros(1, 2, 2), None, None, 3)
    with pytest.raises(ValueError, match=r"bary must be \(1, 2, 2, 3\)"):
        LiftMap("mesh", torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), torch.zeros(1, 3), 3)
    with pytest.raises(ValueError, match="point id 5 >= num_elems=3"):
        LiftMap("points", torch.full((1, 2, 2), 5), None, None, 3)


@pytest.fixture(scope="module")
def body_map(tmp_path_factory):
    from zoo.body.canonical import canonical_body
    from zoo.body.model import BodyModel
    from zoo.body.synthetic import write_synthetic_body_models
    from zoo.render.cameras import VIEW_SETS
    from zoo.render.multiview import build_lift_map

    root = write_synthetic_body_models(tmp_path_factory.getbasetemp() / "render_body_models")
    verts, faces = canonical_body(BodyModel(str(root), model_type="smpl"))
    return verts, build_lift_map("mesh", verts, VIEW_SETS["body"], 256, faces=faces)


def _iou(a, b):
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def test_round_trip_recovers_body_labels(body_map):
    verts, lm = body_map
    assert lm.num_views == 4 and lm.image_size == (256, 256) and lm.num_elems == verts.shape[0]
    # A contact region: the right arm and hand (x < -0.3) and the left foot.
    label = ((verts[:, 0] < -0.3) | ((verts[:, 1] < verts[:, 1].min() + 0.1) & (verts[:, 0] > 0))).float()[None]
    for hard in (False, True):
        scores, seen = lm.lift(lm.to_masks(label, hard=hard).clamp(min=0))
        assert seen.float().mean() > 0.5
        assert _iou(scores[0, seen] >= 0.5, label[0, seen] > 0.5) >= 0.95
    # Lifting the masks of a constant label returns that constant on every seen vertex.
    s, seen = lm.lift(lm.to_masks(torch.full_like(label, 0.7)).clamp(min=0))
    assert torch.allclose(s[0, seen], torch.full_like(s[0, seen], 0.7), atol=1e-5)


def test_round_trip_on_points_is_exact():
    from zoo.render.cameras import VIEW_SETS
    from zoo.render.multiview import build_lift_map
    from zoo.render.points import normalize_unit_sphere

    g = torch.Generator().manual_seed(1)
    pts = normalize_unit_sphere(torch.randn(2048, 3, generator=g) * torch.tensor([1.0, 0.6, 0.3]))
    lm = build_lift_map("points", pts, VIEW_SETS["object"], 128, radius=0.05)
    label = (pts[:, 0] > 0.2).float()[None]
    scores, seen = lm.lift(lm.to_masks(label).clamp(min=0))
    assert seen.float().mean() > 0.3
    assert torch.equal(scores[0, seen], label[0, seen])
    assert _iou(scores[0, seen] >= 0.5, label[0, seen] > 0.5) == 1.0


def test_save_load_and_cache(tmp_path):
    lm = _tri_map()
    lm.save(tmp_path / "m.pt")
    back = LiftMap.load(tmp_path / "m.pt")
    assert back.kind == "mesh" and back.num_elems == 4
    assert torch.equal(back.pix_to_elem, lm.pix_to_elem) and torch.equal(back.bary, lm.bary)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="bad.pt is not a readable lift map"):
        LiftMap.load(tmp_path / "bad.pt")

    calls = []

    def builder():
        calls.append(1)
        return _tri_map()

    key = ("mesh", torch.arange(6.0), [[2, 45, 315, 0, 0]], 64, "cpu_fast")
    a = cached_lift_map(key, builder, tmp_path / "cache")
    b = cached_lift_map(key, builder, tmp_path / "cache")
    assert len(calls) == 1 and torch.equal(a.bary, b.bary)
    f = tmp_path / "cache" / f"{lift_map_key(*key)}.pt"
    assert f.is_file()
    f.write_bytes(f.read_bytes()[:50])  # truncate: a corrupt cache file is rebuilt with a warning
    with pytest.warns(UserWarning, match="unreadable, rebuilding"):
        c = cached_lift_map(key, builder, tmp_path / "cache")
    assert len(calls) == 2 and torch.equal(c.pix_to_elem, lm.pix_to_elem)
    assert LiftMap.load(f).num_elems == 4  # and rewritten
    # Any change of geometry, views, size or backend changes the key.
    assert len({lift_map_key(*key), lift_map_key("mesh", torch.arange(6.0) + 1, *key[2:]),
                lift_map_key(*key[:2], [[2, 45, 45, 0, 0]], *key[3:]), lift_map_key(*key[:3], 128, "cpu_fast"),
                lift_map_key(*key[:4], "pytorch3d")}) == 5


def test_default_cache_dir_is_under_the_zoo_cache_root(monkeypatch, tmp_path):
    from zoo.render.lift import default_cache_dir

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "lift_maps"
    monkeypatch.delenv("ZOO_HOME")
    assert default_cache_dir().parts[-3:] == (".cache", "hoi-zoo", "lift_maps")


def test_default_cache_is_used_when_none_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    key = ("mesh", torch.arange(3.0), 16)
    cached_lift_map(key, _tri_map)
    assert (tmp_path / "lift_maps" / f"{lift_map_key(*key)}.pt").is_file()
