"""zoo.metrics.reconstruction: object pose / Chamfer, body-object contact, mask IoU, penetration (hand values)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from zoo.core import registry
from zoo.metrics.reconstruction import (
    HOIContact,
    MaskIoU,
    ObjectPoseError,
    PenetrationMetric,
    chamfer_distance,
    rotation_error_deg,
)

RZ90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
EYE = torch.eye(3, dtype=torch.float64)


def _square(side: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat square in the y-z plane (normal x), centred at the origin, two triangles."""
    h = side / 2
    v = torch.tensor([[0, -h, -h], [0, h, -h], [0, h, h], [0, -h, h]], dtype=torch.float64)
    return v, torch.tensor([[0, 1, 2], [0, 2, 3]])


def _mesh(m: trimesh.Trimesh, shift=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(m.vertices + np.asarray(shift), dtype=torch.float64), torch.tensor(m.faces, dtype=torch.long)


def _placed(verts, R, t, s=1.0):
    return verts @ R.T * s + t


def test_rotation_error_by_hand():
    assert rotation_error_deg(RZ90, EYE) == pytest.approx(90.0)
    assert rotation_error_deg(EYE, EYE) == pytest.approx(0.0, abs=1e-5)
    assert rotation_error_deg(RZ90 @ RZ90, EYE) == pytest.approx(180.0)


def test_chamfer_of_a_square_shifted_along_its_normal():
    v, f = _square()
    dx = torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    assert chamfer_distance(v, f, v, f) == pytest.approx(0.0, abs=1e-9)
    # Both meshes are sampled from one seed, so every sample of the shifted square sits 1 cm across from
    # its twin; any other sample is farther (sqrt(1 cm^2 + in-plane offset^2)): each direction is 1 cm.
    assert chamfer_distance(v + dx, f, v, f, reduction="mean") == pytest.approx(0.01, rel=1e-4)
    assert chamfer_distance(v + dx, f, v, f) == pytest.approx(0.02, rel=1e-4)  # BEHAVE: the two summed
    with pytest.raises(ValueError, match="reduction must be 'sum' or 'mean'"):
        chamfer_distance(v, f, v, f, reduction="max")


def _pose_sample(name, R=None, t=None, s=None):
    v, f = _square()
    out = {"name": name, "object_verts": v, "object_faces": f}
    if R is not None:
        out.update(gt_R=R, gt_t=t, gt_scale=torch.tensor(s))
    return out


def _pose_result(R, t, s):
    v, f = _square()
    return {"R": R, "t": t, "scale": torch.tensor(s), "object_verts": _placed(v, R, t, s), "object_faces": f}


def test_object_pose_by_hand_averaged_and_skipped():
    gt_t = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    samples = [_pose_sample("a", EYE, gt_t, 1.0), _pose_sample("b", EYE, gt_t, 1.0), _pose_sample("no_gt")]
    results = [_pose_result(RZ90, gt_t + torch.tensor([0.03, 0.04, 0.0], dtype=torch.float64), 1.1),  # 90°, 5 cm
               _pose_result(EYE, gt_t + torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64), 1.0),  # 1 cm along x
               _pose_result(EYE, gt_t, 1.0)]
    m = ObjectPoseError()
    assert isinstance(m, ObjectPoseError) and m.main_key == "chamfer_cm"
    m.update(results[:2], samples[:2])
    m.update(results[2:], samples[2:])
    out = m.compute()
    assert out["count"] == 2 and out["skipped"] == 1
    assert out["rot_err_deg"] == pytest.approx((90.0 + 0.0) / 2)
    assert out["trans_err_cm"] == pytest.approx((5.0 + 1.0) / 2)
    assert out["scale_err"] == pytest.approx((0.1 + 0.0) / 2)
    gt_a = _placed(samples[0]["object_verts"], EYE, gt_t)
    cd_a = 100 * chamfer_distance(results[0]["object_verts"], results[0]["object_faces"], gt_a,
                                  samples[0]["object_faces"])
    assert cd_a > 5.0  # a 90°-rotated, 5 cm displaced square is far from its ground truth
    assert out["chamfer_cm"] == pytest.approx((cd_a + 2.0) / 2, rel=1e-4)


def test_object_pose_merge_state_equals_one_pass():
    gt_t = torch.zeros(3, dtype=torch.float64)
    s = [_pose_sample("a", EYE, gt_t, 1.0), _pose_sample("b", RZ90, gt_t, 1.0)]
    r = [_pose_result(RZ90, gt_t, 1.0), _pose_result(RZ90, gt_t, 2.0)]
    one, a, b = ObjectPoseError(n_samples=500), ObjectPoseError(n_samples=500), ObjectPoseError(n_samples=500)
    one.update(r, s)
    a.update(r[:1], s[:1])
    b.update(r[1:], s[1:])
    a.merge_state(b)
    for k, v in one.compute().items():
        assert a.compute()[k] == pytest.approx(float(v))
    assert one.compute()["scale_err"] == pytest.approx(0.5)  # (0 + |2/1 - 1|) / 2
    with pytest.warns(UserWarning, match="called before the ``update``"):  # torchmetrics' own warning
        assert math.isnan(ObjectPoseError().compute()["rot_err_deg"])


def _box_body():
    """A 10 cm box subdivided twice: vertex coordinates in {-5, -2.5, 0, 2.5, 5} cm; 9 vertices per face side."""
    return _mesh(trimesh.creation.box(extents=(0.1, 0.1, 0.1)).subdivide().subdivide())


def test_hoi_contact_on_a_box_touching_one_face():
    bv, bf = _box_body()
    on_face = bv[:, 0] > 0.05 - 1e-9  # the +x face's vertices
    assert int(on_face.sum()) == 25
    # A 1 m box touching the body's +x face: its vertices are >= 0.5 m from the body, only the surface is close.
    ov, of = _mesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)), shift=(0.05 + 0.5, 0.0, 0.0))
    result = {"body_verts": bv, "body_faces": bf, "object_verts": ov, "object_faces": of}
    far = {**result, "object_verts": ov + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)}
    half = on_face.clone()
    half[on_face.nonzero()[:, 0][::2]] = False  # 12 of the 25 face vertices labelled
    samples = [{"name": "all", "gt_human_contact": on_face.float()},
               {"name": "half", "gt_human_contact": half.float()},
               {"name": "far", "gt_human_contact": on_face.float()},
               {"name": "unlabelled"}]
    m = HOIContact()
    m.update([result, result, far, result], samples)
    out = m.compute()
    assert out["count"] == 3 and out["skipped"] == 1
    # all: P = R = F1 = 1; half: P = 12/25, R = 1, F1 = 2PR/(P+R); far: nothing predicted -> 0 (InteractVLM rule).
    p_half = 12 / 25
    f_half = 2 * p_half / (p_half + 1)
    assert out["precision"] == pytest.approx((1 + p_half + 0) / 3, abs=1e-8)
    assert out["recall"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-8)
    assert out["f1"] == pytest.approx((1 + f_half + 0) / 3, abs=1e-8)
    with pytest.raises(ValueError, match="has 3 gt_human_contact labels but the result's body has 98 vertices"):
        HOIContact().update([result], [{"gt_human_contact": torch.ones(3)}])


def test_mask_iou_by_hand():
    rows = torch.zeros(4, 4, dtype=torch.bool)
    rows[:2] = True  # 8 pixels
    cols = torch.zeros(4, 4, dtype=torch.bool)
    cols[:, :2] = True  # 8 pixels; 4 shared, union 12
    m = MaskIoU()
    m.update([{"object_silhouette": rows}, {"object_silhouette": cols}, {"object_silhouette": rows},
              {"object_silhouette": rows}],
             [{"object_mask": cols}, {"object_mask": cols}, {"object_mask": torch.zeros(4, 4, dtype=torch.bool)},
              {"name": "no mask"}])
    out = m.compute()
    assert out["iou"] == pytest.approx((4 / 12 + 1.0) / 2)
    assert out["count"] == 2 and out["skipped"] == 2
    with pytest.raises(ValueError, match=r"sample 0: object_silhouette \(2, 2\) and object_mask \(4, 4\) differ"):
        MaskIoU().update([{"object_silhouette": rows[:2, :2]}], [{"object_mask": cols}])
    with pytest.raises(ValueError, match="got 1 results for 2 samples"):
        MaskIoU().update([{"object_silhouette": rows}], [{"object_mask": cols}] * 2)


def test_penetration_metric_averages_depth_over_samples():
    box_v, box_f = _mesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)))
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    into = _mesh(sphere, shift=(0.5 + 0.05 - 0.01, 0.0, 0.0))  # 1 cm into the box's +x face
    apart = _mesh(sphere, shift=(0.5 + 0.05 + 0.01, 0.0, 0.0))
    results = [{"body_verts": box_v, "body_faces": box_f, "object_verts": o[0], "object_faces": o[1]}
               for o in (into, apart)]
    m = PenetrationMetric()
    assert isinstance(m, PenetrationMetric)
    m.update(results, [{}, {}])
    out = m.compute()
    assert out["count"] == 2 and out["skipped"] == 0
    assert out["depth_max_cm"] == pytest.approx((1.0 + 0.0) / 2, abs=0.01)
    assert 0 < out["volume_cm3"] < 20  # the 14.7 cm^3 cap, halved, on a 5 mm grid
    with pytest.raises(KeyError, match=r"results\[0\] \(sample 0\) lacks \['body_faces'\]"):
        PenetrationMetric().update([{"body_verts": box_v, "object_verts": box_v, "object_faces": box_f}], [{}])


def test_the_four_metrics_are_registered_with_their_main_keys():
    reg = registry.registered()["metric"]
    classes = {"object_pose": ObjectPoseError, "hoi_contact": HOIContact, "mask_iou": MaskIoU,
               "penetration": PenetrationMetric}
    for name, cls in classes.items():
        assert reg[name] is cls
        assert cls.main_key in cls.keys
    with pytest.raises(ValueError, match="eps must be > 0 metres"):
        HOIContact(eps=0)
