"""Differentiable soft silhouettes and depth maps of camera-space meshes (per-sample pose fitting: PHOSA, InteractVLM).

Function
--------
Both backends of :func:`soft_silhouette` compute the SoftRas / pytorch3d ``SoftSilhouetteShader`` image

    S(p) = 1 - prod_f (1 - sigmoid(-d_f(p) / sigma)),

over the faces f whose signed squared distance ``d_f(p)`` to pixel centre p is below the blur radius
``blur = log(1 / 1e-4 - 1) * sigma`` (faces containing p always count; inside, d_f is minus the squared
distance to the nearest edge, so a deep interior pixel gives S = 1 and a pixel on an edge gives 0.5 from that
face). At ``d = blur`` the sigmoid is 1e-4, so the cut-off drops nothing that matters.

Units of sigma: pytorch3d's squared NDC distance. NDC spans [-1, 1] over the shorter image side, so one pixel is
``2 / min(H, W)`` NDC units and ``sigma = 1e-4`` at 128 x 128 is ``1e-4 / (2 / 128)^2 = 0.41`` squared pixels
(a soft edge about one pixel wide, blur radius sqrt(9.21 * 0.41) = 1.9 px). The same sigma gives a sharper edge
(in pixels) at a larger raster: keep sigma fixed and the edge width scales with the raster, as in pytorch3d.

Backends
--------
* ``"pytorch3d"``: ``MeshRasterizer`` (``blur_radius`` as above, ``faces_per_pixel`` nearest faces, naive
  ``bin_size=0`` on CPU) + ``SoftSilhouetteShader(BlendParams(sigma, gamma=1e-4))``, cameras from
  ``cameras_from_opencv_projection`` with R = I, t = 0 (vertices are already in the OpenCV camera frame). These
  are the settings of pytorch3d's own silhouette-fitting examples (sigma 1e-4, gamma 1e-4, faces_per_pixel 50 at
  128 px or 100), the form InteractVLM's pytorch3d soft-silhouette fitting takes; its exact optim/ values were not
  in the searchable index when this was written, so the defaults here are pytorch3d's.
* ``"cpu_fast"``: the same function in torch. Candidate (face, pixel) pairs enumerate each face's pixel bounding
  box grown by the blur radius (all faces at once: ``repeat_interleave`` over the box sizes, in chunks of about
  ``chunk`` pairs, so a few dozen tensor ops in all), keep the pixels inside the triangle grown by the blur radius
  (no gradients); the kept pairs are then evaluated once with autograd and combined per pixel as
  ``1 - exp(sum log sigmoid(d / sigma))``. Unlike pytorch3d it keeps every face within the blur radius (no
  ``faces_per_pixel`` cap); the two agree whenever a pixel has at most ``faces_per_pixel`` such faces, which is
  the normal case for sigma = 1e-4 (tests/render/test_silhouette.py measures the agreement). Where more faces crowd
  a pixel (silhouette rims of finely tessellated meshes seen edge-on, e.g. a 512-section cylinder at 128 px)
  pytorch3d with 50 faces per pixel drops some of them and darkens those pixels; with faces_per_pixel=400 the two
  agree again to 5e-6.

Conventions are the zoo's (contract): OpenCV camera frame, z > 0 in front, pixel (row, col) centred at
(col + 0.5, row + 0.5), K in pixels of the raster it renders unless a function says otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as Fn
from torch import nn

from zoo.core.registry import register
from zoo.render.cameras import project_opencv
from zoo.render.raster import rasterize

__all__ = ["BACKENDS", "blur_radius", "soft_silhouette", "depth_map", "scale_intrinsics", "SoftSilhouetteRenderer"]

BACKENDS = ("cpu_fast", "pytorch3d")
_CUTOFF = math.log(1.0 / 1e-4 - 1.0)  # blur radius / sigma: sigmoid(-blur / sigma) = 1e-4


def blur_radius(sigma: float) -> float:
    """pytorch3d ``blur_radius`` (squared NDC units) belonging to ``sigma``: ``log(1 / 1e-4 - 1) * sigma``."""
    return _CUTOFF * float(sigma)


def _hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        H = W = int(image_size)
    else:
        if len(image_size) != 2:
            raise ValueError(f"silhouette: image_size must be an int or (H, W), got {image_size!r}")
        H, W = (int(s) for s in image_size)
    if H <= 0 or W <= 0:
        raise ValueError(f"silhouette: image_size must be positive, got {(H, W)}")
    return H, W


def _check(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, where: str
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch verts (B, N, 3) and K (B, 3, 3); validate faces and depth (z > 0)."""
    if verts_cam.ndim == 2:
        verts_cam = verts_cam[None]
    if verts_cam.ndim != 3 or verts_cam.shape[-1] != 3:
        raise ValueError(f"{where}: verts_cam must be (N, 3) or (B, N, 3), got {tuple(verts_cam.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.shape[0] == 0:
        raise ValueError(f"{where}: faces must be a non-empty (F, 3) index tensor, got {tuple(faces.shape)}")
    faces = faces.to(device=verts_cam.device, dtype=torch.long)
    N = verts_cam.shape[1]
    if faces.min() < 0 or faces.max() >= N:
        raise ValueError(f"{where}: faces index vertices outside [0, {N})")
    K = torch.as_tensor(K, dtype=verts_cam.dtype, device=verts_cam.device)
    if K.ndim == 2:
        K = K[None]
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"{where}: K must be (3, 3) or (B, 3, 3), got {tuple(K.shape)}")
    B = max(verts_cam.shape[0], K.shape[0])
    if verts_cam.shape[0] not in (1, B) or K.shape[0] not in (1, B):
        raise ValueError(f"{where}: batch sizes of verts_cam {verts_cam.shape[0]} and K {K.shape[0]} differ")
    zmin = verts_cam[..., 2][:, faces.unique()].min()
    if not bool(zmin > 0):
        raise ValueError(f"{where}: every face vertex must lie in front of the camera (z > 0), got min z {float(zmin)}")
    return verts_cam.expand(B, -1, -1), faces, K.expand(B, -1, -1)


def scale_intrinsics(K: torch.Tensor, from_hw: Sequence[int], to_hw: Sequence[int]) -> torch.Tensor:
    """Intrinsics (..., 3, 3) of the same camera for an image resized from ``from_hw`` to ``to_hw`` (H, W).

    With pixel centres at (col + 0.5, row + 0.5) the continuous image coordinate (0 at the left / top image edge)
    scales linearly, so fx, skew and cx scale by W'/W and fy, cy by H'/H.
    """
    (H0, W0), (H1, W1) = (int(s) for s in from_hw), (int(s) for s in to_hw)
    if min(H0, W0, H1, W1) <= 0:
        raise ValueError(f"scale_intrinsics: sizes must be positive, got from {from_hw} to {to_hw}")
    K = torch.as_tensor(K)
    S = torch.tensor([W1 / W0, H1 / H0, 1.0], dtype=K.dtype if K.is_floating_point() else torch.float32,
                     device=K.device)
    return K.to(S.dtype) * S.view(3, 1)


# ---------------------------------------------------------------------------------------------- cpu_fast
def _seg_d2(px, py, ax, ay, bx, by):
    """Squared distance from points p to segments ab (broadcasting)."""
    ex, ey = bx - ax, by - ay
    qx, qy = px - ax, py - ay
    t = ((qx * ex + qy * ey) / (ex * ex + ey * ey).clamp(min=1e-12)).clamp(0.0, 1.0)
    dx, dy = qx - t * ex, qy - t * ey
    return dx * dx + dy * dy


def _signed_d2(px, py, x0, y0, x1, y1, x2, y2):
    """Signed squared distance (negative inside) of points to triangles, and the inside flag."""
    d2 = torch.minimum(torch.minimum(_seg_d2(px, py, x0, y0, x1, y1), _seg_d2(px, py, x1, y1, x2, y2)),
                       _seg_d2(px, py, x2, y2, x0, y0))
    e0 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    e1 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    e2 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    return torch.where(inside, -d2, d2), inside


def _candidate_pairs(x: torch.Tensor, y: torch.Tensor, H: int, W: int, r2: float, chunk: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(face, pixel) pairs, no gradients: a superset of the pixels inside the face or within squared distance r2.

    x, y: (F, 3) corner pixel coordinates. Pixel ids are row * W + col.
    """
    dev = x.device
    r = math.sqrt(r2)
    xmin = torch.ceil(x.min(1).values - r - 0.5).clamp(min=0)
    xmax = torch.floor(x.max(1).values + r - 0.5).clamp(max=W - 1)
    ymin = torch.ceil(y.min(1).values - r - 0.5).clamp(min=0)
    ymax = torch.floor(y.max(1).values + r - 0.5).clamp(max=H - 1)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    ok = (area.abs() > 1e-12) & (xmax >= xmin) & (ymax >= ymin) & torch.isfinite(x).all(1) & torch.isfinite(y).all(1)
    fidx = torch.nonzero(ok).squeeze(1)
    if fidx.numel() == 0:
        e = torch.empty(0, dtype=torch.long, device=dev)
        return e, e
    x0, y0 = xmin[fidx], ymin[fidx]
    bw = (xmax[fidx] - x0 + 1).long()
    cnt = bw * (ymax[fidx] - y0 + 1).long()  # pixels in each face's grown box
    base = torch.cumsum(cnt, 0) - cnt  # exclusive prefix sum: first pair of each face
    # Per face: box origin, box width and the three edge lines a -> b as A px + B py + C = signed distance to the line
    # (positive inside), gathered in one go per pair below.
    xs, ys = x[fidx], y[fidx]
    sgn = torch.sign(area[fidx])
    cols = [x0, y0, bw.to(x.dtype)]
    for i, j in ((0, 1), (1, 2), (2, 0)):
        ex, ey = xs[:, j] - xs[:, i], ys[:, j] - ys[:, i]
        inv = sgn / torch.sqrt(ex * ex + ey * ey).clamp(min=1e-12)
        cols += [-ey * inv, ex * inv, (ey * xs[:, i] - ex * ys[:, i]) * inv]
    params = torch.stack(cols, 1)  # (F', 12)
    # Faces in chunks of about `chunk` candidate pairs (a face with a larger box is a chunk of its own).
    total = int(base[-1] + cnt[-1])
    cuts = torch.searchsorted(base, torch.arange(chunk, total, chunk, device=dev), right=True) if total > chunk \
        else torch.empty(0, dtype=torch.long, device=dev)
    bounds = [0] + sorted(set(cuts.tolist()) - {0, fidx.numel()}) + [fidx.numel()]
    out_f, out_p = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        c = cnt[a:b]
        fl = torch.repeat_interleave(torch.arange(a, b, device=dev), c)  # (T,) local face of each pair
        q = params[fl]
        local = torch.arange(fl.numel(), device=dev) + base[a] - base[fl]
        bwl = bw[fl]
        gx = q[:, 0] + (local % bwl).to(x.dtype)
        gy = q[:, 1] + torch.div(local, bwl, rounding_mode="floor").to(x.dtype)
        # Conservative test: the triangle grown by r (every signed edge-line distance >= -r) contains every pixel
        # within distance r of the face; the exact distance is applied in the differentiable pass.
        px, py = gx + 0.5, gy + 0.5
        keep = q[:, 3] * px + q[:, 4] * py + q[:, 5] >= -r
        keep &= q[:, 6] * px + q[:, 7] * py + q[:, 8] >= -r
        keep &= q[:, 9] * px + q[:, 10] * py + q[:, 11] >= -r
        k = torch.nonzero(keep).squeeze(1)
        if k.numel() == 0:
            continue
        out_f.append(fidx[fl[k]])
        out_p.append(gy[k].long() * W + gx[k].long())
    if not out_f:
        e = torch.empty(0, dtype=torch.long, device=dev)
        return e, e
    return torch.cat(out_f), torch.cat(out_p)


def _soft_silhouette_cpu(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, H: int, W: int, sigma: float,
                         chunk: int) -> torch.Tensor:
    B, N, _ = verts.shape
    F = faces.shape[0]
    uv = project_opencv(verts, K)[..., :2].reshape(B * N, 2)  # (B*N, 2), differentiable
    gfaces = (faces[None] + (torch.arange(B, device=verts.device) * N).view(B, 1, 1)).reshape(B * F, 3)
    # squared NDC distance = squared pixel distance * (2 / min(H, W))^2
    px2 = (2.0 / min(H, W)) ** 2
    sig = float(sigma) / px2
    r2 = _CUTOFF * sig
    with torch.no_grad():
        tri = uv.detach()[gfaces]  # (B*F, 3, 2)
        pf, pp = _candidate_pairs(tri[..., 0], tri[..., 1], H, W, r2, chunk)
    log_bg = torch.zeros(B * H * W, dtype=uv.dtype, device=uv.device)
    if pf.numel():
        pix = pp + torch.div(pf, F, rounding_mode="floor") * (H * W)
        # index_select (backward: index_add) is much faster on CPU than advanced indexing (index_put accumulate)
        c = uv.index_select(0, gfaces.index_select(0, pf).reshape(-1)).view(-1, 3, 2)  # (P, 3, 2) with gradient
        px = (pp % W).to(uv.dtype) + 0.5
        py = torch.div(pp, W, rounding_mode="floor").to(uv.dtype) + 0.5
        sd, _ = _signed_d2(px, py, c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1], c[:, 2, 0], c[:, 2, 1])
        # log(1 - sigmoid(-d / sigma)) = logsigmoid(d / sigma): finite even deep inside a face
        # the candidate test was conservative: drop pairs at or beyond the blur radius (pytorch3d's cut-off)
        log_bg = log_bg.index_add(0, pix, torch.where(sd < r2, Fn.logsigmoid(sd / sig), torch.zeros_like(sd)))
    return 1.0 - torch.exp(log_bg).view(B, H, W)


# ---------------------------------------------------------------------------------------------- pytorch3d
def _soft_silhouette_p3d(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, H: int, W: int, sigma: float,
                         faces_per_pixel: int) -> torch.Tensor:
    from pytorch3d.renderer import BlendParams, MeshRasterizer, RasterizationSettings, SoftSilhouetteShader
    from pytorch3d.structures import Meshes
    from pytorch3d.utils import cameras_from_opencv_projection

    B = verts.shape[0]
    dev = verts.device
    eye = torch.eye(3, device=dev).expand(B, 3, 3)
    cams = cameras_from_opencv_projection(R=eye, tvec=torch.zeros(B, 3, device=dev), camera_matrix=K.float(),
                                          image_size=torch.tensor([[H, W]], device=dev).expand(B, 2))
    settings = RasterizationSettings(image_size=(H, W), blur_radius=blur_radius(sigma),
                                     faces_per_pixel=int(faces_per_pixel), bin_size=None if dev.type == "cuda" else 0)
    mesh = Meshes(verts=list(verts.float().unbind(0)), faces=[faces] * B)
    frags = MeshRasterizer(cameras=cams, raster_settings=settings)(mesh)
    shader = SoftSilhouetteShader(blend_params=BlendParams(sigma=float(sigma), gamma=1e-4))
    return shader(frags, mesh)[..., 3]


def soft_silhouette(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, image_size: int | Sequence[int],
                    sigma: float = 1e-4, backend: str = "cpu_fast", faces_per_pixel: int = 50,
                    chunk: int = 1 << 20) -> torch.Tensor:
    """Soft silhouette (B, H, W) in [0, 1] of camera-space meshes, differentiable w.r.t. ``verts_cam``.

    Args:
        verts_cam: (N, 3) or (B, N, 3) vertices in the OpenCV camera frame (z > 0, else ValueError).
        faces: (F, 3) vertex indices shared by the batch (non-empty).
        K: (3, 3) or (B, 3, 3) intrinsics in pixels of the (H, W) raster.
        image_size: raster size, an int (square) or (H, W).
        sigma: sigmoid width in squared NDC units (module docstring); blur radius ``log(1/1e-4 - 1) * sigma``.
        backend: ``"cpu_fast"`` or ``"pytorch3d"``.
        faces_per_pixel: nearest faces pytorch3d keeps per pixel (``cpu_fast`` keeps all within the blur radius).
        chunk: most candidate (face, pixel) pairs ``cpu_fast`` tests at once (bounds memory).
    """
    if backend not in BACKENDS:
        raise ValueError(f"soft_silhouette: backend must be one of {BACKENDS}, got {backend!r}")
    if not sigma > 0:
        raise ValueError(f"soft_silhouette: sigma must be > 0, got {sigma}")
    H, W = _hw(image_size)
    verts, faces, K = _check(verts_cam, faces, K, "soft_silhouette")
    if backend == "pytorch3d":
        return _soft_silhouette_p3d(verts, faces, K, H, W, sigma, faces_per_pixel)
    return _soft_silhouette_cpu(verts, faces, K, H, W, sigma, chunk)


def depth_map(verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, image_size: int | Sequence[int]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (B, H, W) (camera z of the nearest face, 0 on background) and hard mask (B, H, W) bool.

    The visible face per pixel comes from :func:`zoo.render.raster.rasterize`; the depth is then recomputed with
    autograd from that face's projected corners, ``1 / sum_i(w_i / z_i)`` with screen-space barycentrics w, so it
    is differentiable w.r.t. all vertex coordinates (not w.r.t. which face is visible). Inputs as
    :func:`soft_silhouette`.
    """
    H, W = _hw(image_size)
    verts, faces, K = _check(verts_cam, faces, K, "depth_map")
    scr = project_opencv(verts, K)  # (B, N, 3), differentiable
    depths, masks = [], []
    for b in range(verts.shape[0]):
        frags = rasterize(scr[b].detach(), faces, H, W)
        p2f = frags.pix_to_face.reshape(-1)
        covered = torch.nonzero(p2f >= 0).squeeze(1)
        c = scr[b][faces[p2f[covered]]]  # (P, 3, 3)
        px = (covered % W).to(c.dtype) + 0.5
        py = torch.div(covered, W, rounding_mode="floor").to(c.dtype) + 0.5
        x, y, z = c[..., 0], c[..., 1], c[..., 2]
        area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
        w0 = ((x[:, 1] - px) * (y[:, 2] - py) - (x[:, 2] - px) * (y[:, 1] - py)) / area
        w1 = ((x[:, 2] - px) * (y[:, 0] - py) - (x[:, 0] - px) * (y[:, 2] - py)) / area
        w = torch.stack([w0, w1, 1.0 - w0 - w1], -1).clamp(min=0)
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
        d = 1.0 / (w / z).sum(-1)
        depths.append(torch.zeros(H * W, dtype=c.dtype, device=c.device).index_put((covered,), d).view(H, W))
        masks.append((p2f >= 0).view(H, W))
    return torch.stack(depths), torch.stack(masks)


@register("renderer", "soft_silhouette")
class SoftSilhouetteRenderer(nn.Module):
    """Registered soft-silhouette renderer for pose fitting (no parameters).

    ``forward(verts_cam (N,3)|(B,N,3), faces (F,3), K (3,3)|(B,3,3), image_hw=None) -> (B, H, W)``. Without
    ``image_hw``, K is in pixels of the ``image_size`` x ``image_size`` raster. With ``image_hw = (H, W)``, K is
    the camera of that (original) image: the raster keeps its aspect, longer side ``image_size``, and K is
    rescaled with :func:`scale_intrinsics`. ``sigma`` is in squared NDC units (module docstring).
    """

    def __init__(self, image_size: int = 128, sigma: float = 1e-4, faces_per_pixel: int = 50,
                 backend: str = "cpu_fast"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"soft_silhouette renderer: backend must be one of {BACKENDS}, got {backend!r}")
        if int(image_size) <= 0 or not sigma > 0 or int(faces_per_pixel) <= 0:
            raise ValueError(f"soft_silhouette renderer: image_size, sigma and faces_per_pixel must be positive, got "
                             f"{image_size}, {sigma}, {faces_per_pixel}")
        self.image_size = int(image_size)
        self.sigma = float(sigma)
        self.faces_per_pixel = int(faces_per_pixel)
        self.backend = backend

    def raster_size(self, image_hw: Sequence[int] | None = None) -> tuple[int, int]:
        """(H, W) of the raster for an input image of size ``image_hw`` (square ``image_size`` when None)."""
        if image_hw is None:
            return self.image_size, self.image_size
        H, W = (int(s) for s in image_hw)
        s = self.image_size / max(H, W)
        return max(1, round(H * s)), max(1, round(W * s))

    def forward(self, verts_cam: torch.Tensor, faces: torch.Tensor, K: torch.Tensor,
                image_hw: Sequence[int] | None = None) -> torch.Tensor:
        """Soft silhouettes (B, H, W) in [0, 1]."""
        hw = self.raster_size(image_hw)
        if image_hw is not None:
            K = scale_intrinsics(K, image_hw, hw)
        return soft_silhouette(verts_cam, faces, K, hw, sigma=self.sigma, backend=self.backend,
                               faces_per_pixel=self.faces_per_pixel)
