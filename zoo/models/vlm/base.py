"""The ``vlm`` kind's shared machinery: one interface over transformers' vision-language models.

:class:`BaseVLM` holds a Hugging Face model, its tokenizer and its processor; a family subclass
(:mod:`zoo.models.vlm.llava`, :mod:`zoo.models.vlm.qwen2_vl`) says which transformers class it
loads, owns the chat text around a prompt (``prompt_text``) and the image-token handling
(``family_inputs``), and knows how to write a tiny model directory of the same classes
(``write_tiny``, :mod:`zoo.models.vlm.tiny`).

Contact tokens (InteractVLM): ``tokens`` (default ``[HCON]``, ``[OCON]``) are added as special
tokens and the embeddings resized (:meth:`BaseVLM.add_tokens`); the contact state of a token is
the language model's *last hidden state at the position whose input is that token* (as LISA /
InteractVLM take it), which :class:`zoo.models.vlm.projection.ContactProjection` maps to 256-d.

Training (InteractVLM): ``lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}``
wraps the model with peft (``get_peft_model``), the LoRA layers restricted to the *language model*
by a regular expression (CLIP's vision tower also has q_proj / v_proj); the whole ``embed_tokens``
and ``lm_head`` matrices are trainable (not only the rows of the new tokens); the vision tower and
projector are frozen unless ``train_vision`` (InteractVLM: frozen). Adapters save the peft way
(:meth:`save_adapters`: ``PeftModel.save_pretrained`` with the embedding layers) and load with
:meth:`load_adapters` (``set_peft_model_state_dict``).
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from zoo.core.interfaces import VLM

__all__ = ["BaseVLM", "Generation", "DEFAULT_TOKENS", "LORA_DEFAULTS", "IGNORE_INDEX", "model_dir_digest",
           "answer_logprob"]

DEFAULT_TOKENS = ("[HCON]", "[OCON]")
LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
IGNORE_INDEX = -100
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


@dataclass
class Generation:
    """One generated answer (:meth:`BaseVLM.generate_answers`)."""

    text: str
    states: torch.Tensor
    closed: bool
    tokens: list[int] = field(default_factory=list)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def model_dir_digest(path: str | os.PathLike) -> str:
    """sha256 over a model directory's files (config, weights, tokenizer and processor files: name and
    content, sorted by name; hidden files skipped). Cached under ``$ZOO_HOME/hashes`` by each file's size
    and modification time, so a 14 GB directory is read once."""
    import hashlib
    import json

    from zoo.core.atomic import atomic_write_text, sha256_file
    from zoo.core.paths import cache_dir

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                   p.relative_to(root).parts) and p.suffix in WEIGHT_SUFFIXES)
    cache_file = cache_dir("hashes") / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24] + ".json")
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    h = hashlib.sha256()
    fresh = {}
    for p in files:
        st = p.stat()
        rel = p.relative_to(root).as_posix()
        key = f"{rel}:{st.st_size}:{st.st_mtime_ns}"
        digest = cache.get(key) or sha256_file(p)
        fresh[key] = digest
        h.update(f"{rel}\0{digest}\n".encode())
    if fresh != cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file, json.dumps(fresh, sort_keys=True))
    return h.hexdigest()


class BaseVLM(VLM, L.LightningModule):
    """A transformers vision-language model behind the ``vlm`` interface (subclassed per family).

    Args:
        path: a local Hugging Face model directory (config, weights, tokenizer and processor files);
            ignored with ``variant: tiny``.
        variant: ``full`` (load ``path``) or ``tiny`` (the same classes at CPU size, written offline
            with random weights and cached under ``$ZOO_HOME/vlm/``; see ``tiny``).
        tokens: the contact tokens added as special tokens (their ids: ``self.token_ids``).
        load_in: ``4bit`` / ``8bit`` quantised loading through bitsandbytes, or None.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` (peft), or None for no adapters
            (then the whole model keeps ``requires_grad`` as loaded, the vision part per ``train_vision``).
        train_vision: whether the vision tower and projector train (InteractVLM: False).
        tiny: overrides of the family's tiny sizes (:data:`TINY_DEFAULTS` of the family module).
        dtype: torch dtype name of the loaded weights (``float32``, ``bfloat16``, ...); None = float32.
        seed: seed of the tiny model's random weights.
    """

    family = "base"
    model_class_name = ""
    source_hint = ""
    tiny_defaults: dict[str, Any] = {}
    answer_prefix = " "  # text between the prompt's end and the answer (tokenised with the answer)

    def __init__(self, path: str | None = None, variant: Literal["full", "tiny"] = "full",
                 tokens: list[str] | None = None, load_in: Literal["4bit", "8bit"] | None = None, lora: dict | None = None, train_vision: bool = False,
                 tiny: dict | None = None, dtype: str | None = None, seed: int = 0) -> None:
        super().__init__()
        if variant not in ("full", "tiny"):
            raise ValueError(f"{type(self).__name__}: variant must be full or tiny, got {variant!r}")
        if load_in not in (None, "4bit", "8bit"):
            raise ValueError(f"{type(self).__name__}: load_in must be 4bit, 8bit or null, got {load_in!r}")
        self.save_hyperparameters()
        if variant == "tiny":
            from zoo.models.vlm.tiny import tiny_dir

            sizes = {**self.tiny_defaults, **(tiny or {})}
            unknown = sorted(set(tiny or {}) - set(self.tiny_defaults))
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown tiny size(s) {unknown}; expected some of "
                                 f"{sorted(self.tiny_defaults)}")
            model_dir = tiny_dir(self.family, sizes, seed, type(self).write_tiny)
        else:
            if not path:
                raise ValueError(f"{type(self).__name__}: variant 'full' needs path: a local Hugging Face model "
                                 f"directory ({self.source_hint})")
            model_dir = Path(os.path.expanduser(os.fspath(path)))
        self.check_dir(model_dir)
        self.model_dir = str(model_dir)
        self._load(model_dir, load_in, dtype)
        self.tokens = list(tokens) if tokens is not None else list(DEFAULT_TOKENS)
        self.token_ids = self.add_tokens(self.tokens) if self.tokens else []
        self._setup_training(lora, train_vision)
        self._record_base()

    def _record_base(self) -> None:
        """Record the tensors loaded from the model directory (as :func:`zoo.core.hub.load_weights` records a
        weights file): an export then stores only what trains and names the base model by path and hash."""
        from zoo.core.hub import _fingerprint

        state = self.state_dict()
        keys = sorted(k for k in state if "lora_" not in k)
        buffers = dict(self.named_buffers())
        self.__dict__["_zoo_weights"] = {
            "source": self.model_dir, "path": self.model_dir, "sha256": model_dir_digest(self.model_dir),
            "keys": keys, "buffers": {k: _fingerprint(buffers[k]) for k in keys if k in buffers}}

    def reload_frozen(self, ref: dict, trust: bool = False) -> None:
        """An export's reference to this model's frozen base: the base was loaded when this module was built
        (from ``path`` or the tiny directory); check it is the same directory content the export was trained
        on (the sha256 of :func:`model_dir_digest`), else raise naming both."""
        from zoo.core.hub import CheckpointError

        mine = self.__dict__["_zoo_weights"]["sha256"]
        if ref.get("sha256") and ref["sha256"] != mine:
            raise CheckpointError(f"{type(self).__name__}: the export was trained on the base model {ref.get('source')} "
                                  f"(sha256 {ref['sha256']}), but this one is {self.model_dir} (sha256 {mine}); "
                                  f"point vlm.path at the same base model directory")

    # ------------------------------------------------------------------ loading
    @classmethod
    def check_dir(cls, path: Path) -> None:
        """Raise FileNotFoundError naming ``path``, what is missing and where such a model comes from."""
        where = f"it comes from {cls.source_hint}; nothing is downloaded automatically"
        if not path.is_dir():
            raise FileNotFoundError(f"{cls.__name__}: model directory not found: {path} (expected a Hugging Face "
                                    f"{cls.model_class_name} directory with config.json, weights, tokenizer and "
                                    f"processor files; {where})")
        missing = []
        if not (path / "config.json").is_file():
            missing.append("config.json")
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            missing.append("tokenizer (" + " / ".join(TOKENIZER_FILES) + ")")
        if not any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
            missing.append("processor (preprocessor_config.json / processor_config.json)")
        if missing:
            raise FileNotFoundError(f"{cls.__name__}: {path} has no {' and no '.join(missing)} (expected a complete "
                                    f"Hugging Face {cls.model_class_name} directory; {where})")

    def _load(self, path: Path, load_in: str | None, dtype: str | None) -> None:
        import transformers

        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype:
            kwargs["dtype"] = getattr(torch, dtype)
        if load_in:
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ImportError(f"{type(self).__name__}: load_in={load_in} needs bitsandbytes, which is not "
                                  f"installed (pip install bitsandbytes; it needs a CUDA GPU), or set load_in: null")
            bits = {"4bit": {"load_in_4bit": True, "bnb_4bit_compute_dtype": kwargs.get("dtype", torch.bfloat16)},
                    "8bit": {"load_in_8bit": True}}[load_in]
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(**bits)
        cls = getattr(transformers, self.model_class_name)
        self.processor = transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        self.tokenizer = self.processor.tokenizer
        self.model = cls.from_pretrained(str(path), **kwargs)

    # ------------------------------------------------------------------ family hooks
    @staticmethod
    def write_tiny(out: Path, sizes: dict, seed: int) -> None:
        """Write a tiny model directory (config, random weights, tokenizer, processor) to ``out``."""
        raise NotImplementedError

    def prompt_text(self, prompt: str) -> str:
        """The chat text of a user turn with one image, up to where the assistant's answer starts."""
        raise NotImplementedError

    def answer_suffix(self) -> list[int]:
        """Token ids closing an answer (the family's end-of-turn)."""
        return [self.tokenizer.eos_token_id]

    def family_inputs(self, enc: dict, input_ids: torch.Tensor) -> dict:
        """Family extras beside input_ids / attention_mask / pixel_values (e.g. Qwen2-VL's image_grid_thw)."""
        return {}

    # ------------------------------------------------------------------ tokens
    def add_tokens(self, tokens: list[str]) -> list[int]:
        """Add ``tokens`` as special tokens (already present ones keep their ids), resize the input and output
        embeddings to the tokenizer's length, and return the tokens' ids in order."""
        self.tokenizer.add_tokens(list(tokens), special_tokens=True)  # never split, never lower-cased
        n = len(self.tokenizer)
        if self.model.get_input_embeddings().weight.shape[0] < n:
            self.model.resize_token_embeddings(n, mean_resizing=False)
        ids = self.tokenizer.convert_tokens_to_ids(list(tokens))
        unk = self.tokenizer.unk_token_id
        if any(i is None or (unk is not None and i == unk) for i in ids):
            raise RuntimeError(f"{type(self).__name__}: could not add tokens {tokens} (got ids {ids})")
        return list(ids)

    # ------------------------------------------------------------------ training setup
    def language_model_pattern(self) -> str:
        """A regular expression over module names matching the language model's modules."""
        return r".*language_model\..*"

    def vision_modules(self) -> list[torch.nn.Module]:
        """The vision tower and the projector (frozen unless train_vision)."""
        raise NotImplementedError

    def _setup_training(self, lora: dict | None, train_vision: bool) -> None:
        if lora is not None:
            import peft

            cfg = {**LORA_DEFAULTS, **dict(lora)}
            unknown = sorted(set(cfg) - set(LORA_DEFAULTS))
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown lora setting(s) {unknown}; expected some of "
                                 f"{sorted(LORA_DEFAULTS)}")
            names = "|".join(re.escape(t) for t in cfg["target_modules"])
            target = rf"{self.language_model_pattern()}\.({names})$"
            config = peft.LoraConfig(r=int(cfg["r"]), lora_alpha=int(cfg["alpha"]), lora_dropout=float(cfg["dropout"]),
                                     target_modules=target, bias="none")
            self.model = peft.get_peft_model(self.model, config)
            for p in self.hf_model().get_input_embeddings().parameters():
                p.requires_grad_(True)
            for p in self.hf_model().get_output_embeddings().parameters():
                p.requires_grad_(True)
        for mod in self.vision_modules():
            for p in mod.parameters():
                p.requires_grad_(bool(train_vision))

    def hf_model(self) -> torch.nn.Module:
        """The transformers model (under the peft wrapper when LoRA is on)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that train (LoRA, embed_tokens, lm_head, vision with train_vision), by state key."""
        train = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict(keep_vars=True).items() if k in train}

    def save_adapters(self, out: str | os.PathLike) -> Path:
        """Save the LoRA adapters and the resized embedding layers the peft way, plus the tokenizer (with its
        added tokens) beside them."""
        if not hasattr(self.model, "save_pretrained") or not hasattr(self.model, "peft_config"):
            raise RuntimeError(f"{type(self).__name__}: no LoRA adapters to save (built with lora: null)")
        out = Path(out)
        self.model.save_pretrained(str(out), save_embedding_layers=True)
        self.tokenizer.save_pretrained(str(out))
        return out

    def load_adapters(self, path: str | os.PathLike) -> None:
        """Load adapters written by :meth:`save_adapters` into this (LoRA-wrapped) model."""
        import peft

        self.check_saved_tokens(path)
        weights = peft.utils.load_peft_weights(str(path), device="cpu")
        result = peft.set_peft_model_state_dict(self.model, weights)
        bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if bad:
            raise RuntimeError(f"{type(self).__name__}: adapters in {path} do not fit: {bad[:3]}")

    def check_saved_tokens(self, path: str | os.PathLike) -> None:
        """Raise when the tokenizer saved in ``path`` (adapters / a merged model) gives the contact tokens
        other ids than this model's, or lacks them (the embeddings' rows would mean other tokens)."""
        from transformers import AutoTokenizer

        p = Path(path)
        if not any((p / f).is_file() for f in TOKENIZER_FILES):
            return
        saved = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        vocab = saved.get_vocab()
        theirs = {t: vocab.get(t) for t in self.tokens}
        mine = dict(zip(self.tokens, self.token_ids, strict=True))
        added = sorted(t for t in saved.get_added_vocab() if t.startswith("[") and t not in mine)
        if theirs != mine or added:
            raise ValueError(f"{type(self).__name__}: {p} was saved with contact tokens "
                             f"{ {t: i for t, i in theirs.items() if i is not None} }{f' and {added}' if added else ''}, "
                             f"but the recipe's vlm.tokens give {mine}; use the tokens it was trained with "
                             f"(system.vlm.tokens=[...])")

    # ------------------------------------------------------------------ inputs
    @property
    def image_token_id(self) -> int:
        return int(self.hf_model().config.image_token_id)

    def _encode(self, image: Any, prompt: str) -> dict:
        return self.processor(text=[self.prompt_text(prompt)], images=[_to_pil(image)], return_tensors="pt")

    def build_inputs(self, images: list, prompts: list[str], answers: list[str] | None = None) -> dict:
        """Model inputs for a batch of (image, prompt[, answer]): input_ids, attention_mask (B, T),
        pixel_values, family extras, and labels (B, T), -100 everywhere but the answer tokens (and the
        end-of-turn after them). Without answers the batch is left-padded (for generation) and has no labels;
        with answers it is right-padded. ``images``: PIL images, uint8 HxWx3 arrays or (3, H, W) float tensors
        in [0, 1]."""
        if len(images) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
            raise ValueError(f"{type(self).__name__}.build_inputs: got {len(images)} images, {len(prompts)} prompts"
                             f"{'' if answers is None else f', {len(answers)} answers'}; expected one each per sample")
        rows, labels, encs = [], [], []
        for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            enc = self._encode(image, prompt)
            ids = enc["input_ids"][0].tolist()
            lab = [IGNORE_INDEX] * len(ids)
            if answers is not None:
                ans = self.answer_ids(prompt, answers[i]) + self.answer_suffix()
                ids, lab = ids + ans, lab + ans
            rows.append(ids)
            labels.append(lab)
            encs.append(enc)
        T = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        left = answers is None
        input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
        attn = torch.zeros((len(rows), T), dtype=torch.long)
        lab_t = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
        for b, (r, lab) in enumerate(zip(rows, labels, strict=True)):
            sl = slice(T - len(r), T) if left else slice(0, len(r))
            input_ids[b, sl] = torch.tensor(r)
            attn[b, sl] = 1
            lab_t[b, sl] = torch.tensor(lab)
        out = {"input_ids": input_ids, "attention_mask": attn,
               "pixel_values": torch.cat([e["pixel_values"] for e in encs])}
        out.update(self.family_inputs({k: [e[k] for e in encs] for k in encs[0]}, input_ids))
        if answers is not None:
            out["labels"] = lab_t
        return out

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        """The answer's token ids as the tokenizer splits them *after* the prompt's chat text (so a
        SentencePiece tokenizer's word-boundary handling is the one of the whole conversation); the
        answer tokenised on its own when the prompt's ids are not a prefix of the joint ids."""
        text = self.prompt_text(prompt)
        alone = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        joint = self.tokenizer(text + self.answer_prefix + answer.strip(), add_special_tokens=False)["input_ids"]
        if len(joint) > len(alone) and joint[:len(alone)] == alone:
            return list(joint[len(alone):])
        return list(self.tokenizer(self.answer_prefix + answer.strip(), add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ interface
    def _model_inputs(self, inputs: dict) -> dict:
        dev = next(self.model.parameters()).device
        out = {}
        for k, v in inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(dev)
                if k == "pixel_values" and v.is_floating_point():
                    v = v.to(self.hf_model().dtype)
            out[k] = v
        return out

    def forward(self, inputs: dict) -> dict:
        """{"logits": (B, T, vocab), "loss": mean cross-entropy over the answer labels or None,
        "hidden": (B, T, d) the language model's last hidden state} for inputs from :meth:`build_inputs`."""
        out = self.model(**self._model_inputs(inputs), output_hidden_states=True, return_dict=True)
        return {"logits": out.logits, "loss": out.loss, "hidden": out.hidden_states[-1]}

    @staticmethod
    def hidden_at(hidden: torch.Tensor, input_ids: torch.Tensor, token_ids: Any) -> list[torch.Tensor]:
        """Per sample b, ``hidden[b, positions]`` (n_b, d) at every position whose input id is one of
        ``token_ids`` (an int or a list), in sequence order; (0, d) where there is none."""
        ids = torch.as_tensor([token_ids] if isinstance(token_ids, int) else list(token_ids),
                              device=input_ids.device, dtype=input_ids.dtype)
        if hidden.shape[:2] != input_ids.shape:
            raise ValueError(f"hidden_at: hidden {tuple(hidden.shape)} and input_ids {tuple(input_ids.shape)} "
                             f"must agree on (B, T)")
        hit = torch.isin(input_ids, ids)
        return [hidden[b][hit[b]] for b in range(hidden.shape[0])]

    @torch.no_grad()
    def generate(self, images: list, prompts: list[str], max_new_tokens: int = 32,
                 token_ids: list[int] | None = None) -> tuple[list[str], list[torch.Tensor]]:
        """Greedy answers and their contact states: (texts, states), see :meth:`generate_answers`."""
        gens = self.generate_answers(images, prompts, max_new_tokens, token_ids)
        return [g.text for g in gens], [g.states for g in gens]

    @torch.no_grad()
    def generate_answers(self, images: list, prompts: list[str], max_new_tokens: int = 32,
                         token_ids: list[int] | None = None) -> list[Generation]:
        """Greedy answers, one :class:`Generation` per sample.

        ``text``: the generated text (contact tokens kept, padding and the end-of-turn dropped);
        ``states`` (n, d): the last hidden states at the contact tokens (``token_ids``, default
        ``self.token_ids``) the model generated, in order, (0, d) when it generated none; ``closed``:
        whether the answer ended with the end-of-turn within ``max_new_tokens``; ``tokens``: the
        generated ids. The states come from a teacher-forced forward pass over prompt + generated tokens
        (up to the first end-of-turn), one sample at a time without padding: the state at the position
        whose *input* is the contact token, the same state ``forward`` + ``hidden_at`` give in training.
        """
        token_ids = list(self.token_ids if token_ids is None else token_ids)
        inputs = self._model_inputs(self.build_inputs(images, prompts))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        stop = set(self.answer_suffix()) | {self.tokenizer.eos_token_id}
        seqs = self.model.generate(**inputs, max_new_tokens=int(max_new_tokens), do_sample=False,
                                   pad_token_id=pad, eos_token_id=sorted(i for i in stop if i is not None))
        T = inputs["input_ids"].shape[1]
        d = self.hf_model().config.get_text_config().hidden_size
        out: list[Generation] = []
        for b in range(len(prompts)):
            gen = seqs[b, T:].tolist()
            cut = next((i for i, t in enumerate(gen) if t in stop), None)
            closed = cut is not None
            gen = [t for t in gen[:cut if closed else len(gen)] if t != pad]
            text = self.tokenizer.decode(gen, skip_special_tokens=False).strip()
            if not any(t in token_ids for t in gen):
                out.append(Generation(text, torch.zeros(0, d, device=seqs.device), closed, gen))
                continue
            one = self.build_inputs([images[b]], [prompts[b]])
            n = one["input_ids"].shape[1]
            one["input_ids"] = torch.cat([one["input_ids"], torch.tensor([gen])], dim=1)
            one["attention_mask"] = torch.ones_like(one["input_ids"])
            one = self._refresh_extras(one)
            hidden = self.forward(one)["hidden"]
            h = hidden[0, n:][torch.isin(one["input_ids"][0, n:].to(hidden.device),
                                         torch.tensor(token_ids, device=hidden.device))]
            out.append(Generation(text, h, closed, gen))
        return out

    def _refresh_extras(self, inputs: dict) -> dict:
        """Recompute family extras that depend on input_ids after tokens were appended."""
        return inputs


def answer_logprob(vlm: Any, image: Any, question: str, answer: str = "yes") -> float:
    """The VLM's log-probability of ``answer`` (its labelled tokens, end of turn included) to ``question`` about
    ``image``: a forced-choice judge scores each candidate this way and takes the argmax."""
    import torch

    with torch.no_grad():
        inputs = vlm.build_inputs([image], [question], answers=[answer])
        logits = vlm(inputs)["logits"].float()
        labels = inputs["labels"].to(logits.device)
        # token t is predicted by the logits at t - 1; sum over the labelled (answer) positions
        logp = logits[:, :-1].log_softmax(-1)
        tgt = labels[:, 1:]
        mask = tgt != IGNORE_INDEX
        picked = logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
        return float((picked * mask).sum())


def _to_pil(image: Any):
    """A PIL RGB image from a PIL image, a uint8 (H, W, 3) array or a float (3, H, W) tensor in [0, 1]."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
        arr = (t.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        if arr.shape[-1] == 1:
            arr = arr.repeat(3, axis=-1)
        return Image.fromarray(arr)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")
