"""Means with 95% confidence intervals, and what they allow one to claim.

Repeats of one training (seeds, folds) give a handful of scores; a claim about them is a
claim about their mean, with the uncertainty a handful implies. The interval is Student's
t (the quantiles are tabulated below, so no SciPy is needed): with n repeats,
``mean +- t(0.975, n - 1) * std / sqrt(n)``. Comparisons are *paired*: the difference of
two models on the same seed and fold, repeat by repeat, so what a seed does to both
cancels out.

Example:
    >>> estimate = Estimate.of([0.25, 0.27, 0.26])
    >>> round(estimate.mean, 3), estimate.n, round(estimate.low, 3), round(estimate.high, 3)
    (0.26, 3, 0.235, 0.285)
    >>> paired_difference({0: 0.25, 1: 0.27}, {0: 0.24, 1: 0.25, 2: 0.3}).n
    2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Estimate", "t_quantile", "paired_difference", "within", "format_interval", "WITHIN_POINTS"]

# Student's t, two-sided 95% (the 0.975 quantile), for 1..30 degrees of freedom.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
# Beyond 30 degrees of freedom, a few more points of the table (interpolated in 1/df).
_T975_FAR = ((40, 2.0211), (60, 2.0003), (120, 1.9799))

WITHIN_POINTS = 0.01
"""What "within 1 point" means on a metric in [0, 1]."""


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``).

    Example:
        >>> t_quantile(1), t_quantile(4), round(t_quantile(1000), 3)
        (12.7062, 2.7764, 1.962)
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    points = [(30, _T975[-1]), *_T975_FAR, (math.inf, 1.95996)]
    for (df0, t0), (df1, t1) in zip(points, points[1:]):
        if df <= df1:
            x, x0, x1 = 1 / df, 1 / df0, (0.0 if df1 == math.inf else 1 / df1)
            return t0 + (t1 - t0) * (x0 - x) / (x0 - x1)
    return 1.95996


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` repeats with its 95% t-interval (``low``, ``high``; NaN below 2 repeats).

    Attributes:
        mean, std: of the values (std with ``n - 1``; NaN below 2 repeats).
        n: how many values.
        low, high: the 95% confidence interval of the mean.
        values: the values themselves, in the order given.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Iterable[float], *, bounds: tuple[float, float] | None = None) -> Estimate:
        """The estimate of ``values`` (NaNs are left out).

        ``bounds``: the range the quantity cannot leave (``(0, 1)`` for an IoU, ``(-1, 1)`` for a
        difference of two), which the interval is clipped to: with 2 or 3 repeats a t-interval
        easily reaches past it, and a bound beyond it says nothing more.

        Example:
            >>> Estimate.of([0.01, 0.3], bounds=(0.0, 1.0)).low
            0.0
        """
        kept = tuple(float(value) for value in values if value == value)
        n = len(kept)
        if n == 0:
            return cls(math.nan, math.nan, 0, math.nan, math.nan, ())
        mean = sum(kept) / n
        if n == 1:
            return cls(mean, math.nan, 1, math.nan, math.nan, kept)
        std = math.sqrt(sum((value - mean) ** 2 for value in kept) / (n - 1))
        half = t_quantile(n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        return cls(mean, std, n, low, high, kept)

    @property
    def has_interval(self) -> bool:
        return self.n >= 2

    def text(self, *, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
        """``0.252 [0.207, 0.297] n=4`` (``scale=100``: in points).

        Example:
            >>> Estimate.of([-0.0004, 0.118]).text(scale=100, digits=1, signed=True)
            '+5.9 [-69.3, +81.1] n=2'
            >>> Estimate.of([0.0, -0.0004]).text(scale=100, digits=1, signed=True)
            '+0.0 [-0.3, +0.2] n=2'
        """
        if self.n == 0:
            return "-"
        return format_interval(self.mean, self.low, self.high, n=self.n, scale=scale, digits=digits, signed=signed)

    def to_dict(self) -> dict[str, float | int | None]:
        def plain(value: float) -> float | None:
            return None if value != value else round(value, 6)

        return {"mean": plain(self.mean), "std": plain(self.std), "n": self.n, "low": plain(self.low),
                "high": plain(self.high)}


def format_interval(
    mean: float, low: float, high: float, *, n: int | None = None, scale: float = 1.0, digits: int = 3,
    signed: bool = False,
) -> str:
    """``mean [low, high] n=N``; without a ``low`` (NaN: one repeat) just the mean.

    Example:
        >>> format_interval(-0.0004, -0.0004, 0.118, n=3, scale=100, digits=1, signed=True)
        '+0.0 [+0.0, +11.8] n=3'
    """
    sign = "+" if signed else ""

    def number(value: float) -> str:  # rounded first, so -0.04 prints as 0.0, not -0.0
        return f"{round(value * scale, digits) + 0.0:{sign}.{digits}f}"

    count = "" if n is None else f" n={n}"
    if low != low or high != high:
        return f"{number(mean)}{count}"
    return f"{number(mean)} [{number(low)}, {number(high)}]{count}"


def paired_difference(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], *, bounds: tuple[float, float] | None = None,
    blocks: Callable[[Mapping[Hashable, float]], Iterable[float]] | None = None,
) -> Estimate:
    """The estimate of ``a - b`` over the repeats (keys) both have: a paired comparison.

    ``blocks`` turns the differences by repeat into the values the interval is taken over (the
    confirmation averages the folds of one seed first: they are not independent draws).
    """
    differences = {key: a[key] - b[key] for key in a if key in b}
    return Estimate.of(blocks(differences) if blocks else differences.values(), bounds=bounds)


def within(difference: Estimate, points: float = WITHIN_POINTS) -> str:
    """What a paired difference to a reference says about "within ``points`` of it".

    ``"yes"``: the whole interval lies above ``-points``; ``"no"``: the whole interval lies
    below ``-points``; ``"not settled"``: the interval straddles it (or there is none).

    Example:
        >>> within(Estimate.of([-0.004, 0.001, 0.003]))
        'yes'
        >>> within(Estimate.of([-0.03, -0.04, -0.035]))
        'no'
        >>> within(Estimate.of([-0.03, 0.02]))
        'not settled'
    """
    if not difference.has_interval:
        return "not settled"
    if difference.low >= -points:
        return "yes"
    if difference.high < -points:
        return "no"
    return "not settled"
