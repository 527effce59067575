"""View-dependent prompts: the direction rule at its boundaries and PromptEmbeddings.select."""
import pytest
import torch

from zoo.models.guidance.prompts import DIRECTIONS, PromptEmbeddings, view_direction, view_prompt


@pytest.mark.parametrize(("azimuth", "elevation", "expected"), [
    (0.0, 0.0, "front"), (44.9, 0.0, "front"), (45.0, 0.0, "side"), (45.1, 0.0, "side"), (-44.9, 10.0, "front"),
    (-45.0, 10.0, "side"), (135.0, 0.0, "side"), (135.1, 0.0, "back"), (-135.1, 0.0, "back"),
    (-135.0, 0.0, "side"), (180.0, 0.0, "back"), (-180.0, 0.0, "back"), (90.0, 0.0, "side"),
    (315.0, 0.0, "side"), (360.0 + 10.0, 0.0, "front"), (225.1, 0.0, "side"), (224.9, 0.0, "back"),
    (0.0, 60.0, "front"), (0.0, 60.1, "overhead"), (180.0, 60.1, "overhead"), (90.0, 89.0, "overhead"),
])
def test_view_direction_boundaries(azimuth, elevation, expected):
    assert view_direction(torch.tensor([azimuth]), torch.tensor([elevation])) == [expected]


def test_view_direction_batch_and_prompt_text():
    assert view_direction([44.9, 45.0, 135.1, 0.0], [0.0, 0.0, 0.0, 61.0]) == ["front", "side", "back", "overhead"]
    assert view_prompt("a corgi", "front") == "a corgi, front view"
    with pytest.raises(ValueError, match="unknown direction 'top'"):
        view_prompt("a corgi", "top")
    with pytest.raises(ValueError, match="one value per camera"):
        view_direction([0.0, 1.0], [0.0])


def test_select_picks_each_cameras_direction():
    cond = {d: torch.full((2, 3), float(i)) for i, d in enumerate(DIRECTIONS)}  # front 0, side 1, back 2, overhead 3
    pe = PromptEmbeddings("p", cond, torch.full((2, 3), -1.0))
    c, u = pe.select(torch.tensor([0.0, 90.0, 180.0, 0.0, -100.0]), torch.tensor([0.0, 0.0, 0.0, 80.0, 5.0]))
    assert c.shape == (5, 2, 3) and u.shape == (5, 2, 3)
    assert c[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 1.0]
    assert (u == -1.0).all()
    plain = PromptEmbeddings("p", cond, torch.zeros(2, 3), view_dependent=False)
    c, _ = plain.select(torch.tensor([0.0, 180.0]), torch.tensor([0.0, 80.0]))
    assert c[:, 0, 0].tolist() == [0.0, 0.0]
    assert pe.to(torch.float64).cond["back"].dtype == torch.float64
