"""Synthetic objects of real PIAD classes with geometric affordance fields.

Each class is built from primitives (boxes, surfaces of revolution, swept tubes, extruded
polygons) with per-instance random dimensions. The mesh is sampled to exactly
``n_points`` (2048, as PIAD) surface points, and every point gets 17 affordance values in
[0, 1] (:data:`zoo.data.formats.AFFORDANCES` order, PIAD's column order) that follow the geometry: a value is
``exp(-d^2 / sigma^2)`` of the distance ``d`` from the point to the functional region of
that affordance (the handle of a mug for ``grasp``, the seat top of a chair for ``sit``,
...), so it is 1 on the region and falls off smoothly around it.

Frame: metres, Y up; the functional front of an object faces +Z before the instance's
random rotation about Y (``SyntheticObject.yaw``). Points, normals and the mesh share the
frame. Everything is numpy and deterministic given the random generator.

Classes (``OBJECT_CLASSES``) and their affordances:

* Mug: grasp (handle), wrapgrasp (outer wall), contain (inside), pour (rim)
* Bottle: grasp (neck), open / pour (opening), wrapgrasp (body)
* Bowl: contain (inside), pour (rim), wrapgrasp (outer wall)
* Chair: sit (seat top), support (front of the backrest), move (top of the backrest)
* Bed: lay (mattress top), sit (long edges of the mattress top)
* Table: support (table top), move (top's edges)
* Knife: grasp (handle), cut (blade edge), stab (tip)
* Door: open (handle), push (panel around the handle)
* StorageFurniture: open (handles), contain (top of the cabinet), push (front)
* Display: display (screen)
* Laptop: display (screen), press (keyboard area)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from zoo.data.formats import AFFORDANCES

__all__ = [
    "OBJECT_CLASSES", "CLASS_AFFORDANCES", "SyntheticObject", "make_object", "affordance_falloff",
    "sample_surface",
]

_A = {a: i for i, a in enumerate(AFFORDANCES)}

CLASS_AFFORDANCES: dict[str, tuple[str, ...]] = {
    "Mug": ("grasp", "wrapgrasp", "contain", "pour"),
    "Bottle": ("grasp", "open", "pour", "wrapgrasp"),
    "Bowl": ("contain", "pour", "wrapgrasp"),
    "Chair": ("sit", "support", "move"),
    "Bed": ("lay", "sit"),
    "Table": ("support", "move"),
    "Knife": ("grasp", "cut", "stab"),
    "Door": ("open", "push"),
    "StorageFurniture": ("open", "contain", "push"),
    "Display": ("display",),
    "Laptop": ("display", "press"),
}
OBJECT_CLASSES = tuple(CLASS_AFFORDANCES)


@dataclass
class SyntheticObject:
    """One object instance: surface points with affordances, their part labels, and a coloured mesh.

    ``points`` (N, 3), ``normals`` (N, 3), ``affordance`` (N, 17) float32 in [0, 1];
    ``part`` (N,) int64 indexing ``part_names``; ``verts`` (V, 3) float32, ``faces`` (F, 3)
    int64, ``face_colors`` (F, 3) float32 in [0, 1]; ``face_part`` (F,) int64.
    """

    name: str
    points: np.ndarray
    normals: np.ndarray
    affordance: np.ndarray
    part: np.ndarray
    part_names: tuple[str, ...]
    verts: np.ndarray
    faces: np.ndarray
    face_colors: np.ndarray
    face_part: np.ndarray
    yaw: float = 0.0
    dims: dict = field(default_factory=dict)

    def values(self, affordance: str) -> np.ndarray:
        """The (N,) column of one affordance by name."""
        if affordance not in _A:
            raise KeyError(f"unknown affordance {affordance!r} (known: {', '.join(AFFORDANCES)})")
        return self.affordance[:, _A[affordance]]

    def part_mask(self, *names: str) -> np.ndarray:
        """Boolean (N,) mask of the points on any of the named parts."""
        unknown = [n for n in names if n not in self.part_names]
        if unknown:
            raise KeyError(f"{self.name}: unknown part(s) {unknown} (parts: {', '.join(self.part_names)})")
        ids = [self.part_names.index(n) for n in names]
        return np.isin(self.part, ids)

    @property
    def active_affordances(self) -> tuple[str, ...]:
        """The affordances this class has a functional region for."""
        return CLASS_AFFORDANCES[self.name]


# ------------------------------------------------------------------------------------------
# Mesh builder
# ------------------------------------------------------------------------------------------

class _Builder:
    """Collects mesh pieces, each with a part name and a colour."""

    def __init__(self):
        self.verts: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.fpart: list[np.ndarray] = []
        self.fcol: list[np.ndarray] = []
        self.parts: list[str] = []
        self._n = 0

    def add(self, part: str, v: np.ndarray, f: np.ndarray, color) -> None:
        if part not in self.parts:
            self.parts.append(part)
        self.verts.append(np.asarray(v, np.float64))
        self.faces.append(np.asarray(f, np.int64) + self._n)
        self.fpart.append(np.full(len(f), self.parts.index(part), np.int64))
        self.fcol.append(np.repeat(np.asarray(color, np.float32)[None], len(f), 0))
        self._n += len(v)

    def box(self, center, half, color, part: str, top_part: str | None = None, front_part: str | None = None) -> None:
        """An axis-aligned box; its +Y side and +Z side may carry their own part names."""
        c, h = np.asarray(center, np.float64), np.asarray(half, np.float64)
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * h + c
        # Quads with outward winding: -x, +x, -y, +y, -z, +z.
        quads = {"-x": (0, 1, 3, 2), "+x": (4, 6, 7, 5), "-y": (0, 4, 5, 1), "+y": (2, 3, 7, 6),
                 "-z": (0, 2, 6, 4), "+z": (1, 5, 7, 3)}
        for side, q in quads.items():
            name = top_part if side == "+y" and top_part else front_part if side == "+z" and front_part else part
            self.add(name, corners[list(q)], np.array([[0, 1, 2], [0, 2, 3]]), color)

    def lathe(self, profile: np.ndarray, color, part_of_segment, segments: int = 32, center=(0.0, 0.0)) -> None:
        """A surface of revolution about the Y axis of a profile (K, 2) of (radius, y).

        ``part_of_segment(k)`` names the part of the band between profile points k and k+1.
        """
        prof = np.asarray(profile, np.float64)
        az = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        ca, sa = np.cos(az), np.sin(az)
        for k in range(len(prof) - 1):
            (r0, y0), (r1, y1) = prof[k], prof[k + 1]
            ring0 = np.stack([r0 * ca + center[0], np.full(segments, y0), r0 * sa + center[1]], -1)
            ring1 = np.stack([r1 * ca + center[0], np.full(segments, y1), r1 * sa + center[1]], -1)
            j = np.arange(segments)
            jn = (j + 1) % segments
            f = np.concatenate([np.stack([j, segments + j, segments + jn], -1), np.stack([j, segments + jn, jn], -1)])
            self.add(part_of_segment(k), np.concatenate([ring0, ring1]), f, color)

    def tube(self, path: np.ndarray, radius: float, color, part: str, segments: int = 12) -> None:
        """A tube of circular section swept along a planar path (K, 3) lying in a z = const plane."""
        path = np.asarray(path, np.float64)
        tang = np.gradient(path, axis=0)
        tang /= np.linalg.norm(tang, axis=1, keepdims=True)
        z = np.array([0.0, 0.0, 1.0])
        nrm = np.cross(tang, z)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        az = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        rings = path[:, None] + radius * (np.cos(az)[None, :, None] * nrm[:, None] + np.sin(az)[None, :, None] * z)
        K = len(path)
        v = rings.reshape(-1, 3)
        f = []
        for k in range(K - 1):
            j = np.arange(segments)
            jn = (j + 1) % segments
            a, b, c, d = k * segments + j, k * segments + jn, (k + 1) * segments + j, (k + 1) * segments + jn
            f += [np.stack([a, c, d], -1), np.stack([a, d, b], -1)]
        self.add(part, v, np.concatenate(f), color)

    def extrude(self, poly: np.ndarray, z0: float, z1: float, color, part: str,
                edge_part: dict[int, str] | None = None) -> None:
        """A prism from a convex polygon (K, 2) in the x-y plane between z0 and z1.

        ``edge_part`` maps a polygon edge index k (from vertex k to k+1) to its own part name.
        """
        poly = np.asarray(poly, np.float64)
        K = len(poly)
        front = np.column_stack([poly, np.full(K, z1)])
        back = np.column_stack([poly, np.full(K, z0)])
        fan = np.array([[0, k, k + 1] for k in range(1, K - 1)])
        self.add(part, front, fan, color)
        self.add(part, back, fan[:, ::-1], color)
        for k in range(K):
            kn = (k + 1) % K
            quad = np.array([back[k], back[kn], front[kn], front[k]])
            name = (edge_part or {}).get(k, part)
            self.add(name, quad, np.array([[0, 1, 2], [0, 2, 3]]), color)

    def build(self):
        return (np.concatenate(self.verts), np.concatenate(self.faces), np.concatenate(self.fcol),
                np.concatenate(self.fpart), tuple(self.parts))


# ------------------------------------------------------------------------------------------
# Sampling and affordance fields
# ------------------------------------------------------------------------------------------

def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points uniformly on a triangle mesh: (points (n, 3), unit face normals (n, 3), face ids (n,))."""
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise ValueError("sample_surface: the mesh has zero area")
    fid = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    pts = (tri[fid] * w[..., None]).sum(1)
    nrm = cross[fid] / np.maximum(area[fid], 1e-18)[:, None]
    return pts, nrm, fid


def affordance_falloff(points: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-d^2 / sigma^2) with d the distance from each point to the nearest point of ``region`` (M, 3).

    1 on the region, smoothly decaying away from it; all zeros when the region is empty.
    """
    region = np.asarray(region, np.float64).reshape(-1, 3)
    if len(region) == 0:
        return np.zeros(len(points))
    from scipy.spatial import cKDTree

    d, _ = cKDTree(region).query(points, k=1)
    return np.exp(-(d ** 2) / sigma ** 2)


# ------------------------------------------------------------------------------------------
# Classes: each returns the builder, dims, and a function (points, part ids, parts) -> {aff: values}
# ------------------------------------------------------------------------------------------

def _color(rng, base) -> np.ndarray:
    return np.clip(np.asarray(base, np.float64) + rng.uniform(-0.12, 0.12, 3), 0.05, 0.95)


def _mug(rng):
    u = rng.uniform
    R, H, t = u(0.035, 0.05), u(0.08, 0.12), 0.004
    a, tr = u(0.024, 0.032), u(0.005, 0.007)
    col = _color(rng, rng.choice([[0.85, 0.3, 0.25], [0.25, 0.45, 0.8], [0.9, 0.85, 0.7]]))
    b = _Builder()
    prof = [(0.0, 0.0), (R, 0.0), (R, H), (R - t, H), (R - t, t), (0.0, t)]
    b.lathe(prof, col, lambda k: ("bottom", "outer", "rim", "inner", "inner")[k])
    ang = np.linspace(-np.pi / 2, np.pi / 2, 24)
    path = np.stack([R - 0.002 + a * 0.8 * np.cos(ang), H / 2 + a * np.sin(ang), np.zeros_like(ang)], -1)
    b.tube(path, tr, col * 0.9, "handle")

    def aff(p, part, parts):
        def on(*ns):
            return p[np.isin(part, [parts.index(n) for n in ns])]

        outer = on("outer")
        band = outer[(outer[:, 1] > 0.2 * H) & (outer[:, 1] < 0.85 * H)]
        rim = p[(part == parts.index("rim")) | ((part != parts.index("handle")) & (p[:, 1] > H - 0.006))]
        return {"grasp": affordance_falloff(p, on("handle"), 0.012),
                # The wall is 4 mm thin: mask by part so the inside and outside do not share values.
                "wrapgrasp": affordance_falloff(p, band, 0.01) * (part == parts.index("outer")),
                "contain": affordance_falloff(p, on("inner"), 0.008) * np.isin(part, [parts.index("inner"),
                                                                                     parts.index("rim")]),
                "pour": affordance_falloff(p, rim, 0.012)}

    return b, dict(radius=R, height=H), aff


def _bottle(rng):
    u = rng.uniform
    R, Hb = u(0.03, 0.045), u(0.12, 0.2)
    rn, hs, hn = u(0.01, 0.015), u(0.03, 0.05), u(0.04, 0.07)
    top = Hb + hs + hn
    col = _color(rng, rng.choice([[0.2, 0.6, 0.3], [0.3, 0.5, 0.85], [0.6, 0.35, 0.2]]))
    b = _Builder()
    prof = [(0.0, 0.0), (R, 0.0), (R, Hb), (rn, Hb + hs), (rn, top), (0.0, top)]
    b.lathe(prof, col, lambda k: ("bottom", "body", "shoulder", "neck", "opening")[k])

    def aff(p, part, parts):
        neck = p[part == parts.index("neck")]
        mouth = p[p[:, 1] > top - 0.008]
        body = p[(part == parts.index("body")) & (p[:, 1] > 0.15 * Hb) & (p[:, 1] < 0.9 * Hb)]
        return {"grasp": affordance_falloff(p, neck, 0.015),
                "open": affordance_falloff(p, mouth, 0.01),
                "pour": affordance_falloff(p, mouth, 0.02),
                "wrapgrasp": affordance_falloff(p, body, 0.012)}

    return b, dict(radius=R, height=top), aff


def _bowl(rng):
    u = rng.uniform
    Rb, depth, t = u(0.06, 0.1), u(0.5, 0.75), 0.005
    col = _color(rng, rng.choice([[0.9, 0.9, 0.85], [0.7, 0.5, 0.3], [0.4, 0.6, 0.8]]))
    th = np.linspace(0, math.acos(1 - depth), 8)  # polar angle from the bottom pole up to the rim
    outer = [(Rb * math.sin(a), Rb * (1 - math.cos(a))) for a in th]
    inner = [((Rb - t) * math.sin(a), t + (Rb - t) * (1 - math.cos(a))) for a in th[::-1]]
    prof = outer + inner
    n_out = len(outer) - 1
    b = _Builder()
    b.lathe(prof, col, lambda k: "outer" if k < n_out else ("rim" if k == n_out else "inner"))
    H = Rb * depth

    def aff(p, part, parts):
        inner_p = p[part == parts.index("inner")]
        rim = p[p[:, 1] > H - 0.006]
        outer_p = p[(part == parts.index("outer")) & (p[:, 1] > 0.25 * H)]
        return {"contain": affordance_falloff(p, inner_p, 0.01) * (part != parts.index("outer")),
                "pour": affordance_falloff(p, rim, 0.01),
                "wrapgrasp": affordance_falloff(p, outer_p, 0.01) * (part == parts.index("outer"))}

    return b, dict(radius=Rb, height=H), aff


def _chair(rng):
    u = rng.uniform
    w, d, hs, ts = u(0.4, 0.5), u(0.4, 0.5), u(0.42, 0.48), 0.04
    hb, tb, lw = u(0.35, 0.5), 0.04, u(0.03, 0.045)
    col = _color(rng, rng.choice([[0.55, 0.35, 0.2], [0.3, 0.3, 0.35], [0.8, 0.75, 0.6]]))
    b = _Builder()
    b.box((0, hs - ts / 2, 0), (w / 2, ts / 2, d / 2), col, "seat", top_part="seat_top")
    for sx in (-1, 1):
        for sz in (-1, 1):
            b.box((sx * (w / 2 - lw / 2), (hs - ts) / 2, sz * (d / 2 - lw / 2)), (lw / 2, (hs - ts) / 2, lw / 2),
                  col * 0.8, "legs")
    b.box((0, hs + hb / 2, -d / 2 + tb / 2), (w / 2, hb / 2, tb / 2), col, "back", front_part="back_front",
          top_part="back_top")

    def aff(p, part, parts):
        seat_top = p[part == parts.index("seat_top")]
        front = p[(part == parts.index("back_front")) & (p[:, 1] > hs + 0.05)]
        top = p[p[:, 1] > hs + hb - 0.03]
        return {"sit": affordance_falloff(p, seat_top, 0.02),
                "support": affordance_falloff(p, front, 0.02),
                "move": affordance_falloff(p, top, 0.03)}

    return b, dict(width=w, depth=d, seat_height=hs, height=hs + hb), aff


def _bed(rng):
    u = rng.uniform
    w, L, hm, hh = u(1.0, 1.8), u(1.9, 2.1), u(0.45, 0.6), u(0.3, 0.6)
    col = _color(rng, [0.85, 0.85, 0.9])
    wood = _color(rng, [0.5, 0.33, 0.2])
    b = _Builder()
    b.box((0, 0.15, 0), (w / 2, 0.15, L / 2), wood, "frame")
    b.box((0, 0.3 + (hm - 0.3) / 2, 0), (w / 2 - 0.02, (hm - 0.3) / 2, L / 2 - 0.02), col, "mattress",
          top_part="mattress_top")
    b.box((0, (hm + hh) / 2, -L / 2 - 0.03), (w / 2, (hm + hh) / 2, 0.03), wood, "headboard")

    def aff(p, part, parts):
        top = p[part == parts.index("mattress_top")]
        edge = top[np.abs(top[:, 0]) > w / 2 - 0.02 - 0.15]
        return {"lay": affordance_falloff(p, top, 0.04),
                "sit": affordance_falloff(p, edge, 0.05) * (p[:, 1] > 0.3)}

    return b, dict(width=w, length=L, height=hm), aff


def _table(rng):
    u = rng.uniform
    w, d, h, tt, lw = u(0.8, 1.6), u(0.6, 0.9), u(0.7, 0.78), u(0.03, 0.05), u(0.04, 0.07)
    col = _color(rng, rng.choice([[0.6, 0.42, 0.25], [0.85, 0.85, 0.82], [0.3, 0.25, 0.2]]))
    b = _Builder()
    b.box((0, h - tt / 2, 0), (w / 2, tt / 2, d / 2), col, "top_edge", top_part="top")
    for sx in (-1, 1):
        for sz in (-1, 1):
            b.box((sx * (w / 2 - lw), (h - tt) / 2, sz * (d / 2 - lw)), (lw / 2, (h - tt) / 2, lw / 2), col * 0.8, "legs")

    def aff(p, part, parts):
        return {"support": affordance_falloff(p, p[part == parts.index("top")], 0.02),
                "move": affordance_falloff(p, p[part == parts.index("top_edge")], 0.02)}

    return b, dict(width=w, depth=d, height=h), aff


def _knife(rng):
    u = rng.uniform
    Lb, hb, tb = u(0.12, 0.2), u(0.022, 0.035), 0.002
    Lh, hh, th = u(0.09, 0.12), u(0.018, 0.024), u(0.012, 0.018)
    steel = _color(rng, [0.75, 0.77, 0.8])
    grip = _color(rng, rng.choice([[0.15, 0.12, 0.1], [0.45, 0.28, 0.15], [0.7, 0.15, 0.15]]))
    b = _Builder()
    # Blade polygon: straight spine on top, edge along the bottom curving up to the tip at +x.
    poly = np.array([[0.0, -hb / 2], [0.7 * Lb, -hb / 2], [Lb, hb / 2], [0.0, hb / 2]])
    b.extrude(poly, -tb / 2, tb / 2, steel, "blade", edge_part={0: "edge", 1: "edge"})
    b.box((-Lh / 2, 0.0, 0.0), (Lh / 2, hh / 2, th / 2), grip, "handle")

    def aff(p, part, parts):
        edge = p[part == parts.index("edge")]
        tip = p[(p[:, 0] > 0.88 * Lb)]
        return {"grasp": affordance_falloff(p, p[part == parts.index("handle")], 0.012),
                "cut": affordance_falloff(p, edge, 0.008) * (p[:, 0] > 0),
                "stab": affordance_falloff(p, tip, 0.012)}

    return b, dict(length=Lb + Lh), aff


def _door(rng):
    u = rng.uniform
    w, h, t = u(0.8, 1.0), u(1.9, 2.1), 0.04
    hx, hy = w / 2 - u(0.06, 0.1), u(0.9, 1.05)
    col = _color(rng, rng.choice([[0.6, 0.42, 0.25], [0.9, 0.9, 0.88], [0.35, 0.4, 0.5]]))
    metal = _color(rng, [0.75, 0.72, 0.6])
    b = _Builder()
    b.box((0, h / 2, 0), (w / 2, h / 2, t / 2), col, "panel")
    for sz in (-1, 1):
        b.box((hx - 0.05, hy, sz * (t / 2 + 0.03)), (0.065, 0.012, 0.012), metal, "handle")
        b.box((hx, hy, sz * (t / 2 + 0.015)), (0.015, 0.015, 0.015), metal, "handle")

    def aff(p, part, parts):
        panel = p[(part == parts.index("panel")) & (p[:, 0] > w / 2 - 0.3) & (np.abs(p[:, 1] - hy) < 0.35)]
        return {"open": affordance_falloff(p, p[part == parts.index("handle")], 0.06),
                "push": affordance_falloff(p, panel, 0.04) * (part == parts.index("panel"))}

    return b, dict(width=w, height=h), aff


def _storage(rng):
    u = rng.uniform
    w, h, d = u(0.6, 1.0), u(0.8, 1.6), u(0.4, 0.5)
    col = _color(rng, rng.choice([[0.6, 0.42, 0.25], [0.85, 0.85, 0.82], [0.4, 0.45, 0.5]]))
    metal = _color(rng, [0.7, 0.7, 0.7])
    b = _Builder()
    b.box((0, h / 2, 0), (w / 2, h / 2, d / 2), col, "body", top_part="top", front_part="front")
    hy = h * u(0.55, 0.7)
    for sx in (-1, 1):
        b.box((sx * 0.05, hy, d / 2 + 0.015), (0.01, 0.06, 0.015), metal, "handle")

    def aff(p, part, parts):
        front = p[(part == parts.index("front")) & (np.abs(p[:, 0]) < 0.25) & (np.abs(p[:, 1] - hy) < 0.3)]
        return {"open": affordance_falloff(p, p[part == parts.index("handle")], 0.05),
                "contain": affordance_falloff(p, p[part == parts.index("top")], 0.03),
                "push": affordance_falloff(p, front, 0.04) * (part == parts.index("front"))}

    return b, dict(width=w, height=h), aff


def _display(rng):
    u = rng.uniform
    w, h, t = u(0.45, 0.6), u(0.3, 0.4), 0.03
    hy = u(0.12, 0.2)
    body = _color(rng, [0.15, 0.15, 0.17])
    glass = _color(rng, [0.2, 0.3, 0.45])
    b = _Builder()
    b.box((0, 0.01, -0.02), (0.12, 0.01, 0.09), body, "base")
    b.box((0, hy / 2, -0.03), (0.02, hy / 2, 0.01), body, "stand")
    b.box((0, hy + h / 2, 0), (w / 2, h / 2, t / 2), body, "frame")
    b.box((0, hy + h / 2, t / 2 + 0.001), (w / 2 - 0.02, h / 2 - 0.02, 0.001), glass, "frame", front_part="screen")

    def aff(p, part, parts):
        return {"display": affordance_falloff(p, p[part == parts.index("screen")], 0.01)}

    return b, dict(width=w, height=hy + h), aff


def _laptop(rng):
    u = rng.uniform
    w, d, t = u(0.3, 0.38), u(0.21, 0.26), 0.015
    open_ang = math.radians(u(100, 125))
    body = _color(rng, rng.choice([[0.75, 0.75, 0.78], [0.2, 0.2, 0.22]]))
    b = _Builder()
    b.box((0, t / 2, 0), (w / 2, t / 2, d / 2), body, "base", top_part="base_top")
    # Keyboard: a thin slab on the base top, in the back two thirds.
    b.box((0, t + 0.001, -0.03), (w / 2 - 0.025, 0.001, d / 2 - 0.07), body * 0.6, "base", top_part="keyboard")
    # Lid hinged at the back edge, rotated back from vertical by open_ang - 90 degrees.
    lid = _Builder()
    lid.box((0, d / 2, 0), (w / 2, d / 2, 0.004), body, "lid")
    lid.box((0, d / 2, 0.0045), (w / 2 - 0.015, d / 2 - 0.015, 0.0005), (0.15, 0.2, 0.35), "lid", front_part="screen")
    lv, lf, lc, lp, lparts = lid.build()
    tilt = open_ang - math.pi / 2
    c, s = math.cos(tilt), math.sin(tilt)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # about x: tips the lid backwards (-z) for tilt > 0
    lv = lv @ rot.T + np.array([0.0, t, -d / 2])
    for k, name in enumerate(lparts):
        sel = lp == k
        used = np.unique(lf[sel])
        remap = -np.ones(len(lv), np.int64)
        remap[used] = np.arange(len(used))
        b.add(name, lv[used], remap[lf[sel]], lc[sel][0])

    def aff(p, part, parts):
        return {"display": affordance_falloff(p, p[part == parts.index("screen")], 0.01),
                "press": affordance_falloff(p, p[part == parts.index("keyboard")], 0.012)}

    return b, dict(width=w, depth=d), aff


_BUILDERS = {"Mug": _mug, "Bottle": _bottle, "Bowl": _bowl, "Chair": _chair, "Bed": _bed, "Table": _table,
             "Knife": _knife, "Door": _door, "StorageFurniture": _storage, "Display": _display, "Laptop": _laptop}


def make_object(name: str, rng: np.random.Generator | int, n_points: int = 2048, noise: float = 0.002,
                yaw: float | None = None) -> SyntheticObject:
    """A random instance of class ``name`` (see ``OBJECT_CLASSES``) with ``n_points`` surface points.

    ``rng`` is a numpy Generator or a seed. ``noise`` is the standard deviation of the
    Gaussian jitter added to the sampled points, relative to the object's size (the
    largest extent), so instances differ beyond their dimensions. ``yaw`` (radians) rotates
    the instance about +Y; None draws it uniformly.
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown synthetic object class {name!r} (classes: {', '.join(OBJECT_CLASSES)})")
    if n_points <= 0:
        raise ValueError(f"make_object: n_points must be positive, got {n_points}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    builder, dims, aff_fn = _BUILDERS[name](rng)
    verts, faces, fcol, fpart, parts = builder.build()
    pts, nrm, fid = sample_surface(verts, faces, n_points, rng)
    part = fpart[fid]
    size = float(np.ptp(verts, axis=0).max())
    pts = pts + rng.normal(0.0, noise * size, pts.shape)
    aff = np.zeros((n_points, len(AFFORDANCES)))
    for key, val in aff_fn(pts, part, list(parts)).items():
        aff[:, _A[key]] = val
    aff = np.clip(aff, 0.0, 1.0)
    yaw = float(rng.uniform(0, 2 * np.pi)) if yaw is None else float(yaw)
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return SyntheticObject(
        name=name, points=(pts @ rot.T).astype(np.float32), normals=(nrm @ rot.T).astype(np.float32),
        affordance=aff.astype(np.float32), part=part.astype(np.int64), part_names=parts,
        verts=(verts @ rot.T).astype(np.float32), faces=faces.astype(np.int64), face_colors=fcol.astype(np.float32),
        face_part=fpart, yaw=yaw, dims=dims)
