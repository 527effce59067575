"""tools/eval_t2i.py: the prompt file, the per-method table (hand-computed), and two tiny methods judged on one
prompt end to end."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import eval_t2i  # noqa: E402


def test_the_shipped_prompt_file_has_61_prompts_and_bad_lines_name_the_line(tmp_path):
    prompts = eval_t2i.read_prompts(ROOT / "recipes" / "interfusion" / "prompts.txt")
    assert len(prompts) == 61 and all(p["interaction"].startswith(p["human"]) for p in prompts)
    bad = tmp_path / "p.txt"
    bad.write_text("# comment\na man | a chair | a man sitting on a chair\na man | a chair\n")
    with pytest.raises(ValueError, match=r"p.txt:3: expected 'human \| object \| interaction' \(three non-empty "
                                         r"texts\), got 'a man \| a chair'$"):
        eval_t2i.read_prompts(bad)
    assert eval_t2i.prompt_overrides("dreamfusion", prompts[0]) == [
        "system.prompt='a man in a blue hoodie sitting on a wooden chair'"]
    with pytest.raises(ValueError, match=r"system 'deco' is not a text-to-3D method"):
        eval_t2i.prompt_overrides("deco", prompts[0])


def test_summary_table_by_hand():
    rows = [{"method": "a", "ok": True, "clip_score": 0.30, "judge_win": 1, "penetration_cm3": 10.0, "contact": 0.5},
            {"method": "a", "ok": True, "clip_score": 0.20, "judge_win": 0, "penetration_cm3": 30.0, "contact": 0.1},
            {"method": "b", "ok": True, "clip_score": 0.40, "judge_win": 0},
            {"method": "b", "ok": False}]
    a, b = eval_t2i.summarise(rows)
    assert (a["runs"], round(a["clip_score"], 6), round(a["clip_std"], 6), a["judge_win_rate"]) == (2, 0.25, 0.05, 0.5)
    assert (a["penetration_cm3"], round(a["contact"], 6)) == (20.0, 0.3)
    assert (b["runs"], b["clip_score"], b["clip_std"], b["judge_win_rate"], b["penetration_cm3"]) == (1, 0.4, 0.0, 0.0,
                                                                                                       None)
    assert "| a | 2 | 0.2500 ± 0.0500 | 0.500 | 20.0 | 0.300 |" in eval_t2i.markdown([a, b])


@pytest.mark.slow
def test_two_tiny_methods_on_one_prompt(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("ZOO_RUN_DIR", raising=False)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a man in a blue hoodie | a wooden chair | a man in a blue hoodie sitting on a wooden chair\n")
    out = tmp_path / "eval"
    rc = eval_t2i.main(["methods=interfusion/tiny,dreamfusion/tiny", f"prompts={prompts}", f"out={out}",
                        "judge=llava", "judge.variant=tiny", "logger=none", "trainer.max_steps=2",
                        "data.epoch_size=2", "data.n_val_views=1", "data.n_test_views=2", "system.outputs.val_images=false"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows] == ["interfusion/tiny", "dreamfusion/tiny"] and all(r["ok"] == "True" for r in rows)
    assert sorted(int(r["judge_win"]) for r in rows) == [0, 1]  # exactly one method wins the prompt
    assert rows[0]["penetration_cm3"] != "" and rows[1]["penetration_cm3"] == ""  # only interfusion has a body
    table = (out / "table.md").read_text()
    assert "| interfusion/tiny | 1 |" in table and "| dreamfusion/tiny | 1 |" in table
