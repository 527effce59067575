"""Occupancy of a posed body mesh: inside / outside and distance to the surface, from libigl.

:class:`BodyOccupancy` answers, for query points, whether they are inside the posed body and how far they
are from its surface; InterFusion holds its human and object NeRFs to the anchor body with it (the paper
uses COAP, a learned occupancy; an exact inside/outside test of the posed mesh serves the same purpose).

Two methods, both on the maintained library (libigl 2.6, ``import igl``):

* ``"winding"`` (default): the generalised winding number w(p) (Jacobson et al. 2013) by libigl's fast
  winding number (Barnes-Hut hierarchy of the triangles, ``igl.FastWindingNumberBVH``, built once per body
  in :meth:`BodyOccupancy.set_body`) and the unsigned distance by an AABB tree over the triangles
  (``igl.AABB.squared_distance``, also built once). Inside is ``w > inside_threshold`` (0.5).
* ``"signed_distance"``: one ``igl.signed_distance`` call with the pseudonormal sign (Baerentzen & Aanaes);
  inside is a negative signed distance. It needs a closed, consistently oriented mesh: it has no answer
  for holes (the sign near a hole follows the nearest triangle's pseudonormal), so it is the cross-check
  and the speed reference, not the default. Its ``"winding"`` output is the 0/1 inside indicator (no
  winding number is computed).

Open holes (SMPL-X's eye sockets, a mesh with a few faces missing): w is the solid angle the surface
subtends at p divided by 4 pi, so a hole only removes the solid angle the hole itself subtends. Well
inside the body (a few hole radii away from it) w stays close to 1 (a hole of radius a seen from distance
D removes about a^2 / (4 D^2)); on the plane of a flat hole w is about 0.5, so the 0.5 level set closes
the hole by a surface spanning its rim: points just inside the hole count as inside, points just outside
as outside, and the answer is only uncertain within about one hole radius of the rim's spanning surface.
The distance is to the triangles that exist, so a point at the centre of a hole is at the hole's radius
from the surface, not 0.

COAP-compatible call: ``occupancy(points (B, N, 3), {"vertices": (B, V, 3)}) -> (B, N)`` in [0, 1] (the
winding number clamped to [0, 1]: 1 inside, 0 outside, in between only near holes), with the faces of
the last :meth:`set_body` (or a ``"faces"`` entry), so a learned occupancy with COAP's ``query(points,
smpl_output)`` can be swapped in.

Speed (tools/bench_occupancy.py, posed synthetic SMPL-X, 80k points half near the surface, 2 shared and
busy cores): building the hierarchies ~0.1 s per body; ``query`` 3-7e4 points/s with the distance (the AABB
search is ~90% of it; libigl holds the GIL, so Python threads do not help), ~1.3e5 points/s without it
(``distance=False``). The hierarchies are built once per body, so a fixed anchor body pays that once.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["BodyOccupancy", "MODEL_VERTEX_COUNTS", "as_numpy_mesh"]

# Vertex counts of the official body-model templates (and of zoo.body.synthetic's stand-ins).
MODEL_VERTEX_COUNTS = {"smpl": 6890, "smplh": 6890, "smplx": 10475}
_DISPLAY = {"smpl": "SMPL", "smplh": "SMPL-H", "smplx": "SMPL-X", "mesh": "mesh"}
_METHODS = ("winding", "signed_distance")


def _to_numpy(x: Any, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def as_numpy_mesh(vertices: Any, faces: Any, what: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64) as contiguous numpy arrays, checked; ``what`` names the
    mesh in the errors (ValueError: shape, non-finite vertices, face index out of range)."""
    v = _to_numpy(vertices, np.float64)
    f = _to_numpy(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 3:
        raise ValueError(f"{what}: vertices must be (V, 3) with V >= 3, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] < 1:
        raise ValueError(f"{what}: faces must be (F, 3) triangle indices with F >= 1, got shape {f.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: {int((~np.isfinite(v)).any(axis=1).sum())} vertices are not finite")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(f"{what}: face indices must be in [0, {v.shape[0] - 1}] (V = {v.shape[0]}), "
                         f"got [{f.min()}, {f.max()}]")
    return v, f


class BodyOccupancy:
    """Inside / outside and distance to the surface of one posed body mesh (see the module docstring).

    Args:
        model_type: ``"smpl"`` / ``"smplh"`` (6890 vertices), ``"smplx"`` (10475) or ``"mesh"`` (any
            vertex count); :meth:`set_body` refuses a body with another vertex count.
        method: ``"winding"`` (generalised winding number, robust to holes) or ``"signed_distance"``
            (pseudonormal sign; closed meshes only).
        inside_threshold: a point is inside when its winding number exceeds this (0.5: the level set that
            closes holes by a surface spanning their rim).
        accuracy: the fast winding number's Barnes-Hut accuracy term (libigl's recommended 2; larger is
            more accurate and slower).
    """

    def __init__(self, model_type: str = "smplx", method: str = "winding", inside_threshold: float = 0.5,
                 accuracy: float = 2.0) -> None:
        if model_type not in (*MODEL_VERTEX_COUNTS, "mesh"):
            raise ValueError(f"BodyOccupancy: model_type must be one of {[*MODEL_VERTEX_COUNTS, 'mesh']}, "
                             f"got {model_type!r}")
        if method not in _METHODS:
            raise ValueError(f"BodyOccupancy: method must be one of {list(_METHODS)}, got {method!r}")
        if not 0.0 < float(inside_threshold) < 1.0:
            raise ValueError(f"BodyOccupancy: inside_threshold must be in (0, 1), got {inside_threshold!r}")
        self.model_type = model_type
        self.method = method
        self.inside_threshold = float(inside_threshold)
        self.accuracy = float(accuracy)
        self.vertices: np.ndarray | None = None
        self.faces: np.ndarray | None = None
        self._fwn = None
        self._aabb = None

    @property
    def expected_vertices(self) -> int | None:
        """The vertex count :meth:`set_body` accepts (None for ``model_type="mesh"``)."""
        return MODEL_VERTEX_COUNTS.get(self.model_type)

    def set_body(self, vertices: Any, faces: Any) -> BodyOccupancy:
        """Take a posed body (vertices (V, 3) in metres, faces (F, 3)) and build the libigl hierarchies
        the queries walk; returns self. A vertex count other than the model type's raises ValueError."""
        n = int(np.shape(vertices)[0]) if np.ndim(vertices) >= 1 else 0
        want = self.expected_vertices
        if want is not None and n != want:
            raise ValueError(
                f"BodyOccupancy(model_type={self.model_type!r}): the body has {n} vertices, expected {want} "
                f"({_DISPLAY[self.model_type]}); pass a {_DISPLAY[self.model_type]} body, or build the "
                f"occupancy for its model type (smpl/smplh: 6890, smplx: 10475, mesh: any)")
        import igl

        v, f = as_numpy_mesh(vertices, faces, f"BodyOccupancy.set_body ({_DISPLAY[self.model_type]} body)")
        self.vertices, self.faces = v, f
        if self.method == "winding":
            self._fwn = igl.FastWindingNumberBVH()
            self._fwn.init(v, f, 2)  # expansion order 2: libigl's default accuracy / speed trade-off
            self._aabb = igl.AABB()
            self._aabb.init(v, f)
        return self

    def _require_body(self) -> None:
        if self.vertices is None:
            raise RuntimeError("BodyOccupancy: no body set; call set_body(vertices, faces) before querying")

    def query(self, points: Any, distance: bool = True) -> dict[str, torch.Tensor]:
        """Occupancy of query points (N, 3) (numpy or torch, metres).

        Returns float32 tensors (on the points' device when they are a tensor): ``inside`` (N,) 0/1,
        ``winding`` (N,) generalised winding number (the 0/1 indicator for ``signed_distance``),
        ``distance`` (N,) unsigned distance to the surface in metres. Not differentiable (an occupancy
        label for the fields' losses). ``distance=False`` leaves ``"distance"`` out of the dict; with the
        winding method it skips the AABB search, most of the time of a query (the object's L^O_geo needs
        only ``inside``).
        """
        import igl

        self._require_body()
        device = points.device if isinstance(points, torch.Tensor) else torch.device("cpu")
        p = _to_numpy(points, np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"BodyOccupancy.query: points must be (N, 3), got shape {p.shape}")
        if p.shape[0] == 0:
            empty = torch.zeros(0, device=device)
            return {"inside": empty, "winding": empty.clone(), **({"distance": empty.clone()} if distance else {})}
        if self.method == "winding":
            w = self._fwn.winding_number(p, self.accuracy)
            inside = w > self.inside_threshold
            dist = None
            if distance:
                sq, _, _ = self._aabb.squared_distance(self.vertices, self.faces, p)
                dist = np.sqrt(np.maximum(sq, 0.0))
        else:
            s, _, _, _ = igl.signed_distance(p, self.vertices, self.faces,
                                             sign_type=igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)
            inside = s < 0
            w = inside.astype(np.float64)
            dist = np.abs(s) if distance else None  # one call gives both; drop it for a uniform answer

        def out(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device)

        res = {"inside": out(inside), "winding": out(w)}
        if dist is not None:
            res["distance"] = out(dist)
        return res

    def occupancy(self, points: Any) -> torch.Tensor:
        """Soft occupancy (N,) in [0, 1] of the current body: the winding number clamped to [0, 1]
        (the inside indicator for ``signed_distance``)."""
        return self.query(points, distance=False)["winding"].clamp(0.0, 1.0)

    def __call__(self, points: torch.Tensor, body: dict) -> torch.Tensor:
        """COAP-compatible: occupancy (B, N) in [0, 1] of points (B, N, 3) against the bodies
        ``body["vertices"]`` (B, V, 3); faces from ``body["faces"]`` ((F, 3)) or the last :meth:`set_body`.
        The hierarchy is rebuilt only when a body's vertices differ from the one it was built for."""
        if not isinstance(body, dict) or "vertices" not in body:
            raise ValueError("BodyOccupancy(points, body): body must be a dict with 'vertices' (B, V, 3) "
                             f"(a body model's output), got {type(body).__name__}"
                             + (f" with keys {sorted(body)}" if isinstance(body, dict) else ""))
        verts = body["vertices"]
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"BodyOccupancy(points, body): points must be (B, N, 3), got {tuple(points.shape)}")
        if verts.ndim != 3 or verts.shape[0] != points.shape[0]:
            raise ValueError(f"BodyOccupancy(points, body): body['vertices'] must be (B, V, 3) with the points' "
                             f"B = {points.shape[0]}, got {tuple(verts.shape)}")
        faces = body.get("faces")
        if faces is None:
            if self.faces is None:
                raise ValueError("BodyOccupancy(points, body): no faces: give body['faces'] (F, 3) or call "
                                 "set_body once with the model's faces")
            faces = self.faces
        faces = _to_numpy(faces, np.int64)
        out = []
        for b in range(points.shape[0]):
            v = _to_numpy(verts[b], np.float64)
            same = (self.vertices is not None and self.vertices.shape == v.shape and np.array_equal(self.vertices, v)
                    and self.faces is not None and np.array_equal(self.faces, faces))
            if not same:
                self.set_body(v, faces)
            out.append(self.occupancy(points[b]))
        return torch.stack(out)
