"""Simulated VM-Enter attempts per second: kvmsim's engines against a C model and an
idiomatic SimPy model of the same loop.

Every contender simulates the same duration of a scenario (conftest.DURATION), so the rows
of a group in pytest-benchmark's table do the same work. conftest.RUNS says who runs which
scenario: SimPy sits out the whole VMs (it models no IPIs between vCPUs), the Python
reference vm-256 (it would take ~40 s). A round times the simulation only;
its setup (Config, plan, bit generators, SimPy processes) is left out, so the rate is the
loop's. Rounds are timed in CPU time of the thread that runs them (every contender runs in
the test's thread), so other jobs on a busy machine, which the best of 100 short rounds of a
fast contender dodges and one long round of a slow one cannot, count against none of them.
The rate, attempts / best round, goes to extra_info and to the summary `pytest
benchmarks` prints at the end. Each test also checks that its contender did the work: the C
model and the Python reference give kvmsim's counts exactly (same model, same random
streams); SimPy, with its own streams, agrees within 5 standard deviations.
"""

import time

import pytest

from conftest import DURATION, RATES, RUNS, agree, prepare

# The fast contenders take ~3-10 ms a round: the best of many. The slow ones take seconds:
# one round (they are ~100x slower; the noise of one round does not change that). A whole
# VM's round takes the fast ones ~60-130 ms: the best of 20.
ROUNDS = {"cython": 100, "c": 100, "python": 1, "simpy": 1}
VM_ROUNDS = {"cython": 20, "c": 20, "python": 1}
STAT_KEYS = ("vmenter_attempts", "canceled_vmenters", "nmis_injected", "vmexits")


@pytest.mark.benchmark(timer=time.thread_time)
@pytest.mark.parametrize("scenario,contender", [(s, c) for s, cs in RUNS.items() for c in cs])
def test_speed(benchmark, request, scenario, order, contender):
    duration = DURATION[scenario]
    rounds = (VM_ROUNDS if scenario.startswith("vm-") else ROUNDS)[contender]
    c_lib = request.getfixturevalue("c_lib") if contender == "c" else None
    benchmark.group = f"{scenario} {order}: {duration:g} simulated s"
    runs = []

    def setup():
        runs[:] = [prepare(contender, scenario, order, duration, c_lib)]
        return (runs[0],), {}
    benchmark.pedantic(lambda run: run(), setup=setup, rounds=rounds,
                       warmup_rounds=1 if rounds > 1 else 0)
    totals = runs[0].totals()

    reference = prepare("cython", scenario, order, duration)
    reference()
    expected = reference.totals()
    if contender == "simpy":
        bad = {k: (totals[k], expected[k]) for k in STAT_KEYS if not agree(totals[k], expected[k])}
        assert not bad, f"(SimPy, kvmsim) outside 5 sigma: {bad}"
    else:
        diff = {k: (totals.get(k), v) for k, v in expected.items() if totals.get(k) != v}
        assert not diff and totals.keys() == expected.keys(), f"({contender}, kvmsim): {diff}"
    attempts = totals["vmenter_attempts"]
    benchmark.extra_info.update(simulated_seconds=duration, vmenter_attempts=attempts)
    if benchmark.stats:
        rate = attempts / benchmark.stats.stats.min
        benchmark.extra_info["attempts_per_second"] = rate
        RATES.setdefault((scenario, order), {})[contender] = rate
