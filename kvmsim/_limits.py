"""Bounds that keep simulated time inside int64 nanoseconds and every run finite, and the one
conversion from the seconds users write to the nanoseconds the engines run in."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import BeforeValidator

NS = 1_000_000_000
MAX_SECONDS = 1e9          # simulated seconds (int64 ns holds 9.2e9 s)
MAX_RATE = 1e9             # arrivals per second: a mean gap of at least 1 ns
MAX_COST_NS = 1_000_000_000  # one phase of the run loop: at most a simulated second
MAX_COUNTS_BYTES = 2**32   # the per-interval counts a Result keeps
# How far from a whole number of ns a time may be: float seconds carry rounding noise
# (0.3 s is 299999999.99999994 ns), but 1.4e-9 s is not 1 ns, nor 1/3 s 333333333 ns.
def _noise(ns):
    return np.maximum(1e-6, 1e-15 * np.abs(ns))


def _problem(value, minimum_ns: int) -> str | None:
    """Why `value` is not a number of seconds the engines can run, or None."""
    lo = "0" if minimum_ns == 0 else "1e-09"
    allowed = f"allowed: seconds in {lo}..{MAX_SECONDS:g}, whole nanoseconds"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number of seconds; {allowed}"
    if not (minimum_ns / NS <= value <= MAX_SECONDS) or not math.isfinite(value):
        return f"{value!r:.40} s is out of range; {allowed}"
    ns = value * NS
    if abs(ns - round(ns)) > _noise(ns):
        return (f"{value!r} s is not a whole number of nanoseconds (nearest: "
                f"{round(ns) / NS!r} s); {allowed}")
    if round(ns) < minimum_ns:
        return f"{value!r} s rounds to {round(ns)} ns; {allowed}"
    return None


def to_ns(value: float, minimum_ns: int = 1) -> int:
    """Seconds -> whole nanoseconds; ValueError naming the value and what is allowed."""
    problem = _problem(value, minimum_ns)
    if problem:
        raise ValueError(problem)
    return round(value * NS)


def times_to_ns(times) -> np.ndarray:
    """A sequence of seconds -> int64 ns, vectorised (trace times can number millions)."""
    ns = np.asarray(times, dtype=np.float64) * NS
    out = np.rint(ns)
    bad = np.abs(ns - out) > _noise(ns)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"times[{i}] = {times[i]!r} s is not a whole number of nanoseconds")
    return out.astype(np.int64)


def _seconds(minimum_ns: int):
    def check(value):
        to_ns(value, minimum_ns)
        return float(value)
    return BeforeValidator(check)


# Pydantic field types: a positive time (>= 1 ns) and a time that may be zero.
Seconds = Annotated[float, _seconds(1)]
SecondsOrZero = Annotated[float, _seconds(0)]
