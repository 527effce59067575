"""SAM prompt broadcasting over V views against the official InteractVLM path (tests/fixtures/golden/
sam_prompt_broadcast.npz, see its README section 7): the tiny prompt encoder + mask decoder is built from the
file's config_json with MVLocSAM's segment-anything modules, loaded strictly from the stored ``sd.*`` weights, and
decoded with the V gated tokens as one shared prompt sequence (prompt_mode=shared). Every input, size and
expected output is read from the file."""
from __future__ import annotations

import json

import pytest
import torch

from zoo.models.localizer.mvloc_sam import MVLocSAM, view_prompt_sequences

ATOL = 1e-5  # README section 7


@pytest.fixture(scope="module")
def golden(golden_npz):
    return golden_npz("sam_prompt_broadcast")


def _build(g) -> MVLocSAM:
    """MVLocSAM (tiny) whose prompt encoder and mask decoder have the file's sizes, weights loaded strictly."""
    cfg = json.loads(str(g["config_json"]))
    size = [int(s) for s in cfg["input_image_size"]]
    grid = [int(s) for s in cfg["image_embedding_size"]]
    assert size[0] == size[1] and grid[0] == grid[1] and size[0] % grid[0] == 0, cfg
    m = MVLocSAM(
        variant="tiny", image_size=size[0], tiny_patch=size[0] // grid[0], tiny_window=1, tiny_depth=1,
        tiny_embed_dim=16, tiny_heads=1, prompt_dim=int(cfg["transformer_dim"]),
        decoder={"depth": cfg["transformer_depth"], "num_heads": cfg["transformer_num_heads"],
                 "mlp_dim": cfg["transformer_mlp_dim"], "attention_downsample_rate": cfg["attention_downsample_rate"],
                 "num_multimask_outputs": cfg["num_multimask_outputs"], "iou_head_depth": cfg["iou_head_depth"],
                 "iou_head_hidden_dim": cfg["iou_head_hidden_dim"], "mask_in_chans": cfg["mask_in_chans"]},
    ).eval()
    keys = [str(k) for k in g["state_dict_keys"]]
    for part in ("prompt_encoder", "mask_decoder"):
        state = {k[len(part) + 1:]: torch.from_numpy(g[f"sd.{k}"]) for k in keys if k.startswith(part + ".")}
        getattr(m, part).load_state_dict(state, strict=True)
    assert cfg["multimask_output"] is False
    return m


def test_shared_prompt_sequence_reproduces_official_masks_and_iou(golden):
    g = golden
    m = _build(g)
    emb = torch.from_numpy(g["image_embeddings"])
    V = emb.shape[0]
    assert V == json.loads(str(g["config_json"]))["num_views"]
    token, gates = torch.from_numpy(g["token"]), torch.from_numpy(g["gates"])
    per_view = token[:, None, :] * gates[None]  # (1, V, C): the token repeated to V views, times the V gates
    torch.testing.assert_close(per_view, torch.from_numpy(g["sparse_embeddings"]), rtol=0, atol=1e-6)
    with torch.no_grad():
        h, w = m.embedding_size
        dense = m.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        torch.testing.assert_close(dense, torch.from_numpy(g["dense_embeddings"]), rtol=0, atol=1e-6)
        torch.testing.assert_close(m.prompt_encoder.get_dense_pe(), torch.from_numpy(g["image_pe"]), rtol=0, atol=1e-5)
        masks, iou = m.decode(emb, view_prompt_sequences(per_view, "shared"), return_iou=True)
        own = m.decode(emb, view_prompt_sequences(per_view, "own"))
    want_masks, want_iou = torch.from_numpy(g["low_res_masks"]), torch.from_numpy(g["iou_predictions"])
    assert masks.shape == want_masks.shape and iou.shape == want_iou.shape
    err_masks = (masks - want_masks).abs().max().item()
    err_iou = (iou - want_iou).abs().max().item()
    assert err_masks <= ATOL and err_iou <= ATOL, (err_masks, err_iou)
    # Negative control: each view decoded with its own gated token only is not the official path.
    control = torch.from_numpy(g["negative_control_masks_own_token_only"])
    assert (own - control).abs().max().item() <= ATOL  # we reproduce the control when asked for it ...
    assert (masks - control).abs().max().item() > 100 * ATOL  # ... and the default differs from it
    assert (own - want_masks).abs().max().item() > 100 * ATOL
