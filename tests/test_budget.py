from __future__ import annotations

import pytest

from compressor import Budget, Cost
from compressor.errors import BudgetError, ConfigError
from compressor.units import format_count, parse_count, parse_shape


def cost(params=1_000_000, flops=2_000_000_000, latency_ms=None):
    return Cost(params=params, trainable_params=params, flops=flops, input_shape=(1, 3, 64, 64), latency_ms=latency_ms)


@pytest.mark.parametrize(
    ("text", "value"),
    [("300k", 300e3), ("1.5M", 1.5e6), ("2G", 2e9), ("2g", 2e9), ("12", 12), (" 7.5 ", 7.5), ("1e6", 1e6), (5, 5)],
)
def test_parse_count_reads_human_units(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["1.5X", "abc", "", "1.5 MB", "--3", True])
def test_parse_count_rejects_garbage(text):
    with pytest.raises(ConfigError, match="max_params"):
        parse_count(text, what="max_params")


def test_format_count_round_trips_roughly():
    assert format_count(31_024_960) == "31.02M"
    assert format_count(1500) == "1.50k"
    assert format_count(12) == "12"


def test_budget_constraints_follow_optuna_convention():
    budget = Budget(max_params="1.5M", max_flops="1G")
    check = budget.check(cost(params=1_000_000, flops=2_000_000_000))
    assert check.constraints == pytest.approx([1e6 / 1.5e6 - 1, 1.0])
    assert [limit.feasible for limit in check.limits] == [True, False]
    assert not check.feasible
    assert check.verdict() == "over budget (params 1.00M <= 1.50M, flops 2.00G > 1.00G)"


def test_budget_with_room_is_feasible():
    check = Budget(max_params=2e6).check(cost())
    assert check.feasible and check.constraints == [pytest.approx(-0.5)]
    assert check.verdict().startswith("within budget")


def test_exactly_at_the_limit_is_feasible():
    assert Budget(max_params=1_000_000).check(cost()).feasible


def test_unmeasured_latency_is_never_feasible():
    budget = Budget(max_latency_ms=10)
    assert not budget.check(cost(latency_ms=None)).feasible
    assert budget.check(cost(latency_ms=5.0)).feasible
    assert "unmeasured" in budget.check(cost()).verdict()


def test_empty_budget_has_no_constraints():
    budget = Budget()
    assert budget.is_empty and budget.check(cost()).constraints == []
    assert budget.check(cost()).verdict() == "no budget set"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_params": "-300k"}, "max_params: must be a finite non-negative"),
        ({"max_flops": "0"}, "max_flops: a limit must be > 0"),
        ({"max_flops": "2Q"}, "max_flops: cannot read '2Q'"),
        ({"max_latency_ms": "fast"}, "max_latency_ms: cannot read"),
    ],
)
def test_bad_limits_are_clear_errors(kwargs, message):
    with pytest.raises(BudgetError, match=message):
        Budget(**kwargs)


def test_from_dict_rejects_unknown_keys():
    assert Budget.from_dict({"max_params": "1M"}).max_params == 1e6
    with pytest.raises(BudgetError, match="unknown budget key 'max_param'"):
        Budget.from_dict({"max_param": "1M"})


def test_parse_shape():
    assert parse_shape("1,3,64,64") == (1, 3, 64, 64)
    assert parse_shape("1x3x64x64") == (1, 3, 64, 64)
    for bad in ("1,3", "1,3,a,4", "1,0,4,4"):
        with pytest.raises(ConfigError, match="input shape"):
            parse_shape(bad)


def test_a_trial_row_is_checked_like_a_cost_and_its_overruns_named():
    """The report names what broke the budget with the budget's own check (a row is a mapping of
    the costs; an unmeasured one is counted as a violation but not named as an overrun)."""
    budget = Budget(max_params="1.5M", max_latency_ms=5)
    check = budget.check({"params": 2_900_000, "flops": 10, "latency_ms": None})
    assert not check.feasible and check.overruns() == "params 2.90M > 1.50M"
    assert budget.check({"params": 1_000_000, "latency_ms": 7.5}).overruns() == "latency_ms 7.50 ms > 5.00 ms"
    assert budget.check({"params": 1_000_000, "latency_ms": 4.0}).overruns() == ""
    assert budget.describe() == "params <= 1.50M, latency_ms <= 5.00 ms"
    import pandas as pd  # a table's missing values are unmeasured, as None is

    for missing in (float("nan"), pd.NA):
        check = budget.check({"params": missing, "latency_ms": 4.0})
        assert not check.feasible and check.overruns() == "" and check.limits[0].value is None
