"""Every behaviour switch and host feature, on scripted traces: exact counts, both engines.

docs/profiles.md gives each switch's commit; docs/model.md the rule each test exercises.
"""

import pytest

import kvmsim
from kvmsim import Costs, Host, Periodic, Trace, Workload

MS = 1e-3
QUIET = dict(lvtpc="masked")      # no perf NMI handler: only what each test scripts exits


def counts(sim, wl, keys, duration=0.003, **cfg):
    t = sim(wl, duration=duration, **cfg).totals
    return {k: t[k] for k in keys}


# --- STI;HLT after a self-IPI sent with interrupts off (the selftest `cli; IPI; sti; hlt`) ----
SELF_IPI_HLT = Workload(vcpus=1, sources=[Trace("ipi:self", times=[MS]),
                                          Trace("hlt", times=[MS])], **QUIET)
HLT_KEYS = ("vmexits", "halt_exits", "fastpath_exits", "irq_window_exits", "irqs_injected",
            "requests.EVENT")


@pytest.mark.parametrize("order,vendor,host,expect", [
    # APICv: the SELF IPI write does not exit; the posted IRQ waits for STI. HLT exits (VMX
    # always intercepts it) and, runnable, handle_fastpath_hlt re-enters (v6.12+) ...
    ("linux-7.2", "intel", Host(), (1, 1, 1, 0, 1, 0)),
    # ... or vcpu_run's pass follows (v6.9: kvm_vcpu_check_block finds the IRQ, no block).
    ("linux-6.9", "intel", Host(), (1, 1, 0, 0, 1, 0)),
    # IPIv does not matter: the self-IPI is the x2APIC SELF IPI register, which APICv
    # virtualises (ICR writes to other vCPUs: tests/test_vm.py).
    ("linux-7.2", "intel", Host(ipiv=False), (1, 1, 1, 0, 1, 0)),
    ("linux-6.9", "intel", Host(ipiv=False), (1, 1, 0, 0, 1, 0)),
    # Without APICv the SELF IPI write exits and the IRQ is injected: KVM_REQ_EVENT finds
    # IF=0 and opens an interrupt window, which STI satisfies: that exit comes instead of
    # HLT's.
    ("linux-7.2", "intel", Host(apicv=False), (2, 0, 0, 1, 1, 2)),
    # AMD (v6.18+: AVIC on by default): HLT exits unless the Idle HLT intercept sees the IRQ.
    ("linux-7.2", "amd", Host(), (1, 1, 1, 0, 1, 0)),
    ("linux-7.2", "amd", Host(idle_hlt=True), (0, 0, 0, 0, 1, 0)),
    ("linux-7.2", "amd", Host(apicv=False, idle_hlt=True), (2, 0, 0, 1, 1, 2)),
])
def test_self_ipi_before_hlt(sim, order, vendor, host, expect):
    got = counts(sim, SELF_IPI_HLT, HLT_KEYS, order=order, vendor=vendor, host=host)
    assert tuple(got.values()) == expect


@pytest.mark.parametrize("host,event", [(Host(), 0), (Host(apicv=False), 1)])
def test_hlt_blocks_until_an_interrupt(sim, host, event):
    # HLT with nothing pending: kvm_vcpu_block until the IRQ at 2 ms wakes the vCPU (posted
    # with APICv: kvm_vcpu_wake_up; else KVM_REQ_EVENT + kick).
    wl = Workload(vcpus=1, sources=[Trace("hlt", times=[MS]), Trace("irq", times=[2 * MS])],
                  **QUIET)
    t = sim(wl, duration=0.003, order="linux-7.2", host=host).totals
    assert (t["vmexits"], t["halt_exits"], t["fastpath_exits"], t["irqs_injected"]) == (1, 1, 0, 1)
    assert t["ns.halted"] == MS * 1e9 - Costs().vmexit and t["requests.EVENT"] == event


# --- the guest's LAPIC timer -------------------------------------------------------------------
TICKS = Workload(vcpus=1, sources=[Periodic("timer", period=MS)], **QUIET)


@pytest.mark.parametrize("order,vendor,host,fastpath,event", [
    # VMX preemption timer + APICv: handle_fastpath_preemption_timer posts the IRQ, re-enters.
    ("linux-7.2", "intel", Host(), 2, 0),
    # Without APICv: lapic_timer.pending + KVM_REQ_UNBLOCK end the fastpath loop; vcpu_run
    # injects the IRQ (KVM_REQ_EVENT).
    ("linux-7.2", "intel", Host(apicv=False), 0, 2),
    # A host hrtimer (no preemption timer, or AMD): apic_timer_expired(from_timer_fn) kicks
    # the vCPU; the IRQ is posted with APICv / AVIC (AMD default since v6.18) ...
    ("linux-7.2", "intel", Host(preemption_timer=False), 0, 0),
    ("linux-7.2", "amd", Host(), 0, 0),
    # ... and injected without (AVIC off by default before v6.18).
    ("linux-6.6", "amd", Host(), 0, 2),
])
def test_guest_tick(sim, order, vendor, host, fastpath, event):
    t = sim(TICKS, duration=0.0025, order=order, vendor=vendor, host=host).totals
    assert (t["vmexits"], t["irqs_injected"], t["canceled_vmenters"]) == (2, 2, 0)
    assert (t["fastpath_exits"], t["requests.EVENT"]) == (fastpath, event)


def test_soft_timer_cancels_an_entry_in_progress(sim):
    # KVM_REQ_UNBLOCK from the hrtimer lands between the checks and the late check: the
    # entry is cancelled (vcpu_run clears the bit; its IRQ is injected on the next pass).
    costs = Costs(vmexit=300, state_load=1000)
    wl = Workload(vcpus=1, sources=[Trace("exit", times=[MS]),
                                    Trace("timer", times=[MS + 500e-9])], **QUIET)
    t = sim(wl, order="linux-6.6", vendor="amd", costs=costs).totals
    assert t["canceled_vmenters"] == 1 and t["cancels.async.UNBLOCK"] == 1
    assert t["irqs_injected"] == 1 and t["vmenters"] == t["vmexits"] + 1 == 2


# --- xfer_to_guest_mode work --------------------------------------------------------------------
def test_task_work_kicks_a_running_vcpu(sim):
    wl = Workload(vcpus=1, sources=[Trace("task-work", times=[MS])], **QUIET)
    t = sim(wl).totals
    assert (t["vmexits"], t["task_work"], t["canceled_vmenters"]) == (1, 1, 0)
    assert t["ns.task_work"] == Costs().task_work


def test_task_work_in_the_window_cancels_without_a_request(sim):
    # A plain exit at 1 ms; need_resched lands after the (skipped) checks, before the late
    # check: kvm_vcpu_exit_request() sees the work, not a request bit.
    costs = Costs(vmexit=300, state_load=1000)
    wl = Workload(vcpus=1, sources=[Trace("exit", times=[MS]),
                                    Trace("task-work", times=[MS + 500e-9])], **QUIET)
    t = sim(wl, costs=costs).totals
    assert (t["canceled_vmenters"], t["cancels_task_work"], t["task_work"]) == (1, 1, 1)


# --- pmi_delivery: 73554b29bd70 "Synthesize at most one PMI per VM-exit" -------------------------
# An overflow at 1 ms whose host NMI lands 1.6 us later; the guest exits at 1.001 ms with an
# emulated overflow. The pass starts at +340 ns, checks PMU (emulated overflow: KVM_REQ_PMI)
# and the host NMI lands inside the PMU handler, before the PMI check.
ONE_EXIT = Workload(vcpus=1, pmi_skid=1.6e-6, sources=[
    Trace("pmi", times=[MS]), Trace("exit", times=[MS + 1e-6]),
    Trace("emulated-pmi", times=[MS + 1e-6])])
PMI_KEYS = ("pmis_irq_work", "pmis_coalesced", "pmis_delivered", "nmis_injected",
            "canceled_vmenters", "requests.PMI")


@pytest.mark.parametrize("delivery,expect", [
    # Before: the NMI outside guest mode goes through irq_work (kvm_pmi_trigger_fn ->
    # kvm_pmu_deliver_pmi at once), the emulated one through KVM_REQ_PMI: two PMIs.
    ("irq_work", (1, 0, 2, 2, 1, 1)),
    # After: both raise KVM_REQ_PMI; the second finds it pending: one PMI.
    ("request", (0, 1, 1, 1, 1, 1)),
])
def test_host_pmi_and_emulated_overflow_in_one_exit(sim, delivery, expect):
    got = counts(sim, ONE_EXIT, PMI_KEYS, order="linux-6.6",
                 behaviour={"pmi_delivery": delivery, "lvtpc_automask": "none"})
    assert tuple(got.values()) == expect


def test_host_pmi_wakes_a_halted_vcpu(sim):
    # An overflow at 1 ms whose host NMI lands at 1.002 ms, after STI;HLT blocked the vCPU
    # (1.001 ms + the exit): KVM_REQ_PMI, which kvm_vcpu_has_events() tests since
    # 73554b29bd70, wakes it; before, the irq_work's delivery queues the NMI that does.
    wl = Workload(vcpus=1, pmi_skid=2e-6, sources=[Trace("pmi", times=[MS]),
                                                   Trace("hlt", times=[MS + 1e-6])])
    for delivery, irq_work in (("request", 0), ("irq_work", 1)):
        t = sim(wl, order="linux-6.7", behaviour={"pmi_delivery": delivery}).totals
        assert t["halt_exits"] == 1 and t["pmis_delivered"] == t["nmis_injected"] == 1
        assert t["pmis_irq_work"] == irq_work
        assert t["ns.halted"] == 2_000 - 1_000 - Costs().vmexit


# --- process_nmi_event: 2cb9317377ca ----------------------------------------------------------------
@pytest.mark.parametrize("rule,event", [("pending", 0), ("always", 1)])
def test_process_nmi_raises_event(sim, rule, event):
    # An NMI IPI on AMD with vNMI: process_nmi hands it to V_NMI_PENDING, so nothing is
    # pending for KVM to inject; KVM_REQ_EVENT comes only from the older rule.
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[MS])], **QUIET)
    t = sim(wl, order="linux-6.6", vendor="amd", behaviour={"process_nmi_event": rule}).totals
    assert t["requests.EVENT"] == event and t["nmis_injected"] == 1


# --- vNMI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vnmi,exits,windows", [(True, 1, 0), (False, 1 + 2, 2)])
def test_two_nmis_with_and_without_vnmi(sim, vnmi, exits, windows):
    # Two NMI IPIs at once: with vNMI KVM injects the first and the second waits in
    # V_NMI_PENDING for the first's IRET, no exit. Without, each injected NMI's IRET is
    # intercepted (svm_inject_nmi; iret_interception counts an NMI-window exit), and the
    # second is injected after the first's.
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[MS, MS])], **QUIET)
    t = sim(wl, order="linux-6.6", vendor="amd", host=Host(vnmi=vnmi)).totals
    assert (t["nmis_injected"], t["nmis_dropped"]) == (2, 0)
    assert (t["vmexits"], t["nmi_window_exits"]) == (exits, windows)


# --- what a profile's kernel cannot have -------------------------------------------------------------
@pytest.mark.parametrize("order,vendor,host,field", [
    ("linux-6.1", "amd", Host(vnmi=True), "host.vnmi"),
    ("linux-6.12", "amd", Host(idle_hlt=True), "host.idle_hlt"),
    ("linux-5.15", "intel", Host(ipiv=True), "host.ipiv"),
    ("linux-7.2", "intel", Host(vnmi=True), "host.vnmi"),
    ("linux-7.2", "amd", Host(preemption_timer=True), "host.preemption_timer"),
    ("linux-7.2", "intel", Host(apicv=False, ipiv=True), "host.ipiv"),
])
def test_profiles_refuse_hosts_their_kernel_cannot_have(order, vendor, host, field):
    with pytest.raises(kvmsim.ConfigError) as e:
        kvmsim.Config(order=order, vendor=vendor, host=host)
    assert [p for p, _ in e.value.problems] == [field]


def test_host_defaults_follow_vendor_and_profile():
    m = kvmsim.Config(order="linux-7.2").machine
    assert m == dict(apicv=True, ipiv=True, vnmi=False, idle_hlt=False, preemption_timer=True)
    assert kvmsim.Config(order="linux-5.15").machine["ipiv"] is False
    assert kvmsim.Config(order="linux-6.6", vendor="amd").machine == dict(
        apicv=False, ipiv=False, vnmi=True, idle_hlt=False, preemption_timer=False)
    assert kvmsim.Config(order="linux-7.2", vendor="amd").machine["apicv"] is True
    assert kvmsim.Config(host=Host(apicv=False)).machine["ipiv"] is False


# --- pmu_reprogram: 68fb4757e867 ----------------------------------------------------------------
@pytest.mark.parametrize("rule,pmu_per_pmi", [("sync", 1), ("request", 1 + 2)])
def test_global_control_writes_defer_reprogramming(sim, rule, pmu_per_pmi):
    # The host overflow always raises KVM_REQ_PMU (kvm_perf_overflow); the Intel handler's
    # two writes of GLOBAL_CTRL raise it only once reprogramming is deferred.
    wl = Workload(vcpus=1, sources=[Trace("pmi", times=[i * MS for i in range(1, 21)])])
    t = sim(wl, order="linux-6.6", duration=0.05, behaviour={"pmu_reprogram": rule}).totals
    assert t["requests.PMU"] == 20 * pmu_per_pmi and t["pmis_delivered"] == 20


def test_emulated_overflow_without_deferred_reprogramming(sim):
    # Before 68fb4757e867 the emulated event reprograms and overflows in the exit handler:
    # KVM_REQ_PMI at once, no KVM_REQ_PMU; the PMI -> NMI back edge of the v6.6 order stays.
    wl = Workload(vcpus=1, lvtpc="nmi", sources=[Trace("emulated-pmi", times=[MS])])
    t = sim(wl, order="linux-6.1").totals
    assert (t["pmis_raised"], t["pmis_delivered"], t["canceled_vmenters"]) == (1, 1, 1)
    assert t["requests.PMU"] == 0 and t["requests.PMI"] == 1


def test_task_work_while_halted_keeps_the_vcpu_halted(sim):
    # vcpu_block() returns to vcpu_run() for the work, which blocks again: no entry until
    # the IRQ at 3 ms.
    wl = Workload(vcpus=1, sources=[Trace("hlt", times=[MS]), Trace("task-work", times=[2 * MS]),
                                    Trace("irq", times=[3 * MS])], **QUIET)
    t = sim(wl, duration=0.004, order="linux-7.2").totals
    assert (t["vmexits"], t["vmenters"], t["task_work"]) == (1, 2, 1)
    assert t["ns.halted"] == 2 * MS * 1e9 - Costs().vmexit - Costs().task_work
