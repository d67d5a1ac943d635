"""The C contender (benchmarks/c_model/) is the same model as kvmsim's engines.

It reads the same flattened configuration and draws from the same PCG64 streams with the
same ziggurat exponential, so for a seed it must give kvmsim's counts exactly: every counter,
per interval and per vCPU, on every source kind, distribution, LVTPC mode and vendor. A C
model that skipped work would fail here before it could win a benchmark.
"""

import numpy as np
import pytest

import kvmsim
from c_model import CRun
from kvmsim import Periodic, Poisson, Trace, Workload

MIXED = Workload(
    vcpus=3, guest_exit_rate=40_000.0, lvtpc="nmi",
    sources=[Poisson("pmi", rate=4_000.0), Poisson("nmi", rate=3_000.0),
             Poisson("irq", rate=8_000.0), Poisson("emulated-pmi", rate=1_000.0),
             Poisson("request:noop", rate=20_000.0), Periodic("exit", period=2e-4, start=1e-5),
             Poisson("request:MASTERCLOCK_UPDATE", rate=500.0, vcpu=1),
             Trace("nmi", times=[0.001] * 4 + [0.002], vcpu=2)])
CASES = {
    "anchor": "anchor",
    "spec2017-vtune": "spec2017-vtune",
    "mixed": MIXED,
    "mixed-fixed": MIXED.model_copy(update={"lvtpc": "fixed"}),
    "mixed-smi": MIXED.model_copy(update={"lvtpc": "smi"}),
    "mixed-masked": MIXED.model_copy(update={"lvtpc": "masked"}),
}
DURATION, INTERVAL = 0.1, 0.025


def assert_same(run: CRun, res: kvmsim.Result) -> None:
    assert run.totals() == res.totals
    for got, want in ((run.intervals(), res.intervals), (run.per_vcpu(), res.per_vcpu)):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("order", ["linux-6.6", "linux-6.7"])
@pytest.mark.parametrize("case", CASES)
def test_c_model_gives_kvmsims_counts(c_lib, case, order, vendor):
    cfg = kvmsim.Config(workload=CASES[case], order=order, vendor=vendor, seed=11)
    run = CRun(c_lib, cfg, DURATION, INTERVAL)
    run()
    res = kvmsim.simulate(cfg, duration=DURATION, interval=INTERVAL)
    assert res.totals["vmenter_attempts"] > 1000
    assert_same(run, res)


def test_c_model_costs_and_custom_order(c_lib):
    """Zero check cost (arrivals land only between handlers) and an order of our own."""
    cfg = kvmsim.Config(workload=MIXED, order=["PMU", "PMI", "SMI", "NMI", "MASTERCLOCK_UPDATE",
                                               "CLOCK_UPDATE", "TLB_FLUSH", "EVENT"],
                        costs=kvmsim.Costs(check=0, handlers={"PMU": 2000}), seed=3)
    run = CRun(c_lib, cfg, DURATION, INTERVAL)
    run()
    assert_same(run, kvmsim.simulate(cfg, duration=DURATION, interval=INTERVAL))


def test_c_model_benchmark_scenario_large(c_lib):
    """The 64-vCPU scenario, cut into intervals that passes straddle."""
    cfg = kvmsim.Config(workload="spec2017-vtune-large", order="linux-6.6", seed=5)
    run = CRun(c_lib, cfg, 0.005, 0.0007)
    run()
    assert_same(run, kvmsim.simulate(cfg, duration=0.005, interval=0.0007))
