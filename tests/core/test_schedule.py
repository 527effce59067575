"""Step schedules at given steps (hand-computed values) and their config errors."""
import pytest

from zoo.core.recipe import ConfigError
from zoo.core.schedule import Schedule, schedule_value


def test_constant_and_linear():
    assert Schedule(0.5)(0) == 0.5 and Schedule(3)(10_000) == 3.0
    s = Schedule([1000, 0.0, 1.0, 3000])  # threestudio's [start_step, start_value, end_value, end_step]
    assert [s(k) for k in (0, 1000, 1500, 2000, 3000, 9000)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    down = Schedule([0, 0.98, 0.5, 8000])  # an annealed timestep ceiling
    assert down(4000) == pytest.approx(0.74)
    jump = Schedule([500, 1.0, 2.0, 500])
    assert (jump(499), jump(500)) == (1.0, 2.0)


def test_milestones_points_and_stairs():
    m = Schedule({"milestones": [3000, 6000], "values": [0.001, 0.01, 0.1]})  # InterFusion's object shape weight
    assert [m(k) for k in (0, 2999, 3000, 5999, 6000, 10**6)] == [0.001, 0.001, 0.01, 0.01, 0.1, 0.1]
    p = Schedule({"points": [[0, 0.0], [100, 1.0], [300, 0.0]]})
    assert [p(k) for k in (-5, 50, 100, 200, 300, 400)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    levels = Schedule({"start_value": 8, "increment": 1, "every": 500, "start_step": 2000, "max_value": 16})
    assert [levels(k) for k in (0, 1999, 2000, 2499, 2500, 3000, 5999, 6000, 10**5)] == [8, 8, 8, 8, 9, 10, 15, 16, 16]
    assert schedule_value([0, 1.0, 0.0, 10], 5) == 0.5
    assert Schedule.of(levels) is levels


@pytest.mark.parametrize("spec,message", [
    ([0, 1, 2], "a list schedule is [start_step, start_value, end_value, end_step] (4 numbers), got [0, 1, 2]"),
    ([10, 1, 2, 5], "end_step 5 is before start_step 10"),
    ({"milestones": [1], "values": [1]}, "needs one more value than milestones, got 1 milestones and 1 values"),
    ({"milestones": [5, 1], "values": [1, 2, 3]}, "milestones must increase"),
    ({"points": []}, "{points} is a non-empty list of [step, value] pairs"),
    ({"start_value": 8, "increment": 1, "every": 0, "start_step": 0, "max_value": 16}, "'every' must be > 0"),
    ({"start": 1}, "unknown schedule keys ['start']"),
    ("fast", "a schedule is a number"),
    ([0, "x", 1, 2], "item 1 must be a finite number, got 'x'"),
])
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ConfigError) as err:
        Schedule(spec, name="lambda_sparsity")
    assert str(err.value).startswith("'lambda_sparsity': ") and message in str(err.value)
