"""Synthetic DAMON generator: exact primitive distances, placement, determinism, format check, camera consistency."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.synthetic.damon import (
    OBJECT_CLASS,
    OBJECT_LABELS,
    PERSON_CLASS,
    Primitive,
    _place_along,
    generate_damon,
    primitive_sdf,
)


def test_primitive_sdf_hand_cases():
    box = Primitive("box", np.array([1.0, 0.0, 0.0]), np.array([0.5, 0.5, 0.5]))
    pts = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.5, 1.5, 0.0], [1.2, 0.1, 0.0]])
    assert np.allclose(primitive_sdf(box, pts), [-0.5, 0.5, np.sqrt(2.0), -0.3])
    rot = Primitive("box", np.zeros(3), np.array([1.0, 0.1, 0.1]), yaw=np.pi / 2)  # long axis now along z
    assert np.allclose(primitive_sdf(rot, np.array([[0.0, 0.0, 1.5], [1.5, 0.0, 0.0]])), [0.5, 1.4])
    cyl = Primitive("cylinder", np.zeros(3), np.array([0.5, 1.0]))
    assert np.allclose(primitive_sdf(cyl, np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.5, 0.0],
                                                    [0.8, 1.4, 0.0]])), [-0.5, 0.5, 0.5, 0.5])
    sph = Primitive("sphere", np.array([0.0, 1.0, 0.0]), np.array([0.25]))
    assert np.allclose(primitive_sdf(sph, np.array([[0.0, 0.0, 0.0]])), [0.75])
    ground = Primitive("ground", np.zeros(3), np.array([-0.9]))
    assert np.allclose(primitive_sdf(ground, np.array([[3.0, -1.0, 2.0]])), [-0.1])
    with pytest.raises(ValueError, match="unknown primitive kind 'cone'"):
        primitive_sdf(Primitive("cone", np.zeros(3), np.ones(1)), pts)


def test_place_along_touches_with_requested_penetration():
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(200, 3)) * 0.1
    part = np.arange(50)
    sph = Primitive("sphere", verts[part][np.argmax(verts[part, 0])].copy(), np.array([0.1]))
    assert _place_along(sph, verts, part, np.array([1.0, 0.0, 0.0]), 0.01)
    assert primitive_sdf(sph, verts[part]).min() == pytest.approx(-0.01, abs=1e-6)
    # The object was slid along +x only.
    assert sph.center[1:] == pytest.approx(verts[part][np.argmax(verts[part, 0])][1:])


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory):
    from zoo.body.synthetic import write_synthetic_body_models

    return str(write_synthetic_body_models(tmp_path_factory.mktemp("body")))


@pytest.fixture(scope="module")
def generated(tmp_path_factory, body_dir):
    a = generate_damon(tmp_path_factory.mktemp("a"), n=14, seed=5, image_size=128, model_dir=body_dir)
    b = generate_damon(tmp_path_factory.mktemp("b"), n=14, seed=5, image_size=128, model_dir=body_dir)
    return a, b


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_other_seed_differs(generated, tmp_path, body_dir):
    a, b = generated
    fa, fb = _files(a), _files(b)
    assert len(fa) == 2 + 4 * 14
    assert fa == fb
    c = generate_damon(tmp_path / "c", n=4, seed=6, image_size=128, model_dir=body_dir)
    da, dc = np.load(a / "hot_dca_trainval.npz", allow_pickle=True), np.load(c / "hot_dca_trainval.npz", allow_pickle=True)
    assert not np.allclose(da["pose"][:3], dc["pose"][:3])


def test_check_formats_passes(generated, check_formats):
    a, _ = generated
    assert "differs from contact_label" not in check_formats("damon", a)


def test_labels_consistent(generated):
    a, _ = generated
    for split, n in (("trainval", 11), ("test", 3)):
        d = np.load(a / f"hot_dca_{split}.npz", allow_pickle=True)
        assert d["contact_label"].shape == (n, 6890) and d["pose"].shape == (n, 72)
        assert str(d["imgname"][0]).startswith("datasets/HOT-Annotated/images/")
        for i in range(n):
            ow = d["contact_label_objectwise"][i]
            assert isinstance(ow, dict) and ow
            assert set(ow) <= set(OBJECT_LABELS)
            union = np.zeros(6890, bool)
            for ids in ow.values():
                union[ids] = True
            assert np.array_equal(union, d["contact_label"][i] == 1)
            scene = np.asarray(Image.open(a / d["scene_seg"][i]))
            part = np.asarray(Image.open(a / d["part_seg"][i]))
            assert scene.max() <= 132 and part.max() <= 25
            assert ((scene == PERSON_CLASS) == (part > 0)).all()  # parts exactly on visible body pixels
            for name in ow:
                if name != "supporting":
                    kind = OBJECT_LABELS[name]
                    assert (scene == OBJECT_CLASS[kind]).sum() > 0, f"object {name} not visible in sample {i}"


def test_camera_frame_parameters_reproduce_the_image(generated, body_dir):
    """BodyModel(pose, shape, transl) projected with cam_k covers the person pixels and the 2D contact mask."""
    from zoo.body.model import BodyModel
    from zoo.render.cameras import project_opencv
    from zoo.render.raster import rasterize

    a, _ = generated
    d = np.load(a / "hot_dca_trainval.npz", allow_pickle=True)
    bm = BodyModel(body_dir, model_type="smpl", num_betas=10)
    with torch.no_grad():
        out = bm(pose=torch.tensor(d["pose"][:4], dtype=torch.float32),
                 betas=torch.tensor(d["shape"][:4], dtype=torch.float32),
                 transl=torch.tensor(d["transl"][:4], dtype=torch.float32))["vertices"]
    faces = torch.as_tensor(np.asarray(bm.faces), dtype=torch.long)
    for i in range(4):
        uvz = project_opencv(out[i], torch.tensor(d["cam_k"][i], dtype=torch.float32))
        sil = (rasterize(uvz, faces, 128, 128).pix_to_face >= 0).numpy()
        person = np.asarray(Image.open(a / d["scene_seg"][i])) == PERSON_CLASS
        contact2d = np.asarray(Image.open(a / d["polygon_2d_contact"][i])) > 0
        assert person.sum() > 50
        assert (sil & person).sum() >= 0.99 * person.sum()
        assert (sil & contact2d).sum() == contact2d.sum()


def test_scenarios_option_restricts_the_draw_and_names_bad_ones(generated, tmp_path, body_dir):
    a, _ = generated
    everything = {str(s) for f in ("hot_dca_trainval.npz", "hot_dca_test.npz")
                  for s in np.load(a / f, allow_pickle=True)["scenario"]}
    assert len(everything) > 2, everything
    c = generate_damon(tmp_path / "c", n=6, seed=5, image_size=64, model_dir=body_dir, scenarios=["lie", "sit"])
    got = [str(s) for f in ("hot_dca_trainval.npz", "hot_dca_test.npz")
           for s in np.load(c / f, allow_pickle=True)["scenario"]]
    assert len(got) == 6 and set(got) <= {"lie", "sit"}
    with pytest.raises(ValueError, match=r"generate_damon: scenarios must be a non-empty subset of \['stand', 'reach', "
                                         r"'table', 'sit', 'lean', 'lie', 'head'\], got \['sit', 'fly'\]"):
        generate_damon(tmp_path / "d", n=4, scenarios=["sit", "fly"], model_dir=body_dir)
