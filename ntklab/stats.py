"""The statistics of a sweep report: a mean with its 95% interval over seeds, and power-law
fits (log y against log x) with the 95% interval of the exponent. Pure functions on numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Student's t, 97.5% quantile, for the small degrees of freedom a sweep has.
_T975 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281]
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (exact to 4 digits up
    to df = 10, then the Cornish-Fisher expansion to third order, within 2e-4); NaN for
    df < 1."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Mean:
    """The mean of `count` values and the half-width of its 95% t interval (NaN from one)."""

    value: float
    half: float
    count: int


def mean_interval(values: Sequence[float | None]) -> Mean | None:
    """The mean of the finite values and its 95% interval; None when there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    k = len(xs)
    mean = sum(xs) / k
    if k == 1:
        return Mean(mean, math.nan, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (k - 1))
    return Mean(mean, t975(k - 1) * sd / math.sqrt(k), k)


@dataclass(frozen=True)
class Fit:
    """log y = intercept + slope · log x by least squares: the power law y = e^intercept x^slope."""

    slope: float
    intercept: float
    stderr: float  # the slope's standard error (NaN from two points: no residual to measure)
    points: int

    @property
    def interval(self) -> float:
        """The half-width of the slope's 95% interval (NaN from two points)."""
        return t975(self.points - 2) * self.stderr

    def __call__(self, x: float) -> float:
        return math.exp(self.intercept) * x**self.slope


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def loglog_fit(xs: Sequence[float], ys: Sequence[float | None]) -> Fit | None:
    """The power law through the pairs with positive finite x and y; None with fewer than two
    distinct x values."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if _positive(x) and _positive(y)]
    if len({x for x, _ in pairs}) < 2:
        return None
    lx = [math.log(x) for x, _ in pairs]
    ly = [math.log(y) for _, y in pairs]
    k = len(pairs)
    mx, my = sum(lx) / k, sum(ly) / k
    sxx = sum((a - mx) ** 2 for a in lx)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx
    intercept = my - slope * mx
    residual = sum((b - intercept - slope * a) ** 2 for a, b in zip(lx, ly, strict=True))
    stderr = math.sqrt(residual / (k - 2) / sxx) if k > 2 else math.nan
    return Fit(slope, intercept, stderr, k)


def local_slopes(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float, float]]:
    """(x_i, x_{i+1}, slope of log y between them) for neighbouring positive points, sorted by
    x: where the exponent drifts, the local slopes show it."""
    pairs = sorted((x, y) for x, y in zip(xs, ys, strict=True) if _positive(x) and _positive(y))
    return [
        (a, b, (math.log(yb) - math.log(ya)) / (math.log(b) - math.log(a)))
        for (a, ya), (b, yb) in zip(pairs, pairs[1:], strict=False)
        if b > a
    ]
