"""A synthetic body pose set for the pose codebooks on CPU: labelled families with per-family joint angles.

Body joints (SMPL-family order, the 21 after the root): 0 L hip, 1 R hip, 2 spine1, 3 L knee, 4 R knee,
5 spine2, 6 L ankle, 7 R ankle, 8 spine3, 9 L foot, 10 R foot, 11 neck, 12 L collar, 13 R collar, 14 head,
15 L shoulder, 16 R shoulder, 17 L elbow, 18 R elbow, 19 L wrist, 20 R wrist. Angles in radians about the
body's x (flexion: negative brings a thigh forward, positive bends a knee back), y and z axes (a negative z
lowers the left arm from the T-pose, a positive z the right one).
"""
from __future__ import annotations

import numpy as np

__all__ = ["synthetic_pose_set", "FAMILIES", "family_pose"]

# joint -> (x, y, z) axis-angle of each family's mean pose; joints not listed stay at rest.
FAMILIES: dict[str, dict[int, tuple[float, float, float]]] = {
    "standing": {15: (0.0, 0.0, -1.2), 16: (0.0, 0.0, 1.2), 17: (0.0, -0.2, 0.0), 18: (0.0, 0.2, 0.0)},
    "sitting": {0: (-1.5, 0.0, 0.0), 1: (-1.5, 0.0, 0.0), 3: (1.5, 0.0, 0.0), 4: (1.5, 0.0, 0.0),
                15: (0.0, 0.0, -1.1), 16: (0.0, 0.0, 1.1), 17: (0.0, -0.9, 0.0), 18: (0.0, 0.9, 0.0)},
    "reaching up": {15: (0.0, 0.0, 1.2), 16: (0.0, 0.0, -1.2), 8: (-0.15, 0.0, 0.0), 14: (-0.3, 0.0, 0.0)},
    "lying": {15: (0.0, 0.0, -1.45), 16: (0.0, 0.0, 1.45), 0: (0.0, 0.0, 0.15), 1: (0.0, 0.0, -0.15),
              14: (0.35, 0.0, 0.0), 6: (0.5, 0.0, 0.0), 7: (0.5, 0.0, 0.0)},
    "riding": {0: (-1.1, 0.0, 0.5), 1: (-1.1, 0.0, -0.5), 3: (1.3, 0.0, 0.0), 4: (1.3, 0.0, 0.0),
               2: (0.25, 0.0, 0.0), 15: (0.0, -0.9, -0.6), 16: (0.0, 0.9, 0.6), 17: (0.0, -0.6, 0.0),
               18: (0.0, 0.6, 0.0)},
}


def family_pose(family: str) -> np.ndarray:
    """The mean body pose (21, 3) float32 of a family; an unknown name lists the families."""
    if family not in FAMILIES:
        raise ValueError(f"synthetic pose family {family!r} unknown; expected one of {', '.join(FAMILIES)}")
    pose = np.zeros((21, 3), np.float32)
    for j, aa in FAMILIES[family].items():
        pose[j] = aa
    return pose


def synthetic_pose_set(n: int, seed: int = 0, noise: float = 0.08) -> tuple[np.ndarray, list[str]]:
    """(poses (n, 21, 3) float32, labels: n family names): families in turn (standing, sitting, reaching up,
    lying, riding, standing, ...), each its mean pose plus Gaussian noise (``noise`` radians per angle,
    on the joints the family sets and a tenth of it elsewhere); the same for the same ``(n, seed)``."""
    if int(n) < 1:
        raise ValueError(f"synthetic_pose_set: n must be >= 1, got {n}")
    rng = np.random.default_rng(int(seed))
    names = list(FAMILIES)
    labels = [names[i % len(names)] for i in range(int(n))]
    poses = np.empty((int(n), 21, 3), np.float32)
    for i, fam in enumerate(labels):
        scale = np.full((21, 1), noise / 10, np.float32)
        scale[list(FAMILIES[fam])] = noise
        poses[i] = family_pose(fam) + rng.normal(size=(21, 3)).astype(np.float32) * scale
    return poses, labels
