"""The model's shared vocabulary, written once: codes, bits, thresholds, parameters, counters.

Both engines read it: `_reference.py` imports it, and `_core.pyx` cimports `_spec.pxd`, which
setup.py generates from `_spec.pxd.in` with the values below (tests/test_spec.py fails when a
built `_spec.pxd` is stale). Nothing here imports pydantic or numpy, so setup.py can load it
before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import catalogue

N_BITS = 64                      # u64 vcpu->requests (include/linux/kvm_host.h)
NEVER = 2**63 - 1                # an arrival that never comes (INT64_MAX ns)
NO_PMI_YET = -(2**62)            # when the guest last handled a PMI, before its first one
MAX_GAP_NS = 2.0**62             # an exponential gap this long or longer means NEVER
UNCHECKED = 255                  # rank of a bit that no check of the order consumes
POLL_EVERY = 1 << 15             # loop steps between two looks for Ctrl-C or a stop
ABI_VERSION = 1                  # of the C API (_core.pxd, Engine.capsule): +1 on a change


class Src(IntEnum):
    """Source kinds. Which side an arrival acts on is decided per source (SourcePlan.guest):
    guest-side ones happen only while the guest runs, host-side ones in any mode."""
    EXIT = 0
    PMI = 1
    EMUL_PMI = 2
    NMI = 3
    IRQ = 4
    REQUEST = 5
    REQUEST_NOOP = 6
    TIMER = 7          # the guest's LAPIC timer: VMX preemption timer, or a host hrtimer
    HLT = 8            # the guest executes STI;HLT
    IPI_SELF = 9       # the guest sends a fixed IPI to itself
    TASK_WORK = 10     # need_resched / a signal on the vCPU thread (xfer_to_guest_mode work)
    IPI = 11           # the guest sends a fixed IPI to another vCPU (SourcePlan.target)
    IPI_NMI = 12       # ... an NMI IPI


# An IPI's target (SourcePlan.target): a vCPU, or one of these.
IPI_ANY = -1                     # another vCPU, uniformly, each time
IPI_ALL = -2                     # every other vCPU (a broadcast: the ALL_BUT_SELF shorthand)


@dataclass(frozen=True)
class Kind:
    """A source kind a Workload's sources name: its Src code, which side it acts on, what
    one arrival posts, and how the "allowed:" list of an error message shows it."""
    name: str                # "pmi"; for a family, the part before ":" ("ipi", "request")
    src: Src
    raises: tuple[str, ...] | None   # requests one arrival posts; None: the one it names
    help: str = ""           # in "allowed:" lists; "": 'name'
    guest: bool = False      # acts only while the guest runs (TIMER: per host, _plan.py)
    family: str = ""         # "target": name:N, name:any, name:all (an IPI's target vCPU);
    #                          "request": name:NAME (a request from `kvmsim orders`)

    @property
    def allowed(self) -> str:
        """How an "allowed:" list shows the kind."""
        return self.help or f"'{self.name}'"


# Every source kind, in the order "allowed:" lists them. A kind's rule is in each engine
# (docs/architecture.md, "Where to add things").
KINDS: tuple[Kind, ...] = (
    Kind("pmi", Src.PMI, ("PMI", "PMU"), guest=True),   # kvm_perf_overflow
    Kind("emulated-pmi", Src.EMUL_PMI, ("PMU",), guest=True),   # kvm_pmu_trigger_event
    Kind("nmi", Src.NMI, ("NMI",)),                     # kvm_inject_nmi
    Kind("irq", Src.IRQ, ("EVENT",)),                   # kvm_apic_set_irq
    Kind("timer", Src.TIMER, ("EVENT",)),               # apic_timer_expired
    Kind("exit", Src.EXIT, (), guest=True),
    Kind("hlt", Src.HLT, (), guest=True),
    Kind("ipi:self", Src.IPI_SELF, ("EVENT",), guest=True),
    Kind("ipi", Src.IPI, ("EVENT",), "'ipi:N', 'ipi:any', 'ipi:all'", guest=True,
         family="target"),
    Kind("ipi-nmi", Src.IPI_NMI, ("NMI",), "'ipi-nmi:N' (or :any, :all)", guest=True,
         family="target"),
    Kind("task-work", Src.TASK_WORK, ()),
    Kind("request", Src.REQUEST, None, "'request:NAME' (NAME from `kvmsim orders`)",
         family="request"),
    Kind("request-all", Src.REQUEST, None, "'request-all:NAME' (one request to every vCPU "
         "at once: kvm_make_all_cpus_request)", family="request"),
    # posts only no-op requests the order checks (_plan.py)
    Kind("request:noop", Src.REQUEST_NOOP, (), "'request:noop' (a no-op request the order "
         "checks, chosen uniformly per arrival)"),
)
KIND_OF = {k.name: k for k in KINDS if not k.family}            # "pmi", "ipi:self", ...
FAMILY_OF = {k.name: k for k in KINDS if k.family}              # "ipi", "request", ...
KIND_HELP = ", ".join(k.allowed for k in KINDS[:-1]) + f" or {KINDS[-1].allowed}"
SRC_OF_KIND = {name: k.src for name, k in KIND_OF.items()}
GUEST_SIDE = {k.src for k in KINDS if k.guest}
IPI_KINDS = {name: k.src for name, k in FAMILY_OF.items() if k.family == "target"}


class GuestPmu(IntEnum):
    """How the guest's perf NMI handler treats the PMU and LVTPC (arch/x86/events)."""
    INTEL = 0           # intel_pmu_handle_irq, late ack: LVTPC written last
    AMD_LEGACY = 1      # x86_pmu_handle_irq: LVTPC written first
    AMD_PERFMON_V2 = 2  # amd_pmu_v2_handle_irq: LVTPC never written


GUEST_PMU_OF = {"intel": GuestPmu.INTEL, "amd-legacy": GuestPmu.AMD_LEGACY,
                "amd-perfmon-v2": GuestPmu.AMD_PERFMON_V2}

# The intercepted accesses of the guest's perf NMI handler, in order: one VM-exit each
# (every PMU MSR and RDPMC is intercepted by the perf-based vPMU). "PMU" marks a write of
# the global control that makes KVM reprogram counters (reprogram_counters: KVM_REQ_PMU); a
# counter reload only adjusts the count (pmc_write_counter). "LVTPC" is the write that
# unmasks LVTPC. The first sequence runs when the NMI finds an overflow (a PMI), the second
# when it finds none.
PMI_HANDLER_OPS: dict[GuestPmu, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # intel_pmu_handle_irq: disable all, status, ack, RDPMC + reload, status, enable, LVTPC
    GuestPmu.INTEL: (("PMU", "", "", "", "", "", "PMU", "LVTPC"), ("PMU", "", "PMU", "LVTPC")),
    # x86_pmu_handle_irq: LVTPC first, then each counter read (RDPMC) and reloaded
    GuestPmu.AMD_LEGACY: (("LVTPC", "", ""), ("LVTPC", "")),
    # amd_pmu_v2_handle_irq: disable, status, RDPMC + reload, status clear, enable
    GuestPmu.AMD_PERFMON_V2: (("PMU", "", "", "", "", "PMU"), ("PMU", "", "PMU")),
}
AMD_NMI_WINDOW_NS = 100_000_000    # amd_pmu_adjust_nmi_window: perf_nmi_window, 100 ms


class Dist(IntEnum):
    POISSON = 0
    PERIODIC = 1
    TRACE = 2


class Handler(IntEnum):
    """What a fired check runs; every request without its own handler is NOOP."""
    NOOP = 0
    NMI = 1
    PMU = 2
    PMI = 3
    SMI = 4
    EVENT = 5


HANDLER_OF = {"NMI": Handler.NMI, "PMU": Handler.PMU, "PMI": Handler.PMI, "SMI": Handler.SMI,
              "EVENT": Handler.EVENT}


class Entry(IntEnum):
    """The event written for the next VM-Enter (VM_ENTRY_INTR_INFO_FIELD / event_inj)."""
    NONE = 0
    NMI = 1
    IRQ = 2


class Lvtpc(IntEnum):
    """LVTPC delivery mode the guest programs."""
    NMI = 0
    FIXED = 1
    SMI = 2
    MASKED = 3


LVTPC_OF = {m.name.lower(): m for m in Lvtpc}        # Workload.lvtpc: "nmi", "fixed", ...


class Mode(IntEnum):
    """vcpu->mode (include/linux/kvm_host.h)."""
    OUTSIDE_GUEST_MODE = 0
    IN_GUEST_MODE = 1
    EXITING_GUEST_MODE = 2


class Stop(IntEnum):
    """Why Engine.run returned before every vCPU reached `until`."""
    DONE = 0
    INTERRUPTED = 1          # Ctrl-C, or a trace hook that raised
    UNCONSUMABLE = 2         # a pending request that no check of the order clears
    NOMEM = 3                # no memory for the IPIs in flight to a vCPU


class TraceEvent(IntEnum):
    """Events a trace hook receives: hook(t_ns, vcpu, event, a, b); `_trace.py` formats them."""
    EXIT = 0                 # kvm_exit            a: ExitReason, b: requests
    MAKE_REQUEST = 1         # kvm_make_request    a: Src of the arrival, b: bit (or -1)
    CHECK_REQUEST = 2        # kvm_check_request   a: bit, b: position in the order
    NMI_DROP = 3             # process_nmi         a: NMIs dropped, b: limit
    INJ_NMI = 4              # kvm_inj_nmi
    INJ_VIRQ = 5             # kvm_inj_virq
    ENTRY = 6                # kvm_entry           b: requests
    CANCEL = 7               # vmx_cancel_injection  b: requests
    HALT = 8                 # kvm_vcpu_block      a: 1 blocked, 0 woken


class ExitReason(IntEnum):
    """Why the guest left (VMX exit-reason names), for trace hooks."""
    GUEST = 0                # the guest's own exit (exit sources, guest_exit_rate)
    EXTERNAL_INTERRUPT = 1   # a kick: another CPU's IPI
    EXCEPTION_NMI = 2        # the host NMI of a guest counter overflow
    EPT_MISCONFIG = 3        # an emulated instruction (emulated-pmi)
    PREEMPTION_TIMER = 4     # req_immediate_exit, or the guest's timer (VMX preemption timer)
    NMI_WINDOW = 5
    INTERRUPT_WINDOW = 6
    MSR_WRITE = 7            # an access of the guest's perf NMI handler (MSR, RDPMC, LVTPC)
    IRET = 8                 # SVM's IRET intercept
    HLT = 9
    ICR_WRITE = 10           # the guest sends an IPI (x2APIC ICR write)


# Each TraceEvent as the kernel names its tracepoint or function, and the counter it counts.
TRACEPOINTS: dict[TraceEvent, tuple[str, str | None]] = {
    TraceEvent.EXIT: ("kvm_exit", "vmexits"),
    TraceEvent.MAKE_REQUEST: ("kvm_make_request", None),
    TraceEvent.CHECK_REQUEST: ("kvm_check_request", None),
    TraceEvent.NMI_DROP: ("process_nmi", "nmis_dropped"),
    TraceEvent.INJ_NMI: ("kvm_inj_nmi", None),
    TraceEvent.INJ_VIRQ: ("kvm_inj_virq", None),
    TraceEvent.ENTRY: ("kvm_entry", "vmenters"),
    TraceEvent.CANCEL: ("vmx_cancel_injection", "canceled_vmenters"),
    TraceEvent.HALT: ("kvm_vcpu_block", None),
}

SPECIAL_BITS = {name: catalogue.bit_of(name) for name in HANDLER_OF}
# KVM_REQ_UNBLOCK: no check of vcpu_enter_guest() clears it; vcpu_run() does, after each
# vcpu_enter_guest() that returned to it.
UNBLOCK_BIT = catalogue.NOT_CHECKED["UNBLOCK"][0]


@dataclass(frozen=True)
class Param:
    """One field of the engines' parameter block (ks_params in C)."""
    name: str
    ctype: str               # C type; "T[n]" is a fixed array
    doc: str


@dataclass(frozen=True)
class Cost:
    """One phase of the run loop with a simulated cost (docs/model.md derives each default)."""
    name: str
    default_ns: int
    doc: str


COSTS: tuple[Cost, ...] = (
    Cost("vmexit", 340, "VM-exit: half the hardware round trip"),
    Cost("vmenter", 340, "VM-Enter: the other half"),
    Cost("check", 1, "one kvm_check_request() test_bit"),
    Cost("handler", 100, "a no-op request's handler"),
    Cost("event", 470, "the EVENT block: kvm_check_and_inject_events"),
    Cost("state_load", 90, "kvm_mmu_reload .. kvm_vcpu_exit_request"),
    Cost("cancel", 90, "the cancel path and the next vcpu_run iteration"),
    Cost("task_work", 3000, "xfer_to_guest_mode_handle_work: a schedule() or a signal"),
    Cost("ipi", 1650, "from a guest's ICR write to its IPI reaching the target vCPU"),
)
# Handler costs of the requests with their own handler; every other request costs `handler`.
DEFAULT_HANDLER_NS = {"NMI": 30, "PMU": 500, "PMI": 150, "SMI": 30}

# Plan.params holds exactly these keys; _core.pyx takes them in one dict-to-struct assignment.
PARAMS: tuple[Param, ...] = (
    Param("n_checks", "int32_t", "checks in the order, EVENT last"),
    Param("order", "uint8_t[64]", "request bit of each check position"),
    Param("rank", "uint8_t[64]", "check position of each bit, or UNCHECKED"),
    Param("handler", "uint8_t[64]", "Handler code per bit"),
    Param("handler_ns", "int64_t[64]", "handler cost per bit (Costs.handlers, .handler, .event)"),
    Param("raises", "uint64_t[64]", "requests a no-op handler always raises"),
    Param("unconsumable", "uint64_t", "bits no check clears: pending at the late check, a "
                                      "livelock"),
    Param("n_noop", "int32_t", "no-op requests request:noop picks from"),
    Param("noop_bits", "uint8_t[64]", "those requests' bits, in catalogue order"),
    *(Param(f"cost_{c.name}", "int64_t", c.doc) for c in COSTS if c.name != "handler"),
    Param("intel", "uint8_t", "Intel host and guest CPUID (else AMD)"),
    Param("lvtpc", "int32_t", "Lvtpc code of the guest's LVTPC"),
    Param("automask", "uint8_t", "kvm_apic_local_deliver masks LVTPC after a PMI (profile)"),
    Param("pmi_irq_work", "uint8_t", "a host PMI outside guest mode goes through irq_work"),
    Param("pmu_request", "uint8_t", "PMU control writes defer reprogramming (KVM_REQ_PMU)"),
    Param("nmi_event_always", "uint8_t", "process_nmi raises KVM_REQ_EVENT with none pending"),
    Param("apicv", "uint8_t", "APICv / AVIC: fixed interrupts are posted, not injected"),
    Param("ipiv", "uint8_t", "IPI virtualisation: a guest's IPI does not exit"),
    Param("vnmi", "uint8_t", "AMD vNMI: one NMI waits in V_NMI_PENDING, no window exits"),
    Param("iret_exits", "uint8_t", "SVM without vNMI intercepts the guest's IRET"),
    Param("idle_hlt", "uint8_t", "AMD Idle HLT: HLT with a pending interrupt does not exit"),
    Param("fastpath_reenter", "uint8_t", "ICR writes and HLT re-enter from the fastpath"),
    Param("soft_timer", "uint8_t", "the LAPIC timer is a host hrtimer (no preemption timer)"),
    Param("coupled", "uint8_t", "some vCPU sends IPIs to others: vCPUs run in step"),
    Param("pmi_ops_n", "int32_t[2]", "accesses of the guest's perf NMI handler: PMI, no PMI"),
    Param("pmi_ops_pmu", "uint32_t[2]", "those that make KVM reprogram (KVM_REQ_PMU)"),
    Param("pmi_ops_lvtpc", "int32_t[2]", "the one that unmasks LVTPC, or -1"),
    Param("amd_nmi_window_ns", "int64_t", "an unclaimed NMI this soon after a PMI is claimed"),
    Param("pmi_skid_ns", "int64_t", "from a guest counter overflow to the host's NMI"),
    Param("nmi_handler_ns", "int64_t", "guest NMI handler time"),
    Param("irq_handler_ns", "int64_t", "guest IRQ handler time"),
    Param("guest_exit_mean_ns", "double", "mean guest run between its own exits; 0: none"),
    Param("interval_ns", "int64_t", "counts are kept per interval of this length"),
)


@dataclass(frozen=True)
class Counter:
    """One counted event: its kvmsim name, the name perf users know, unit and meaning."""
    name: str
    perf: str
    help: str
    unit: str = ""


EVENTS: tuple[Counter, ...] = (
    Counter("vmexits", "kvm:kvm_exit", "VM-exits of any reason"),
    Counter("vmenter_attempts", "kvmsim:vmenter_attempts",
            "passes that reached kvm_vcpu_exit_request()"),
    Counter("vmenters", "kvm:kvm_entry", "completed VM-Enters"),
    Counter("canceled_vmenters", "probe:vmx_cancel_injection",
            "VM-Enters cancelled by kvm_vcpu_exit_request() (cancel_injection)"),
    Counter("immediate_exits", "kvmsim:immediate_exits",
            "exits forced by req_immediate_exit"),
    Counter("nmi_window_exits", "kvmsim:nmi_window_exits",
            "handle_nmi_window (VMX) or IRET completion (SVM)"),
    Counter("irq_window_exits", "kvmsim:irq_window_exits", "handle_interrupt_window"),
    Counter("nmis_queued", "kvmsim:nmis_queued", "kvm_inject_nmi: nmi_queued++"),
    Counter("nmis_injected", "kvmsim:nmis_injected", "NMIs delivered by a completed VM-Enter"),
    Counter("nmis_dropped", "kvmsim:nmis_dropped", "NMIs over process_nmi's limit"),
    Counter("pmis_raised", "kvmsim:pmis_raised", "counter overflows that set KVM_REQ_PMI"),
    Counter("pmis_coalesced", "kvmsim:pmis_coalesced",
            "overflows ignored (reprogram pending, or KVM_REQ_PMI already set)"),
    Counter("pmis_delivered", "kvmsim:pmis_delivered",
            "kvm_apic_local_deliver(LVTPC) accepted"),
    Counter("pmis_dropped", "kvmsim:pmis_dropped", "PMIs refused because LVTPC is masked"),
    Counter("irqs_raised", "kvmsim:irqs_raised", "IRR bit sets (__apic_accept_irq, fixed)"),
    Counter("irqs_coalesced", "kvmsim:irqs_coalesced", "IRR sets that found the bit set"),
    Counter("irqs_injected", "kvmsim:irqs_injected", "IRQs delivered by a completed VM-Enter"),
    Counter("smis_injected", "kvmsim:smis_injected", "enter_smm from the EVENT block"),
    Counter("halt_exits", "kvmsim:halt_exits", "HLT exits (kvm_emulate_halt, stat halt_exits)"),
    Counter("nmis_unknown", "kvmsim:nmis_unknown",
            "NMIs the guest finds no reason for (\"Uhhuh. NMI received for unknown reason\")"),
    Counter("pmis_irq_work", "kvmsim:pmis_irq_work",
            "PMIs delivered by kvm_pmi_trigger_fn (irq_work), not by KVM_REQ_PMI"),
    Counter("fastpath_exits", "kvmsim:fastpath_exits",
            "exits handled in the fastpath that re-entered the guest without a pass"),
    Counter("task_work", "kvmsim:task_work", "xfer_to_guest_mode_handle_work runs in vcpu_run"),
    Counter("cancels_task_work", "kvmsim:cancels_task_work",
            "cancels with no request pending: task work (need_resched, a signal) or a kick"),
    Counter("ipis_sent", "kvmsim:ipis_sent", "IPIs the guest sent to other vCPUs"),
)

PHASES: tuple[Counter, ...] = tuple(
    Counter(f"ns.{p}", f"kvmsim:ns.{p}", help, "ns") for p, help in (
        ("guest", "simulated ns in the guest"),
        ("vmexit", "simulated ns of VM-exits"),
        ("requests", "simulated ns of request checks and their handlers, but EVENT"),
        ("event", "simulated ns of the EVENT block (kvm_check_and_inject_events)"),
        ("state_load", "simulated ns from kvm_mmu_reload to kvm_vcpu_exit_request()"),
        ("vmenter", "simulated ns of VM-Enters"),
        ("cancel", "simulated ns of the cancel path"),
        ("task_work", "simulated ns in xfer_to_guest_mode_handle_work (schedule, signals)"),
        ("halted", "simulated ns blocked in kvm_vcpu_block after HLT"),
    ))

# One column per request bit in each group: checks that fired; cancels with the bit pending
# because it arrived after its check ("async"); cancels with it pending because a handler
# checked after it raised it in the same pass ("backedge").
BIT_GROUPS = {
    "requests": "kvm_check_request() of KVM_REQ_{} that fired",
    "cancels.async": "cancels with KVM_REQ_{} pending, posted after its check",
    "cancels.backedge": "cancels with KVM_REQ_{} pending, raised by a handler checked later",
}

COUNTERS: tuple[Counter, ...] = EVENTS + PHASES
COLUMN = {c.name: i for i, c in enumerate(COUNTERS)}      # counter -> column of the counts
REQ_BASE = len(COUNTERS)
BIT_BASE = {g: REQ_BASE + i * N_BITS for i, g in enumerate(BIT_GROUPS)}
N_COLUMNS = REQ_BASE + len(BIT_GROUPS) * N_BITS


def column(counter: str) -> int:
    """The counts column of a kvmsim counter name (events, ns.*, <group>.<REQUEST>)."""
    if counter in COLUMN:
        return COLUMN[counter]
    group, _, request = counter.rpartition(".")
    return BIT_BASE[group] + catalogue.bit_of_any(request)


def column_name(col: int) -> str:
    """The counter in a counts column (per-bit columns without a request: <group>.bit<N>)."""
    if col < REQ_BASE:
        return COUNTERS[col].name
    group = list(BIT_GROUPS)[(col - REQ_BASE) // N_BITS]
    bit = (col - REQ_BASE) % N_BITS
    name = catalogue.name_of(bit)
    return f"{group}.{name.removeprefix('KVM_REQ_') if name.startswith('KVM_REQ_') else 'bit' + str(bit)}"


# vCPU state that Engine.state(vcpu) reports, as in struct kvm_vcpu where there is a twin.
STATE_FIELDS = ("now", "mode", "requests", "nmi_queued", "nmi_pending", "nmi_injected",
                "irq_pending", "irq_injected", "smi_pending", "nmi_window", "irq_window",
                "lvtpc_masked", "nmi_blocked", "irq_blocked", "in_host", "vnmi_pending",
                "halted", "xfer", "timer_pending", "pass_since")
# pass_since: when the pass in progress began (a coupled run stops passes at its horizon and
# counts them into the interval they began in), else now: intervals before it are final.


def enums() -> dict[str, dict[str, int]]:
    """The C enums of _spec.pxd: prefix -> {name: value}."""
    return {
        "SRC_": {m.name: m.value for m in Src},
        "DIST_": {m.name: m.value for m in Dist},
        "H_": {m.name: m.value for m in Handler},
        "ENTRY_": {m.name: m.value for m in Entry},
        "LVTPC_": {m.name: m.value for m in Lvtpc},
        "STOP_": {m.name: m.value for m in Stop},
        "T_": {m.name: m.value for m in TraceEvent},
        "R_": {m.name: m.value for m in ExitReason},
        "BIT_": dict(SPECIAL_BITS),
        "C_": {**{c.name.replace("ns.", "NS_").upper(): i for i, c in enumerate(COUNTERS)},
               **{f"{g.replace('cancels.', 'CANCEL_').upper()}_BASE": b
                  for g, b in BIT_BASE.items()},
               "COLUMNS": N_COLUMNS},
        "GPMU_": {m.name: m.value for m in GuestPmu},
        "": {**{m.name: m.value for m in Mode}, "UNCHECKED": UNCHECKED,
             "POLL_EVERY": POLL_EVERY, "N_BITS": N_BITS, "BIT_UNBLOCK": UNBLOCK_BIT,
             "IPI_ANY": IPI_ANY, "IPI_ALL": IPI_ALL, "KS_ABI_VERSION": ABI_VERSION},
    }


def render_pxd(template: str) -> str:
    """_spec.pxd from its template (Cython's Tempita, as numpy renders its .pxd.in files)."""
    from Cython import Tempita
    enum_blocks = [(prefix, members) for prefix, members in enums().items()]
    params = [(p.ctype.split("[")[0], p.name + ("[" + p.ctype.split("[")[1]
                                                 if "[" in p.ctype else ""), p.doc)
              for p in PARAMS]
    return Tempita.sub(template, enums=enum_blocks, params=params, max_gap=repr(MAX_GAP_NS),
                       no_pmi_yet=f"INT64_C({NO_PMI_YET})")
