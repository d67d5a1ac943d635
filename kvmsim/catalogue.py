"""The KVM_REQ_* catalogue: names, bit numbers, and what each handler does in the model.

Bit numbers are the absolute bits of `vcpu->requests` (include/linux/kvm_host.h: generic bits
0-7; arch bits are KVM_ARCH_REQ(nr) = nr + KVM_REQUEST_ARCH_BASE (8), from
arch/x86/include/asm/kvm_host.h). See docs/model.md for the citations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ARCH_BASE = 8  # KVM_REQUEST_ARCH_BASE


@dataclass(frozen=True)
class Request:
    """A KVM_REQ_* request: its name, its bit in vcpu->requests, the handler its check runs,
    and the other names it has had."""
    name: str
    bit: int
    handler: str  # the kernel function vcpu_enter_guest() calls when the check fires
    # True when the model runs a dedicated handler (NMI, PMU, PMI, SMI, EVENT); every other
    # request is a named no-op with a cost, plus what it always raises (graph.py).
    special: bool = False
    # True when the real handler can leave vcpu_enter_guest() (exit to userspace or skip the
    # entry); the model treats it as a no-op, so background traffic does not use it.
    leaves: bool = False
    aliases: tuple[str, ...] = field(default=())


def _arch(nr: int) -> int:
    return ARCH_BASE + nr


CATALOGUE: tuple[Request, ...] = (
    Request("TLB_FLUSH", 0, "kvm_vcpu_flush_tlb_all"),
    Request("VM_DEAD", 1, "vcpu_enter_guest (r = -EIO)", leaves=True),
    Request("DIRTY_RING_SOFT_FULL", 3, "kvm_dirty_ring_check_request", leaves=True),
    Request("MIGRATE_TIMER", _arch(0), "__kvm_migrate_timers"),
    Request("REPORT_TPR_ACCESS", _arch(1), "vcpu_enter_guest (KVM_EXIT_TPR_ACCESS)", leaves=True),
    Request("TRIPLE_FAULT", _arch(2), "kvm_x86_ops.nested_ops->triple_fault", leaves=True),
    Request("MMU_SYNC", _arch(3), "kvm_mmu_sync_roots"),
    Request("CLOCK_UPDATE", _arch(4), "kvm_guest_time_update", leaves=True),
    Request("LOAD_MMU_PGD", _arch(5), "kvm_mmu_load_pgd"),
    Request("EVENT", _arch(6), "kvm_check_and_inject_events", special=True),
    Request("APF_HALT", _arch(7), "vcpu_enter_guest (apf.halted = true)", leaves=True),
    Request("STEAL_UPDATE", _arch(8), "record_steal_time"),
    Request("NMI", _arch(9), "process_nmi", special=True),
    Request("PMU", _arch(10), "kvm_pmu_handle_event", special=True),
    Request("PMI", _arch(11), "kvm_pmu_deliver_pmi", special=True),
    Request("SMI", _arch(12), "process_smi", special=True),
    Request("MASTERCLOCK_UPDATE", _arch(13), "kvm_update_masterclock"),
    Request("SCAN_IOAPIC", _arch(15), "vcpu_scan_ioapic"),
    Request("GLOBAL_CLOCK_UPDATE", _arch(16), "kvm_gen_kvmclock_update"),
    Request("APIC_PAGE_RELOAD", _arch(17), "kvm_vcpu_reload_apic_access_page"),
    Request("HV_CRASH", _arch(18), "vcpu_enter_guest (KVM_EXIT_SYSTEM_EVENT)", leaves=True),
    Request("IOAPIC_EOI_EXIT", _arch(19), "vcpu_enter_guest (KVM_EXIT_IOAPIC_EOI)", leaves=True),
    Request("HV_RESET", _arch(20), "vcpu_enter_guest (KVM_EXIT_SYSTEM_EVENT)", leaves=True),
    Request("HV_EXIT", _arch(21), "vcpu_enter_guest (KVM_EXIT_HYPERV)", leaves=True),
    Request("HV_STIMER", _arch(22), "kvm_hv_process_stimers"),
    Request("LOAD_EOI_EXITMAP", _arch(23), "vcpu_load_eoi_exitmap"),
    Request("GET_NESTED_STATE_PAGES", _arch(24), "nested_ops->get_nested_state_pages",
            leaves=True),
    Request("APICV_UPDATE", _arch(25), "kvm_vcpu_update_apicv"),
    Request("TLB_FLUSH_CURRENT", _arch(26), "kvm_vcpu_flush_tlb_current"),
    Request("TLB_FLUSH_GUEST", _arch(27), "kvm_vcpu_flush_tlb_guest"),
    Request("APF_READY", _arch(28), "kvm_check_async_pf_completion"),
    Request("MSR_FILTER_CHANGED", _arch(29), "kvm_x86_ops.msr_filter_changed",
            aliases=("RECALC_INTERCEPTS",)),
    Request("UPDATE_CPU_DIRTY_LOGGING", _arch(30), "kvm_x86_ops.update_cpu_dirty_logging"),
    Request("MMU_FREE_OBSOLETE_ROOTS", _arch(31), "kvm_mmu_free_obsolete_roots"),
    Request("HV_TLB_FLUSH", _arch(32), "kvm_hv_vcpu_flush_tlb"),
    # 7.2 and later (absent in v6.14 and in the v6.19-era tree of the linux-6.19 preset)
    Request("VMSA_PAGE_RELOAD", _arch(33), "kvm_x86_ops.reload_vmsa"),
    Request("UPDATE_PROTECTED_GUEST_STATE", _arch(34), "kvm_vcpu_reset", leaves=True),
    # Names of older releases (kvmsim.profiles). A bit may have two names: BY_BIT keeps the
    # first, today's, and graph.NOOP_NAMES leaves the old one out.
    # v5.10, v5.15 (gone by v6.1, where VM_DEAD has bit 1)
    Request("MMU_RELOAD", 1, "kvm_mmu_unload"),
    # v5.15 (and 5.10.y, which defines it but does not check it); VM_DEAD from v6.1
    Request("VM_BUGGED", 4, "vcpu_enter_guest (r = -EIO)", leaves=True),
)

# Bits that exist but that vcpu_enter_guest() never consumes: (bit, what one does while set).
# Older releases had two more, not listed because no profile needs them: PENDING_TIMER (bit
# 2, v5.10; UNBLOCK's old name) and UNHALT (bit 3, up to v6.0; docs/profiles.md).
NOT_CHECKED = {
    "UNBLOCK": (2, "cancels one VM-Enter each time it is set, then vcpu_run() clears it"),
    "MCLOCK_INPROGRESS": (_arch(14), "cancels every VM-Enter until kvm_update_masterclock() "
                                     "on another CPU clears it"),
}

BY_NAME: dict[str, Request] = {}
for _r in CATALOGUE:
    BY_NAME[_r.name] = _r
    for _a in _r.aliases:
        BY_NAME[_a] = _r
BY_BIT: dict[int, Request] = {}
for _r in CATALOGUE:
    BY_BIT.setdefault(_r.bit, _r)


def bit_of(name: str) -> int:
    return BY_NAME[name].bit


def canonical(name: str) -> str:
    return BY_NAME[name].name


def bit_of_any(name: str) -> int:
    """The bit of a request, checked by vcpu_enter_guest() or not (UNBLOCK)."""
    return NOT_CHECKED[name][0] if name in NOT_CHECKED else bit_of(name)


def name_of(bit: int) -> str:
    """KVM_REQ_<NAME> of a bit, for messages (bit <N> where no request has it)."""
    if bit in BY_BIT:
        return f"KVM_REQ_{BY_BIT[bit].name}"
    named = [n for n, (b, _) in NOT_CHECKED.items() if b == bit]
    return f"KVM_REQ_{named[0]}" if named else f"bit {bit}"
