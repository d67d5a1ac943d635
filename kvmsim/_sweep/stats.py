"""The 95% interval of a mean over seeds: Student's t, computed exactly (no scipy)."""

from __future__ import annotations

import math


def t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df: the finite series of Abramowitz and
    Stegun 26.7.3 (odd df) and 26.7.4 (even df)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        term, s = 1.0, 1.0 if df > 1 else 0.0
        for k in range(3, df - 1, 2):           # terms 2/3 c^2, 2*4/(3*5) c^4, ...
            term *= (k - 1) / k * c2
            s += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * s)
    term = s = 1.0
    for k in range(2, df - 1, 2):               # terms 1/2 c^2, 1*3/(2*4) c^4, ...
        term *= (k - 1) / k * c2
        s += term
    return math.sin(theta) * s


def t_quantile(level: float, df: int) -> float:
    """t such that P(|T| <= t) = level (t = 12.706 for level 0.95, df 1), by bisection."""
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) < level:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): mean +- t * s / sqrt(n); NaN bounds for fewer than 2 values."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half
