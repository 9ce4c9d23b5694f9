"""Budgets: limits on parameters, FLOPs and latency, as Optuna constraints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressor.cost import Cost
from compressor.errors import BudgetError, ConfigError
from compressor.units import format_count, parse_count

__all__ = ["Budget", "BudgetCheck", "LimitCheck"]


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
            value = "unmeasured" if limit.value is None else _format(limit.name, limit.value)
            sign = "<=" if limit.feasible else ">"
            parts.append(f"{limit.name} {value} {sign} {_format(limit.name, limit.limit)}")
        head = "within budget" if self.feasible else "over budget"
        return f"{head} ({', '.join(parts)})"


_LIMIT_FIELDS = {"params": "max_params", "flops": "max_flops", "latency_ms": "max_latency_ms"}


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
        unknown = sorted(set(data) - set(_LIMIT_FIELDS.values()))
        if unknown:
            raise BudgetError(
                f"unknown budget key {unknown[0]!r}; valid keys: {', '.join(_LIMIT_FIELDS.values())}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, float | None]:
        return {field: getattr(self, field) for field in _LIMIT_FIELDS.values()}

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, field) is None for field in _LIMIT_FIELDS.values())

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None

    def check(self, cost: Cost) -> BudgetCheck:
        """Checks ``cost`` against every set limit.

        A latency limit with an unmeasured latency counts as violated (constraint 1.0),
        so a candidate is never called feasible on a limit nobody checked.
        """
        checks = []
        for metric, field in _LIMIT_FIELDS.items():
            limit = getattr(self, field)
            if limit is None:
                continue
            value = getattr(cost, metric)
            constraint = 1.0 if value is None else float(value) / limit - 1.0
            checks.append(LimitCheck(metric, None if value is None else float(value), limit, constraint))
        return BudgetCheck(tuple(checks))

    def describe(self) -> str:
        parts = [
            f"{metric} <= {_format(metric, getattr(self, field))}"
            for metric, field in _LIMIT_FIELDS.items()
            if getattr(self, field) is not None
        ]
        return ", ".join(parts) if parts else "no limits"


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


def _format(metric: str, value: float) -> str:
    return f"{value:.2f} ms" if metric == "latency_ms" else format_count(value)
