"""Synthetic objects: exact point counts, affordance fields that follow the geometry, determinism."""
import numpy as np
import pytest

from zoo.data.formats import AFFORDANCES
from zoo.data.synthetic.objects import (
    CLASS_AFFORDANCES,
    OBJECT_CLASSES,
    affordance_falloff,
    make_object,
    sample_surface,
)


def test_falloff_hand_values():
    region = np.array([[0.0, 0.0, 0.0]])
    pts = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.2, 0.0]])
    assert np.allclose(affordance_falloff(pts, region, 0.1), [1.0, np.exp(-1.0), np.exp(-4.0)])
    assert np.allclose(affordance_falloff(pts, np.zeros((0, 3)), 0.1), 0.0)


def test_sample_surface_on_unit_square_is_uniform():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 5], [0.001, 0, 5], [0, 0.001, 5]])
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])  # the tiny far triangle gets ~no samples
    pts, nrm, fid = sample_surface(v, f, 4000, np.random.default_rng(0))
    assert pts.shape == (4000, 3) and (fid != 2).mean() > 0.999
    sq = pts[fid != 2]
    assert np.allclose(sq[:, 2], 0) and abs(sq[:, 0].mean() - 0.5) < 0.02 and abs(sq[:, 1].mean() - 0.5) < 0.02
    assert np.allclose(np.abs(nrm[fid != 2, 2]), 1.0)


@pytest.mark.parametrize("name", OBJECT_CLASSES)
def test_every_class_is_well_formed(name):
    o = make_object(name, 7)
    assert o.points.shape == (2048, 3) and o.affordance.shape == (2048, len(AFFORDANCES))
    assert o.affordance.dtype == np.float32 and (o.affordance >= 0).all() and (o.affordance <= 1).all()
    for a in AFFORDANCES:
        col = o.values(a)
        if a in CLASS_AFFORDANCES[name]:
            assert col.max() > 0.99, (name, a)  # the functional region is sampled
            assert (col > 0.5).mean() < 0.8, (name, a)  # and it is a region, not everything
        else:
            assert col.max() == 0.0, (name, a)
    assert o.faces.max() < len(o.verts) and len(o.face_colors) == len(o.faces)
    again = make_object(name, 7)
    assert np.array_equal(o.points, again.points) and np.array_equal(o.affordance, again.affordance)
    other = make_object(name, 8)
    assert not np.allclose(np.ptp(o.verts, 0), np.ptp(other.verts, 0))  # instances differ in size


def test_mug_grasp_on_handle_not_on_far_side():
    for seed in range(3):
        o = make_object("Mug", seed, yaw=0.0)  # handle on +x before rotation
        handle = o.part_mask("handle")
        far = o.part_mask("outer") & (o.points[:, 0] < -0.5 * o.dims["radius"])
        assert o.values("grasp")[handle].mean() > 0.8
        assert o.values("grasp")[far].mean() < 0.1
        assert o.values("contain")[o.part_mask("inner")].mean() > 0.8
        assert o.values("contain")[o.part_mask("outer")].max() == 0.0
        assert o.values("pour")[o.part_mask("rim")].mean() > 0.8


def test_chair_sit_on_seat_top_only():
    o = make_object("Chair", 3)
    assert o.values("sit")[o.part_mask("seat_top")].mean() > 0.95
    assert o.values("sit")[o.part_mask("legs")].mean() < 0.05
    assert o.values("support")[o.part_mask("back_front")].mean() > o.values("support")[o.part_mask("seat")].mean()


def test_knife_and_laptop_regions():
    k = make_object("Knife", 0, yaw=0.0)
    assert k.values("grasp")[k.part_mask("handle")].mean() > 0.95
    assert k.values("grasp")[k.points[:, 0] > 0.1].max() < 0.05
    tip = k.points[:, 0] > 0.9 * k.points[:, 0].max()
    assert k.values("stab")[tip].mean() > 0.8 and k.values("stab")[k.part_mask("handle")].max() < 1e-3
    lap = make_object("Laptop", 0)
    assert lap.values("display")[lap.part_mask("screen")].mean() > 0.95
    assert lap.values("press")[lap.part_mask("keyboard")].mean() > 0.95
    assert lap.values("press")[lap.part_mask("screen")].mean() < 0.2


def test_yaw_rotates_about_up_axis():
    a = make_object("Table", 5, yaw=0.0)
    b = make_object("Table", 5, yaw=np.pi / 2)
    assert np.allclose(a.points[:, 1], b.points[:, 1], atol=1e-6)
    assert np.allclose(np.linalg.norm(a.points[:, [0, 2]], axis=1), np.linalg.norm(b.points[:, [0, 2]], axis=1), atol=1e-5)
    assert np.array_equal(a.affordance, b.affordance)
    with pytest.raises(KeyError, match="unknown synthetic object class 'Toaster'"):
        make_object("Toaster", 0)
