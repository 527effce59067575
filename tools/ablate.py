#!/usr/bin/env python
"""Train a grid of recipe overrides x seeds, one run per (cell, seed), and tabulate the test metrics.

    python tools/ablate.py recipe=deco/synthetic --grid system.lifter.name=camera_lifter,identity
                           [--grid KEY=a,b ...] [--seeds 0,1,2] [--executor local|slurm|submitit-local]
                           [--in-process] [--out DIR] [--slurm KEY=VALUE ...] [--metrics test/f1,...]
                           [--no-wait] [key=value ...]
    python tools/ablate.py --collect DIR [--metrics ...]

The cells are the cartesian product of the --grid lists (values split on commas outside brackets
and quotes: --grid system.hidden=[4,8],[16]); every cell runs once per seed (default: the
recipe's seed) as the recipe with the cell's overrides, the other key=value overrides and
seed=S. Every cell's recipe is loaded and checked before anything runs, so a grid key the
recipe does not have stops the ablation naming it (exit 2).

Each run writes its usual run directory at OUT/runs/<recipe>/<cell>,seed=<S>/ (OUT defaults to
<run.dir>/ablate/<recipe>-<time>); its W&B run is tagged ablate:<ablation>, each grid value and
the seed (and grouped by the ablation where the recipe's logger has a group key).

  --executor local           cells one after another on this machine, each in its own Python
                             process (~10 s of imports each; --in-process runs them in this one).
                             A failed cell is recorded with its exit code and the next one runs.
  --executor slurm           one SLURM job per cell through submitit (pip install submitit);
                             --slurm partition=gpu --slurm time=240 (minutes or [D-]HH:MM:SS)
                             --slurm gpus_per_node=4 --slurm nodes=1 --slurm cpus_per_task=8
                             --slurm mem=64G; tasks_per_node defaults to gpus_per_node (one task
                             per GPU, as Lightning's SLURM environment expects) and the cells get
                             trainer.devices / trainer.num_nodes to match unless given. Any other
                             KEY is passed to submitit as slurm_KEY (account, qos, constraint...).
                             Waits for the jobs, or with --no-wait prints their ids and exits;
                             --collect OUT then gathers the tables.
  --executor submitit-local  the same jobs through submitit's LocalExecutor (processes here).

Writes OUT/ablation.json (the plan), OUT/cells/<cell>.json (each run's exit code, run directory
and metrics), OUT/runs.csv (one row per run, raw values), OUT/ablation.csv and OUT/ablation.md
(one row per cell: mean and sample standard deviation over seeds of every test/* metric, or
those --metrics names, with n_seeds and failed), and prints the Markdown table.

Exit codes: 0 every run finished; 1 a run failed (or has no result yet, with --collect); 2 bad
input (recipe, grid, seeds, flags), before anything runs; 130 / 143 stopped by SIGINT / SIGTERM.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _cli  # noqa: F401  (puts the checkout on sys.path)

EXECUTORS = ("local", "slurm", "submitit-local")
MANIFEST = "ablation.json"
# --slurm keys with their submitit (AutoExecutor) names; any other KEY goes to submitit as slurm_KEY
SLURM_KEYS = {"partition": "slurm_partition", "time": "timeout_min", "gpus_per_node": "gpus_per_node",
              "nodes": "nodes", "tasks_per_node": "tasks_per_node", "cpus_per_task": "cpus_per_task",
              "mem": "mem_gb", "name": "name"}
SLURM_INT_KEYS = ("gpus_per_node", "nodes", "tasks_per_node", "cpus_per_task")
WANDB_TAG_MAX = 64  # W&B refuses longer tags
NAME_MAX = 150  # run directory names above this are shortened with a hash


class AblateError(Exception):
    """Bad input to the ablation (recipe, grid, seeds, flags): reported as ``error: ...`` with exit code 2."""


@dataclass
class Cell:
    """One run of the ablation: the grid values of its row, its seed, and its (file-system safe) name."""

    values: dict[str, str]
    seed: int
    name: str = ""

    @property
    def row(self) -> str:
        """The row the run belongs to: the grid values without the seed."""
        return ",".join(f"{k}={v}" for k, v in self.values.items()) or "(recipe)"


# --------------------------------------------------------------------------- parsing


def split_values(text: str) -> list[str]:
    """Split a --grid value list on the commas outside brackets, braces and quotes: ``[4,8],[16]`` is two values."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


# Keys the ablation sets itself for every run.
OWNED_KEYS = {"seed": "use --seeds", "run.name": "each run is named after its cell",
              "run.dir": "runs go under --out", "resume": "an ablation starts new runs"}


def _owned(key: str) -> str | None:
    return next((why for k, why in OWNED_KEYS.items() if key == k or key.startswith(k + ".")), None)


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``KEY=a,b`` per --grid into {key: [values]}, in the order given; AblateError naming a malformed one."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, eq, rest = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise AblateError(f"--grid {item!r} is not of the form KEY=value1,value2 (e.g. --grid system.lr=1e-3,1e-4)")
        if any(not part for part in key.split(".")):
            raise AblateError(f"--grid {item!r}: the key '{key}' has an empty part")
        if _owned(key):
            raise AblateError(f"--grid {key}: the ablation sets {key} itself ({_owned(key)})")
        if key in grid:
            raise AblateError(f"--grid {key} is given twice; list all its values in one --grid {key}=a,b")
        values = split_values(rest)
        if not rest.strip() or any(v == "" for v in values):
            raise AblateError(f"--grid {key}: empty value in {rest!r}; give a comma-separated list, e.g. "
                              f"--grid {key}=a,b")
        if len(set(values)) != len(values):
            raise AblateError(f"--grid {key}: a value is listed twice in {rest!r}")
        grid[key] = values
    return grid


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` into [0, 1, 2]; AblateError naming an entry that is not an integer."""
    seeds = []
    for part in text.split(","):
        try:
            seeds.append(int(part.strip()))
        except ValueError:
            raise AblateError(f"--seeds {text!r}: '{part.strip()}' is not an integer (e.g. --seeds 0,1,2)") from None
    if len(set(seeds)) != len(seeds):
        raise AblateError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def safe_name(text: str) -> str:
    """A run directory name from a cell: characters other than letters, digits and ``._=,+-`` become ``_``;
    names over NAME_MAX characters are cut and end with a hash of the whole text, so they stay unique."""
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text).lstrip(".-") or "_"
    if len(name) > NAME_MAX:
        name = f"{name[:NAME_MAX - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name


def make_cells(grid: dict[str, list[str]], seeds: list[int]) -> list[Cell]:
    """The cartesian product of the grid values, times the seeds, each with a unique run name."""
    cells, used = [], set()
    for combo in itertools.product(*grid.values()):
        for seed in seeds:
            cell = Cell(dict(zip(grid, combo, strict=True)), seed)
            base = safe_name(",".join([*(f"{k}={v}" for k, v in cell.values.items()), f"seed={seed}"]))
            name, n = base, 1
            while name in used:  # two values that differ only in characters the file system name drops
                name, n = f"{base}-{n}", n + 1
            used.add(name)
            cell.name = name
            cells.append(cell)
    return cells


def _quote(text: str) -> str:
    """A string value for a key=value override (OmegaConf's grammar), whatever characters it holds."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_slurm(items: list[str]) -> dict[str, Any]:
    """--slurm KEY=VALUE items into submitit's AutoExecutor parameters (see SLURM_KEYS)."""
    params: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise AblateError(f"--slurm {item!r} is not of the form KEY=VALUE (e.g. --slurm partition=gpu)")
        name = SLURM_KEYS.get(key, key if key.startswith("slurm_") else f"slurm_{key}")
        try:
            if key in SLURM_INT_KEYS:
                params[name] = int(value)
            elif key == "time":
                params[name] = _minutes(value)
            elif key == "mem":
                params[name] = _gigabytes(value)
            else:
                params[name] = value
        except ValueError:
            raise AblateError(f"--slurm {key}={value}: not a valid value for {key}") from None
    if "gpus_per_node" in params:
        params.setdefault("tasks_per_node", params["gpus_per_node"])
    return params


def _minutes(value: str) -> int:
    """SLURM time (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in whole minutes, rounded up."""
    days, _, clock = value.rpartition("-") if "-" in value else ("0", "", value)
    parts = [int(p) for p in clock.split(":")]
    if "-" in value:
        parts += [0] * (3 - len(parts))
        h, m, s = parts
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts
    return int(days) * 1440 + h * 60 + m + math.ceil(s / 60)


def _gigabytes(value: str) -> float:
    """64G / 64000M / 1T / 64 (GB) in GB."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", value.strip().upper())
    if not m:
        raise ValueError(value)
    return float(m[1]) * {"K": 1e-6, "M": 1e-3, "G": 1, "T": 1e3, "": 1}[m[2]]


# --------------------------------------------------------------------------- planning


def _recipe_errors():
    from zoo.core import registry
    from zoo.core.batch import DataError
    from zoo.core.hub import CheckpointError
    from zoo.core.recipe import RecipeError

    return RecipeError, FileNotFoundError, registry.RegistryError, CheckpointError, DataError


def _logger_overrides(rec, ablation: str, cell: Cell) -> list[str]:
    """W&B settings that tie a run to its ablation: tags (the ablation, each grid value, the seed) added to the
    recipe's own, and group / job_type where the recipe's logger section has those keys."""
    from zoo.core.recipe import LOGGER_KEYS

    def tag(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._=,:+/-]", "_", text)[:WANDB_TAG_MAX]

    tags = [str(t) for t in (rec["logger"].get("tags") or [])]
    tags += [tag(f"ablate:{ablation}"), *(tag(f"{k}={v}") for k, v in cell.values.items()), f"seed={cell.seed}"]
    out = [f"logger.tags=[{','.join(_quote(t) for t in dict.fromkeys(tags))}]"]
    if "group" in LOGGER_KEYS:
        out.append(f"logger.group={_quote(ablation)}")
    if "job_type" in LOGGER_KEYS:
        out.append(f"logger.job_type={_quote(tag(cell.row))}")
    return out


def plan(recipe: str, overrides: list[str], grid: dict[str, list[str]], seeds: list[int] | None, out: str | None,
         slurm: dict[str, Any]) -> tuple[Path, str, list[Cell], list[list[str]], str]:
    """Load and check the recipe of every run before anything runs: (out dir, ablation name, cells, the
    overrides of each cell, the recipe's name as run directories use it). AblateError naming the key for a recipe that does not load."""
    from zoo.core import recipe as R

    errors = _recipe_errors()
    for ov in overrides:
        key = ov.partition("=")[0]
        if _owned(key):
            raise AblateError(f"{key}= cannot be set on an ablation's command line: {_owned(key)}")
    try:
        base = R.load(recipe, overrides)
    except errors as e:
        raise AblateError(str(e)) from None
    mode = base["run"].get("mode", "fit")
    if mode != "fit":
        raise AblateError(f"run.mode={mode}: an ablation trains (run.mode=fit); evaluate checkpoints with tools/eval.py")
    seeds = seeds if seeds is not None else [int(base["seed"])]
    if out:
        out_dir = Path(out).expanduser()
    else:
        stem = f"{base.name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
        out_dir, n = Path(base["run"]["dir"]) / "ablate" / stem, 1
        while out_dir.exists():
            out_dir, n = out_dir.with_name(f"{stem}-{n}"), n + 1
    if (out_dir / MANIFEST).exists():
        raise AblateError(f"--out {out_dir} already holds an ablation ({MANIFEST}); gather it with --collect "
                          f"{out_dir}, or choose another --out")
    out_dir = out_dir.resolve()
    ablation = safe_name(out_dir.name)
    cells = make_cells(grid, seeds)
    extra = []
    if slurm.get("gpus_per_node"):  # one task per GPU: Lightning checks devices x num_nodes against SLURM's tasks
        given = {ov.partition("=")[0] for ov in overrides} | set(grid)
        if "trainer.devices" not in given:
            extra.append(f"trainer.devices={slurm.get('tasks_per_node', slurm['gpus_per_node'])}")
        if "trainer.num_nodes" not in given:
            extra.append(f"trainer.num_nodes={slurm.get('nodes', 1)}")
    per_cell = []
    for cell in cells:
        ovs = [*overrides, *extra, *(f"{k}={v}" for k, v in cell.values.items()), f"seed={cell.seed}",
               f"run.dir={_quote(str(out_dir / 'runs'))}", f"run.name={_quote(cell.name)}",
               *_logger_overrides(base, ablation, cell)]
        try:
            R.load(recipe, ovs)
        except errors as e:
            msg = str(e)
            bad = next((k for k in cell.values if f"'{k}" in msg or f"{k}=" in msg), None)
            where = f"--grid {bad}" if bad else f"cell {cell.name}"
            raise AblateError(f"{where}: {msg}") from None
        per_cell.append(ovs)
    return out_dir, ablation, cells, per_cell, base.name


# --------------------------------------------------------------------------- one run


def run_cell(spec_path: str | Path) -> int:
    """Train one run of the ablation from its spec file and write its result file; returns the exit code.

    The same function runs in this process (--in-process), in a child process (--executor local) and in each
    SLURM task. A run whose directory already holds metrics.json is not trained again; one that holds a
    checkpoint (a requeued or interrupted job) is resumed from it. Under SLURM only rank 0 writes the result;
    the other ranks are given rank 0's run directory (run.name is fixed, so they would otherwise pick a new one).
    """
    from zoo.core import recipe as R
    from zoo.core import run
    from zoo.core.atomic import atomic_write_text

    spec = json.loads(Path(spec_path).read_text())
    expected = Path(spec["run_dir"])
    overrides = list(spec["overrides"])
    rank0 = run.is_global_zero()
    if not rank0:
        os.environ[run.RUN_DIR_ENV] = str(expected)
    t0 = time.time()
    result: dict[str, Any] = {"cell": spec["cell"], "seed": spec["seed"], "run_dir": str(expected), "error": None}
    if (expected / "metrics.json").is_file():
        print(f"[ablate] {spec['cell']}: already finished in {expected}; not trained again", flush=True)
        result.update(exit_code=0, metrics=json.loads((expected / "metrics.json").read_text()))
    else:
        if (expected / "checkpoints" / "last.ckpt").is_file() or any(expected.glob("hpc_ckpt_*.ckpt")):
            print(f"[ablate] {spec['cell']}: resuming {expected}", flush=True)
            overrides.append(f"resume={_quote(str(expected))}")
        try:
            res = run.train(R.load(spec["recipe"], overrides))
            result.update(exit_code=res.exit_code, run_dir=str(res.run_dir), metrics=res.metrics)
        except _recipe_errors() as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            result.update(exit_code=2, error=str(e), metrics={})
        except KeyboardInterrupt:
            result.update(exit_code=run.EXIT_INTERRUPTED, error="stopped by SIGINT (Ctrl-C)", metrics={})
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            result.update(exit_code=code, error=f"SystemExit({e.code!r})", metrics={})
        except Exception as e:  # noqa: BLE001 - recorded as the cell's failure; the ablation goes on
            traceback.print_exc()
            result.update(exit_code=1, error=f"{type(e).__name__}: {e}", metrics={})
    result["seconds"] = round(time.time() - t0, 3)
    if rank0:
        atomic_write_text(spec["result"], json.dumps(result, indent=2) + "\n")
    return int(result["exit_code"])


def _worker_command(spec: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--_cell", str(spec)]


def _record_crash(entry: dict, code: int, error: str) -> None:
    """A result for a run whose process ended without writing one (killed, out of memory, import error)."""
    from zoo.core.atomic import atomic_write_text

    if not Path(entry["result"]).is_file():
        atomic_write_text(entry["result"], json.dumps({"cell": entry["name"], "seed": entry["seed"],
                                                       "run_dir": entry["run_dir"], "exit_code": code,
                                                       "error": error, "metrics": {}}, indent=2) + "\n")


def run_local(entries: list[dict], in_process: bool) -> int | None:
    """Run every cell in sequence; a failed one is recorded and the next runs. Returns 130 / 143 when a run was
    stopped by a signal (the rest are not started), else None."""
    for i, entry in enumerate(entries, 1):
        print(f"[ablate] run {i}/{len(entries)}: {entry['name']}", flush=True)
        if in_process:
            code = run_cell(entry["spec"])
        else:
            code = _run_child(entry)
        if code in (130, 143):
            print(f"[ablate] stopped during {entry['name']}; {len(entries) - i} run(s) not started", file=sys.stderr)
            return code
    return None


def _run_child(entry: dict) -> int:
    """The cell in its own Python process, its output shown here and written to the cell's log file."""
    Path(entry["log"]).parent.mkdir(parents=True, exist_ok=True)
    with open(entry["log"], "w") as log, subprocess.Popen(
            _worker_command(Path(entry["spec"])), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1) as proc:
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            code = proc.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT: let it save last.ckpt and exit
            code = proc.wait()
            code = code if code in (130, 143) else 130
    _record_crash(entry, code, f"the run's process exited with {code} without a result (see {entry['log']})")
    return code


def _executor(kind: str, folder: Path, params: dict[str, Any], name: str):
    try:
        import submitit
    except ImportError:
        raise AblateError(f"--executor {kind} needs submitit, which is not installed: pip install submitit") from None
    cluster = "slurm" if kind == "slurm" else "local"
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        if cluster == "local":  # the SLURM-only settings mean nothing to local processes
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        ex.update_parameters(name=name, **params)
    except (ValueError, TypeError, RuntimeError) as e:
        raise AblateError(f"--executor {kind}: {e}") from None
    return ex


def run_submitit(entries: list[dict], ex, wait: bool, manifest: Path) -> None:
    """One job per cell; records the job ids in the manifest; waits for them unless ``wait`` is False."""
    jobs = []
    for entry in entries:
        job = ex.submit(subprocess.run, _worker_command(Path(entry["spec"])), check=False)
        entry["job_id"] = str(job.job_id)
        jobs.append(job)
        print(f"[ablate] submitted {entry['name']}: job {job.job_id}", flush=True)
    data = json.loads(manifest.read_text())
    data["cells"] = entries
    _write_json(manifest, data)
    if not wait:
        return
    for entry, job in zip(entries, jobs, strict=True):
        try:
            done = job.results()[0]  # task 0 (rank 0) of the job
            code = int(getattr(done, "returncode", 0))
            _record_crash(entry, code, f"job {job.job_id} exited with {code} without a result (see {job.paths.stdout})")
        except Exception as e:  # noqa: BLE001 - a job that died is one failed cell
            _record_crash(entry, 1, f"job {job.job_id}: {type(e).__name__}: {str(e)[-1000:]}")


def _write_json(path: Path, data: Any) -> None:
    from zoo.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- tables


def _fmt(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def collect(out_dir: Path, metrics: list[str] | None = None) -> int:
    """Gather every run's metrics.json into OUT/runs.csv, OUT/ablation.csv and OUT/ablation.md, print the
    Markdown table; returns 0, or 1 when a run failed or has no result yet."""
    from zoo.core.atomic import atomic_write_text

    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        raise AblateError(f"--collect {out_dir}: no {MANIFEST} there (not an ablation's output folder)")
    data = json.loads(manifest.read_text())
    keys = [k for k, _ in data["grid"]]
    runs = []
    for entry in data["cells"]:
        res_path = Path(entry["result"])
        res = json.loads(res_path.read_text()) if res_path.is_file() else None
        status, values = "pending", {}
        if res is not None:
            status = "ok" if res["exit_code"] == 0 else "failed"
            mfile = Path(res["run_dir"]) / "metrics.json"
            if status == "ok":
                values = json.loads(mfile.read_text()) if mfile.is_file() else dict(res.get("metrics") or {})
        runs.append({"entry": entry, "res": res, "status": status, "values": values})
    chosen = metrics or data.get("metrics") or sorted({k for r in runs for k in r["values"] if k.startswith("test/")})
    held = sorted({k for r in runs for k in r["values"]})
    for m in chosen:
        if runs and any(r["status"] == "ok" for r in runs) and m not in held:
            print(f"[ablate] warning: metric {m} is in no run's metrics.json (they hold: {', '.join(held) or 'none'})",
                  file=sys.stderr)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cell", *keys, "seed", "status", "exit_code", "run_dir", *chosen])
    for r in runs:
        e, res = r["entry"], r["res"] or {}
        w.writerow([e["name"], *(e["values"][k] for k in keys), e["seed"], r["status"], res.get("exit_code", ""),
                    res.get("run_dir", ""), *(repr(float(r["values"][m])) if m in r["values"] else "" for m in chosen)])
    atomic_write_text(out_dir / "runs.csv", buf.getvalue())

    rows: dict[str, list[dict]] = {}
    for r in runs:
        rows.setdefault(r["entry"]["row"], []).append(r)
    head = keys or ["recipe"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*head, "n_seeds", "failed", "pending", *(c for m in chosen for c in (f"{m} mean", f"{m} std"))])
    md = [f"| {' | '.join([*head, *chosen, 'n_seeds', 'failed'])} |",
          f"|{'|'.join(['---'] * len(head) + ['---:'] * (len(chosen) + 2))}|"]
    for row_runs in rows.values():
        e = row_runs[0]["entry"]
        cells = [e["values"][k] for k in keys] if keys else [data["recipe"]]
        ok = [r for r in row_runs if r["status"] == "ok"]
        failed = sum(r["status"] == "failed" for r in row_runs)
        pending = sum(r["status"] == "pending" for r in row_runs)
        csv_vals, md_vals = [], []
        for m in chosen:
            xs = [float(r["values"][m]) for r in ok if m in r["values"]]
            if not xs:
                csv_vals += ["", ""]
                md_vals.append("—")
                continue
            mean = statistics.fmean(xs)
            std = statistics.stdev(xs) if len(xs) >= 2 else None
            csv_vals += [repr(mean), "" if std is None else repr(std)]
            md_vals.append(_fmt(mean, std))
        w.writerow([*cells, len(ok), failed, pending, *csv_vals])
        md.append(f"| {' | '.join([*(c.replace('|', chr(92) + '|') for c in cells), *md_vals, str(len(ok)), str(failed)])} |")
    atomic_write_text(out_dir / "ablation.csv", buf.getvalue())
    n_failed = sum(r["status"] == "failed" for r in runs)
    n_pending = sum(r["status"] == "pending" for r in runs)
    title = f"# Ablation {out_dir.name}: {data['recipe']}, seeds {', '.join(map(str, data['seeds']))}"
    notes = [f"{n_failed} run(s) failed: " + ", ".join(
        f"{r['entry']['name']} (exit {r['res']['exit_code']})" for r in runs if r["status"] == "failed")] \
        if n_failed else []
    if n_pending:
        notes.append(f"{n_pending} run(s) have no result yet: " + ", ".join(
            r["entry"]["name"] + (f" (job {r['entry']['job_id']})" if r["entry"].get("job_id") else "")
            for r in runs if r["status"] == "pending"))
    text = "\n".join([title, "", *md, *([""] + notes if notes else [])]) + "\n"
    atomic_write_text(out_dir / "ablation.md", text)
    print(text, end="")
    print(f"tables written to {out_dir / 'ablation.md'}, {out_dir / 'ablation.csv'}, {out_dir / 'runs.csv'}")
    return 1 if n_failed or n_pending else 0


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # noqa: D102 - argparse's own errors, in this tool's form
        raise AblateError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tools/ablate.py", add_help=False)
    p.add_argument("args", nargs="*")
    p.add_argument("--grid", action="append", default=[])
    p.add_argument("--seeds")
    p.add_argument("--executor", default="local")
    p.add_argument("--in-process", action="store_true")
    p.add_argument("--out")
    p.add_argument("--slurm", action="append", default=[])
    p.add_argument("--metrics")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--collect")
    p.add_argument("--_cell", help=argparse.SUPPRESS)
    p.add_argument("-h", "--help", action="store_true")
    return p


def main(argv: list[str]) -> int:
    """The ablation from command-line arguments; returns the exit code."""
    try:
        return _main(argv)
    except AblateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    a = _parser().parse_intermixed_args(argv)
    if a.help:
        print(__doc__)
        return 0
    if a._cell:
        return run_cell(a._cell)
    metrics = [m.strip() for m in a.metrics.split(",") if m.strip()] if a.metrics else None
    if a.metrics is not None and not metrics:
        raise AblateError("--metrics: give metric names, e.g. --metrics test/f1,test/precision")
    if a.collect:
        if a.args or a.grid:
            raise AblateError("--collect OUT takes no recipe, overrides or --grid (only --metrics)")
        return collect(Path(a.collect), metrics)
    if a.executor not in EXECUTORS:
        raise AblateError(f"--executor {a.executor}: must be one of {', '.join(EXECUTORS)}")
    if a.in_process and a.executor != "local":
        raise AblateError("--in-process goes with --executor local")
    if a.no_wait and a.executor == "local":
        raise AblateError("--no-wait goes with --executor slurm or submitit-local")
    if a.slurm and a.executor == "local":
        raise AblateError("--slurm settings go with --executor slurm or submitit-local")
    bad = [x for x in a.args if "=" not in x]
    if bad:
        raise AblateError(f"{bad[0]!r} is not of the form key=value (the recipe is recipe=NAME; see --help)")
    recipe = [x.partition("=")[2] for x in a.args if x.startswith("recipe=")]
    if len(recipe) != 1 or not recipe[0]:
        raise AblateError("give the recipe once, as recipe=NAME (e.g. recipe=deco/synthetic; see --help)")
    overrides = [x for x in a.args if not x.startswith("recipe=")]
    grid = parse_grid(a.grid)
    seeds = parse_seeds(a.seeds) if a.seeds is not None else None
    slurm = parse_slurm(a.slurm)

    out_dir, ablation, cells, per_cell, rec_name = plan(recipe[0], overrides, grid, seeds, a.out, slurm)
    ex = _executor(a.executor, out_dir / "submitit", slurm, ablation) if a.executor != "local" else None
    entries = []
    for cell, ovs in zip(cells, per_cell, strict=True):
        run_dir = out_dir / "runs" / rec_name / cell.name
        entries.append({"name": cell.name, "row": cell.row, "values": cell.values, "seed": cell.seed,
                        "overrides": ovs, "run_dir": str(run_dir), "spec": str(out_dir / "cells" / f"{cell.name}.spec.json"),
                        "result": str(out_dir / "cells" / f"{cell.name}.json"),
                        "log": str(out_dir / "logs" / f"{cell.name}.log")})
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    seeds_used = sorted({c.seed for c in cells}, key=[c.seed for c in cells].index)
    _write_json(out_dir / MANIFEST, {"ablation": ablation, "recipe": recipe[0], "overrides": overrides,
                                     "grid": [[k, v] for k, v in grid.items()], "seeds": seeds_used,
                                     "metrics": metrics, "executor": a.executor, "slurm": slurm,
                                     "cells": entries})
    for e in entries:
        _write_json(Path(e["spec"]), {"recipe": recipe[0], "overrides": e["overrides"], "cell": e["name"],
                                      "seed": e["seed"], "run_dir": e["run_dir"], "result": e["result"]})
    print(f"[ablate] {ablation}: {len(entries)} run(s) ({len(entries) // max(1, len(seeds_used))} cell(s) x "
          f"{len(seeds_used)} seed(s)) of {recipe[0]} into {out_dir}", flush=True)
    if ex is None:
        stopped = run_local(entries, a.in_process)
        code = collect(out_dir, metrics)
        return stopped or code
    run_submitit(entries, ex, not a.no_wait, out_dir / MANIFEST)
    if a.no_wait:
        print(f"[ablate] {len(entries)} job(s) submitted; gather the tables with: "
              f"python tools/ablate.py --collect {out_dir}")
        return 0
    return collect(out_dir, metrics)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
