"""Question / answer templates: the recipe-visible file loads, a bad template is an error naming the file,
the template and the slot, and body-part dropout leaves the parts out half the time, deterministically."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.data.templates import DEFAULT_TEMPLATES, format_answer, load_templates


def test_the_interactvlm_file_loads_and_fills():
    t = load_templates(DEFAULT_TEMPLATES)
    assert {"human_contact", "human_contact_object", "object_affordance"} <= set(t.tasks)
    rng = np.random.default_rng(0)
    q = t["human_contact_object"].question(rng, object="chair")
    assert "chair" in q and "{" not in q
    a = t["human_contact_object"].answer(["left hand", "right hand"], rng, drop_prob=0.0, object="chair")
    assert a.endswith("[HCON]") and a.index("left hand, right hand") < a.index("[HCON]")
    assert t["object_affordance"].answer([], rng, object="mug", affordance="grasp").endswith("[OCON]")
    assert t.path.name == "interactvlm.yaml"


def _write(tmp_path, question):
    path = tmp_path / "bad.yaml"
    path.write_text("token: '[SEG]'\ntasks:\n  parts:\n    object_wise: true\n"
                    f"    questions: ['Which parts touch the {{object}}?', '{question}']\n"
                    "    answers: ['Here: {token}']\n")
    return path


def test_question_without_the_object_slot_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "Which parts touch it?")
    with pytest.raises(ValueError) as e:
        load_templates(path)
    assert str(e.value) == (f"{path}: tasks.parts.questions[1]: the question template 'Which parts touch it?' has no "
                            "{object} slot; every question of an object-wise task names the object")


def test_other_template_errors(tmp_path):
    path = _write(tmp_path, "Which parts touch the {obj}?")
    with pytest.raises(ValueError) as e:
        load_templates(path)
    assert str(e.value) == (f"{path}: tasks.parts.questions[1]: template 'Which parts touch the {{obj}}?' has unknown "
                            "slot {obj} (allowed: {affordance}, {object})")
    path.write_text("tasks:\n  t:\n    token: X\n    questions: ['Q?']\n    answers: ['{token} here']\n")
    with pytest.raises(ValueError) as e:
        load_templates(path)
    assert str(e.value) == (f"{path}: tasks.t.answers[0]: the answer template '{{token}} here' does not end in the "
                            "{token} slot (the contact token closes every answer)")
    with pytest.raises(FileNotFoundError, match="template file not found: no/such.yaml"):
        load_templates("no/such.yaml")


def test_body_part_dropout_is_half_and_deterministic():
    parts = ["left foot", "right foot"]
    answers = [format_answer(parts, "[SEG]", 0.5, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(answers)) == 1  # same generator state, same answer
    rng = np.random.default_rng(11)
    n = 4000
    out = [format_answer(parts, "[SEG]", 0.5, rng) for _ in range(n)]
    again = [format_answer(parts, "[SEG]", 0.5, r) for r in [np.random.default_rng(11)] for _ in range(n)]
    assert out == again
    named = sum("left foot, right foot" in a for a in out)
    assert abs(named - n / 2) <= 4 * np.sqrt(n * 0.25), named  # binomial, 4 sigma
    assert all(a.endswith("[SEG]") for a in out)
    assert all("foot" not in format_answer(parts, "[SEG]", 1.0, rng) for _ in range(20))
    assert all("foot" in format_answer(parts, "[SEG]", 0.0, rng) for _ in range(20))
    assert "foot" not in format_answer([], "[SEG]", 0.0, rng)  # no parts: the plain answer
