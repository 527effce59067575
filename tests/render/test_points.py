"""Point rasterizer: hand-computed disc coverage, depth order, compositing, NOCS colours, normalisation."""
import pytest
import torch

from zoo.render.points import PointFragments, composite_points, nocs_colors, normalize_unit_sphere, rasterize_points


def test_disc_coverage_by_hand():
    # 8 x 8 image: NDC radius 0.3 is 1.2 px. A point on the centre of pixel (row 2, col 3) covers that
    # pixel and its 4 edge neighbours (1 px away) but not the diagonals (1.41 px).
    pts = torch.tensor([[3.5, 2.5, 1.0]])
    fr = rasterize_points(pts, None, 1, 8, 8, radius=0.3)
    cov = fr.idx[0, ..., 0] == 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for r, c in [(2, 3), (1, 3), (3, 3), (2, 2), (2, 4)]:
        expected[r, c] = True
    assert torch.equal(cov, expected)
    # Squared NDC distances: 0 at the centre, (2/8)^2 next to it; depth 1.
    assert fr.dists[0, 2, 3, 0] == 0 and fr.dists[0, 1, 3, 0] == pytest.approx(0.0625)
    assert (fr.zbuf[0, ..., 0][cov] == 1).all() and (fr.zbuf[0, ..., 0][~cov] == -1).all()
    # The test is strict: at exactly 1 px radius (NDC 0.25) only the centre pixel remains.
    assert int((rasterize_points(pts, None, 1, 8, 8, radius=0.25).idx >= 0).sum()) == 1


def test_depth_order_k_nearest_and_behind_camera():
    pts = torch.tensor([[3.5, 2.5, 2.0], [3.5, 2.5, 1.0], [3.5, 2.5, 3.0], [3.5, 2.5, -1.0]])
    fr1 = rasterize_points(pts, None, 1, 8, 8, radius=0.3, points_per_pixel=1)
    assert int(fr1.idx[0, 2, 3, 0]) == 1 and float(fr1.zbuf[0, 2, 3, 0]) == 1.0
    fr = rasterize_points(pts, None, 1, 8, 8, radius=0.3, points_per_pixel=4)
    # Nearest first; the point behind the camera (z < 0) is never drawn.
    assert fr.idx[0, 2, 3].tolist() == [1, 0, 2, -1]
    assert fr.zbuf[0, 2, 3].tolist() == [1.0, 2.0, 3.0, -1.0]
    assert torch.equal(fr.idx[..., :1], fr1.idx)


def test_several_images_in_one_pass():
    pts = torch.tensor([[1.5, 1.5, 1.0], [1.5, 1.5, 1.0]])
    fr = rasterize_points(pts, torch.tensor([0, 1]), 2, 4, 4, radius=0.1)
    assert int(fr.idx[0, 1, 1, 0]) == 0 and int(fr.idx[1, 1, 1, 0]) == 1
    assert int((fr.idx >= 0).sum()) == 2
    with pytest.raises(ValueError, match=r"image_id must lie in \[0, 1\)"):
        rasterize_points(pts, torch.tensor([0, 1]), 1, 4, 4, radius=0.1)
    with pytest.raises(ValueError, match=r"points_screen must be \(P, 3\), got \(2, 2\)"):
        rasterize_points(pts[:, :2], None, 1, 4, 4, radius=0.1)


def test_alpha_compositing_by_hand():
    # One pixel, two layers: alpha = 1 - d/r^2 -> 0.75 then 0.5; weights 0.75 and 0.25 * 0.5.
    r = 0.2
    idx = torch.tensor([[[[0, 1]]]])
    dists = torch.tensor([[[[0.25 * r * r, 0.5 * r * r]]]])
    fr = PointFragments(idx, torch.tensor([[[[1.0, 2.0]]]]), dists)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    img = composite_points(fr, colors, r, background=0.3)
    assert torch.allclose(img[0, :, 0, 0], torch.tensor([0.75, 0.125, 0.0]))
    empty = PointFragments(torch.full((1, 1, 1, 2), -1), torch.full((1, 1, 1, 2), -1.0), torch.full((1, 1, 1, 2), -1.0))
    assert torch.allclose(composite_points(empty, colors, r, background=0.3), torch.full((1, 3, 1, 1), 0.3))


def test_normalize_and_nocs():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(100, 3, generator=g) * 3 + 5
    n = normalize_unit_sphere(pts)
    assert torch.allclose(n.mean(0), torch.zeros(3), atol=1e-5)
    assert n.norm(dim=-1).max() == pytest.approx(1.0, abs=1e-6)
    nb = normalize_unit_sphere(torch.stack([pts, pts * 2]))
    assert torch.allclose(nb[0], n, atol=1e-6) and torch.allclose(nb[1], n, atol=1e-6)
    c = nocs_colors(n)
    assert torch.allclose(c.amin(0), torch.full((3,), 0.1)) and torch.allclose(c.amax(0), torch.full((3,), 0.9))
    # Per axis, colour is affine in the coordinate.
    i, j = n[:, 0].argmin(), n[:, 0].argmax()
    k = 7
    assert float(c[k, 0]) == pytest.approx(0.1 + 0.8 * float((n[k, 0] - n[i, 0]) / (n[j, 0] - n[i, 0])), abs=1e-6)
    with pytest.raises(ValueError, match="all its points at one position"):
        normalize_unit_sphere(torch.ones(5, 3))
    with pytest.raises(ValueError, match=r"points must be \(P, 3\), got \(5, 2\)"):
        nocs_colors(torch.zeros(5, 2))
