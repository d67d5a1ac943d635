"""The C contender (benchmarks/c_model/) is the same model as kvmsim's engines.

It reads the same flattened configuration and draws from the same PCG64 streams with the
same ziggurat exponential, so for a seed it must give kvmsim's counts exactly: every counter,
per interval and per vCPU, on every source kind, distribution, LVTPC mode, vendor, guest perf
driver, kernel profile's behaviour and host feature set, and on whole VMs whose vCPUs send
each other IPIs (run in kvmsim's rounds of conservative lookahead). A C model that skipped
work would fail here before it could win a benchmark.

kvmsim's Simulation runs its engine in slices (1 ms, doubling while a slice takes little wall
time); the engines' counts do not depend on where a slice ends (a coupled run's passes stop
at a slice's end and resume), so the C model runs in one go, as the benchmarks time it, and
test_sliced_runs_match_one_go checks that slices change nothing on either side.
"""

import numpy as np
import pytest

import kvmsim
from c_model import CRun
from kvmsim import Periodic, Poisson, Trace, Workload
from workloads import HOSTS, IDLE, MIXED    # tests/workloads.py

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


def assert_same(run: CRun, res: kvmsim.Result) -> None:
    assert run.totals() == res.totals
    for got, want in ((run.intervals(), res.intervals), (run.per_vcpu(), res.per_vcpu)):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def check(c_lib, cfg, duration=DURATION, interval=INTERVAL) -> kvmsim.Result:
    res = kvmsim.simulate(cfg, duration, interval)
    run = CRun(c_lib, cfg, duration, interval)
    run()
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
    # before 68fb4757e867: the handler's GLOBAL_CTRL writes reprogram at once (no
    # KVM_REQ_PMU) and an emulated count overflows at once
    {"pmu_reprogram": "sync"},
    {"pmu_reprogram": "sync", "pmi_delivery": "irq_work", "process_nmi_event": "always"},
])
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_c_model_behaviour_switches(c_lib, behaviour, vendor):
    """Single switches over a profile's: each rule both ways on the same workloads."""
    for wl in (IDLE, BUSY, MIXED):
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


# --- a whole VM: IPIs between vCPUs, requests to every vCPU, coupled runs -----------------
# As tests/test_vm.py's VM: fixed and NMI IPIs to random other vCPUs, broadcasts, a request
# to every vCPU at once, STI;HLT, PMIs with skid, the guest tick.
VM = Workload(
    vcpus=4, guest_exit_rate=20_000.0,
    sources=[Poisson("ipi:any", rate=20_000.0), Poisson("ipi-nmi:any", rate=2_000.0),
             Poisson("ipi:all", rate=1_000.0), Poisson("request-all:TLB_FLUSH", rate=1_000.0),
             Poisson("hlt", rate=5_000.0), Poisson("pmi", rate=3_000.0),
             Periodic("timer", period=2.5e-4)],
    pmi_skid=1e-6)
# Everything at once on 3 vCPUs: IPIs to a fixed vCPU (Poisson, and a trace of IPIs that
# land at one instant), NMI broadcasts, self-IPIs and task work beside STI;HLT, other CPUs'
# NMIs and IRQs, emulated PMIs, no-op requests, guest handlers longer than the IPI latency.
VM_BUSY = Workload(
    vcpus=3, guest_exit_rate=30_000.0,
    sources=[Poisson("ipi:2", rate=8_000.0), Poisson("ipi:0", rate=3_000.0, vcpu=1),
             Trace("ipi:1", times=[0.002, 0.002, 0.002000001, 0.004], vcpu=0),
             Trace("ipi:1", times=[0.002, 0.004], vcpu=2),
             Poisson("ipi-nmi:all", rate=500.0), Poisson("ipi-nmi:1", rate=800.0, vcpu=0),
             Poisson("ipi:self", rate=3_000.0), Poisson("task-work", rate=1_500.0),
             Poisson("hlt", rate=6_000.0), Poisson("pmi", rate=4_000.0),
             Poisson("emulated-pmi", rate=800.0), Poisson("nmi", rate=1_000.0),
             Poisson("irq", rate=3_000.0), Poisson("request:noop", rate=8_000.0),
             Poisson("request-all:MASTERCLOCK_UPDATE", rate=2_000.0),
             Periodic("timer", period=5e-4, start=7e-6)],
    nmi_handler=3e-6, irq_handler=2e-6, pmi_skid=1.5e-6)
VMS = {"vm": VM, "vm-busy": VM_BUSY}
APICV = {"apicv": kvmsim.Host(apicv=True), "no-apicv": kvmsim.Host(apicv=False)}


@pytest.mark.parametrize("host", APICV)
@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("order", ["linux-6.1.y", "linux-6.6", "linux-7.2"])
@pytest.mark.parametrize("case", VMS)
def test_c_model_whole_vm(c_lib, case, order, vendor, host):
    """linux-6.1.y: GLOBAL_CTRL writes reprogram synchronously, host PMIs outside guest mode
    go through irq_work, SVM's IRET exits; 6.6: deferred reprogramming, vNMI on AMD; 7.2:
    the fastpath re-enters after ICR writes and HLT. With APICv / AVIC (IPIv with it; AMD's
    AVIC accelerates IPIs) and without."""
    cfg = kvmsim.Config(workload=VMS[case], order=order, vendor=vendor, seed=13,
                        host=APICV[host])
    res = check(c_lib, cfg, 0.03, 0.004)
    assert res.totals["ipis_sent"] > 300 and res.totals["canceled_vmenters"] > 0


def test_c_model_vm_defaults(c_lib):
    """The profiles' own hosts (AMD on linux-7.2: AVIC, IPIs accelerated, vNMI), and
    spec2017-vtune's rates with IPIs and TLB flushes to every vCPU (the benchmarks'
    embedding scenario, small)."""
    for vendor in ("intel", "amd"):
        check(c_lib, kvmsim.Config(workload=VM, order="linux-7.2", vendor=vendor, seed=2),
              0.03, 0.004)
    check(c_lib, kvmsim.Config(workload="spec2017-vtune", order="linux-6.6", seed=2), 0.1)
    from conftest import WORKLOADS
    cfg = kvmsim.Config(workload=WORKLOADS["vm-64"], order="linux-6.7", seed=5)
    res = check(c_lib, cfg, 0.004, 0.0007)
    assert res.totals["ipis_sent"] > 300


def test_c_model_vm_costs(c_lib):
    """Zero check cost (arrivals only between handlers), a long IPI latency and handlers
    longer than it, an order of our own."""
    costs = kvmsim.Costs(check=0, ipi=20_000, handlers={"PMU": 2000})
    order = ["PMU", "PMI", "SMI", "NMI", "MASTERCLOCK_UPDATE", "CLOCK_UPDATE", "TLB_FLUSH",
             "EVENT"]
    for wl in (VM, VM_BUSY.model_copy(update={"nmi_handler": 3e-5, "irq_handler": 2.5e-5})):
        check(c_lib, kvmsim.Config(workload=wl, order=order, costs=costs, seed=8), 0.03, 0.004)


# A STI;HLT at the instant of a self-IPI, an exit and a guest tick: HLT decides after the
# rest of its instant (Idle HLT then sees the IPI).
HLT_INSTANT = Workload(
    vcpus=2, guest_exit_rate=2_000.0, lvtpc="fixed",
    sources=[Trace("hlt", times=[0.001, 0.002, 0.003, 0.004]),
             Trace("ipi:self", times=[0.001, 0.003], vcpu=0),
             Trace("exit", times=[0.002, 0.003], vcpu=1),
             Periodic("timer", period=1e-3), Poisson("hlt", rate=4_000.0),
             Poisson("task-work", rate=3_000.0), Poisson("pmi", rate=2_000.0)],
    pmi_skid=3e-6)


# (Idle HLT is a 6.15+ kernel feature)
@pytest.mark.parametrize("order,host", [("linux-6.6", "apicv"), ("linux-6.6", "no-apicv"),
                                        ("linux-7.2", "apicv"), ("linux-7.2", "no-apicv"),
                                        ("linux-7.2", "idle-hlt")])
def test_c_model_hlt_instants(c_lib, order, host):
    h = {**APICV, "idle-hlt": kvmsim.Host(idle_hlt=True)}[host]
    vendor = "amd" if host == "idle-hlt" else "intel"
    check(c_lib, kvmsim.Config(workload=HLT_INSTANT, order=order, vendor=vendor, seed=6,
                               host=h), 0.01, 0.001)


SLICES = [0.0013, 0.004, 0.00401, 0.0111, 0.011100001, 0.02]


@pytest.mark.parametrize("case", ["vm", "vm-busy", "idle", "busy"])
@pytest.mark.parametrize("host", APICV)
def test_sliced_runs_match_one_go(c_lib, case, host):
    """The C model run in slices (passes of a coupled run stop at each end and resume) gives
    the counts of its run in one go, and so does a kvmsim Simulation run in steps: all equal
    kvmsim.simulate."""
    wl = {**VMS, **CASES}[case]
    cfg = kvmsim.Config(workload=wl, order="linux-6.6", seed=21, host=APICV[host])
    whole = kvmsim.simulate(cfg, 0.02, 0.002)
    sim = kvmsim.Simulation(cfg, interval=0.002)
    for until in SLICES:
        sim.run(until=until)
    np.testing.assert_array_equal(sim.result().counts, whole.counts)
    sliced = CRun(c_lib, cfg, 0.02, 0.002)
    sliced([round(x * 1e9) for x in SLICES])
    assert_same(sliced, whole)
    one_go = CRun(c_lib, cfg, 0.02, 0.002)
    one_go()
    assert_same(one_go, whole)
