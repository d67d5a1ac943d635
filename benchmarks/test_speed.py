"""Simulated VM-Enter attempts per second: kvmsim's engines against an idiomatic SimPy model.

Each benchmark times a whole simulate() (>= ~0.2 s), records the rate in extra_info, and
checks that the contenders agree: exactly for the two kvmsim engines, statistically for
SimPy (different random streams).
"""

import numpy as np
import pytest

from conftest import CONTENDERS, DURATION, SCENARIOS, agree, run

STAT_KEYS = ("vmenter_attempts", "canceled_vmenters", "nmis_injected", "vmexits")


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_speed(benchmark, scenario, order, contender):
    duration = DURATION[scenario][contender]
    benchmark.group = f"{scenario} {order}"
    benchmark.extra_info["simulated_seconds"] = duration
    out = benchmark.pedantic(run, args=(contender, scenario, order, duration),
                             rounds=3 if contender == "cython" else 1, iterations=1)
    reference = run("cython", scenario, order, duration)
    if contender == "simpy":
        totals = out
        bad = {k: (totals[k], reference.totals[k]) for k in STAT_KEYS
               if not agree(totals[k], reference.totals[k])}
        assert not bad, f"(SimPy, kvmsim) outside 5 sigma: {bad}"
    else:
        totals = out.totals
        np.testing.assert_array_equal(out.counts, reference.counts)
    attempts = totals["vmenter_attempts"]
    benchmark.extra_info["vmenter_attempts"] = attempts
    if benchmark.stats:
        benchmark.extra_info["attempts_per_second"] = attempts / benchmark.stats.stats.min
