"""A temporary registry + recipes folder holding the toy components."""
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

TOY_REGISTRY = """
components:
  system:
    toy_linear: {import: "toy_components:ToyLinear", summary: "toy logistic regression"}
    toy_other: {import: "toy_components:ToyOther", summary: "toy logistic regression under another name"}
  datamodule:
    toy_blobs: {import: "toy_components:ToyBlobs", summary: "toy blobs"}
checkpoints:
  toy-ckpt: {component: system/toy_linear, source: "place the file here", file: model.safetensors,
             sha256: "0000000000000000000000000000000000000000000000000000000000000000",
             licence: "test only", recipe: toy/base, metrics: {}}
"""

TOY_BASE = """\
# toy base recipe
seed: 0
system: {name: toy_linear, in_dim: 8, lr: 0.1}
data: {name: toy_blobs, n: 128, batch_size: 16}
trainer: {accelerator: cpu, devices: 1, max_epochs: 2, log_every_n_steps: 1, num_sanity_val_steps: 0}
logger: {name: none}
checkpoint: {monitor: val/f1, mode: max}
"""

TOY_OTHER = """\
extends: [toy/base]
system: {name: toy_other}
"""

TOY_CHILD = """\
extends: [toy/base]
system: {lr: 0.05}
trainer: {max_epochs: 3}
"""


@pytest.fixture
def toy_env(zoo_files):
    """ZOO_REGISTRY / ZOO_RECIPES pointing at toy files; returns the recipes dir."""
    return zoo_files(TOY_REGISTRY, {"toy/base": TOY_BASE, "toy/child": TOY_CHILD, "toy/other": TOY_OTHER}, HERE)
