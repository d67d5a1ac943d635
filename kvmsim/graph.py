"""The "may raise" graph: which handler in vcpu_enter_guest() may raise which request.

Each edge names the kernel call chain whose kvm_make_request() it stands for and where that
was read: file, function and a public tree (kvm-x86/linux at a commit, or a Linux release
tag; docs/model.md lists them, docs/analysis.md explains the graph). An edge whose
target is checked at or before its source in an order is a back edge: the raised request
survives to kvm_vcpu_exit_request() and cancels the VM-Enter.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _spec, catalogue

# Conditions an edge may need. The first three are read off the configuration; the rest
# are rare events the model does not simulate, so lint reports them without failing.
LVTPC_MODES = tuple(_spec.LVTPC_OF)
RARE = {
    "retry": "the handler failed and retries",
    "shadow-paging": "TDP is off (shadow paging)",
    "apicv-deactivated": "APICv gets deactivated",
    "synic-message": "a SynIC timer message is delivered",
}


@dataclass(frozen=True)
class Edge:
    """src's handler may raise dst: the kernel call chain that does it, where it was read, the
    conditions it needs, and what one firing is."""
    src: str
    dst: str
    via: str              # the kernel call chain that raises dst
    cite: str             # "file function @ tree", "; "-separated (docs/model.md, tags)
    when: tuple[str, ...] = ()   # all must hold: "lvtpc=<mode>", "no-apicv", or a RARE key
    per: str = ""         # what one firing is: "one cancelled VM-Enter per <per>"


EDGES: tuple[Edge, ...] = (
    Edge("MASTERCLOCK_UPDATE", "CLOCK_UPDATE",
         "kvm_update_masterclock -> kvm_end_pvclock_update -> kvm_make_request"
         "(KVM_REQ_CLOCK_UPDATE) on every vCPU",
         "x86.c kvm_end_pvclock_update @ kvm-x86 042007c262e5", per="masterclock update"),
    Edge("GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "kvm_gen_kvmclock_update",
         "x86.c kvm_gen_kvmclock_update @ kvm-x86 042007c262e5", per="global clock update"),
    Edge("CLOCK_UPDATE", "CLOCK_UPDATE", "kvm_guest_time_update (host TSC kHz is 0)",
         "x86.c kvm_guest_time_update @ kvm-x86 042007c262e5", when=("retry",),
         per="failed clock update"),
    Edge("MMU_SYNC", "TLB_FLUSH",
         "kvm_mmu_sync_roots -> mmu_sync_children -> kvm_flush_remote_tlbs",
         "mmu/mmu.c mmu_sync_children @ linux v6.12", when=("shadow-paging",),
         per="MMU sync that flushes"),
    Edge("SCAN_IOAPIC", "LOAD_EOI_EXITMAP", "vcpu_scan_ioapic",
         "x86.c vcpu_scan_ioapic @ kvm-x86 6f1cc3d67695", per="IOAPIC scan"),
    Edge("APIC_PAGE_RELOAD", "APIC_PAGE_RELOAD",
         "kvm_vcpu_reload_apic_access_page -> vmx_set_apic_access_page_addr (MMU "
         "invalidation raced)", "vmx/vmx.c vmx_set_apic_access_page_addr @ kvm-x86 bccb79ec2e66",
         when=("retry",), per="raced APIC page reload"),
    Edge("DIRTY_RING_SOFT_FULL", "DIRTY_RING_SOFT_FULL",
         "kvm_dirty_ring_check_request (ring still soft-full)",
         "virt/kvm/dirty_ring.c kvm_dirty_ring_check_request @ linux v6.12",
         when=("retry",), per="dirty-ring exit"),
    Edge("APICV_UPDATE", "EVENT", "kvm_vcpu_update_apicv -> __kvm_vcpu_update_apicv",
         "x86.c __kvm_vcpu_update_apicv @ kvm-x86 6f1cc3d67695",
         when=("apicv-deactivated",), per="APICv deactivation"),
    Edge("APF_READY", "EVENT",
         "kvm_check_async_pf_completion -> kvm_arch_async_page_present -> kvm_apic_set_irq",
         "x86.c kvm_arch_async_page_present @ linux v6.12", per="async page-ready"),
    Edge("HV_STIMER", "EVENT",
         "kvm_hv_process_stimers -> stimer_expiration -> synic_set_irq(APIC_DM_FIXED)",
         "hyperv.c stimer_expiration @ linux v6.12", when=("synic-message",),
         per="SynIC timer message"),
    # Fires when an emulated count wraps a counter with INT set: workload-dependent, so
    # always considered (it is a forward edge in every kernel order).
    Edge("PMU", "PMI", "kvm_pmu_handle_event -> reprogram_counter -> __kvm_perf_overflow",
         "pmu.c reprogram_counter @ kvm-x86 04f2bbf1c779", per="emulated counter overflow"),
    Edge("PMI", "NMI",
         "kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(LVTPC) -> __apic_accept_irq"
         "(APIC_DM_NMI) -> kvm_inject_nmi",
         "pmu.c kvm_pmu_deliver_pmi @ kvm-x86 04f2bbf1c779; "
         "lapic.c __apic_accept_irq @ kvm-x86 f729851189d5",
         when=("lvtpc=nmi",), per="PMI delivered as an NMI"),
    Edge("PMI", "EVENT",
         "kvm_pmu_deliver_pmi -> __apic_accept_irq(APIC_DM_FIXED) -> vmx_deliver_interrupt",
         "lapic.c __apic_accept_irq @ kvm-x86 f729851189d5; "
         "vmx/vmx.c vmx_deliver_interrupt @ linux v6.12",
         when=("lvtpc=fixed", "no-apicv"), per="PMI delivered as an IRQ"),
    Edge("PMI", "SMI", "kvm_pmu_deliver_pmi -> __apic_accept_irq(APIC_DM_SMI) -> "
         "kvm_inject_smi", "lapic.c __apic_accept_irq @ kvm-x86 f729851189d5; "
         "smm.h kvm_inject_smi @ linux v6.12", when=("lvtpc=smi",),
         per="PMI delivered as an SMI"),
    Edge("NMI", "EVENT", "process_nmi (an NMI is pending)",
         "x86.c process_nmi @ kvm-x86 6f1cc3d67695", per="NMI"),
    Edge("SMI", "EVENT", "process_smi", "smm.c process_smi @ linux v6.12", per="SMI"),
)

# Orders must keep these (docs/analysis.md): (first, then) pairs; None = start or end.
MUST_PRECEDE: tuple[tuple[str | None, str | None, str], ...] = (
    (None, "VM_DEAD", "a dead VM leaves with -EIO before anything else runs"),
    ("EVENT", None, "EVENT is checked after the request block and injects what it made "
                    "pending"),
    ("TLB_FLUSH", "TLB_FLUSH_CURRENT", "kvm_vcpu_flush_tlb_all clears TLB_FLUSH_CURRENT: a "
                                       "full flush makes the current-context flush redundant"),
    ("TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST", "kvm_service_local_tlb_flush_requests checks "
                                             "them in this order"),
)


@dataclass(frozen=True)
class Context:
    """What decides which conditional edges fire: the guest's LVTPC mode and APICv."""
    lvtpc: str = "nmi"
    apicv: bool = False

    @classmethod
    def of(cls, config) -> Context:
        return cls(lvtpc=config.workload.lvtpc, apicv=config.machine["apicv"])

    def holds(self, atom: str) -> bool:
        if atom.startswith("lvtpc="):
            return self.lvtpc == atom.removeprefix("lvtpc=")
        if atom == "no-apicv":
            return not self.apicv
        return False                       # a RARE condition

    def active(self, edge: Edge) -> bool:
        return all(self.holds(a) for a in edge.when)


def describe(edge: Edge) -> str:
    parts = []
    for a in edge.when:
        parts.append(RARE.get(a) or {"no-apicv": "APICv off"}.get(a) or
                     f"LVTPC delivery mode {a.removeprefix('lvtpc=').upper()}")
    return " and ".join(parts) or "always"


def raises(ctx: Context) -> dict[str, set[str]]:
    """Every request a handler may raise in this context."""
    out: dict[str, set[str]] = {}
    for e in EDGES:
        if ctx.active(e):
            out.setdefault(e.src, set()).add(e.dst)
    return out


def noop_raises() -> dict[str, tuple[str, ...]]:
    """Unconditional edges out of requests the engines treat as named no-ops."""
    out: dict[str, tuple[str, ...]] = {}
    for e in EDGES:
        if not e.when and not catalogue.BY_NAME[e.src].special:
            out[e.src] = out.get(e.src, ()) + (e.dst,)
    return out


# Requests `request:noop` sources post: their handlers neither leave vcpu_enter_guest() nor
# raise another request in the model. An older release's name for a bit that has a name
# today (MMU_RELOAD, bit 1 = VM_DEAD) is left out: posting the bit would post today's.
NOOP_NAMES: tuple[str, ...] = tuple(
    r.name for r in catalogue.CATALOGUE
    if not (r.special or r.leaves or r.name in noop_raises())
    and catalogue.BY_BIT[r.bit] is r)
