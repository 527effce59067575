"""A synthetic humanoid body model written in smplx 0.1.28's on-disk format.

Licensed SMPL files cannot ship with the zoo, so demos and tests run on a
stand-in that smplx loads exactly like the real thing:

* ``root/smplh/SMPLH_NEUTRAL.pkl`` and ``.npz`` - SMPL-H layout, 52 joints;
* ``root/smpl/SMPL_NEUTRAL.pkl`` - SMPL layout, 24 joints (the finger weights
  go to the hand joints 22/23), so DAMON's 72-d SMPL pose drives it;
* ``root/smplx/SMPLX_NEUTRAL.npz`` - SMPL-X layout, 10475 vertices, 55 joints
  (SMPL-H's 52 plus jaw and eyes), 10 shape + 10 expression directions and
  face landmarks: the same mesh refined by more longest-edge splits (denser
  on the head), so its first 6890 vertices are the SMPL-H template's.

The SMPL/SMPL-H mesh is one closed surface with exactly 6890 vertices (SMPL's count, so
per-vertex arrays such as DAMON contact labels line up). It is built as the
zero level set of a smooth union of tapered, optionally flattened capsules
placed along a skeleton (T-pose, Y-up, facing +z, left = +x, metres, about
1.73 m tall), extracted with marching cubes, reduced with quadric decimation
and then refined by splitting the longest edges until the count is exact.
Everything is plain numpy (no chumpy) and deterministic.
"""
from __future__ import annotations

import heapq
import io
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.body.skeleton import FINGER_NAMES, SMPL_PARENTS, SMPLH_JOINT_NAMES, SMPLH_PARENTS

__all__ = [
    "NUM_VERTICES", "NUM_VERTICES_SMPLX", "NUM_BETAS", "NUM_EXPRESSIONS", "SHAPE_DIRECTIONS",
    "EXPRESSION_DIRECTIONS", "SMPLX_JOINT_NAMES", "SMPLX_PARENTS", "SyntheticBody", "SyntheticSMPLX",
    "build_synthetic_body", "build_synthetic_smplx", "write_synthetic_body_models", "synthetic_model_paths", "cli",
]

NUM_VERTICES = 6890
NUM_VERTICES_SMPLX = 10475
NUM_BETAS = 10
NUM_EXPRESSIONS = 10
# What each synthetic shape coefficient does (+1 = the direction below, roughly one "standard deviation").
SHAPE_DIRECTIONS = (
    "stature (all bones longer)", "girth (torso and limbs thicker)", "leg length", "arm length",
    "shoulder width", "torso length", "hip width", "head size", "belly / chest depth",
    "limb muscle",
)
_FORMAT_VERSION = 1  # bump when the geometry changes so cached files are rebuilt

# --------------------------------------------------------------------------------------
# Skeleton and body primitives (left side given, right side mirrored through x = 0)
# --------------------------------------------------------------------------------------

_J = {name: i for i, name in enumerate(SMPLH_JOINT_NAMES)}

# Centre-line and left-side joint positions in metres (rest pose, T-pose).
_JOINTS_LEFT: dict[str, tuple[float, float, float]] = {
    "pelvis": (0.0, -0.225, 0.0),
    "spine1": (0.0, -0.105, -0.01),
    "spine2": (0.0, 0.03, -0.005),
    "spine3": (0.0, 0.085, 0.0),
    "neck": (0.0, 0.27, -0.025),
    "head": (0.0, 0.36, -0.005),
    "left_hip": (0.088, -0.31, 0.0),
    "left_knee": (0.1, -0.7, 0.005),
    "left_ankle": (0.11, -1.09, -0.035),
    "left_foot": (0.122, -1.148, 0.085),
    "left_collar": (0.075, 0.205, -0.02),
    "left_shoulder": (0.175, 0.225, -0.025),
    "left_elbow": (0.425, 0.22, -0.035),
    "left_wrist": (0.67, 0.22, -0.02),
}

_WRIST = np.array(_JOINTS_LEFT["left_wrist"])
_KNUCKLE_X = 0.755
# Per finger: knuckle z offset, splay angle (deg, towards +z), segment lengths, base/tip radius.
_FINGERS = {
    "index": (0.030, 16.0, (0.040, 0.025, 0.022), 0.0082, 0.0066),
    "middle": (0.010, 5.0, (0.045, 0.028, 0.024), 0.0085, 0.0068),
    "ring": (-0.010, -6.0, (0.042, 0.026, 0.022), 0.0080, 0.0064),
    "pinky": (-0.029, -17.0, (0.032, 0.020, 0.019), 0.0072, 0.0058),
}
_THUMB_STEPS = ((0.012, -0.008, 0.02), (0.026, -0.006, 0.028), (0.022, -0.003, 0.018), (0.018, 0.0, 0.011))
_THUMB_RADII = (0.0125, 0.0105, 0.0092, 0.0082)


@dataclass(frozen=True)
class _Prim:
    """A tapered capsule from ``a`` to ``b`` (radii ``ra``->``rb``), squashed by ``scale``, skinned to ``owner``."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    ra: float
    rb: float
    owner: str
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def mirrored(self) -> _Prim:
        flip = lambda p: (-p[0], p[1], p[2])  # noqa: E731
        owner = self.owner.replace("left_", "right_") if self.owner.startswith("left_") else self.owner
        return _Prim(flip(self.a), flip(self.b), self.ra, self.rb, owner, self.scale)


def _hand_layout() -> tuple[dict[str, np.ndarray], list[_Prim], dict[str, np.ndarray]]:
    """Left-hand finger joints, finger primitives and fingertip positions."""
    joints: dict[str, np.ndarray] = {}
    prims: list[_Prim] = []
    tips: dict[str, np.ndarray] = {}
    y0, z0 = _WRIST[1] - 0.002, _WRIST[2]
    for finger, (dz, angle, lengths, r0, r1) in _FINGERS.items():
        a = np.deg2rad(angle)
        direction = np.array([np.cos(a), -0.05, np.sin(a)])
        direction /= np.linalg.norm(direction)
        p = np.array([_KNUCKLE_X - (0.007 if finger == "pinky" else 0.0), y0, z0 + dz])
        radii = np.linspace(r0, r1, 4)
        for k, length in enumerate(lengths):
            name = f"left_{finger}{k + 1}"
            joints[name] = p.copy()
            q = p + length * direction
            prims.append(_Prim(tuple(p), tuple(q), float(radii[k]), float(radii[k + 1]), name))
            p = q
        tips[finger] = p
    p = np.array([_WRIST[0] + 0.006, _WRIST[1] - 0.01, _WRIST[2] + 0.012])
    for k, step in enumerate(_THUMB_STEPS):
        q = p + np.array(step)
        if k >= 1:
            name = f"left_thumb{k}"
            joints[name] = p.copy()
            prims.append(_Prim(tuple(p), tuple(q), _THUMB_RADII[k - 1], _THUMB_RADII[k], name))
        else:  # the thenar pad, part of the palm
            prims.append(_Prim(tuple(p), tuple(q), 0.015, _THUMB_RADII[0], "left_wrist"))
        p = q
    tips["thumb"] = p
    return joints, prims, tips


def _body_prims() -> list[_Prim]:
    """The left/centre primitives of the body (without fingers)."""
    J = _JOINTS_LEFT
    return [
        # torso, from the pelvis up; flattened front-to-back, wide across
        _Prim((0, -0.31, -0.005), (0, -0.2, 0.0), 0.1, 0.1, "pelvis", (1.62, 1.0, 1.0)),
        _Prim((0.075, -0.325, -0.045), (0.075, -0.3, -0.04), 0.085, 0.08, "pelvis"),
        _Prim((0, -0.17, 0.0), (0, -0.02, -0.005), 0.1, 0.1, "spine1", (1.33, 1.0, 0.95)),
        _Prim((0, 0.0, -0.005), (0, 0.08, 0.0), 0.105, 0.108, "spine2", (1.42, 1.0, 1.0)),
        _Prim((0, 0.09, 0.0), (0, 0.185, -0.01), 0.11, 0.1, "spine3", (1.45, 1.0, 0.95)),
        _Prim((0.035, 0.222, -0.02), J["left_shoulder"], 0.052, 0.054, "left_collar"),
        _Prim((0, 0.23, -0.03), (0, 0.375, -0.01), 0.052, 0.05, "neck"),
        _Prim((0, 0.425, 0.01), (0, 0.47, 0.005), 0.095, 0.093, "head", (0.88, 1.0, 1.05)),
        _Prim((0, 0.45, 0.1), (0, 0.425, 0.112), 0.012, 0.016, "head"),  # nose: tells front from back
        # arm
        _Prim(J["left_shoulder"], J["left_elbow"], 0.052, 0.04, "left_shoulder"),
        _Prim(J["left_elbow"], J["left_wrist"], 0.039, 0.028, "left_elbow", (1.0, 0.85, 1.1)),
        _Prim((_WRIST[0] + 0.01, _WRIST[1], _WRIST[2]), (_KNUCKLE_X - 0.008, _WRIST[1] - 0.002, _WRIST[2]),
              0.02, 0.02, "left_wrist", (1.0, 0.62, 1.85)),
        # leg
        _Prim(J["left_hip"], J["left_knee"], 0.08, 0.054, "left_hip"),
        _Prim(J["left_knee"], J["left_ankle"], 0.051, 0.036, "left_knee"),
        _Prim((0.1, -0.78, -0.02), (0.105, -0.96, -0.03), 0.05, 0.036, "left_knee"),  # calf
        _Prim((0.107, -1.128, -0.065), (0.12, -1.14, 0.085), 0.034, 0.03, "left_ankle", (1.2, 0.85, 1.0)),
        _Prim((0.122, -1.145, 0.085), (0.127, -1.15, 0.145), 0.03, 0.025, "left_foot", (1.45, 0.75, 1.0)),
    ]


def _skeleton_and_prims() -> tuple[np.ndarray, list[_Prim], dict[str, np.ndarray]]:
    """SMPL-H rest joints (52, 3), all primitives (both sides) and per-joint bone end points."""
    hand_joints, hand_prims, tips = _hand_layout()
    pos = {k: np.array(v, dtype=np.float64) for k, v in _JOINTS_LEFT.items()}
    pos.update(hand_joints)
    for name in list(pos):
        if name.startswith("left_"):
            pos[name.replace("left_", "right_")] = pos[name] * np.array([-1.0, 1.0, 1.0])
    joints = np.stack([pos[n] for n in SMPLH_JOINT_NAMES])
    left = _body_prims() + hand_prims
    prims = left + [p.mirrored() for p in left if p.owner.startswith("left_")]
    return joints, prims, tips


# --------------------------------------------------------------------------------------
# Implicit surface
# --------------------------------------------------------------------------------------

_BLEND = 0.006  # smooth-union width (m); small so fingers stay apart


def _prim_distance(p: np.ndarray, prim: _Prim) -> np.ndarray:
    """Approximate signed distance from points (..., 3) to one primitive."""
    s = np.asarray(prim.scale, dtype=p.dtype)
    a = np.asarray(prim.a, dtype=p.dtype)
    b = a + (np.asarray(prim.b, dtype=p.dtype) - a) / s
    q = a + (p - a) / s
    ab = b - a
    denom = float(ab @ ab)
    t = np.clip(((q - a) @ ab) / denom, 0.0, 1.0) if denom > 0 else np.zeros(q.shape[:-1], dtype=p.dtype)
    closest = a + t[..., None] * ab
    r = prim.ra + t * (prim.rb - prim.ra)
    return (np.linalg.norm(q - closest, axis=-1) - r) * float(s.min())


def _prim_box(prim: _Prim, margin: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(prim.a), np.asarray(prim.b)
    ext = max(prim.ra, prim.rb) * np.asarray(prim.scale) + margin
    return np.minimum(a, b) - ext, np.maximum(a, b) + ext


def _sdf_grid(prims: list[_Prim], lo: np.ndarray, h: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth-union signed distance sampled on a regular grid, indexed [ix, iy, iz].

    Each primitive is evaluated only inside its bounding box plus a margin;
    beyond that its contribution to the log-sum-exp union is negligible.
    The union is accumulated in the numerically stable "running minimum" form.
    """
    far = np.float32(0.1)
    m = np.full(shape, far, dtype=np.float32)  # running minimum
    s = np.ones(shape, dtype=np.float32)  # sum of exp(-(d_i - m) / k)
    k = np.float32(_BLEND)
    margin = 8 * _BLEND
    axes = [lo[i] + h * np.arange(shape[i], dtype=np.float32) for i in range(3)]
    for prim in prims:
        blo, bhi = _prim_box(prim, margin)
        i0 = [max(0, int(np.floor((blo[i] - lo[i]) / h))) for i in range(3)]
        i1 = [min(shape[i], int(np.ceil((bhi[i] - lo[i]) / h)) + 1) for i in range(3)]
        gx, gy, gz = np.meshgrid(axes[0][i0[0]:i1[0]], axes[1][i0[1]:i1[1]], axes[2][i0[2]:i1[2]], indexing="ij")
        d = _prim_distance(np.stack([gx, gy, gz], -1), prim).astype(np.float32)
        sl = (slice(i0[0], i1[0]), slice(i0[1], i1[1]), slice(i0[2], i1[2]))
        m_old, s_old = m[sl], s[sl]
        m_new = np.minimum(m_old, d)
        s[sl] = s_old * np.exp(-(m_old - m_new) / k) + np.exp(-(d - m_new) / k)
        m[sl] = m_new
    return m - k * np.log(s)


def _sdf_points(prims: list[_Prim], p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union SDF at points (N, 3) and the per-primitive distances (N, P)."""
    d = np.stack([_prim_distance(p, prim) for prim in prims], axis=1)
    m = d.min(1)
    return m - _BLEND * np.log(np.exp(-(d - m[:, None]) / _BLEND).sum(1)), d


# --------------------------------------------------------------------------------------
# Mesh extraction and clean-up
# --------------------------------------------------------------------------------------

_KUHN_TETS = np.array([
    # The cube split into 6 tetrahedra around its main diagonal (0,0,0)-(1,1,1), one per
    # axis order; every cube is split the same way, so neighbouring tetrahedra share faces.
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]],
    [[0, 0, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1]],
    [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]],
    [[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 1]],
    [[0, 0, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1]],
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]],
])


def _marching_tetrahedra(vol: np.ndarray, lo: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of a grid (indexed [ix, iy, iz]) as a closed, outward-oriented triangle mesh.

    Marching tetrahedra rather than marching cubes: with a consistent split of
    every cube there are no ambiguous cases, so the surface has no cracks and
    is a closed 2-manifold (marching cubes tables leave holes at ambiguous faces).
    """
    vol = np.where(vol == 0, np.float32(1e-7), vol)  # no grid value exactly on the level set
    inside = vol < 0
    nx, ny, nz = vol.shape
    corners = sum(inside[dx:nx - 1 + dx, dy:ny - 1 + dy, dz:nz - 1 + dz].astype(np.uint8)
                  for dx in (0, 1) for dy in (0, 1) for dz in (0, 1))
    cells = np.argwhere((corners > 0) & (corners < 8))  # (C, 3) cells the surface passes through
    node = (cells[:, None, None, :] + _KUHN_TETS[None]).reshape(-1, 4, 3)  # (T, 4, 3) grid indices
    nid = (node[..., 0] * ny + node[..., 1]) * nz + node[..., 2]
    val = vol.reshape(-1)[nid]
    ins = val < 0
    k = ins.sum(1)
    keep = (k > 0) & (k < 4)
    node, nid, val, ins, k = node[keep], nid[keep], val[keep], ins[keep], k[keep]
    order = np.argsort(~ins, axis=1, kind="stable")  # inside corners first
    rows = np.arange(len(order))[:, None]
    nid, val, node, ins = nid[rows, order], val[rows, order], node[rows, order], ins[rows, order]

    def tri_edges(sel: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
        return np.stack([np.stack([nid[sel, a], nid[sel, b]], -1) for a, b in pairs], 1)

    one, three, two = k == 1, k == 3, k == 2
    tris = [tri_edges(one, [(0, 1), (0, 2), (0, 3)]), tri_edges(three, [(3, 0), (3, 1), (3, 2)]),
            tri_edges(two, [(0, 2), (0, 3), (1, 3)]), tri_edges(two, [(0, 2), (1, 3), (1, 2)])]
    # Outward direction of each triangle: from the tetrahedron's inside corners to its outside corners.
    def outward(sel: np.ndarray) -> np.ndarray:
        m = ins[sel][..., None]
        p = node[sel].astype(np.float64)
        return (p * ~m).sum(1) / (~m).sum(1) - (p * m).sum(1) / m.sum(1)

    dirs = [outward(one), outward(three), outward(two), outward(two)]
    edges = np.concatenate(tris).reshape(-1, 2)  # (3F, 2) grid-node pairs
    out_dir = np.concatenate(dirs)
    edges.sort(axis=1)
    n_nodes = nx * ny * nz
    key = edges[:, 0].astype(np.int64) * n_nodes + edges[:, 1]
    ukey, inv = np.unique(key, return_inverse=True)
    a, b = ukey // n_nodes, ukey % n_nodes
    va, vb = vol.reshape(-1)[a].astype(np.float64), vol.reshape(-1)[b].astype(np.float64)
    t = (va / (va - vb))[:, None]

    def pos(n: np.ndarray) -> np.ndarray:
        return np.stack([n // (ny * nz), (n // nz) % ny, n % nz], -1).astype(np.float64)

    verts = lo + h * (pos(a) + t * (pos(b) - pos(a)))
    faces = inv.reshape(-1, 3)
    p0, p1, p2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(p1 - p0, p2 - p0), out_dir) < 0
    faces[flip] = faces[flip][:, ::-1]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    return verts, faces


def _largest_component(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    used = np.zeros(n, bool)
    used[faces.ravel()] = True
    counts = np.bincount(lab[used], minlength=lab.max() + 1)
    keep = lab == np.argmax(counts)
    keep_f = keep[faces[:, 0]]
    return _compact(verts, faces[keep_f])


def _compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.unique(faces)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _check_closed_manifold(faces: np.ndarray, where: str) -> None:
    """Every directed edge must occur once and its reverse once (closed, consistently oriented)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = int(faces.max()) + 1
    key = e[:, 0] * n + e[:, 1]
    if len(np.unique(key)) != len(key):
        raise RuntimeError(f"{where}: mesh has a directed edge used twice (not an oriented manifold)")
    rev = e[:, 1] * n + e[:, 0]
    if not np.isin(rev, key).all():
        raise RuntimeError(f"{where}: mesh has boundary edges (not closed)")


def _split_longest_edges(verts: np.ndarray, faces: np.ndarray, target: int,
                         density: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split the longest edge, one at a time, until the mesh has ``target`` vertices.

    Each split inserts the edge midpoint and turns the two adjacent triangles
    into four, keeping orientation, so the surface stays closed. ``density``
    (one factor per vertex, optional) ranks an edge by its length times the
    mean factor of its ends, so regions with a larger factor end up with
    proportionally shorter edges; a midpoint takes the mean factor of its edge.
    """
    dens = None if density is None else [float(x) for x in density]
    verts = [tuple(v) for v in verts]
    faces_l = [list(f) for f in faces]
    owner: dict[tuple[int, int], int] = {}  # directed edge -> face holding it
    for fi, (i, j, k) in enumerate(faces_l):
        owner[(i, j)] = fi
        owner[(j, k)] = fi
        owner[(k, i)] = fi

    def length(i: int, j: int) -> float:
        d = float(np.linalg.norm(np.subtract(verts[i], verts[j])))
        return d if dens is None else d * 0.5 * (dens[i] + dens[j])

    heap = [(-length(i, j), i, j) for (i, j) in owner if i < j]
    heapq.heapify(heap)

    def third(fi: int, i: int, j: int) -> int:
        return next(x for x in faces_l[fi] if x != i and x != j)

    while len(verts) < target:
        neg, i, j = heapq.heappop(heap)
        if (i, j) not in owner:
            continue  # already split
        f1, f2 = owner.pop((i, j)), owner.pop((j, i))
        c, d = third(f1, i, j), third(f2, j, i)
        m = len(verts)
        verts.append(tuple((np.asarray(verts[i]) + np.asarray(verts[j])) / 2))
        if dens is not None:
            dens.append(0.5 * (dens[i] + dens[j]))
        # f1 = (i, j, c) -> (i, m, c) + (m, j, c); f2 = (j, i, d) -> (j, m, d) + (m, i, d)
        faces_l[f1] = [i, m, c]
        faces_l.append([m, j, c])
        faces_l[f2] = [j, m, d]
        faces_l.append([m, i, d])
        n1, n2 = len(faces_l) - 2, len(faces_l) - 1
        for fi in (f1, n1, f2, n2):
            a, b, e = faces_l[fi]
            owner[(a, b)] = fi
            owner[(b, e)] = fi
            owner[(e, a)] = fi
        for x, y in ((i, m), (m, j), (c, m), (d, m)):
            heapq.heappush(heap, (-length(x, y), min(x, y), max(x, y)))
    return np.asarray(verts), np.asarray(faces_l, dtype=np.int64)


def _build_mesh(prims: list[_Prim], h: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Closed humanoid surface with exactly NUM_VERTICES vertices, outward-facing triangles."""
    import fast_simplification

    lo = np.array([-0.9, -1.19, -0.14])
    hi = np.array([0.9, 0.59, 0.2])
    shape = tuple(int(np.ceil((hi[i] - lo[i]) / h)) + 1 for i in range(3))
    vol = _sdf_grid(prims, lo, h, shape)
    verts, faces = _marching_tetrahedra(vol, lo, h)
    verts, faces = _largest_component(verts, faces)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    # A closed genus-0 triangle mesh has F = 2V - 4; aim a little below the target
    # and let longest-edge splits make up the exact count (and even out big triangles).
    target_v = NUM_VERTICES - 400
    v2, f2 = fast_simplification.simplify(verts.astype(np.float64), faces.astype(np.int32),
                                          target_count=2 * target_v - 4, agg=5.0)
    v2, f2 = _compact(np.asarray(v2), np.asarray(f2, dtype=np.int64))
    v2, f2 = _largest_component(v2, f2)
    if len(v2) > NUM_VERTICES:
        raise RuntimeError(f"synthetic body: decimation left {len(v2)} vertices, more than {NUM_VERTICES}")
    _check_closed_manifold(f2, "synthetic body after decimation")
    v3, f3 = _split_longest_edges(v2, f2, NUM_VERTICES)
    _check_closed_manifold(f3, "synthetic body after edge splits")
    return v3, f3


# --------------------------------------------------------------------------------------
# Rigging: skinning weights, joint regressor, shape directions
# --------------------------------------------------------------------------------------

def _neighbours(faces: np.ndarray, n: int):
    """Row-normalised vertex adjacency (sparse) of a triangle mesh."""
    from scipy.sparse import coo_matrix, diags

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    return diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a


def _children(parents: list[int]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            kids[p].append(j)
    return kids


def _skinning_weights(verts: np.ndarray, faces: np.ndarray, prims: list[_Prim]) -> tuple[np.ndarray, np.ndarray]:
    """SMPL-H skinning weights (V, 52) and each vertex's primary joint (V,).

    A vertex belongs mostly to the part whose primitive surface is nearest;
    it shares weight only with that part's parent and children, falling off
    with the extra distance to their surfaces, so weight blends across joints
    (elbows bend smoothly) but never leaks between neighbouring fingers or
    from an arm into the chest. A few rounds of averaging over mesh
    neighbours smooth what is left.
    """
    n_j = len(SMPLH_JOINT_NAMES)
    _, d = _sdf_points(prims, verts)
    owner = np.array([_J[p.owner] for p in prims])
    dist = np.full((len(verts), n_j), np.inf)
    radius = np.zeros(n_j)
    for j in range(n_j):
        sel = owner == j
        dist[:, j] = d[:, sel].min(1)
        radius[j] = np.mean([(prims[i].ra + prims[i].rb) / 2 for i in np.flatnonzero(sel)])
    tau = np.clip(0.3 * radius, 0.003, 0.015)
    primary = dist.argmin(1)
    kids = _children(SMPLH_PARENTS)
    w = np.zeros_like(dist)
    rows = np.arange(len(verts))
    for j in range(n_j):
        sel = primary == j
        if not sel.any():
            continue
        group = [j] + kids[j] + ([SMPLH_PARENTS[j]] if SMPLH_PARENTS[j] >= 0 else [])
        for g in group:
            t = max(tau[j], tau[g])
            w[sel, g] = np.exp(-(dist[sel, g] - dist[sel, j]) / t)
    w[rows, primary] = np.maximum(w[rows, primary], 1.0)
    w /= w.sum(1, keepdims=True)
    avg = _neighbours(faces, len(verts))
    for _ in range(3):
        w = 0.5 * w + 0.5 * (avg @ w)
    w[w < 1e-6] = 0.0
    return w / w.sum(1, keepdims=True), primary


def _joint_regressor(verts: np.ndarray, joints: np.ndarray, primary: np.ndarray,
                     parents: list[int], groups: list[list[int]], n_near: int = 150) -> np.ndarray:
    """(J, V) rows of non-negative weights summing to 1 whose vertex average lands on each joint.

    ``groups[j]`` lists the SMPL-H parts whose vertices may vote for joint j
    (the joint's own part, its parent and children), so a finger joint is
    regressed from its own finger, not from the next one. Each joint is
    regressed from the ``n_near`` candidate vertices nearest to it.
    """
    from scipy.optimize import nnls

    reg = np.zeros((len(joints), len(verts)))
    for j, target in enumerate(joints):
        cand = np.flatnonzero(np.isin(primary, groups[j]))
        near = cand[np.argsort(np.linalg.norm(verts[cand] - target, axis=1))[:n_near]]
        lam = 10.0  # weight of the sum-to-one row; the position rows are in metres
        # The small ridge rows spread the weight over many vertices (a bare NNLS picks
        # just 4), so the regressed joint follows the local shape, not four points.
        ridge = 0.01 * np.eye(len(near))
        a = np.vstack([verts[near].T, lam * np.ones(len(near)), ridge])
        wts, _ = nnls(a, np.concatenate([target, [lam], np.zeros(len(near))]))
        reg[j, near] = wts / wts.sum()
    return reg


def _bone_direction(joints: np.ndarray, parents: list[int], j: int) -> np.ndarray:
    name = SMPLH_JOINT_NAMES[j]
    kids = [c for c, p in enumerate(parents) if p == j]
    if name in ("pelvis", "spine1", "spine2", "spine3"):
        v = np.array([0.0, 1.0, 0.0])
    elif name.endswith("wrist"):
        v = joints[_J[name.replace("wrist", "middle1")]] - joints[j]
    elif kids:
        v = joints[kids[0]] - joints[j]
    else:
        v = joints[j] - joints[parents[j]]
    return v / np.linalg.norm(v)


def _shape_directions(verts: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(V, 3, NUM_BETAS) linear shape directions, see SHAPE_DIRECTIONS.

    Each direction gives every bone a small linear deformation A_j (stretch
    along the bone, growth across it); joints move down the kinematic chain
    accordingly and each vertex follows its bones' deformations blended by its
    skinning weights, so the shaped body stays smooth and connected.
    """
    parents = SMPLH_PARENTS
    n_j = len(parents)
    names = SMPLH_JOINT_NAMES
    dirs = np.stack([_bone_direction(joints, parents, j) for j in range(n_j)])
    torso = {"pelvis", "spine1", "spine2", "spine3"}

    def sel(*keys: str) -> list[int]:
        return [j for j, n in enumerate(names) if any(n == k or n.endswith("_" + k) for k in keys)]

    def along(e: dict[int, float]) -> np.ndarray:
        a = np.zeros((n_j, 3, 3))
        for j, v in e.items():
            a[j] += v * np.outer(dirs[j], dirs[j])
        return a

    def across(g: dict[int, float]) -> np.ndarray:
        a = np.zeros((n_j, 3, 3))
        for j, v in g.items():
            a[j] += v * (np.eye(3) - np.outer(dirs[j], dirs[j]))
        return a

    def const(js: list[int], m: np.ndarray) -> np.ndarray:
        a = np.zeros((n_j, 3, 3))
        a[js] = m
        return a

    limbs = sel("hip", "knee", "shoulder", "elbow")
    girth = {j: (0.12 if names[j] in torso else 0.08 if j in sel("hip", "shoulder", "collar") else 0.04)
             for j in range(n_j)}
    specs = [
        along({j: 0.04 for j in range(n_j)}) + across({j: 0.01 for j in range(n_j)}),
        across(girth),
        along({j: 0.06 for j in sel("hip", "knee")}),
        along({j: 0.06 for j in sel("shoulder", "elbow")}),
        along({j: 0.3 for j in sel("collar")}),
        along({j: 0.07 for j in sel("spine1", "spine2", "spine3")}),
        const([_J["pelvis"]], np.diag([0.12, 0.0, 0.0])),
        const([_J["head"]], 0.12 * np.eye(3)) + across({_J["neck"]: 0.05}),
        const([_J[n] for n in torso], np.diag([0.0, 0.0, 0.15])),
        across({j: 0.12 for j in limbs}),
    ]
    assert len(specs) == NUM_BETAS == len(SHAPE_DIRECTIONS)
    out = np.zeros((len(verts), 3, NUM_BETAS))
    for s, a in enumerate(specs):
        t = np.zeros((n_j, 3))
        for j in range(1, n_j):
            p = parents[j]
            t[j] = t[p] + a[p] @ (joints[j] - joints[p])
        local = np.einsum("jab,vjb->vja", a, verts[:, None, :] - joints[None])  # (V, J, 3)
        out[:, :, s] = np.einsum("vj,vja->va", weights, local + t[None])
    return out


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------

@dataclass
class SyntheticBody:
    """Everything the writer needs: mesh, SMPL-H rig and its SMPL reduction (float64 numpy)."""

    v_template: np.ndarray  # (6890, 3)
    faces: np.ndarray  # (13776, 3) int64, outward-facing
    joints_smplh: np.ndarray  # (52, 3) rest joints the rig was built around
    weights_smplh: np.ndarray  # (6890, 52)
    regressor_smplh: np.ndarray  # (52, 6890)
    weights_smpl: np.ndarray  # (6890, 24)
    regressor_smpl: np.ndarray  # (24, 6890)
    shapedirs: np.ndarray  # (6890, 3, NUM_BETAS)


def build_synthetic_body() -> SyntheticBody:
    """Build the synthetic body in memory (a few seconds; deterministic)."""
    joints, prims, _ = _skeleton_and_prims()
    verts, faces = _build_mesh(prims)
    weights, primary = _skinning_weights(verts, faces, prims)
    kids = _children(SMPLH_PARENTS)
    groups = [[j] + kids[j] + ([SMPLH_PARENTS[j]] if j else []) for j in range(len(joints))]
    reg_h = _joint_regressor(verts, joints, primary, SMPLH_PARENTS, groups)
    # SMPL: body joints as in SMPL-H; each hand joint sits at the knuckles and takes all finger weights.
    fingers_l = list(range(22, 37))
    fingers_r = list(range(37, 52))
    w_smpl = np.concatenate([weights[:, :22], weights[:, fingers_l].sum(1, keepdims=True),
                             weights[:, fingers_r].sum(1, keepdims=True)], 1)
    knuckles = [[_J[f"{side}_{f}1"] for f in FINGER_NAMES if f != "thumb"] for side in ("left", "right")]
    hand_joints = np.stack([joints[k].mean(0) for k in knuckles])
    primary_smpl = np.where(primary >= 37, 23, np.where(primary >= 22, 22, primary))
    groups_smpl = [g for g in groups[:22]] + [[22, 20], [23, 21]]
    groups_smpl[20] = groups_smpl[20] + [22]
    groups_smpl[21] = groups_smpl[21] + [23]
    reg_s = _joint_regressor(verts, np.concatenate([joints[:22], hand_joints]), primary_smpl, SMPL_PARENTS,
                             groups_smpl)
    shapedirs = _shape_directions(verts, joints, weights)
    return SyntheticBody(verts, faces, joints, weights, reg_h, w_smpl, reg_s, shapedirs)


# --------------------------------------------------------------------------------------
# SMPL-X: the same body refined to 10475 vertices, plus jaw, eyes, expressions, landmarks
# --------------------------------------------------------------------------------------

_FACE_JOINT_NAMES = ["jaw", "left_eye_smplhf", "right_eye_smplhf"]
SMPLX_JOINT_NAMES: list[str] = SMPLH_JOINT_NAMES[:22] + _FACE_JOINT_NAMES + SMPLH_JOINT_NAMES[22:]
# SMPL-H joint j is SMPL-X joint j (body) or j + 3 (fingers, after jaw and eyes).
_H_TO_X = np.array([j if j < 22 else j + 3 for j in range(len(SMPLH_JOINT_NAMES))])
SMPLX_PARENTS: list[int] = (SMPLH_PARENTS[:22] + [_J["head"]] * 3
                            + [int(_H_TO_X[p]) for p in SMPLH_PARENTS[22:]])
_JX = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}

# Face layout on the head primitive (front of the face at z ~ 0.1, eyes at y ~ 0.47, mouth at y ~ 0.4).
_FACE_JOINTS = {"jaw": (0.0, 0.405, 0.02), "left_eye_smplhf": (0.033, 0.468, 0.083),
                "right_eye_smplhf": (-0.033, 0.468, 0.083)}
_MOUTH_Y = 0.405  # the jaw part is the head below this line, in front of z = 0
_EYE_RADII = (0.017, 0.024)  # an eye part: full weight within the first distance, none beyond the second
_HEAD_DENSITY = 2.5  # head edges end up this many times shorter than body edges (SMPL-X's face is dense)

# What each synthetic expression coefficient does (+1 = the motion below, about 5-10 mm).
EXPRESSION_DIRECTIONS = (
    "mouth open (lower face drops)", "smile (mouth corners up and back)", "brows raised", "cheeks puffed",
    "lips pushed forward", "jaw shifted to the left", "eyes closed (lids down)", "nose wrinkled",
    "brows lowered and drawn together", "mouth widened",
)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _refine_for_smplx(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SMPL-H mesh with more longest-edge splits (denser on the head) up to NUM_VERTICES_SMPLX.

    The first NUM_VERTICES vertices stay the SMPL-H vertices; each new one is an edge midpoint.
    """
    density = 1.0 + (_HEAD_DENSITY - 1.0) * _smoothstep(0.30, 0.36, verts[:, 1])
    v, f = _split_longest_edges(verts, faces, NUM_VERTICES_SMPLX, density)
    _check_closed_manifold(f, "synthetic SMPL-X body after edge splits")
    return v, f


def _face_masks(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of each vertex's head weight goes to the jaw and to the left / right eye (each (V,), 0..1)."""
    y, z = verts[:, 1], verts[:, 2]
    jaw = _sigmoid((_MOUTH_Y - y) / 0.006) * _sigmoid(z / 0.01) * _sigmoid((y - 0.32) / 0.008)
    eyes = [1.0 - _smoothstep(*_EYE_RADII, np.linalg.norm(verts - np.asarray(_FACE_JOINTS[n]), axis=1))
            for n in ("left_eye_smplhf", "right_eye_smplhf")]
    return jaw, eyes[0], eyes[1]


def _smplx_weights(w52: np.ndarray, primary52: np.ndarray, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMPL-X skinning weights (V, 55) and primary joints (V,) from the SMPL-H ones on the same mesh.

    Body and finger columns are the SMPL-H ones; the head column is shared out
    between head, jaw (lower front of the head) and eyes (a patch around each eye).
    """
    head = _J["head"]
    jaw, eye_l, eye_r = _face_masks(verts)
    h = w52[:, head]
    w = np.zeros((len(verts), len(SMPLX_JOINT_NAMES)))
    w[:, _H_TO_X] = w52
    w[:, _JX["jaw"]] = h * jaw
    w[:, _JX["left_eye_smplhf"]] = h * eye_l * (1.0 - jaw)
    w[:, _JX["right_eye_smplhf"]] = h * eye_r * (1.0 - jaw)
    w[:, head] = h - w[:, 22:25].sum(1)
    w[w < 1e-6] = 0.0
    w /= w.sum(1, keepdims=True)
    primary = _H_TO_X[primary52]
    on_head = primary52 == head
    primary[on_head & (jaw > 0.5)] = _JX["jaw"]
    primary[on_head & (eye_l > 0.5)] = _JX["left_eye_smplhf"]
    primary[on_head & (eye_r > 0.5)] = _JX["right_eye_smplhf"]
    return w, primary


def _expression_directions(verts: np.ndarray, face_weight: np.ndarray) -> np.ndarray:
    """(V, 3, NUM_EXPRESSIONS) expression directions, see EXPRESSION_DIRECTIONS.

    Each is a smooth displacement field on the front of the face: a Gaussian
    bump (mirrored to both sides where the motion is symmetric) times the
    vertex's head/jaw/eye skinning weight, so nothing below the neck moves.
    """
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    side = np.where(x < 0, -1.0, 1.0)
    mirrored = np.stack([np.abs(x), y, z], 1)
    gate = face_weight * _sigmoid(z / 0.01)
    jaw_mask, _, _ = _face_masks(verts)

    def bump(c: tuple[float, float, float], r: float, sym: bool) -> np.ndarray:
        p = mirrored if sym else verts
        return np.exp(-np.sum((p - np.asarray(c)) ** 2, axis=1) / r ** 2)

    radial = np.stack([x, np.zeros_like(x), z - 0.01], 1)
    radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)
    out = np.zeros((len(verts), 3, NUM_EXPRESSIONS))

    def put(k: int, mask: np.ndarray, disp: np.ndarray) -> None:
        out[:, :, k] = (gate * mask)[:, None] * disp

    one = np.ones_like(x)
    vec = lambda a, b, c: np.stack([a * one, b * one, c * one], 1)  # noqa: E731
    corners = bump((0.03, 0.40, 0.09), 0.02, True)
    put(0, jaw_mask, vec(0.0, -0.01, -0.003))
    put(1, corners, vec(0.002 * side, 0.006, -0.003))
    put(2, bump((0.032, 0.49, 0.09), 0.022, True), vec(0.0, 0.006, 0.0))
    put(3, bump((0.05, 0.415, 0.07), 0.025, True), 0.006 * radial)
    put(4, bump((0.0, 0.40, 0.10), 0.02, False), vec(0.0, 0.0, 0.007))
    put(5, jaw_mask, vec(0.006, 0.0, 0.0))
    put(6, bump((0.033, 0.474, 0.096), 0.012, True), vec(0.0, -0.004, 0.0))
    put(7, bump((0.0, 0.445, 0.11), 0.02, False), vec(0.0, 0.004, 0.0))
    put(8, bump((0.02, 0.485, 0.095), 0.018, True), vec(-0.003 * side, -0.004, 0.0))
    put(9, corners, vec(0.006 * side, 0.0, 0.0))
    assert NUM_EXPRESSIONS == len(EXPRESSION_DIRECTIONS) == 10
    return out


def _first_hits(verts: np.ndarray, faces: np.ndarray, origins: np.ndarray,
                dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each ray first meets the mesh: face index (R,) and barycentric coordinates (R, 3) in face order."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = b - a, c - a
    idx = np.empty(len(origins), dtype=np.int64)
    bary = np.empty((len(origins), 3))
    for r, (o, d) in enumerate(zip(origins, dirs, strict=True)):  # Moeller-Trumbore against every face
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = o - a
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if not hit.any():
            raise RuntimeError(f"synthetic SMPL-X landmarks: ray {r} from {o} misses the head")
        k = int(np.flatnonzero(hit)[np.argmin(t[hit])])
        idx[r] = k
        bc = np.clip(np.array([1.0 - u[k] - v[k], u[k], v[k]]), 0.0, 1.0)
        bary[r] = bc / bc.sum()
    return idx, bary


def _static_landmark_xy() -> np.ndarray:
    """(51, 2) front-view x, y of the 51 inner face landmarks, in iBUG-68 order without the 17 contour points."""
    pts: list[tuple[float, float]] = []
    bx = np.linspace(0.052, 0.014, 5)  # brows, outer to inner
    by = 0.49 + 0.006 * np.sin(np.linspace(0.4, 2.4, 5))
    pts += [(-u, w) for u, w in zip(bx, by, strict=True)] + [(u, w) for u, w in zip(bx[::-1], by[::-1], strict=True)]
    pts += [(0.0, float(w)) for w in np.linspace(0.468, 0.432, 4)]  # nose bridge
    pts += [(float(u), 0.418 + 0.06 * u * u) for u in np.linspace(-0.016, 0.016, 5)]  # nose base
    eye_angles = np.deg2rad([180, 120, 60, 0, 300, 240])  # (right eye: outer corner first; left eye: inner)
    for cx in (-0.033, 0.033):
        pts += [(cx + 0.012 * np.cos(t), 0.47 + 0.005 * np.sin(t)) for t in eye_angles]
    pts += [(0.026 * np.cos(t), 0.398 + 0.011 * np.sin(t)) for t in np.deg2rad(np.arange(180, -180, -30))]
    pts += [(0.018 * np.cos(t), 0.398 + 0.004 * np.sin(t)) for t in np.deg2rad(np.arange(180, -180, -45))]
    assert len(pts) == 51
    return np.asarray(pts, dtype=np.float64)


def _landmarks(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Static (51) and dynamic (79 yaw bins x 17) face landmarks as face indices and barycentric coordinates.

    Static landmarks are where front-view rays through the points of
    :func:`_static_landmark_xy` meet the face. The dynamic ones are the jaw
    contour (right ear, chin, left ear) found by horizontal rays towards the
    head's axis; bin k (smplx's look-up order: yaw k degrees for k <= 39,
    39 - k beyond) turns the contour by half that yaw.
    """
    head = np.flatnonzero(verts[faces].mean(1)[:, 1] > 0.3)  # rays at y >= 0.34 only meet these
    hf = faces[head]
    xy = _static_landmark_xy()
    origins = np.stack([xy[:, 0], xy[:, 1], np.full(len(xy), 0.3)], 1)
    dirs = np.tile([0.0, 0.0, -1.0], (len(xy), 1))
    lmk_i, lmk_b = _first_hits(verts, hf, origins, dirs)
    s = np.linspace(-1.0, 1.0, 17)
    height = 0.35 + (0.435 - 0.35) * np.abs(s) ** 1.5
    yaw = np.array([k if k <= 39 else 39 - k for k in range(79)], dtype=np.float64)
    alpha = np.deg2rad(90.0 * s[None, :] + 0.5 * yaw[:, None])  # (79, 17), 0 = straight ahead (+z)
    out_dir = np.stack([np.sin(alpha), np.zeros_like(alpha), np.cos(alpha)], -1)
    centre = np.stack([np.zeros_like(alpha), np.broadcast_to(height, alpha.shape), np.zeros_like(alpha)], -1)
    dyn_i, dyn_b = _first_hits(verts, hf, (centre + 0.3 * out_dir).reshape(-1, 3), -out_dir.reshape(-1, 3))
    return head[lmk_i], lmk_b, head[dyn_i].reshape(79, 17), dyn_b.reshape(79, 17, 3)


@dataclass
class SyntheticSMPLX:
    """The synthetic SMPL-X rig (float64 numpy; vertices 0..6889 are the SMPL-H template's)."""

    v_template: np.ndarray  # (10475, 3)
    faces: np.ndarray  # (20946, 3) int64, outward-facing
    joints: np.ndarray  # (55, 3) rest joints the rig was built around
    weights: np.ndarray  # (10475, 55)
    regressor: np.ndarray  # (55, 10475)
    shapedirs: np.ndarray  # (10475, 3, NUM_BETAS + NUM_EXPRESSIONS): shape, then expression directions
    lmk_faces_idx: np.ndarray  # (51,) int64
    lmk_bary_coords: np.ndarray  # (51, 3)
    dynamic_lmk_faces_idx: np.ndarray  # (79, 17) int64
    dynamic_lmk_bary_coords: np.ndarray  # (79, 17, 3)


def build_synthetic_smplx(body: SyntheticBody | None = None) -> SyntheticSMPLX:
    """Build the synthetic SMPL-X model from the SMPL-H one (``body``, built if not given); deterministic.

    The mesh is the SMPL-H mesh with more longest-edge splits (denser on the
    head) up to 10475 vertices; skinning weights, joint regressor and shape
    directions are computed on it as for SMPL-H, with the head part shared
    out to jaw and eyes, and ten expression directions on the face.
    """
    body = build_synthetic_body() if body is None else body
    _, prims, _ = _skeleton_and_prims()
    verts, faces = _refine_for_smplx(body.v_template, body.faces)
    w52, primary52 = _skinning_weights(verts, faces, prims)
    weights, primary = _smplx_weights(w52, primary52, verts)
    joints = np.zeros((len(SMPLX_JOINT_NAMES), 3))
    joints[_H_TO_X] = body.joints_smplh
    for name, p in _FACE_JOINTS.items():
        joints[_JX[name]] = p
    kids = _children(SMPLX_PARENTS)
    groups = [[j] + kids[j] + ([SMPLX_PARENTS[j]] if j else []) for j in range(len(joints))]
    # The denser head needs a wider neighbourhood for the jaw joint deep inside it (150 misses it by 17 mm).
    reg = _joint_regressor(verts, joints, primary, SMPLX_PARENTS, groups, n_near=250)
    face_weight = weights[:, [_J["head"], *range(22, 25)]].sum(1)
    shapedirs = np.concatenate([_shape_directions(verts, body.joints_smplh, w52),
                                _expression_directions(verts, face_weight)], axis=2)
    lmk = _landmarks(verts, faces)
    return SyntheticSMPLX(verts, faces, joints, weights, reg, shapedirs, *lmk)


def _model_dict_smplx(x: SyntheticSMPLX) -> dict[str, np.ndarray]:
    n_j = len(SMPLX_PARENTS)
    out = {
        "v_template": x.v_template.astype(np.float64),
        "f": x.faces.astype(np.uint32),
        # smplx reads columns 0..9 as betas and, with fewer than 400 columns, 10..19 as expression.
        "shapedirs": x.shapedirs.astype(np.float64),
        "posedirs": np.zeros((len(x.v_template), 3, 9 * (n_j - 1)), dtype=np.float32),
        "J_regressor": x.regressor.astype(np.float64),
        "kintree_table": np.stack([np.asarray(SMPLX_PARENTS, dtype=np.int64), np.arange(n_j, dtype=np.int64)]),
        "weights": x.weights.astype(np.float64),
        "lmk_faces_idx": x.lmk_faces_idx.astype(np.int64),
        "lmk_bary_coords": x.lmk_bary_coords.astype(np.float64),
        "dynamic_lmk_faces_idx": x.dynamic_lmk_faces_idx.astype(np.int64),
        "dynamic_lmk_bary_coords": x.dynamic_lmk_bary_coords.astype(np.float64),
        "zoo_synthetic_version": np.array(_FORMAT_VERSION),
    }
    for side in ("l", "r"):
        out[f"hands_components{side}"] = np.eye(45)
        out[f"hands_mean{side}"] = np.zeros(45)
    return out


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed``'s bytes for ``arrays``, with every zip entry's time fixed (equal arrays, equal bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for k, a in arrays.items():
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def _model_dict(body: SyntheticBody, model_type: str) -> dict[str, np.ndarray]:
    if model_type == "smplh":
        weights, reg, parents = body.weights_smplh, body.regressor_smplh, SMPLH_PARENTS
    else:
        weights, reg, parents = body.weights_smpl, body.regressor_smpl, SMPL_PARENTS
    n_j = len(parents)
    out = {
        "v_template": body.v_template.astype(np.float64),
        "f": body.faces.astype(np.uint32),
        "shapedirs": body.shapedirs.astype(np.float64),
        # No pose-corrective blend shapes (linear blend skinning only). float32 rather than
        # float64 halves the largest array; smplx converts it to float32 anyway.
        "posedirs": np.zeros((len(body.v_template), 3, 9 * (n_j - 1)), dtype=np.float32),
        "J_regressor": reg.astype(np.float64),
        "kintree_table": np.stack([np.asarray(parents, dtype=np.int64), np.arange(n_j, dtype=np.int64)]),
        "weights": weights.astype(np.float64),
        "zoo_synthetic_version": np.array(_FORMAT_VERSION),
    }
    if model_type == "smplh":
        for side in ("l", "r"):
            out[f"hands_components{side}"] = np.eye(45)
            out[f"hands_mean{side}"] = np.zeros(45)
    return out


def synthetic_model_paths(root: str | Path) -> dict[str, Path]:
    """The files ``write_synthetic_body_models(root)`` writes, by name."""
    root = Path(root)
    return {
        "smplh_pkl": root / "smplh" / "SMPLH_NEUTRAL.pkl",
        "smplh_npz": root / "smplh" / "SMPLH_NEUTRAL.npz",
        "smpl_pkl": root / "smpl" / "SMPL_NEUTRAL.pkl",
        "smplx_npz": root / "smplx" / "SMPLX_NEUTRAL.npz",
    }


_FILE_BYTES: dict[str, bytes] = {}


def _model_file_bytes() -> dict[str, bytes]:
    """The four model files' bytes (68 MB), built once per process: they are deterministic, and building
    the body takes ~10 s (tests write many folders)."""
    if not _FILE_BYTES:
        body = build_synthetic_body()
        smplh, smpl = _model_dict(body, "smplh"), _model_dict(body, "smpl")
        _FILE_BYTES.update(
            smplh_pkl=pickle.dumps(smplh, protocol=4), smpl_pkl=pickle.dumps(smpl, protocol=4),
            # npz files: deflated (the all-zero posedirs compress to almost nothing), byte-for-byte deterministic
            smplh_npz=_npz_bytes(smplh), smplx_npz=_npz_bytes(_model_dict_smplx(build_synthetic_smplx(body))))
    return _FILE_BYTES


def write_synthetic_body_models(root: str | Path, overwrite: bool = False) -> Path:
    """Write the synthetic SMPL-H (.pkl, .npz), SMPL (.pkl) and SMPL-X (.npz) neutral models; return ``root``.

    Files already present are kept unless ``overwrite`` (so repeated calls
    cost a stat each, and a real model file next to a missing one is never
    replaced by the stand-in). Each file is written to a temporary name and
    moved into place, so a reader never sees half a model.
    """
    from zoo.core.atomic import atomic_open

    root = Path(root)
    paths = synthetic_model_paths(root)
    todo = [k for k, p in paths.items() if overwrite or not p.is_file()]
    if not todo:
        return root
    files = _model_file_bytes()
    for key in todo:
        with atomic_open(paths[key], "wb") as fh:
            fh.write(files[key])
    for key in todo:
        os.chmod(paths[key], 0o644)  # the temporary file was private; a model file is ordinary data
    return root


def cli(args: list[str]) -> int:
    """``make_synthetic.py body --out DIR [--overwrite]``: write the synthetic body models; returns an exit code."""
    import argparse

    ap = argparse.ArgumentParser(prog="make_synthetic.py body",
                                 description="Write synthetic SMPL / SMPL-H / SMPL-X neutral body models in smplx's "
                                             "on-disk format.")
    ap.add_argument("--out", required=True, help="model directory; smpl/, smplh/ and smplx/ are created inside it")
    ap.add_argument("--overwrite", action="store_true", help="rebuild even if the files exist")
    ns = ap.parse_args(args)
    root = write_synthetic_body_models(ns.out, overwrite=ns.overwrite)
    for p in synthetic_model_paths(root).values():
        print(p)
    return 0


main_body = cli  # the name the task brief also mentions


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
