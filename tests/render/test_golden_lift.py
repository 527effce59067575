"""2D -> 3D lifting from mask logits against InteractVLM's HumanContact3DPredictor (tests/fixtures/golden/
lift_human.npz, README section 5): scores from the stored logits and the stored pixel_to_vertex / bary_coords maps.
Every input and expected output is read from the file."""
from __future__ import annotations

import pytest
import torch

from zoo.render.lift import LiftMap, mesh_lift_map

ATOL = 1e-5  # README section 5


@pytest.fixture(scope="module")
def golden(golden_npz):
    return golden_npz("lift_human")


def _vertex_map(g) -> LiftMap:
    """A lift map made from the official per-pixel vertex triplets: each covered pixel its own 'face'.

    The official predictor keeps a pixel when all three of its vertices are in [0, num_vertices)."""
    p2v = torch.from_numpy(g["pixel_to_vertex"]).long()
    n = int(g["scores"].shape[1])
    ok = ((p2v >= 0) & (p2v < n)).all(-1)
    elem = torch.full(ok.shape, -1, dtype=torch.long)
    elem[ok] = torch.arange(int(ok.sum()))
    return LiftMap("mesh", elem, torch.from_numpy(g["bary_coords"]), p2v[ok], n)


def test_lift_from_logits_reproduces_official_scores(golden):
    g = golden
    lm = _vertex_map(g)
    logits = torch.from_numpy(g["logits"])
    assert logits.abs().max() > 20  # some logits lie beyond the clamp
    scores, seen = lm.lift(logits, from_logits=True)
    want = torch.from_numpy(g["scores"])
    err = (scores - want).abs().max().item()
    assert err <= ATOL, err
    assert not (want[:, ~seen] != 0).any()  # vertices no view sees score 0 officially too
    # The same map built from the rasteriser's face ids and the mesh faces gives the same scores.
    faces = torch.from_numpy(g["faces"]).long()
    lm2 = mesh_lift_map(torch.from_numpy(g["pix_to_face"]), torch.from_numpy(g["bary_coords"]), faces,
                        int(g["verts"].shape[0]))
    assert (lm2.lift(logits, from_logits=True)[0] - want).abs().max().item() <= ATOL
    # From the stored probabilities (sigmoid of the clamped logits) the probability path agrees.
    assert (lm.lift(torch.from_numpy(g["probs"]))[0] - want).abs().max().item() <= ATOL
    # Negative control: logits taken for probabilities (no sigmoid) are far off.
    assert (lm.lift(logits.clamp(0, 1))[0] - want).abs().max().item() > 0.1
