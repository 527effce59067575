"""Random orbit cameras for text-to-3D (DreamFusion / threestudio's random-camera data module, world y up).

Training: every batch is ``batch_size`` cameras drawn as threestudio's ``RandomCameraIterableDataset`` draws
them, from a generator seeded by (seed, epoch, index), so a resumed run (and every DataLoader worker) sees the
same cameras as an uninterrupted one:

* elevation: with probability 1/2 uniform in degrees over ``elevation_range``, else uniform on the sphere
  (``asin`` of a uniform height) over the same range, one choice per batch;
* azimuth: with ``batch_uniform_azimuth`` the range is cut into ``batch_size`` equal strata and camera b is
  uniform inside stratum b (every batch covers all sides), else uniform; reported in (-180, 180];
* distance and vertical field of view uniform in their ranges;
* the eye (:func:`zoo.render.rays.spherical_eye`: azimuth 0 on +Z, the body's front) moves by
  N(0, camera_perturb^2) per axis, the look-at target (the origin) by N(0, center_perturb^2) and the up
  vector (+Y) by N(0, up_perturb^2);
* the point light sits at ``light_distance * normalize(eye + N(0, light_position_perturb^2))``
  (threestudio's "dreamfusion" light strategy), with the distance uniform in ``light_distance_range``.

Validation and test: a turntable at ``eval_elevation`` / ``eval_distance`` / ``eval_fovy`` with azimuths
``360 k / n`` for k < n (``n_val_views`` / ``n_test_views``; the first view is not repeated at the end),
unperturbed, lit from the camera.

Defaults are threestudio's ``RandomCameraDataModuleConfig`` except ``eval_height`` / ``eval_width`` (64 here,
512 there: the zoo evaluates at the 64^2 training resolution) and ``n_val_views`` (4 here, 1 there: a
validation figure shows front, side, back and the other side).

Every batch (train and eval) is a dict: ``rays_o``, ``rays_d`` (B, H, W, 3) (unit directions), ``azimuth``
(B,) degrees in (-180, 180], ``elevation`` (B,) degrees, ``distance`` (B,), ``fovy`` (B,) degrees, ``eye``
(B, 3) (the camera centre, perturbation included), ``R`` (B, 3, 3), ``t`` (B, 3), ``K`` (B, 3, 3) (OpenCV,
``X_cam = R X + t``), ``light_position`` (B, 3), ``index`` (B,) long (the view index in eval, the sample
index ``index * batch_size + b`` in training) and ``height``, ``width`` (ints).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.core.recipe import ConfigError
from zoo.core.registry import register
from zoo.data.sampling import PairSampler, ResumableLoader
from zoo.render.cameras import look_at_opencv_batch
from zoo.render.rays import camera_rays, fov_intrinsics, spherical_eye

__all__ = ["RandomCameras", "RandomCameraBatches", "TurntableViews", "camera_batch", "wrap_azimuth"]


def wrap_azimuth(deg: torch.Tensor) -> torch.Tensor:
    """Angles in degrees mapped into (-180, 180]."""
    return deg - 360.0 * torch.ceil((deg - 180.0) / 360.0)


def camera_batch(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor, fovy: torch.Tensor, height: int,
                 width: int) -> dict[str, Any]:
    """Poses, intrinsics and rays of look-at cameras: {eye, R, t, K, rays_o, rays_d, fovy, height, width}.

    ``eye``, ``target``, ``up`` (B, 3); ``fovy`` (B,) degrees (vertical).
    """
    R, t = look_at_opencv_batch(eye, target, up)
    K = fov_intrinsics(fovy, height, width)
    rays_o, rays_d = camera_rays(R, t, K, height, width)
    return {"rays_o": rays_o, "rays_d": rays_d, "fovy": fovy, "eye": eye, "R": R, "t": t, "K": K,
            "height": int(height), "width": int(width)}


class RandomCameraBatches(Dataset):
    """Training batches keyed by ``(index, epoch)`` (:class:`zoo.data.sampling.PairSampler` keys): each item
    is a whole batch of random cameras, a pure function of (seed, epoch, index) (module docstring)."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = dict(cfg)

    def __len__(self) -> int:
        return int(self.cfg["epoch_size"])

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (int(key), 0)
        return self.batch(int(index), int(epoch))

    def batch(self, index: int, epoch: int) -> dict[str, Any]:
        """Batch ``index`` of ``epoch``."""
        c = self.cfg
        B = int(c["batch_size"])
        rng = np.random.default_rng([int(c["seed"]), int(epoch), int(index)])

        def uniform(lo_hi: Sequence[float], n: int = B) -> np.ndarray:
            return rng.random(n) * (lo_hi[1] - lo_hi[0]) + lo_hi[0]

        el_lo, el_hi = c["elevation_range"]
        if rng.random() < 0.5:  # uniform in angle (denser towards the poles on the sphere)
            elevation = uniform((el_lo, el_hi))
        else:  # uniform on the sphere: the sine of the elevation is uniform
            p = uniform(((el_lo + 90.0) / 180.0, (el_hi + 90.0) / 180.0))
            elevation = np.degrees(np.arcsin(np.clip(2.0 * p - 1.0, -1.0, 1.0)))
        az_lo, az_hi = c["azimuth_range"]
        if c["batch_uniform_azimuth"]:
            azimuth = (rng.random(B) + np.arange(B)) / B * (az_hi - az_lo) + az_lo
        else:
            azimuth = uniform((az_lo, az_hi))
        distance = uniform(c["distance_range"])
        fovy = uniform(c["fovy_range"])
        cam_noise = rng.standard_normal((B, 3)) * c["camera_perturb"]
        center = rng.standard_normal((B, 3)) * c["center_perturb"]
        up = np.array([0.0, 1.0, 0.0]) + rng.standard_normal((B, 3)) * c["up_perturb"]
        light_distance = uniform(c["light_distance_range"])
        light_noise = rng.standard_normal((B, 3)) * c["light_position_perturb"]

        def f32(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32))

        eye = spherical_eye(f32(azimuth), f32(elevation), f32(distance)) + f32(cam_noise)
        light_dir = eye + f32(light_noise)
        light = light_dir / light_dir.norm(dim=-1, keepdim=True).clamp(min=1e-12) * f32(light_distance)[:, None]
        out = camera_batch(eye, f32(center), f32(up), f32(fovy), c["height"], c["width"])
        out.update(azimuth=wrap_azimuth(f32(azimuth)), elevation=f32(elevation), distance=f32(distance),
                   light_position=light, index=torch.arange(B, dtype=torch.long) + int(index) * B)
        return out


class TurntableViews(Dataset):
    """Evaluation batches of a turntable: item j holds views ``[j * batch_size, (j + 1) * batch_size)`` of ``n``
    at azimuths ``360 k / n``, one elevation, distance and field of view, lit from the camera."""

    def __init__(self, n: int, elevation: float, distance: float, fovy: float, height: int, width: int,
                 batch_size: int = 1):
        self.n, self.batch_size = int(n), int(batch_size)
        self.elevation, self.distance, self.fovy = float(elevation), float(distance), float(fovy)
        self.height, self.width = int(height), int(width)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def azimuths(self) -> torch.Tensor:
        """Azimuth (n,) of every view, degrees in (-180, 180]."""
        return wrap_azimuth(torch.arange(self.n, dtype=torch.float64) * (360.0 / self.n)).float()

    def __getitem__(self, j: int) -> dict[str, Any]:
        if not 0 <= j < len(self):
            raise IndexError(f"turntable batch {j} out of range (0..{len(self) - 1})")
        idx = torch.arange(j * self.batch_size, min((j + 1) * self.batch_size, self.n), dtype=torch.long)
        B = idx.numel()
        az = self.azimuths()[idx]
        el = torch.full((B,), self.elevation)
        dist = torch.full((B,), self.distance)
        eye = spherical_eye(az, el, dist)
        out = camera_batch(eye, torch.zeros(B, 3), torch.tensor([[0.0, 1.0, 0.0]]).expand(B, 3),
                           torch.full((B,), self.fovy), self.height, self.width)
        out.update(azimuth=az, elevation=el, distance=dist, light_position=eye.clone(), index=idx)
        return out


def _check_range(key: str, value: Sequence[float], low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False) -> list[float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError((key,), f"random_cameras: must be [min, max] (two numbers), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError((key,), f"random_cameras: must be finite, got {value!r}")
    if lo > hi:
        raise ConfigError((key,), f"random_cameras: min {lo:g} > max {hi:g}; expected [min, max]")
    _check_number(key, lo, low, high, open_low, open_high, "min")
    _check_number(key, hi, low, high, open_low, open_high, "max")
    return [lo, hi]


def _check_number(key: str, v: float, low: float | None, high: float | None, open_low: bool = False,
                  open_high: bool = False, what: str = "value") -> float:
    bad_low = low is not None and (v <= low if open_low else v < low)
    bad_high = high is not None and (v >= high if open_high else v > high)
    if bad_low or bad_high or not math.isfinite(v):
        lb = "(" if open_low else "["
        rb = ")" if open_high else "]"
        span = f"{lb}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{rb}"
        raise ConfigError((key,), f"random_cameras: {what} {v:g} is outside {span}")
    return float(v)


def _check_int(key: str, v: int, low: int = 1) -> int:
    if isinstance(v, bool) or int(v) != v or v < low:
        raise ConfigError((key,), f"random_cameras: must be an int >= {low}, got {v!r}")
    return int(v)


@register("datamodule", "random_cameras")
class RandomCameras(L.LightningDataModule):
    """Random orbit cameras for text-to-3D training, turntables for validation and test (module docstring).

    ``train_dataloader`` yields ``epoch_size`` batches per epoch, each a pure function of (seed, epoch, index):
    the loader is a :class:`zoo.data.sampling.ResumableLoader` over :class:`PairSampler` keys, so Lightning's
    ``set_epoch`` and its checkpointed loader position resume a run on the same cameras (under DDP the epoch's
    batches are dealt out across the processes, rank r taking batches r, r + N, ...). ``val_dataloader`` /
    ``test_dataloader`` (and ``predict_dataloader``, the test views) yield turntable batches of
    ``eval_batch_size`` views. Angles are in degrees, distances in metres.
    """

    data_name = "random_cameras"

    def __init__(self, height: int = 64, width: int = 64, batch_size: int = 1,
                 azimuth_range: tuple[float, float] = (-180.0, 180.0), elevation_range: tuple[float, float] = (-10.0, 90.0),
                 distance_range: tuple[float, float] = (1.0, 1.5), fovy_range: tuple[float, float] = (40.0, 70.0),
                 camera_perturb: float = 0.1, center_perturb: float = 0.2, up_perturb: float = 0.02,
                 light_distance_range: tuple[float, float] = (0.8, 1.5), light_position_perturb: float = 1.0,
                 batch_uniform_azimuth: bool = True, epoch_size: int = 100, seed: int = 0,
                 eval_height: int = 64, eval_width: int = 64, eval_batch_size: int = 1, eval_elevation: float = 15.0,
                 eval_distance: float = 1.5, eval_fovy: float = 70.0, n_val_views: int = 4,
                 n_test_views: int = 120, num_workers: int = 0):
        super().__init__()
        cfg = dict(
            height=_check_int("height", height), width=_check_int("width", width),
            batch_size=_check_int("batch_size", batch_size),
            azimuth_range=_check_range("azimuth_range", azimuth_range),
            elevation_range=_check_range("elevation_range", elevation_range, -90.0, 90.0),
            distance_range=_check_range("distance_range", distance_range, 0.0, open_low=True),
            fovy_range=_check_range("fovy_range", fovy_range, 0.0, 180.0, True, True),
            camera_perturb=_check_number("camera_perturb", float(camera_perturb), 0.0, None),
            center_perturb=_check_number("center_perturb", float(center_perturb), 0.0, None),
            up_perturb=_check_number("up_perturb", float(up_perturb), 0.0, None),
            light_distance_range=_check_range("light_distance_range", light_distance_range, 0.0, open_low=True),
            light_position_perturb=_check_number("light_position_perturb", float(light_position_perturb), 0.0, None),
            batch_uniform_azimuth=bool(batch_uniform_azimuth), epoch_size=_check_int("epoch_size", epoch_size),
            seed=int(seed), eval_height=_check_int("eval_height", eval_height),
            eval_width=_check_int("eval_width", eval_width),
            eval_batch_size=_check_int("eval_batch_size", eval_batch_size),
            eval_elevation=_check_number("eval_elevation", float(eval_elevation), -90.0, 90.0),
            eval_distance=_check_number("eval_distance", float(eval_distance), 0.0, None, open_low=True),
            eval_fovy=_check_number("eval_fovy", float(eval_fovy), 0.0, 180.0, True, True),
            n_val_views=_check_int("n_val_views", n_val_views), n_test_views=_check_int("n_test_views", n_test_views),
            num_workers=_check_int("num_workers", num_workers, 0))
        self.save_hyperparameters(cfg)
        self.train_set: RandomCameraBatches | None = None
        self.val_set: TurntableViews | None = None
        self.test_set: TurntableViews | None = None

    def _turntable(self, n: int) -> TurntableViews:
        h = self.hparams
        return TurntableViews(n, h.eval_elevation, h.eval_distance, h.eval_fovy, h.eval_height, h.eval_width,
                              h.eval_batch_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the camera sets (nothing is read: every stage gets all three)."""
        self.train_set = RandomCameraBatches(dict(self.hparams))
        self.val_set = self._turntable(self.hparams.n_val_views)
        self.test_set = self._turntable(self.hparams.n_test_views)

    def _need(self, ds: Dataset | None, name: str) -> Dataset:
        if ds is None:
            raise RuntimeError(f"random_cameras: the {name} split is not set up; call setup() first")
        return ds

    def _loader(self, ds: Dataset, sampler=None) -> DataLoader:
        # batch_size=None: every dataset item already is a batch (threestudio draws a batch's cameras together)
        kw = dict(batch_size=None, num_workers=self.hparams.num_workers,
                  persistent_workers=self.hparams.num_workers > 0)
        if sampler is not None:
            return ResumableLoader(ds, sampler=sampler, **kw)
        return DataLoader(ds, shuffle=False, **kw)

    def train_dataloader(self) -> DataLoader:
        """``epoch_size`` random camera batches per epoch, a pure function of (seed, epoch, index)."""
        ds = self._need(self.train_set, "train")
        return self._loader(ds, PairSampler(len(ds), self.hparams.seed, shuffle=False))

    def val_dataloader(self) -> DataLoader:
        """The validation turntable (``n_val_views`` views)."""
        return self._loader(self._need(self.val_set, "val"))

    def test_dataloader(self) -> DataLoader:
        """The test turntable (``n_test_views`` views)."""
        return self._loader(self._need(self.test_set, "test"))

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self.test_dataloader()
