"""SMPL / SMPL-H / SMPL-X body models from a model directory, as plain nn.Modules over smplx.

The directory follows smplx's layout (``DIR/smpl/SMPL_NEUTRAL.pkl``,
``DIR/smplh/SMPLH_NEUTRAL.pkl|npz``, ``DIR/smplx/SMPLX_NEUTRAL.npz|pkl``).
Official files come from the MPI sites after registration;
``python tools/make_synthetic.py body --out DIR`` writes a synthetic neutral
SMPL, SMPL-H and SMPL-X stand-in in the same format (``synthesize=True`` writes
it where a model is missing). Every forward input is optional and
explicit, and missing ones are zeros of the right batch size, so one module
serves any batch size.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from zoo.core.registry import register

__all__ = ["BodyModel", "SMPLBody", "SMPLHBody", "SMPLXBody", "default_body_model_dir", "body_model_file",
           "load_body_model_data", "NUM_JOINTS", "POSE_DIMS"]

ModelType = Literal["smpl", "smplh", "smplx"]

NUM_JOINTS = {"smpl": 24, "smplh": 52, "smplx": 55}
# Full axis-angle pose length: global orient + body + (jaw, eyes) + hands.
POSE_DIMS = {"smpl": 72, "smplh": 156, "smplx": 165}
_FILE_PREFIX = {"smpl": "SMPL", "smplh": "SMPLH", "smplx": "SMPLX"}
_DISPLAY = {"smpl": "SMPL", "smplh": "SMPL-H", "smplx": "SMPL-X"}
_SOURCE = {"smpl": "https://smpl.is.tue.mpg.de", "smplh": "https://mano.is.tue.mpg.de",
           "smplx": "https://smpl-x.is.tue.mpg.de"}
# Extensions tried when none is given, in order; smplx 0.1.28 reads SMPL only as pickle.
_EXTS = {"smpl": ("pkl",), "smplh": ("pkl", "npz"), "smplx": ("npz", "pkl")}
_GENDERS = ("neutral", "male", "female")


def default_body_model_dir() -> Path:
    """Where body models live unless a recipe says otherwise: $ZOO_BODY_MODELS, else ``data/body_models``."""
    env = os.environ.get("ZOO_BODY_MODELS")
    return Path(env).expanduser() if env else Path("data/body_models")


def body_model_file(model_dir: str | Path | None, model_type: str, gender: str = "neutral",
                    ext: str | None = None, synthesize: bool = False) -> Path:
    """The model file smplx would load, checked to exist; a missing file raises FileNotFoundError saying what to do.

    With ``synthesize`` a missing neutral SMPL, SMPL-H or SMPL-X file is first written as the
    synthetic stand-in (:func:`zoo.body.synthetic.write_synthetic_body_models`, files already
    there are kept), with one printed line saying so; male and female models cannot be synthesized.
    """
    if model_type not in NUM_JOINTS:
        raise ValueError(f"model_type must be one of {sorted(NUM_JOINTS)}, got {model_type!r}")
    if gender not in _GENDERS:
        raise ValueError(f"gender must be one of {list(_GENDERS)}, got {gender!r}")
    exts = (ext,) if ext else _EXTS[model_type]
    for e in exts:
        if e not in ("pkl", "npz"):
            raise ValueError(f"ext must be 'pkl' or 'npz', got {e!r}")
    if model_type == "smpl" and exts != ("pkl",):
        raise ValueError("SMPL models are read only as .pkl (smplx 0.1.28); drop ext or pass ext='pkl'")
    root = Path(os.path.expandvars(str(model_dir))).expanduser() if model_dir else default_body_model_dir()
    name = f"{_FILE_PREFIX[model_type]}_{gender.upper()}"
    candidates = [root / model_type / f"{name}.{e}" for e in exts] + [root / f"{name}.{e}" for e in exts]
    for c in candidates:
        if c.is_file():
            return c
    # The stand-in is neutral only, and its SMPL-X file is an .npz (no SMPL-X pickle is written).
    synthesizable = gender == "neutral" and not (model_type == "smplx" and exts == ("pkl",))
    if synthesize and synthesizable:
        from zoo.body.synthetic import write_synthetic_body_models

        print(f"[body] no {_DISPLAY[model_type]} model under {root}: writing the synthetic stand-in body models there",
              flush=True)
        write_synthetic_body_models(root)
        return body_model_file(root, model_type, gender, ext)
    what = f"{_DISPLAY[model_type]} {gender} body model"
    cannot = ""
    if synthesize:
        cannot = (" synthesize=True cannot help: the synthetic stand-in is a neutral SMPL / SMPL-H / SMPL-X model "
                  "only (no male or female)" + ("." if gender != "neutral" else ", and its SMPL-X file is an .npz "
                                                "(drop ext or pass ext='npz')."))
    raise FileNotFoundError(
        f"{what} not found: expected {candidates[0]}"
        + (f" (or {', '.join(str(c) for c in candidates[1:len(exts)])})" if len(exts) > 1 else "")
        + f". It comes from {_SOURCE[model_type]} after registration; put the file there or point "
        "ZOO_BODY_MODELS / model_dir at the directory holding it. "
        + "For a synthetic neutral stand-in (SMPL, SMPL-H and SMPL-X), run "
        "`python tools/make_synthetic.py body --out DIR`."
        + cannot
    )


def load_body_model_data(path: str | Path) -> dict:
    """Read a body-model .pkl or .npz into a dict of arrays, explaining the chumpy case."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="latin1")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "chumpy":
            raise RuntimeError(
                f"{path}: this official model file stores its arrays as chumpy objects, and chumpy is not "
                "installed. Either `pip install chumpy` (old package; needs numpy<1.24 compatible shims) or convert "
                "the file once to plain numpy arrays (load it where chumpy works, replace each chumpy array by "
                "np.asarray(x), pickle the dict again)."
            ) from e
        raise
    except (pickle.UnpicklingError, EOFError) as e:
        raise RuntimeError(f"{path}: not a readable body-model pickle ({type(e).__name__}: {e})") from e


class BodyModel(nn.Module):
    """SMPL-family body model: pose and shape parameters in, posed vertices and joints out.

    ``model_dir`` defaults to :func:`default_body_model_dir`. Outputs are in
    metres in the model's frame (Y up for SMPL-family files). With ``synthesize``
    a missing neutral SMPL / SMPL-H / SMPL-X file is written first as the
    synthetic stand-in (see :func:`body_model_file`).

    The model's arrays are buffers that are not persistent: ``state_dict()`` is
    empty, so a module holding a body model never writes the (licensed) SMPL
    data into a checkpoint; the model file is the only place it lives.
    """

    def __init__(self, model_dir: str | None = None, model_type: ModelType = "smpl", gender: str = "neutral",
                 num_betas: int = 10, ext: str | None = None, synthesize: bool = False) -> None:
        super().__init__()
        import smplx
        from smplx.utils import Struct

        if num_betas < 1:
            raise ValueError(f"num_betas must be >= 1, got {num_betas}")
        self.model_type = model_type
        self.gender = gender
        self.path = body_model_file(model_dir, model_type, gender, ext, synthesize=synthesize)
        data = load_body_model_data(self.path)
        n_shape = np.asarray(data["shapedirs"]).shape[-1] if "shapedirs" in data else 0
        if n_shape < num_betas:
            raise ValueError(f"{self.path}: has {n_shape} shape directions, num_betas={num_betas} asked for more")
        cls = {"smpl": smplx.SMPL, "smplh": smplx.SMPLH, "smplx": smplx.SMPLX}[model_type]
        kwargs = dict(data_struct=Struct(**data), num_betas=num_betas, gender=gender, create_betas=False,
                      create_global_orient=False, create_body_pose=False, create_transl=False)
        if model_type in ("smplh", "smplx"):
            kwargs.update(use_pca=False, flat_hand_mean=True, create_left_hand_pose=False,
                          create_right_hand_pose=False)
        if model_type == "smplx":
            kwargs.update(create_jaw_pose=False, create_leye_pose=False, create_reye_pose=False,
                          create_expression=False, use_face_contour=False)
            # smplx.SMPLX reads the file itself and passes its own data_struct on (a second one is a
            # TypeError); the read above already explained an unreadable file.
            del kwargs["data_struct"]
            kwargs["ext"] = self.path.suffix[1:]
        # smplx prints a warning for models with fewer than 300 shape directions; it is expected here.
        with contextlib.redirect_stdout(io.StringIO()):
            self.layer = cls(str(self.path), **kwargs)
        # smplx registers the model's arrays as persistent buffers; re-register them as not
        # persistent so they stay out of every state_dict (licensed data, and already on disk).
        for mod in self.layer.modules():
            for name, buf in list(mod.named_buffers(recurse=False)):
                delattr(mod, name)
                mod.register_buffer(name, buf, persistent=False)
        self.num_betas = int(self.layer.num_betas)
        self.register_buffer("faces", torch.as_tensor(np.asarray(data["f"], dtype=np.int64)), persistent=False)

    @property
    def num_vertices(self) -> int:
        """Number of mesh vertices (6890 for SMPL/SMPL-H, 10475 for SMPL-X)."""
        return int(self.layer.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        """Number of kinematic joints (24 / 52 / 55)."""
        return NUM_JOINTS[self.model_type]

    @property
    def v_template(self) -> torch.Tensor:
        """Rest-pose template vertices (V, 3)."""
        return self.layer.v_template

    @property
    def lbs_weights(self) -> torch.Tensor:
        """Skinning weights (V, J)."""
        return self.layer.lbs_weights

    @property
    def parents(self) -> torch.Tensor:
        """Parent joint index per joint (J,), -1 at the root."""
        return self.layer.parents

    def _split_pose(self, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        b = pose.shape[0]
        zeros = pose.new_zeros
        if self.model_type == "smpl":
            if pose.shape[1] != 72:
                raise ValueError(f"SMPL pose must be (B, 72) axis-angle, got {tuple(pose.shape)}")
            return {"global_orient": pose[:, :3], "body_pose": pose[:, 3:72]}
        if self.model_type == "smplh":
            if pose.shape[1] == 72:  # a SMPL pose: drop SMPL's two hand joints, keep the fingers flat
                return {"global_orient": pose[:, :3], "body_pose": pose[:, 3:66],
                        "left_hand_pose": zeros(b, 45), "right_hand_pose": zeros(b, 45)}
            if pose.shape[1] != 156:
                raise ValueError(f"SMPL-H pose must be (B, 156) or a SMPL (B, 72) axis-angle, got {tuple(pose.shape)}")
            return {"global_orient": pose[:, :3], "body_pose": pose[:, 3:66],
                    "left_hand_pose": pose[:, 66:111], "right_hand_pose": pose[:, 111:156]}
        if pose.shape[1] == 72:
            return {"global_orient": pose[:, :3], "body_pose": pose[:, 3:66]}
        if pose.shape[1] != 165:
            raise ValueError(f"SMPL-X pose must be (B, 165) or a SMPL (B, 72) axis-angle, got {tuple(pose.shape)}")
        return {"global_orient": pose[:, :3], "body_pose": pose[:, 3:66], "jaw_pose": pose[:, 66:69],
                "leye_pose": pose[:, 69:72], "reye_pose": pose[:, 72:75],
                "left_hand_pose": pose[:, 75:120], "right_hand_pose": pose[:, 120:165]}

    def forward(self, pose: torch.Tensor | None = None, betas: torch.Tensor | None = None,
                transl: torch.Tensor | None = None, global_orient: torch.Tensor | None = None,
                body_pose: torch.Tensor | None = None, left_hand_pose: torch.Tensor | None = None,
                right_hand_pose: torch.Tensor | None = None, jaw_pose: torch.Tensor | None = None,
                expression: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Pose the body.

        Args:
            pose: full axis-angle pose (B, 72) SMPL, (B, 156) SMPL-H, (B, 165) SMPL-X; a 72-d SMPL
                pose is also accepted by SMPL-H/SMPL-X (hands flat). Exclusive with the parts below.
            betas: (B, <= num_betas) shape coefficients (missing trailing ones are zero).
            transl: (B, 3) translation in metres.
            global_orient, body_pose (B, 63 SMPL-H/X; B, 69 SMPL), left/right_hand_pose (B, 45),
            jaw_pose (B, 3), expression (B, 10): the pose in parts.
        Returns:
            dict with ``vertices`` (B, V, 3) and ``joints`` (B, J, 3), the J kinematic joints.
        """
        parts = {"global_orient": global_orient, "body_pose": body_pose, "left_hand_pose": left_hand_pose,
                 "right_hand_pose": right_hand_pose, "jaw_pose": jaw_pose}
        if pose is not None:
            if any(v is not None for v in parts.values()):
                raise ValueError("pass either `pose` or its parts (global_orient, body_pose, ...), not both")
            if pose.ndim != 2:
                raise ValueError(f"pose must be (B, D), got shape {tuple(pose.shape)}")
            parts.update(self._split_pose(pose))
        given = [t for t in (*parts.values(), betas, transl, expression) if t is not None]
        b = given[0].shape[0] if given else 1
        ref = self.layer.v_template
        for t in given:
            if t.shape[0] != b:
                raise ValueError(f"all inputs must share the batch size; got {b} and {t.shape[0]}")

        def fill(x: torch.Tensor | None, n: int, name: str) -> torch.Tensor:
            if x is None:
                return ref.new_zeros(b, n)
            if x.ndim != 2 or x.shape[1] != n:
                raise ValueError(f"{name} must be (B, {n}), got {tuple(x.shape)}")
            return x.to(ref.dtype)

        n_body = 69 if self.model_type == "smpl" else 63
        if betas is not None and (betas.ndim != 2 or betas.shape[1] > self.num_betas):
            raise ValueError(f"betas must be (B, <= {self.num_betas}), got {tuple(betas.shape)}")
        if betas is not None and betas.shape[1] < self.num_betas:
            betas = torch.cat([betas, betas.new_zeros(b, self.num_betas - betas.shape[1])], 1)
        kw = dict(global_orient=fill(parts["global_orient"], 3, "global_orient"),
                  body_pose=fill(parts["body_pose"], n_body, "body_pose"),
                  betas=fill(betas, self.num_betas, "betas"), transl=fill(transl, 3, "transl"))
        if self.model_type in ("smplh", "smplx"):
            kw["left_hand_pose"] = fill(parts["left_hand_pose"], 45, "left_hand_pose")
            kw["right_hand_pose"] = fill(parts["right_hand_pose"], 45, "right_hand_pose")
        if self.model_type == "smplx":
            kw["jaw_pose"] = fill(parts["jaw_pose"], 3, "jaw_pose")
            kw["leye_pose"] = fill(parts.get("leye_pose"), 3, "leye_pose")
            kw["reye_pose"] = fill(parts.get("reye_pose"), 3, "reye_pose")
            kw["expression"] = fill(expression, int(self.layer.num_expression_coeffs), "expression")
        out = self.layer(**kw)
        return {"vertices": out.vertices, "joints": out.joints[:, : self.num_joints]}

    def extra_repr(self) -> str:
        return f"model_type={self.model_type}, gender={self.gender}, num_betas={self.num_betas}, path={self.path}"


@register("body_model", "smpl")
class SMPLBody(BodyModel):
    """SMPL (6890 vertices, 24 joints, 72-d pose) from ``model_dir/smpl/SMPL_<GENDER>.pkl``."""

    def __init__(self, model_dir: str | None = None, gender: str = "neutral", num_betas: int = 10,
                 ext: str | None = None, synthesize: bool = False) -> None:
        super().__init__(model_dir, "smpl", gender, num_betas, ext, synthesize)


@register("body_model", "smplh")
class SMPLHBody(BodyModel):
    """SMPL-H (6890 vertices, 52 joints, full 45-d hand poses) from ``model_dir/smplh/SMPLH_<GENDER>.pkl|npz``."""

    def __init__(self, model_dir: str | None = None, gender: str = "neutral", num_betas: int = 10,
                 ext: str | None = None, synthesize: bool = False) -> None:
        super().__init__(model_dir, "smplh", gender, num_betas, ext, synthesize)


@register("body_model", "smplx")
class SMPLXBody(BodyModel):
    """SMPL-X (10475 vertices, 55 joints) from ``model_dir/smplx/SMPLX_<GENDER>.npz|pkl``."""

    def __init__(self, model_dir: str | None = None, gender: str = "neutral", num_betas: int = 10,
                 ext: str | None = None, synthesize: bool = False) -> None:
        super().__init__(model_dir, "smplx", gender, num_betas, ext, synthesize)
