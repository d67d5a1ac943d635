"""Scripted traces make the model deterministic: exact counts, on both engines."""

import pytest

import kvmsim
from kvmsim import Costs, Periodic, Trace, Workload

MS = 1e-3
PMIS = [i * MS for i in range(1, 21)]   # 20 PMIs, 1 ms apart


def pmi_only(**kw):
    return Workload(vcpus=1, sources=[Trace("pmi", times=PMIS, vcpu=0)], **kw)


# The guest's perf NMI handler per PMI (kvmsim._spec.PMI_HANDLER_OPS): intercepted PMU accesses,
# of which writes of the global control make KVM reprogram counters (KVM_REQ_PMU).
#   intel (intel_pmu_handle_irq): 8 accesses, 2 global-control writes, LVTPC written last;
#   amd-legacy (x86_pmu_handle_irq): 3 accesses, none, LVTPC written first;
#   amd-perfmon-v2 (amd_pmu_v2_handle_irq): 6 accesses, 2, no LVTPC write.
# Exits per PMI: the host's NMI, then one per access; with vNMI (AMD's default since v6.4) no
# IRET intercept and no NMI injection by KVM.
@pytest.mark.parametrize("vendor,guest_pmu,exits,pmu_requests", [
    ("intel", None, 1 + 8, 1 + 2),
    ("amd", None, 1 + 3, 1 + 0),
    ("amd", "amd-perfmon-v2", 1 + 6, 1 + 2),
])
def test_linux66_cancels_once_per_pmi(sim, vendor, guest_pmu, exits, pmu_requests):
    t = sim(pmi_only(guest_pmu=guest_pmu), order="linux-6.6", duration=0.05, vendor=vendor,
            behaviour={"lvtpc_automask": "none"}).totals
    assert t["pmis_delivered"] == 20
    assert t["canceled_vmenters"] == 20       # the PMI -> NMI back edge, once per PMI
    assert t["nmis_injected"] == 20 and t["nmis_dropped"] == 0 and t["nmis_unknown"] == 0
    assert t["vmexits"] == 20 * exits
    assert t["vmenter_attempts"] == 1 + 20 * exits + 20
    assert t["requests.NMI"] == 20 and t["requests.PMI"] == 20
    assert t["requests.PMU"] == 20 * pmu_requests
    # KVM injects the NMI (KVM_REQ_EVENT) on Intel; vNMI hands it to the CPU on AMD.
    assert t["requests.EVENT"] == (20 if vendor == "intel" else 0)


def test_amd_without_vnmi_intercepts_iret(sim):
    t = sim(pmi_only(), order="linux-6.6", duration=0.05, vendor="amd",
            host=kvmsim.Host(vnmi=False)).totals
    # svm_inject_nmi sets the IRET intercept: one more exit per PMI (iret_interception,
    # counted as an NMI-window exit), which raises KVM_REQ_EVENT.
    assert t["vmexits"] == 20 * (1 + 3 + 1) and t["nmi_window_exits"] == 20
    assert t["requests.EVENT"] == 20 + 20 and t["canceled_vmenters"] == 20


@pytest.mark.parametrize("order", ["linux-6.7", "linux-6.19"])
def test_pmi_before_nmi_never_cancels(sim, order):
    t = sim(pmi_only(), order=order, duration=0.05).totals
    assert t["canceled_vmenters"] == 0
    assert t["nmis_injected"] == 20
    assert t["vmenter_attempts"] == t["vmenters"] == 1 + 20 * 9


def test_three_nmis_at_one_instant(sim):
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[MS, MS, MS])])
    t = sim(wl).totals
    assert (t["nmis_queued"], t["nmis_injected"], t["nmis_dropped"]) == (3, 2, 1)
    assert t["nmi_window_exits"] == 1          # the second waits for the first's IRET
    assert t["nmis_outstanding"] == 0


def test_nmi_limit_is_one_while_masked(sim):
    # The first NMI's handler runs 5 us; two more arrive inside it: process_nmi keeps one.
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[MS, MS + 1e-6, MS + 2e-6])])
    t = sim(wl).totals
    assert (t["nmis_injected"], t["nmis_dropped"]) == (2, 1)


# Three pairs of PMIs, the second 1 us after the first: it overflows at the VM-Enter that
# injects the first's NMI, while the guest's NMI handler (5 us of guest time) runs.
PAIRS = [t * MS + d for t in (1, 2, 3) for d in (0, 1e-6)]


@pytest.mark.parametrize("vendor,guest_pmu,rule,delivered,exits", [
    # LVTPC never masked: every PMI is delivered; the second NMI waits for the first's IRET
    # (an NMI-window exit on Intel; vNMI holds it in V_NMI_PENDING on AMD).
    ("intel", "intel", "none", 6, 3 * (1 + 8 + 1 + 1 + 8)),
    ("amd", "amd-legacy", "none", 6, 3 * (1 + 3 + 1 + 3)),
    ("amd", "amd-perfmon-v2", "none", 6, 3 * (1 + 6 + 1 + 6)),
    # a16eb25b09c0 masks LVTPC on delivery: the second PMI of each pair is dropped, since the
    # Intel handler unmasks last and the legacy AMD handler first but only 1.25 us in.
    ("intel", "intel", "all", 3, 3 * (1 + 8 + 1)),
    ("amd", "amd-legacy", "all", 3, 3 * (1 + 3 + 1)),
    # PerfMonV2 guests never write LVTPC: after the first PMI every PMI is dropped, the bug
    # 49ff3b4aec51 fixed by masking for Intel-compatible guests only.
    ("amd", "amd-perfmon-v2", "all", 1, 1 + 6 + 5),
    ("intel", "intel", "intel", 3, 3 * (1 + 8 + 1)),
    ("amd", "amd-legacy", "intel", 6, 3 * (1 + 3 + 1 + 3)),
    ("amd", "amd-perfmon-v2", "intel", 6, 3 * (1 + 6 + 1 + 6)),
])
def test_pmi_pairs_by_lvtpc_rule_and_guest_driver(sim, vendor, guest_pmu, rule, delivered,
                                                  exits):
    wl = Workload(vcpus=1, guest_pmu=guest_pmu, sources=[Trace("pmi", times=PAIRS)])
    t = sim(wl, duration=0.005, vendor=vendor, behaviour={"lvtpc_automask": rule}).totals
    assert (t["pmis_delivered"], t["pmis_dropped"]) == (delivered, 6 - delivered)
    assert t["nmis_injected"] == delivered and t["nmis_dropped"] == 0
    assert t["vmexits"] == exits
    assert t["nmi_window_exits"] == (3 if vendor == "intel" and delivered == 6 else 0)


def test_profiles_choose_the_lvtpc_rule(sim):
    # linux-6.8 masks for every vendor (a16eb25b09c0), linux-6.9 for Intel guests only.
    wl = Workload(vcpus=1, guest_pmu="amd-perfmon-v2", sources=[Trace("pmi", times=PAIRS)])
    assert sim(wl, order="linux-6.8", vendor="amd", duration=0.005).totals["pmis_dropped"] == 5
    assert sim(wl, order="linux-6.9", vendor="amd", duration=0.005).totals["pmis_dropped"] == 0


COSTS = Costs(vmexit=300, check=2, handler=100, event=400, state_load=100, cancel=50,
              handlers={"NMI": 30})
# A request:STEAL_UPDATE (position 17 of linux-6.6) forces an exit at T = 1 ms; the pass
# starts at T + 300 with a request pending, so check k runs at T + 300 + 2k.
T = 1_000_000
PASS = T + 300


def two_requests(second_ns):
    return Workload(vcpus=1, sources=[Trace("request:STEAL_UPDATE", times=[T / 1e9]),
                                      Trace("request:TLB_FLUSH", times=[second_ns / 1e9])])


def test_arrival_before_its_check_is_seen(sim):
    # TLB_FLUSH is position 10: checked at PASS + 20; landing exactly then is still seen.
    t = sim(two_requests(PASS + 20), order="linux-6.6", costs=COSTS).totals
    assert t["canceled_vmenters"] == 0 and t["requests.TLB_FLUSH"] == 1


def test_arrival_after_its_check_cancels(sim):
    t = sim(two_requests(PASS + 21), order="linux-6.6", costs=COSTS).totals
    assert t["canceled_vmenters"] == 1 and t["requests.TLB_FLUSH"] == 1
    assert t["vmenter_attempts"] == 3 and t["vmenters"] == 2


def test_empty_block_is_skipped(sim):
    # A plain exit: nothing pending, so kvm_request_pending() skips every check but EVENT;
    # a request landing after the pass started is left for the late check.
    wl = Workload(vcpus=1, sources=[Trace("exit", times=[T / 1e9]),
                                    Trace("request:STEAL_UPDATE", times=[(PASS + 1) / 1e9])])
    assert sim(wl, order="linux-6.6", costs=COSTS).totals["canceled_vmenters"] == 1


def test_cancel_reinjects_the_written_nmi(sim):
    # NMI at T: process_nmi at position 19, EVENT (position 34) injects it and the block
    # ends at PASS + 2*19 + 2 + 30 + 2*14 + 2 + 400 = PASS + 500; the late check is at
    # PASS + 600. A request landing in between cancels the entry; the NMI written to the
    # VMCS goes back to nmi_injected and is re-injected, not lost and not doubled.
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[T / 1e9]),
                                    Trace("request:TLB_FLUSH", times=[(PASS + 550) / 1e9])])
    t = sim(wl, order="linux-6.6", costs=COSTS).totals
    assert t["canceled_vmenters"] == 1
    assert (t["nmis_queued"], t["nmis_injected"], t["nmis_dropped"]) == (1, 1, 0)
    assert t["requests.EVENT"] == 2            # the re-injection pass runs the EVENT block


def test_same_timestamp_events_are_all_visible(sim):
    # A PMI and an NMI at one instant: one exit, one pass sees both.
    wl = Workload(vcpus=1, sources=[Trace("pmi", times=[MS]), Trace("nmi", times=[MS])])
    t = sim(wl, order="linux-6.7").totals
    assert t["canceled_vmenters"] == 0
    assert t["nmis_queued"] == 2 and t["nmis_injected"] == 2 and t["nmis_dropped"] == 0


def test_irq_waits_for_nmi_handler(sim):
    # Without APICv: an IRQ and an NMI together, the NMI wins, the IRQ gets -EBUSY (immediate
    # exit), then waits for IF=1 at the NMI handler's IRET (interrupt window).
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[MS]), Trace("irq", times=[MS])])
    t = sim(wl, host=kvmsim.Host(apicv=False, ipiv=False)).totals
    assert t["nmis_injected"] == 1 and t["irqs_injected"] == 1
    assert t["immediate_exits"] == 1 and t["irq_window_exits"] == 1
    # The NMI finds no overflow: perf's handler reads the status and writes LVTPC (2 of its 4
    # accesses reprogram), then the IRQ window exit.
    assert t["vmexits"] == 1 + 1 + 4 + 1 and t["requests.EVENT"] == 3


def test_posted_irq_waits_for_nmi_handler(sim):
    # With APICv (the Intel default) the IRQ is posted: no request, no kick, no window; the
    # CPU delivers it when the NMI handler's IRET opens IF.
    wl = Workload(vcpus=1, sources=[Trace("nmi", times=[MS]), Trace("irq", times=[MS])])
    t = sim(wl).totals
    assert t["nmis_injected"] == 1 and t["irqs_injected"] == 1
    assert t["immediate_exits"] == t["irq_window_exits"] == 0
    assert t["vmexits"] == 1 + 4 and t["requests.EVENT"] == 1


@pytest.mark.parametrize("lvtpc,expect", [
    ("fixed", dict(irqs_injected=20, nmis_injected=0, canceled_vmenters=0)),
    ("smi", dict(smis_injected=1, pmis_dropped=19, canceled_vmenters=1)),
    ("masked", dict(pmis_dropped=20, nmis_injected=0, canceled_vmenters=0)),
])
def test_lvtpc_modes(sim, lvtpc, expect):
    # linux-6.6: PMI (21) -> EVENT (34) is a forward edge; PMI -> SMI (18) is a back edge.
    # In SMI mode LVTPC stays masked: no NMI or IRQ handler unmasks it.
    t = sim(pmi_only(lvtpc=lvtpc), order="linux-6.6", duration=0.05).totals
    assert {k: t[k] for k in expect} == expect


def test_emulated_overflow_raises_pmi_from_pmu_handler(sim):
    # PMU (20) -> PMI (21) is forward in linux-6.6; PMI -> NMI is the back edge.
    wl = Workload(vcpus=1, sources=[Trace("emulated-pmi", times=PMIS)])
    t66 = sim(wl, order="linux-6.6", duration=0.05).totals
    assert t66["pmis_raised"] == 20 and t66["canceled_vmenters"] == 20
    # With PMI checked before PMU, PMU -> PMI becomes a back edge instead.
    back = ["PMI", "PMU", "SMI", "NMI", "EVENT"]
    t = sim(wl, order=back, duration=0.05).totals
    assert t["canceled_vmenters"] == 20 and t["nmis_injected"] == 20


def test_no_op_handler_raises_its_request(sim):
    # kvm_update_masterclock raises CLOCK_UPDATE, checked two positions later: no cancel.
    wl = Workload(vcpus=1, sources=[Trace("request:MASTERCLOCK_UPDATE", times=[MS])])
    t = sim(wl, order="linux-6.6").totals
    assert t["requests.CLOCK_UPDATE"] == 1 and t["canceled_vmenters"] == 0


def test_events_after_duration_are_not_counted(sim):
    wl = Workload(vcpus=1, sources=[Trace("pmi", times=[0.001, 0.03])])
    assert sim(wl, order="linux-6.6", duration=0.02).totals["pmis_raised"] == 1


def test_guest_time_fills_the_run(sim):
    wl = Workload(vcpus=2, sources=[Periodic("irq", period=1e-3)])
    r = sim(wl, duration=0.01, interval=0.004)
    per_interval = sum(r.intervals[f"ns.{p}"] for p in
                       ("guest", "vmexit", "requests", "event", "state_load", "vmenter"))
    assert list(per_interval) == [2 * 4_000_000, 2 * 4_000_000, 2 * 2_000_000]


def test_interval_counts_sum_to_totals(sim):
    r = sim(pmi_only(), order="linux-6.6", duration=0.05, interval=0.01)
    assert list(r.intervals["canceled_vmenters"]) == [9, 10, 1, 0, 0]
    assert list(r.times) == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert r.per_vcpu["canceled_vmenters"].tolist() == [20]


def test_run_in_steps_equals_one_run(engine):
    cfg = kvmsim.Config(order="linux-6.6", workload="spec2017-vtune", engine=engine, seed=5)
    whole = kvmsim.simulate(cfg, duration=0.2, interval=0.05)
    stepped = kvmsim.Simulation(cfg, interval=0.05)
    for until in (0.03, 0.05, 0.11, 0.2):
        stepped.run(until=until)
    assert stepped.now == 0.2
    assert (stepped.result().counts == whole.counts).all()


def test_cancels_are_attributed_to_request_and_path(sim):
    t = sim(pmi_only(), order="linux-6.6", duration=0.05).totals
    assert t["cancels.backedge.NMI"] == 20 and t["cancels.async.NMI"] == 0
    late = sim(two_requests(PASS + 21), order="linux-6.6", costs=COSTS).totals
    assert late["cancels.async.TLB_FLUSH"] == 1 and late["cancels.backedge.TLB_FLUSH"] == 0
