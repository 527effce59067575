#!/usr/bin/env python
"""Text-to-3D evaluation over a prompt file: every method on every prompt, CLIP score, a VLM forced-choice judge
between the methods, and (for interfusion) the object's penetration into the body and its contact.

    python tools/eval_t2i.py methods=interfusion/tiny,dreamfusion/tiny [prompts=recipes/interfusion/prompts.txt]
                             [limit=N] [out=DIR] [judge=llava|qwen2_vl|none] [judge.variant=tiny|full]
                             [judge.path=DIR] [key=value ...]

prompts: one prompt per line, ``human | object | interaction`` (``#`` comments); interfusion recipes get all three
(system.prompts.*), dreamfusion recipes the interaction text (system.prompt). key=value: recipe overrides applied to
every method (e.g. trainer.max_steps=2000). Each (method, prompt) trains under ``out/runs/`` (default
runs/eval_t2i/<time>/); the judge looks at each method's front test view (turntable view 0) of the same prompt and
is asked ``is this a rendered 3d man {interaction} ?``; the method whose image gets the highest log-probability of
"yes" wins that prompt. Writes ``results.csv`` (one row per run), ``table.md`` and ``table.csv`` (per method: runs,
CLIP score mean ± std, judge win rate, penetration and contact means where measured) and prints the table. A bad
prompt line names the file and line; a failed run is reported and counted, the others continue (exit 1 if any
failed).
"""
from __future__ import annotations

import csv
import io
import statistics
import sys
import time
from pathlib import Path

import _cli  # noqa: F401  (puts the checkout on sys.path)

USAGE = __doc__
QUESTION = "is this a rendered 3d man {interaction} ?"


def read_prompts(path: str | Path) -> list[dict[str, str]]:
    """``[{human, object, interaction}]`` from a prompt file; a malformed line is a ValueError naming file:line."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = [p.strip() for p in text.split("|")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{path}:{n}: expected 'human | object | interaction' (three non-empty texts), got "
                             f"{text!r}")
        out.append(dict(zip(("human", "object", "interaction"), parts, strict=True)))
    if not out:
        raise ValueError(f"{path}: no prompts (one 'human | object | interaction' per line)")
    return out


def prompt_overrides(system: str, prompt: dict[str, str]) -> list[str]:
    """The recipe overrides that give a method one prompt."""
    def q(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    if system == "interfusion":
        return [f"system.prompts.{k}={q(prompt[k])}" for k in ("human", "object", "interaction")]
    if system == "dreamfusion":
        return [f"system.prompt={q(prompt['interaction'])}"]
    raise ValueError(f"eval_t2i: system {system!r} is not a text-to-3D method (interfusion, dreamfusion)")


def front_view(run_dir: Path):
    """The rgb third of the first test turntable frame (interfusion: the scene's), uint8 (H, W, 3)."""
    import numpy as np
    from PIL import Image

    for p in (run_dir / "test" / "scene" / "000.png", run_dir / "test" / "000.png"):
        if p.is_file():
            img = np.asarray(Image.open(p).convert("RGB"))
            return img[:, : img.shape[1] // 3]
    raise FileNotFoundError(f"{run_dir}: no test turntable (test/scene/000.png or test/000.png)")


def summarise(rows: list[dict]) -> list[dict]:
    """Per method: runs, CLIP score mean and std, judge wins / prompts judged, penetration and contact means."""
    out = []
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m and r["ok"]]
        clip = [r["clip_score"] for r in mine if r.get("clip_score") is not None]
        judged = [r for r in mine if r.get("judge_win") is not None]
        row = {"method": m, "runs": len(mine),
               "clip_score": statistics.fmean(clip) if clip else None,
               "clip_std": statistics.pstdev(clip) if len(clip) > 1 else 0.0 if clip else None,
               "judge_win_rate": (sum(r["judge_win"] for r in judged) / len(judged)) if judged else None}
        for k in ("penetration_cm3", "contact"):
            vals = [r[k] for r in mine if r.get(k) is not None]
            row[k] = statistics.fmean(vals) if vals else None
        out.append(row)
    return out


def _fmt(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(table: list[dict]) -> str:
    """The per-method table as Markdown."""
    lines = ["| method | runs | CLIP score | judge win rate | penetration (cm³) | contact |", "|---|---|---|---|---|---|"]
    for r in table:
        clip = "" if r["clip_score"] is None else f"{r['clip_score']:.4f} ± {r['clip_std']:.4f}"
        lines.append(f"| {r['method']} | {r['runs']} | {clip} | {_fmt(r['judge_win_rate'], 3)} | "
                     f"{_fmt(r['penetration_cm3'], 1)} | {_fmt(r['contact'], 3)} |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict], keys: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k), 6) for k in keys})
    return buf.getvalue()


def main(argv: list[str]) -> int:
    """Run the evaluation; returns the exit code (module docstring)."""
    args, overrides, judge_cfg = {}, [], {}
    for a in argv:
        if a in ("-h", "--help"):
            print(USAGE)
            return 0
        if "=" not in a:
            print(f"error: expected key=value, got {a!r}\n{USAGE}", file=sys.stderr)
            return 2
        k, v = a.split("=", 1)
        if k in ("methods", "prompts", "limit", "out", "judge"):
            args[k] = v
        elif k.startswith("judge."):
            judge_cfg[k[len("judge."):]] = v
        else:
            overrides.append(a)
    if "methods" not in args:
        print(f"error: methods= is required\n{USAGE}", file=sys.stderr)
        return 2
    from zoo.core import recipe as R
    from zoo.core import registry, run
    from zoo.core.atomic import atomic_write_text

    try:
        prompts = read_prompts(args.get("prompts", "recipes/interfusion/prompts.txt"))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prompts = prompts[: int(args["limit"])] if "limit" in args else prompts
    methods = [m.strip() for m in args["methods"].split(",") if m.strip()]
    out = Path(args.get("out") or Path("runs") / "eval_t2i" / time.strftime("%Y%m%d-%H%M%S"))
    rows: list[dict] = []
    for i, prompt in enumerate(prompts):
        for method in methods:
            name = f"{method.replace('/', '-')}-{i:03d}"
            row = {"method": method, "prompt": i, "interaction": prompt["interaction"], "ok": False}
            try:
                system = R.load(method)["system"]["name"]
                rec = R.load(method, [*prompt_overrides(system, prompt), f"run.dir={out / 'runs'}",
                                      f"run.name={name}", *overrides])
                res = run.train(rec)
                if res.exit_code != 0:
                    raise RuntimeError(f"exit code {res.exit_code}")
                m = res.metrics
                row.update(ok=True, run_dir=str(res.run_dir), clip_score=m.get("test/clip_score"),
                           penetration_cm3=m.get("test/penetration_cm3"), contact=m.get("test/contact"))
            except Exception as e:  # noqa: BLE001 - one failed run is reported and counted, the others go on
                print(f"error: {method} on prompt {i} ({prompt['interaction']!r}): {type(e).__name__}: {e}",
                      file=sys.stderr)
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    judge = args.get("judge", "llava")
    if judge != "none" and len(methods) > 1:
        from zoo.models.vlm.base import answer_logprob

        vlm = registry.build("vlm", {"name": judge, "variant": judge_cfg.pop("variant", "tiny"), **judge_cfg}).eval()
        for i, prompt in enumerate(prompts):
            mine = [r for r in rows if r["prompt"] == i and r["ok"]]
            if len(mine) < 2:
                continue
            q = QUESTION.format(interaction=prompt["interaction"])
            for r in mine:
                r["judge_logp"] = answer_logprob(vlm, front_view(Path(r["run_dir"])), q)
            best = max(mine, key=lambda r: r["judge_logp"])
            for r in mine:
                r["judge_win"] = int(r is best)
    table = summarise(rows)
    keys = ["method", "prompt", "interaction", "ok", "clip_score", "judge_logp", "judge_win", "penetration_cm3",
            "contact", "run_dir", "error"]
    atomic_write_text(out / "results.csv", _csv(rows, keys))
    atomic_write_text(out / "table.csv", _csv(table, ["method", "runs", "clip_score", "clip_std", "judge_win_rate",
                                                      "penetration_cm3", "contact"]))
    md = markdown(table)
    atomic_write_text(out / "table.md", md)
    print(md, end="")
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows)} runs ({failed} failed) -> {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
