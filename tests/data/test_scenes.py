"""Scene folders of joint human-object reconstruction (zoo.data.scenes) and their synthetic generator:
the category library, the generator round trip (gt pose lands on the object mask, contacts within 2 cm by an
independent analytic distance), exact bad-input messages naming the file, and skipping one bad scene."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.core.batch import DataError
from zoo.data.scenes import CATEGORIES, HOIScenes, check_watertight, load_scene, object_library, object_mesh
from zoo.data.synthetic.damon import Primitive, primitive_sdf
from zoo.data.synthetic.scenes import generate_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """(body model dir, root of 3 synthetic scenes at 64 px)."""
    from zoo.body.synthetic import write_synthetic_body_models

    base = tmp_path_factory.mktemp("scenes")
    body = write_synthetic_body_models(base / "body_models")
    root = generate_scenes(base / "scenes", n=3, seed=0, image_size=64, model_dir=str(body), sit_fraction=0.34)
    return Path(body), Path(root)


@pytest.fixture
def one(scenes, tmp_path):
    """A copy of scene 0 that a test may break, and the body model dir."""
    d = tmp_path / "scene"
    shutil.copytree(scenes[1] / "scene_00000", d)
    return d, scenes[0]


def _load_err(d: Path, body: Path, exc=DataError) -> str:
    dm = HOIScenes(str(d), body_model_dir=str(body))
    with pytest.raises(exc) as e:
        dm.setup("test")
    return str(e.value)


# -- category library ----------------------------------------------------------------------------

def test_library_meshes_closed_centred_sized_deterministic():
    import trimesh

    assert set(object_library()) == {"ball", "box", "bottle", "stool"}
    for cat, spec in object_library().items():
        v, f = object_mesh(cat)
        assert 500 <= len(f) <= 2000, cat
        m = trimesh.Trimesh(v, f, process=False)
        assert m.is_watertight and m.is_winding_consistent and m.volume > 0, cat
        np.testing.assert_allclose((v.min(0) + v.max(0)) / 2, 0, atol=1e-12)
        r = spec.size[0]
        half = [r, r, r] if spec.kind == "sphere" else list(spec.size) if spec.kind == "box" else [r, spec.size[1], r]
        np.testing.assert_allclose(v.max(0), half, atol=1e-9)
        v2, f2 = object_mesh(cat)
        assert np.array_equal(v, v2) and np.array_equal(f, f2)
        assert spec.scale == 1.0 and spec.scale_range[0] < 1.0 < spec.scale_range[1]
        check_watertight(v, f, cat)  # no error
    with pytest.raises(KeyError):
        object_mesh("piano")


def test_check_watertight_names_the_mesh():
    v, f = object_mesh("box")
    with pytest.raises(DataError) as e:
        check_watertight(v, f[1:], "scene_7/object.obj")
    assert str(e.value) == ("scene_7/object.obj: object mesh is not watertight (3 edge(s) not shared by exactly two "
                            "faces); the collision loss needs a closed mesh")


# -- generator round trip ------------------------------------------------------------------------

def test_round_trip_gt_pose_lands_on_the_object_mask(scenes):
    body, root = scenes
    dm = HOIScenes(str(root), body_model_dir=str(body))
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert [b["name"] for b in batches] == [["scene_00000"], ["scene_00001"], ["scene_00002"]]
    assert dm.num_skipped == 0 and dm.data_report() == {"data/test/samples": 3.0, "data/test/skipped": 0.0}
    for b in batches:
        s = b["samples"][0]
        gt = json.loads((Path(s["dir"]) / "gt.json").read_text())
        assert s["image"].shape == (64, 64, 3) and s["image"].dtype == torch.uint8 and s["image_size"] == (64, 64)
        assert s["human_mask"].dtype == torch.bool and s["object_mask"].shape == (64, 64)
        assert s["body_verts"].shape == (6890, 3) and s["body_faces"].dtype == torch.long
        assert s["body_part_labels"].shape == (6890,) and int(s["body_part_labels"].max()) == 23
        assert s["category"] == gt["category"] and s["body_model_type"] == "smpl"
        assert "human_contact" not in s and "object_contact" not in s  # no contact files by default
        # The object mesh written is the library mesh of its category.
        v_lib, f_lib = object_mesh(s["category"])
        np.testing.assert_allclose(s["object_verts"].numpy(), v_lib, atol=1e-6)
        assert np.array_equal(s["object_faces"].numpy(), f_lib)
        R, t, sc = s["gt_R"].double().numpy(), s["gt_t"].double().numpy(), float(s["gt_scale"])
        placed = v_lib @ R.T * sc + t
        K = s["K"].double().numpy()
        uv = placed @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        rows, cols = np.nonzero(s["object_mask"].numpy())
        # Mask pixels (centres at +0.5) lie within the projected placed mesh's box, and the box is that of the
        # mask when the object is fully visible (hand-held objects may be partly hidden: then only inclusion).
        assert cols.min() + 0.5 >= uv[:, 0].min() - 0.5 and cols.max() + 0.5 <= uv[:, 0].max() + 0.5
        assert rows.min() + 0.5 >= uv[:, 1].min() - 0.5 and rows.max() + 0.5 <= uv[:, 1].max() + 0.5
        centre = uv.mean(0)
        assert cols.min() <= centre[0] <= cols.max() + 1 and rows.min() <= centre[1] <= rows.max() + 1
        # Body: projected vertices cover the human mask's box.
        bv = s["body_verts"].double().numpy() @ K.T
        bu = bv[:, :2] / bv[:, 2:]
        hr, hc = np.nonzero(s["human_mask"].numpy())
        assert bu[:, 0].min() - 1 <= hc.min() and hc.max() <= bu[:, 0].max() + 1
        assert bu[:, 1].min() - 1 <= hr.min() and hr.max() <= bu[:, 1].max() + 1


def _analytic_sdf(category: str, pts_cam: np.ndarray, R, t, s) -> np.ndarray:
    """Exact signed distance of camera-frame points to the placed category primitive (damon's analytic SDF)."""
    spec = CATEGORIES[category]
    q = (pts_cam - t) @ R / s  # canonical frame
    prim = Primitive(spec.kind, np.zeros(3), np.asarray(spec.size, np.float64))
    return primitive_sdf(prim, q) * s


def test_round_trip_contacts_within_2cm(scenes):
    body, root = scenes
    dm = HOIScenes(str(root), body_model_dir=str(body))
    dm.setup("test")
    for s in dm.test_set:
        R, t, sc = s["gt_R"].double().numpy(), s["gt_t"].double().numpy(), float(s["gt_scale"])
        bv = s["body_verts"].double().numpy()
        hc = s["gt_human_contact"].numpy() > 0.5
        assert 3 <= hc.sum() < 400
        d = _analytic_sdf(s["category"], bv, R, t, sc)
        # Faceted library meshes lie within 1 mm of the analytic primitive at these sizes.
        assert d[hc].max() <= 0.02 + 1e-3
        assert d[~hc].min() >= 0.02 - 1e-3
        # Object contact: an object vertex near a body vertex is within 2 cm of the body surface (the
        # surface is at most as far as its nearest vertex), and a labelled one is near some body vertex.
        oc = s["gt_object_contact"].numpy() > 0.5
        placed = s["object_verts"].double().numpy() @ R.T * sc + t
        dv = np.sqrt(((placed[:, None] - bv[None]) ** 2).sum(-1)).min(1)
        assert oc.sum() >= 1
        assert oc[dv <= 0.02].all()
        assert dv[oc].max() <= 0.02 + 0.03


def test_resize_scales_k_and_masks(scenes):
    body, root = scenes
    full = load_scene(root / "scene_00001", str(body))
    half = load_scene(root / "scene_00001", str(body), image_size=32)
    assert half["image"].shape == (32, 32, 3) and half["human_mask"].shape == (32, 32)
    Kf, Kh = full["K"].numpy(), half["K"].numpy()
    np.testing.assert_allclose(Kh[:2], Kf[:2] / 2, rtol=1e-6)
    assert torch.equal(half["body_verts"], full["body_verts"])


def test_generator_is_deterministic(scenes, tmp_path):
    body, root = scenes
    again = generate_scenes(tmp_path / "again", n=1, seed=0, image_size=64, model_dir=str(body), sit_fraction=0.34)
    for f in sorted((root / "scene_00000").iterdir()):
        assert (again / "scene_00000" / f.name).read_bytes() == f.read_bytes(), f.name


def test_contact_files_optional(scenes, tmp_path):
    body, _ = scenes
    root = generate_scenes(tmp_path / "c", n=1, seed=5, image_size=32, model_dir=str(body), contact_files=True)
    s = load_scene(root / "scene_00000", str(body))
    assert s["human_contact"].shape == (6890,) and s["object_contact"].shape == s["object_verts"].shape[:1]
    # Soft probabilities are 1 exactly where the binary ground truth is.
    assert torch.equal(s["human_contact"] == 1, s["gt_human_contact"] == 1)
    assert torch.equal(s["object_contact"] == 1, s["gt_object_contact"] == 1)


# -- bad input: exact messages naming the file -----------------------------------------------------

def test_missing_mask(one):
    d, body = one
    (d / "human_mask.png").unlink()
    assert _load_err(d, body, FileNotFoundError) == (f"{d / 'human_mask.png'}: mask file not found (each scene "
                                                     "folder needs human_mask.png and object_mask.png)")


def test_empty_mask(one):
    d, body = one
    Image.fromarray(np.full((64, 64), 127, np.uint8)).save(d / "object_mask.png")
    assert _load_err(d, body) == f"{d / 'object_mask.png'}: mask is empty (no pixel > 127)"


def test_mask_of_other_size(one):
    d, body = one
    Image.fromarray(np.full((48, 32), 255, np.uint8)).save(d / "human_mask.png")
    assert _load_err(d, body) == f"{d / 'human_mask.png'}: mask is 32x48 (W x H) but image.png is 64x64"


def test_object_mesh_fails_to_load(one):
    d, body = one
    (d / "object.obj").write_text("this is not a mesh\n")
    msg = _load_err(d, body)
    assert msg.startswith(f"{d / 'object.obj'}: object mesh cannot be loaded (")


def test_unknown_category_without_mesh(one):
    d, body = one
    (d / "object.obj").unlink()
    (d / "object.json").write_text('{"category": "piano"}')
    assert _load_err(d, body) == (f"{d / 'object.json'}: unknown category 'piano' and no object.obj; the library "
                                  "has ['ball', 'bottle', 'box', 'stool']")


def test_object_json_alone_uses_the_library(one):
    d, body = one
    (d / "object.obj").unlink()
    s = load_scene(d, str(body))
    assert np.array_equal(s["object_verts"].numpy(), object_mesh(s["category"])[0].astype(np.float32))


def test_open_mesh_with_require_watertight(one):
    d, body = one
    v, f = object_mesh("box")
    (d / "object.obj").write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v)
                                  + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f[1:]))
    load_scene(d, str(body))  # accepted unless asked
    with pytest.raises(DataError) as e:
        load_scene(d, str(body), require_watertight=True)
    assert str(e.value) == (f"{d / 'object.obj'}: object mesh is not watertight (3 edge(s) not shared by exactly "
                            "two faces); the collision loss needs a closed mesh")


def _edit_body(d: Path, drop=(), **changes) -> None:
    z = dict(np.load(d / "body.npz"))
    for k in drop:
        z.pop(k)
    z.update(changes)
    np.savez(d / "body.npz", **z)


def test_body_wrong_model_type(one):
    d, body = one
    _edit_body(d, model_type=np.array("smplz"))
    assert _load_err(d, body) == f"{d / 'body.npz'}: model_type 'smplz' is not one of ['smpl', 'smplh', 'smplx']"


def test_body_pose_length_of_another_model_type(one):
    d, body = one
    _edit_body(d, pose=np.zeros(165))
    assert _load_err(d, body) == (f"{d / 'body.npz'}: key 'pose' has shape (165,), expected one of [(72,)] for "
                                  "model_type 'smpl'")


def test_body_wrong_key_set(one):
    d, body = one
    _edit_body(d, drop=("cam_k",), betas=np.zeros(10))
    assert _load_err(d, body) == (f"{d / 'body.npz'}: wrong key set: missing ['cam_k'], unexpected ['betas'] "
                                  "(expected ['pose', 'shape', 'transl', 'cam_k', 'model_type', 'gender'], "
                                  "optionally ['vertices', 'expression'])")


def test_body_wrong_vertex_count(one):
    d, body = one
    _edit_body(d, vertices=np.zeros((10475, 3)))
    assert _load_err(d, body) == (f"{d / 'body.npz'}: key 'vertices' has shape (10475, 3), expected (6890, 3) "
                                  "finite camera-frame vertices of the smpl body")


def test_contact_files_of_wrong_length(one):
    d, body = one
    np.save(d / "contact_human.npy", np.zeros(6000, np.float32))
    assert _load_err(d, body) == (f"{d / 'contact_human.npy'}: has shape (6000,), expected (6890,) (the smpl "
                                  "body's vertex count)")
    (d / "contact_human.npy").unlink()
    np.save(d / "contact_object.npy", np.zeros(5, np.float32))
    m = len(object_mesh(json.loads((d / "object.json").read_text())["category"])[0])
    assert _load_err(d, body) == (f"{d / 'contact_object.npy'}: has shape (5,), expected ({m},) (the vertex "
                                  "count of object.obj's mesh)")


def test_folder_with_one_bad_scene_yields_the_others(scenes, tmp_path, caplog):
    body, src = scenes
    root = tmp_path / "run"
    for name in ("scene_00000", "scene_00001", "scene_00002"):
        shutil.copytree(src / name, root / name)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "scene_00001" / "human_mask.png")
    dm = HOIScenes(str(root), body_model_dir=str(body))
    with caplog.at_level(logging.WARNING, logger="zoo.data.scenes"):
        dm.setup("test")
    names = [n for b in dm.predict_dataloader() for n in b["name"]]
    assert names == ["scene_00000", "scene_00002"]
    reason = f"{root / 'scene_00001' / 'human_mask.png'}: mask is empty (no pixel > 127)"
    assert dm.num_skipped == 1 and dm.skipped == [(str(root / "scene_00001"), reason)]
    assert dm.data_report() == {"data/test/samples": 2.0, "data/test/skipped": 1.0}
    assert f"hoi_scenes: skipped scene {root / 'scene_00001'}: {reason}" in caplog.text


def test_synthesize_when_missing(scenes, tmp_path):
    body, _ = scenes
    dm = HOIScenes(str(tmp_path / "new"), body_model_dir=str(body), batch_size=2,
                   synthesize={"n": 2, "seed": 1, "image_size": 32})
    dm.prepare_data()
    dm.setup("test")
    b = next(iter(dm.test_dataloader()))
    assert b["name"] == ["scene_00000", "scene_00001"] and len(b["samples"]) == 2
    assert sorted(n for t in dm.train_dataloader() for n in t["name"]) == b["name"]  # same scenes, shuffled
    with pytest.raises(DataError):
        HOIScenes(str(tmp_path / "x"), synthesize={"n": 2, "size": 32})  # typo'd generator argument


def test_jpg_image_and_smplx_body(one):
    d, body = one
    png = np.asarray(Image.open(d / "image.png"))
    Image.open(d / "image.png").save(d / "image.jpg", quality=95)
    (d / "image.png").unlink()
    pose = np.zeros(165)
    pose[:3] = np.load(d / "body.npz")["pose"][:3]
    _edit_body(d, model_type=np.array("smplx"), pose=pose)
    s = load_scene(d, str(body))
    assert s["body_model_type"] == "smplx" and s["body_verts"].shape == (10475, 3)
    assert s["body_part_labels"].shape == (10475,)
    assert np.abs(s["image"].numpy().astype(int) - png).mean() < 4  # the JPEG of the same image
    # Vertices given in the file are used as they are.
    v = np.random.default_rng(0).normal(size=(10475, 3)) + [0, 0, 3]
    _edit_body(d, vertices=v)
    np.testing.assert_allclose(load_scene(d, str(body))["body_verts"].numpy(), v, atol=1e-6)
