"""Safe loading (issue 8, item 8): zoo.load never unpickles arbitrary objects unless told to trust the file.

A real pickle payload (an object whose __reduce__ runs a shell command that creates a marker file) is saved
inside otherwise valid checkpoints; without ``trust`` the payload must not run and the error must name the
file, the refused global and how to allow it; with ``trust=True`` it runs, after a warning naming the file.
Checkpoints written by the run loop keep loading with ``weights_only=True`` only."""
import os
import re
import shlex

import pytest
import torch

import zoo
from zoo.core import hub, run
from zoo.core import recipe as R


class _Payload:
    """Unpickling this runs ``touch MARKER`` through os.system: the attack a hostile .ckpt carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _toy(seed=0):
    from toy_components import ToyLinear

    torch.manual_seed(seed)
    return ToyLinear(in_dim=8, lr=0.1)


def _evil_ckpt(path, marker):
    """A checkpoint that is valid for toy_linear in every respect, plus the payload."""
    m = _toy()
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams),
                "zoo": {"kind": "system", "name": "toy_linear"}, "payload": _Payload(marker)}, path)
    return m


@pytest.fixture
def spy_torch_load(monkeypatch):
    """Record the weights_only argument of every torch.load call."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.mark.parametrize("entry", ["hub.load", "zoo.load"])
def test_malicious_ckpt_payload_does_not_run_without_trust(toy_env, tmp_path, capfd, spy_torch_load, entry):
    load = hub.load if entry == "hub.load" else zoo.load
    path, marker = tmp_path / "evil.ckpt", tmp_path / "payload-ran"
    _evil_ckpt(path, marker)
    with pytest.raises(hub.CheckpointError) as e:
        load(path)
    msg = str(e.value)
    assert not marker.exists(), "the pickle payload ran without trust"
    assert False not in spy_torch_load, "torch.load ran with weights_only=False without trust"
    assert msg.startswith(f"cannot read checkpoint {path} with torch.load(weights_only=True): the file holds "
                          f"objects weights_only refuses (torch refused posix.system)")
    assert "pass trust=true on the command line or zoo.load(..., trust=True) in Python" in msg
    assert "if you trust this file, and only then" in msg and "runs any code it contains" in msg
    assert "trust=true: unpickling" not in capfd.readouterr().err


@pytest.mark.parametrize("entry", ["hub.load", "zoo.load"])
def test_malicious_ckpt_payload_runs_only_with_trust_and_a_warning(toy_env, tmp_path, capfd, entry):
    load = hub.load if entry == "hub.load" else zoo.load
    path, marker = tmp_path / "evil.ckpt", tmp_path / "payload-ran"
    m = _evil_ckpt(path, marker)
    got = load(path, trust=True)
    assert marker.exists(), "trust=True must unpickle the file in full (the payload is its proof)"
    err = capfd.readouterr().err
    assert f"trust=true: unpickling {path} with weights_only=False can run any code it contains" in err
    x = torch.randn(5, 8)
    torch.testing.assert_close(got(x), m.eval()(x), rtol=0, atol=0)


def test_trust_warning_only_when_a_full_unpickle_happens(toy_env, tmp_path, capfd, spy_torch_load):
    """trust=True on a clean checkpoint reads it with weights_only=True and warns about nothing."""
    m = _toy()
    path = tmp_path / "clean.ckpt"
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams),
                "zoo": {"kind": "system", "name": "toy_linear"}}, path)
    hub.load(path, trust=True)
    assert spy_torch_load == [True]
    assert "trust=true" not in capfd.readouterr().err


def test_corrupt_pickle_is_never_unpickled_in_full_without_trust(toy_env, tmp_path, spy_torch_load):
    """Random bytes named .ckpt used to reach torch.load(weights_only=False) (any UnpicklingError did)."""
    import random

    path = tmp_path / "noise.ckpt"
    path.write_bytes(bytes([0x80, 0x02]) + random.Random(0).randbytes(100_000))
    with pytest.raises(hub.CheckpointError, match=re.escape(f"cannot read checkpoint {path} with "
                                                            f"torch.load(weights_only=True): ")) as e:
        hub.load(path)
    assert "refuses" not in str(e.value) and "corrupt" in str(e.value)
    assert False not in spy_torch_load


def test_weights_file_payload_needs_trust(toy_env, tmp_path, capfd):
    """load_weights (and zoo.load(..., component=...) of a foreign file) follow the same rule."""
    path, marker = tmp_path / "evil.pt", tmp_path / "payload-ran"
    m = _toy(1)
    torch.save({"state_dict": m.state_dict(), "payload": _Payload(marker)}, path)
    target = _toy(2)
    with pytest.raises(hub.CheckpointError) as e:
        hub.load_weights(target, path)
    assert not marker.exists()
    assert "torch refused posix.system" in str(e.value)
    assert "or list the type in ToyLinear.weights_only_globals" in str(e.value)
    with pytest.raises(hub.CheckpointError, match="torch refused posix.system"):
        hub.load(path, component="system/toy_linear")
    assert not marker.exists()
    got = hub.load(path, component="system/toy_linear", trust=True)
    assert marker.exists()
    assert f"trust=true: unpickling {path}" in capfd.readouterr().err
    x = torch.randn(3, 8)
    torch.testing.assert_close(got(x), m.eval()(x), rtol=0, atol=0)


def test_run_loop_checkpoints_load_with_weights_only(toy_env, capfd, spy_torch_load):
    res = run.train(R.load("toy/base", ["run.name=safe", "test=false", "export=false"]))
    assert res.exit_code == 0
    spy_torch_load.clear()
    for name in ("last.ckpt", "best.ckpt"):
        model = hub.load(res.run_dir / "checkpoints" / name)
        assert type(model).__name__ == "ToyLinear" and model.hparams.lr == 0.1
    assert spy_torch_load == [True, True], "run-loop checkpoints must load with weights_only=True alone"
    assert "trust=true" not in capfd.readouterr().err


def test_legacy_format_checkpoint_still_loads_without_trust(toy_env, tmp_path):
    """torch.load(weights_only=True) reads legacy (non-zip) files; loading them needs no trust."""
    m = _toy(3)
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams),
                "zoo": {"kind": "system", "name": "toy_linear"}}, path, _use_new_zipfile_serialization=False)
    x = torch.randn(2, 8)
    torch.testing.assert_close(hub.load(path)(x), m.eval()(x), rtol=0, atol=0)


def test_eval_command_line_accepts_trust(toy_env, capsys):
    """`tools/eval.py recipe=... ckpt=... trust=true` parses; the recipe carries trust (default false)."""
    assert run.cli("eval", ["recipe=toy/base", "ckpt=some.ckpt", "trust=true", "--print"]) == 0
    assert "\ntrust: true\n" in capsys.readouterr().out
    assert R.load("toy/base")["trust"] is False
