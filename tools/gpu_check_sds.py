#!/usr/bin/env python
"""DreamFusion's GPU check: ``dreamfusion/sd``-shaped training steps with random weights of Stable Diffusion's
size, step time and peak memory.

    python tools/gpu_check_sds.py [--device cuda] [--dtype float16|bfloat16] [--size full|small] [--steps 10]
                                  [--model-dir DIR]

Writes (once) a diffusers directory with random weights in SD-1.5's shapes (UNet 320/640/1280/1280 with
cross-attention 768, the 4-channel VAE 128/256/512/512, a 12-layer 768-wide CLIP text encoder; tokenizer and
DDPM scheduler from the tiny writer), then runs the ``dreamfusion/sd`` recipe's system (hash_nerf in a radius-2
cube, 512 samples per ray, learned background, 64² renders upsampled to 512² for the VAE, guidance scale 100)
with that directory for ``--steps`` training steps under autocast, and prints seconds per step (median after two
warm-up steps) and the peak memory (CUDA: ``torch.cuda.max_memory_allocated``). ``--size small`` shrinks every
width and the render (for a CPU self-check of the script; its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import _cli  # noqa: F401

SD15 = {"unet": {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "cross_attention_dim": 768,
                 "attention_head_dim": 8, "norm_num_groups": 32, "sample_size": 64},
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}}
SMALL = {"unet": {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "cross_attention_dim": 64,
                  "attention_head_dim": 8, "norm_num_groups": 16, "sample_size": 8},
         "vae": {"block_out_channels": (16, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8},
         "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}}


def write_random_sd(out: Path, sizes: dict) -> Path:
    """A diffusers SD directory with random weights at ``sizes`` (tokenizer and scheduler from the tiny writer)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from zoo.models.guidance.tiny import tiny_model_dir

    if (out / ".complete").is_file():
        return out
    tiny = tiny_model_dir("sd")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in ("tokenizer", "scheduler"):
        shutil.copytree(tiny / part, tmp / part)
    vocab = json.loads((tiny / "text_encoder" / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    t = sizes["text"]
    CLIPTextModel(CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1, **t)).save_pretrained(tmp / "text_encoder")
    u = sizes["unet"]
    UNet2DConditionModel(in_channels=4, out_channels=4, **u).save_pretrained(tmp / "unet")
    v = sizes["vae"]
    n = len(v["block_out_channels"])
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * n,
                  up_block_types=("UpDecoderBlock2D",) * n, scaling_factor=0.18215, **v).save_pretrained(tmp / "vae")
    (tmp / ".complete").write_text(json.dumps(sizes, default=list))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the check; print one JSON line of results (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model-dir", default=None)
    args = ap.parse_args(argv)
    import torch

    from zoo.core import recipe as R
    from zoo.core import registry
    from zoo.core.paths import cache_dir

    full = args.size == "full"
    model_dir = Path(args.model_dir or cache_dir("guidance") / f"sd-random-{args.size}")
    t0 = time.perf_counter()
    write_random_sd(model_dir, SD15 if full else SMALL)
    write_s = time.perf_counter() - t0
    over = [f"system.guidance.path={model_dir}", f"system.guidance.dtype={args.dtype}", "system.metrics=[]"]
    if not full:
        over += ["system.field.levels=4", "system.field.log2_table=12", "system.field.max_resolution=64",
                 "system.renderer.num_samples=16", "system.guidance.resolution=64", "data.height=16", "data.width=16"]
    rec = R.load("dreamfusion/sd", over)
    system = registry.build("system", rec["system"]).to(args.device)
    dm = registry.build("datamodule", rec["data"])
    dm.setup("fit")
    opt = system.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    system.train()
    dev = torch.device(args.device)
    amp = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp is torch.float16 and dev.type == "cuda")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    it = iter(dm.train_dataloader())
    for k in range(args.steps + 2):
        batch = {key: (v.to(dev) if isinstance(v, torch.Tensor) else v) for key, v in next(it).items()}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            losses, _ = system.step(batch, "train")
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if k >= 2:
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    res = {"size": args.size, "device": str(dev), "dtype": args.dtype, "steps": args.steps,
           "s_per_step_median": statistics.median(times), "peak_memory_gib": peak,
           "unet_params_m": sum(p.numel() for p in system.guidance.unet.parameters()) / 1e6,
           "model_write_s": write_s, "last_loss": float(losses["loss"].detach()), "last_sds": float(losses["sds"])}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
