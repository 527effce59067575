"""Mesh operations on body meshes: geodesic distances, body-part labels and groups, vertex normals.

Part labels follow SMPL's 24 kinematic parts: a vertex belongs to the joint
with the largest skinning weight (SMPL-H finger joints and SMPL-X face/finger
joints fold into SMPL's hand and head parts). DECO renders its 26-class part
segmentation from SMPL's per-vertex part index as ``0 = background,
1 + part index`` (24 parts, so 1..24) with one extra bucket (25) that real
parts never reach; :func:`deco_part_labels` gives that numbering, assuming
DECO's part index follows SMPL's joint order as its part-texture code suggests.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zoo.body.skeleton import SMPL_JOINT_NAMES, SMPLH_JOINT_NAMES
from zoo.core.atomic import atomic_path

__all__ = [
    "geodesic_distances", "mesh_edges", "vertex_normals", "SMPL_PART_NAMES", "DECO_PART_NAMES",
    "NUM_DECO_PART_CLASSES", "PART_GROUPS", "vertex_part_labels", "deco_part_labels",
    "part_vertex_ids", "part_vertex_ids_from",
]

# --------------------------------------------------------------------------------------
# Geodesic distances
# --------------------------------------------------------------------------------------

_GEODESIC_VERSION = b"zoo-geodesic-v1"


def _check_mesh(verts: np.ndarray, faces: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    verts = np.asarray(verts.detach().cpu() if torch.is_tensor(verts) else verts)
    faces = np.asarray(faces.detach().cpu() if torch.is_tensor(faces) else faces)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"{where}: verts must be (V, 3), got shape {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{where}: faces must be (F, 3), got shape {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"{where}: faces must hold integer vertex indices, got dtype {faces.dtype}")
    if not np.isfinite(verts).all():
        raise ValueError(f"{where}: verts contain NaN or inf")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"{where}: faces index vertices outside [0, {len(verts)}) "
                         f"(min {faces.min()}, max {faces.max()})")
    return verts.astype(np.float64), faces.astype(np.int64)


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2), smaller index first, of a triangle mesh."""
    faces = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e.sort(axis=1)
    return np.unique(e, axis=0)


def _geodesic_key(verts: np.ndarray, faces: np.ndarray) -> str:
    h = hashlib.sha256(_GEODESIC_VERSION)
    h.update(np.ascontiguousarray(verts, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def _dijkstra_all(verts: np.ndarray, faces: np.ndarray, out: np.ndarray, chunk: int = 256) -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    n = len(verts)
    e = mesh_edges(faces)
    w = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1)
    # Zero-length edges would vanish from a sparse matrix; a tiny length keeps them as edges.
    w = np.maximum(w, 1e-12)
    graph = coo_matrix((w, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    for s in range(0, n, chunk):
        idx = np.arange(s, min(n, s + chunk))
        out[s: s + len(idx)] = dijkstra(graph, directed=False, indices=idx).astype(np.float32)


def geodesic_distances(verts: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor,
                       cache_dir: str | Path | None = None) -> np.ndarray:
    """All-pairs geodesic distances (V, V) float32 in the mesh's units (metres for body models).

    Computed by Dijkstra on the mesh edge graph (edge length = Euclidean
    length), which over-estimates the true surface geodesic slightly (paths
    follow edges) - the same approximation DECO's distance matrix uses.
    Vertices in different connected components (or unused by any face) are
    ``np.inf`` apart; callers taking a minimum over target vertices get inf
    only when no target is reachable, and should treat that as "no path".

    With ``cache_dir`` the matrix is stored there as ``geodesic_<hash>.npy``
    (hash of vertices and faces; written atomically) and later calls return a
    read-only memory map of it. For 6890 vertices the matrix is 190 MB and
    takes about 10 s on 2 cores the first time. The zoo's shared place for
    it is ``zoo.core.paths.cache_dir("geodesics")``; without ``cache_dir``
    nothing is written and the matrix is an ordinary (writable) array.
    """
    verts, faces = _check_mesh(verts, faces, "geodesic_distances")
    n = len(verts)
    if cache_dir is None:
        out = np.empty((n, n), dtype=np.float32)
        _dijkstra_all(verts, faces, out)
        return out
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"geodesic_{_geodesic_key(verts, faces)}.npy"
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape != (n, n) or arr.dtype != np.float32:
            raise ValueError(f"{path}: cached geodesic matrix has shape {arr.shape} dtype {arr.dtype}, "
                             f"expected ({n}, {n}) float32; delete the file to rebuild it")
        return arr
    with atomic_path(path) as tmp:
        # Written straight into a memory-mapped .npy so the 190 MB matrix is never held twice.
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, n))
        _dijkstra_all(verts, faces, mm)
        mm.flush()
        del mm
        os.chmod(tmp, 0o644)  # the temporary file is private; a shared cache ($ZOO_HOME) is read by others
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------------------
# Vertex normals
# --------------------------------------------------------------------------------------

def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals, (V, 3) or batched (B, V, 3), for faces (F, 3).

    Outward for outward-oriented (counter-clockwise seen from outside) faces,
    as SMPL's are. Differentiable; isolated vertices get a zero normal. The one
    implementation for the zoo: the renderers (:mod:`zoo.render`) shade and colour
    with it too.
    """
    if verts.shape[-1] != 3 or verts.ndim not in (2, 3):
        raise ValueError(f"vertex_normals: verts must be (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"vertex_normals: faces must be (F, 3), got {tuple(faces.shape)}")
    batched = verts.ndim == 3
    v = verts if batched else verts[None]
    f = faces.long().to(v.device)
    tri = v[:, f]  # (B, F, 3 corners, 3)
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])  # length = 2 * area
    # One scatter over the faces' corners in face order (f0c0, f0c1, f0c2, f1c0, ...): every vertex
    # sums its faces in face order, the order the rendered images and synthetic datasets were made with
    # (three scatters, one per corner, round differently in the last bit).
    n = torch.zeros_like(v).index_add(1, f.reshape(-1), fn.repeat_interleave(3, dim=1))
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return n if batched else n[0]


# --------------------------------------------------------------------------------------
# Body parts
# --------------------------------------------------------------------------------------

SMPL_PART_NAMES: list[str] = list(SMPL_JOINT_NAMES)
NUM_DECO_PART_CLASSES = 26
DECO_PART_NAMES: list[str] = ["background"] + SMPL_PART_NAMES + ["unused"]

_SMPLX_EXTRA = ["jaw", "left_eye_smplhf", "right_eye_smplhf"]
_SMPLX_JOINT_NAMES = SMPLH_JOINT_NAMES[:22] + _SMPLX_EXTRA + SMPLH_JOINT_NAMES[22:]


def _joint_to_smpl_part(name: str) -> int:
    if name in SMPL_PART_NAMES:
        return SMPL_PART_NAMES.index(name)
    if name in _SMPLX_EXTRA:
        return SMPL_PART_NAMES.index("head")
    for side in ("left", "right"):
        if name.startswith(side + "_"):
            return SMPL_PART_NAMES.index(f"{side}_hand")
    raise ValueError(f"joint {name!r} has no SMPL part")


def _default_joint_names(n_joints: int) -> list[str]:
    names = {24: SMPL_JOINT_NAMES, 52: SMPLH_JOINT_NAMES, 55: _SMPLX_JOINT_NAMES}.get(n_joints)
    if names is None:
        raise ValueError(f"vertex_part_labels: weights have {n_joints} joint columns; expected 24 (SMPL), "
                         "52 (SMPL-H) or 55 (SMPL-X), or pass joint_names")
    return list(names)


def vertex_part_labels(weights: np.ndarray | torch.Tensor, joint_names: Sequence[str] | None = None) -> np.ndarray:
    """SMPL part index (0..23, see SMPL_PART_NAMES) of every vertex from skinning weights (V, J)."""
    w = np.asarray(weights.detach().cpu() if torch.is_tensor(weights) else weights)
    if w.ndim != 2:
        raise ValueError(f"vertex_part_labels: weights must be (V, J), got shape {w.shape}")
    names = list(joint_names) if joint_names is not None else _default_joint_names(w.shape[1])
    if len(names) != w.shape[1]:
        raise ValueError(f"vertex_part_labels: {len(names)} joint names for {w.shape[1]} weight columns")
    to_part = np.array([_joint_to_smpl_part(n) for n in names])
    return to_part[w.argmax(1)]


def deco_part_labels(weights: np.ndarray | torch.Tensor, joint_names: Sequence[str] | None = None) -> np.ndarray:
    """Per-vertex labels in DECO's 26-class part numbering (1 + SMPL part index; 0 is background)."""
    return vertex_part_labels(weights, joint_names) + 1


def _parts(*names: str) -> tuple[int, ...]:
    return tuple(SMPL_PART_NAMES.index(n) for n in names)


# group -> (SMPL parts, optional facing filter (axis, sign) on template normals).
# The facing filter picks, e.g., the back half of the torso: normals there point to -z
# because SMPL-family templates face +z.
PART_GROUPS: dict[str, tuple[tuple[int, ...], tuple[int, int] | None]] = {
    "hands": (_parts("left_wrist", "right_wrist", "left_hand", "right_hand"), None),
    "left_hand": (_parts("left_wrist", "left_hand"), None),
    "right_hand": (_parts("right_wrist", "right_hand"), None),
    "feet": (_parts("left_ankle", "right_ankle", "left_foot", "right_foot"), None),
    "head": (_parts("head"), None),
    "back": (_parts("spine1", "spine2", "spine3"), (2, -1)),
    "front": (_parts("spine1", "spine2", "spine3"), (2, 1)),
    "hips": (_parts("pelvis"), None),
    "buttocks": (_parts("pelvis", "left_hip", "right_hip"), (2, -1)),
    "thighs": (_parts("left_hip", "right_hip"), None),
    "arms": (_parts("left_shoulder", "right_shoulder", "left_elbow", "right_elbow"), None),
    "torso": (_parts("pelvis", "spine1", "spine2", "spine3"), None),
}


def part_vertex_ids_from(weights: np.ndarray | torch.Tensor, verts: np.ndarray | torch.Tensor,
                         faces: np.ndarray | torch.Tensor, group: str,
                         joint_names: Sequence[str] | None = None) -> np.ndarray:
    """Sorted vertex ids of a named part group (see PART_GROUPS) from skinning weights and the rest mesh."""
    if group not in PART_GROUPS:
        raise KeyError(f"unknown body part group {group!r}; known groups: {', '.join(sorted(PART_GROUPS))}")
    parts, facing = PART_GROUPS[group]
    labels = vertex_part_labels(weights, joint_names)
    mask = np.isin(labels, parts)
    if facing is not None:
        v = torch.as_tensor(np.asarray(verts.detach().cpu() if torch.is_tensor(verts) else verts), dtype=torch.float64)
        f = torch.as_tensor(np.asarray(faces.detach().cpu() if torch.is_tensor(faces) else faces), dtype=torch.long)
        n = vertex_normals(v, f).numpy()
        axis, sign = facing
        mask &= sign * n[:, axis] > 0.3
        if group == "buttocks":  # the top of the thighs only, not the backs of the knees
            pelvis_y = np.asarray(v[labels == SMPL_PART_NAMES.index("pelvis"), 1]).min()
            mask &= np.asarray(v[:, 1]) > pelvis_y - 0.08 * (float(v[:, 1].max() - v[:, 1].min()) / 1.7)
    return np.flatnonzero(mask)


def part_vertex_ids(model, group: str) -> np.ndarray:
    """Vertex ids of a named part group (hands, feet, back, hips, buttocks, head, ...) of a BodyModel."""
    return part_vertex_ids_from(model.lbs_weights, model.v_template, model.faces, group)
