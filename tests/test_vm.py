"""A whole VM: IPIs between vCPUs and requests to every vCPU, exact on both engines."""

import numpy as np
import pytest

import kvmsim
from kvmsim import Costs, Host, Periodic, Poisson, Trace, Workload

MS = 1e-3
KEYS = ("vmexits", "fastpath_exits", "ipis_sent", "irqs_raised", "irqs_injected",
        "nmis_injected", "nmis_unknown", "requests.EVENT", "requests.NMI", "canceled_vmenters",
        "cancels.async.EVENT")


def per_vcpu(sim, wl, duration=0.003, **cfg):
    r = sim(wl, duration=duration, **cfg)
    return {k: r.per_vcpu[k].tolist() for k in KEYS if r.totals[k]}


def two(*sources):
    return Workload(vcpus=2, lvtpc="masked", sources=list(sources))


ONE_IPI = two(Trace("ipi:1", times=[MS], vcpu=0))


def test_posted_ipi_needs_no_exit(sim):
    # IPIv: the ICR write does not exit; APICv posts the IRQ, the CPU delivers it.
    assert per_vcpu(sim, ONE_IPI, order="linux-7.2") == {
        "ipis_sent": [1, 0], "irqs_raised": [0, 1], "irqs_injected": [0, 1]}


@pytest.mark.parametrize("order,fastpath", [("linux-7.2", [1, 0]), ("linux-6.9", None)])
def test_ipi_without_apicv(sim, order, fastpath):
    # The ICR write exits (re-entered by the fastpath since v6.12); at the target the IRR,
    # KVM_REQ_EVENT and a kick: one exit, one injection.
    got = per_vcpu(sim, ONE_IPI, order=order, host=Host(apicv=False))
    assert got.pop("fastpath_exits", None) == fastpath
    assert got == {"vmexits": [1, 1], "ipis_sent": [1, 0], "irqs_raised": [0, 1],
                   "irqs_injected": [0, 1], "requests.EVENT": [0, 1]}


def test_nmi_ipi(sim):
    # APIC_DM_NMI: never posted, never virtualised; the target's handler claims it.
    wl = two(Trace("ipi-nmi:1", times=[MS], vcpu=0))
    assert per_vcpu(sim, wl, order="linux-7.2") == {
        "vmexits": [1, 1], "ipis_sent": [1, 0], "nmis_injected": [0, 1],
        "requests.EVENT": [0, 1], "requests.NMI": [0, 1]}


# vCPU 1 exits at T; its pass starts at T + 300 with nothing pending, so it checks only
# EVENT (at T + 300) and reaches kvm_vcpu_exit_request() at T + 402. vCPU 0's IPI reaches
# it cost_ipi = 1650 ns after the ICR write.
COSTS = Costs(vmexit=300, check=2, handler=100, event=400, state_load=100, cancel=50)
T = 1_000_000


@pytest.mark.parametrize("lands,cancels", [(T + 350, 1), (T + 299, 0)])
def test_an_ipi_between_the_checks_and_the_late_check_cancels(sim, lands, cancels):
    wl = two(Trace("exit", times=[T / 1e9], vcpu=1),
             Trace("ipi:1", times=[(lands - 1650) / 1e9], vcpu=0))
    got = per_vcpu(sim, wl, order="linux-6.6", costs=COSTS, host=Host(apicv=False))
    assert got.get("canceled_vmenters", [0, 0]) == [0, cancels]
    assert got.get("cancels.async.EVENT", [0, 0]) == [0, cancels]
    assert got["irqs_injected"] == [0, 1] and got["vmexits"] == [1, 1]


def test_broadcast_and_random_targets(sim):
    wl = Workload(vcpus=4, lvtpc="masked", sources=[Trace("ipi:all", times=[MS], vcpu=0)])
    assert per_vcpu(sim, wl)["irqs_injected"] == [0, 1, 1, 1]
    # ipi:any draws each target from the source's own stream: fixed for the seed
    wl = Workload(vcpus=4, lvtpc="masked",
                  sources=[Periodic("ipi:any", period=1e-5, vcpu=0)])
    got = per_vcpu(sim, wl, duration=0.001)
    assert got["ipis_sent"] == [99, 0, 0, 0] and got["irqs_injected"] == [0, 23, 38, 38]


def test_request_to_every_vcpu_arrives_everywhere_at_once(sim):
    wl = Workload(vcpus=3, lvtpc="masked", sources=[Poisson("request-all:TLB_FLUSH", rate=5000)])
    got = sim(wl, duration=0.01).per_vcpu["requests.TLB_FLUSH"].tolist()
    assert got == [56, 56, 56]


VM = Workload(vcpus=4, guest_exit_rate=20_000.0, sources=[
    Poisson("ipi:any", rate=20_000.0), Poisson("ipi-nmi:any", rate=2_000.0),
    Poisson("hlt", rate=5_000.0), Poisson("pmi", rate=3_000.0),
    Periodic("timer", period=2.5e-4), Poisson("request-all:TLB_FLUSH", rate=1_000.0)],
    pmi_skid=1e-6)


@pytest.mark.parametrize("host", [Host(), Host(apicv=False)])
def test_a_coupled_run_in_steps_equals_one_run(engine, host):
    cfg = kvmsim.Config(workload=VM, engine=engine, seed=3, host=host)
    whole = kvmsim.simulate(cfg, duration=0.02, interval=0.002)
    sim = kvmsim.Simulation(cfg, interval=0.002)
    for until in (0.0013, 0.004, 0.00401, 0.0111, 0.02):
        sim.run(until=until)
    stepped = sim.result()
    np.testing.assert_array_equal(stepped.counts, whole.counts)
    assert whole.totals["ipis_sent"] > 400 and whole.totals["canceled_vmenters"] > 0


def test_engines_agree_on_a_vm():
    cy, py = (kvmsim.simulate(kvmsim.Config(workload=VM, engine=e, seed=5, vendor="amd"),
                              duration=0.01, interval=0.001) for e in ("cython", "python"))
    np.testing.assert_array_equal(cy.counts, py.counts)
    assert cy.totals["irqs_raised"] >= cy.totals["ipis_sent"] - cy.totals["nmis_queued"]


@pytest.mark.parametrize("sources,vcpus,field,needle", [
    ([Trace("ipi:5", times=[MS], vcpu=0)], 2, "sources.0.kind", "vCPU 5"),
    ([Trace("ipi:0", times=[MS], vcpu=0)], 2, "sources.0.kind", "ipi:self"),
    ([Trace("ipi:any", times=[MS])], 1, "sources.0.kind", "another vCPU"),
    ([Trace("request-all:TLB_FLUSH", times=[MS], vcpu=1)], 2, "sources.0.vcpu",
     "every vCPU"),
])
def test_bad_ipi_sources(sources, vcpus, field, needle):
    with pytest.raises(kvmsim.ConfigError) as e:
        Workload(vcpus=vcpus, sources=sources)
    [(path, msg)] = e.value.problems
    assert path == field and needle in msg


def test_ipis_need_a_latency():
    with pytest.raises(kvmsim.ConfigError) as e:
        kvmsim.Config(workload=ONE_IPI, costs=Costs(ipi=0))
    assert [p for p, _ in e.value.problems] == ["costs.ipi"]


def test_a_shorthand_ipi_always_exits(sim):
    # ipi:all is one ICR write with the ALL_BUT_SELF shorthand: not the fastpath's (it takes
    # no shorthand), not virtualised by IPIv in the model.
    wl = Workload(vcpus=3, lvtpc="masked", sources=[Trace("ipi:all", times=[MS], vcpu=0)])
    got = per_vcpu(sim, wl, order="linux-7.2")
    assert got["vmexits"] == [1, 0, 0] and "fastpath_exits" not in got
    assert got["irqs_injected"] == [0, 1, 1]


def test_emulated_instructions_need_a_kernel_that_counts_them():
    wl = Workload(sources=[Trace("emulated-pmi", times=[MS])])
    with pytest.raises(kvmsim.ConfigError, match="kvm_pmu_trigger_event"):
        kvmsim.Config(order="linux-5.15", workload=wl)
    kvmsim.Config(order="linux-6.1", workload=wl)
