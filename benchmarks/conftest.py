"""Benchmark scenarios and contenders. Run: pytest benchmarks (see README, "Speed")."""

import math
import os
import sys

import pytest

import kvmsim

sys.path.insert(0, os.path.dirname(__file__))
from simpy_model import simulate_simpy  # noqa: E402

ORDERS = ("linux-6.6", "linux-6.7")
CONTENDERS = ("cython", "python", "simpy")
# Simulated seconds per timed call, sized so one call takes >= ~0.2 s on a 2-core machine.
DURATION = {
    "anchor": {"cython": 60.0, "python": 0.25, "simpy": 0.14},
    "spec2017-vtune": {"cython": 200.0, "python": 0.5, "simpy": 0.3},
    "spec2017-vtune-large": {"cython": 2.0, "python": 0.006, "simpy": 0.004},
}
SCENARIOS = tuple(DURATION)


def run(contender, scenario, order, duration, seed=0):
    """One whole simulation: a kvmsim Result, or the SimPy model's totals."""
    engine = "cython" if contender == "simpy" else contender
    cfg = kvmsim.Config(order=order, workload=scenario, seed=seed, engine=engine)
    if contender == "simpy":
        return simulate_simpy(cfg, duration)
    return kvmsim.simulate(cfg, duration=duration)


def agree(a: int, b: int) -> bool:
    """Two independent runs of the same model: counts are near-Poisson, so their difference
    has variance ~ a + b; allow 5 standard deviations, plus 3 for the episode kvmsim
    finishes past `until` (benchmarks/test_simpy_model_check.py derives this)."""
    return abs(a - b) <= 5 * math.sqrt(a + b) + 3


@pytest.fixture(params=ORDERS)
def order(request):
    return request.param
