"""A small composed system for the System-base tests: a registered backbone, a local Parts table of heads,
the real contact_prf metric, and a DataModule of dict batches."""
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.core import registry
from zoo.core.interfaces import Backbone
from zoo.core.registry import register
from zoo.systems.base import System
from zoo.systems.optim import Optim


@register("backbone", "toy_mlp")
class ToyMLP(Backbone, nn.Module):
    """x (B, width) -> (B, out_channels)."""

    def __init__(self, width: int = 8, out_channels: int = 4):
        super().__init__()
        self.fc = nn.Linear(width, out_channels)
        self.out_channels = out_channels
        self.reduction = 1

    def forward(self, x):
        return torch.relu(self.fc(x))


class LinearHead(nn.Module):
    """One logit from the features."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, f):
        return self.fc(f)[:, 0]


class MLPHead(nn.Module):
    """One logit through a hidden layer."""

    def __init__(self, dim: int = 4, hidden: int = 8):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, f):
        return self.fc(f)[:, 0]


HEADS = registry.Parts("head", {"linear": LinearHead, "mlp": MLPHead})


@register("system", "toy_composed")
class ToyComposed(System):
    """Backbone + head, BCE, contact P/R/F1 on a single 'vertex'."""

    subcomponents: ClassVar[dict[str, Any]] = {"backbone": "backbone", "head": HEADS, "metrics": "metric"}

    def __init__(self, backbone: dict, head: dict, optim: Optim | dict, metrics: list[dict], weights: str | None = None):
        super().__init__()
        self.save_hyperparameters()

    def build(self):
        self.backbone = self.build_part("backbone")
        self.head = self.build_part("head", {**self.hparams.head, "dim": self.backbone.out_channels})

    def forward(self, x):
        return self.head(self.backbone(x))

    def step(self, batch, stage):
        logit = self(batch["x"])
        bce = nn.functional.binary_cross_entropy_with_logits(logit, batch["y"])
        return {"loss": bce, "bce": bce}, {"prob": torch.sigmoid(logit)}

    def metric_inputs(self, batch, out):
        return out["prob"][:, None], batch["y"][:, None]

    def predict_step(self, batch, batch_idx=0):
        return torch.sigmoid(self(batch["x"]))


class _Blobs(Dataset):
    def __init__(self, n, width, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = (torch.rand(n, generator=g) > 0.5).float()
        self.x = torch.randn(n, width, generator=g) + (self.y[:, None] * 2 - 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


@register("datamodule", "toy_dict_blobs")
class ToyDictBlobs(L.LightningDataModule):
    """Two Gaussian blobs as dict batches {x, y}."""

    def __init__(self, n: int = 128, width: int = 8, batch_size: int = 16, seed: int = 0):
        super().__init__()
        self.ds = _Blobs(n, width, seed)
        self.batch_size = batch_size

    def setup(self, stage=None):
        pass

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.ds, batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.ds, batch_size=64)
