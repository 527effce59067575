"""Multi-resolution hash encoding: level resolutions, dense vs hashed indexing, trilinear values, masks, gradients."""
import math

import pytest
import torch

from zoo.models.field.hash_grid import (
    PRIMES,
    HashGridEncoding,
    dense_index,
    level_resolutions,
    spatial_hash,
    trilinear_corners,
)


def test_default_levels_match_instant_ngp_growth():
    res = level_resolutions(16, 16, 4096)
    # b = exp(ln(4096 / 16) / 15) = 1.44727 (threestudio's per_level_scale); floor(16 b^l)
    assert res == [16, 23, 33, 48, 70, 101, 147, 212, 307, 445, 645, 933, 1351, 1955, 2830, 4096]
    enc = HashGridEncoding(levels=16, features=2, log2_table=19, base=16, max_resolution=4096)
    # dense while (res + 1)^3 <= 2^19 = 524288: 71^3 = 357911 fits, 102^3 = 1061208 does not
    assert enc.dense == [True] * 5 + [False] * 11
    assert enc.level_sizes[:6] == [17**3, 24**3, 34**3, 49**3, 71**3, 2**19]
    assert enc.offsets[1] == 17**3 and enc.table.shape == (sum(enc.level_sizes), 2)
    assert enc.output_dim == 32
    assert float(enc.table.detach().abs().max()) <= 1e-4  # tcnn's initial range


def test_spatial_hash_hand_values_and_uint32_equivalence():
    # (1 * 1) xor (1 * 2654435761) xor (1 * 805459861) mod 2^19, worked out by hand: 339493
    assert int(spatial_hash(torch.tensor([1, 1, 1]), 2**19)) == 339493
    assert int(spatial_hash(torch.tensor([3, 0, 0]), 2**19)) == 3
    # tcnn multiplies in uint32 (wrapping); the row is the same for a power-of-two table
    big = torch.tensor([[4095, 4096, 3001], [17, 4000, 2], [0, 4096, 4096]])
    for (x, y, z), got in zip(big.tolist(), spatial_hash(big, 2**19).tolist(), strict=True):
        wrapped = ((x * PRIMES[0]) & 0xFFFFFFFF) ^ ((y * PRIMES[1]) & 0xFFFFFFFF) ^ ((z * PRIMES[2]) & 0xFFFFFFFF)
        assert got == wrapped % 2**19


def test_dense_level_trilinear_value_of_a_linear_function_is_exact():
    enc = HashGridEncoding(levels=1, features=1, log2_table=10, base=2, max_resolution=2)
    assert enc.dense == [True] and enc.level_sizes == [27]
    verts = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        enc.table.zero_()
        enc.table[dense_index(verts, 2), 0] = (verts[:, 0] + 10 * verts[:, 1] + 100 * verts[:, 2]).float()
    x = torch.tensor([[0.25, 0.5, 0.75], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    # grid coordinates (0.5, 1, 1.5) -> 0.5 + 10 + 150; the upper corner (2, 2, 2) -> 222
    assert torch.allclose(enc(x)[:, 0], torch.tensor([160.5, 222.0, 0.0]))


def test_hashed_level_reads_hashed_rows_and_gradients_reach_them():
    enc = HashGridEncoding(levels=1, features=1, log2_table=4, base=4, max_resolution=4)
    assert enc.dense == [False] and enc.table.shape == (16, 1)  # 5^3 = 125 vertices > 16 rows
    with torch.no_grad():
        enc.table[:, 0] = torch.arange(16, dtype=torch.float32)  # row r holds the value r
    x = torch.tensor([[1.25, 1.5, 1.75]]) / 4  # cell (1, 1, 1), fractions (0.25, 0.5, 0.75)
    value = enc(x)[0, 0]
    expected, weights = 0.0, {}
    for c in range(8):
        i, j, k = 1 + (c & 1), 1 + ((c >> 1) & 1), 1 + ((c >> 2) & 1)
        w = (0.25 if c & 1 else 0.75) * 0.5 * (0.75 if c & 4 else 0.25)  # the y fraction is 0.5 either way
        row = (i ^ (j * 2654435761) ^ (k * 805459861)) % 16
        expected += w * row
        weights[row] = weights.get(row, 0.0) + w
    assert value.item() == pytest.approx(expected, abs=1e-5)
    value.backward()
    grad = enc.table.grad[:, 0]
    for row in range(16):
        assert grad[row].item() == pytest.approx(weights.get(row, 0.0), abs=1e-6)
    assert sorted(weights) == [5, 6, 9, 10]  # collisions: the 8 corners share 4 rows


def test_trilinear_weights_sum_to_one_and_are_differentiable():
    x = torch.rand(50, 3, requires_grad=True)
    corners, w = trilinear_corners(x, 7)
    assert corners.shape == (50, 8, 3) and int(corners.min()) >= 0 and int(corners.max()) <= 7
    assert torch.allclose(w.sum(-1), torch.ones(50))
    # interpolating the vertex x-coordinate gives back x * resolution (d/dx = 7)
    interp = (w * corners[..., 0].float()).sum(-1)
    assert torch.allclose(interp, x[:, 0].detach() * 7, atol=1e-5)
    (g,) = torch.autograd.grad(interp.sum(), x)
    assert torch.allclose(g[:, 0], torch.full((50,), 7.0), atol=1e-4) and float(g[:, 1:].abs().max()) < 1e-5


def test_progressive_mask_zeroes_fine_levels_and_their_gradients():
    enc = HashGridEncoding(levels=4, features=2, log2_table=8, base=2, max_resolution=16)
    x = torch.rand(64, 3)
    full = enc(x)
    enc.set_active_levels(2)
    part = enc(x)
    assert torch.equal(part[:, :4], full[:, :4]) and torch.equal(part[:, 4:], torch.zeros(64, 4))
    assert torch.allclose(enc(x, all_levels=True), part)
    part.sum().backward()
    grad = enc.table.grad
    assert float(grad[enc.offsets[2]:].abs().sum()) == 0.0 and float(grad[:enc.offsets[2]].abs().sum()) > 0
    assert enc.active_levels == 2 and int(enc.active) == 2
    enc.set_active_levels(99)
    assert enc.active_levels == 4
    # the active level count travels with the state dict
    enc.set_active_levels(3)
    fresh = HashGridEncoding(levels=4, features=2, log2_table=8, base=2, max_resolution=16)
    fresh.load_state_dict(enc.state_dict())
    assert fresh.active_levels == 3


def test_bad_shape_names_the_method():
    enc = HashGridEncoding(levels=2, features=2, log2_table=6, base=2, max_resolution=4)
    with pytest.raises(ValueError, match=r"HashGridEncoding.forward: expected points of shape \(N, 3\) in "
                                         r"\[0, 1\]\^3, got \(5, 2\)"):
        enc(torch.rand(5, 2))
    assert math.isclose(level_resolutions(1, 8, 8)[0], 8)
