"""Issue 9, item 15: no loss in zoo/ calls BCE on probabilities (refused under CUDA autocast), and the logit
forms that replaced it give the values the probability forms gave (hand-computed where it matters)."""
import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ZOO = Path(__file__).resolve().parents[2] / "zoo"
# the probability form of BCE: torch.nn.functional.binary_cross_entropy / torch.binary_cross_entropy and
# nn.BCELoss, under any import spelling
BANNED = {"binary_cross_entropy", "BCELoss"}


def _offenders(tree: ast.AST, path: Path) -> list[str]:
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and node.attr in BANNED:
            name = node.attr
        elif isinstance(node, ast.Name) and node.id in BANNED:
            name = node.id
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            hit = [a.name for a in node.names if a.name.split(".")[-1] in BANNED]
            name = hit[0] if hit else None
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in BANNED:
            name = f"getattr(..., {node.args[1].value!r})"
        if name is not None:
            found.append(f"{path.relative_to(ZOO.parent)}:{node.lineno}: {name}")
    return found


def test_no_probability_bce_in_zoo():
    files = sorted(ZOO.rglob("*.py"))
    assert len(files) > 20, f"expected the zoo package under {ZOO}"
    bad = []
    for path in files:
        bad += _offenders(ast.parse(path.read_text(), filename=str(path)), path)
    assert not bad, ("BCE on probabilities (F.binary_cross_entropy / nn.BCELoss) is refused under CUDA autocast; "
                     "use binary_cross_entropy_with_logits:\n" + "\n".join(bad))


def test_scanner_catches_every_spelling(tmp_path):
    src = ("import torch.nn.functional as F\nfrom torch.nn.functional import binary_cross_entropy\n"
           "from torch import nn\nx = F.binary_cross_entropy(p, t)\ny = nn.BCELoss()\n"
           "z = torch.nn.functional.binary_cross_entropy(p, t)\nw = getattr(F, 'binary_cross_entropy')\n"
           "ok = F.binary_cross_entropy_with_logits(l, t)\n")
    path = ZOO / "_probe.py"  # only named, never written
    lines = sorted({int(s.split(":")[1]) for s in _offenders(ast.parse(src), path)})
    assert lines == [2, 4, 5, 6, 7]


def _release_seg_bce(logits, onehot):
    """The release's formula: nn.BCELoss on the softmax (CPU reference)."""
    return F.binary_cross_entropy(torch.softmax(logits, 1), onehot.float())


def test_deco_seg_bce_from_logits_equals_release_formula():
    from zoo.systems.deco import deco_seg_bce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 5, 6, generator=g) * 3
    onehot = F.one_hot(torch.randint(0, 7, (2, 5, 6), generator=g), 7).permute(0, 3, 1, 2)
    torch.testing.assert_close(deco_seg_bce(logits, onehot), _release_seg_bce(logits, onehot), rtol=1e-5, atol=1e-6)
    # hand-computed: logits (ln 2, 0, 0) -> p = (0.5, 0.25, 0.25), target class 0
    lg = torch.tensor([math.log(2.0), 0.0, 0.0]).view(1, 3, 1, 1)
    oh = torch.tensor([1, 0, 0]).view(1, 3, 1, 1)
    assert deco_seg_bce(lg, oh).item() == pytest.approx(-(math.log(0.5) + 2 * math.log(0.75)) / 3, rel=1e-6)


def test_deco_seg_bce_saturated_is_finite_with_gradients():
    from zoo.systems.deco import deco_seg_bce

    logits = torch.tensor([200.0, -200.0, 0.0]).view(1, 3, 1, 1).requires_grad_()
    onehot = torch.tensor([0, 1, 0]).view(1, 3, 1, 1)
    loss = deco_seg_bce(logits, onehot)
    loss.backward()
    # log p of the target floored at -100 (as BCELoss); log(1 - p) of the certain wrong class capped near -16.6
    assert loss.item() == pytest.approx((100.0 - math.log(2.0 ** -24)) / 3, rel=1e-4)
    assert torch.isfinite(logits.grad).all()


def test_deco_seg_bce_under_autocast_returns_float32():
    from zoo.systems.deco import deco_seg_bce

    logits = torch.randn(2, 5, 4, 4)
    onehot = F.one_hot(torch.randint(0, 5, (2, 4, 4)), 5).permute(0, 3, 1, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deco_seg_bce(logits.bfloat16(), onehot)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, _release_seg_bce(logits.bfloat16().float(), onehot), rtol=1e-5, atol=1e-6)


def test_focal_loss_probs_from_logits_equals_probability_form():
    from zoo.models.losses import focal_loss_probs

    g = torch.Generator().manual_seed(1)
    p = torch.rand(3, 50, generator=g)
    p[0, :3] = torch.tensor([0.0, 1.0, 1e-9])  # clamped to [1e-6, 1 - 1e-6]
    t = (torch.rand(3, 50, generator=g) < 0.4).float()
    pc = p.clamp(1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(pc, t, reduction="none")
    ref = 0.25 * (1 - torch.exp(-bce)) ** 2 * bce
    torch.testing.assert_close(focal_loss_probs(p, t, reduction="none"), ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(focal_loss_probs(p, t), ref.mean(), rtol=1e-4, atol=1e-7)


def test_pixel_anchoring_loss_from_logits_equals_bce_of_rendered_probabilities():
    """The rendered logits' BCE equals the release's BCE of rendered probabilities, background included
    (the release's black background: BCE 100 where the mask is set, 0 elsewhere)."""
    from zoo.systems.deco import pixel_anchoring_render

    verts = torch.tensor([[[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]]])
    faces = torch.tensor([[1, 0, 2]])
    K = torch.tensor([[[8.0, 0, 8.0], [0, 8.0, 8.0], [0, 0, 1.0]]])
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    mask = torch.zeros(1, 16, 16)
    mask[0, 4:12, 2:10] = 1
    probs = pixel_anchoring_render(torch.sigmoid(logits), verts, faces, K, 16, 16)
    ref = F.binary_cross_entropy(probs, mask)
    rendered = pixel_anchoring_render(logits, verts, faces, K, 16, 16, background=-100.0)
    torch.testing.assert_close(F.binary_cross_entropy_with_logits(rendered, mask), ref, rtol=1e-5, atol=1e-6)
