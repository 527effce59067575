"""VPoser v2 (human_body_prior ``V02_05``): a VAE over the 21 SMPL-family body joints' rotations.

Architecture (nghorbani/human_body_prior, ``models/vposer_model.py``), mirrored layer for layer so the
official state dict keys map one to one (the released Lightning checkpoint stores them under
``vp_model.``)::

    encoder_net: 0 flatten, 1 BatchNorm1d(63), 2 Linear(63, H), 3 LeakyReLU, 4 BatchNorm1d(H), 5 Dropout,
                 6 Linear(H, H), 7 Linear(H, H), 8 NormalDistDecoder (mu: Linear(H, Z), logvar: Linear(H, Z))
    decoder_net: 0 Linear(Z, H), 1 LeakyReLU, 2 Dropout, 3 Linear(H, H), 4 LeakyReLU, 5 Linear(H, 21 * 6),
                 6 6D -> rotation matrix

The encoder's distribution is Normal(mu, softplus(logvar)) (softplus of the "logvar" head is the standard
deviation, as released). The decoder's 6D output per joint is read as two 3-vectors (the columns of a
(3, 2) view), Gram-Schmidt orthonormalised into a rotation matrix's first two columns (Zhou et al. 2019),
then converted to axis-angle.
"""
from __future__ import annotations

import re
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.hub import CheckpointError, Pretrained
from zoo.core.interfaces import PosePrior
from zoo.core.registry import register

__all__ = ["VPoser", "rot6d_to_matrix", "matrix_to_rot6d", "matrix_to_axis_angle", "axis_angle_to_matrix",
           "convert_official_vposer", "OFFICIAL_PREFIX", "VPOSER_SOURCE"]

OFFICIAL_PREFIX = "vp_model."
VPOSER_SOURCE = ("VPoser v2.0 (V02_05) from https://smpl-x.is.tue.mpg.de (download page, after registration: "
                 "'VPoser v2.0'; the Lightning checkpoint V02_05/snapshots/V02_05_epoch=*.ckpt)")


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from 6D vectors (..., 6) read as a (3, 2) matrix of two columns
    (VPoser's ``ContinousRotReprDecoder``): b1 = a1 / |a1|, b2 = normalised a2 minus its b1 part,
    b3 = b1 x b2; the matrix's columns are (b1, b2, b3)."""
    a = x.reshape(*x.shape[:-1], 3, 2)
    b1 = F.normalize(a[..., 0], dim=-1)
    b2 = F.normalize(a[..., 1] - (b1 * a[..., 1]).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(m: torch.Tensor) -> torch.Tensor:
    """The 6D vector (..., 6) of rotation matrices (..., 3, 3) in :func:`rot6d_to_matrix`'s layout."""
    return m[..., :, :2].reshape(*m.shape[:-2], 6)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation matrices (..., 3, 3) of axis-angle vectors (..., 3) (angle = norm, radians)."""
    angle = aa.norm(dim=-1, keepdim=True)
    # Near zero the axis is undefined; the first-order terms keep the result (and its gradient) finite.
    small = angle < 1e-8
    axis = aa / torch.where(small, torch.ones_like(angle), angle)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + s * k + (1 - c) * (k @ k)


def matrix_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors (..., 3), angle in [0, pi], of rotation matrices (..., 3, 3).

    Through the unit quaternion (Shepperd's method: the largest of the four diagonal combinations is the
    pivot, so it stays accurate near 180 degrees, where the antisymmetric part of the matrix vanishes)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    cand = torch.stack([tr, m00, m11, m22], -1)
    piv = cand.argmax(-1)
    r = [torch.sqrt((1 + 2 * cand[..., i] - tr).clamp(min=1e-12)) for i in range(4)]  # 2 |q_i| per pivot
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s01, s02, s12 = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    # (w, x, y, z) from each pivot; all four computed, the chosen one gathered.
    allq = torch.stack([
        torch.stack([r[0] / 2, d21 / (2 * r[0]), d02 / (2 * r[0]), d10 / (2 * r[0])], -1),
        torch.stack([d21 / (2 * r[1]), r[1] / 2, s01 / (2 * r[1]), s02 / (2 * r[1])], -1),
        torch.stack([d02 / (2 * r[2]), s01 / (2 * r[2]), r[2] / 2, s12 / (2 * r[2])], -1),
        torch.stack([d10 / (2 * r[3]), s02 / (2 * r[3]), s12 / (2 * r[3]), r[3] / 2], -1)], -2)
    q = torch.gather(allq, -2, piv[..., None, None].expand(*piv.shape, 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: the angle in [0, pi]
    q = F.normalize(q, dim=-1)
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle / 2) -> 2 as the angle -> 0.
    scale = torch.where(sin_half < 1e-8, torch.full_like(angle, 2.0), angle / sin_half.clamp(min=1e-12))
    return vec * scale


class _NormalHead(nn.Module):
    """VPoser's ``NormalDistDecoder``: the two heads ``mu`` and ``logvar`` (softplus of the latter = std)."""

    def __init__(self, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, std) of the latent Normal."""
        return self.mu(h), F.softplus(self.logvar(h))


class _Flatten(nn.Module):
    """``BatchFlatten``: (B, ...) -> (B, -1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input flattened per sample."""
        return x.reshape(x.shape[0], -1)


class _Rot6D(nn.Module):
    """``ContinousRotReprDecoder``: (B, J * 6) -> (B * J, 3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation matrices of the 6D vectors."""
        return rot6d_to_matrix(x.reshape(-1, 6))


def _expected_keys(module: nn.Module) -> list[str]:
    return list(module.state_dict())


def convert_official_vposer(state: Any, source: str, own_keys: list[str]) -> dict:
    """Our state dict from a VPoser V02_05 checkpoint: the official Lightning ``.ckpt`` (``state_dict`` with
    ``vp_model.encoder_net.*`` / ``vp_model.decoder_net.*``), its bare ``encoder_net.*`` / ``decoder_net.*``
    keys (ours are the same names), or a dict holding either. Other keys raise CheckpointError naming
    ``source`` and the keys expected."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a VPoser state dict, got {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if not isinstance(k, str):
            continue
        m = re.match(r"^(?:.*\.)?((?:encoder_net|decoder_net)\..+)$", k)
        if m is not None and (k.startswith(OFFICIAL_PREFIX) or k == m.group(1)):
            out[m.group(1)] = v
    if not out:
        got = ", ".join(map(str, list(state)[:5])) + (", ..." if len(state) > 5 else "")
        shown = ", ".join(OFFICIAL_PREFIX + k for k in own_keys[:4])
        raise CheckpointError(f"{source}: not a VPoser v2 checkpoint: no {OFFICIAL_PREFIX}encoder_net.* / "
                              f"{OFFICIAL_PREFIX}decoder_net.* keys (got {got or 'an empty dict'}); expected the "
                              f"V02_05 Lightning checkpoint's keys ({shown}, ...) or ours without the prefix")
    return out


@register("pose_prior", "vposer")
class VPoser(Pretrained, PosePrior, L.LightningModule):
    """VPoser v2: ``encode(pose_body (B, 63) or (B, 21, 3) axis-angle) -> (mu (B, Z), std (B, Z))``,
    ``decode(z (B, Z)) -> (B, 21, 3)`` axis-angle, ``forward(z) = decode(z)`` (the pose_prior interface).

    ``weights``: a local V02_05 checkpoint (the official Lightning .ckpt, ``vp_model.*`` keys, or ours);
    None keeps the random initialisation (the tiny configuration: ``hidden: 32``).
    """

    def __init__(self, latent_dim: int = 32, hidden: int = 512, num_joints: int = 21, dropout: float = 0.1,
                 weights: str | None = None) -> None:
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("hidden", hidden), ("num_joints", num_joints)):
            if int(v) < 1:
                raise ValueError(f"VPoser: {name} must be >= 1, got {v}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"VPoser: dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        n = num_joints * 3
        self.encoder_net = nn.Sequential(
            _Flatten(), nn.BatchNorm1d(n), nn.Linear(n, hidden), nn.LeakyReLU(), nn.BatchNorm1d(hidden),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), _NormalHead(hidden, latent_dim))
        self.decoder_net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden),
            nn.LeakyReLU(), nn.Linear(hidden, num_joints * 6), _Rot6D())

    @property
    def latent_dim(self) -> int:
        """Z, the latent width."""
        return int(self.hparams.latent_dim)

    @property
    def num_joints(self) -> int:
        """The body joints decoded (21: SMPL-family body without the root)."""
        return int(self.hparams.num_joints)

    def load_pretrained(self) -> dict | None:
        """Load ``weights``; a missing file says what VPoser file is expected and where it comes from."""
        from pathlib import Path

        from zoo.core.hub import pretrained_skipped

        src = self.weights_source()
        if src is not None and not pretrained_skipped() and not src.startswith("zoo://") \
                and not Path(src).expanduser().exists() and ("/" in src or Path(src).suffix):
            raise FileNotFoundError(f"VPoser: weights file {Path(src).expanduser()} not found; expected {VPOSER_SOURCE}, "
                                    f"placed at that path (hoi-zoo never downloads)")
        return super().load_pretrained()

    def convert_checkpoint(self, obj: Any, source: str) -> dict:
        """The official ``vp_model.*`` layout (or ours) -> our keys (see :func:`convert_official_vposer`)."""
        return convert_official_vposer(obj, source, _expected_keys(self))

    def _pose_input(self, pose_body: torch.Tensor) -> torch.Tensor:
        j = self.num_joints
        if pose_body.ndim == 3 and tuple(pose_body.shape[1:]) == (j, 3):
            return pose_body.reshape(pose_body.shape[0], j * 3)
        if pose_body.ndim == 2 and pose_body.shape[1] == j * 3:
            return pose_body
        raise ValueError(f"VPoser.encode: expected pose_body (B, {j * 3}) or (B, {j}, 3) axis-angle, "
                         f"got {tuple(pose_body.shape)}")

    def encode(self, pose_body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu (B, Z), std (B, Z)) of the posterior of body poses (B, 63) or (B, 21, 3)."""
        x = self._pose_input(torch.as_tensor(pose_body)).to(self.encoder_net[2].weight)
        return self.encoder_net(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Body poses (B, 21, 3) axis-angle of latents (B, Z)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"VPoser.decode: expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        mats = self.decoder_net(z.to(self.decoder_net[0].weight))
        return matrix_to_axis_angle(mats).reshape(z.shape[0], self.num_joints, 3)

    def decode_matrices(self, z: torch.Tensor) -> torch.Tensor:
        """Body joint rotation matrices (B, 21, 3, 3) of latents (B, Z)."""
        return self.decoder_net(z.to(self.decoder_net[0].weight)).reshape(z.shape[0], self.num_joints, 3, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The pose_prior interface: ``decode(z)`` -> (B, 21, 3)."""
        return self.decode(z)
