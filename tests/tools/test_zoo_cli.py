"""tools/zoo.py: list / show / verify exit codes and output, docs generation and --check, no torch for list/show."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "zoo.py"

COMPONENT_SRC = '''\
"""Components for the CLI tests; importing this module imports torch, which list/show must avoid."""
from typing import Literal

import torch

from zoo.core.registry import register


class _Base(torch.nn.Module):
    """Base with the constructor, to check inherited signatures are found."""

    def __init__(self, width: int = 4, mode: Literal["a", "b"] = "a", *, scales: list[float] | None = None,
                 tag="x"):
        super().__init__()
        self._zoo_config = {"width": width, "mode": mode, "scales": scales, "tag": tag}
        self.lin = torch.nn.Linear(width, width)


@register("backbone", "cli_test_net")
class CliNet(_Base):
    """Inherits its constructor."""


@register("metric", "cli_test_metric")
class CliMetric:
    """Needs one argument."""

    def __init__(self, path: str, k: int = 3):
        self.path = path
'''

REGISTRY = """\
components:
  backbone:
    cli_test_net: {import: "cli_pkg.comps:CliNet", summary: "test net | with a pipe"}
  metric:
    cli_test_metric: {import: "cli_pkg.comps:CliMetric", summary: "test metric"}
    cli_test_net2: {import: "cli_pkg.comps:CliNet", summary: "second entry (not decorated; only listed)"}
checkpoints:
  cli-ckpt: {component: backbone/cli_test_net, source: "https://example.org/cli.safetensors", file: model.safetensors,
             sha256: "%s", licence: "research only", recipe: toy/base, metrics: {f1: 0.5}}
"""


@pytest.fixture
def cli_env(tmp_path):
    """A temporary registry, recipes folder, cache home and component package; returns (env, tmp_path)."""
    pkg = tmp_path / "pkgs" / "cli_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "comps.py").write_text(COMPONENT_SRC)
    (tmp_path / "registry.yaml").write_text(REGISTRY % ("0" * 64))
    rec = tmp_path / "recipes" / "toy"
    rec.mkdir(parents=True)
    (rec / "base.yaml").write_text("# Toy base: one line description.\nseed: 0\n")
    (rec / "plain.yaml").write_text("seed: 1\n")
    env = dict(os.environ, ZOO_REGISTRY=str(tmp_path / "registry.yaml"), ZOO_RECIPES=str(tmp_path / "recipes"),
               ZOO_HOME=str(tmp_path / "home"), PYTHONPATH=str(tmp_path / "pkgs"))
    return env, tmp_path


def run(env, *args):
    """Run tools/zoo.py; returns the CompletedProcess."""
    return subprocess.run([sys.executable, str(TOOL), *args], env=env, capture_output=True, text=True, timeout=120)


def test_list_filters_by_kind_and_pattern(cli_env):
    env, _ = cli_env
    r = run(env, "list")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        "KIND      NAME             SUMMARY",
        "backbone  cli_test_net     test net | with a pipe",
        "metric    cli_test_metric  test metric",
        "metric    cli_test_net2    second entry (not decorated; only listed)",
    ]
    r = run(env, "list", "metric", "*net*")
    assert r.returncode == 0 and [l.split()[1] for l in r.stdout.splitlines()[1:]] == ["cli_test_net2"]
    r = run(env, "list", "cli_test_n*")  # one argument that is not a kind is a pattern
    assert [l.split()[1] for l in r.stdout.splitlines()[1:]] == ["cli_test_net", "cli_test_net2"]
    r = run(env, "list", "checkpoint")
    assert r.stdout.splitlines()[1].split()[:2] == ["checkpoint", "cli-ckpt"]
    r = run(env, "list", "metrc", "x*")
    assert r.returncode == 2 and "unknown component kind 'metrc'; did you mean metric?" in r.stderr


def test_show_signature_without_importing_torch(cli_env):
    env, _ = cli_env
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["zoo.py", "show", "cli_test_net"]
        try:
            runpy.run_path({str(TOOL)!r}, run_name="__main__")
        except SystemExit as e:
            print("exit", e.code)
        print("torch imported:", "torch" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = r.stdout.splitlines()
    assert lines[:4] == [
        "backbone/cli_test_net",
        "  import:    cli_pkg.comps:CliNet",
        "  summary:   test net | with a pipe",
        "  signature: CliNet(width: int = 4, mode: Literal['a', 'b'] = 'a', scales: list[float] | None = None, tag='x')",
    ]
    assert lines[-2:] == ["exit 0", "torch imported: False"]
    r = run(env, "show", "metric/cli_test_metric")
    assert r.returncode == 0 and "signature: CliMetric(path: str, k: int = 3)" in r.stdout
    assert "    path  str   required\n    k     int   3\n" in r.stdout


def test_show_errors_and_checkpoint(cli_env):
    env, tmp = cli_env
    r = run(env, "show", "cli_test_metrik")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: no component or checkpoint named 'cli_test_metrik'; closest: cli_test_metric, " \
                               "cli_test_net, cli_test_net2"
    r = run(env, "show", "backbone/nope")
    assert r.returncode == 2 and "unknown backbone 'nope'" in r.stderr
    r = run(env, "show", "cli-ckpt")
    assert r.returncode == 0
    assert "  component: backbone/cli_test_net" in r.stdout and "  licence:   research only" in r.stdout
    local = tmp / "home" / "checkpoints" / "cli-ckpt" / "model.safetensors"
    assert f"  local:     {local} (missing)" in r.stdout


def test_verify_exit_codes(cli_env, monkeypatch):
    env, tmp = cli_env
    monkeypatch.syspath_prepend(str(tmp / "pkgs"))
    monkeypatch.setenv("ZOO_REGISTRY", env["ZOO_REGISTRY"])
    from zoo.core import hub, registry
    from zoo.core.atomic import sha256_file

    registry.index(reload=True)
    try:
        cls = registry.get("backbone", "cli_test_net")
        out = hub.export(cls(width=3), tmp / "home" / "checkpoints" / "cli-ckpt")
    finally:
        registry._INDEX_CACHE.clear()
    sha = sha256_file(out / "model.safetensors")
    r = run(env, "verify", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"OK {out / 'model.safetensors'}"
    assert f"  sha256 {sha} (matches {sha})" in r.stdout
    # the named entry records a wrong hash (zeros): named verification must fail, naming both hashes
    r = run(env, "verify", "cli-ckpt")
    assert r.returncode == 1
    assert f"sha256 mismatch for {out / 'model.safetensors'}: expected {'0' * 64} (registry.yaml), got {sha}" in r.stderr
    (tmp / "registry.yaml").write_text(REGISTRY % sha)
    assert run(env, "verify", "zoo://cli-ckpt").returncode == 0
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[:-4])
    r = run(env, "verify", "cli-ckpt")
    assert r.returncode == 1 and "truncated safetensors file" in r.stderr
    r = run(env, "verify", str(tmp / "nowhere"))
    assert r.returncode == 1 and f"checkpoint path not found: {tmp / 'nowhere'}" in r.stderr
    r = run(env, "verify", "cli-ckpd")
    assert r.returncode == 1 and "unknown checkpoint 'cli-ckpd'; closest: cli-ckpt" in r.stderr


def test_docs_generate_deterministic_and_check_detects_stale(cli_env):
    env, tmp = cli_env
    out = tmp / "docs" / "reference.md"
    r = run(env, "docs", "--check", "--out", str(out))
    assert r.returncode == 1 and "reference.md is missing" in r.stderr
    assert run(env, "docs", "--out", str(out)).returncode == 0
    first = out.read_text()
    assert run(env, "docs", "--out", str(out)).returncode == 0
    assert out.read_text() == first
    assert "| `toy/base` | Toy base: one line description. |" in first
    assert "| `toy/plain` | (no description) |" in first
    assert "#### `backbone/cli_test_net`\n\ntest net \\| with a pipe\n" in first
    assert "| `mode` | `Literal['a', 'b']` | `'a'` |" in first
    assert "| `scales` | `list[float] \\| None` | `None` |" in first
    assert "| `path` | `str` | required |" in first
    assert first.index("### backbone") < first.index("### metric")  # kinds in registry order
    r = run(env, "docs", "--check", "--out", str(out))
    assert r.returncode == 0 and "is up to date" in r.stdout
    (tmp / "recipes" / "toy" / "new.yaml").write_text("# Added later.\n")
    r = run(env, "docs", "--check", "--out", str(out))
    assert r.returncode == 1
    assert r.stderr.strip() == f"{out} is out of date: run `python tools/zoo.py docs` and commit the result"


def test_tools_dir_first_on_path_still_imports_the_package():
    """Scripts in tools/ run with tools/ first on sys.path; `import zoo` must still give the package."""
    code = "import sys; sys.path.insert(0, 'tools'); import zoo, zoo.core.registry; print(zoo.__file__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == ROOT / "zoo" / "__init__.py"
