"""Merge a trained InteractVLM export's LoRA adapters into its base VLM and write a standalone model.

An export of a system with a VLM (``zoo.core.hub.export``) holds only what trained (LoRA, the resized
``embed_tokens`` / ``lm_head``, projection, lifters, mask decoders) and names the base model by path and
hash. ``merge`` loads it, folds the adapters into the weights (peft ``merge_and_unload``) and writes:

* ``OUT/vlm/``: a plain transformers directory of the family's class (config, weights, tokenizer with the
  contact tokens, processor) that loads without peft or the zoo;
* ``OUT/system/``: a zoo export of the same system whose VLM is that directory (``lora: null``), the VLM
  referenced by path and hash, everything else stored, so ``zoo.load(OUT/system)`` needs neither the base
  model nor the adapters.

    python -m zoo.models.vlm.merge EXPORT_DIR OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

__all__ = ["merge_export"]


def merge_export(export_dir: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write ``out/vlm`` (merged transformers model) and ``out/system`` (a zoo export using it); returns both."""
    import os
    import shutil
    import tempfile

    from zoo.core import hub, registry

    src = Path(export_dir)
    system = hub.load(src)
    vlm = getattr(system, "vlm", None)
    if vlm is None:
        raise ValueError(f"{src}: {type(system).__name__} has no 'vlm' part to merge")
    out = Path(out)
    vlm_dir = out / "vlm"
    model = vlm.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if vlm_dir.exists():
        raise FileExistsError(f"merge: {vlm_dir} exists; choose a new output folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".vlm-", dir=out))  # written whole, then renamed into place
    try:
        model.save_pretrained(str(tmp))
        vlm.processor.save_pretrained(str(tmp))
        os.replace(tmp, vlm_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    hp = dict(system.hparams)
    hp["vlm"] = {**dict(hp["vlm"]), "variant": "full", "path": str(vlm_dir.resolve()), "lora": None}
    hp.pop("weights", None)
    merged = registry.build("system", {"name": system._zoo_name, **hp}, materialize=False)
    with hub.pretrained_disabled():
        merged.configure_model()
    state = {k: v for k, v in system.state_dict().items() if not k.startswith("vlm.")}
    missing, unexpected = merged.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("vlm.")]
    if bad or unexpected:
        raise RuntimeError(f"merge: the rebuilt system does not fit {src}: missing {bad[:3]}, unexpected {unexpected[:3]}")
    merged.vlm.requires_grad_(False)
    with torch.no_grad():
        merged.eval()
    sys_dir = hub.export(merged, out / "system", extra={"merged_from": str(src.resolve())})
    return vlm_dir, sys_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", help="an export directory of a system with a VLM (runs/.../export)")
    ap.add_argument("out", help="output folder (vlm/ and system/ are written there)")
    args = ap.parse_args(argv)
    try:
        vlm_dir, sys_dir = merge_export(args.export, args.out)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"merged model: {vlm_dir}\nstandalone system export: {sys_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
