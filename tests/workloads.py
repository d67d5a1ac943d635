"""Workloads that exercise every rule, shared by the engines' equivalence tests and the C
contender's check (benchmarks/test_c_model_check.py)."""

from kvmsim import Host, Periodic, Poisson, Trace, Workload

MIXED = Workload(
    vcpus=3, guest_exit_rate=40_000.0, lvtpc="nmi",
    sources=[Poisson("pmi", rate=4_000.0), Poisson("nmi", rate=3_000.0),
             Poisson("irq", rate=8_000.0), Poisson("emulated-pmi", rate=1_000.0),
             Poisson("request:noop", rate=20_000.0), Periodic("exit", period=2e-4, start=1e-5),
             Poisson("request:MASTERCLOCK_UPDATE", rate=500.0, vcpu=1),
             Trace("nmi", times=[0.001] * 4 + [0.002], vcpu=2)])
# An idle-ish guest: ticks, self-IPIs, STI;HLT, task work on the host CPU, other CPUs' NMIs.
IDLE = Workload(
    vcpus=2, guest_exit_rate=5_000.0,
    sources=[Periodic("timer", period=1e-3), Poisson("hlt", rate=3_000.0),
             Poisson("ipi:self", rate=2_000.0), Poisson("task-work", rate=500.0),
             Poisson("pmi", rate=1_000.0), Poisson("nmi", rate=300.0),
             Poisson("irq", rate=2_000.0), Poisson("request:noop", rate=5_000.0)],
    pmi_skid=2e-7)
# The host with APICv and IPIv (the vendor's default), and without: the IRR + EVENT path.
HOSTS = {"default": Host(), "no-apicv": Host(apicv=False, ipiv=False)}
