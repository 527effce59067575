"""The evaluation switch ``convention=deco|interactvlm|both``: one word that sets every metric's rules.

Each metric class says which rules it follows in ``convention_family``:

==============  ==========================  ======================  =========================================
family          metrics                     ``convention=deco``     ``convention=interactvlm``
==============  ==========================  ======================  =========================================
``contact``     contact_prf,                ``convention: deco``    ``convention: interactvlm``
                contact_geodesic
``affordance``  affordance                  ``convention: iagnet``  ``convention: interactvlm``
``damon``       damon_binary,               left out                kept; added when the system has a contact
                damon_semantic                                      metric and the data carries the names
==============  ==========================  ======================  =========================================

(DECO never evaluated affordance: its side of the table is IAGNet's PIAD rules, the ones the
papers InteractVLM compares with used.) Under ``interactvlm``, ``damon_binary`` is added when the
data's batches carry ``imgname`` and ``damon_semantic`` when they carry ``object_name`` (a
DataModule lists them in ``name_keys``; DAMON: ``imgname`` always, ``object_name`` with
``contact_mode=semantic``), each with the threshold of the first contact metric and the geodesic
source (``geodesic`` / ``body_model`` / ``method``) of the first one that has one. Metrics
without a family are kept as they are. ``both`` lists the two sets, logged under ``deco/`` and
``interactvlm/`` (the entries' ``log_prefix``), so one pass over the predictions gives both tables.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from zoo.core.recipe import EVAL_CONVENTIONS  # the values a recipe's ``convention`` may take

__all__ = ["EVAL_CONVENTIONS", "FAMILY_CONVENTIONS", "DAMON_SUMMARIES", "metrics_for_convention", "check_eval_convention"]

# the metric convention each evaluation convention sets, by the metric's convention_family
FAMILY_CONVENTIONS: dict[str, dict[str, str]] = {
    "deco": {"contact": "deco", "affordance": "iagnet"},
    "interactvlm": {"contact": "interactvlm", "affordance": "interactvlm"},
}
DAMON_SUMMARIES = ("damon_binary", "damon_semantic")  # added under interactvlm when the data has their batch keys
_GEODESIC_ARGS = ("geodesic", "body_model", "method")


def check_eval_convention(value: Any, where: str = "convention") -> str:
    """``value`` if it is an evaluation convention, else a ValueError naming the allowed values."""
    if value not in EVAL_CONVENTIONS:
        raise ValueError(f"{where} must be one of {', '.join(EVAL_CONVENTIONS)}, got {value!r}")
    return value


def _family(name: str) -> str | None:
    from zoo.core import registry

    return getattr(registry.lookup("metric", name), "convention_family", None)


def _batch_keys(name: str) -> tuple[str, ...]:
    from zoo.core import registry

    return tuple(getattr(registry.lookup("metric", name), "batch_keys", ()) or ())


def _one(metrics: list[dict], convention: str, name_keys: Sequence[str]) -> list[dict]:
    rules = FAMILY_CONVENTIONS[convention]
    out: list[dict] = []
    contact: list[dict] = []
    for cfg in metrics:
        cfg = copy.deepcopy(dict(cfg))
        family = _family(cfg["name"])
        if family == "damon" and convention != "interactvlm":
            continue
        if family in rules:
            cfg["convention"] = rules[family]
        if family == "contact":
            contact.append(cfg)
        out.append(cfg)
    if convention == "interactvlm" and contact:
        have = {c["name"] for c in out}
        extra: dict[str, Any] = {"threshold": contact[0].get("threshold", 0.5)}
        geo = next((c for c in contact if c.get("geodesic") is not None or c.get("body_model") is not None), None)
        if geo is not None:
            extra.update({k: copy.deepcopy(geo[k]) for k in _GEODESIC_ARGS if k in geo})
        for name in DAMON_SUMMARIES:
            if name not in have and set(_batch_keys(name)) <= set(name_keys):
                out.append({"name": name, **copy.deepcopy(extra)})
    return out


def metrics_for_convention(metrics: Sequence[dict], convention: str, name_keys: Sequence[str] = ()) -> list[dict]:
    """The ``metrics`` list (metric sub-recipes) evaluated under ``convention`` (module docstring).

    ``name_keys``: the per-sample name keys the evaluation data's batches carry (``imgname``,
    ``object_name``), which decide whether the DAMON summaries are added.
    """
    check_eval_convention(convention)
    metrics = [dict(m) for m in metrics or []]
    if convention != "both":
        return _one(metrics, convention, name_keys)
    out = []
    for conv in ("deco", "interactvlm"):
        for cfg in _one(metrics, conv, name_keys):
            cfg["log_prefix"] = f"{conv}/{cfg.get('log_prefix', '')}"
            out.append(cfg)
    return out
