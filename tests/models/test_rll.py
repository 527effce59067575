"""Render-Localize-Lift as a part: shared-view deduplication is exact, cloud renders are cached per id,
surfaces refuse renderers without lift maps, targets and prompts check what they are given."""
import pytest
import torch

from zoo.core import registry
from zoo.models.losses import HumanContactLoss3D, MaskLoss2D, ObjectAffordanceLoss
from zoo.models.rll.pipeline import RenderLocalizeLift
from zoo.models.rll.prompts import LearnedPrompts
from zoo.models.rll.surfaces import SURFACES


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory):
    from zoo.body.synthetic import write_synthetic_body_models

    return str(write_synthetic_body_models(tmp_path_factory.mktemp("bm")))


def _rll(surface, seed=0):
    torch.manual_seed(seed)
    loc = registry.build("localizer", {"name": "mvloc_sam", "variant": "tiny", "image_size": 32, "tiny_patch": 4})
    lifter = registry.build("lifter", {"name": "camera_lifter", "num_views": surface.num_views, "hidden": 16})
    loss_3d = HumanContactLoss3D() if surface.shared else ObjectAffordanceLoss()
    return RenderLocalizeLift(surface, loc, lifter, MaskLoss2D(), loss_3d)


def _body(body_dir, tmp_path):
    return registry.build(SURFACES, {"name": "body", "renderer": {"name": "multiview", "view_set": "body", "image_size": 32,
                                                                  "cache_dir": str(tmp_path)},
                                     "body_model": {"name": "smpl", "model_dir": body_dir}})


def test_shared_views_decode_each_distinct_prompt_once_exactly(body_dir, tmp_path):
    rll = _rll(_body(body_dir, tmp_path))
    B = 5
    batch = {"contact_label": (torch.rand(B, 6890) > 0.9).float()}
    table = torch.randn(3, 256, requires_grad=True)
    ids = torch.tensor([2, 0, 2, 1, 0])
    calls = []
    decode = rll.localizer.decode
    rll.localizer.decode = lambda e, p, output_size=None: calls.append(p.shape[0]) or decode(e, p, output_size)
    dedup = rll(batch, table[ids], ids)
    each = rll(batch, table[ids], None)
    assert calls == [3 * 4, B * 4], "three distinct prompts decoded once each (x 4 views), then all five"
    for key in ("logits", "probs", "scores"):
        assert dedup[key].shape[0] == B
        torch.testing.assert_close(dedup[key], each[key], rtol=0, atol=1e-6)
    g1 = torch.autograd.grad(dedup["scores"].sum(), table)[0]
    g2 = torch.autograd.grad(each["scores"].sum(), table)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    losses = rll.losses(batch, dedup)
    assert set(losses) == {"loss", "loss_2d", "loss_3d", "loss_2d_focal", "loss_2d_dice", "loss_3d_focal",
                           "loss_3d_sparsity"}
    torch.testing.assert_close(losses["loss"], losses["loss_2d"] + losses["loss_3d"])


def test_body_targets_and_label_checks(body_dir, tmp_path):
    rll = _rll(_body(body_dir, tmp_path))
    batch = {"contact_label": torch.ones(2, 6890)}
    out = rll(batch, torch.randn(2, 256), torch.tensor([0, 1]))
    masks = rll.targets(rll.labels(batch, out, "t"), out)
    covered = out["lifts"][0].pix_to_elem >= 0
    assert masks.shape == (2, 4, 32, 32)
    assert bool((masks[:, ~covered] == -1).all()) and bool((masks[:, covered] == 1).all())
    with pytest.raises(ValueError, match=r"BodySurface.t: batch\['contact_label'\] has shape \(2, 100\), expected "
                                         r"\(B, 6890\) for the rendered body"):
        rll.labels({"contact_label": torch.ones(2, 100)}, out, "t")
    with pytest.raises(KeyError, match=r"BodySurface.t: batch is missing key 'contact_label'"):
        rll.surface.batch_size({}, "t")


def test_cloud_renders_and_embeddings_are_cached_per_id(tmp_path):
    surface = registry.build(SURFACES, {"name": "cloud", "renderer": {"name": "multiview", "view_set": "object",
                                                                       "image_size": 32}})
    rll = _rll(surface)
    calls = []
    render = surface.renderer.render_points
    surface.renderer.render_points = lambda p: calls.append(1) or render(p)
    g = torch.Generator().manual_seed(0)
    batch = {"points": torch.randn(2, 64, 3, generator=g), "affordance": torch.rand(2, 64, generator=g),
             "point_id": ["a", "b"]}
    out1 = rll(batch, torch.randn(2, 256))
    out2 = rll(batch, torch.randn(2, 256))
    assert len(calls) == 2, "each cloud is rendered once"
    assert out1["lifts"][0] is out2["lifts"][0] and out1["scores"].shape == (2, 64)
    losses = rll.losses(batch, out1)
    assert set(losses) >= {"loss", "loss_3d_dice", "loss_3d_mse"}
    surface.cache_clear()
    rll(batch, torch.randn(2, 256))
    assert len(calls) == 4


def test_surface_refuses_a_renderer_without_lift_maps(body_dir):
    with pytest.raises(ValueError) as e:
        registry.build(SURFACES, {"name": "body", "renderer": {"name": "cpu_raster"},
                                  "body_model": {"name": "smpl", "model_dir": body_dir}})
    assert str(e.value) == ("BodySurface: renderer 'cpu_raster' cannot serve Render-Localize-Lift: it lacks num_views, "
                            "camera_numbers, render_mesh, render_points (a fixed-view renderer with lift maps, "
                            "e.g. multiview)")


def test_learned_prompts():
    p = LearnedPrompts(classes=["chair", "wall"], key="object_name", dim=8)
    emb, ids = p({"object_name": ["wall", "chair", "wall"]}, 3, "MVLoc", "training_step")
    assert ids.tolist() == [1, 0, 1] and torch.equal(emb[0], p.embedding.weight[1])
    with pytest.raises(ValueError, match=r"^MVLoc.training_step: batch\['object_name'\] has class 'bed', not in the "
                                         r"prompt vocabulary \['chair', 'wall'\] \(system.prompts.classes\)$"):
        p({"object_name": ["bed"]}, 1, "MVLoc", "training_step")
    one = LearnedPrompts(dim=8)  # no key: one shared prompt
    assert one.class_names == ["contact"] and one({}, 4, "MVLoc", "x")[1].tolist() == [0, 0, 0, 0]
    later = LearnedPrompts(key="object_name", dim=8)
    assert not later.bound
    with pytest.raises(RuntimeError, match="the prompt vocabulary is not set"):
        later({"object_name": ["a"]}, 1, "MVLoc", "x")
    with pytest.raises(ValueError, match=r"classes has duplicates: \['a', 'a'\]"):
        LearnedPrompts(classes=["a", "a"])


def test_prompt_modes_lift_from_logits_and_loss_over_all_vertices(body_dir, tmp_path):
    """Default: the V gated tokens prompt every view together (InteractVLM); ``own`` is the zoo's earlier option.
    The lift takes the logits (clamp +-20, sigmoid on covered pixels); the human 3D loss averages over all vertices."""
    from zoo.models.localizer.mvloc_sam import view_prompt_sequences

    surface = _body(body_dir, tmp_path)
    rll = _rll(surface)
    assert rll.prompt_mode == "shared"
    own = RenderLocalizeLift(surface, rll.localizer, rll.lifter, MaskLoss2D(), HumanContactLoss3D(), prompt_mode="own")
    batch = {"contact_label": (torch.rand(2, 6890, generator=torch.Generator().manual_seed(0)) > 0.9).float()}
    prompts = torch.randn(2, 256)
    out, out_own = rll(batch, prompts), own(batch, prompts)
    views = surface.views(batch, rll.localizer, rll.cams.device, "t")
    emb = views.embeddings.repeat(2, 1, 1, 1)
    per_view = rll.lifter(prompts, rll.cams)
    size = tuple(out["logits"].shape[-2:])
    for mode, o in (("shared", out), ("own", out_own)):
        want = rll.localizer.decode(emb, view_prompt_sequences(per_view, mode), output_size=size)
        torch.testing.assert_close(o["logits"], want.reshape(2, 4, *size), rtol=0, atol=1e-5)
    assert (out["logits"] - out_own["logits"]).abs().max() > 1e-3
    # identity lifter, shared: V identical tokens per view (InteractVLM's no-lifter setting), not one token
    ident = registry.build("lifter", {"name": "identity", "num_views": 4})
    rid = RenderLocalizeLift(surface, rll.localizer, ident, MaskLoss2D(), HumanContactLoss3D())
    want = rll.localizer.decode(emb, prompts.repeat_interleave(4, 0)[:, None].expand(-1, 4, -1), output_size=size)
    torch.testing.assert_close(rid(batch, prompts)["logits"], want.reshape(2, 4, *size), rtol=0, atol=1e-5)
    # the lift sees the logits: clamp to +-20 and sigmoid, as the official predictor
    lift = out["lifts"][0]
    torch.testing.assert_close(out["scores"], lift.lift(torch.sigmoid(out["logits"].clamp(-20, 20)))[0], rtol=0,
                               atol=1e-6)
    # human 3D loss over all 6890 vertices (unseen at 1e-6); vertices=seen keeps the seen ones only
    seen = out["seen"][0]
    assert 0 < int(seen.sum()) < 6890
    losses = rll.losses(batch, out)
    ref = HumanContactLoss3D()(out["scores"], batch["contact_label"])
    torch.testing.assert_close(losses["loss_3d"], ref["loss"], rtol=1e-6, atol=0)
    rll.loss_3d = HumanContactLoss3D(vertices="seen")
    ref_seen = HumanContactLoss3D()(out["scores"][:, seen], batch["contact_label"][:, seen])
    torch.testing.assert_close(rll.losses(batch, out)["loss_3d"], ref_seen["loss"], rtol=1e-6, atol=0)
    assert abs(ref_seen["loss"].item() - ref["loss"].item()) > 1e-4
    with pytest.raises(ValueError, match="prompt_mode must be one of shared, own; got 'each'"):
        RenderLocalizeLift(surface, rll.localizer, rll.lifter, MaskLoss2D(), HumanContactLoss3D(), prompt_mode="each")
