"""The plain-Python reference engine: the model written out as directly as possible.

_core.pyx runs the same rules in C; both must produce identical counts for a seed
(tests/test_engines.py). Each rule names the kernel function it mirrors; docs/model.md
gives the citations. The codes, bits and columns come from _spec.py.
"""

from __future__ import annotations

import types

import numpy as np

from . import _spec
from ._plan import Plan, SourcePlan, bit_generator
from ._spec import (BIT_BASE, COLUMN, MAX_GAP_NS, NEVER, POLL_EVERY, SPECIAL_BITS, Dist, Entry,
                    ExitReason, Handler, Lvtpc, Mode, Src, Stop, TraceEvent)

EVENT_BIT, NMI_BIT, PMU_BIT, PMI_BIT, SMI_BIT = (SPECIAL_BITS[n] for n in
                                                 ("EVENT", "NMI", "PMU", "PMI", "SMI"))
C = types.SimpleNamespace(**{c.name.replace("ns.", "ns_"): i for c, i in
                             zip(_spec.COUNTERS, range(len(_spec.COUNTERS)))})
REQUESTS, CANCEL_ASYNC, CANCEL_BACKEDGE = (BIT_BASE[g] for g in _spec.BIT_GROUPS)
assert COLUMN["ns.guest"] == C.ns_guest


def _after(t: int, gap: float) -> int:
    """t + gap, where a gap of MAX_GAP_NS or more means "never" (and cannot overflow)."""
    return NEVER if gap >= MAX_GAP_NS else t + int(gap)


class _Source:
    """One source's arrivals on one vCPU."""

    def __init__(self, sp: SourcePlan, seed: int):
        self.kind, self.bit, self.dist = sp.kind, sp.bit, sp.dist
        self.mean, self.period, self.times = sp.mean_ns, sp.period_ns, sp.times_ns
        self.idx = 0
        self.gen = np.random.Generator(bit_generator(seed, sp.spawn_key))
        if self.dist == Dist.POISSON:
            self.next_t = _after(0, self.gen.standard_exponential() * self.mean)
        elif self.dist == Dist.PERIODIC:
            self.next_t = sp.start_ns + self.period
        else:
            self.next_t = int(self.times[0]) if len(self.times) else NEVER

    def step(self) -> None:
        """Move to the next arrival."""
        if self.dist == Dist.POISSON:
            self.next_t = _after(self.next_t, self.gen.standard_exponential() * self.mean)
        elif self.dist == Dist.PERIODIC:
            self.next_t += self.period
        else:
            self.idx += 1
            self.next_t = int(self.times[self.idx]) if self.idx < len(self.times) else NEVER

    def advance(self, t: int) -> int:
        """Move past every arrival at or before t; returns how many there were. A periodic
        source jumps in one step: a 1 ns period across a long handler costs nothing."""
        if self.dist == Dist.PERIODIC:
            k = (t - self.next_t) // self.period + 1
            self.next_t += k * self.period
            return k
        k = 0
        while self.next_t <= t:
            self.step()
            k += 1
        return k


class _VCpu:
    def __init__(self, engine: Engine, plan: Plan, index: int):
        self.e, self.p, self.index = engine, engine.p, index
        mine = [s for s in plan.sources if s.vcpu == index]
        self.host = [_Source(s, plan.seed) for s in mine if s.kind >= _spec.FIRST_HOST_SRC]
        self.guest = [_Source(s, plan.seed) for s in mine if s.kind < _spec.FIRST_HOST_SRC]
        self.exit_gen = np.random.Generator(bit_generator(plan.seed, (index, 0)))
        self.requests = 0                 # vcpu->requests
        self.mode = Mode.OUTSIDE_GUEST_MODE   # vcpu->mode
        self.nmi_queued = 0               # vcpu->arch.nmi_queued
        self.nmi_pending = 0              # vcpu->arch.nmi_pending
        self.nmi_injected = False         # vcpu->arch.nmi_injected
        self.irq_pending = False          # the IRR bit of the device vector
        self.irq_injected = False         # vcpu->arch.interrupt.injected
        self.smi_pending = False          # vcpu->arch.smi_pending
        self.entry_event = Entry.NONE     # VM_ENTRY_INTR_INFO_FIELD / event_inj
        self.nmi_window = self.irq_window = False
        self.req_immediate_exit = False
        self.immediate_exit = False       # set after an entry that must exit at once
        self.lvtpc_masked = False         # LVTPC.MASK
        self.pmu_reprogram = False        # pmu->reprogram_pmi
        self.emul_overflow = False        # an emulated count wrapped the counter
        self.nmi_blocked = self.irq_blocked = False   # guest in its NMI / IRQ handler
        self.nmi_end = self.irq_end = NEVER
        self.in_host = True               # KVM_RUN: the first pass starts at t = 0
        self.pass_at = 0                  # in the host: when the next pass starts
        self.now = 0                      # the time this vCPU has been run to
        self.entry_t = 0
        self.guest_since = 0
        self.guest_exit_at = NEVER
        self.ext_at = NEVER               # Engine.inject: host-side injections, due then
        self.ext_nmi = self.ext_irq = 0
        self.ext_pmi_at = NEVER           # Engine.inject: guest counter overflows, due then
        self.ext_pmi = 0
        self.budget = POLL_EVERY
        self.t_now = 0                    # time of the handler running (for trace hooks)

    # --- bookkeeping -------------------------------------------------------------------
    def _row(self, t):
        return self.counts[t // self.p.interval_ns - self.first]

    def _add_guest_time(self, t1):
        t0, ivl = self.guest_since, self.p.interval_ns
        while t0 < t1:
            end = min(t1, (t0 // ivl + 1) * ivl)
            self._row(t0)[C.ns_guest] += end - t0
            t0 = end
        self.guest_since = max(self.guest_since, t1)

    def _next_host(self):
        return min(min((s.next_t for s in self.host), default=NEVER), self.ext_at)

    def _poll(self, t, until):
        """Every POLL_EVERY steps: stop at t (as a run to `until` = t would) when asked."""
        self.budget -= 1
        if self.budget > 0:
            return until
        self.budget = POLL_EVERY
        return t if self.e.stopping() else until

    def _hook(self, t, event, a=0, b=0):
        self.e.hook(t, self.index, event, a, b)

    # --- arrivals from other CPUs ----------------------------------------------------------
    def _apply_host(self, t, c):
        """Every host-side arrival at or before t sets its request (kvm_make_request);
        the kick that follows (kvm_vcpu_kick) only matters in guest mode. Arrivals of one
        source are applied together, unless a trace hook wants each with its own time."""
        for s in self.host:
            while s.next_t <= t:
                at = s.next_t
                if s.kind == Src.REQUEST_NOOP:     # one of the no-op requests, uniformly
                    bit = self.p.noop_bits[int(s.gen.random() * self.p.n_noop)]
                    s.step()
                    self._arrive(Src.REQUEST, bit, 1, c, at)
                else:
                    self._arrive(s.kind, s.bit, s.advance(at if self.e.hook else t), c, at)
        if self.ext_at <= t:                       # Engine.inject: NMIs, then IRQs
            self._arrive(Src.NMI, 0, self.ext_nmi, c, self.ext_at)
            self._arrive(Src.IRQ, 0, self.ext_irq, c, self.ext_at)
            self.ext_nmi = self.ext_irq = 0
            self.ext_at = NEVER

    def _arrive(self, kind, bit, k, c, t):
        """k arrivals of one kind at once."""
        if not k:
            return
        if self.e.hook:
            for _ in range(k):
                self._hook(t, TraceEvent.MAKE_REQUEST, kind,
                           bit if kind == Src.REQUEST else -1)
        if kind == Src.NMI:                    # kvm_inject_nmi
            self.nmi_queued += k
            c[C.nmis_queued] += k
            self.requests |= 1 << NMI_BIT
        elif kind == Src.IRQ:                  # __apic_accept_irq, APIC_DM_FIXED
            self._accept_irq(c, k)
        else:                                  # Src.REQUEST
            self.requests |= 1 << bit

    def _accept_irq(self, c, k=1):
        """kvm_lapic_set_irr + KVM_REQ_EVENT (vmx_deliver_interrupt without APICv)."""
        c[C.irqs_raised] += k
        c[C.irqs_coalesced] += k - 1 + self.irq_pending
        self.irq_pending = True
        self.requests |= 1 << EVENT_BIT

    # --- the guest -------------------------------------------------------------------------
    def _handler_end_exits(self, end):
        """Whether the end of a guest handler (its time reached) forces a VM-exit."""
        p = self.p
        if end == "nmi":
            return (p.lvtpc == Lvtpc.NMI or not p.intel or self.nmi_window
                    or (self.irq_window and not self.irq_blocked))
        return ((self.irq_window and not self.nmi_blocked)
                or (p.intel and p.lvtpc == Lvtpc.FIXED and self.lvtpc_masked))

    def _end_handlers(self, t, c):
        """Guest handlers whose time is up: IRET unblocks NMIs (and IF), the perf handler's
        LVTPC write unmasks LVTPC; an open window is satisfied (handle_nmi_window /
        svm IRET completion / handle_interrupt_window raise KVM_REQ_EVENT)."""
        p = self.p
        if self.nmi_blocked and self.nmi_end <= t:
            self.nmi_blocked, self.nmi_end = False, NEVER
            if p.lvtpc == Lvtpc.NMI:
                self.lvtpc_masked = False
            if not p.intel:                        # SVM: IRET intercepted after injection
                self.nmi_window = False
                c[C.nmi_window_exits] += 1
                self.requests |= 1 << EVENT_BIT
        if self.irq_blocked and self.irq_end <= t:
            self.irq_blocked, self.irq_end = False, NEVER
            if p.lvtpc == Lvtpc.FIXED:
                self.lvtpc_masked = False
        if self.nmi_window and not self.nmi_blocked:
            self.nmi_window = False
            c[C.nmi_window_exits] += 1
            self.requests |= 1 << EVENT_BIT
        if self.irq_window and not (self.nmi_blocked or self.irq_blocked):
            self.irq_window = False
            c[C.irq_window_exits] += 1
            self.requests |= 1 << EVENT_BIT

    def _apply_guest(self, t, c):
        """Guest-side events at or before t, at a VM-exit."""
        self._end_handlers(t, c)
        for s in self.guest:
            while s.next_t <= t:
                self._guest_event(s.kind, c)
                s.step()
        if self.ext_pmi_at <= t:                   # Engine.inject: counter overflows
            for _ in range(self.ext_pmi):
                self._guest_event(Src.PMI, c)
            self.ext_pmi, self.ext_pmi_at = 0, NEVER

    def _guest_event(self, kind, c):
        if kind == Src.PMI:
            # kvm_perf_overflow: ignored if the counter's reprogram bit is set; else
            # __kvm_perf_overflow (KVM_REQ_PMI) then KVM_REQ_PMU.
            if self.pmu_reprogram:
                c[C.pmis_coalesced] += 1
            else:
                self.pmu_reprogram = True
                self._perf_overflow(c)
                self.requests |= 1 << PMU_BIT
        elif kind == Src.EMUL_PMI:
            # kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram
            self.pmu_reprogram = True
            self.emul_overflow = True
            self.requests |= 1 << PMU_BIT

    def _perf_overflow(self, c):
        """__kvm_perf_overflow: set global_status and raise KVM_REQ_PMI (INT set)."""
        if self.requests >> PMI_BIT & 1:
            c[C.pmis_coalesced] += 1
        else:
            c[C.pmis_raised] += 1
            self.requests |= 1 << PMI_BIT

    def _next_guest_event(self):
        """(time, exits) of the guest's next event after entry_t."""
        t = min((s.next_t for s in self.guest), default=NEVER)
        t = min(t, self.guest_exit_at, self.ext_pmi_at)
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
        h = self.p.handler[bit]
        if h == Handler.NOOP:
            self.requests |= self.p.raises[bit]
        elif h == Handler.NMI:
            self._process_nmi(c)
        elif h == Handler.PMU:
            # kvm_pmu_handle_event: reprogram; an emulated wrap overflows the counter.
            self.pmu_reprogram = False
            if self.emul_overflow:
                self.emul_overflow = False
                self._perf_overflow(c)
        elif h == Handler.PMI:
            self._deliver_pmi(c)
        elif h == Handler.SMI:
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
            if self.e.hook:
                self._hook(self.t_now, TraceEvent.NMI_DROP, self.nmi_pending - limit, limit)
            c[C.nmis_dropped] += self.nmi_pending - limit
            self.nmi_pending = limit
        if self.nmi_pending:
            self.requests |= 1 << EVENT_BIT

    def _deliver_pmi(self, c):
        """kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC)."""
        p = self.p
        if p.lvtpc == Lvtpc.MASKED or self.lvtpc_masked:
            c[C.pmis_dropped] += 1
            return
        c[C.pmis_delivered] += 1
        if p.lvtpc == Lvtpc.NMI:                   # APIC_DM_NMI: kvm_inject_nmi
            self.nmi_queued += 1
            c[C.nmis_queued] += 1
            self.requests |= 1 << NMI_BIT
        elif p.lvtpc == Lvtpc.FIXED:               # APIC_DM_FIXED
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
            self.entry_event, can_inject = Entry.NMI, False
        elif self.irq_injected:
            self.entry_event, can_inject = Entry.IRQ, False
        if self.smi_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            self.smi_pending = False               # enter_smm
            c[C.smis_injected] += 1
            can_inject = False
        if self.nmi_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if not self.nmi_blocked:               # nmi_allowed
                if self.e.hook:
                    self._hook(self.t_now, TraceEvent.INJ_NMI)
                self.nmi_pending -= 1
                self.nmi_injected = True
                self.entry_event = Entry.NMI
                can_inject = False
            if self.nmi_pending:
                self.nmi_window = True             # enable_nmi_window
        if self.irq_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if not (self.nmi_blocked or self.irq_blocked):   # interrupt_allowed
                if self.e.hook:
                    self._hook(self.t_now, TraceEvent.INJ_VIRQ)
                self.irq_pending = False
                self.irq_injected = True
                self.entry_event = Entry.IRQ
            else:
                self.irq_window = True             # enable_irq_window

    # --- one pass of vcpu_enter_guest() ------------------------------------------------------
    def _ranks_from(self, pos):
        """The pending requests as a mask over check positions >= pos."""
        rm, x = 0, self.requests
        while x:
            b = (x & -x).bit_length() - 1
            x &= x - 1
            r = self.p.rank[b]
            if pos <= r < self.p.n_checks:
                rm |= 1 << r
        return rm

    def _pass(self, t, c):
        """Returns (time, entered)."""
        p = self.p
        n = p.n_checks
        self._apply_host(t, c)
        self.req_immediate_exit = False
        raised = 0                                 # bits the handlers of this pass raised
        t0 = t
        event_ns = 0
        # if (kvm_request_pending(vcpu)) { ...checks... }; the EVENT check follows the block.
        pos = 0 if self.requests else n - 1
        while True:
            rm = self._ranks_from(pos)
            r = (rm & -rm).bit_length() - 1 if rm else n
            t_r = t + (r - pos) * p.cost_check
            ta = self._next_host()
            if ta <= t_r:
                # Arrivals land among the checks: those that started before them have run.
                if ta > t and p.cost_check:
                    passed = -(-(ta - t) // p.cost_check)
                    pos += passed
                    t += passed * p.cost_check
                self._apply_host(t, c)
                continue
            if r == n:
                t = t_r
                break
            bit = p.order[r]
            if self.e.hook:
                self._hook(t_r, TraceEvent.CHECK_REQUEST, bit, r)
            self.requests &= ~(1 << bit)           # kvm_check_request: clear, then handle
            c[REQUESTS + bit] += 1
            cost = p.handler_ns[bit]
            if bit == EVENT_BIT:
                event_ns += cost
            t = t_r + p.cost_check + cost
            pos = r + 1
            self.t_now = t_r
            before = self.requests
            self._handle(bit, c)
            raised = (raised & ~(1 << bit)) | (self.requests & ~before)
        c[C.ns_requests] += t - t0 - event_ns
        c[C.ns_event] += event_ns
        # kvm_mmu_reload .. vcpu->mode = IN_GUEST_MODE .. kvm_vcpu_exit_request()
        t += p.cost_state_load
        c[C.ns_state_load] += p.cost_state_load
        self.mode = Mode.IN_GUEST_MODE
        self._apply_host(t, c)
        c[C.vmenter_attempts] += 1
        if self.e.hook:
            self._hook(t, TraceEvent.CANCEL if self.requests else TraceEvent.ENTRY, 0,
                       self.requests)
        if self.requests:
            # cancel_injection: the event written for this entry goes back to "injected"
            # (vmx_cancel_injection -> __vmx_complete_interrupts raises KVM_REQ_EVENT).
            self.mode = Mode.OUTSIDE_GUEST_MODE
            c[C.canceled_vmenters] += 1
            x = self.requests
            while x:                               # what each pending bit cost, and how
                b = (x & -x).bit_length() - 1
                x &= x - 1
                c[(CANCEL_BACKEDGE if raised >> b & 1 else CANCEL_ASYNC) + b] += 1
            t += p.cost_cancel
            c[C.ns_cancel] += p.cost_cancel
            if self.entry_event != Entry.NONE or self.req_immediate_exit:
                self.requests |= 1 << EVENT_BIT
            self.entry_event = Entry.NONE
            return t, False
        if self.req_immediate_exit:                # raised after the late check
            self.requests |= 1 << EVENT_BIT
        self.immediate_exit = self.req_immediate_exit
        t += p.cost_vmenter
        c[C.ns_vmenter] += p.cost_vmenter
        c[C.vmenters] += 1
        if self.entry_event == Entry.NMI:          # the NMI is delivered: guest handler runs
            c[C.nmis_injected] += 1
            self.nmi_injected = False
            self.nmi_blocked, self.nmi_end = True, t + p.nmi_handler_ns
        elif self.entry_event == Entry.IRQ:
            c[C.irqs_injected] += 1
            self.irq_injected = False
            self.irq_blocked, self.irq_end = True, t + p.irq_handler_ns
        self.entry_event = Entry.NONE
        if p.guest_exit_mean_ns:
            self.guest_exit_at = _after(t, self.exit_gen.standard_exponential()
                                        * p.guest_exit_mean_ns)
        self.entry_t = self.guest_since = t
        return t, True

    def _exit_reason(self, t):
        """Why the guest exits at t (VMX exit-reason names), for trace hooks."""
        if self.immediate_exit:
            return ExitReason.PREEMPTION_TIMER
        if self._next_host() <= t or self.mode == Mode.EXITING_GUEST_MODE:
            return ExitReason.EXTERNAL_INTERRUPT
        for s in self.guest:
            if s.next_t <= t:
                return {Src.PMI: ExitReason.EXCEPTION_NMI,
                        Src.EMUL_PMI: ExitReason.EPT_MISCONFIG}.get(s.kind, ExitReason.GUEST)
        if self.ext_pmi_at <= t:
            return ExitReason.EXCEPTION_NMI
        if self.guest_exit_at <= t:
            return ExitReason.GUEST
        if self.nmi_blocked and self.nmi_end <= t:
            return ExitReason.NMI_WINDOW if self.nmi_window else (
                ExitReason.MSR_WRITE if self.p.intel else ExitReason.IRET)
        if self.irq_window:
            return ExitReason.INTERRUPT_WINDOW
        return ExitReason.NMI_WINDOW if self.nmi_window else ExitReason.MSR_WRITE

    def _exit(self, t, c):
        """A VM-exit at t; returns when vcpu_enter_guest() starts its first pass."""
        reason = self._exit_reason(t) if self.e.hook else 0
        self.mode = Mode.OUTSIDE_GUEST_MODE
        c[C.vmexits] += 1
        if self.immediate_exit:
            c[C.immediate_exits] += 1
            self.immediate_exit = False
        self._apply_guest(t, c)
        self._apply_host(t, c)
        if self.e.hook:
            self._hook(t, TraceEvent.EXIT, reason, self.requests)
        c[C.ns_vmexit] += self.p.cost_vmexit
        return t + self.p.cost_vmexit

    def _passes(self, until):
        """Passes (vcpu_run's loop) from pass_at until a VM-Enter completes: True; or until
        `until` comes first, as it does while every entry keeps being cancelled: False."""
        t = self.pass_at
        while True:
            until = self._poll(t, until)
            if t >= until:
                break
            t, entered = self._pass(t, self._row(t))
            if entered:
                self.in_host = False
                return True, until
            if self.requests & self.p.unconsumable:
                self.e.stop = Stop.UNCONSUMABLE
                until = t
        self.pass_at = t
        return False, until

    def run(self, until):
        if until <= self.now:                        # stopped past it by an interrupted run
            return
        while True:
            if self.in_host:
                entered, until = self._passes(until)
                if not entered:
                    self.now = until
                    return
            ta = self._next_host()                   # a kick: IPI -> VM-exit
            if self.mode == Mode.EXITING_GUEST_MODE:
                ta = min(ta, self.now)               # kicked between runs
            ta = max(ta, self.entry_t)
            tg, exits = self._next_guest_event()
            t = min(ta, tg)
            if t >= until:
                self._add_guest_time(until)
                self.now = until
                return
            if t == tg and not exits and ta > tg:
                self._end_handlers(t, self._row(t))
                continue
            self._add_guest_time(t)
            self.pass_at = self._exit(t, self._row(t))
            self.in_host = True

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("counts", None)             # a view of the Simulation's window
        return state

    def kick(self):
        """kvm_vcpu_kick: cmpxchg(mode, IN_GUEST_MODE, EXITING_GUEST_MODE)."""
        if self.mode == Mode.IN_GUEST_MODE:
            self.mode = Mode.EXITING_GUEST_MODE
            return True
        return False

    def state(self):
        return {f: int(getattr(self, f)) for f in _spec.STATE_FIELDS}


class Engine:
    """The reference engine: the same interface as _core.Engine (kvmsim._engine.Engine)."""

    def __init__(self, plan: Plan):
        self.p = types.SimpleNamespace(**plan.params)
        self.n_vcpus = plan.vcpus
        self.hook = None
        self.stop = Stop.DONE
        self._stop_event = None
        self._hook_error = None
        self.vcpus = [_VCpu(self, plan, i) for i in range(plan.vcpus)]

    def stopping(self) -> bool:
        if self.stop != Stop.DONE:
            return True
        if self._stop_event is not None and self._stop_event.is_set():
            self.stop = Stop.INTERRUPTED
        return self.stop != Stop.DONE

    def run(self, until_ns: int, counts: np.ndarray, first_interval: int, stop_event=None) -> int:
        """Advance every vCPU to until_ns, adding into counts[vcpu, interval - first, column].
        Returns a Stop code; before DONE each vCPU's `now` says how far it got."""
        self.stop, self._stop_event = Stop.DONE, stop_event
        for v, c in zip(self.vcpus, counts):
            v.counts, v.first = c, first_interval
            v.run(until_ns)
            if self.stop != Stop.DONE:
                break
        self._stop_event = None
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        return self.stop

    def make_request(self, vcpu: int, bit: int, kick: bool) -> bool:
        """Another CPU posts request `bit` (kvm_make_request) and, with kick, kicks the vCPU
        (kvm_vcpu_kick): in guest mode it exits at `now`. Returns whether a kick was sent."""
        v = self._vcpu(vcpu)
        if not 0 <= bit < _spec.N_BITS:
            raise ValueError(f"bit {bit} is outside 0..63")
        v.requests |= 1 << bit
        return bool(kick and v.kick())

    def inject(self, vcpu: int, kind: int, count: int = 1) -> bool:
        """Another CPU injects `count` NMIs or IRQs (kvm_inject_nmi / kvm_apic_set_irq), or a
        guest counter overflows (kvm_perf_overflow), at the vCPU's `now`, with a kick."""
        v = self._vcpu(vcpu)
        if kind not in (Src.PMI, Src.NMI, Src.IRQ):
            raise ValueError(f"kind {kind} cannot be injected")
        if kind == Src.PMI:
            v.ext_pmi += count
            v.ext_pmi_at = min(v.ext_pmi_at, v.now)
        else:
            if kind == Src.NMI:
                v.ext_nmi += count
            else:
                v.ext_irq += count
            v.ext_at = min(v.ext_at, v.now)
        return v.kick()

    def __getstate__(self):
        state = self.__dict__.copy()          # a trace hook is not pickled
        state["hook"] = state["_stop_event"] = state["_hook_error"] = None
        return state

    def set_trace(self, hook) -> None:
        """Call hook(t_ns, vcpu, event, a, b) for each TraceEvent; None turns it off."""
        if hook is None:
            self.hook = None
            return

        def guarded(*args):
            # A hook that raises stops the run at the next poll point; run() re-raises it.
            try:
                hook(*args)
            except BaseException as e:        # noqa: BLE001 - re-raised by run()
                if self._hook_error is None:
                    self._hook_error = e
                self.stop = Stop.INTERRUPTED
                for v in self.vcpus:
                    v.budget = 1
        self.hook = guarded

    def state(self, vcpu: int) -> dict[str, int]:
        return self._vcpu(vcpu).state()

    def _vcpu(self, vcpu: int) -> _VCpu:
        if not 0 <= vcpu < self.n_vcpus:
            raise ValueError(f"vcpu {vcpu} is outside 0..{self.n_vcpus - 1}")
        return self.vcpus[vcpu]
