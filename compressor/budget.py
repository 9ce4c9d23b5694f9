"""Budgets: limits on parameters, FLOPs and latency, as Optuna constraints."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compressor.errors import BudgetError, ConfigError
from compressor.units import format_count, parse_count

if TYPE_CHECKING:  # a budget reads a cost's fields; it needs neither torch nor fvcore
    from compressor.cost import Cost

__all__ = ["Budget", "BudgetCheck", "LimitCheck", "COST_LIMITS", "format_cost"]

#: Each cost a budget limits (the name a cost, a trial record and an objective use) -> its budget key.
COST_LIMITS = {"params": "max_params", "flops": "max_flops", "latency_ms": "max_latency_ms"}


@dataclass(frozen=True)
class LimitCheck:
    """One limit against one measured value.

    ``constraint`` follows Optuna's ``constraints_func`` convention: ``<= 0`` is feasible.
    It is the relative excess ``value / limit - 1``, so limits of different units weigh
    alike when a sampler ranks infeasible trials.
    """

    name: str
    value: float | None
    limit: float
    constraint: float

    @property
    def feasible(self) -> bool:
        return self.constraint <= 0


@dataclass(frozen=True)
class BudgetCheck:
    """The verdict of a :class:`Budget` on a :class:`~compressor.cost.Cost`."""

    limits: tuple[LimitCheck, ...]

    @property
    def feasible(self) -> bool:
        return all(limit.feasible for limit in self.limits)

    @property
    def constraints(self) -> list[float]:
        """Values for Optuna's ``constraints_func`` (``<= 0`` feasible), in limit order."""
        return [limit.constraint for limit in self.limits]

    def verdict(self) -> str:
        """One readable line, e.g. ``within budget (params 1.06M <= 2.00M)``."""
        if not self.limits:
            return "no budget set"
        parts = []
        for limit in self.limits:
            value = "unmeasured" if limit.value is None else format_cost(limit.name, limit.value)
            sign = "<=" if limit.feasible else ">"
            parts.append(f"{limit.name} {value} {sign} {format_cost(limit.name, limit.limit)}")
        head = "within budget" if self.feasible else "over budget"
        return f"{head} ({', '.join(parts)})"

    def overruns(self) -> str:
        """The measured costs over their limit, ``params 2.90M > 1.50M`` (empty when none is)."""
        return ", ".join(f"{limit.name} {format_cost(limit.name, limit.value)} > {format_cost(limit.name, limit.limit)}"
                         for limit in self.limits if limit.value is not None and not limit.feasible)


@dataclass(frozen=True, init=False)
class Budget:
    """Upper limits on a candidate's cost; None means unlimited.

    Counts accept human units: ``Budget(max_params="300k", max_flops="2G")``.

    Example:
        >>> from compressor.cost import Cost
        >>> budget = Budget(max_params="1.5M")
        >>> budget.check(Cost(params=1_055_920, trainable_params=1_055_920, flops=0,
        ...                   input_shape=(1, 3, 64, 64))).verdict()
        'within budget (params 1.06M <= 1.50M)'

    Raises:
        BudgetError: a unit that cannot be read, or a limit that is not > 0.
    """

    max_params: float | None
    max_flops: float | None
    max_latency_ms: float | None

    def __init__(
        self,
        max_params: str | float | None = None,
        max_flops: str | float | None = None,
        max_latency_ms: str | float | None = None,
    ) -> None:
        for name, raw in (
            ("max_params", max_params),
            ("max_flops", max_flops),
            ("max_latency_ms", max_latency_ms),
        ):
            object.__setattr__(self, name, _parse_limit(name, raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Budget:
        """Builds a budget from a mapping with keys ``max_params``, ``max_flops``, ``max_latency_ms``.

        Raises:
            BudgetError: an unknown key or a bad value.
        """
        data = dict(data or {})
        unknown = sorted(set(data) - set(COST_LIMITS.values()))
        if unknown:
            raise BudgetError(
                f"unknown budget key {unknown[0]!r}; valid keys: {', '.join(COST_LIMITS.values())}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, float | None]:
        return {field: getattr(self, field) for field in COST_LIMITS.values()}

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, field) is None for field in COST_LIMITS.values())

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None

    def check(self, cost: Cost | Mapping[str, Any]) -> BudgetCheck:
        """Checks ``cost`` (a :class:`~compressor.cost.Cost`, or a mapping such as a trial's row
        with the keys of :data:`COST_LIMITS`) against every set limit.

        A latency limit with an unmeasured latency counts as violated (constraint 1.0),
        so a candidate is never called feasible on a limit nobody checked.
        """
        values = cost if isinstance(cost, Mapping) else {name: getattr(cost, name) for name in COST_LIMITS}
        checks = []
        for metric, field in COST_LIMITS.items():
            limit = getattr(self, field)
            if limit is None:
                continue
            value = _measured(values.get(metric))
            constraint = 1.0 if value is None else float(value) / limit - 1.0
            checks.append(LimitCheck(metric, None if value is None else float(value), limit, constraint))
        return BudgetCheck(tuple(checks))

    def describe(self) -> str:
        parts = [
            f"{metric} <= {format_cost(metric, getattr(self, field))}"
            for metric, field in COST_LIMITS.items()
            if getattr(self, field) is not None
        ]
        return ", ".join(parts) if parts else "no limits"


def _measured(value: Any) -> float | None:
    """A cost as a number, None when it was not measured (None, NaN, a table's missing value)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):  # pandas' NA and the like
        return None
    return None if math.isnan(number) else number


def _parse_limit(name: str, raw: str | float | None) -> float | None:
    if raw is None:
        return None
    try:
        value = parse_count(raw, what=name)
    except ConfigError as error:
        raise BudgetError(str(error)) from None
    if value <= 0:
        raise BudgetError(f"{name}: a limit must be > 0, got {raw!r}")
    return value


def format_cost(metric: str, value: float) -> str:
    """``1.06M`` for a count, ``4.20 ms`` for ``latency_ms``."""
    return f"{value:.2f} ms" if metric == "latency_ms" else format_count(value)
