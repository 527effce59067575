"""The checkpoint store: export components, load them back, load pretrained weights, verify files.

An exported component is a directory with two files::

    model.safetensors   the trained tensors (contiguous CPU tensors; tied tensors stored once)
    config.yaml         {format, kind, name, hparams, zoo_version, weights, sha256, frozen, extra}

Build first, load second. Components whose weights may come from a file take a ``weights``
argument (a registry checkpoint ``zoo://name`` / ``name``, or a local path) and inherit
:class:`Pretrained`; :func:`load_weights` is the one path that reads such a file (hash-checked,
through the component's optional ``convert_checkpoint`` key converter) into a built module.
Frozen tensors that came from such a file are not copied into an export: ``config.yaml`` lists
them under ``frozen`` with the source and its sha256, and :func:`load` fetches them from the
store again (``export(..., self_contained=True)`` writes everything instead).

``load`` accepts an export directory (or its model.safetensors), a Lightning ``.ckpt`` written by
the run loop (``checkpoint["zoo"] = {"kind", "name"}`` plus Lightning's ``hyper_parameters`` and
``state_dict``), or the name of a pretrained checkpoint listed under ``checkpoints:`` in
registry.yaml. Named checkpoints live in ``$ZOO_HOME/checkpoints/<name>/<file>`` (ZOO_HOME
defaults to ``~/.cache/hoi-zoo``). Nothing is ever downloaded: a missing file raises
FileNotFoundError saying what it is, where it is expected, where it comes from and its licence.

Every file is checked before it is deserialised: the safetensors header must be well formed and
cover the file exactly (this catches truncated copies), and its SHA-256 must match the hash
recorded in config.yaml and, for named checkpoints, in registry.yaml. ``torch.load`` runs with
``weights_only=True``: a file that holds other objects is refused (naming the object) unless the caller
passes ``trust=True``, which unpickles it in full after a warning (that runs any code the file contains).

torch and safetensors are imported lazily, so ``verify`` of a safetensors file and the catalog
stay light.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from zoo.core import registry
from zoo.core.atomic import atomic_open, atomic_path, sha256_file
from zoo.core.paths import cache_root

__all__ = ["export", "load", "load_weights", "Pretrained", "pretrained_disabled", "pretrained_skipped", "verify",
           "resolve", "zoo_home",
           "checkpoint_path", "CheckpointError"]

FORMAT = "hoi-zoo/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
_ALIAS_KEY = "zoo_aliases"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt, has the wrong hash, or does not match its component."""


def zoo_home() -> Path:
    """The local cache root: $ZOO_HOME, else ~/.cache/hoi-zoo (zoo.core.paths.cache_root)."""
    return cache_root()


def _zoo_version() -> str:
    from zoo.core import __version__

    return str(__version__)


# --------------------------------------------------------------------------- export


def _plain(value: Any, where: str) -> Any:
    """Turn hparams into YAML-safe builtins; anything else is an error naming the key."""
    if hasattr(value, "_metadata") and hasattr(value, "_content"):  # omegaconf containers
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"cannot export hyper-parameter {where}: {type(value).__name__} is not a plain "
                    f"YAML value (use int, float, bool, str, None, lists and dicts of them)")


def _component_hparams(component: Any) -> dict[str, Any]:
    """The constructor arguments that rebuild ``component``: its saved hyper-parameters, else the
    arguments ``@register`` recorded when it was built."""
    hp = getattr(component, "hparams", None)
    if hp is not None and len(hp) > 0:
        raw = dict(hp)
    elif getattr(component, "_zoo_config", None) is not None:
        raw = dict(component._zoo_config)
    else:
        required = [p.name for p in inspect.signature(type(component).__init__).parameters.values()
                    if p.name != "self" and p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise ValueError(f"cannot export {type(component).__qualname__}: it records no constructor arguments "
                             f"but needs {', '.join(required)}; register the class (@register records them) or "
                             f"call self.save_hyperparameters() in __init__")
        raw = {}
    return _plain(raw, "hparams")


def _dedup_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """CPU contiguous tensors with tied entries stored once; returns (tensors, {alias: kept_key})."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: dict[int, int] = {}
    for key in sorted(state):
        t = state[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"cannot export state_dict entry '{key}': expected a tensor, got {type(t).__name__}")
        t = t.detach()
        if t.numel() > 0:
            ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                     tuple(t.stride()), t.dtype)
            if ident in seen:  # exactly the same tensor under two names (weight tying)
                aliases[key] = seen[ident]
                continue
            seen[ident] = key
            ptr = t.untyped_storage().data_ptr()
            storages[ptr] = storages.get(ptr, 0) + 1
        tensors[key] = t
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        shared = t.numel() > 0 and storages[t.untyped_storage().data_ptr()] > 1
        t = t.to("cpu").contiguous()
        # Distinct views of one storage would make safetensors refuse to save;
        # give each its own memory (loading copies values anyway).
        out[key] = t.clone() if shared else t
    return out, aliases


def _fingerprint(t: Any) -> str:
    """A digest of a tensor's bytes (to tell whether a loaded buffer changed since)."""
    import hashlib

    import torch

    t = t.detach().cpu().contiguous()
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest() + f":{t.dtype}:{tuple(t.shape)}"


def _is_frozen(module: Any, key: str, record: dict) -> bool:
    """Whether tensor ``key`` of ``module`` still holds what ``record``'s file gave it and never trains:
    a parameter with requires_grad False, or a buffer whose value is unchanged since it was loaded."""
    params = dict(module.named_parameters())
    if key in params:
        return not params[key].requires_grad
    buffers = dict(module.named_buffers())
    if key not in buffers:
        return False
    return record.get("buffers", {}).get(key) == _fingerprint(buffers[key])


def frozen_references(component: Any) -> list[dict[str, Any]]:
    """The frozen parts of ``component`` that came from a weights file: [{module, component, source,
    sha256, keys}], outermost first; each key is claimed by the outermost part that loaded it."""
    refs, claimed = [], set()
    mods = sorted(component.named_modules(), key=lambda pm: (pm[0].count(".") + bool(pm[0]), pm[0]))
    for prefix, mod in mods:
        rec = mod.__dict__.get("_zoo_weights")
        if not rec:
            continue
        pre = f"{prefix}." if prefix else ""
        keys = [k for k in rec["keys"] if pre + k not in claimed and _is_frozen(mod, k, rec)]
        if not keys:
            continue
        claimed.update(pre + k for k in keys)
        refs.append({"module": prefix, "component": f"{getattr(mod, '_zoo_kind', '?')}/{getattr(mod, '_zoo_name', '?')}",
                     "source": rec["source"], "sha256": rec["sha256"], "keys": keys})
    return refs


def export(component: Any, out_dir: str | os.PathLike, *, kind: str | None = None, name: str | None = None,
           extra: dict | None = None, self_contained: bool = False) -> Path:
    """Write ``component`` to ``out_dir`` as model.safetensors + config.yaml (atomically) and return the dir.

    ``kind``/``name`` default to the ``_zoo_kind``/``_zoo_name`` that ``@register`` put on the
    class; ``hparams`` are the constructor arguments (saved hyper-parameters or the ones recorded
    at registration); ``extra`` is free-form YAML-safe metadata (metrics, recipe, notes). Frozen
    tensors loaded from a weights file are referenced by source and sha256 instead of copied,
    unless ``self_contained``.
    """
    import yaml
    from safetensors.torch import save_file

    kind = kind or getattr(component, "_zoo_kind", None)
    name = name or getattr(component, "_zoo_name", None)
    if not kind or not name:
        raise ValueError(f"cannot export {type(component).__qualname__}: no registry identity; register the class "
                         f"with @register(kind, name) or pass kind= and name=")
    registry._check_kind(kind)
    hparams = _component_hparams(component)
    extra_plain = _plain(dict(extra or {}), "extra")
    refs = [] if self_contained else frozen_references(component)
    dropped = {(f"{r['module']}." if r["module"] else "") + k for r in refs for k in r["keys"]}
    tensors, aliases = _dedup_state({k: v for k, v in component.state_dict().items() if k not in dropped})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "zoo_kind": kind, "zoo_name": name, _ALIAS_KEY: json.dumps(aliases, sort_keys=True)}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    config = {
        "format": FORMAT,
        "kind": kind,
        "name": name,
        "hparams": hparams,
        "zoo_version": _zoo_version(),
        "weights": WEIGHTS,
        "sha256": sha256_file(out / WEIGHTS),
        "self_contained": bool(self_contained),
        "frozen": refs,
        "extra": extra_plain,
    }
    with atomic_open(out / CONFIG, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False, default_flow_style=False)
    return out


# --------------------------------------------------------------------------- file checks


def _norm_hash(h: Any) -> str | None:
    if h is None:
        return None
    h = str(h).strip().lower()
    if h.startswith("sha256:"):
        h = h[len("sha256:"):]
    return h or None


def _check_hash(path: Path, expected: str | None, who: str, actual: str | None = None) -> str:
    """Hash ``path``; raise CheckpointError naming file, expected and actual on mismatch."""
    actual = actual or sha256_file(path)
    exp = _norm_hash(expected)
    if exp is not None and actual != exp:
        raise CheckpointError(f"sha256 mismatch for {path}: expected {exp} ({who}), got {actual} "
                              f"(the file is corrupt, partially copied, or a different version)")
    return actual


def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a safetensors file's structure without loading tensors; return its parsed header.

    Catches truncated copies (data shorter than the header promises), trailing
    garbage and corrupt headers, each with a message naming the file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"truncated safetensors file {path}: {size} bytes, too short for the 8-byte "
                                  f"header length")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"corrupt or truncated safetensors file {path}: header length field says "
                                  f"{n} bytes but the file has {size} bytes")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt safetensors header in {path}: not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"corrupt safetensors header in {path}: expected a JSON object, "
                              f"got {type(header).__name__}")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            info["dtype"], info["shape"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"corrupt safetensors header in {path}: entry '{key}' lacks "
                                  f"dtype/shape/data_offsets") from None
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop):
            raise CheckpointError(f"corrupt safetensors header in {path}: entry '{key}' has bad data_offsets "
                                  f"{info['data_offsets']}")
        end = max(end, stop)
    expected_size = 8 + n + end
    if size < expected_size:
        raise CheckpointError(f"truncated safetensors file {path}: header describes {expected_size} bytes, "
                              f"file has {size} (incomplete download or copy?)")
    if size > expected_size:
        raise CheckpointError(f"corrupt safetensors file {path}: {size - expected_size} unexpected trailing "
                              f"bytes after the {expected_size} bytes the header describes")
    return header


_ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local file header
_PICKLE_PROTO = 0x80  # the first byte of a pickle written with protocol 2 or later


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _check_torch_zip(path: Path, require: bool = False) -> None:
    """torch.save files are zip archives: check every member's CRC so truncation or bit rot is caught.

    A file that starts like a zip archive but has no central directory (a truncated copy) is an error.
    Any other non-zip file is accepted as a legacy pickle (torch.load reports what is wrong with it)
    unless ``require``, which also insists on torch.save's layout (a ``data.pkl`` member)."""
    if not zipfile.is_zipfile(path):
        if _head(path, 4) == _ZIP_MAGIC:
            raise CheckpointError(f"not a valid torch zip checkpoint: {path} starts like a zip archive (torch.save "
                                  f"format) but its central directory is missing (truncated or incomplete copy?)")
        if require:
            raise CheckpointError(f"not a torch zip checkpoint: {path} is not a zip archive")
        return  # legacy pickle format: nothing cheap to check, torch.load will report
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint archive {path}: {exc}") from None
    if bad is not None:
        raise CheckpointError(f"corrupt checkpoint archive {path}: member '{bad}' fails its CRC check")
    if require and not any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
        raise CheckpointError(f"not a torch zip checkpoint: {path} is a zip archive without the <name>/data.pkl "
                              f"member torch.save writes")


def _looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: a plausible header length, then a JSON object."""
    head = _head(path, 9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _MAX_HEADER and head[8:9] == b"{"


def _check_verifiable(path: Path) -> None:
    """A file to verify must be a torch zip checkpoint (every member's CRC checked) or a safetensors file
    (structure checked); anything else, legacy pickles included, is an error saying what it is not."""
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        check_safetensors(path)
        return
    if zipfile.is_zipfile(path) or _head(path, 4) == _ZIP_MAGIC:
        _check_torch_zip(path, require=True)
        return
    head = _head(path, 1)
    what = ("it looks like a legacy pickle file" if head and head[0] == _PICKLE_PROTO
            else "its first bytes match neither format" if head else "it is empty")
    raise CheckpointError(f"not a torch zip checkpoint nor safetensors: {path} ({what}); legacy pickle files cannot "
                          f"be verified; re-save with torch.save (zip format, the default) or export it with "
                          f"zoo.core.hub.export")


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"cannot parse {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a mapping with kind, name, hparams, sha256")
    missing = [k for k in ("kind", "name", "sha256") if k not in cfg]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {', '.join(missing)} (expected an export written by "
                              f"zoo.core.hub.export)")
    return cfg


# --------------------------------------------------------------------------- named checkpoints


def _strip_scheme(name: str) -> str:
    return name[len("zoo://"):] if name.startswith("zoo://") else name


def checkpoint_path(name: str) -> Path:
    """Where the file of registry checkpoint ``name`` is expected: $ZOO_HOME/checkpoints/<name>/<file>."""
    name = _strip_scheme(name)
    ent = registry.checkpoint_entry(name)
    file = ent.get("file")
    if not file:
        raise registry.RegistryError(f"registry.yaml checkpoint '{name}' has no 'file' key (expected the file "
                                     f"name inside $ZOO_HOME/checkpoints/{name}/)")
    return zoo_home() / "checkpoints" / name / str(file)


def _missing_message(name: str, ent: dict, path: Path) -> str:
    what = ent.get("summary") or ent.get("description") or f"weights for {ent.get('component', '?')}"
    return (f"checkpoint '{name}' ({what}) is not in the local cache: expected {path}. "
            f"Source: {ent.get('source', 'not stated')}. Licence: {ent.get('licence', 'not stated')}. "
            f"hoi-zoo never downloads; fetch it from the source, place it at that path "
            f"(or point ZOO_HOME elsewhere), then run `hoi-zoo verify {name}` (or `python tools/catalog.py verify {name}`).")


def resolve(name: str) -> Path:
    """Local path of registry checkpoint ``name`` (``zoo://`` prefix allowed), hash-checked.

    For components that want a raw file (e.g. SAM's official .pth) rather than
    a rebuilt module. Raises FileNotFoundError with fetch instructions if absent.
    """
    name = _strip_scheme(name)
    ent = registry.checkpoint_entry(name)
    path = checkpoint_path(name)
    if not path.exists():
        raise FileNotFoundError(_missing_message(name, ent, path))
    if path.suffix == ".safetensors":
        check_safetensors(path)
    _check_hash(path, ent.get("sha256"), "registry.yaml")
    return path


def _split_component(spec: Any, where: str) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count("/") != 1:
        raise registry.RegistryError(f"{where}: component must be 'kind/name', got {spec!r}")
    kind, name = spec.split("/")
    return kind, name


def _named(text: str) -> str:
    """The registry checkpoint name that ``text`` (not an existing path) refers to, or a clear error."""
    name = _strip_scheme(text)
    if name in registry.index()["checkpoints"]:
        return name
    if not text.startswith("zoo://") and (any(sep in text for sep in ("/", os.sep)) or Path(text).suffix):
        raise FileNotFoundError(f"checkpoint path not found: {Path(text).expanduser()} (and '{name}' is not a "
                                f"checkpoint name in {registry.registry_path()})")
    registry.checkpoint_entry(name)  # raises with the closest names
    return name


# --------------------------------------------------------------------------- load


_SKIP_PRETRAINED = contextvars.ContextVar("zoo_skip_pretrained", default=False)


@contextlib.contextmanager
def pretrained_disabled():
    """Inside this block :meth:`Pretrained.load_pretrained` does nothing (the caller loads every tensor
    itself, e.g. from a checkpoint that holds them all)."""
    token = _SKIP_PRETRAINED.set(True)
    try:
        yield
    finally:
        _SKIP_PRETRAINED.reset(token)


def pretrained_skipped() -> bool:
    """True inside :func:`pretrained_disabled` (the caller loads every tensor itself; early checks for the
    weights file can be skipped too)."""
    return _SKIP_PRETRAINED.get()


class Pretrained:
    """Mixin for components whose weights may come from a file.

    The component takes a constructor argument named by ``weights_arg`` (default ``weights``): a
    registry checkpoint (``zoo://name`` or ``name``) or a local file (.safetensors, an export
    directory, a Lightning .ckpt, or a torch file read with ``weights_only=True``). It is built
    first and loaded second: :func:`zoo.core.registry.materialize` (or the system that owns it)
    calls :meth:`load_pretrained` after ``configure_model``. Override :meth:`convert_checkpoint` to
    map an upstream key layout onto the module's, and :meth:`pretrained_keys` when the file covers
    only part of the module (e.g. a backbone without its projection).
    """

    weights_arg = "weights"
    weights_only_globals: tuple = ()  # extra types torch.load(weights_only=True) may unpickle

    def weights_source(self) -> str | None:
        """The configured weights source, or None (random initialisation)."""
        cfg = {**(self.__dict__.get("_zoo_config") or {}), **dict(getattr(self, "hparams", None) or {})}
        src = cfg.get(self.weights_arg)
        return None if src in (None, "") else os.fspath(src)

    def convert_checkpoint(self, obj: Any, source: str) -> dict:
        """The state dict (module key -> tensor) in ``obj``, what the weights file deserialised to."""
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{source}: expected a state_dict (or a dict with 'state_dict'), got "
                                  f"{type(obj).__name__}; give {type(self).__qualname__} a convert_checkpoint for it")
        return obj

    def pretrained_keys(self) -> set[str] | None:
        """State keys the weights file must provide (None: every key of the module)."""
        return None

    def load_pretrained(self) -> dict | None:
        """Load the configured weights (once); returns what :func:`load_weights` recorded, or None."""
        src = self.weights_source()
        if src is None or _SKIP_PRETRAINED.get():
            return None
        rec = self.__dict__.get("_zoo_weights")
        if rec and rec.get("source") == src:
            return rec
        return load_weights(self, src)


def _locate_weights(source: str) -> tuple[Path, str | None, str]:
    """(local file, expected sha256 or None, description) of a weights source; registry names are resolved."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists() and not text.startswith("zoo://"):
        return path, None, str(path)
    name = _named(text)
    ent = registry.checkpoint_entry(name)
    return resolve(name), _norm_hash(ent.get("sha256")), f"zoo://{name}"


def _read_weights(path: Path, safe_globals: tuple = (), trust: bool = False, owner: str = "") -> Any:
    """What a weights file holds: a state dict for safetensors / exports / Lightning checkpoints, else the
    object ``torch.load(weights_only=True)`` returns (a full unpickle only with ``trust``, see
    :func:`_torch_load`). ``owner`` names the component whose ``weights_only_globals`` may allow more types."""
    if path.is_dir():
        path = path / WEIGHTS
    if path.suffix == ".safetensors":
        check_safetensors(path)
        return _load_safetensors_state(path)
    hint = f"list the type in {owner}.weights_only_globals" if owner else ""
    obj = _torch_load(path, "weights file", trust=trust, safe_globals=safe_globals, hint=hint)
    if path.suffix == ".ckpt" and isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"]
    return obj


def load_weights(module: Any, source: str | os.PathLike, *, strict: bool = True,
                 expected_sha256: str | None = None, trust: bool = False) -> dict[str, Any]:
    """Load the weights file ``source`` (registry name or path) into the built ``module``.

    The file is hash-checked (registry.yaml's sha256 for named checkpoints, ``expected_sha256``
    when given), read without unpickling arbitrary objects, converted by the module's
    ``convert_checkpoint`` (when it has one) and loaded. Only with ``trust`` may a torch file that holds
    objects ``weights_only`` refuses be unpickled in full (it can run any code it contains). With ``strict`` every key the module's
    ``pretrained_keys()`` (default: all of its state) names must be present with the right shape and
    nothing unknown may be left over; the error names the file and the first offending keys.
    Returns, and records on the module as ``_zoo_weights``, {source, path, sha256, keys, buffers}.
    """
    text = os.fspath(source)
    path, expected, who = _locate_weights(text)
    sha = sha256_file(path / WEIGHTS if path.is_dir() else path)
    for exp, by in ((expected, "registry.yaml"), (_norm_hash(expected_sha256), "the export that references it")):
        if exp is not None and sha != exp:
            raise CheckpointError(f"sha256 mismatch for {path} ({who}): expected {exp} ({by}), got {sha} "
                                  f"(the file is corrupt, partially copied, or a different version)")
    obj = _read_weights(path, tuple(getattr(module, "weights_only_globals", ()) or ()), trust=trust,
                        owner=type(module).__qualname__)
    convert = getattr(module, "convert_checkpoint", None)
    state = convert(obj, who) if callable(convert) else Pretrained.convert_checkpoint(module, obj, who)
    need_fn = getattr(module, "pretrained_keys", None)
    what = f"{getattr(module, '_zoo_kind', 'component')}/{getattr(module, '_zoo_name', type(module).__qualname__)}"
    loadable = fit_state(module, state, f"weights {who} ({path}) do not fit {what}",
                         need_fn() if callable(need_fn) else None, strict)
    module.load_state_dict(loadable, strict=False)
    buffers = dict(module.named_buffers())
    record = {"source": text, "path": str(path), "sha256": sha, "keys": sorted(loadable),
              "buffers": {k: _fingerprint(buffers[k]) for k in loadable if k in buffers}}
    module.__dict__["_zoo_weights"] = record
    return record


def _first(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def fit_state(module: Any, state: dict, problem: str, need: set[str] | None = None, strict: bool = True) -> dict:
    """The entries of ``state`` that fit ``module`` (known key, same shape). With ``strict``, a key of ``need``
    (default: every key of the module) that is absent, an unknown key or a shape mismatch raises
    CheckpointError: ``problem`` followed by the first offending keys of each sort."""
    own = module.state_dict()
    need = need if need is not None else set(own)
    missing = [k for k in own if k in need and k not in state] + sorted(k for k in need - set(own) if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_first(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es) (file vs module): {_first(mismatched, 3)}")
        raise CheckpointError(f"{problem}: " + "; ".join(parts))
    bad = {m.split(" ")[0] for m in mismatched}
    return {k: v for k, v in state.items() if k in own and k not in bad}


def _build(kind: str, name: str, hparams: dict, source: Path) -> Any:
    """Rebuild a component (configured, pretrained weights not loaded: the caller loads every tensor)."""
    try:
        with pretrained_disabled():
            return registry.build(kind, {"name": name, **hparams}, materialize=True)
    except TypeError as exc:
        raise CheckpointError(f"cannot rebuild {kind}/{name} from {source}: {exc} (hparams: {sorted(hparams)})") from None


def _apply_state(model: Any, state: dict, strict: bool, source: Path, allowed_missing: set[str] = frozenset()) -> None:
    """Load ``state`` into ``model`` through :func:`fit_state` (every key but ``allowed_missing`` required);
    with ``strict=False`` what does not fit is skipped with a warning."""
    own = model.state_dict()
    need = {k for k in own if k not in allowed_missing}
    model.load_state_dict(fit_state(model, state, f"state_dict in {source} does not fit {type(model).__qualname__}",
                                    need, strict), strict=False)
    missing = [k for k in own if k in need and k not in state]
    unexpected = [k for k in state if k not in own]
    if not strict and (missing or unexpected):
        import warnings

        warnings.warn(f"loading {source} with strict=False: missing {missing}, unexpected {unexpected}", stacklevel=3)


def _load_safetensors_state(path: Path) -> dict:
    from safetensors import safe_open

    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = fh.metadata() or {}
        for key in fh.keys():
            state[key] = fh.get_tensor(key)
    aliases = json.loads(meta.get(_ALIAS_KEY, "{}"))
    for alias, kept in aliases.items():
        state[alias] = state[kept]
    return state


TRUST_HINT = ("if you trust this file, and only then, pass trust=true on the command line or "
              "zoo.load(..., trust=True) in Python to unpickle it in full (that runs any code it contains)")


def _refused_object(message: str) -> str | None:
    """The global or type that torch's weights-only unpickler refused, from its error message; None when the
    message is about something else (a corrupt or truncated pickle)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1).rstrip(".")
    if re.search(r"Can only (build|create new object)|unrecognized function", message):
        found = re.search(r"<(?:class|function|built-in function) '?([\w.]+)'?", message)
        return found.group(1) if found else message.strip().splitlines()[-1]
    return None


def _torch_detail(exc: BaseException) -> str:
    """The informative part of a torch.load error (torch wraps it in paragraphs of general advice)."""
    message = str(exc).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", message, re.S)
    if found:
        return " ".join(found.group(1).split())
    if not message:
        return f"{type(exc).__name__} (the file ends early: truncated?)" if isinstance(exc, EOFError) \
            else type(exc).__name__
    return message.splitlines()[0]


def _torch_load(path: Path, what: str = "checkpoint", trust: bool = False, safe_globals: tuple = (),
                hint: str = "") -> Any:
    """``torch.load`` of ``path`` with ``weights_only=True``; never a full unpickle unless ``trust``.

    When the weights-only unpickler refuses an object, the error names the file and the refused global and
    says how to allow a full unpickle (``hint`` adds another way, e.g. a component's weights_only_globals).
    With ``trust`` such a file is unpickled in full after a warning on stderr naming it."""
    import pickle
    import sys

    import torch

    _check_torch_zip(path)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first: BaseException = exc
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise CheckpointError(f"cannot read {what} {path} with torch.load(weights_only=True): "
                              f"{_torch_detail(exc)} (the file is truncated, corrupt or not a torch file)") from None
    refused = _refused_object(str(first))
    if not trust:
        how = TRUST_HINT + (f"; or {hint}" if hint else "")
        if refused is not None:
            raise CheckpointError(f"cannot read {what} {path} with torch.load(weights_only=True): the file holds "
                                  f"objects weights_only refuses (torch refused {refused}); {how}") from None
        raise CheckpointError(f"cannot read {what} {path} with torch.load(weights_only=True): {_torch_detail(first)} "
                              f"(the file is corrupt, or a pickle the weights-only reader cannot parse); {how}") from None
    print(f"trust=true: unpickling {path} with weights_only=False can run any code it contains", file=sys.stderr,
          flush=True)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise CheckpointError(f"cannot read {what} {path} (full unpickle, trust=true): {_torch_detail(exc)}") from None


def _finish(model: Any, map_location: Any) -> Any:
    if map_location is not None:
        model = model.to(map_location)
    return model.eval()


def _load_frozen(model: Any, refs: list, config: Path, trust: bool = False) -> set[str]:
    """Load each frozen part an export references from its source (hash-checked); returns their keys. A part
    with a ``reload_frozen(ref, trust)`` method (a VLM, whose base the constructor loads from its model
    directory) checks the reference itself instead."""
    keys: set[str] = set()
    for ref in refs or []:
        prefix = str(ref.get("module", ""))
        try:
            part = model.get_submodule(prefix) if prefix else model
        except AttributeError:
            raise CheckpointError(f"{config}: frozen part '{prefix}' is not a module of the rebuilt "
                                  f"{type(model).__qualname__}") from None
        try:
            reload = getattr(part, "reload_frozen", None)
            if callable(reload):  # a part that loads its own base when built (a VLM from its model directory)
                reload(ref, trust=trust)
            else:
                load_weights(part, ref["source"], expected_sha256=ref.get("sha256"), trust=trust)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{config} references its frozen part '{prefix or '.'}' ({ref.get('component')}) "
                                    f"instead of storing it: {ref['source']} (sha256 {ref.get('sha256')}) is needed "
                                    f"to load this export. {exc}") from None
        except CheckpointError as exc:
            raise CheckpointError(f"{config}: frozen part '{prefix or '.'}' ({ref.get('component')}) from "
                                  f"{ref['source']}: {exc}") from None
        pre = f"{prefix}." if prefix else ""
        keys.update(pre + k for k in ref.get("keys", []))
    return keys


def _load_export(weights: Path, config: Path, strict: bool, expected: str | None, who: str,
                 trust: bool = False) -> Any:
    """Load an export directory's files after structure and hash checks (frozen parts from their sources)."""
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found (expected the weights of an export written by "
                                f"zoo.core.hub.export)")
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found next to {weights.name} (expected the config.yaml written by "
                                f"zoo.core.hub.export, with kind, name and hparams)")
    cfg = _read_config(config)
    check_safetensors(weights)
    actual = _check_hash(weights, cfg.get("sha256"), f"recorded in {config}")
    if expected is not None:
        _check_hash(weights, expected, who, actual=actual)
    model = _build(str(cfg["kind"]), str(cfg["name"]), dict(cfg.get("hparams") or {}), config)
    frozen = _load_frozen(model, cfg.get("frozen") or [], config, trust)
    _apply_state(model, _load_safetensors_state(weights), strict, weights, allowed_missing=frozen)
    return model


def _load_ckpt(path: Path, strict: bool, component: str | None, trust: bool = False) -> Any:
    """Rebuild a component from a Lightning checkpoint written by the run loop (read with
    ``weights_only=True``; a full unpickle only with ``trust``)."""
    ckpt = _torch_load(path, "checkpoint", trust=trust)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint: no 'state_dict' key")
    if component is not None:
        kind, name = _split_component(component, "load(component=...)")
    else:
        meta = ckpt.get("zoo") or {}
        kind, name = meta.get("kind"), meta.get("name")
        if not kind or not name:
            raise CheckpointError(f"{path} does not say which component it holds (no checkpoint['zoo'] "
                                  f"kind/name); pass component='kind/name'")
    hparams = _plain(dict(ckpt.get("hyper_parameters") or {}), "hyper_parameters")
    model = _build(kind, name, hparams, path)
    _apply_state(model, ckpt["state_dict"], strict, path)
    return model


def _load_foreign(path: Path | str, kind: str, name: str, hparams: dict, strict: bool, trust: bool = False) -> Any:
    """Official weights in their own format (.pth/.pt/.bin or a registry file): build the component,
    then load the file through :func:`load_weights` (its ``convert_checkpoint`` maps the layout)."""
    model = _build(kind, name, hparams, Path(str(path)))
    load_weights(model, path, strict=strict, trust=trust)
    return model


def _entry_hparams(ent: dict, kind: str, name: str) -> dict:
    """A registry checkpoint's constructor arguments: its ``hparams``, else the ``recipe`` section that made it."""
    if ent.get("hparams") is not None or not ent.get("recipe"):
        return dict(ent.get("hparams") or {})
    from zoo.core import recipe as R

    section = "system" if kind == "system" else None
    rec = R.load(str(ent["recipe"]), validate=False)
    cfg = dict(rec.get(section) or {}) if section else {}
    cfg.pop("name", None)
    return cfg


def load(name_or_path: str | os.PathLike, map_location: Any = "cpu", strict: bool = True,
         component: str | None = None, *, trust: bool = False) -> Any:
    """Rebuild a component (in eval mode, on ``map_location``) from a checkpoint.

    ``name_or_path``: an export directory or its model.safetensors (frozen parts it references are
    fetched from the store); a Lightning ``.ckpt`` (kind/name from ``checkpoint["zoo"]`` or
    ``component='kind/name'``); a weights file in a component's own layout with
    ``component='kind/name'``; or a registry checkpoint name (``zoo://`` prefix allowed) found in
    ``$ZOO_HOME/checkpoints/<name>/``. ``strict`` is passed to the state-dict check.

    Torch files are read with ``torch.load(weights_only=True)``. One that holds other objects is an error
    naming the file and the refused object, unless ``trust=True``: then it is unpickled in full, after a
    warning on stderr, which runs any code the file contains; pass it only for files you trust.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            model = _load_export(path / WEIGHTS, path / CONFIG, strict, None, "", trust)
        elif path.suffix == ".safetensors" and (path.parent / CONFIG).is_file():
            model = _load_export(path, path.parent / CONFIG, strict, None, "", trust)
        elif path.suffix == ".ckpt":
            model = _load_ckpt(path, strict, component, trust)
        else:
            if component is None:
                raise CheckpointError(f"{path}: not a zoo export or Lightning .ckpt; pass component='kind/name' "
                                      f"to load raw weights")
            kind, name = _split_component(component, "load(component=...)")
            model = _load_foreign(path, kind, name, {}, strict, trust)
        return _finish(model, map_location)

    name = _named(text)
    ent = registry.index()["checkpoints"][name]
    file = checkpoint_path(name)
    if not file.exists():
        raise FileNotFoundError(_missing_message(name, ent, file))
    kind, cname = _split_component(ent.get("component"), f"registry.yaml checkpoint '{name}'")
    expected = ent.get("sha256")
    if file.suffix == ".safetensors" and (file.parent / CONFIG).is_file():
        model = _load_export(file, file.parent / CONFIG, strict, expected, "registry.yaml", trust)
    elif file.suffix == ".ckpt":
        _check_hash(file, expected, "registry.yaml")
        model = _load_ckpt(file, strict, f"{kind}/{cname}", trust)
    else:
        model = _load_foreign(f"zoo://{name}", kind, cname, _entry_hparams(ent, kind, cname), strict, trust)
    got = (getattr(model, "_zoo_kind", kind), getattr(model, "_zoo_name", cname))
    if got != (kind, cname):
        raise CheckpointError(f"checkpoint '{name}' is registered for {kind}/{cname} but its files hold "
                              f"{got[0]}/{got[1]}")
    return _finish(model, map_location)


# --------------------------------------------------------------------------- verify


def verify(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint's integrity without building it.

    The file must be a safetensors file (its header covering the file exactly) or a torch zip checkpoint
    (torch.save's layout, every member's CRC correct); legacy pickles and anything else fail.
    Returns {ok, path, sha256, expected, size, error}: ``expected`` is the hash
    from registry.yaml (named checkpoints) or config.yaml (exports), None when
    nothing records one; ``error`` says what is wrong when ``ok`` is False.
    """
    report: dict[str, Any] = {"ok": False, "path": None, "sha256": None, "expected": None, "size": None,
                              "error": None}
    try:
        text = os.fspath(name_or_path)
        path = Path(text).expanduser()
        expectations: list[tuple[str, str]] = []
        if not path.exists():
            name = _named(text)
            ent = registry.checkpoint_entry(name)
            path = checkpoint_path(name)
            report["path"] = str(path)
            if _norm_hash(ent.get("sha256")):
                expectations.append((_norm_hash(ent["sha256"]), "registry.yaml"))
            if not path.exists():
                raise FileNotFoundError(_missing_message(name, ent, path))
        if path.is_dir():
            path = path / WEIGHTS
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (expected an export written by zoo.core.hub.export)")
        report["path"] = str(path)
        report["size"] = path.stat().st_size
        if path.suffix == ".safetensors":
            cfg = path.parent / CONFIG
            if cfg.is_file():
                recorded = _norm_hash(_read_config(cfg).get("sha256"))
                if recorded:
                    expectations.append((recorded, f"recorded in {cfg}"))
        _check_verifiable(path)
        actual = sha256_file(path)
        report["sha256"] = actual
        report["expected"] = expectations[0][0] if expectations else None
        for exp, who in expectations:
            _check_hash(path, exp, who, actual=actual)
        report["ok"] = True
    except (FileNotFoundError, CheckpointError, registry.RegistryError, OSError) as exc:
        report["error"] = str(exc)
    return report
