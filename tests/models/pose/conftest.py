"""Pose prior tests: one thread (2 shared cores); synthetic body models under ZOO_BODY_MODELS on request."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pose_body_dir(synth):
    """The session's synthetic SMPL / SMPL-H / SMPL-X stand-ins (tests/conftest.py's ``synth``, shared with the
    other suites so a full run writes them once)."""
    return synth[0]


@pytest.fixture
def body_models(pose_body_dir, monkeypatch):
    """ZOO_BODY_MODELS pointed at the synthetic stand-ins for one test."""
    monkeypatch.setenv("ZOO_BODY_MODELS", str(pose_body_dir))
    return pose_body_dir
