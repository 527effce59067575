"""Fixtures for body tests: one synthetic model directory per test session (built once, ~8 s)."""
import pytest


@pytest.fixture(scope="session")
def body_dir(tmp_path_factory):
    from zoo.body.synthetic import write_synthetic_body_models

    return write_synthetic_body_models(tmp_path_factory.mktemp("body_models"))
