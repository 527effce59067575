"""A toy system and datamodule registered into a temporary registry, to test the machinery.

``TOY_SIGNAL_AT="TERM:5"`` (or INT / USR1, several separated by commas) makes the toy system send
that signal to its own process during training step 5: a real signal, mid-epoch, at a known step.
"""
import os
import signal
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.core.registry import register
from zoo.data.sampling import EpochShuffleSampler, ResumableLoader


def _signal_at(step: int) -> None:
    for item in filter(None, os.environ.get("TOY_SIGNAL_AT", "").split(",")):
        name, _, at = item.partition(":")
        if int(at) == step:
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


@register("system", "toy_linear")
class ToyLinear(L.LightningModule):
    """Logistic regression; small enough for exact-resume and DDP tests."""

    def __init__(self, in_dim: int = 8, lr: float = 0.1, optimizer: Literal["sgd", "adam"] = "sgd",
                 hidden: list[int] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(in_dim, 1)

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.binary_cross_entropy_with_logits(self(x), y)

    def training_step(self, batch, i):
        _signal_at(self.global_step)
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, i):
        loss = self._loss(batch)
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/f1", -loss, sync_dist=True)

    def test_step(self, batch, i):
        x, y = batch
        acc = ((self(x) > 0).float() == y).float().mean()
        self.log("test/acc", acc, sync_dist=True)
        self.log("test/loss", self._loss(batch), sync_dist=True)

    def predict_step(self, batch, i=0):
        return torch.sigmoid(self(batch[0]))

    def figures(self, batch, n=3):
        return []

    def configure_optimizers(self):
        cls = torch.optim.SGD if self.hparams.optimizer == "sgd" else torch.optim.Adam
        return cls(self.parameters(), lr=self.hparams.lr)


@register("system", "toy_other")
class ToyOther(ToyLinear):
    """The same model under another name: a checkpoint of one must not resume as the other."""


@register("datamodule", "toy_blobs")
class ToyBlobs(L.LightningDataModule):
    """Two Gaussian blobs; a seeded, shuffled train split so resume equality is meaningful."""

    def __init__(self, n: int = 256, in_dim: int = 8, batch_size: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        y = (torch.rand(n, generator=g) > 0.5).float()
        x = torch.randn(n, in_dim, generator=g) + (y[:, None] * 2 - 1)
        self.ds = TensorDataset(x, y)
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self):
        # the zoo's loader: an order fixed by (seed, epoch), resumable mid-epoch
        return ResumableLoader(self.ds, batch_size=self.batch_size, sampler=EpochShuffleSampler(len(self.ds), self.seed))

    def setup(self, stage=None):
        pass

    def val_dataloader(self):
        return DataLoader(self.ds, batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.ds, batch_size=64)

    def predict_dataloader(self):
        return DataLoader(self.ds, batch_size=64)
