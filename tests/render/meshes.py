"""Small meshes shared by the render tests."""
import math

import torch


def ellipsoid(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed UV ellipsoid (0.3 x 0.9 x 0.2 m) centred at the origin: (verts, faces)."""
    th = torch.linspace(0, math.pi, n)
    ph = torch.linspace(0, 2 * math.pi, 2 * n + 1)[:-1]
    T, P = torch.meshgrid(th, ph, indexing="ij")
    v = torch.stack([T.sin() * P.cos(), T.cos(), T.sin() * P.sin()], -1).reshape(-1, 3)
    m = 2 * n
    f = []
    for i in range(n - 1):
        for j in range(m):
            a, b, c, d = i * m + j, i * m + (j + 1) % m, (i + 1) * m + j, (i + 1) * m + (j + 1) % m
            f += [[a, c, b], [b, c, d]]
    return v * torch.tensor([0.3, 0.9, 0.2]), torch.tensor(f)
