"""InteractVLM's canonical ("Vitruvian") body: the pose its fixed views of the body are rendered in.

The pose is all zero except the two hips, rotated about z so the legs spread apart
(saidwivedi/InteractVLM ``preprocess_data/render_mesh_utils.py``,
``get_virtuvian_body_pose``); zero betas, zero global orientation and translation, no
re-centring (``generate_damon_human_mask.py``). The renderer (:mod:`zoo.render.multiview`)
takes the resulting mesh as it takes any other: posing a body model is this package's job.
"""
from __future__ import annotations

import math

import torch

from zoo.body.model import POSE_DIMS

__all__ = ["canonical_body_pose", "canonical_body"]


def canonical_body_pose(model_type: str, hip_deg: float = 30.0) -> torch.Tensor:
    """Full axis-angle pose (1, D) of InteractVLM's canonical ("Vitruvian") body.

    All zero except the two hips, rotated about z: body-pose entries 0 (left hip) by
    +hip_deg and 1 (right hip) by -hip_deg (render_mesh_utils.get_virtuvian_body_pose,
    whose z-only Euler angle is a plain rotation about z), so the legs spread apart.
    """
    if model_type not in POSE_DIMS:
        raise ValueError(f"canonical_body_pose: unknown model_type {model_type!r}; expected one of {sorted(POSE_DIMS)}")
    pose = torch.zeros(1, POSE_DIMS[model_type])
    a = math.radians(hip_deg)
    # Full pose = global_orient (3) then body joints; joint 1 is the left hip, joint 2 the right.
    pose[0, 3 + 2] = a
    pose[0, 6 + 2] = -a
    return pose


@torch.no_grad()
def canonical_body(body_model, hip_deg: float = 30.0, center: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices (V, 3) float32 and faces (F, 3) long of ``body_model`` (a zoo BodyModel) in the canonical pose.

    InteractVLM renders the model output as it is: zero betas, zero global orientation
    and translation, no re-centring (generate_damon_human_mask.py), so ``center=False``
    reproduces it; ``center=True`` moves the bounding-box centre to the origin instead.
    """
    for attr in ("model_type", "faces"):
        if not hasattr(body_model, attr):
            raise TypeError(f"canonical_body: body_model must be a zoo BodyModel (missing .{attr}), "
                            f"got {type(body_model).__name__}")
    ref = body_model.v_template
    pose = canonical_body_pose(body_model.model_type, hip_deg).to(device=ref.device, dtype=ref.dtype)
    verts = body_model(pose=pose)["vertices"][0].detach().float().cpu()
    if center:
        verts = verts - (verts.amin(0) + verts.amax(0)) / 2
    return verts.contiguous(), body_model.faces.detach().long().cpu().contiguous()
