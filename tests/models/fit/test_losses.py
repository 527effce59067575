"""Tests for zoo.models.fit.losses: hand-computed values on tiny examples and gradient signs."""

import math

import pytest
import torch

from zoo.models.fit import losses as L


def softplus_by_hand(x):
    return math.log(1 + math.exp(x))


# ---------------------------------------------------------------------------------------------------------------
# PHOSA


def test_phosa_weight_tables():
    assert L.PHOSA_WEIGHTS == {"inter": 20, "depth": 1, "inter_part": 50, "sil": 10, "collision": 2, "scale": 100,
                               "scale_person": 100}
    assert L.PHOSA_CATEGORY_WEIGHTS["bicycle"] == L.PHOSA_WEIGHTS
    for cat, w in L.PHOSA_CATEGORY_WEIGHTS.items():
        assert set(w) == set(L.PHOSA_WEIGHTS), cat
    assert set(L.PHOSA_MEAN_INTRINSIC_SCALE) <= set(L.PHOSA_BBOX_EXPANSION)
    assert L.INTERACTVLM_WEIGHTS == {"mask": 5.0, "centroid": 1e-4, "contact": 10.0}


SIL = torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.2, 0.0], [1.0, 1.0, 1.0]])
KEEP = torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]])


def test_silhouette_loss_hand_computed():
    # keep*sil - ref = [[-.5, 0, 0], [0, .2, 0], [0, 0, 1]]  -> 0.25 + 0.04 + 1 = 1.29 over 7 kept pixels
    assert L.silhouette_loss(SIL, KEEP).item() == pytest.approx(1.29 / 7)
    assert L.silhouette_loss(SIL, KEEP, normalize=False).item() == pytest.approx(1.29)
    batched = L.silhouette_loss(torch.stack((SIL, (KEEP > 0).float())), torch.stack((KEEP, KEEP)))
    assert batched.shape == (2,)
    assert batched[0].item() == pytest.approx(1.29 / 7) and batched[1].item() == pytest.approx(0.0)


def test_silhouette_loss_gradient_signs():
    sil = SIL.clone().requires_grad_(True)
    L.silhouette_loss(sil, KEEP).backward()
    g = sil.grad
    assert g[0, 0] < 0  # under-covered object pixel: grow
    assert g[2, 2] > 0  # covered background pixel: shrink
    assert g[0, 2] == 0 and g[2, 0] == 0  # ignored (-1) pixels
    assert g[0, 1] == 0  # already right


def test_edge_chamfer_loss_hand_computed():
    keep = torch.zeros(5, 5)
    keep[1, 1] = 1.0  # target: one pixel; its edge (kernel 3) is the 8-neighbour ring rows/cols 0..2
    D = L.edge_distance_map(keep, kernel_size=3, power=0.5)  # plain Euclidean distance to the ring
    assert D[1, 1].item() == pytest.approx(1.0) and D[0, 0].item() == 0.0
    assert D[4, 1].item() == pytest.approx(2.0) and D[4, 4].item() == pytest.approx(math.hypot(2, 2))
    sil = torch.zeros(5, 5)
    sil[4, 0] = 1.0  # its edge pixels (3,0), (3,1), (4,1) lie at distance 1, 1, 2 from the ring
    assert L.edge_chamfer_loss(sil, keep, kernel_size=3, power=0.5).item() == pytest.approx(4.0)
    # default power 0.25 -> sqrt of the distance
    assert L.edge_chamfer_loss(sil, keep, kernel_size=3).item() == pytest.approx(2 + math.sqrt(2))
    # a silhouette equal to the target has its edge on the ring: zero
    assert L.edge_chamfer_loss(keep, keep, kernel_size=3).item() == pytest.approx(0.0)


def test_offscreen_loss_hand_computed():
    K = torch.tensor([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    v = torch.tensor([[0.0, 0, 1], [1.0, 0, 1], [0, -2.0, 1], [0, 0, -1.0], [0, 0, 150.0]])
    # on screen: 0; x_n = 2: 1; y_n = -4: 3; behind: 1; 50 beyond far=100
    assert L.offscreen_loss(v, K, (10, 10)).item() == pytest.approx(55.0)
    assert L.offscreen_loss(v[:1], K, (10, 10)).item() == 0.0
    assert L.offscreen_loss(torch.stack((v, v[[0, 0, 0, 0, 0]])), K, (10, 10)).tolist() == pytest.approx([55.0, 0])


def _depth_case():
    depth_a = torch.tensor([[3.0, 3.0, 3.0]])
    depth_b = torch.tensor([[2.0, 4.0, 5.5]])
    mask_a = torch.tensor([[True, True, False]])
    mask_b = torch.tensor([[False, True, True]])
    return depth_a, depth_b, mask_a, mask_b


def test_depth_ordinal_loss_hand_computed():
    da, db, ma, mb = _depth_case()
    ones = torch.ones(1, 3, dtype=torch.bool)
    # pixel 0: a in front by the masks, b in front in the render, gap 1 -> log(1 + e^1)
    # pixel 2: b in front by the masks, a rendered in front, gap 2.5 clamped to 2 -> log(1 + e^2)
    # 4 ordered pairs overlap ((a,a), (b,b), (a,b), (b,a))
    expected = (softplus_by_hand(1.0) + softplus_by_hand(2.0)) / 4
    assert L.depth_ordinal_loss(da, db, ma, mb, ones, ones).item() == pytest.approx(expected, rel=1e-6)
    assert L.depth_ordinal_loss(da, db, ma, mb).item() == pytest.approx(expected, rel=1e-6)  # sils from depth > 0
    # b not rendered at pixel 2: that pixel drops out, the pair count stays 4
    sil_b = torch.tensor([[True, True, False]])
    assert L.depth_ordinal_loss(da, db, ma, mb, ones, sil_b).item() == pytest.approx(softplus_by_hand(1.0) / 4)
    # pytorch3d-style background (-1) handled by the default silhouettes
    db_bg = db.clone()
    db_bg[0, 2] = -1.0
    assert L.depth_ordinal_loss(da, db_bg, ma, mb).item() == pytest.approx(softplus_by_hand(1.0) / 4)
    # no overlap between the renders: only (a,a), (b,b) count, no loss; nothing rendered: 0 (not NaN)
    sa, sb = torch.tensor([[True, False, False]]), torch.tensor([[False, False, True]])
    assert L.depth_ordinal_loss(da, db, ma, mb, sa, sb).item() == 0.0
    none = torch.zeros(1, 3, dtype=torch.bool)
    assert L.depth_ordinal_loss(da, db, ma, mb, none, none).item() == 0.0
    # consistent order: zero
    assert L.depth_ordinal_loss(torch.tensor([[1.0, 1, 9]]), torch.tensor([[2.0, 2, 1]]), ma, mb).item() == 0.0


def test_depth_ordinal_loss_batched_and_gradient():
    da, db, ma, mb = _depth_case()
    da = da.clone().requires_grad_(True)
    db = db.clone().requires_grad_(True)
    out = L.depth_ordinal_loss(torch.stack((da, da)), torch.stack((db, db + 10)), torch.stack((ma, ma)),
                               torch.stack((mb, mb)))
    assert out.shape == (2,)
    # second sample: b 10 further back. Pixel 0 now agrees with the masks; at pixel 2 the masks put b in front but
    # a is rendered in front, gap 12.5 clamped to 2
    assert out[1].item() == pytest.approx(softplus_by_hand(2.0) / 4)
    out[0].backward()
    assert da.grad[0, 0] > 0 and db.grad[0, 0] < 0  # a should come forward at pixel 0, b go back
    assert da.grad[0, 2] == 0 and db.grad[0, 2] == 0  # pixel 2's gap 2.5 is clamped at 2: no gradient


def _cube(c, h=0.1):
    signs = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    return torch.tensor(c) + h * signs


K100 = torch.tensor([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])


def test_project_bbox_and_gates_hand_computed():
    box = L.project_bbox(torch.tensor([[0.0, 0.0, 2.0], [0.2, 0.1, 2.0]]), K100, expansion=1.0)
    # u in [50, 60], v in [50, 55]; doubled half-extents about (55, 52.5)
    assert box.tolist() == pytest.approx([45.0, 47.5, 65.0, 57.5])
    a, b = torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3])
    assert L.bbox_iou(a, b).item() == pytest.approx(1 / 7)
    assert L.bbox_overlap(a, torch.tensor([2.0, 0, 3, 1]))  # touching counts
    assert not L.bbox_overlap(a, torch.tensor([2.1, 0, 3, 1]))
    assert L.depth_gap(_cube([0, 0, 2.0]), _cube([0, 0, 5.0])).item() == pytest.approx(2.8)
    assert L.depth_gap(_cube([0, 0, 2.0]), _cube([0, 0, 2.1])).item() == 0.0


def test_interaction_loss_hand_computed():
    human = _cube([0.0, 0.0, 2.0])
    near = _cube([0.1, 0.0, 2.0])
    assert L.interaction_loss(human, near, K100).item() == pytest.approx(0.01 / 3)
    assert L.interaction_loss(human, _cube([1.0, 0.0, 2.0]), K100).item() == 0.0  # boxes apart
    far = _cube([0.0, 0.0, 5.0])
    assert L.interaction_loss(human, far, K100, z_threshold=1.0).item() == 0.0  # z gap 2.8
    assert L.interaction_loss(human, far, K100, z_threshold=3.0).item() == pytest.approx(3.0)
    assert L.interaction_loss(human, _cube([1.0, 0.0, 2.0]), None).item() == pytest.approx(1 / 3)  # no gate
    # gate by parts: only the 4 vertices at x = -0.1 (u = 45); the object at x in [0.9, 1.1] is apart -> 0, and an
    # expansion that reaches it turns the loss on
    parts = {"left": torch.arange(4)}
    obj = _cube([0.6, 0.0, 2.0])
    assert L.interaction_loss(human, obj, K100, human_parts=parts).item() == 0.0
    assert L.interaction_loss(human, obj, K100, human_parts=parts, expansion=40.0).item() == pytest.approx(0.12)


def test_interaction_loss_gradient_pulls_together():
    human = _cube([0.0, 0.0, 2.0])
    obj = _cube([0.1, 0.0, 2.0]).requires_grad_(True)
    L.interaction_loss(human, obj, K100).backward()
    assert (obj.grad[:, 0] > 0).all() and obj.grad[:, 1:].abs().max() == 0


def test_part_interaction_loss_hand_computed():
    human = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.2, 2.0], [1.0, 1.0, 2.0], [1.0, 1.0, 2.0]])
    obj = torch.tensor([[5.0, 5.0, 5.0], [5.0, 5.0, 5.0], [0.0, 0.05, 2.0], [0.3, 0.2, 2.0]])
    pairs = [(torch.tensor([0, 1]), torch.tensor([2, 3])), (torch.tensor([2, 3]), torch.tensor([0, 1]))]
    p1 = (0.15**2 + 0.025**2) / 3  # centroids (0, 0.1, 2) and (0.15, 0.125, 2)
    p2 = (16 + 16 + 9) / 3  # (1, 1, 2) and (5, 5, 5)
    assert L.part_interaction_loss(human, obj, pairs).item() == pytest.approx((p1 + p2) / 2)
    # with the gate: pair 2's boxes (u = 100 vs 150) are apart; pair 1's touch at u = 50
    assert L.part_interaction_loss(human, obj, pairs, K100).item() == pytest.approx(p1)
    assert L.part_interaction_loss(human, obj, pairs[1:], K100).item() == 0.0
    assert L.part_interaction_loss(human, obj, [], K100).item() == 0.0


def test_scale_prior_loss():
    s = torch.tensor([1.2, 0.5])
    assert L.scale_prior_loss(s, 0.91).tolist() == pytest.approx([0.29**2, 0.41**2])
    assert L.scale_prior_loss(s, 0.91, std=0.1).tolist() == pytest.approx([29**2 / 100, 41**2 / 100])
    s = torch.tensor(1.2, requires_grad=True)
    L.scale_prior_loss(s, 1.0).backward()
    assert s.grad.item() == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------------------------
# InteractVLM


S_IOU = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
M_IOU = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_soft_iou_loss_hand_computed():
    # intersection 1.5; |s| = 2, |m| = 2; soft union 2.5; release "union" 4
    assert L.soft_iou_loss(S_IOU, M_IOU).item() == pytest.approx(1 - 1.5 / 2.5)
    assert L.soft_iou_loss(S_IOU, M_IOU, union="sum").item() == pytest.approx(1 - 1.5 / 4)
    assert L.soft_iou_loss(M_IOU, M_IOU.bool()).item() == pytest.approx(0.0)
    assert L.soft_iou_loss(M_IOU, M_IOU, union="sum").item() == pytest.approx(0.5)
    assert L.soft_iou_loss(torch.zeros(3, 3), torch.zeros(3, 3)).item() == 0.0
    b = L.soft_iou_loss(torch.stack((S_IOU, M_IOU)), torch.stack((M_IOU, M_IOU)))
    assert b.tolist() == pytest.approx([0.4, 0.0])
    with pytest.raises(ValueError, match="union"):
        L.soft_iou_loss(S_IOU, M_IOU, union="dice")


def test_soft_iou_loss_gradient_signs():
    s = S_IOU.clone().requires_grad_(True)
    L.soft_iou_loss(s, M_IOU).backward()
    assert s.grad[0, 1] < 0  # inside the mask, under-covered
    assert s.grad[1, 1] > 0  # outside the mask
    # d/ds at an in-mask pixel is -1/U = -0.4; outside it is I/U^2 = 0.24
    assert s.grad[0, 1].item() == pytest.approx(-1 / 2.5) and s.grad[1, 1].item() == pytest.approx(1.5 / 6.25)


def test_centroid_loss_hand_computed():
    s = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])  # weighted centre (7/4, 7/4)
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # bbox centre (0.5, 0.5)
    assert L.centroid_loss(s, m).item() == pytest.approx(2 * 1.25**2)
    assert L.centroid_loss(s, m, target="mass").item() == pytest.approx(2 * (7 / 4 - 1 / 3) ** 2)
    assert L.centroid_loss(torch.zeros(3, 3), m).item() == pytest.approx(2 * 1.0**2)  # empty -> (1.5, 1.5)
    b = L.centroid_loss(torch.stack((s, m)), torch.stack((m, m)))
    assert b.tolist() == pytest.approx([3.125, 2 * (1 / 3 - 0.5) ** 2])
    with pytest.raises(ValueError, match="empty"):
        L.centroid_loss(s, torch.zeros(3, 3))


def test_centroid_loss_gradient_signs():
    s = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    L.centroid_loss(s, m).backward()
    assert s.grad[0, 0] < 0 and s.grad[2, 2] > 0


def test_contact_loss_hand_computed():
    vh = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    ch = torch.tensor([1.0, 0.5])
    vo = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    co = torch.tensor([0.2, 1.0])
    # weights 0.2, 1, 0.1, 0.5 (sum 1.8 = 1.5 * 1.2); distances 3, 4, sqrt 10, sqrt 17
    expected = (0.2 * 3 + 1 * 4 + 0.1 * math.sqrt(10) + 0.5 * math.sqrt(17)) / 1.8
    assert L.contact_loss(vh, ch, vo, co).item() == pytest.approx(expected, rel=1e-6)
    # object threshold 0.3 (release): the 0.2 vertex drops out
    assert L.contact_loss(vh, ch, vo, co, object_threshold=0.3).item() == pytest.approx(
        (4 + 0.5 * math.sqrt(17)) / 1.5, rel=1e-6)
    assert L.contact_loss(vh, ch, vo, co, human_threshold=0.5).item() == pytest.approx((0.6 + 4) / 1.2, rel=1e-6)
    assert L.contact_loss(vh, torch.zeros(2), vo, co).item() == 0.0
    b = L.contact_loss(torch.stack((vh, vh)), torch.stack((ch, ch)), torch.stack((vo, vh)), torch.stack((co, co)))
    assert b[0].item() == pytest.approx(expected, rel=1e-6)
    assert b[1].item() == pytest.approx((1 * 0.2 * 0 + 1 * 1 * 1 + 0.5 * 0.2 * 1 + 0.5 * 1 * 0) / 1.8, rel=1e-6)
    with pytest.raises(ValueError, match="contact_loss"):
        L.contact_loss(vh, ch[:1], vo, co)


def test_contact_loss_gradient_signs():
    vh = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    vo = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 4.0]], requires_grad=True)
    L.contact_loss(vh, torch.tensor([1.0, 0.5]), vo, torch.tensor([0.2, 1.0])).backward()
    assert vo.grad[0, 1] > 0 and vo.grad[1, 2] > 0  # moving toward the body (down y, down z) lowers the loss
