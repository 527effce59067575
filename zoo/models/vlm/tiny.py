"""Tiny vision-language model directories, written offline and cached.

A tiny configuration is the family's own transformers classes at CPU size with random weights,
saved with ``save_pretrained`` into a directory that then loads exactly like a downloaded model.
The tokenizer is built offline: a ``tokenizers`` WordLevel model over the words of InteractVLM-style
prompts and answers (body parts, objects, affordances), lower-cased and split on whitespace and
punctuation, wrapped as a ``PreTrainedTokenizerFast`` with the family's special tokens.

Directories are cached under ``$ZOO_HOME/vlm/<family>-tiny-<hash of sizes and seed>`` so tests and
demos build each once (written to a temporary folder and renamed into place).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from zoo.core.paths import cache_dir

__all__ = ["tiny_dir", "tiny_tokenizer", "WORDS", "TINY_FORMAT"]

TINY_FORMAT = 2  # bump when the written layout changes (part of the cache key)

BODY_PARTS = ("head", "neck", "chest", "back", "torso", "hips", "butt", "left", "right", "hand", "hands", "arm",
              "arms", "forearm", "upper", "lower", "leg", "legs", "thigh", "knee", "foot", "feet", "shoulder",
              "elbow", "wrist", "fingers", "palm", "heel", "toes", "ankle", "shin", "calf", "waist", "belly")
OBJECTS = ("chair", "cup", "bed", "bench", "bottle", "bag", "bicycle", "skateboard", "surfboard", "ball", "knife",
           "bowl", "table", "door", "laptop", "phone", "umbrella", "racket", "keyboard", "mug", "object", "human")
# DAMON's object names (COCO's 80 thing classes and "supporting" for floors and other supporting surfaces),
# PIAD's and LEMON's object classes, word by word: an object named in a question must not become <unk>.
DATASET_OBJECT_WORDS = tuple(dict.fromkeys("""
    person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop sign parking meter
    bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee
    skis snowboard sports ball kite baseball bat glove skateboard surfboard tennis racket bottle wine glass cup fork
    knife spoon bowl banana apple sandwich orange broccoli carrot hot dog pizza donut cake chair couch potted plant
    bed dining table toilet tv laptop mouse remote keyboard cell phone microwave oven toaster sink refrigerator book
    clock vase scissors teddy hair drier toothbrush supporting wall pole floor ground ' s
    bag dishwasher display door earphone faucet hat storagefurniture trashcan vase baseballbat guitar motorcycle
    mug scissors suitcase surfboard tennisracket umbrella keyboard pull
""".split()))
AFFORDANCES = ("grasp", "contain", "lift", "open", "lay", "sit", "support", "wrapgrasp", "pour", "move", "display",
               "push", "listen", "wear", "press", "cut", "stab")
TEMPLATE_WORDS = (
    "which parts of the body are in contact with the in this image ? what does person touch where is "
    "segment contact on and . , : a an is are it its object's affordance region for to be used image "
    "sure here answer user assistant system you helpful no none nothing yes with at by from this that "
    "body human person man woman touching holding sitting riding lying standing using 's the "
    "can you segment regions touches touch scene ground something where does would affords that part parts "
    "regions here ; on ground or any anything there"
).split()
WORDS = tuple(dict.fromkeys((*TEMPLATE_WORDS, *BODY_PARTS, *OBJECTS, *DATASET_OBJECT_WORDS, *AFFORDANCES)))


def tiny_tokenizer(special: list[str], unk: str, pad: str, bos: str | None, eos: str, extra: dict | None = None):
    """A PreTrainedTokenizerFast over :data:`WORDS` (WordLevel; lower-cased; whitespace + punctuation split)
    whose first ids are the ``special`` tokens (never lower-cased or split)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(special)}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    kw = {"unk_token": unk, "pad_token": pad, "eos_token": eos, **(extra or {})}
    if bos is not None:
        kw["bos_token"] = bos
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def _key(family: str, sizes: dict, seed: int) -> str:
    text = json.dumps({"family": family, "sizes": sizes, "seed": int(seed), "format": TINY_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tiny_dir(family: str, sizes: dict, seed: int, write: Callable[[Path, dict, int], None]) -> Path:
    """The cached tiny model directory of ``family`` at ``sizes`` (written by ``write(dir, sizes, seed)`` once)."""
    root = cache_dir("vlm")
    out = root / f"{family}-tiny-{_key(family, sizes, seed)}"
    if (out / "config.json").is_file() and (out / ".complete").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
    try:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            write(tmp, dict(sizes), int(seed))
        (tmp / ".complete").write_text(json.dumps({"family": family, "sizes": sizes, "seed": seed}))
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            if not (out / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
