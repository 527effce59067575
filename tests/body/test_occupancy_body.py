"""BodyOccupancy: winding-number inside/outside and surface distance from libigl, on meshes whose answer is
known (a closed icosphere, the same with a hole), the model-type check and the COAP-style batched call."""
import numpy as np
import pytest
import torch
import trimesh

from zoo.body.occupancy import BodyOccupancy

R = 0.5


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=R)


def _points_at(radii, n_dir=20, seed=0):
    """n_dir random directions times each radius: (len(radii) * n_dir, 3) and their radii."""
    d = np.random.default_rng(seed).normal(size=(n_dir, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = np.repeat(np.asarray(radii, dtype=np.float64), n_dir)
    return np.tile(d, (len(radii), 1)) * r[:, None], r


@pytest.mark.parametrize("method", ["winding", "signed_distance"])
def test_closed_sphere_inside_one_outside_zero(sphere, method):
    occ = BodyOccupancy("mesh", method).set_body(sphere.vertices, sphere.faces)
    p_in, _ = _points_at([0.0, 0.15, 0.3, 0.45])
    p_out, _ = _points_at([0.55, 0.8, 2.0])
    q_in, q_out = occ.query(p_in), occ.query(p_out)
    assert set(occ.query(p_in, distance=False)) == {"inside", "winding"}
    assert torch.equal(q_in["inside"], torch.ones(len(p_in)))
    assert torch.equal(q_out["inside"], torch.zeros(len(p_out)))
    if method == "winding":
        # The generalised winding number of a closed surface is 1 inside and 0 outside (fast evaluation:
        # a Barnes-Hut approximation, a few 1e-3 off).
        assert torch.allclose(q_in["winding"], torch.ones(len(p_in)), atol=5e-3)
        assert torch.allclose(q_out["winding"], torch.zeros(len(p_out)), atol=5e-3)


def test_distance_to_sphere_is_abs_r_minus_norm(sphere):
    occ = BodyOccupancy("mesh").set_body(sphere.vertices, sphere.faces)
    p, r = _points_at([0.05, 0.2, 0.4, 0.49, 0.51, 0.7, 1.5])
    d = occ.query(torch.tensor(p, dtype=torch.float32))["distance"].double().numpy()
    # The icosphere's facets lie up to R (1 - cos(half the edge angle)) inside the sphere: ~1.2 mm here.
    assert np.abs(d - np.abs(R - r)).max() < 2.5e-3
    assert d.dtype == np.float64 and (d >= 0).all()


def test_small_hole_keeps_inside_and_closes_at_the_rim(sphere):
    # Remove the 6 faces nearest the +x pole: a hole of radius ~3 cm in a 50 cm sphere.
    keep = np.argsort(-sphere.triangles_center[:, 0])[6:]
    faces = sphere.faces[keep]
    assert not trimesh.Trimesh(sphere.vertices, faces, process=False).is_watertight
    occ = BodyOccupancy("mesh").set_body(sphere.vertices, faces)
    well_inside, _ = _points_at([0.0, 0.2, 0.35])
    q = occ.query(well_inside)
    assert torch.equal(q["inside"], torch.ones(len(well_inside)))
    assert q["winding"].min() > 0.95  # the hole only removes the solid angle it subtends
    # Along the axis through the hole: just inside counts as inside, just outside as outside (the 0.5 level
    # set spans the rim); the distance there is to the triangles that remain, ~ the hole's radius.
    axis = occ.query(np.array([[0.3, 0, 0], [0.47, 0, 0], [0.53, 0, 0], [0.7, 0, 0]]))
    assert axis["inside"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert 0.5 < axis["winding"][1] < 0.95 and 0.02 < axis["winding"][2] < 0.5
    assert axis["distance"][1] > 0.03 - 1e-3  # farther from any triangle than from the (missing) pole


def test_model_type_mismatch_message(sphere):
    occ = BodyOccupancy("smplx")
    with pytest.raises(ValueError) as err:
        occ.set_body(np.zeros((6890, 3)), np.array([[0, 1, 2]]))
    assert str(err.value) == (
        "BodyOccupancy(model_type='smplx'): the body has 6890 vertices, expected 10475 (SMPL-X); pass a SMPL-X "
        "body, or build the occupancy for its model type (smpl/smplh: 6890, smplx: 10475, mesh: any)")
    with pytest.raises(ValueError, match=r"the body has 2562 vertices, expected 6890 \(SMPL-H\)"):
        BodyOccupancy("smplh").set_body(sphere.vertices, sphere.faces)
    with pytest.raises(RuntimeError, match=r"no body set; call set_body\(vertices, faces\) before querying"):
        occ.query(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"method must be one of \['winding', 'signed_distance'\], got 'sdf'"):
        BodyOccupancy("mesh", "sdf")


def test_coap_call_batches_bodies(sphere):
    occ = BodyOccupancy("mesh")
    shift = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)[None] + shift[:, None]
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 0.3, 0], [3.0, 0, 0]]).expand(2, 4, 3)
    o = occ(pts, {"vertices": verts, "faces": torch.tensor(sphere.faces)})
    assert o.shape == (2, 4) and o.min() >= 0 and o.max() <= 1
    assert torch.allclose(o, torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]), atol=5e-3)
    # Faces remembered from the last body; the same vertices reuse the built hierarchy.
    built = occ._fwn
    o2 = occ(pts[1:], {"vertices": verts[1:]})
    assert occ._fwn is built and torch.equal(o2, o[1:])
    with pytest.raises(ValueError, match=r"body must be a dict with 'vertices' \(B, V, 3\)"):
        occ(pts, {"verts": verts})
