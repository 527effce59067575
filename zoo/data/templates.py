"""Question / answer templates of InteractVLM-style tasks, kept in recipe-visible YAML files
(``recipes/base/templates/interactvlm.yaml``), and the answer rule with body-part dropout.

A template file holds a default ``token`` and ``tasks``; a task has ``object_wise`` (its questions name the
object), ``questions``, ``answers`` (ending in ``{token}``), optionally ``part_answers`` (naming ``{parts}``
before ``{token}``) and its own ``token``. :func:`load_templates` checks all of it and names the file, the
template and the problem in its errors; :func:`format_answer` builds an answer: the touching body parts
before the token, left out with probability ``drop_prob`` (InteractVLM trains with body-part dropout 0.5),
deterministic given the random generator.
"""
from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.core.paths import recipes_dir

__all__ = ["DEFAULT_TEMPLATES", "TaskTemplates", "Templates", "format_answer", "load_templates", "template_slots"]

DEFAULT_TEMPLATES = "base/templates/interactvlm.yaml"  # under the recipes folder

QUESTION_SLOTS = frozenset({"object", "affordance"})
ANSWER_SLOTS = frozenset({"object", "affordance", "token"})
PART_ANSWER_SLOTS = ANSWER_SLOTS | {"parts"}

# Used by format_answer when no task templates are given.
PLAIN_ANSWER = "Sure, the contact region is {token}"
PART_ANSWER = "The {parts} are in contact: {token}"


def template_slots(template: str) -> list[str]:
    """The ``{slot}`` names of a format string, in order (a malformed template raises ValueError)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


@dataclass(frozen=True)
class TaskTemplates:
    """One task's templates (see the module docstring)."""

    name: str
    object_wise: bool
    token: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    part_answers: tuple[str, ...] = ()

    def question(self, rng: np.random.Generator, **slots: str) -> str:
        """A question drawn with ``rng``, its slots filled from ``slots``."""
        return self.questions[int(rng.integers(len(self.questions)))].format(**slots)

    def answer(self, parts: Sequence[str], rng: np.random.Generator, drop_prob: float = 0.5, **slots: str) -> str:
        """An answer drawn with ``rng`` (:func:`format_answer` with this task's token and templates)."""
        return format_answer(parts, self.token, drop_prob, rng, answers=self.answers,
                             part_answers=self.part_answers, **slots)


@dataclass(frozen=True)
class Templates:
    """The tasks of a template file, by name, and the file they came from."""

    path: Path
    tasks: dict[str, TaskTemplates] = field(default_factory=dict)

    def __getitem__(self, task: str) -> TaskTemplates:
        if task not in self.tasks:
            raise KeyError(f"{self.path}: no task '{task}' (tasks: {', '.join(self.tasks)})")
        return self.tasks[task]


def format_answer(parts: Sequence[str], token: str, drop_prob: float, rng: np.random.Generator, *,
                  answers: Sequence[str] = (PLAIN_ANSWER,), part_answers: Sequence[str] = (PART_ANSWER,),
                  **slots: str) -> str:
    """An answer ending in ``token``: with probability ``1 - drop_prob`` it names ``parts`` (joined by ", ")
    before the token (a ``part_answers`` template), otherwise (body-part dropout, or no parts, or no
    part templates) it leaves them out (an ``answers`` template). Two draws from ``rng`` per call, whatever
    the outcome, so a seeded generator gives the same answers every time."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"format_answer: drop_prob must be in [0, 1], got {drop_prob}")
    drop = bool(rng.random() < drop_prob)
    pick = float(rng.random())
    use_parts = bool(parts) and bool(part_answers) and not drop
    pool = part_answers if use_parts else answers
    if not pool:
        raise ValueError("format_answer: no answer template to use")
    template = pool[min(int(pick * len(pool)), len(pool) - 1)]
    return template.format(parts=", ".join(parts), token=token, **slots)


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    under = recipes_dir() / p
    for cand in (under, under.with_suffix(".yaml")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"template file not found: {path} (looked at {p.resolve()} and {under})")


def _strings(path: Path, where: str, value, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{path}: {where} must be a non-empty list of template strings, got {value!r}")
    return tuple(value)


def _check_slots(path: Path, where: str, template: str, allowed: frozenset[str]) -> list[str]:
    try:
        slots = template_slots(template)
    except ValueError as e:
        raise ValueError(f"{path}: {where}: malformed template {template!r} ({e})") from None
    bad = [s for s in slots if s not in allowed]
    if bad:
        raise ValueError(f"{path}: {where}: template {template!r} has unknown slot {{{bad[0]}}} "
                         f"(allowed: {', '.join('{' + s + '}' for s in sorted(allowed))})")
    return slots


def load_templates(path: str | Path = DEFAULT_TEMPLATES) -> Templates:
    """Read and check a template file (a path, or a path under the recipes folder). A question of an
    object-wise task without the ``{object}`` slot, an answer not ending in ``{token}``, a part answer
    without ``{parts}`` or an unknown slot is a ValueError naming the file, the template and the slot."""
    import yaml

    p = _resolve(path)
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise ValueError(f"{p}: a template file is a mapping with a non-empty 'tasks' mapping")
    default_token = data.get("token")
    tasks: dict[str, TaskTemplates] = {}
    for name, task in data["tasks"].items():
        at = f"tasks.{name}"
        if not isinstance(task, dict):
            raise ValueError(f"{p}: {at} must be a mapping, got {task!r}")
        unknown = sorted(set(task) - {"object_wise", "token", "questions", "answers", "part_answers"})
        if unknown:
            raise ValueError(f"{p}: {at} has unknown key(s) {unknown} (keys: object_wise, token, questions, answers, "
                             f"part_answers)")
        object_wise = task.get("object_wise", False)
        if not isinstance(object_wise, bool):
            raise ValueError(f"{p}: {at}.object_wise must be true or false, got {object_wise!r}")
        token = task.get("token", default_token)
        if not isinstance(token, str) or not token:
            raise ValueError(f"{p}: {at} has no contact token (give 'token' in the task or at the top of the file)")
        questions = _strings(p, f"{at}.questions", task.get("questions"), True)
        answers = _strings(p, f"{at}.answers", task.get("answers"), True)
        part_answers = _strings(p, f"{at}.part_answers", task.get("part_answers"), False)
        for i, q in enumerate(questions):
            slots = _check_slots(p, f"{at}.questions[{i}]", q, QUESTION_SLOTS)
            if object_wise and "object" not in slots:
                raise ValueError(f"{p}: {at}.questions[{i}]: the question template {q!r} has no {{object}} slot; "
                                 f"every question of an object-wise task names the object")
        for key, pool, allowed in (("answers", answers, ANSWER_SLOTS), ("part_answers", part_answers, PART_ANSWER_SLOTS)):
            for i, a in enumerate(pool):
                slots = _check_slots(p, f"{at}.{key}[{i}]", a, allowed)
                if not a.endswith("{token}"):
                    raise ValueError(f"{p}: {at}.{key}[{i}]: the answer template {a!r} does not end in the {{token}} "
                                     f"slot (the contact token closes every answer)")
                if key == "part_answers" and "parts" not in slots:
                    raise ValueError(f"{p}: {at}.{key}[{i}]: the answer template {a!r} has no {{parts}} slot; part "
                                     f"answers name the touching body parts before the token")
        tasks[str(name)] = TaskTemplates(str(name), object_wise, token, questions, answers, part_answers)
    return Templates(p, tasks)
