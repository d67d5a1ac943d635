"""Two engines, one model: identical counts for the same seed, and the model's invariants."""

import numpy as np
import pytest

import kvmsim
from kvmsim import Periodic, Poisson, Trace, Workload
from workloads import HOSTS, IDLE, MIXED
from kvmsim._plan import build
from kvmsim._reference import _Source

CASES = {
    "spec2017-vtune": "spec2017-vtune",
    "idle": IDLE,
    "anchor": "anchor",
    "mixed": MIXED,
    "mixed-fixed": MIXED.model_copy(update={"lvtpc": "fixed"}),
    "mixed-smi": MIXED.model_copy(update={"lvtpc": "smi"}),
}


def both(workload, **cfg):
    return [kvmsim.simulate(kvmsim.Config(workload=workload, engine=e, **cfg),
                            duration=0.1, interval=0.025) for e in ("cython", "python")]


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("order", ["linux-6.1.y", "linux-6.6", "linux-6.7", "linux-7.2"])
@pytest.mark.parametrize("case", CASES)
def test_engines_agree_exactly(case, order, vendor):
    cy, py = both(CASES[case], order=order, vendor=vendor, seed=11)
    assert cy.totals["vmenter_attempts"] > 1000
    np.testing.assert_array_equal(cy.counts, py.counts)
    np.testing.assert_array_equal(cy.nmis_outstanding, py.nmis_outstanding)




@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("case", CASES)
def test_invariants(engine, case, host):
    for order in ("linux-6.1.y", "linux-6.6", "linux-6.7", "linux-7.2"):
        cfg = kvmsim.Config(order=order, workload=CASES[case], engine=engine, seed=2,
                            host=HOSTS[host])
        sim = kvmsim.Simulation(cfg)
        sim.run(until=0.05)
        r = sim.result()
        n = cfg.workload.vcpus
        # a vCPU between a VM-exit and its VM-Enter (or blocked after HLT) at the end
        between = [sim.engine.state(v)["in_host"] or sim.engine.state(v)["halted"]
                   for v in range(n)]
        per_vcpu = [({k: v[i] for k, v in r.per_vcpu.items()}, [between[i]]) for i in range(n)]
        for t, out in [(r.totals, between)] + per_vcpu:
            assert t["nmis_queued"] == t["nmis_injected"] + t["nmis_dropped"] \
                + t["nmis_outstanding"]
            assert t["vmenter_attempts"] == t["vmenters"] + t["canceled_vmenters"]
            # Every VM-exit is followed by exactly one VM-Enter, plus KVM_RUN's first.
            assert t["vmenters"] == t["vmexits"] + len(out) - sum(out)
            assert t["requests.PMI"] + t["pmis_irq_work"] == \
                t["pmis_delivered"] + t["pmis_dropped"]


def test_same_seed_same_counts_other_seed_differs(engine):
    def counts(seed):
        cfg = kvmsim.Config(workload="spec2017-vtune", engine=engine, seed=seed)
        return kvmsim.simulate(cfg, duration=0.05).counts
    assert (counts(1) == counts(1)).all()
    assert not (counts(1) == counts(2)).all()


def test_adding_a_source_keeps_the_other_streams():
    base = [Poisson("pmi", rate=1000.0), Poisson("irq", rate=500.0)]
    a = build(kvmsim.Config(workload=Workload(vcpus=2, sources=base)), 10**9)
    b = build(kvmsim.Config(workload=Workload(vcpus=2, sources=base + [
        Poisson("nmi", rate=10.0)])), 10**9)

    def arrivals(plan, i):
        s = _Source(plan.sources[i], plan.seed, posted=False)
        out = []
        for _ in range(50):
            out.append(s.next_t)
            s.step()
        return out
    for i in range(4):                        # 2 sources x 2 vCPUs, same keys in both
        assert a.sources[i].spawn_key == b.sources[i].spawn_key
        assert arrivals(a, i) == arrivals(b, i)
    assert arrivals(a, 0) != arrivals(a, 1)   # every vCPU has its own stream


ZERO = kvmsim.Costs(vmexit=0, vmenter=0, check=0, handler=0, event=0, state_load=0, cancel=0,
                    handlers={"NMI": 0, "PMU": 0, "PMI": 0, "SMI": 0})
EXTREMES = {
    "zero-costs": (Workload(vcpus=2, guest_exit_rate=2e5, sources=[
        Poisson("pmi", rate=5e4), Poisson("request:noop", rate=1e5), Poisson("nmi", rate=2e4),
        Poisson("irq", rate=3e4)]), ZERO),
    # Gaps far beyond int64 nanoseconds mean "never", on both engines.
    "tiny-rates": (Workload(vcpus=2, guest_exit_rate=1e-12, sources=[
        Poisson("irq", rate=1e-11), Trace("nmi", times=[0.001])]), kvmsim.Costs()),
    # Requests every 200 ns: every entry is cancelled, and the run still ends.
    "livelock": (Workload(vcpus=1, sources=[Periodic("request:TLB_FLUSH", period=2e-7)]),
                 kvmsim.Costs()),
}


@pytest.mark.parametrize("case", EXTREMES)
def test_engines_agree_at_the_extremes(case):
    workload, costs = EXTREMES[case]
    cy, py = [kvmsim.simulate(kvmsim.Config(order="linux-6.6", workload=workload, costs=costs,
                                            engine=e, seed=5), duration=0.01, interval=0.004)
              for e in ("cython", "python")]
    np.testing.assert_array_equal(cy.counts, py.counts)
    t = cy.totals
    assert t["vmenter_attempts"] == t["vmenters"] + t["canceled_vmenters"]
    if case == "livelock":
        assert t["canceled_vmenters"] > 10_000 and t["vmenters"] <= 2
    if case == "tiny-rates":
        assert t["irqs_raised"] == 0 and t["nmis_injected"] == 2
