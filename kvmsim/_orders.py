"""Check orders of vcpu_enter_guest(): presets from real kernels, or any list of request names.

Each preset is the sequence of kvm_check_request()/kvm_test_request() calls in
vcpu_enter_guest() (arch/x86/kvm/x86.c), with EVENT last: it is checked after the
`if (kvm_request_pending(vcpu))` block. docs/model.md gives the source of each preset.
"""

from __future__ import annotations

_HEAD = (
    "VM_DEAD", "DIRTY_RING_SOFT_FULL", "GET_NESTED_STATE_PAGES", "MMU_FREE_OBSOLETE_ROOTS",
    "MIGRATE_TIMER", "MASTERCLOCK_UPDATE", "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC",
    "LOAD_MMU_PGD", "TLB_FLUSH", "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST", "HV_TLB_FLUSH",
    "REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT", "STEAL_UPDATE",
)
_TAIL = (
    "IOAPIC_EOI_EXIT", "SCAN_IOAPIC", "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD",
    "HV_CRASH", "HV_RESET", "HV_EXIT", "HV_STIMER", "APICV_UPDATE", "APF_READY",
)

PRESETS: dict[str, tuple[str, ...]] = {
    # Base of the NMI-after-PMI patch (73554b29bd70): SMI, NMI, PMU, PMI.
    "linux-6.6": _HEAD + ("SMI", "NMI", "PMU", "PMI") + _TAIL
    + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT"),
    # fad505b2cb83 as merged for v6.7: PMU and PMI hoisted above SMI and NMI.
    "linux-6.7": _HEAD + ("PMU", "PMI", "SMI", "NMI") + _TAIL
    + ("MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT"),
    # v6.19-era tree (CachyOS 4703912f5e30): RECALC_INTERCEPTS replaces MSR_FILTER_CHANGED
    # (same bit); UPDATE_PROTECTED_GUEST_STATE (SEV-ES AP creation) is checked last.
    "linux-6.19": _HEAD + ("PMU", "PMI", "SMI", "NMI") + _TAIL
    + ("RECALC_INTERCEPTS", "UPDATE_CPU_DIRTY_LOGGING", "UPDATE_PROTECTED_GUEST_STATE", "EVENT"),
}
