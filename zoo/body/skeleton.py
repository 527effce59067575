"""Joint names and kinematic trees of SMPL (24 joints) and SMPL-H (52 joints).

These follow the order smplx uses, so per-joint arrays (skinning weight
columns, J_regressor rows, pose parameters) written or read by the zoo line up
with real model files.
"""
from __future__ import annotations

__all__ = [
    "SMPL_JOINT_NAMES", "SMPLH_JOINT_NAMES", "SMPL_PARENTS", "SMPLH_PARENTS",
    "FINGER_NAMES", "parents_for", "joint_names_for",
]

# The 22 body joints shared by SMPL, SMPL-H and SMPL-X.
_BODY22 = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
]
_BODY22_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]

# MANO's finger order inside SMPL-H: index, middle, pinky, ring, thumb.
FINGER_NAMES = ("index", "middle", "pinky", "ring", "thumb")

SMPL_JOINT_NAMES: list[str] = _BODY22 + ["left_hand", "right_hand"]
SMPL_PARENTS: list[int] = _BODY22_PARENTS + [20, 21]


def _hand_names(side: str) -> list[str]:
    return [f"{side}_{finger}{k}" for finger in FINGER_NAMES for k in (1, 2, 3)]


def _hand_parents(wrist: int, first: int) -> list[int]:
    out = []
    for f in range(len(FINGER_NAMES)):
        base = first + 3 * f
        out += [wrist, base, base + 1]
    return out


SMPLH_JOINT_NAMES: list[str] = _BODY22 + _hand_names("left") + _hand_names("right")
SMPLH_PARENTS: list[int] = _BODY22_PARENTS + _hand_parents(20, 22) + _hand_parents(21, 37)


def parents_for(model_type: str) -> list[int]:
    """Parent index of every joint (-1 for the root) for ``smpl`` or ``smplh``."""
    if model_type == "smpl":
        return list(SMPL_PARENTS)
    if model_type == "smplh":
        return list(SMPLH_PARENTS)
    raise ValueError(f"parents_for: model_type must be 'smpl' or 'smplh', got {model_type!r}")


def joint_names_for(model_type: str) -> list[str]:
    """Joint names in smplx order for ``smpl`` or ``smplh``."""
    if model_type == "smpl":
        return list(SMPL_JOINT_NAMES)
    if model_type == "smplh":
        return list(SMPLH_JOINT_NAMES)
    raise ValueError(f"joint_names_for: model_type must be 'smpl' or 'smplh', got {model_type!r}")
