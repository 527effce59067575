"""The checkpoint store: export components, load them back, verify files.

An exported component is a directory with two files::

    model.safetensors   the state_dict (contiguous CPU tensors; tied tensors stored once)
    config.yaml         {format, kind, name, hparams, zoo_version, weights, sha256, extra}

``load`` accepts such a directory (or its model.safetensors), a Lightning
``.ckpt`` written by the run tool (``checkpoint["zoo"] = {"kind", "name"}``
plus Lightning's ``hyper_parameters`` and ``state_dict``), or the name of a
pretrained checkpoint listed under ``checkpoints:`` in registry.yaml. Named
checkpoints live in ``$ZOO_HOME/checkpoints/<name>/<file>`` (ZOO_HOME defaults
to ``~/.cache/hoi-zoo``). Nothing is ever downloaded: a missing file raises
FileNotFoundError saying what it is, where it is expected, where it comes
from and its licence.

Every file is checked before it is deserialised: the safetensors header must
be well formed and cover the file exactly (this catches truncated copies), and
its SHA-256 must match the hash recorded in config.yaml and, for named
checkpoints, in registry.yaml.

torch and safetensors are imported lazily, so ``verify`` of a safetensors
file and ``tools/zoo.py`` stay light.
"""
from __future__ import annotations

import inspect
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from zoo.core import registry
from zoo.core.atomic import atomic_open, atomic_path, sha256_file

__all__ = ["export", "load", "verify", "resolve", "zoo_home", "checkpoint_path", "CheckpointError"]

FORMAT = "hoi-zoo/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
_ALIAS_KEY = "zoo_aliases"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt, has the wrong hash, or does not match its component."""


def zoo_home() -> Path:
    """The local cache root: $ZOO_HOME, else ~/.cache/hoi-zoo."""
    return Path(os.environ.get("ZOO_HOME") or "~/.cache/hoi-zoo").expanduser()


def _zoo_version() -> str:
    try:
        from zoo import __version__
    except ImportError:  # pragma: no cover - only when zoo is vendored oddly
        return "unknown"
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
    """The constructor arguments that rebuild ``component``."""
    if getattr(component, "_zoo_config", None) is not None:
        raw = component._zoo_config
    elif getattr(component, "hparams", None) is not None and len(component.hparams) > 0:
        raw = component.hparams
    else:
        required = [p.name for p in inspect.signature(type(component).__init__).parameters.values()
                    if p.name != "self" and p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise ValueError(f"cannot export {type(component).__qualname__}: it records no constructor arguments "
                             f"but needs {', '.join(required)}; call self.save_hyperparameters() in __init__ "
                             f"or set a _zoo_config dict")
        raw = {}
    return _plain(dict(raw), "hparams")


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


def export(component: Any, out_dir: str | os.PathLike, *, kind: str | None = None, name: str | None = None,
           extra: dict | None = None) -> Path:
    """Write ``component`` to ``out_dir`` as model.safetensors + config.yaml (atomically) and return the dir.

    ``kind``/``name`` default to the ``_zoo_kind``/``_zoo_name`` that
    ``@register`` put on the class; ``hparams`` come from ``component.hparams``
    (``save_hyperparameters``) or a ``_zoo_config`` attribute; ``extra`` is
    free-form YAML-safe metadata (metrics, recipe, notes).
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
    tensors, aliases = _dedup_state(component.state_dict())

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


def _check_torch_zip(path: Path) -> None:
    """torch.save files are zip archives: check every member's CRC so truncation or bit rot is caught."""
    if not zipfile.is_zipfile(path):
        return  # legacy pickle format: nothing cheap to check, torch.load will report
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"corrupt checkpoint archive {path}: {exc}") from None
    if bad is not None:
        raise CheckpointError(f"corrupt checkpoint archive {path}: member '{bad}' fails its CRC check")


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
            f"(or point ZOO_HOME elsewhere), then run `python tools/zoo.py verify {name}`.")


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


def _build(kind: str, name: str, hparams: dict, source: Path) -> Any:
    cls = registry.get(kind, name)
    try:
        return cls(**hparams)
    except TypeError as exc:
        raise CheckpointError(f"cannot rebuild {kind}/{name} from {source}: {exc} (hparams: {sorted(hparams)})") from None


def _apply_state(model: Any, state: dict, strict: bool, source: Path) -> None:
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"state_dict in {source} does not fit {type(model).__qualname__}: {exc}") from None
    if not strict and (result.missing_keys or result.unexpected_keys):
        import warnings

        warnings.warn(f"loading {source} with strict=False: missing {result.missing_keys}, "
                      f"unexpected {result.unexpected_keys}", stacklevel=3)


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


def _torch_load(path: Path) -> Any:
    import torch

    _check_torch_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - decide below whether to retry
        import pickle

        if not isinstance(first, pickle.UnpicklingError):
            raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    # Lightning checkpoints from other tools may hold objects weights_only refuses
    # (e.g. AttributeDict hparams). Only files the user named reach this line.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None


def _finish(model: Any, map_location: Any) -> Any:
    if map_location is not None:
        model = model.to(map_location)
    return model.eval()


def _load_export(weights: Path, config: Path, strict: bool, expected: str | None, who: str) -> Any:
    """Load an export directory's files after structure and hash checks."""
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
    _apply_state(model, _load_safetensors_state(weights), strict, weights)
    return model


def _load_ckpt(path: Path, strict: bool, component: str | None) -> Any:
    """Rebuild a component from a Lightning checkpoint written by the run tool."""
    ckpt = _torch_load(path)
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


def _load_foreign(path: Path, kind: str, name: str, hparams: dict, strict: bool) -> Any:
    """Official weights in their own format (.pth/.pt/.bin): the class may convert them.

    A component class can define ``convert_checkpoint(obj) -> state_dict``
    (classmethod or staticmethod) for the upstream layout, e.g. DECO's
    ``{"deco": state_dict, ...}``; otherwise a dict with 'state_dict', or a
    plain state_dict, is expected.
    """
    obj = _torch_load(path)
    model = _build(kind, name, hparams, path)
    convert = getattr(type(model), "convert_checkpoint", None)
    if convert is not None:
        state = convert(obj)
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
    else:
        state = obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict (or a dict with 'state_dict'), got {type(state).__name__}; "
                              f"give {kind}/{name} a convert_checkpoint(obj) hook for this layout")
    _apply_state(model, state, strict, path)
    return model


def load(name_or_path: str | os.PathLike, map_location: Any = "cpu", strict: bool = True,
         component: str | None = None) -> Any:
    """Rebuild a component (in eval mode, on ``map_location``) from a checkpoint.

    ``name_or_path``: an export directory or its model.safetensors; a Lightning
    ``.ckpt`` (kind/name from ``checkpoint["zoo"]`` or ``component='kind/name'``);
    or a registry checkpoint name (``zoo://`` prefix allowed) found in
    ``$ZOO_HOME/checkpoints/<name>/``. ``strict`` is passed to load_state_dict.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            model = _load_export(path / WEIGHTS, path / CONFIG, strict, None, "")
        elif path.suffix == ".safetensors":
            model = _load_export(path, path.parent / CONFIG, strict, None, "")
        elif path.suffix == ".ckpt":
            model = _load_ckpt(path, strict, component)
        else:
            if component is None:
                raise CheckpointError(f"{path}: not a zoo export or Lightning .ckpt; pass component='kind/name' "
                                      f"to load raw weights")
            kind, name = _split_component(component, "load(component=...)")
            model = _load_foreign(path, kind, name, {}, strict)
        return _finish(model, map_location)

    name = _named(text)
    ent = registry.index()["checkpoints"][name]
    file = checkpoint_path(name)
    if not file.exists():
        raise FileNotFoundError(_missing_message(name, ent, file))
    kind, cname = _split_component(ent.get("component"), f"registry.yaml checkpoint '{name}'")
    expected = ent.get("sha256")
    if file.suffix == ".safetensors":
        cfg = file.parent / CONFIG
        if cfg.is_file():
            model = _load_export(file, cfg, strict, expected, "registry.yaml")
        else:
            check_safetensors(file)
            _check_hash(file, expected, "registry.yaml")
            model = _build(kind, cname, dict(ent.get("hparams") or {}), file)
            _apply_state(model, _load_safetensors_state(file), strict, file)
    elif file.suffix == ".ckpt":
        _check_hash(file, expected, "registry.yaml")
        model = _load_ckpt(file, strict, f"{kind}/{cname}")
    else:
        _check_hash(file, expected, "registry.yaml")
        model = _load_foreign(file, kind, cname, dict(ent.get("hparams") or {}), strict)
    got = (getattr(model, "_zoo_kind", kind), getattr(model, "_zoo_name", cname))
    if got != (kind, cname):
        raise CheckpointError(f"checkpoint '{name}' is registered for {kind}/{cname} but its files hold "
                              f"{got[0]}/{got[1]}")
    return _finish(model, map_location)


# --------------------------------------------------------------------------- verify


def verify(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint's integrity without building it.

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
            check_safetensors(path)
        else:
            _check_torch_zip(path)
        actual = sha256_file(path)
        report["sha256"] = actual
        report["expected"] = expectations[0][0] if expectations else None
        for exp, who in expectations:
            _check_hash(path, exp, who, actual=actual)
        report["ok"] = True
    except (FileNotFoundError, CheckpointError, registry.RegistryError, OSError) as exc:
        report["error"] = str(exc)
    return report
