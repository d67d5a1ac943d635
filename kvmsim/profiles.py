"""Kernel profiles: a release's check order of vcpu_enter_guest() and its behaviour switches.

A profile is what kvmsim needs to know about one kernel release: the order of the request
checks in vcpu_enter_guest() (arch/x86/kvm/x86.c), read in a named source tree, and the
value of each behaviour switch, the few changes elsewhere in KVM that the model sees. Each
switch value after the first cites the commit that introduced it, its first mainline
release and where that was verified (tree, file, function, lines), or says "UNVERIFIED:"
and what is not verified. docs/profiles.md explains each switch and each profile.

Mainline profiles take every switch value from the switch histories (the value of the
newest commit released at or before the profile's release); a stable profile is its
mainline release plus the backports that tree was read (or reported) to carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Citation:
    """The commit that introduced a behaviour: id, subject, first release, and where it was
    verified."""
    commit: str    # abbreviated commit id, "" when not identified
    subject: str   # the commit's subject line
    release: str   # first mainline release, "v6.6"; "v6.10..v6.12" when only bracketed
    where: str     # where verified (tree, file, function, lines), or "UNVERIFIED: <what>"

    @property
    def verified(self) -> bool:
        return not self.where.startswith("UNVERIFIED:")


@dataclass(frozen=True)
class Switch:
    """A behaviour switch of the kernel profiles: its values in historical order, what it
    changes in KVM, and the commit behind each value."""
    name: str
    values: tuple          # in historical order
    doc: str               # what it changes in KVM: function and file
    # (value, the commit that introduced it); the first value is the older behaviour (None)
    history: tuple[tuple[object, Citation | None], ...]


@dataclass(frozen=True)
class Profile:
    """A kernel profile: a release's vcpu_enter_guest() check order, as read in a tree, and
    the values of its behaviour switches."""
    name: str
    release: str                  # "v6.6"; a stable profile names its point release
    tree: str                     # the source read for the order, with line numbers
    order: tuple[str, ...]        # vcpu_enter_guest() checks as written there, EVENT last
    behaviour: dict               # switch name -> value
    note: str


SWITCHES: tuple[Switch, ...] = (
    Switch(
        "lvtpc_automask", ("none", "all", "intel"),
        "kvm_apic_local_deliver() (lapic.c) sets LVTPC.MASK after it delivers a PMI: never, "
        "for every guest, or only for guests whose CPUID vendor is Intel-compatible "
        "(guest_cpuid_is_intel_compatible: Intel, Centaur, Zhaoxin).",
        (("none", None),
         ("all", Citation(
             "a16eb25b09c0", "KVM: x86: Mask LVTPC when handling a PMI", "v6.6",
             "v6.6.9 arch/x86/kvm/lapic.c kvm_apic_local_deliver 2760-2773; absent in "
             "v6.5 (2737)")),
         ("intel", Citation(
             "49ff3b4aec51",
             "KVM: x86/pmu: Do not mask LVTPC when handling a PMI on AMD platforms", "v6.9",
             "v6.9 arch/x86/kvm/lapic.c kvm_apic_local_deliver 2767-2781; absent in v6.8 "
             "(2759-2772)")))),
    Switch(
        "pmi_delivery", ("irq_work", "request"),
        "How a host PMI for a guest counter becomes a guest PMI (pmu.c). irq_work: "
        "kvm_perf_overflow_intr (v5.x) / __kvm_perf_overflow (v6.1-v6.5) queue pmu->irq_work "
        "when the overflow is taken outside guest context, and kvm_pmi_trigger_fn() calls "
        "kvm_pmu_deliver_pmi() on the host CPU, besides KVM_REQ_PMI otherwise. request: "
        "always KVM_REQ_PMI, at most one PMI per VM-exit, and kvm_vcpu_has_events() (x86.c) "
        "also tests KVM_REQ_PMI.",
        (("irq_work", None),
         ("request", Citation(
             "73554b29bd70", "KVM: x86/pmu: Synthesize at most one PMI per VM-exit", "v6.6",
             "v6.6.9 arch/x86/kvm/pmu.c __kvm_perf_overflow 96 and x86.c "
             "kvm_vcpu_has_events 12859; absent in v6.5 (pmu.c kvm_pmi_trigger_fn 96, "
             "irq_work_queue 139)")))),
    Switch(
        "pmu_reprogram", ("sync", "request"),
        "How a guest write to the PMU's global control (or an emulated counter event) gets "
        "counters reprogrammed (pmu.c, vmx/pmu_intel.c): sync, in the WRMSR handler "
        "(global_ctrl_changed / reprogram_counters -> reprogram_counter); request, deferred "
        "with KVM_REQ_PMU to kvm_pmu_handle_event(), once per VM-exit.",
        (("sync", None),
         ("request", Citation(
             "68fb4757e867", "KVM: x86/pmu: Defer reprogram_counter() to kvm_pmu_handle_event()",
             "v6.2..v6.4",
             "UNVERIFIED: first release (no v6.2 or v6.3 tree read); verified in v6.4.6 "
             "arch/x86/kvm/vmx/pmu_intel.c reprogram_counters 76-86 (kvm_make_request("
             "KVM_REQ_PMU) 85); absent in v6.1-rc7 (reprogram_counters 71-81 calls "
             "reprogram_counter) and in 6.1.192")))),
    Switch(
        "process_nmi_event", ("always", "pending"),
        "process_nmi() (x86.c) raises KVM_REQ_EVENT on every call, or only when an NMI is "
        "pending after the 2/1 limit (and any hand-off to vNMI).",
        (("always", None),
         ("pending", Citation(
             "2cb9317377ca",
             "KVM: x86: Raise an event request when processing NMIs if an NMI is pending",
             "v6.4",
             "v6.4.6 arch/x86/kvm/x86.c process_nmi 10230-10264 (`if (vcpu->arch.nmi_pending)` "
             "10263); absent in v6.1.192 (10201-10215); release from the pull "
             "tags/kvm-x86-svm-6.4")))),
    Switch(
        "vnmi", (False, True),
        "kvm_amd supports AMD virtual NMIs (svm.c module parameter vnmi, default Y, in effect "
        "with vGIF on CPUs with X86_FEATURE_VNMI): process_nmi() hands one pending NMI to "
        "hardware (svm_set_vnmi_pending, V_NMI_PENDING) instead of raising KVM_REQ_EVENT, and "
        "the NMI limit is one lower while a vNMI is pending.",
        ((False, None),
         (True, Citation(
             "", "KVM: x86: Add support for SVM's Virtual NMI", "v6.4",
             "UNVERIFIED: commit id not identified (Santosh Shukla's series in the pull "
             "tags/kvm-x86-svm-6.4); `bool vnmi = true` / module_param(vnmi) verified in "
             "v6.4.6 arch/x86/kvm/svm/svm.c 238-239, absent in v6.1.192")))),
    Switch(
        "idle_hlt", (False, True),
        "kvm_amd uses the Idle HLT intercept where the CPU has X86_FEATURE_IDLE_HLT "
        "(init_vmcb, svm.c): a guest HLT exits only if no virtual interrupt or vNMI is "
        "pending.",
        ((False, None),
         (True, Citation(
             "fa662c908073", "KVM: SVM: Add Idle HLT intercept support", "v6.15",
             "UNVERIFIED: first release (v6.15 from the series' v6 posting, Jan 2025); the "
             "intercept verified in 7.2.13 arch/x86/kvm/svm/svm.c init_vmcb 1182-1183, "
             "absent in v6.14")))),
    Switch(
        "ipiv", (False, True),
        "kvm_intel supports IPI virtualisation (vmx.c module parameter enable_ipiv, default Y, "
        "in effect with APICv on CPUs with tertiary controls, Sapphire Rapids and later): a "
        "guest's ICR write posts the IPI to the target's posted-interrupt descriptor without "
        "a VM-exit on the sender.",
        ((False, None),
         (True, Citation(
             "", "KVM: VMX: enable IPI virtualization", "v5.16..v6.1",
             "UNVERIFIED: commit and first release not identified; `enable_ipiv` verified in "
             "v6.1-rc7 arch/x86/kvm/vmx/vmx.c 108, absent in v5.15")))),
    Switch(
        "fastpath_reenter", ("timer", "timer-icr-hlt"),
        "The VM-exits the fastpath handles and re-enters the guest from without leaving "
        "vcpu_enter_guest() (EXIT_FASTPATH_REENTER_GUEST; the loop ends on a pending request "
        "with EXIT_FASTPATH_EXIT_HANDLED, not through cancel_injection). timer: the VMX "
        "preemption timer and TSC_DEADLINE writes (handle_fastpath_preemption_timer, "
        "handle_fastpath_set_msr_irqoff); an x2APIC ICR write is handled there but returns "
        "EXIT_FASTPATH_EXIT_HANDLED. timer-icr-hlt: the ICR write re-enters too, and "
        "handle_fastpath_hlt() (x86.c, VMX and SVM) re-enters after HLT when the vCPU is still "
        "runnable.",
        (("timer", None),
         ("timer-icr-hlt", Citation(
             "", "", "v6.10..v6.12",
             "UNVERIFIED: commit and first release not identified; handle_fastpath_hlt is in "
             "v6.12 arch/x86/kvm/x86.c 11331 (vmx/vmx.c 7275, svm/svm.c 4173) and "
             "handle_fastpath_set_msr_irqoff (2181) returns EXIT_FASTPATH_REENTER_GUEST for the "
             "ICR write (2208); in v6.9 no handle_fastpath_hlt and the ICR write returns "
             "EXIT_FASTPATH_EXIT_HANDLED (x86.c 2195)")))),
    Switch(
        "avic_default", ("off", "auto"),
        "Default of kvm_amd's avic parameter: off, or auto (AVIC on for Zen 4 and later with "
        "x2AVIC). With AVIC, interrupts to a running vCPU are posted (IRR + doorbell) and set "
        "no request bit.",
        (("off", None),
         ("auto", Citation(
             "ca2967de5a5b",
             "KVM: SVM: Enable AVIC by default for Zen4+ if x2AVIC is support", "v6.18",
             "UNVERIFIED: first release from the pull tags/kvm-x86-svm-6.18 only (no v6.15-"
             "v6.19 tree read); `avic = AVIC_AUTO_MODE` verified in 7.2.13 "
             "arch/x86/kvm/svm/avic.c 100-101, `static bool avic` (off) in v6.14 svm.c "
             "231")))),
)
SWITCH: dict[str, Switch] = {s.name: s for s in SWITCHES}


def version(release: str) -> tuple[int, int]:
    """(major, minor) of "v6.6", "v6.1.192" or "v7.3-rc7"."""
    m = re.match(r"v(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"release {release!r} is not vMAJOR.MINOR[...]")
    return int(m.group(1)), int(m.group(2))


def _at(release: str) -> dict:
    """Every switch's value in a mainline release, from the switch histories."""
    v = version(release)
    out = {}
    for s in SWITCHES:
        value = s.history[0][0]
        for val, c in s.history[1:]:
            first, _, last = c.release.partition("..")
            if v >= version(last or first):
                value = val
            elif v >= version(first):
                raise ValueError(f"{s.name} in {release}: inside {c.release}, unknown")
        out[s.name] = value
    return out


# vcpu_enter_guest() check orders, as written in each tree (docs/profiles.md, Appendix).
_CLOCK_MMU_TLB = (
    "MIGRATE_TIMER", "MASTERCLOCK_UPDATE", "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC",
    "LOAD_MMU_PGD", "TLB_FLUSH", "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST",
)
_EXITS = ("REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT", "STEAL_UPDATE")
_NMI_FIRST = ("SMI", "NMI", "PMU", "PMI")   # up to v6.6
_PMI_FIRST = ("PMU", "PMI", "SMI", "NMI")   # fad505b2cb83, v6.7
_TAIL = (
    "IOAPIC_EOI_EXIT", "SCAN_IOAPIC", "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD",
    "HV_CRASH", "HV_RESET", "HV_EXIT", "HV_STIMER", "APICV_UPDATE", "APF_READY",
)
_V5_10 = (("GET_NESTED_STATE_PAGES", "MMU_RELOAD") + _CLOCK_MMU_TLB + _EXITS + _NMI_FIRST
          + _TAIL + ("MSR_FILTER_CHANGED", "EVENT"))
_V5_15 = (("VM_BUGGED", "GET_NESTED_STATE_PAGES", "MMU_RELOAD") + _CLOCK_MMU_TLB + _EXITS
          + _NMI_FIRST + _TAIL + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT"))
_V6_1 = (("VM_DEAD", "GET_NESTED_STATE_PAGES", "MMU_FREE_OBSOLETE_ROOTS") + _CLOCK_MMU_TLB
         + _EXITS + _NMI_FIRST + _TAIL
         + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT"))
_HEAD_6_4 = (("VM_DEAD", "DIRTY_RING_SOFT_FULL", "GET_NESTED_STATE_PAGES",
              "MMU_FREE_OBSOLETE_ROOTS") + _CLOCK_MMU_TLB + ("HV_TLB_FLUSH",) + _EXITS)
_V6_6 = (_HEAD_6_4 + _NMI_FIRST + _TAIL
         + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT"))
_V6_7 = (_HEAD_6_4 + _PMI_FIRST + _TAIL
         + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT"))
_V6_12 = (_HEAD_6_4 + _PMI_FIRST + _TAIL
          + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "UPDATE_PROTECTED_GUEST_STATE",
             "EVENT"))
_V6_19 = (_HEAD_6_4 + _PMI_FIRST + _TAIL
          + ("RECALC_INTERCEPTS", "UPDATE_CPU_DIRTY_LOGGING", "UPDATE_PROTECTED_GUEST_STATE",
             "EVENT"))
_V7_2 = (_HEAD_6_4 + _PMI_FIRST + _TAIL
         + ("RECALC_INTERCEPTS", "UPDATE_CPU_DIRTY_LOGGING", "UPDATE_PROTECTED_GUEST_STATE",
            "VMSA_PAGE_RELOAD", "EVENT"))


def _mainline(name: str, release: str, tree: str, order: tuple[str, ...],
              note: str) -> Profile:
    return Profile(name, release, tree, order, _at(release), note)


def _stable(name: str, base: str, release: str, tree: str, order: tuple[str, ...],
            backports: dict, note: str) -> Profile:
    return Profile(name, release, tree, order, {**_at(base), **backports}, note)


_LIST: tuple[Profile, ...] = (
    _mainline(
        "linux-5.10", "v5.10",
        "v5.10 (5.10.0; a tree with the PREEMPT_RT patch, which does not touch this path); "
        "x86.c vcpu_enter_guest 8749-9046",
        _V5_10,
        "x86.c 8791 checks KVM_REQ_HV_TLB_FLUSH (KVM_ARCH_REQ(27), bit 35), handled by "
        "kvm_vcpu_flush_tlb_guest: today's TLB_FLUSH_GUEST (same bit, renamed between v5.11 "
        "and v5.15, UNVERIFIED which), listed under that name; kvmsim's HV_TLB_FLUSH (bit 40) "
        "is the later Hyper-V flush. MMU_RELOAD (kvm_mmu_unload) has bit 1, today's "
        "VM_DEAD. No VM_DEAD or dirty-ring check. The fastpath re-entry loop is inside "
        "vmx_vcpu_run (VMX only)."),
    _stable(
        "linux-5.10.y", "v5.10", "v5.10.262",
        "5.10.262 (Debian linux-source-5.10 5.10.262-1); x86.c vcpu_enter_guest 9100-9417",
        _V5_10,
        {"lvtpc_automask": "all"},
        "a16eb25b09c0 backported (point release UNVERIFIED), 49ff3b4aec51 not: "
        "kvm_apic_local_deliver masks LVTPC for every vendor (lapic.c 2416-2429). "
        "TLB_FLUSH_GUEST already under its later name (x86.c 9142). Still the irq_work PMI "
        "path (pmu.c 93) and KVM_REQ_EVENT on every process_nmi (x86.c 8703)."),
    _mainline(
        "linux-5.15", "v5.15",
        "v5.15 (5.15.0); x86.c vcpu_enter_guest 9425-9771",
        _V5_15,
        "VM_BUGGED (bit 4, r = -EIO) where later releases check VM_DEAD; MMU_RELOAD (bit 1); "
        "UPDATE_CPU_DIRTY_LOGGING new. The fastpath re-entry loop is in vcpu_enter_guest."),
    _stable(
        "linux-5.15.y", "v5.15", "v5.15.157",
        "UNVERIFIED: no 5.15.y tree read; the order is v5.15's (x86.c vcpu_enter_guest "
        "9425-9771)",
        _V5_15,
        {"lvtpc_automask": "intel"},
        "49ff3b4aec51 as f49d613fce90 (with 9efadad9fabe) in the stable push that made "
        "5.15.157-rc1; a16eb25b09c0 reached 5.15.y before it (point release UNVERIFIED). "
        "73554b29bd70 not backported: UNVERIFIED (irq_work PMI path assumed)."),
    _mainline(
        "linux-6.1", "v6.1",
        "v6.1-rc7 (no v6.1 tree read; the same x86.c blob 2835bd79 in two repositories); "
        "x86.c vcpu_enter_guest 10509-10877",
        _V6_1,
        "VM_DEAD (bit 1) and MMU_FREE_OBSOLETE_ROOTS replace VM_BUGGED and MMU_RELOAD; "
        "TLB_FLUSH_CURRENT, TLB_FLUSH_GUEST in kvm_service_local_tlb_flush_requests "
        "(x86.c 10562 -> 3435, 3438); TRIPLE_FAULT tested, then checked (one check)."),
    _stable(
        "linux-6.1.y", "v6.1", "v6.1.192",
        "6.1.192 (Debian linux-source-6.1 6.1.192-3); x86.c vcpu_enter_guest 10631-11030",
        _V6_1,
        {"lvtpc_automask": "intel"},
        "a16eb25b09c0 and 49ff3b4aec51 backported (6.1.88 per the stable push log): LVTPC "
        "masked for Intel-compatible guests only (lapic.c 2618-2632). Not backported: "
        "73554b29bd70 (pmu.c kvm_pmi_trigger_fn 91), 2cb9317377ca (process_nmi raises "
        "KVM_REQ_EVENT always, x86.c 10215), fad505b2cb83 (SMI, NMI, PMU, PMI at "
        "10711-10717)."),
    _mainline(
        "linux-6.5", "v6.5",
        "v6.5 (6.5.0); x86.c vcpu_enter_guest 10496-10879",
        _V6_6,
        "DIRTY_RING_SOFT_FULL (kvm_dirty_ring_check_request, dirty_ring.c) and HV_TLB_FLUSH "
        "(Hyper-V precise flush, bit 40) new since v6.1; SMI under CONFIG_KVM_SMM, assumed "
        "=y. Same vcpu_enter_guest body as 6.6.9. vnmi, idle_hlt and avic_default were not "
        "read in this tree (no svm.c): vnmi from v6.4.6."),
    _mainline(
        "linux-6.6", "v6.6",
        "6.6.9 stable (no 6.6.0 tree read; same order as kvm-x86/linux 6f1cc3d67695, the "
        "linux-6.6 preset's source); x86.c vcpu_enter_guest 10503-10886",
        _V6_6,
        "The founding case before fad505b2cb83 (its base is 73554b29bd70): SMI, NMI, PMU, "
        "PMI (x86.c 10593-10600), so a PMI delivered as an NMI is left for the late check."),
    _stable(
        "linux-6.6.y", "v6.6", "v6.6.29",
        "UNVERIFIED: no 6.6.y tree after the backport read; the order is 6.6.9's (x86.c "
        "vcpu_enter_guest 10503-10886)",
        _V6_6,
        {"lvtpc_automask": "intel"},
        "49ff3b4aec51 in the stable batch of 23 Apr 2024, so 6.6.29: UNVERIFIED point "
        "release."),
    _mainline(
        "linux-6.7", "v6.7",
        "6.7.3 stable (no 6.7.0 tree read); x86.c vcpu_enter_guest 10620-11003",
        _V6_7,
        "fad505b2cb83 (pull tags/kvm-x86-pmu-6.7): PMU, PMI, then SMI, NMI "
        "(x86.c 10709-10717); the only change to vcpu_enter_guest from 6.6.9."),
    _mainline(
        "linux-6.8", "v6.8",
        "v6.8 (6.8.0); x86.c vcpu_enter_guest 10701-11088",
        _V6_7,
        "HV_TLB_FLUSH and HV_CRASH, HV_RESET, HV_EXIT, HV_STIMER under CONFIG_KVM_HYPERV, "
        "assumed =y."),
    _stable(
        "linux-6.8.y", "v6.8", "v6.8.8",
        "UNVERIFIED: no 6.8.y tree after the backport read; the order is v6.8's (x86.c "
        "vcpu_enter_guest 10701-11088)",
        _V6_7,
        {"lvtpc_automask": "intel"},
        "49ff3b4aec51 as c0f9596a44d0 in 6.8.7 or 6.8.8 (UNVERIFIED which; 6.8.8 is the "
        "first certain)."),
    _mainline(
        "linux-6.9", "v6.9",
        "v6.9 (6.9.0); x86.c vcpu_enter_guest 10733-11118",
        _V6_7,
        "49ff3b4aec51: LVTPC masked for Intel-compatible guests only."),
    _mainline(
        "linux-6.12", "v6.12",
        "v6.12 (6.12.0); x86.c vcpu_enter_guest 10704-11107",
        _V6_12,
        "UPDATE_PROTECTED_GUEST_STATE (SEV-ES AP creation, bit 42) checked last; "
        "handle_fastpath_hlt. 6.12.117 (Debian) has the same order and switches."),
    _mainline(
        "linux-6.19", "v6.19",
        "v6.19-era tree CachyOS/linux 4703912f5e30; x86.c vcpu_enter_guest (the linux-6.19 "
        "preset)",
        _V6_19,
        "RECALC_INTERCEPTS where older releases check MSR_FILTER_CHANGED (same bit 37). Only "
        "the order was read in this tree; the switches follow their histories, and "
        "idle_hlt (v6.15) and avic_default (v6.18) rest on UNVERIFIED first releases."),
    _mainline(
        "linux-7.2", "v7.2",
        "7.2.13 stable (Debian linux-source-7.2 7.2.13-1); x86.c vcpu_enter_guest "
        "10673-11128",
        _V7_2,
        "VMSA_PAGE_RELOAD (bit 41, SEV) checked last; Idle HLT intercept; AVIC on by default "
        "for Zen 4+ with x2AVIC."),
    _mainline(
        "linux-7.3-rc7", "v7.3-rc7",
        "v7.3-rc7 (Debian linux-source-7.3 7.3~rc7-1~exp1), the newest tree read; x86.c "
        "vcpu_enter_guest 8051-8506",
        _V7_2,
        "A release candidate. VM_DEAD is tested, not cleared (kvm_test_request, x86.c 8063), "
        "still one check."),
)
PROFILES: dict[str, Profile] = {p.name: p for p in _LIST}

# The default for new users: the newest mainline release in the table (not an -rc).
NEWEST = "linux-7.2"


def table() -> list[list[str]]:
    """Profiles x switches, header row first (`kvmsim orders --profiles`)."""
    rows = [["profile", "release", "SMI/NMI/PMU/PMI", *SWITCH]]
    for p in PROFILES.values():
        middle = " ".join(n for n in p.order if n in _NMI_FIRST)
        rows.append([p.name, p.release, middle, *(str(p.behaviour[s]) for s in SWITCH)])
    return rows


def citations() -> list[list[str]]:
    """Each switch value with its commit, subject, first release and where verified."""
    rows = [["switch", "value", "commit", "subject", "release", "where"]]
    for s in SWITCHES:
        for value, c in s.history[1:]:
            rows.append([s.name, str(value), c.commit, c.subject, c.release, c.where])
    return rows
