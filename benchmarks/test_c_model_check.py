"""The C contender (benchmarks/c_model/) is the same model as kvmsim's engines.

It reads the same flattened configuration and draws from the same PCG64 streams with the
same ziggurat exponential, so for a seed it must give kvmsim's counts exactly: every counter,
per interval and per vCPU, on every source kind, distribution, LVTPC mode, vendor, guest perf
driver, kernel profile's behaviour and host feature set. A C model that skipped work would
fail here before it could win a benchmark.

kvmsim's Simulation runs its engine in slices (1 ms, doubling while a slice takes little wall
time), and the engines' counts can depend on where a slice ends: _reference.py's
_next_guest_event times an overflow's host NMI from max(overflow, guest_since) + pmi_skid,
and the end of a slice moves guest_since (so does a guest handler that ends without an exit),
while _apply_guest counts the skid from max(overflow, entry_t). So the C model is run in the
slices the Simulation used, which Simulation.run(on_slice=...) reports.
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
# An idle-ish guest: ticks, self-IPIs, STI;HLT, task work on the host CPU, other CPUs' NMIs,
# PMIs whose host NMI may land after the VM-exit (as tests/test_engines.py's IDLE).
IDLE = Workload(
    vcpus=2, guest_exit_rate=5_000.0,
    sources=[Periodic("timer", period=1e-3), Poisson("hlt", rate=3_000.0),
             Poisson("ipi:self", rate=2_000.0), Poisson("task-work", rate=500.0),
             Poisson("pmi", rate=1_000.0), Poisson("nmi", rate=300.0),
             Poisson("irq", rate=2_000.0), Poisson("request:noop", rate=5_000.0)],
    pmi_skid=2e-7)
# Busier: every source kind at once, traces of the new kinds, a skid near the handler time.
BUSY = Workload(
    vcpus=2, guest_exit_rate=30_000.0,
    sources=[Poisson("pmi", rate=5_000.0), Poisson("emulated-pmi", rate=800.0),
             Periodic("timer", period=2.5e-4, start=3e-6), Poisson("hlt", rate=8_000.0),
             Poisson("ipi:self", rate=6_000.0), Poisson("task-work", rate=2_000.0),
             Poisson("nmi", rate=2_000.0), Poisson("irq", rate=6_000.0),
             Poisson("request:noop", rate=10_000.0), Poisson("exit", rate=5_000.0),
             Trace("hlt", times=[0.01, 0.01, 0.02], vcpu=0),
             Trace("task-work", times=[0.005] * 3, vcpu=1),
             Trace("ipi:self", times=[0.003, 0.0030001], vcpu=1)],
    nmi_handler=3e-6, irq_handler=1e-6, pmi_skid=1.5e-6)
ORDERS = ["linux-6.1.y", "linux-6.6", "linux-6.7", "linux-7.2"]
HOSTS = {"default": kvmsim.Host(), "no-apicv": kvmsim.Host(apicv=False, ipiv=False)}
CASES = {
    "anchor": "anchor",
    "spec2017-vtune": "spec2017-vtune",
    "mixed": MIXED,
    "mixed-fixed": MIXED.model_copy(update={"lvtpc": "fixed"}),
    "mixed-smi": MIXED.model_copy(update={"lvtpc": "smi"}),
    "mixed-masked": MIXED.model_copy(update={"lvtpc": "masked"}),
    "idle": IDLE,
    "busy": BUSY,
}
DURATION, INTERVAL = 0.1, 0.025


def simulate(cfg: kvmsim.Config, duration: float, interval: float):
    """kvmsim.simulate(cfg, duration, interval), and the ends of the slices it ran in (ns)."""
    sim = kvmsim.Simulation(cfg, interval=interval)
    ends = []
    sim.run(until=duration, on_slice=lambda now: ends.append(sim.now_ns))
    return sim.result(), ends


def assert_same(run: CRun, res: kvmsim.Result) -> None:
    assert run.totals() == res.totals
    for got, want in ((run.intervals(), res.intervals), (run.per_vcpu(), res.per_vcpu)):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def check(c_lib, cfg, duration=DURATION, interval=INTERVAL) -> kvmsim.Result:
    res, slices = simulate(cfg, duration, interval)
    run = CRun(c_lib, cfg, duration, interval)
    run(slices)
    assert_same(run, res)
    return res


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", CASES)
def test_c_model_gives_kvmsims_counts(c_lib, case, order, vendor, host):
    """Profiles linux-6.1.y (irq_work PMIs, process_nmi raises EVENT always, no vNMI: SVM's
    IRET exits), 6.6 / 6.7 (the two PMI orders) and 7.2 (fastpath re-entry for ICR writes
    and HLT, AVIC by default); APICv / AVIC on and off."""
    cfg = kvmsim.Config(workload=CASES[case], order=order, vendor=vendor, seed=11,
                        host=HOSTS[host])
    res = check(c_lib, cfg)
    assert res.totals["vmenter_attempts"] > 1000


# Guest perf drivers and host features the matrix above leaves at their defaults.
FEATURES = {
    "amd-perfmon-v2": dict(vendor="amd", guest_pmu="amd-perfmon-v2"),
    "amd-legacy-fixed": dict(vendor="amd", guest_pmu="amd-legacy", lvtpc="fixed"),
    "idle-hlt": dict(vendor="amd", host=kvmsim.Host(idle_hlt=True)),
    "idle-hlt-no-avic": dict(vendor="amd", host=kvmsim.Host(idle_hlt=True, apicv=False,
                                                            ipiv=False)),
    "ipiv-off": dict(vendor="intel", host=kvmsim.Host(ipiv=False)),
    "soft-timer": dict(vendor="intel", host=kvmsim.Host(preemption_timer=False)),
    "soft-timer-no-apicv": dict(vendor="intel", host=kvmsim.Host(
        preemption_timer=False, apicv=False, ipiv=False)),
}


# Idle HLT is a 6.15+ kernel feature; AMD on linux-6.1.y has no vNMI (SVM's IRET exits).
FEATURE_ORDERS = [(f, o) for f in FEATURES
                  for o in (("linux-7.2",) if f.startswith("idle-hlt") else
                            ("linux-6.1.y", "linux-6.6", "linux-7.2"))]


@pytest.mark.parametrize("workload", ["idle", "busy", "mixed"])
@pytest.mark.parametrize("feature,order", FEATURE_ORDERS)
def test_c_model_host_features_and_guest_pmus(c_lib, feature, order, workload):
    f = dict(FEATURES[feature])
    update = {k: f.pop(k) for k in ("guest_pmu", "lvtpc") if k in f}
    wl = CASES[workload].model_copy(update=update)
    cfg = kvmsim.Config(workload=wl, order=order, seed=7, **f)
    res = check(c_lib, cfg)
    assert res.totals["vmenter_attempts"] > 1000


@pytest.mark.parametrize("behaviour", [
    {"pmi_delivery": "irq_work", "process_nmi_event": "always"},
    {"fastpath_reenter": "timer-icr-hlt", "lvtpc_automask": "all"},
    {"fastpath_reenter": "timer", "lvtpc_automask": "none", "pmi_delivery": "irq_work"},
])
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_c_model_behaviour_switches(c_lib, behaviour, vendor):
    """Single switches over a profile's: each rule both ways on the same workloads."""
    for wl in (IDLE, BUSY):
        check(c_lib, kvmsim.Config(workload=wl, order="linux-6.7", vendor=vendor, seed=4,
                                   behaviour=behaviour))


def test_c_model_costs_and_custom_order(c_lib):
    """Zero check cost (arrivals land only between handlers) and an order of our own."""
    cfg = kvmsim.Config(workload=MIXED, order=["PMU", "PMI", "SMI", "NMI", "MASTERCLOCK_UPDATE",
                                               "CLOCK_UPDATE", "TLB_FLUSH", "EVENT"],
                        costs=kvmsim.Costs(check=0, handlers={"PMU": 2000}), seed=3)
    check(c_lib, cfg)


@pytest.mark.parametrize("order", ["linux-6.6", "linux-6.7"])
def test_c_model_benchmark_scenario_large(c_lib, order):
    """The 64-vCPU scenario, cut into intervals that passes straddle."""
    cfg = kvmsim.Config(workload="spec2017-vtune-large", order=order, seed=5)
    check(c_lib, cfg, 0.005, 0.0007)


def test_c_model_long_handlers_and_zero_costs(c_lib):
    """Handlers longer than the gaps between exits (deadlines shift by the time outside the
    guest many times over), skid longer than a guest run, and every cost zero."""
    zero = kvmsim.Costs(vmexit=0, vmenter=0, check=0, handler=0, event=0, state_load=0,
                        cancel=0, task_work=0,
                        handlers={"NMI": 0, "PMU": 0, "PMI": 0, "SMI": 0})
    wl = BUSY.model_copy(update={"nmi_handler": 2e-4, "irq_handler": 1e-4, "pmi_skid": 1e-4})
    for vendor in ("intel", "amd"):
        check(c_lib, kvmsim.Config(workload=wl, order="linux-7.2", vendor=vendor, seed=9))
        check(c_lib, kvmsim.Config(workload=BUSY, order="linux-6.6", vendor=vendor, seed=9,
                                   costs=zero))
