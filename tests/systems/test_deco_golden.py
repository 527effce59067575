"""The official DECO forward (tests/fixtures/golden/deco_forward.npz, README section 8) reproduced by our DECO.

The file holds the official state dict's keys, shapes and float flags, the seed of a documented weight fill,
an input batch and the official outputs. We regenerate the official-named state dict from that metadata
(checked against the stored checksums), convert it with zoo.systems.deco_convert into our DECO, sized from
the tensors themselves (HRNet encoders, context decoders), and compare. Every size comes from the file, so
another set of the same layout (other seed, other image size) runs unchanged.
"""
import math

import numpy as np
import pytest
import torch

from zoo.core import hub, registry
from zoo.systems.deco_convert import convert_official_deco, official_deco_kwargs


def official_fill(keys, shapes, ndims, is_float, seed) -> dict[str, torch.Tensor]:
    """The README's fill: every float entry, in the official key order, drawn from one seeded generator."""
    g = torch.Generator().manual_seed(int(seed))
    sd = {}
    for key, padded, nd, flt in zip(keys, shapes, ndims, is_float, strict=True):
        key, shape = str(key), tuple(int(s) for s in padded[: int(nd)])
        if not flt:
            sd[key] = torch.zeros(shape, dtype=torch.long)  # num_batches_tracked stays 0
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) > 1:
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
    return sd


@pytest.fixture(scope="module")
def golden(golden_npz):
    return golden_npz("deco_forward")


@pytest.fixture(scope="module")
def official_state(golden):
    sd = official_fill(golden["state_dict_keys"], golden["state_dict_shapes"], golden["state_dict_ndim"],
                       golden["state_dict_is_float"], golden["fill_seed"])
    floats = [v for v in sd.values() if v.is_floating_point()]
    total = sum(float(v.double().abs().sum()) for v in floats)
    assert total == pytest.approx(float(golden["checksum_sum_abs_all_float_params"]), rel=1e-9), "fill differs"
    first = golden["checksum_first_float_param_first10"]
    np.testing.assert_array_equal(floats[0].flatten()[: len(first)].numpy(), first)
    return sd


@pytest.fixture(scope="module")
def ours(official_state):
    """Our DECO, sized from the official tensors, with the converted weights (strict load), in eval mode."""
    kwargs = official_deco_kwargs(official_state)
    assert kwargs["backbone"]["model"].startswith("hrnet")
    # built on the meta device (no random init to pay for), then every tensor assigned from the file
    with hub.pretrained_disabled(), torch.device("meta"):
        model = registry.build("system", {"name": "deco", **kwargs, "shared_cross_attn": True, "decoder_upsample": 2,
                                          "optim": {"name": "adam"}, "metrics": []})
    model.load_state_dict(convert_official_deco({"deco": official_state}), strict=True, assign=True)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    return model.eval()


@pytest.fixture(scope="module")
def outputs(golden, ours):
    """Our forward on the stored image; the pooled tokens entering the cross attention are kept as well."""
    tokens = {}
    hook = ours.cross_att.register_forward_hook(lambda mod, args, out: tokens.update(sem=args[0], part=args[1]))
    try:
        with torch.no_grad():
            out = ours(torch.from_numpy(golden["image"]))
    finally:
        hook.remove()
    return {**out, **{f"token_{k}": v for k, v in tokens.items()}}


def test_contact_matches_official(golden, outputs):
    got, want = outputs["contact"].numpy(), golden["contact"]
    assert got.shape == want.shape
    err = float(np.abs(got - want).max())
    assert err <= 1e-5, f"contact max abs error {err:.3g} > 1e-5"


@pytest.mark.parametrize("ours_key, key", [("scene_logits", "sem_mask_pred"), ("part_logits", "part_mask_pred")])
def test_masks_match_official(golden, outputs, ours_key, key):
    # ours returns logits; the release ends its decoders in a channel softmax
    got, want = torch.softmax(outputs[ours_key], dim=1).numpy(), golden[key]
    assert got.shape == want.shape
    err = float(np.abs(got - want).max())
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    # the fill gives logits of +-1e4, so float32 rounding alone moves near-tied softmax values by ~1e-3
    assert err <= 1e-4 or agree >= 0.999, f"{key}: max abs error {err:.3g}, argmax agreement {agree:.5f}"


def test_release_quirks_matter(golden, official_state, ours, outputs):
    """The golden file sees the release's quirk: its Cross_Att uses cross_attn_1 both ways (ours by default);
    the paper's two blocks (cross_attn_2 for the second direction, also in the file) give another contact."""
    from zoo.models.heads.deco import ChannelAttention

    sem, part = outputs["token_sem"], outputs["token_part"]
    conv = convert_official_deco({"deco": official_state}, shared_cross_attn=False)
    second = ChannelAttention(sem.shape[-1])
    second.load_state_dict({k.removeprefix("cross_att.cross_attn_2."): v for k, v in conv.items()
                            if k.startswith("cross_att.cross_attn_2.")})
    ca = ours.cross_att
    with torch.no_grad():
        shared = torch.sigmoid(ours.classif(ca.layer_norm(ca.cross_attn_1(sem, part, part) * ca.cross_attn_1(part, sem, sem))))
        paper = torch.sigmoid(ours.classif(ca.layer_norm(ca.cross_attn_1(sem, part, part) * second(part, sem, sem))))
    torch.testing.assert_close(shared, outputs["contact"], rtol=0, atol=1e-6)
    assert float((paper - torch.from_numpy(golden["contact"])).abs().max()) > 1e-3
