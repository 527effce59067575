"""Step schedules: a value that depends on the global step (loss weights, timestep ranges, hash-grid
levels, refresh intervals).

A recipe writes a schedule in one of five forms:

* a number: constant;
* ``[start_step, start_value, end_value, end_step]``: ``start_value`` until ``start_step``, linear to
  ``end_value`` at ``end_step``, constant after (threestudio's ``C()`` form);
* ``{milestones: [s1, ..., sn], values: [v0, v1, ..., vn]}``: piecewise constant, ``v_i`` from step ``s_i``
  (``v0`` before ``s1``);
* ``{points: [[s0, v0], [s1, v1], ...]}``: piecewise linear through the points, constant outside them;
* ``{start_value, increment, every, start_step, max_value}``: a staircase, ``start_value`` until
  ``start_step``, then ``+ increment`` every ``every`` steps, capped at ``max_value`` (progressive hash-grid
  levels: 8, then one more every 500 steps after step 2000, up to 16).

``Schedule(spec, name)(step)`` gives the value; a malformed spec raises
:class:`zoo.core.recipe.ConfigError` naming ``name``.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from zoo.core.recipe import ConfigError

__all__ = ["Schedule", "schedule_value"]

_STAIRS = ("start_value", "increment", "every", "start_step", "max_value")


def _num(name: str, what: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise ConfigError((name,), f"{what} must be a finite number, got {v!r}")
    return float(v)


class Schedule:
    """A value as a function of the step, parsed once from a recipe spec (see the module docstring)."""

    def __init__(self, spec: Any, name: str = "value") -> None:
        self.spec = spec
        self.name = name
        self.form, self._args = self._parse(spec, name)

    @classmethod
    def of(cls, spec: Any, name: str = "value") -> Schedule:
        """``spec`` as a Schedule (a Schedule passes through unchanged)."""
        return spec if isinstance(spec, Schedule) else cls(spec, name)

    @staticmethod
    def _parse(spec: Any, name: str) -> tuple[str, tuple]:
        forms = ("a number, [start_step, start_value, end_value, end_step], {milestones, values}, {points} or "
                 "{start_value, increment, every, start_step, max_value}")
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            return "constant", (_num(name, "the value", spec),)
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            if len(spec) != 4:
                raise ConfigError((name,), f"a list schedule is [start_step, start_value, end_value, end_step] "
                                           f"(4 numbers), got {list(spec)!r}")
            s0, v0, v1, s1 = (_num(name, f"item {i}", v) for i, v in enumerate(spec))
            if s1 < s0:
                raise ConfigError((name,), f"end_step {s1:g} is before start_step {s0:g} in {list(spec)!r}")
            return "linear", (s0, v0, v1, s1)
        if isinstance(spec, Mapping):
            keys = set(spec)
            if keys == {"milestones", "values"}:
                ms = [_num(name, "a milestone", m) for m in spec["milestones"] or []]
                vs = [_num(name, "a value", v) for v in spec["values"] or []]
                if len(vs) != len(ms) + 1:
                    raise ConfigError((name,), f"{{milestones, values}} needs one more value than milestones, got "
                                               f"{len(ms)} milestones and {len(vs)} values")
                if ms != sorted(ms):
                    raise ConfigError((name,), f"milestones must increase, got {ms}")
                return "milestones", (ms, vs)
            if keys == {"points"}:
                pts = spec["points"] or []
                if not pts or any(not isinstance(p, Sequence) or len(p) != 2 for p in pts):
                    raise ConfigError((name,), f"{{points}} is a non-empty list of [step, value] pairs, got {pts!r}")
                steps = [_num(name, "a point's step", p[0]) for p in pts]
                vals = [_num(name, "a point's value", p[1]) for p in pts]
                if steps != sorted(steps):
                    raise ConfigError((name,), f"point steps must increase, got {steps}")
                return "points", (steps, vals)
            if keys == set(_STAIRS):
                v0, inc, every, s0, vmax = (_num(name, k, spec[k]) for k in _STAIRS)
                if every <= 0:
                    raise ConfigError((name,), f"'every' must be > 0, got {every:g}")
                return "stairs", (v0, inc, every, s0, vmax)
            raise ConfigError((name,), f"unknown schedule keys {sorted(map(str, keys))}; a schedule is {forms}")
        raise ConfigError((name,), f"a schedule is {forms}; got {spec!r}")

    def __call__(self, step: int) -> float:
        """The value at global step ``step``."""
        a = self._args
        if self.form == "constant":
            return a[0]
        if self.form == "linear":
            s0, v0, v1, s1 = a
            if s1 == s0:
                return v0 if step < s0 else v1
            frac = min(max((step - s0) / (s1 - s0), 0.0), 1.0)
            return v0 + (v1 - v0) * frac
        if self.form == "milestones":
            ms, vs = a
            return vs[bisect.bisect_right(ms, step)]
        if self.form == "points":
            steps, vals = a
            if step <= steps[0]:
                return vals[0]
            if step >= steps[-1]:
                return vals[-1]
            i = bisect.bisect_right(steps, step)
            s0, s1, v0, v1 = steps[i - 1], steps[i], vals[i - 1], vals[i]
            return v0 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        v0, inc, every, s0, vmax = a
        if step < s0:
            return v0
        value = v0 + inc * ((step - s0) // every)
        return min(value, vmax) if inc >= 0 else max(value, vmax)

    def __repr__(self) -> str:
        return f"Schedule({self.spec!r}, name={self.name!r})"


def schedule_value(spec: Any, step: int, name: str = "value") -> float:
    """The value of schedule ``spec`` at ``step`` (one-off form of :class:`Schedule`)."""
    return Schedule.of(spec, name)(step)
