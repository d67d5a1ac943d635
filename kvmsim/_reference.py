"""The plain-Python reference engine: the model written out as directly as possible.

_core.pyx runs the same rules in C; both must produce identical counts for a seed
(tests/test_engines.py). Each rule names the kernel function it mirrors; docs/model.md
gives the citations.
"""

from __future__ import annotations

import numpy as np

from . import plan as P
from .catalogue import BY_BIT, bit_of
from .counters import CANCEL_ASYNC_BASE, CANCEL_BACKEDGE_BASE, EV, PH, REQ_BASE

NEVER = int(P.NEVER)
MAX_GAP = float(2 ** 62)   # a longer exponential gap means "never" (and cannot overflow int64)


def _after(t: int, gap: float) -> int:
    return NEVER if gap >= MAX_GAP else t + int(gap)
EVENT_BIT, NMI_BIT, PMU_BIT, PMI_BIT, SMI_BIT = map(bit_of, ("EVENT", "NMI", "PMU", "PMI", "SMI"))
ENTRY_NONE, ENTRY_NMI, ENTRY_IRQ = 0, 1, 2


class _Source:
    """One source's arrivals on one vCPU."""

    def __init__(self, sp: P.SourcePlan, seed: int):
        self.kind, self.bit, self.dist = sp.kind, sp.bit, sp.dist
        self.mean, self.period, self.times = sp.mean_ns, sp.period_ns, sp.times_ns
        self.idx = 0
        self.gen = np.random.Generator(P.bit_generator(seed, sp.spawn_key))
        if self.dist == P.DIST_POISSON:
            self.next_t = _after(0, self.gen.standard_exponential() * self.mean)
        elif self.dist == P.DIST_PERIODIC:
            self.next_t = sp.start_ns + self.period
        else:
            self.next_t = int(self.times[0]) if len(self.times) else NEVER

    def advance(self):
        if self.dist == P.DIST_POISSON:
            self.next_t = _after(self.next_t, self.gen.standard_exponential() * self.mean)
        elif self.dist == P.DIST_PERIODIC:
            self.next_t += self.period
        else:
            self.idx += 1
            self.next_t = int(self.times[self.idx]) if self.idx < len(self.times) else NEVER


class _VCpu:
    def __init__(self, p: P.Plan, index: int, interval_ns: int):
        self.p, self.ivl = p, interval_ns
        mine = [s for s in p.sources if s.vcpu == index]
        self.host = [_Source(s, p.seed) for s in mine if s.kind >= P.SRC_NMI]
        self.guest = [_Source(s, p.seed) for s in mine if s.kind < P.SRC_NMI]
        self.exit_gen = np.random.Generator(P.bit_generator(p.seed, (index, 0)))
        self.order = [int(b) for b in p.order_bits]
        self.rank = [int(r) for r in p.rank]
        self.requests = 0                 # vcpu->requests
        self.nmi_queued = 0               # vcpu->arch.nmi_queued
        self.nmi_pending = 0              # vcpu->arch.nmi_pending
        self.nmi_injected = False         # vcpu->arch.nmi_injected
        self.irq_pending = False          # the IRR bit of the device vector
        self.irq_injected = False         # vcpu->arch.interrupt.injected
        self.smi_pending = False          # vcpu->arch.smi_pending
        self.entry_event = ENTRY_NONE     # VM_ENTRY_INTR_INFO_FIELD / event_inj
        self.nmi_window = self.irq_window = False
        self.req_immediate_exit = False
        self.immediate_exit = False       # set after an entry that must exit at once
        self.lvtpc_masked = False         # LVTPC.MASK
        self.pmu_reprogram = False        # pmu->reprogram_pmi
        self.emul_overflow = False        # an emulated count wrapped the counter
        self.nmi_blocked = self.irq_blocked = False   # guest in its NMI / IRQ handler
        self.nmi_end = self.irq_end = NEVER
        self.pass_at = 0                  # in the host, the next pass starts then (None: guest)
        self.in_guest = False             # vcpu->mode == IN_GUEST_MODE
        self.kicked = False               # kvm_vcpu_kick between runs
        self.now = 0                      # the last `until` this vCPU was run to
        self.entry_t = 0
        self.guest_since = 0
        self.guest_exit_at = NEVER
        self.index = index
        self.trace = None                 # trace(t_ns, vcpu, event, fields): kvmsim trace
        self.t_now = 0                    # time of the handler running (for trace)

    # --- bookkeeping -------------------------------------------------------------------
    def _add_guest_time(self, c, t1):
        t0, ivl = self.guest_since, self.ivl
        if t1 <= t0:
            return
        while t0 < t1:
            i = t0 // ivl
            end = min(t1, (i + 1) * ivl)
            c[i, PH["guest"]] += end - t0
            t0 = end
        self.guest_since = t1

    def _next_host(self):
        return min((s.next_t for s in self.host), default=NEVER)

    # --- arrivals from other CPUs ----------------------------------------------------------
    def _apply_host(self, t, c):
        """Every host-side arrival at or before t sets its request (kvm_make_request);
        the kick that follows (kvm_vcpu_kick) only matters in guest mode."""
        for s in self.host:
            while s.next_t <= t:
                if self.trace:
                    self.trace(s.next_t, self.index, "kvm_make_request", self._arrival(s))
                if s.kind == P.SRC_NMI:            # kvm_inject_nmi
                    self.nmi_queued += 1
                    c[EV["nmis_queued"]] += 1
                    self.requests |= 1 << NMI_BIT
                elif s.kind == P.SRC_IRQ:          # __apic_accept_irq, APIC_DM_FIXED
                    self._accept_irq(c)
                elif s.kind == P.SRC_REQUEST:
                    self.requests |= 1 << s.bit
                else:                              # SRC_REQUEST_NOOP
                    noop = self.p.noop_bits
                    self.requests |= 1 << int(noop[int(s.gen.random() * len(noop))])
                s.advance()

    @staticmethod
    def _arrival(s):
        if s.kind == P.SRC_NMI:
            return "req NMI (kvm_inject_nmi)"
        if s.kind == P.SRC_IRQ:
            return "req EVENT (IRR)"
        if s.kind == P.SRC_REQUEST:
            return f"req {BY_BIT[s.bit].name}"
        return "req noop"

    def _accept_irq(self, c):
        """kvm_lapic_set_irr + KVM_REQ_EVENT (vmx_deliver_interrupt without APICv)."""
        c[EV["irqs_raised"]] += 1
        if self.irq_pending:
            c[EV["irqs_coalesced"]] += 1
        self.irq_pending = True
        self.requests |= 1 << EVENT_BIT

    # --- the guest -------------------------------------------------------------------------
    def _handler_end_exits(self, end):
        """Whether the end of a guest handler (its time reached) forces a VM-exit."""
        p = self.p
        if end == "nmi":
            return (p.lvtpc == 0 or not p.intel or self.nmi_window
                    or (self.irq_window and not self.irq_blocked))
        return ((self.irq_window and not self.nmi_blocked)
                or (p.intel and p.lvtpc == 1 and self.lvtpc_masked))

    def _end_handlers(self, t, c):
        """Guest handlers whose time is up: IRET unblocks NMIs (and IF), the perf handler's
        LVTPC write unmasks LVTPC; an open window is satisfied (handle_nmi_window /
        svm IRET completion / handle_interrupt_window raise KVM_REQ_EVENT)."""
        p = self.p
        if self.nmi_blocked and self.nmi_end <= t:
            self.nmi_blocked, self.nmi_end = False, NEVER
            if p.lvtpc == 0:
                self.lvtpc_masked = False
            if not p.intel:                        # SVM: IRET intercepted after injection
                self.nmi_window = False
                c[EV["nmi_window_exits"]] += 1
                self.requests |= 1 << EVENT_BIT
        if self.irq_blocked and self.irq_end <= t:
            self.irq_blocked, self.irq_end = False, NEVER
            if p.lvtpc == 1:
                self.lvtpc_masked = False
        if self.nmi_window and not self.nmi_blocked:
            self.nmi_window = False
            c[EV["nmi_window_exits"]] += 1
            self.requests |= 1 << EVENT_BIT
        if self.irq_window and not (self.nmi_blocked or self.irq_blocked):
            self.irq_window = False
            c[EV["irq_window_exits"]] += 1
            self.requests |= 1 << EVENT_BIT

    def _apply_guest(self, t, c):
        """Guest-side events at or before t, at a VM-exit."""
        self._end_handlers(t, c)
        for s in self.guest:
            while s.next_t <= t:
                if s.kind == P.SRC_PMI:
                    # kvm_perf_overflow: ignored if the counter's reprogram bit is set;
                    # else __kvm_perf_overflow (KVM_REQ_PMI) then KVM_REQ_PMU.
                    if self.pmu_reprogram:
                        c[EV["pmis_coalesced"]] += 1
                    else:
                        self.pmu_reprogram = True
                        self._perf_overflow(c)
                        self.requests |= 1 << PMU_BIT
                elif s.kind == P.SRC_EMUL_PMI:
                    # kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram
                    self.pmu_reprogram = True
                    self.emul_overflow = True
                    self.requests |= 1 << PMU_BIT
                s.advance()

    def _perf_overflow(self, c):
        """__kvm_perf_overflow: set global_status and raise KVM_REQ_PMI (INT set)."""
        if self.requests >> PMI_BIT & 1:
            c[EV["pmis_coalesced"]] += 1
        else:
            c[EV["pmis_raised"]] += 1
            self.requests |= 1 << PMI_BIT

    def _next_guest_event(self):
        """(time, exits) of the guest's next event after entry_t."""
        t = min((s.next_t for s in self.guest), default=NEVER)
        t = min(t, self.guest_exit_at)
        if self.immediate_exit or (self.nmi_window and not self.nmi_blocked) or (
                self.irq_window and not (self.nmi_blocked or self.irq_blocked)):
            t = self.entry_t
        exits = True
        for end, when in (("nmi", self.nmi_end if self.nmi_blocked else NEVER),
                          ("irq", self.irq_end if self.irq_blocked else NEVER)):
            if when < t:
                t, exits = when, self._handler_end_exits(end)
            elif when == t:
                exits = exits or self._handler_end_exits(end)
        return max(t, self.entry_t), exits

    # --- handlers of vcpu_enter_guest() ------------------------------------------------------
    def _handle(self, bit, c):
        h = int(self.p.handler[bit])
        if h == P.HANDLER_NOOP:
            self.requests |= int(self.p.raises[bit])
        elif h == P.HANDLER_NMI:
            self._process_nmi(c)
        elif h == P.HANDLER_PMU:
            # kvm_pmu_handle_event: reprogram; an emulated wrap overflows the counter.
            self.pmu_reprogram = False
            if self.emul_overflow:
                self.emul_overflow = False
                self._perf_overflow(c)
        elif h == P.HANDLER_PMI:
            self._deliver_pmi(c)
        elif h == P.HANDLER_SMI:
            self.smi_pending = True               # process_smi
            self.requests |= 1 << EVENT_BIT
        else:
            self._inject_events(c)

    def _process_nmi(self, c):
        """process_nmi: fold nmi_queued into nmi_pending, at most 2 (1 if NMIs are masked or
        one is injected); the rest is dropped. KVM_REQ_EVENT only if something is pending."""
        limit = 1 if (self.nmi_blocked or self.nmi_injected) else 2
        self.nmi_pending += self.nmi_queued
        self.nmi_queued = 0
        if self.nmi_pending > limit:
            if self.trace:
                self.trace(self.t_now, self.index, "process_nmi",
                           f"dropped {self.nmi_pending - limit} limit {limit}")
            c[EV["nmis_dropped"]] += self.nmi_pending - limit
            self.nmi_pending = limit
        if self.nmi_pending:
            self.requests |= 1 << EVENT_BIT

    def _deliver_pmi(self, c):
        """kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC)."""
        p = self.p
        if p.lvtpc == 3 or self.lvtpc_masked:
            c[EV["pmis_dropped"]] += 1
            return
        c[EV["pmis_delivered"]] += 1
        if p.lvtpc == 0:                           # APIC_DM_NMI: kvm_inject_nmi
            self.nmi_queued += 1
            c[EV["nmis_queued"]] += 1
            self.requests |= 1 << NMI_BIT
        elif p.lvtpc == 1:                         # APIC_DM_FIXED
            self._accept_irq(c)
        else:                                      # APIC_DM_SMI: kvm_inject_smi
            self.requests |= 1 << SMI_BIT
        if p.intel:                                # guest_cpuid_is_intel_compatible
            self.lvtpc_masked = True

    def _inject_events(self, c):
        """kvm_check_and_inject_events: re-injection first, then SMI > NMI > IRQ; at most one
        new event; -EBUSY (cannot inject now) sets req_immediate_exit."""
        can_inject = True
        if self.nmi_injected:
            self.entry_event, can_inject = ENTRY_NMI, False
        elif self.irq_injected:
            self.entry_event, can_inject = ENTRY_IRQ, False
        if self.smi_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            self.smi_pending = False               # enter_smm
            c[EV["smis_injected"]] += 1
            can_inject = False
        if self.nmi_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if not self.nmi_blocked:               # nmi_allowed
                if self.trace:
                    self.trace(self.t_now, self.index, "kvm_inj_nmi", "")
                self.nmi_pending -= 1
                self.nmi_injected = True
                self.entry_event = ENTRY_NMI
                can_inject = False
            if self.nmi_pending:
                self.nmi_window = True             # enable_nmi_window
        if self.irq_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if not (self.nmi_blocked or self.irq_blocked):   # interrupt_allowed
                if self.trace:
                    self.trace(self.t_now, self.index, "kvm_inj_virq", "irq")
                self.irq_pending = False
                self.irq_injected = True
                self.entry_event = ENTRY_IRQ
            else:
                self.irq_window = True             # enable_irq_window

    # --- one pass of vcpu_enter_guest() ------------------------------------------------------
    def _pass(self, t, c):
        """Returns (time, entered)."""
        p = self.p
        n = len(self.order)
        self._apply_host(t, c)
        self.req_immediate_exit = False
        raised = 0                                 # bits the handlers of this pass raised
        t0 = t
        event_ns = 0
        # if (kvm_request_pending(vcpu)) { ...checks... }; the EVENT check follows the block.
        pos = 0 if self.requests else n - 1
        while True:
            rm = 0
            x = self.requests
            while x:
                b = (x & -x).bit_length() - 1
                x &= x - 1
                r = self.rank[b]
                if pos <= r < n:
                    rm |= 1 << r
            r = (rm & -rm).bit_length() - 1 if rm else n
            t_r = t + (r - pos) * p.cost_check
            ta = self._next_host()
            if ta <= t_r:
                # The arrival lands among the checks: those before it have run.
                if ta > t and p.cost_check:
                    passed = -(-(ta - t) // p.cost_check)
                    pos += passed
                    t += passed * p.cost_check
                self._apply_host(ta, c)
                continue
            if r == n:
                t = t_r
                break
            bit = self.order[r]
            if self.trace:
                self.trace(t_r, self.index, "kvm_check_request",
                           f"req {BY_BIT[bit].name} bit {bit} pos {r}")
            self.requests &= ~(1 << bit)           # kvm_check_request: clear, then handle
            c[REQ_BASE + bit] += 1
            cost = p.cost_event if bit == EVENT_BIT else int(p.handler_ns[bit])
            if bit == EVENT_BIT:
                event_ns += cost
            t = t_r + p.cost_check + cost
            pos = r + 1
            self.t_now = t_r
            before = self.requests
            self._handle(bit, c)
            raised = (raised & ~(1 << bit)) | (self.requests & ~before)
        c[PH["requests"]] += t - t0 - event_ns
        c[PH["event"]] += event_ns
        # kvm_mmu_reload .. vcpu->mode = IN_GUEST_MODE .. kvm_vcpu_exit_request()
        t += p.cost_state_load
        c[PH["state_load"]] += p.cost_state_load
        self._apply_host(t, c)
        c[EV["vmenter_attempts"]] += 1
        if self.trace:
            self.trace(t, self.index, "kvm_entry" if not self.requests else
                       "vmx_cancel_injection", f"requests {self.requests:#x}")
        if self.requests:
            # cancel_injection: the event written for this entry goes back to "injected"
            # (vmx_cancel_injection -> __vmx_complete_interrupts raises KVM_REQ_EVENT).
            c[EV["canceled_vmenters"]] += 1
            x = self.requests
            while x:                               # what each pending bit cost, and how
                b = (x & -x).bit_length() - 1
                x &= x - 1
                c[(CANCEL_BACKEDGE_BASE if raised >> b & 1 else CANCEL_ASYNC_BASE) + b] += 1
            t += p.cost_cancel
            c[PH["cancel"]] += p.cost_cancel
            if self.entry_event != ENTRY_NONE or self.req_immediate_exit:
                self.requests |= 1 << EVENT_BIT
            self.entry_event = ENTRY_NONE
            return t, False
        if self.req_immediate_exit:                # raised after the late check
            self.requests |= 1 << EVENT_BIT
        self.immediate_exit = self.req_immediate_exit
        t += p.cost_vmenter
        c[PH["vmenter"]] += p.cost_vmenter
        c[EV["vmenters"]] += 1
        if self.entry_event == ENTRY_NMI:          # the NMI is delivered: guest handler runs
            c[EV["nmis_injected"]] += 1
            self.nmi_injected = False
            self.nmi_blocked, self.nmi_end = True, t + p.nmi_handler_ns
        elif self.entry_event == ENTRY_IRQ:
            c[EV["irqs_injected"]] += 1
            self.irq_injected = False
            self.irq_blocked, self.irq_end = True, t + p.irq_handler_ns
        self.entry_event = ENTRY_NONE
        if p.guest_exit_mean_ns:
            self.guest_exit_at = _after(t, self.exit_gen.standard_exponential()
                                        * p.guest_exit_mean_ns)
        self.entry_t = self.guest_since = t
        self.in_guest = True
        return t, True

    def _exit_reason(self, t):
        """Why the guest exits at t (VMX exit reason names; for kvmsim trace)."""
        p = self.p
        if self.immediate_exit:
            return "PREEMPTION_TIMER"
        if self._next_host() <= t:
            return "EXTERNAL_INTERRUPT"
        for s in self.guest:
            if s.next_t <= t:
                return {P.SRC_PMI: "EXCEPTION_NMI", P.SRC_EMUL_PMI: "EPT_MISCONFIG"}.get(
                    s.kind, "guest")
        if self.guest_exit_at <= t:
            return "guest"
        if self.nmi_blocked and self.nmi_end <= t:
            return "NMI_WINDOW" if self.nmi_window else (
                "MSR_WRITE" if p.intel else "IRET")
        if self.irq_window:
            return "INTERRUPT_WINDOW"
        return "NMI_WINDOW" if self.nmi_window else "MSR_WRITE"

    def _exit(self, t, c):
        """A VM-exit at t; returns when vcpu_enter_guest() starts its first pass."""
        self.in_guest = self.kicked = False
        if self.trace:
            reason = self._exit_reason(t)
        c[EV["vmexits"]] += 1
        if self.immediate_exit:
            c[EV["immediate_exits"]] += 1
            self.immediate_exit = False
        self._apply_guest(t, c)
        self._apply_host(t, c)
        if self.trace:
            self.trace(t, self.index, "kvm_exit", f"reason {reason} requests "
                       f"{self.requests:#x}")
        c[PH["vmexit"]] += self.p.cost_vmexit
        return t + self.p.cost_vmexit

    def _passes(self, until, counts):
        """Passes (vcpu_run's loop) from pass_at until a VM-Enter completes: True; or until
        `until` comes first, as it does while every entry keeps being cancelled: False."""
        t = self.pass_at
        while t < until:
            t, entered = self._pass(t, counts[t // self.ivl])
            if entered:
                self.pass_at = None
                return True
        self.pass_at = t
        return False

    def run(self, until, counts):
        while True:
            if self.pass_at is not None and not self._passes(until, counts):
                self.now = until
                return
            ta = self._next_host()                   # a kick: IPI -> VM-exit
            if self.kicked:
                ta = min(ta, self.now)               # kicked between runs
            ta = max(ta, self.entry_t)
            tg, exits = self._next_guest_event()
            t = min(ta, tg)
            if t >= until:
                self._add_guest_time(counts, until)
                self.now = until
                return
            if t == tg and not exits and ta > tg:
                self._end_handlers(t, counts[t // self.ivl])
                continue
            self._add_guest_time(counts, t)
            self.pass_at = self._exit(t, counts[t // self.ivl])

    def outstanding_nmis(self):
        return self.nmi_queued + self.nmi_pending + int(self.nmi_injected)


class Engine:
    def __init__(self, p: P.Plan, interval_ns: int):
        self.vcpus = [_VCpu(p, i, interval_ns) for i in range(p.vcpus)]

    def run(self, until_ns: int, counts: np.ndarray) -> None:
        """Advance every vCPU to until_ns, adding into counts[vcpu, interval, column]."""
        for v, c in zip(self.vcpus, counts):
            v.run(until_ns, c)

    def outstanding_nmis(self) -> np.ndarray:
        return np.array([v.outstanding_nmis() for v in self.vcpus], dtype=np.int64)

    def make_request(self, vcpu: int, bit: int, kick: bool) -> bool:
        """Another CPU posts request `bit` and, with kick, kicks the vCPU: in guest mode it
        exits at once (kvm_vcpu_kick). Returns whether the kick was sent."""
        v = self.vcpus[vcpu]
        v.requests |= 1 << bit
        sent = kick and v.in_guest and not v.kicked
        v.kicked = v.kicked or sent
        return sent

    def set_trace(self, trace) -> None:
        """Call trace(t_ns, vcpu, event, fields) for each simulated event (kvmsim trace)."""
        for v in self.vcpus:
            v.trace = trace
