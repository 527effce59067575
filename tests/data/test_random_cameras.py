"""Random orbit cameras (zoo.data.cameras, datamodule random_cameras): look-at rays, the turntable views,
training batches as a pure function of (seed, epoch, index) through the resumable loader, ConfigErrors.

(Named test_random_cameras.py: tests/render/test_cameras.py already holds the basename test_cameras.py, and
pytest's default import mode refuses two test modules of one basename in folders without __init__.py.)"""
import math

import pytest
import torch

from zoo.core.recipe import ConfigError
from zoo.data.cameras import RandomCameras, wrap_azimuth
from zoo.render.cameras import look_at_opencv, look_at_opencv_batch
from zoo.render.rays import camera_rays, fov_intrinsics, spherical_eye

TINY = dict(height=8, width=8, batch_size=2, epoch_size=4, n_val_views=2, n_test_views=4, eval_height=8, eval_width=8)
KEYS = {"rays_o", "rays_d", "azimuth", "elevation", "distance", "fovy", "eye", "R", "t", "K", "light_position",
        "index", "height", "width"}


def test_centre_ray_points_at_the_target_and_azimuth_zero_is_on_plus_z():
    eye = torch.tensor([[0.3, 0.8, 2.0], [-1.0, 0.2, -0.5]])
    target = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, 0.0]])
    R, t = look_at_opencv_batch(eye, target)
    for b in range(2):  # the batched look-at is the single-camera one
        R1, t1 = look_at_opencv(eye[b], target[b])
        assert torch.allclose(R[b], R1, atol=1e-6) and torch.allclose(t[b], t1, atol=1e-6)
    K = fov_intrinsics(torch.tensor([50.0, 70.0]), 5, 7)  # odd sizes: pixel (2, 3) is centred on the axis
    o, d = camera_rays(R, t, K, 5, 7)
    assert torch.allclose(o[:, 0, 0], eye, atol=1e-6)
    assert torch.allclose(d[:, 2, 3], torch.nn.functional.normalize(target - eye, dim=-1), atol=1e-6)
    # the top row looks further up (world y) than the bottom row: image y is down, world y is up
    assert (d[:, 0, 3, 1] > d[:, 4, 3, 1]).all()
    # the half vertical field of view: the ray through the top edge's centre (v = 0) is fovy / 2 off the axis
    K_edge = fov_intrinsics(torch.tensor([50.0, 70.0]), 5, 7)
    for b, fov in enumerate((50.0, 70.0)):
        f = K_edge[b, 1, 1].item()
        assert f == pytest.approx(2.5 / math.tan(math.radians(fov / 2)))
        angle = math.degrees(math.acos(float((d[b, 0, 3] * d[b, 2, 3]).sum())))
        assert angle == pytest.approx(math.degrees(math.atan(2.0 / f)), abs=1e-3)  # row 0 centre is 2 px up
    # azimuth 0 (elevation 0) sits on +Z looking at the origin along -Z; azimuth 90 on +X
    e = spherical_eye(torch.tensor([0.0, 90.0]), 0.0, 2.0)
    assert torch.allclose(e, torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]]), atol=1e-6)
    R, t = look_at_opencv_batch(e)
    _, d = camera_rays(R, t, fov_intrinsics(60.0, 3, 3), 3, 3)
    assert torch.allclose(d[0, 1, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert torch.allclose(d[1, 1, 1], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(R[0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # image right is world +X from the front
    assert wrap_azimuth(torch.tensor([-180.0, 180.0, 270.0, 0.0, -190.0])).tolist() == [180, 180, -90, 0, 170]


def test_turntable_views():
    dm = RandomCameras(**TINY, eval_elevation=15.0, eval_distance=1.5, eval_fovy=70.0, eval_batch_size=3)
    dm.setup("fit")
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["azimuth"].tolist() == [0.0, 180.0]
    test = list(dm.test_dataloader())
    assert [len(b["index"]) for b in test] == [3, 1]
    az = torch.cat([b["azimuth"] for b in test])
    assert az.tolist() == [0.0, 90.0, 180.0, -90.0] and torch.cat([b["index"] for b in test]).tolist() == [0, 1, 2, 3]
    b = test[0]
    assert set(b) == KEYS and b["height"] == 8 and b["width"] == 8 and b["rays_o"].shape == (3, 8, 8, 3)
    el = math.radians(15.0)
    assert torch.allclose(b["eye"][0], torch.tensor([0.0, 1.5 * math.sin(el), 1.5 * math.cos(el)]), atol=1e-6)
    assert torch.allclose(b["eye"][1], torch.tensor([1.5 * math.cos(el), 1.5 * math.sin(el), 0.0]), atol=1e-6)
    assert torch.allclose(b["light_position"], b["eye"]) and torch.allclose(b["fovy"], torch.full((3,), 70.0))
    assert torch.allclose(b["elevation"], torch.full((3,), 15.0)) and torch.allclose(b["distance"], torch.full((3,), 1.5))
    assert torch.allclose(b["K"], fov_intrinsics(torch.full((3,), 70.0), 8, 8))
    # each view looks at the origin: the eye's projection through R, t lands on the camera axis
    cam = (b["R"] @ torch.zeros(3, 3, 1))[..., 0] + b["t"]
    assert torch.allclose(cam[:, :2], torch.zeros(3, 2), atol=1e-6) and torch.allclose(cam[:, 2], torch.full((3,), 1.5))
    assert [len(x["index"]) for x in dm.predict_dataloader()] == [3, 1]


def _train_batches(dm, epoch):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_training_batches_are_a_function_of_seed_epoch_and_index():
    dm = RandomCameras(**TINY, seed=3)
    dm.setup("fit")
    e0, e0_again, e1 = _train_batches(dm, 0), _train_batches(dm, 0), _train_batches(dm, 1)
    assert len(e0) == 4 and set(e0[0]) == KEYS and e0[0]["rays_d"].shape == (2, 8, 8, 3)
    for a, b in zip(e0, e0_again, strict=True):
        for k in KEYS - {"height", "width"}:
            assert torch.equal(a[k], b[k]), k
    assert not torch.equal(e0[0]["eye"], e0[1]["eye"])  # other index
    assert not torch.equal(e0[0]["eye"], e1[0]["eye"])  # other epoch
    assert [b["index"].tolist() for b in e0] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    other = RandomCameras(**TINY, seed=4)
    other.setup("fit")
    assert not torch.equal(_train_batches(other, 0)[0]["eye"], e0[0]["eye"])  # other seed
    # a resumed loader (Lightning restores its state from the checkpoint) continues on the same batches
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    fresh = RandomCameras(**TINY, seed=3)
    fresh.setup("fit")
    resumed = fresh.train_dataloader()
    resumed.sampler.set_epoch(1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 2 and torch.equal(rest[0]["eye"], e1[2]["eye"]) and torch.equal(rest[1]["R"], e1[3]["R"])


def test_training_cameras_follow_the_ranges():
    cfg = dict(TINY, batch_size=4, epoch_size=16, azimuth_range=[-180, 180], elevation_range=[0, 60],
               distance_range=[1.0, 1.5], fovy_range=[40, 70], light_distance_range=[0.8, 1.5])
    dm = RandomCameras(**cfg)
    dm.setup("fit")
    batches = _train_batches(dm, 0)
    az = torch.stack([b["azimuth"] for b in batches])  # (16, 4)
    # batch_uniform_azimuth: camera b of every batch lies in the b-th quarter of [-180, 180]
    lo = torch.tensor([-180.0, -90.0, 0.0, 90.0])
    assert ((az >= lo - 1e-4) & (az <= lo + 90 + 1e-4)).all() and (az > -180).all() and (az <= 180).all()
    cat = {k: torch.cat([b[k] for b in batches]) for k in ("elevation", "distance", "fovy", "light_position", "eye")}
    assert ((cat["elevation"] >= 0) & (cat["elevation"] <= 60)).all()
    assert ((cat["distance"] >= 1.0) & (cat["distance"] <= 1.5)).all()
    assert ((cat["fovy"] >= 40) & (cat["fovy"] <= 70)).all()
    light = cat["light_position"].norm(dim=-1)
    assert ((light >= 0.8 - 1e-5) & (light <= 1.5 + 1e-5)).all()
    # unperturbed cameras sit exactly on the sphere at (azimuth, elevation, distance)
    still = RandomCameras(**dict(cfg, camera_perturb=0.0, center_perturb=0.0, up_perturb=0.0))
    still.setup("fit")
    b = _train_batches(still, 0)[0]
    assert torch.allclose(b["eye"], spherical_eye(b["azimuth"], b["elevation"], b["distance"]), atol=1e-5)
    assert torch.allclose(b["K"], fov_intrinsics(b["fovy"], 8, 8))
    centre = camera_rays(b["R"], b["t"], b["K"], 8, 8)[1]
    # the image centre (between the 4 middle pixels) looks at the origin
    mid = torch.nn.functional.normalize(centre[:, 3:5, 3:5].mean(dim=(1, 2)), dim=-1)
    assert torch.allclose(mid, torch.nn.functional.normalize(-b["eye"], dim=-1), atol=1e-3)


@pytest.mark.parametrize("kw, message", [
    ({"azimuth_range": [90, -90]}, r"'azimuth_range': random_cameras: min 90 > max -90"),
    ({"distance_range": [0.0, 1.0]}, r"'distance_range': random_cameras: min 0 is outside \(0, inf\]"),
    ({"fovy_range": [40, 180]}, r"'fovy_range': random_cameras: max 180 is outside \(0, 180\)"),
    ({"eval_fovy": 0.0}, r"'eval_fovy': random_cameras: value 0 is outside \(0, 180\)"),
    ({"eval_distance": -1.0}, r"'eval_distance': random_cameras: value -1 is outside \(0, inf\]"),
    ({"elevation_range": [-100, 10]}, r"'elevation_range': random_cameras: min -100 is outside \[-90, 90\]"),
    ({"batch_size": 0}, r"'batch_size': random_cameras: must be an int >= 1, got 0"),
    ({"light_distance_range": [1.0]}, r"'light_distance_range': random_cameras: must be \[min, max\]"),
])
def test_bad_ranges_raise_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        RandomCameras(**kw)


def test_defaults_are_threestudios():
    h = RandomCameras().hparams
    assert (h.height, h.width, h.batch_size) == (64, 64, 1)
    assert h.azimuth_range == [-180, 180] and h.elevation_range == [-10, 90] and h.distance_range == [1, 1.5]
    assert h.fovy_range == [40, 70] and h.light_distance_range == [0.8, 1.5]
    assert (h.camera_perturb, h.center_perturb, h.up_perturb, h.light_position_perturb) == (0.1, 0.2, 0.02, 1.0)
    assert (h.eval_elevation, h.eval_distance, h.eval_fovy, h.n_test_views) == (15, 1.5, 70, 120)
    with pytest.raises(RuntimeError, match="the train split is not set up"):
        RandomCameras().train_dataloader()
