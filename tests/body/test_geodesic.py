"""Exact surface geodesics against analytic distances (sphere: great circle; cylinder: unrolled), the
solver's repairs and refusals, and the released SMPL matrix found beside the body-model files."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from zoo.body.mesh import (
    RELEASED_GEODESIC_FILE,
    body_geodesic_distances,
    geodesic_distances,
    load_geodesic_file,
    released_geodesic_paths,
)

# Stated tolerances. Sphere: the mesh is a polyhedron inscribed in the sphere, so its geodesics are a
# little shorter than great circles; with 162 vertices (icosphere, 2 subdivisions) the gap is at most
# 1.1% (edge-graph Dijkstra is up to 21% over). Cylinder: a triangulated tube unrolls exactly onto a
# plane, so exact geodesics equal the unrolled straight lines (float32 rounding only); against the
# smooth cylinder the n-gon's shorter circumference (n = 24: 0.29%) is the only gap.
SPHERE_RTOL = 0.015
CYLINDER_RTOL_MESH = 1e-5
CYLINDER_RTOL_SMOOTH = 0.005


def icosphere(subdivisions: int):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def tube(n: int = 24, rings: int = 7, radius: float = 1.0, height: float = 1.5):
    """An open cylinder: ``rings`` rings of ``n`` vertices, quads split along alternating diagonals."""
    th = 2 * np.pi * np.arange(n) / n
    z = np.linspace(0, height, rings)
    v = np.array([[radius * np.cos(t), radius * np.sin(t), h] for h in z for t in th])
    f = []
    for r in range(rings - 1):
        for i in range(n):
            a, b = r * n + i, r * n + (i + 1) % n
            c, d = a + n, b + n
            f += [[a, b, d], [a, d, c]] if (r + i) % 2 else [[a, b, c], [b, d, c]]
    return v, np.array(f), th, z


def test_sphere_matches_great_circles():
    v, f = icosphere(2)
    d = geodesic_distances(v, f)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    great = np.arccos(np.clip(u @ u.T, -1, 1))
    far = great > 0.1
    rel = (d[far] - great[far]) / great[far]
    assert np.abs(rel).max() < SPHERE_RTOL
    assert rel.max() < 1e-6  # never longer than the great circle: the polyhedron lies inside the sphere
    np.testing.assert_array_equal(d, d.T)
    assert (np.diag(d) == 0).all() and d.dtype == np.float32


def test_cylinder_matches_unrolled_distances():
    n = 24
    v, f, th, z = tube(n)
    d = geodesic_distances(v, f)
    ring, k = np.divmod(np.arange(len(v)), n)
    steps = np.abs(k[:, None] - k[None, :])
    steps = np.minimum(steps, n - steps)  # the shorter way round
    dz = z[ring][:, None] - z[ring][None, :]
    side = 2 * np.sin(np.pi / n)  # the n-gon's edge: the tube unrolls to a strip n * side wide
    unrolled = np.hypot(steps * side, dz)
    np.testing.assert_allclose(d, unrolled, rtol=CYLINDER_RTOL_MESH, atol=1e-6)
    smooth = np.hypot(steps * 2 * np.pi / n, dz)
    far = smooth > 0.1
    assert np.abs(d[far] / smooth[far] - 1).max() < CYLINDER_RTOL_SMOOTH
    # the diagonal case edge-graph Dijkstra gets wrong: half way round and to the far ring
    assert d[0, (len(z) - 1) * n + n // 2] == pytest.approx(np.hypot(n // 2 * side, z[-1]), rel=1e-6)


def test_bowtie_vertex_is_crossed():
    # two triangles meeting at one vertex: the exact solver stops there; the edge repair carries on
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [-1, 0, 0], [-1, -1, 0]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 3, 4]])
    d = geodesic_distances(v, f)
    assert d[2, 3] == pytest.approx(np.sqrt(2) + 1, rel=1e-6) and d[3, 2] == d[2, 3]
    assert d[1, 4] == pytest.approx(1 + np.sqrt(2), rel=1e-6)


def test_unused_vertex_is_inf_and_own_zero():
    v, f = icosphere(0)
    v = np.concatenate([v, [[5.0, 5, 5]]])
    d = geodesic_distances(v, f)
    assert np.isinf(d[-1, :-1]).all() and np.isinf(d[:-1, -1]).all() and d[-1, -1] == 0
    assert np.isfinite(d[:-1, :-1]).all()


def test_meshes_the_solver_cannot_take_are_refused():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=np.float64)
    with pytest.raises(ValueError, match=r"1 edge\(s\) are shared by more than two faces \(first: edge \[0, 1\] in 3"):
        geodesic_distances(v, np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))
    with pytest.raises(ValueError, match="shared by more than two faces"):  # a duplicated face
        geodesic_distances(v, np.array([[0, 1, 2], [0, 2, 3], [0, 1, 2]]))
    with pytest.raises(ValueError, match=r"name a vertex twice \(first: face 1 = \[0, 0, 2\]\)"):
        geodesic_distances(v, np.array([[0, 1, 2], [0, 0, 2]]))
    with pytest.raises(ValueError, match="workers must be >= 1"):
        geodesic_distances(*icosphere(0), workers=0)


def test_worker_processes_give_the_same_matrix():
    v, f = icosphere(1)
    np.testing.assert_array_equal(geodesic_distances(v, f, workers=2), geodesic_distances(v, f, workers=1))


# -- the released matrix beside the body-model files -------------------------------------------------

def _model(tmp_path: Path, sub: str = "smpl", model_type: str = "smpl"):
    v, f = icosphere(1)
    path = tmp_path / "body_models" / sub / "SMPL_NEUTRAL.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(path=path, model_type=model_type, num_vertices=len(v), v_template=v, faces=f)


def test_released_file_is_used_where_deco_keeps_it(tmp_path):
    m = _model(tmp_path)
    root = tmp_path / "body_models"
    assert released_geodesic_paths(m) == [root / "smpl" / RELEASED_GEODESIC_FILE, root / RELEASED_GEODESIC_FILE]
    released = np.full((42, 42), 0.25, dtype=np.float32)
    np.fill_diagonal(released, 0)
    np.save(root / "smpl" / RELEASED_GEODESIC_FILE, released)
    d = body_geodesic_distances(m, cache_dir=tmp_path / "cache")
    assert isinstance(d, np.memmap) and d[0, 1] == 0.25  # the file, not a computed matrix
    assert not (tmp_path / "cache").exists()
    # float64 files (as some releases are) come back as float32
    np.save(root / "smpl" / RELEASED_GEODESIC_FILE, released.astype(np.float64))
    assert body_geodesic_distances(m).dtype == np.float32


def test_released_file_of_the_wrong_size_names_it_and_both_shapes(tmp_path):
    m = _model(tmp_path, sub="smplh", model_type="smplh")  # LEMON's layout: DIR/smplh/ and DIR/<file>
    f = tmp_path / "body_models" / RELEASED_GEODESIC_FILE
    assert f in released_geodesic_paths(m)
    np.save(f, np.zeros((40, 40), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{f}: geodesic distance matrix has shape \(40, 40\), expected \(42, 42\) for "
                                         r"the smplh body of .*SMPL_NEUTRAL\.pkl"):
        body_geodesic_distances(m)
    np.save(f, np.zeros((42, 41), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(42, 41\), expected \(42, 42\)"):
        body_geodesic_distances(m)
    f.write_bytes(b"not an array")
    with pytest.raises(ValueError, match=rf"{f}: not a readable \.npy geodesic distance matrix"):
        load_geodesic_file(f, 42)


def test_without_a_released_file_exact_geodesics_are_computed_and_cached(tmp_path):
    m = _model(tmp_path)
    d = body_geodesic_distances(m, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("geodesic_*.npy"))) == 1
    np.testing.assert_array_equal(np.asarray(d), geodesic_distances(m.v_template, m.faces))
    assert released_geodesic_paths(SimpleNamespace(path=m.path, model_type="smplx")) == []  # SMPL's file only


def test_released_file_for_a_real_body_model_dir(tmp_path, body_dir):
    from zoo.body.model import SMPLBody

    (tmp_path / "smpl").mkdir()
    (tmp_path / "smpl" / "SMPL_NEUTRAL.pkl").symlink_to(Path(body_dir) / "smpl" / "SMPL_NEUTRAL.pkl")
    m = SMPLBody(str(tmp_path))
    f = tmp_path / "smpl" / RELEASED_GEODESIC_FILE
    np.save(f, np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(10, 10\), expected \(6890, 6890\) for the smpl body"):
        body_geodesic_distances(m)
    mm = np.lib.format.open_memmap(f, mode="w+", dtype=np.float32, shape=(6890, 6890))  # sparse: no 190 MB write
    mm[0, 6889] = 1.5
    mm.flush()
    del mm
    d = body_geodesic_distances(m)
    assert d.shape == (6890, 6890) and d[0, 6889] == 1.5


def test_solver_overflow_on_an_unreached_target_is_worked_around():
    # pygeodesic raises OverflowError when an unreached target's (garbage) source index exceeds int32:
    # the targets are split until the unreached one is alone, and it comes back inf
    from zoo.body.mesh import _distances

    class Solver:
        calls = 0

        def geodesicDistances(self, sources, targets):
            Solver.calls += 1
            targets = np.arange(8) if targets is None else targets
            if 5 in targets:
                raise OverflowError("Python integer 2987642880 out of bounds for int32")
            return targets * 1.5, np.zeros(len(targets), dtype=np.int32)

    d = _distances(Solver(), 0, 8)
    np.testing.assert_array_equal(d, [0, 1.5, 3, 4.5, 6, np.inf, 9, 10.5])
    assert Solver.calls < 10


def test_a_solve_that_overshoots_is_corrected_by_the_other_direction(monkeypatch):
    # single exact solves now and then come out long (a lost window; on the synthetic body up to 14 cm for about
    # one source in five): D[i, j] is the shorter of both directions
    from zoo.body import mesh

    v, f = icosphere(1)
    truth = geodesic_distances(v, f)
    real = mesh._distances

    def overshooting(solver, source, n, targets=None):
        d = real(solver, source, n, targets)
        if source == 3:
            d[7] += 0.5
            d[9] = np.inf  # and a miss
        return d

    monkeypatch.setattr(mesh, "_distances", overshooting)
    d = geodesic_distances(v, f)
    np.testing.assert_array_equal(d, d.T)
    assert d[3, 7] == truth[3, 7] and d[3, 9] == truth[3, 9]


def test_edge_graph_bound_is_dijkstra_and_above_the_exact_distance():
    """The fast edge-graph distances (tiny configurations): on a unit square split along one diagonal,
    hand-computed: corner to opposite corner along edges is the diagonal (sqrt 2) where the split runs,
    and 2 across the other pair; the exact surface distance is sqrt 2 for both."""
    from zoo.body.mesh import edge_graph_distances, geodesic_distances

    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)
    d = edge_graph_distances(verts, faces)
    assert d[0, 2] == pytest.approx(np.sqrt(2), abs=1e-6) and d[1, 3] == pytest.approx(2.0, abs=1e-6)
    exact = geodesic_distances(verts, faces)
    assert exact[1, 3] == pytest.approx(np.sqrt(2), abs=1e-5)
    assert (d >= exact - 1e-5).all()
