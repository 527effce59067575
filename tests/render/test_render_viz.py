"""Contact views: grid layout, contact colouring per view, atomic PNG output, input errors."""
import numpy as np
import pytest
import torch
from meshes import ellipsoid
from PIL import Image

from zoo.render.viz import contact_colors, contact_views_image, contact_views_png

_ellipsoid = ellipsoid


def _red(block):
    b = block.astype(int)
    return (b[..., 0] > 150) & (b[..., 1] < 90) & (b[..., 2] < 90)


def test_contact_colors_ramp():
    c = contact_colors(np.array([0.0, 1.0, 0.5]))
    assert torch.allclose(c[0], torch.tensor([0.78, 0.78, 0.78]))
    assert torch.allclose(c[1], torch.tensor([0.90, 0.10, 0.10]))
    assert torch.allclose(c[2], (c[0] + c[1]) / 2)


def test_grid_layout_and_sides():
    v, f = _ellipsoid(16)
    # Prediction: contact on the +x half (the body's left); GT: nothing.
    pred = (v[:, 0] > 0.05).float()
    gt = torch.zeros(len(v))
    img = contact_views_image(v, f, pred, gt, views=4, size=64)
    assert img.shape == (128, 256, 3) and img.dtype == np.uint8
    front, back, left, right = (img[:64, i * 64:(i + 1) * 64] for i in range(4))
    assert _red(left).sum() > 100 and _red(right).sum() == 0  # only the left side is red from the left
    # Seen from the front the body's left (+x) is on the image right; from the back, on the left.
    assert _red(front[:, 32:]).sum() > _red(front[:, :32]).sum()
    assert _red(back[:, :32]).sum() > _red(back[:, 32:]).sum()
    assert _red(img[64:]).sum() == 0  # the GT row has no contact
    single = contact_views_image(v, f, pred, None, views=2, size=48, title="x")
    assert single.shape == (24 + 48, 96, 3)


def test_png_written_atomically(tmp_path):
    v, f = _ellipsoid(8)
    pred = torch.rand(len(v))
    p = contact_views_png(v, f, pred, None, tmp_path / "sub" / "c.png", views=4, size=32)
    assert p == tmp_path / "sub" / "c.png"
    arr = np.asarray(Image.open(p))
    assert np.array_equal(arr, contact_views_image(v, f, pred, None, views=4, size=32))
    assert [q.name for q in (tmp_path / "sub").iterdir()] == ["c.png"]  # no temporary left behind


def test_wrong_vertex_count_raises():
    v, f = _ellipsoid(8)
    with pytest.raises(ValueError, match=rf"gt has 5 values, expected one per vertex \({len(v)}\)"):
        contact_views_image(v, f, torch.zeros(len(v)), torch.zeros(5))
