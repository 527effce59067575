"""Reference predictors that use no input: what a contact model must beat.

* ``constant_contact_f1``: one per-vertex probability map for every sample (the training
  frequency of contact at each vertex), thresholded at each of ``thresholds``; the best test
  F1 over the thresholds is reported, which favours the baseline (it is tuned on test).
* ``class_prior_contact_f1``: the same with one frequency map per class (e.g. per object in
  semantic contact), i.e. what a model that only knows the class can reach.
* ``constant_affordance``: one value for every point of every cloud (PIAD clouds have no point
  correspondence, so no per-point frequency exists): its AUC is 0.5 whatever the value, its SIM
  that of a uniform map; each metric is reported at the value that scores best on test.

F1 follows ``ContactPRF`` (averaged over samples) under ``convention`` (``deco`` by default,
or ``interactvlm``: see zoo.metrics.contact), so compare a model with the baseline under the same one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from zoo.metrics.contact import ContactPRF

__all__ = ["constant_contact_f1", "class_prior_contact_f1", "constant_affordance", "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2).tolist())


def _best_f1(pred: torch.Tensor, target: torch.Tensor, thresholds: Sequence[float],
             convention: str) -> dict[str, float]:
    best = None
    for t in thresholds:
        m = ContactPRF(threshold=float(t), convention=convention)
        m.update(pred, target)
        r = {k: float(v) for k, v in m.compute().items()}
        r["threshold"] = float(t)
        if best is None or r["f1"] > best["f1"]:
            best = r
    return best


def constant_contact_f1(train: np.ndarray, test: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                        convention: str = "deco") -> dict[str, float]:
    """Best test {precision, recall, f1, threshold} of the per-vertex training frequency map used for every sample."""
    train, test = np.asarray(train, np.float32), np.asarray(test, np.float32)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"constant_contact_f1: train and test must be (N, V) with the same V, got "
                         f"{train.shape} and {test.shape}")
    freq = torch.from_numpy(train.mean(0))
    return _best_f1(freq[None].expand(len(test), -1), torch.from_numpy(test), thresholds, convention)


def class_prior_contact_f1(train: np.ndarray, train_classes: Sequence[str], test: np.ndarray,
                           test_classes: Sequence[str], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                           convention: str = "deco") -> dict[str, float]:
    """Best test F1 of per-class training frequency maps (classes unseen in training fall back to the global map)."""
    train, test = np.asarray(train, np.float32), np.asarray(test, np.float32)
    if len(train_classes) != len(train) or len(test_classes) != len(test):
        raise ValueError(f"class_prior_contact_f1: {len(train)} train rows but {len(train_classes)} classes, "
                         f"{len(test)} test rows but {len(test_classes)} classes")
    glob = train.mean(0)
    tc = np.asarray(train_classes)
    maps = {c: train[tc == c].mean(0) for c in set(train_classes)}
    pred = np.stack([maps.get(c, glob) for c in test_classes])
    return _best_f1(torch.from_numpy(pred), torch.from_numpy(test), thresholds, convention)


def constant_affordance(test: np.ndarray, values: Sequence[float] = DEFAULT_THRESHOLDS,
                        convention: str = "iagnet") -> dict[str, float]:
    """Best test {sim, mae, auc, aiou} of a constant heatmap, each over ``values`` (MAE the lowest),
    scored by ``AffordanceMetrics`` under ``convention``; ``value_<metric>`` says which value won."""
    from zoo.metrics.affordance import AffordanceMetrics

    test = torch.as_tensor(np.asarray(test, np.float32))
    if test.ndim != 2:
        raise ValueError(f"constant_affordance: test must be (N, P) heatmaps, got shape {tuple(test.shape)}")
    best: dict[str, float] = {}
    for v in values:
        m = AffordanceMetrics(convention=convention)
        m.update(torch.full_like(test, float(v)), test)
        for k, x in m.compute().items():
            x = float(x)
            better = x < best[k] if k == "mae" and k in best else k not in best or x > best[k]
            if better:
                best[k], best[f"value_{k}"] = x, float(v)
    return best
