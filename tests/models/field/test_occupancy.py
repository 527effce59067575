"""Occupancy grid: everything occupied before the first update, empty space marked empty, dense space kept."""
import pytest
import torch

from zoo.models.field.occupancy import OccupancyGrid


def ball(radius: float, value: float = 100.0):
    """Density ``value`` inside |x| < radius, 0 outside."""
    return lambda p: (p.norm(dim=-1) < radius).float() * value


def test_everything_is_occupied_before_the_first_update():
    grid = OccupancyGrid(resolution=8, bound=1.0)
    pts = torch.rand(100, 3) * 2 - 1
    assert bool(grid.occupied(pts).all()) and grid.fraction() == 1.0
    assert not bool(grid.occupied(torch.tensor([[1.01, 0.0, 0.0]])).any())  # outside the cube


def test_update_marks_empty_space_empty_and_skips_nothing_dense():
    grid = OccupancyGrid(resolution=16, bound=1.0, threshold=0.01, update_every=1, warmup_steps=0)
    assert grid.update(ball(0.4), step=0)
    inside = torch.randn(2000, 3)
    inside = inside / inside.norm(dim=-1, keepdim=True) * torch.rand(2000, 1).mul(0.3999)
    assert bool(grid.occupied(inside).all())  # nothing dense is skipped
    corner = torch.rand(500, 3) * 0.3 + 0.7  # the [0.7, 1]^3 corner is far from the ball
    assert not bool(grid.occupied(corner).any())
    # cells intersecting the ball (radius 0.4 = 3.2 cells) plus one dilated ring: well under the cube
    assert 0.03 < grid.fraction() < 0.2
    assert int(grid.updates) == 1


def test_schedule_of_updates():
    grid = OccupancyGrid(resolution=4, update_every=4, warmup_steps=8)
    assert [s for s in range(20) if grid.due(s)] == [8, 12, 16]
    assert not grid.update(ball(0.5), step=9)
    assert grid.update(ball(0.5), step=9, force=True)


def test_decay_empties_a_cell_after_its_density_vanishes():
    grid = OccupancyGrid(resolution=2, bound=1.0, threshold=0.5, decay=0.9, dilate=0, update_every=1,
                         warmup_steps=0)
    grid.update(lambda p: torch.ones(p.shape[0]), step=0)
    assert grid.fraction() == 1.0
    empty = lambda p: torch.zeros(p.shape[0])  # noqa: E731
    for step in range(1, 7):  # ema 0.9^k stays above 0.5 for k <= 6
        grid.update(empty, step=step)
        assert grid.fraction() == 1.0
    grid.update(empty, step=7)  # 0.9^7 = 0.478
    assert grid.fraction() == 0.0
    assert torch.allclose(grid.ema, torch.full((2, 2, 2), 0.9**7))


def test_state_round_trip_and_errors():
    grid = OccupancyGrid(resolution=8, update_every=1, warmup_steps=0)
    grid.update(ball(0.3), step=3)
    fresh = OccupancyGrid(resolution=8)
    fresh.load_state_dict(grid.state_dict())
    assert torch.equal(fresh.mask, grid.mask) and fresh.fraction() == grid.fraction()
    again = OccupancyGrid(resolution=8, update_every=1, warmup_steps=0)
    again.update(ball(0.3), step=3)
    assert torch.equal(again.ema, grid.ema)  # the probes are a function of the step
    with pytest.raises(ValueError, match=r"OccupancyGrid: decay must be in \[0, 1\], got 1.5"):
        OccupancyGrid(decay=1.5)
    with pytest.raises(ValueError, match=r"OccupancyGrid.occupied: expected points of shape \(N, 3\), got \(4,\)"):
        grid.occupied(torch.zeros(4))
    with pytest.raises(ValueError, match=r"density_fn returned shape \(10, 1\)"):
        grid.update(lambda p: torch.zeros(10, 1), step=0, force=True)
