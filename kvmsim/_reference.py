"""The plain-Python reference engine: the model written out as directly as possible.

_core.pyx runs the same rules in C; both must produce identical counts for a seed
(tests/test_engines.py, tests/test_fuzz.py). Each rule names the kernel function it mirrors;
docs/model.md gives the citations. The codes, bits and columns come from _spec.py.
"""

from __future__ import annotations

import heapq
import types

import numpy as np

from . import _spec
from ._plan import Plan, SourcePlan, bit_generator
from ._spec import (BIT_BASE, MAX_GAP_NS, NEVER, NO_PMI_YET, POLL_EVERY, SPECIAL_BITS,
                    UNBLOCK_BIT, Dist, Entry, ExitReason, Handler, Lvtpc, Mode, Src, Stop,
                    TraceEvent)

EVENT_BIT, NMI_BIT, PMU_BIT, PMI_BIT, SMI_BIT = (SPECIAL_BITS[n] for n in
                                                 ("EVENT", "NMI", "PMU", "PMI", "SMI"))
C = types.SimpleNamespace(**{c.name.replace("ns.", "ns_"): i
                             for i, c in enumerate(_spec.COUNTERS)})
REQUESTS, CANCEL_ASYNC, CANCEL_BACKEDGE = (BIT_BASE[g] for g in _spec.BIT_GROUPS)
# What ended a VM-exit's handling: a pass of vcpu_enter_guest() follows, the fastpath
# re-entered the guest, or HLT: kvm_vcpu_halt decides whether to block.
PASS, REENTERED, HALTED = range(3)
# How a pass ended: the guest runs, the entry was cancelled, or the pass stopped at the
# horizon of a coupled run and goes on later (its state in _VCpu.ps).
ENTERED, CANCELLED, SUSPENDED = range(3)


def _after(t: int, gap: float) -> int:
    """t + gap, where a gap of MAX_GAP_NS or more means "never" (and cannot overflow)."""
    return NEVER if gap >= MAX_GAP_NS else t + int(gap)


def _earlier(t: int, exits: bool, when: int, when_exits: bool) -> tuple[int, bool]:
    """The earlier of two guest events; at a tie the guest exits if either makes it."""
    if when < t:
        return when, when_exits
    return t, exits or (when == t and when_exits)


class _Source:
    """One source's arrivals on one vCPU."""

    def __init__(self, sp: SourcePlan, seed: int, posted: bool):
        self.kind, self.bit, self.dist = sp.kind, sp.bit, sp.dist
        self.mean, self.period, self.times = sp.mean_ns, sp.period_ns, sp.times_ns
        self.target = sp.target
        self.posted = posted              # a posted interrupt: no kick, no VM-exit
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
        self.host = [_Source(s, plan.seed, bool(s.kind == Src.IRQ and self.p.apicv))
                     for s in mine if not s.guest]
        self.guest = [_Source(s, plan.seed, False) for s in mine if s.guest]
        self.exit_gen = np.random.Generator(bit_generator(plan.seed, (index, 0)))
        self.requests = 0                 # vcpu->requests
        self.mode = Mode.OUTSIDE_GUEST_MODE   # vcpu->mode
        self.nmi_queued = 0               # vcpu->arch.nmi_queued
        self.nmi_pending = 0              # vcpu->arch.nmi_pending
        self.nmi_injected = False         # vcpu->arch.nmi_injected
        self.vnmi_pending = False         # V_NMI_PENDING (AMD vNMI)
        self.irq_pending = False          # the IRR (or PIR) bit of the device vector
        self.irq_injected = False         # vcpu->arch.interrupt.injected
        self.smi_pending = False          # vcpu->arch.smi_pending
        self.entry_event = Entry.NONE     # VM_ENTRY_INTR_INFO_FIELD / event_inj
        self.nmi_window = self.irq_window = False
        self.req_immediate_exit = False
        self.immediate_exit = False       # set after an entry that must exit at once
        self.lvtpc_masked = False         # LVTPC.MASK
        self.pmu_reprogram = False        # pmu->reprogram_pmi
        self.emul_overflow = False        # an emulated count wrapped the counter
        self.pmi_status = False           # GLOBAL_STATUS has an overflow bit the guest sees
        self.pmi_nmi_at = NEVER           # a host PMI (NMI) in flight lands then
        self.pmi_nmi_n = 0                # ... for this many overflows
        self.nmi_credit = 0               # NMI IPIs a guest handler will claim
        self.last_pmi_t = NO_PMI_YET      # the guest last handled a PMI then
        self.nmi_blocked = self.irq_blocked = False   # guest in its NMI / IRQ handler
        self.nmi_end = self.irq_end = NEVER
        self.op_seq = self.op_next = self.op_n = 0    # the perf NMI handler's accesses
        self.op_at = NEVER
        self.timer_pending = False        # apic->lapic_timer.pending
        self.xfer = False                 # xfer_to_guest_mode work: need_resched, signal
        self.if_off = False               # the guest runs with IF = 0 until its STI;HLT
        self.hlt_due = False              # ... which runs at the next guest instant
        self.hlt_exit = False             # this VM-exit is a HLT's
        self.halted = False               # blocked in kvm_vcpu_block()
        self.halt_checked = False         # ... after kvm_vcpu_check_block said so
        self.halt_since = 0
        self.ps = None                    # a suspended pass: [pos, raised, t0, event_ns, late]
        self.exit_fast = self.exit_slow = False   # what the VM-exit being handled carries
        self.in_host = True               # KVM_RUN: the first pass starts at t = 0
        self.pass_at = 0                  # in the host: when the next pass starts
        self.now = 0                      # the time this vCPU has been run to
        self.entry_t = self.exit_t = 0   # the last VM-Enter, the last VM-exit
        self.guest_since = 0
        self.guest_exit_at = NEVER
        self.ext_nmi_at = self.ext_irq_at = NEVER    # Engine.inject: due then
        self.ext_nmi = self.ext_irq = 0
        # IPIs from other vCPUs in flight: (arrival, seq, Src.NMI or Src.IRQ) heaps, the
        # posted ones (fixed, APICv) apart from those that kick
        self.in_kick, self.in_posted = [], []
        self.budget = POLL_EVERY
        self.t_now = 0                    # time of the handler running (for trace hooks)
        self.t_hook = 0                   # while a hook runs: its event's time

    # --- bookkeeping -------------------------------------------------------------------
    def _row(self, t):
        return self.counts[t // self.p.interval_ns - self.first]

    def _add_span(self, col, t0, t1):
        """Time from t0 to t1 into column col, split at interval boundaries."""
        ivl = self.p.interval_ns
        while t0 < t1:
            end = min(t1, (t0 // ivl + 1) * ivl)
            self._row(t0)[col] += end - t0
            t0 = end

    def _add_guest_time(self, t1):
        self._add_span(C.ns_guest, self.guest_since, t1)
        self.guest_since = max(self.guest_since, t1)

    def _next_kick(self):
        """The next host-side arrival that kicks the vCPU (IPI -> VM-exit in guest mode)."""
        t = min((s.next_t for s in self.host if not s.posted), default=NEVER)
        return min(t, self.ext_nmi_at, self.pmi_nmi_at,
                   NEVER if self.p.apicv else self.ext_irq_at,
                   self.in_kick[0][0] if self.in_kick else NEVER)

    def _next_posted(self):
        """The next posted interrupt (APICv): it reaches a running guest without a VM-exit."""
        t = min((s.next_t for s in self.host if s.posted), default=NEVER)
        return min(t, self.ext_irq_at if self.p.apicv else NEVER,
                   self.in_posted[0][0] if self.in_posted else NEVER)

    def _next_host(self):
        return min(self._next_kick(), self._next_posted())

    def _poll(self, t, until):
        """Every POLL_EVERY steps: stop at t (as a run to `until` = t would) when asked."""
        self.budget -= 1
        if self.budget > 0:
            return until
        self.budget = POLL_EVERY
        return t if self.e.stopping() else until

    def _hook(self, t, event, a=0, b=0):
        # what the hook posts to this vCPU lands at t
        hook = self.e.hook
        if hook is not None:                       # (a hook may remove itself)
            self.t_hook = t
            hook(t, self.index, event, a, b)
            self.t_hook = 0

    def _kick(self):
        """kvm_vcpu_kick: kvm_vcpu_exiting_guest_mode() cmpxchg IN_GUEST -> EXITING."""
        if self.mode == Mode.IN_GUEST_MODE:
            self.mode = Mode.EXITING_GUEST_MODE
            return True
        return False

    # --- arrivals from other CPUs ----------------------------------------------------------
    def _apply_host(self, t, c, in_guest=False):
        """Every host-side arrival at or before t. Arrivals of one source are applied
        together, unless a trace hook wants each with its own time. in_guest: the VM-exit
        at t is theirs (a host PMI then finds the vCPU in guest mode)."""
        for s in self.host:
            self._apply_source(s, t, c)
        if self.ext_nmi_at <= t:                   # Engine.inject
            self._arrive(Src.NMI, 0, self.ext_nmi, c, self.ext_nmi_at)
            self.ext_nmi, self.ext_nmi_at = 0, NEVER
        if self.ext_irq_at <= t:
            self._arrive(Src.IRQ, 0, self.ext_irq, c, self.ext_irq_at)
            self.ext_irq, self.ext_irq_at = 0, NEVER
        self._apply_ipis(self.in_kick, t, c)
        self._apply_ipis(self.in_posted, t, c)
        if self.pmi_nmi_at <= t:
            self._host_pmi(c, in_guest)

    def _apply_ipis(self, heap, t, c):
        """Other vCPUs' IPIs that have arrived by t, in order (__apic_accept_irq)."""
        while heap and heap[0][0] <= t:
            at, _, kind = heapq.heappop(heap)
            self._arrive(kind, 0, 1, c, at)

    def _apply_source(self, s, t, c):
        while s.next_t <= t:
            at = s.next_t
            if s.kind == Src.REQUEST_NOOP:         # one of the no-op requests, uniformly
                bit = self.p.noop_bits[int(s.gen.random() * self.p.n_noop)]
                s.step()
                self._arrive(Src.REQUEST, bit, 1, c, at)
            else:
                self._arrive(s.kind, s.bit, s.advance(at if self.e.hook else t), c, at)

    def _apply_posted(self, t, c):
        """Posted interrupts up to t, reaching a guest that runs."""
        for s in self.host:
            if s.posted:
                self._apply_source(s, t, c)
        if self.p.apicv and self.ext_irq_at <= t:
            self._arrive(Src.IRQ, 0, self.ext_irq, c, self.ext_irq_at)
            self.ext_irq, self.ext_irq_at = 0, NEVER
        self._apply_ipis(self.in_posted, t, c)

    def _arrive(self, kind, bit, k, c, t):
        """k arrivals of one kind at once."""
        if not k:
            return
        if self.e.hook:
            for _ in range(k):
                self._hook(t, TraceEvent.MAKE_REQUEST, kind,
                           bit if kind == Src.REQUEST else -1)
        if kind == Src.NMI:                    # kvm_inject_nmi, from an NMI IPI
            self.nmi_queued += k
            c[C.nmis_queued] += k
            self.nmi_credit += k               # the guest's handler for it claims it
            self.requests |= 1 << NMI_BIT
            self._kick()
        elif kind == Src.IRQ:                  # __apic_accept_irq, APIC_DM_FIXED
            self._accept_irq(c, k)
        elif kind == Src.TIMER:                # apic_timer_expired(from_timer_fn = true)
            self.timer_pending = True
            self.requests |= 1 << UNBLOCK_BIT
            self._kick()
        elif kind == Src.TASK_WORK:            # TIF_NEED_RESCHED / a signal, and its IPI
            self.xfer = True
            self._kick()
        else:                                  # Src.REQUEST: kvm_make_request + kick
            self.requests |= 1 << bit
            self._kick()

    def _accept_irq(self, c, k=1):
        """kvm_lapic_set_irr + KVM_REQ_EVENT + kick (vmx_deliver_interrupt without APICv);
        with APICv or AVIC the vector is posted (PIR) and no request is made."""
        c[C.irqs_raised] += k
        c[C.irqs_coalesced] += k - 1 + self.irq_pending
        self.irq_pending = True
        if not self.p.apicv:
            self.requests |= 1 << EVENT_BIT
            self._kick()

    def _host_pmi(self, c, in_guest):
        """The host's NMI for a guest counter overflow (kvm_perf_overflow, NMI context).
        Taken while the guest ran, or in the request path: __kvm_perf_overflow raises
        KVM_REQ_PMI. Before 73554b29bd70, outside guest mode: irq_work (kvm_pmi_trigger_fn)
        calls kvm_pmu_deliver_pmi at once."""
        n, self.pmi_nmi_n, self.pmi_nmi_at = self.pmi_nmi_n, 0, NEVER
        for _ in range(n):
            if in_guest or not self.p.pmi_irq_work:
                self._overflow(c)
            elif self.pmu_reprogram:
                c[C.pmis_coalesced] += 1
            else:
                self.pmu_reprogram = True
                self.pmi_status = True
                self.requests |= 1 << PMU_BIT
                c[C.pmis_irq_work] += 1
                self._deliver_pmi(c)

    def _overflow(self, c):
        """kvm_perf_overflow: ignored if the counter's reprogram bit is set; else
        __kvm_perf_overflow (KVM_REQ_PMI) then KVM_REQ_PMU."""
        if self.pmu_reprogram:
            c[C.pmis_coalesced] += 1
        else:
            self.pmu_reprogram = True
            self._perf_overflow(c)
            self.requests |= 1 << PMU_BIT

    def _perf_overflow(self, c):
        """__kvm_perf_overflow: set global_status and raise KVM_REQ_PMI (INT set)."""
        self.pmi_status = True
        if self.requests >> PMI_BIT & 1:
            c[C.pmis_coalesced] += 1
        else:
            c[C.pmis_raised] += 1
            self.requests |= 1 << PMI_BIT

    # --- the guest -------------------------------------------------------------------------
    def _allowed(self):
        """interrupt_allowed: IF = 1 and no handler blocking interrupts."""
        return not (self.nmi_blocked or self.irq_blocked or self.if_off)

    def _hlt_exits(self):
        """Whether the guest's STI;HLT exits: an open interrupt window takes the VM-exit
        instead; AMD's Idle HLT intercept lets HLT with a pending interrupt run on."""
        if self.irq_window and not (self.nmi_blocked or self.irq_blocked):
            return True
        return not (self.p.idle_hlt and (self.irq_pending or self.vnmi_pending))

    def _event_exits(self, s):
        """Whether a guest-side event makes a VM-exit. STI;HLT never does by itself: it
        becomes hlt_due, which decides once the rest of its instant has happened. An IPI
        with a shorthand (ipi:all) is neither virtualised nor taken by the fastpath."""
        kind = s.kind
        if kind == Src.IPI:
            return not self.p.ipiv or s.target == _spec.IPI_ALL
        if kind == Src.IPI_SELF:
            return not self.p.apicv
        return kind != Src.HLT

    def _nmi_end_exits(self):
        return (self.p.iret_exits or self.nmi_window
                or (self.irq_window and not self.irq_blocked and not self.if_off))

    def _irq_end_exits(self):
        return ((self.irq_window and not self.nmi_blocked and not self.if_off)
                or (self.p.automask and self.p.lvtpc == Lvtpc.FIXED and self.lvtpc_masked))

    def _next_guest_event(self):
        """(time, exits) of the guest's next event: not before the time the guest has reached
        (an event that came due while the vCPU was in the host happens at once)."""
        e, p = self.guest_since, self.p
        t, exits = NEVER, True
        for s in self.guest:
            if s.kind == Src.PMI and s.next_t != NEVER:
                # the host's NMI, a skid after the overflow (which needs the guest running)
                when = max(max(s.next_t, self.entry_t) + p.pmi_skid_ns, e)
            else:
                when = max(s.next_t, e)
            t, exits = _earlier(t, exits, when, self._event_exits(s))
        t, exits = _earlier(t, exits, max(self.guest_exit_at, e), True)
        if self.immediate_exit or (self.nmi_window and not self.nmi_blocked) or (
                self.irq_window and self._allowed()):
            t, exits = _earlier(t, exits, e, True)
        if self.hlt_due:
            t, exits = _earlier(t, exits, e, self._hlt_exits())
        if self.nmi_blocked and self.op_next < self.op_n:
            t, exits = _earlier(t, exits, max(self.op_at, e), True)
        elif self.nmi_blocked:
            t, exits = _earlier(t, exits, max(self.nmi_end, e), self._nmi_end_exits())
        if self.irq_blocked:
            t, exits = _earlier(t, exits, max(self.irq_end, e), self._irq_end_exits())
        return t, exits

    def _irq_window_exit(self, c):
        """handle_interrupt_window: the window is satisfied, KVM_REQ_EVENT."""
        self.irq_window = False
        c[C.irq_window_exits] += 1
        self.requests |= 1 << EVENT_BIT

    def _end_handlers(self, t, c):
        """Guest handlers whose time is up: IRET unblocks NMIs (and IF), SVM without vNMI
        intercepts that IRET; an open window is satisfied (handle_nmi_window, svm IRET
        completion, handle_interrupt_window raise KVM_REQ_EVENT). True if one ended."""
        p, ended = self.p, False
        if self.nmi_blocked and self.nmi_end <= t and self.op_next >= self.op_n:
            self.nmi_blocked, self.nmi_end, ended = False, NEVER, True
            if p.iret_exits:                       # SVM: IRET intercepted after injection
                self.nmi_window = False
                c[C.nmi_window_exits] += 1
                self.requests |= 1 << EVENT_BIT
        if self.irq_blocked and self.irq_end <= t:
            self.irq_blocked, self.irq_end, ended = False, NEVER, True
            if p.lvtpc == Lvtpc.FIXED:             # the PMI handler's LVTPC write
                self.lvtpc_masked = False
        if self.nmi_window and not self.nmi_blocked:
            self.nmi_window = False
            c[C.nmi_window_exits] += 1
            self.requests |= 1 << EVENT_BIT
            ended = True
        if self.irq_window and self._allowed():
            self._irq_window_exit(c)
            ended = True
        return ended

    def _nmi_start(self, t, c):
        """An NMI reaches the guest: default_do_nmi runs its handlers. Perf's finds the
        overflow in GLOBAL_STATUS (a PMI), another claims an NMI IPI; an NMI none claims is
        "unknown" (AMD perf claims those within 100 ms of a PMI: perf_nmi_window)."""
        p = self.p
        self.nmi_blocked, self.nmi_end = True, t + p.nmi_handler_ns
        pmi, self.pmi_status = self.pmi_status, False
        claimed = pmi
        if self.nmi_credit:
            self.nmi_credit -= 1
            claimed = True
        if not claimed and t - self.last_pmi_t < p.amd_nmi_window_ns:
            claimed = True
        if pmi:
            self.last_pmi_t = t
        if not claimed:
            c[C.nmis_unknown] += 1
        # The perf NMI handler's intercepted accesses, evenly spaced in its guest time.
        self.op_seq, self.op_next = 0 if pmi else 1, 0
        self.op_n = p.pmi_ops_n[self.op_seq]
        self.op_at = t + p.nmi_handler_ns // (self.op_n + 1) if self.op_n else NEVER

    def _op(self, c):
        """One access of the perf NMI handler (an exit): a write that makes KVM reprogram
        counters raises KVM_REQ_PMU (reprogram_counters); the LVTPC write unmasks LVTPC."""
        p, i = self.p, self.op_next
        if p.pmi_ops_pmu[self.op_seq] >> i & 1 and p.pmu_request:
            self.pmu_reprogram = True              # (synchronous before 68fb4757e867)
            self.requests |= 1 << PMU_BIT
        if p.pmi_ops_lvtpc[self.op_seq] == i:
            self.lvtpc_masked = False
        self.op_next += 1
        self.op_at = (self.op_at + p.nmi_handler_ns // (self.op_n + 1)
                      if self.op_next < self.op_n else NEVER)

    def _hardware_deliver(self, t, c):
        """What the CPU delivers by itself in guest mode: the NMI in V_NMI_PENDING, and a
        posted interrupt (APICv virtual-interrupt delivery, AVIC)."""
        if self.vnmi_pending and not self.nmi_blocked:
            self.vnmi_pending = False
            c[C.nmis_injected] += 1
            self._nmi_start(t, c)
        elif self.p.apicv and self.irq_pending and self._allowed():
            self.irq_pending = False
            c[C.irqs_injected] += 1
            self.irq_blocked, self.irq_end = True, t + self.p.irq_handler_ns

    def _apply_guest(self, t, c):
        """Guest-side events at or before t, at a VM-exit at t (one handler access at a
        time). Marks the exit fast when only fastpath events make it."""
        p = self.p
        if self.nmi_blocked and self.op_next < self.op_n and self.op_at <= t:
            self._op(c)
            self.exit_slow = True
        if self._end_handlers(t, c):
            self.exit_slow = True
        for s in self.guest:
            if s.kind == Src.PMI:
                while max(s.next_t, self.entry_t) <= t:
                    landed = max(s.next_t, self.entry_t) + p.pmi_skid_ns
                    if landed <= t:                # the NMI hit the guest: exit context
                        self._overflow(c)
                        self.exit_slow = True
                    else:                          # the exit came first: NMI in flight
                        self.pmi_nmi_at = min(self.pmi_nmi_at, landed)
                        self.pmi_nmi_n += 1
                    s.step()
                continue
            while s.next_t <= t:
                self._guest_event(s, c, t)
                s.step()
        if self.hlt_due:
            self._hlt(c)

    def _guest_event(self, s, c, t):
        kind = s.kind
        if kind == Src.EMUL_PMI:
            # kvm_pmu_trigger_event -> kvm_pmu_request_counter_reprogram; before 68fb4757e867
            # the counter is reprogrammed and overflows at once
            if self.p.pmu_request:
                self.pmu_reprogram = True
                self.emul_overflow = True
                self.requests |= 1 << PMU_BIT
            else:
                self._perf_overflow(c)
            self.exit_slow = True
        elif kind == Src.TIMER:
            # VMX preemption timer: handle_fastpath_preemption_timer -> apic_timer_expired
            # (false). With APICv the interrupt is posted; without, lapic_timer.pending and
            # KVM_REQ_UNBLOCK, which ends the fastpath loop (vcpu_run injects the interrupt).
            if self.p.apicv:
                self._accept_irq(c)
            else:
                self.timer_pending = True
                self.requests |= 1 << UNBLOCK_BIT
            self.exit_fast = True
        elif kind == Src.IPI_NMI:                  # ICR write, APIC_DM_NMI: a full exit
            self._send_ipi(s, t, c)
            self.exit_slow = True
        elif kind == Src.IPI:                      # x2APIC ICR write, APIC_DM_FIXED
            self._send_ipi(s, t, c)
            if self._event_exits(s):   # handle_fastpath_set_x2apic_icr_irqoff: no shorthand
                if self.p.fastpath_reenter and s.target != _spec.IPI_ALL:
                    self.exit_fast = True
                else:
                    self.exit_slow = True
        elif kind == Src.IPI_SELF:                 # x2APIC SELF IPI write (APICv: no exit)
            self._accept_irq(c)
            self.exit_slow = True
        elif kind == Src.HLT:
            self.hlt_due = True                    # runs once the rest of this instant has
            self.if_off = True
        else:                                      # Src.EXIT: the guest's own exit
            self.exit_slow = True

    def _send_ipi(self, s, t, c):
        """kvm_apic_send_ipi -> kvm_irq_delivery_to_apic: the IPI reaches each target
        cost_ipi later; there __apic_accept_irq posts it (fixed, APICv), or sets the IRR and
        kicks, or injects an NMI and kicks. A target of "any" is drawn from the source's
        stream among the other vCPUs."""
        e, n = self.e, self.e.n_vcpus
        if s.target == _spec.IPI_ALL:
            targets = [i for i in range(n) if i != self.index]
        elif s.target == _spec.IPI_ANY:
            j = int(s.gen.random() * (n - 1))
            targets = [j + (j >= self.index)]
        else:
            targets = [s.target]
        kind = Src.NMI if s.kind == Src.IPI_NMI else Src.IRQ
        for i in targets:
            w = e.vcpus[i]
            heap = w.in_posted if kind == Src.IRQ and self.p.apicv else w.in_kick
            heapq.heappush(heap, (t + self.p.cost_ipi, e.ipi_seq, kind))
            e.ipi_seq += 1
        c[C.ipis_sent] += len(targets)

    def _next_send(self):
        """The earliest time this vCPU can still send an IPI (NEVER: it sends none)."""
        return min((max(s.next_t, self.now) for s in self.guest
                    if s.kind == Src.IPI or s.kind == Src.IPI_NMI), default=NEVER)

    def _hlt(self, c):
        """The guest's STI;HLT, due now. If anything else is being handled at this exit it
        runs at the next guest instant; else it is this exit's: an open interrupt window
        takes it, else kvm_emulate_halt."""
        if self.exit_fast or self.exit_slow:
            return
        self.hlt_due = self.if_off = False
        if self.irq_window and not (self.nmi_blocked or self.irq_blocked):
            self._irq_window_exit(c)
            self.exit_slow = True
        else:
            self.hlt_exit = True
            if self.p.fastpath_reenter:
                self.exit_fast = True
            else:
                self.exit_slow = True

    def _apply_in_guest(self, t, c):
        """Guest-side events at or before t that need no VM-exit (an IPI with IPIv; STI;HLT,
        which becomes hlt_due), handler ends, posted interrupts; then what the CPU delivers.
        An hlt_due still set here ran on without an exit (Idle HLT)."""
        self._end_handlers(t, c)
        self._apply_posted(t, c)
        self.hlt_due = self.if_off = False
        for s in self.guest:
            if s.kind not in (Src.IPI_SELF, Src.HLT, Src.IPI):
                continue
            if self._event_exits(s):        # (never an HLT's)
                continue                           # (its exit takes it)
            while s.next_t <= t:
                if s.kind == Src.IPI_SELF:
                    self._accept_irq(c)
                elif s.kind == Src.IPI:
                    self._send_ipi(s, t, c)
                else:
                    self.hlt_due = self.if_off = True
                s.step()
        self._hardware_deliver(t, c)

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
        one is injected, one fewer while V_NMI_PENDING holds one); the rest is dropped. With
        vNMI one goes to V_NMI_PENDING. KVM_REQ_EVENT: always (before 2cb9317377ca) or only
        if an NMI is pending."""
        p = self.p
        limit = 1 if (self.nmi_blocked or self.nmi_injected) else 2
        if self.vnmi_pending:
            limit -= 1
        self.nmi_pending += self.nmi_queued
        self.nmi_queued = 0
        if self.nmi_pending > limit:
            if self.e.hook:
                self._hook(self.t_now, TraceEvent.NMI_DROP, self.nmi_pending - limit, limit)
            c[C.nmis_dropped] += self.nmi_pending - limit
            self.nmi_pending = limit
        if self.nmi_pending and p.vnmi and not self.vnmi_pending:   # svm_set_vnmi_pending
            self.vnmi_pending = True
            self.nmi_pending -= 1
        if self.nmi_pending or p.nmi_event_always:
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
            self._kick()
        elif p.lvtpc == Lvtpc.FIXED:               # APIC_DM_FIXED
            self._accept_irq(c)
        else:                                      # APIC_DM_SMI: kvm_inject_smi
            self.requests |= 1 << SMI_BIT
            self._kick()
        if p.automask:                             # a16eb25b09c0; 49ff3b4aec51: Intel only
            self.lvtpc_masked = True

    def _inject_events(self, c):
        """kvm_check_and_inject_events: re-injection first, then SMI > NMI > IRQ; at most one
        new event; -EBUSY (cannot inject now) sets req_immediate_exit. Posted interrupts
        (APICv) are the CPU's to deliver; with vNMI no NMI window is opened."""
        p = self.p
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
            if self.nmi_pending and not p.vnmi:
                self.nmi_window = True             # enable_nmi_window
        if self.irq_pending and not p.apicv:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if self._allowed():                    # interrupt_allowed
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

    def _exit_request(self):
        """kvm_vcpu_exit_request: kicked, any request, or xfer_to_guest_mode work."""
        return bool(self.requests or self.xfer or self.mode == Mode.EXITING_GUEST_MODE)

    def _pass(self, t, c, horizon=NEVER):
        """One pass from t, or the rest of the suspended one. Returns (time, ENTERED |
        CANCELLED | SUSPENDED); a pass stops before anything at or after `horizon`."""
        p = self.p
        n = p.n_checks
        if self.ps is None:
            self._apply_host(t, c)
            self.req_immediate_exit = False
            # if (kvm_request_pending(vcpu)) { ...checks... }; EVENT is checked after the block.
            # raised: bits the handlers of this pass raised
            pos, raised, t0, event_ns, late = 0 if self.requests else n - 1, 0, t, 0, False
        else:
            (pos, raised, t0, event_ns, late), self.ps = self.ps, None
        while not late:
            rm = self._ranks_from(pos)
            r = (rm & -rm).bit_length() - 1 if rm else n
            t_r = t + (r - pos) * p.cost_check
            ta = self._next_host()
            if t >= horizon or min(ta, t_r) >= horizon:
                self.ps = [pos, raised, t0, event_ns, False]
                return t, SUSPENDED
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
                c[C.ns_requests] += t - t0 - event_ns
                c[C.ns_event] += event_ns
                late = True
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
        # kvm_mmu_reload .. vcpu->mode = IN_GUEST_MODE .. kvm_vcpu_exit_request()
        if t + p.cost_state_load >= horizon:
            self.ps = [pos, raised, t0, event_ns, True]
            return t, SUSPENDED
        t += p.cost_state_load
        c[C.ns_state_load] += p.cost_state_load
        self.mode = Mode.IN_GUEST_MODE
        self._apply_host(t, c)
        c[C.vmenter_attempts] += 1
        if self.e.hook:
            self._hook(t, TraceEvent.CANCEL if self._exit_request() else TraceEvent.ENTRY, 0,
                       self.requests)
        if self._exit_request():
            # cancel_injection: the event written for this entry goes back to "injected"
            # (vmx_cancel_injection -> __vmx_complete_interrupts raises KVM_REQ_EVENT).
            self.mode = Mode.OUTSIDE_GUEST_MODE
            c[C.canceled_vmenters] += 1
            x = self.requests
            if not x:
                c[C.cancels_task_work] += 1
            while x:                               # what each pending bit cost, and how
                b = (x & -x).bit_length() - 1
                x &= x - 1
                c[(CANCEL_BACKEDGE if raised >> b & 1 else CANCEL_ASYNC) + b] += 1
            t += p.cost_cancel
            c[C.ns_cancel] += p.cost_cancel
            if self.entry_event != Entry.NONE or self.req_immediate_exit:
                self.requests |= 1 << EVENT_BIT
            self.entry_event = Entry.NONE
            return self._vcpu_run_tail(t, c), CANCELLED
        if self.req_immediate_exit:                # raised after the late check
            self.requests |= 1 << EVENT_BIT
        self.immediate_exit = self.req_immediate_exit
        t += p.cost_vmenter
        c[C.ns_vmenter] += p.cost_vmenter
        c[C.vmenters] += 1
        self._enter(t, c)
        return t, ENTERED

    def _enter(self, t, c):
        """The guest runs from t: handlers the last VM-exit interrupted resume (their times
        are guest time); the written event is delivered (its handler starts), then what the
        CPU delivers by itself; the guest's next own exit is drawn."""
        paused = t - self.exit_t
        if self.nmi_blocked:
            self.nmi_end += paused
            if self.op_at != NEVER:
                self.op_at += paused
        if self.irq_blocked:
            self.irq_end += paused
        if self.entry_event == Entry.NMI:
            c[C.nmis_injected] += 1
            self.nmi_injected = False
            self._nmi_start(t, c)
        elif self.entry_event == Entry.IRQ:
            c[C.irqs_injected] += 1
            self.irq_injected = False
            self.irq_blocked, self.irq_end = True, t + self.p.irq_handler_ns
        self.entry_event = Entry.NONE
        self._hardware_deliver(t, c)
        if self.p.guest_exit_mean_ns:
            self.guest_exit_at = _after(t, self.exit_gen.standard_exponential()
                                        * self.p.guest_exit_mean_ns)
        self.entry_t = self.guest_since = t

    def _vcpu_run_tail(self, t, c):
        """vcpu_run() after vcpu_enter_guest() returned 1: clear KVM_REQ_UNBLOCK, inject the
        LAPIC timer's interrupt (kvm_inject_pending_timer_irqs), handle task work
        (xfer_to_guest_mode_handle_work). Returns when the next pass can start."""
        self.requests &= ~(1 << UNBLOCK_BIT)
        if self.timer_pending:
            self.timer_pending = False
            self._accept_irq(c)
        if self.xfer:
            self.xfer = False
            c[C.task_work] += 1
            c[C.ns_task_work] += self.p.cost_task_work
            t += self.p.cost_task_work
        return t

    def _runnable(self):
        """kvm_vcpu_check_block: kvm_vcpu_has_events (an interrupt IF allows, an NMI, an SMI,
        KVM_REQ_PMI since 73554b29bd70), KVM_REQ_UNBLOCK, the timer, a signal."""
        r = self.requests
        return bool((self.irq_pending and not self.if_off) or self.nmi_pending
                    or self.vnmi_pending or self.smi_pending
                    or r >> NMI_BIT & 1 or r >> SMI_BIT & 1 or r >> UNBLOCK_BIT & 1
                    or (r >> PMI_BIT & 1 and not self.p.pmi_irq_work)
                    or self.timer_pending)

    def _halted_work(self, c):
        """Task work while blocked: vcpu_block() returns to vcpu_run(), which handles it
        and blocks again (the vCPU stays halted). Returns the time it took."""
        if not self.xfer:
            return 0
        self.xfer = False
        c[C.task_work] += 1
        c[C.ns_task_work] += self.p.cost_task_work
        return self.p.cost_task_work

    def _exit_reason(self, t):
        """Why the guest exits at t (VMX exit-reason names), for trace hooks."""
        if self.immediate_exit:
            return ExitReason.PREEMPTION_TIMER
        if self._next_kick() <= t or self.mode == Mode.EXITING_GUEST_MODE:
            return ExitReason.EXTERNAL_INTERRUPT
        if self.hlt_due:
            return ExitReason.HLT
        for s in self.guest:
            if not self._event_exits(s):
                continue
            # an overflow exits when its host NMI lands, pmi_skid later
            skid = self.p.pmi_skid_ns if s.kind == Src.PMI else 0
            if max(s.next_t, self.entry_t) <= t - skid:
                return {Src.PMI: ExitReason.EXCEPTION_NMI, Src.EMUL_PMI: ExitReason.EPT_MISCONFIG,
                        Src.TIMER: ExitReason.PREEMPTION_TIMER,
                        Src.IPI_SELF: ExitReason.ICR_WRITE, Src.IPI: ExitReason.ICR_WRITE,
                        Src.IPI_NMI: ExitReason.ICR_WRITE}.get(s.kind, ExitReason.GUEST)
        if self.guest_exit_at <= t:
            return ExitReason.GUEST
        if self.nmi_blocked and self.op_next < self.op_n:
            return ExitReason.MSR_WRITE
        if self.nmi_blocked and self.nmi_end <= t:
            return ExitReason.NMI_WINDOW if self.nmi_window else ExitReason.IRET
        if self.irq_window:
            return ExitReason.INTERRUPT_WINDOW
        return ExitReason.NMI_WINDOW if self.nmi_window else ExitReason.MSR_WRITE

    def _exit(self, t, c):
        """A VM-exit at t and its handling. Returns (time, PASS | REENTERED | HALTED)."""
        reason = self._exit_reason(t) if self.e.hook else 0
        # A kick, or req_immediate_exit, makes this exit a full one (and interrupts a HLT
        # the guest had not reached).
        self.exit_fast = False
        self.exit_slow = (self.mode == Mode.EXITING_GUEST_MODE or self._next_kick() <= t
                          or self.immediate_exit)
        self.exit_t = t
        self.mode = Mode.OUTSIDE_GUEST_MODE
        c[C.vmexits] += 1
        if self.immediate_exit:
            c[C.immediate_exits] += 1
            self.immediate_exit = False
        self._apply_guest(t, c)
        self._apply_host(t, c, in_guest=True)
        if self.e.hook:
            self._hook(t, TraceEvent.EXIT, reason, self.requests)
        c[C.ns_vmexit] += self.p.cost_vmexit
        t += self.p.cost_vmexit
        halt = self.hlt_exit
        if halt:                                   # kvm_emulate_halt
            self.hlt_exit = False
            c[C.halt_exits] += 1
        if self.exit_fast and not self.exit_slow and (not halt or self._runnable()) \
                and not self._exit_request():
            # EXIT_FASTPATH_REENTER_GUEST: back in without a pass (kvm_vcpu_exit_request
            # guards it; a request ends the loop without a cancel).
            c[C.fastpath_exits] += 1
            c[C.vmenter_attempts] += 1
            c[C.vmenters] += 1
            c[C.ns_vmenter] += self.p.cost_vmenter
            t += self.p.cost_vmenter
            self.mode = Mode.IN_GUEST_MODE
            self._enter(t, c)
            return t, REENTERED
        t = self._vcpu_run_tail(t, c)
        return t, HALTED if halt else PASS

    def _passes(self, until):
        """Passes (vcpu_run's loop) from pass_at until a VM-Enter completes: True; or until
        `until` comes first, as it does while every entry keeps being cancelled: False."""
        t = self.pass_at
        # A coupled run stops every pass at `until`: an IPI may still arrive after it.
        horizon = until if self.p.coupled else NEVER
        while True:
            until = self._poll(t, until)
            if t >= until:
                break
            # the counts of a pass go to the interval it started in
            t, outcome = self._pass(t, self._row(self.ps[2] if self.ps else t), horizon)
            if outcome == ENTERED:
                self.in_host = False
                return True, until
            if outcome == SUSPENDED:
                break
            if self.requests & self.p.unconsumable:
                self.e.stop = Stop.UNCONSUMABLE
                until = t
        self.pass_at = t
        return False, until

    def _next_hv_timer(self):
        """A guest timer on the VMX preemption timer: while blocked, a host hrtimer."""
        return min((s.next_t for s in self.guest if s.kind == Src.TIMER), default=NEVER)

    def _blocked(self, until):
        """After HLT: kvm_vcpu_halt -> kvm_vcpu_check_block with what has arrived by then
        (runnable: the next pass at once); else blocked in kvm_vcpu_block(), where host
        arrivals may wake it. Returns until, or None once it is runnable again (the next
        pass is then due at pass_at)."""
        if not self.halt_checked:
            t = self.halt_since
            until = self._poll(t, until)
            if t >= until:
                return until
            c = self._row(t)
            self._apply_host(t, c)
            self.halt_checked = True
            self.halt_since += self._halted_work(c)
            if self._runnable():
                self.halted = False
                self.pass_at, self.in_host = self.halt_since, True
                return None
            if self.e.hook:
                self._hook(t, TraceEvent.HALT, 1)
        while True:
            # (a timer due while the HLT exit was handled fires as the block starts)
            t = max(min(self._next_host(), self._next_hv_timer()), self.halt_since)
            until = self._poll(t, until)
            if t >= until:
                self._add_span(C.ns_halted, self.halt_since, until)
                self.halt_since = max(self.halt_since, until)
                return until
            self._add_span(C.ns_halted, self.halt_since, t)
            self.halt_since = t
            c = self._row(t)
            self._apply_host(t, c)
            for s in self.guest:
                if s.kind == Src.TIMER and s.next_t <= t:   # kvm_lapic_switch_to_sw_timer
                    s.advance(t)
                    self._arrive(Src.TIMER, 0, 1, c, t)
            self.halt_since += self._halted_work(c)
            if self._runnable():
                self.halted = False
                if self.e.hook:
                    self._hook(t, TraceEvent.HALT, 0)
                self.pass_at = self._vcpu_run_tail(self.halt_since, c)
                self.in_host = True
                return None

    def run(self, until):
        if until <= self.now:                        # stopped past it by an interrupted run
            return
        while True:
            if self.in_host:
                entered, until = self._passes(until)
                if not entered:
                    self.now = until
                    return
            if self.halted:
                stopped = self._blocked(until)
                if stopped is not None:
                    self.now = stopped
                    return
                continue
            tk = self._next_kick()                   # a kick: IPI -> VM-exit
            if self.mode == Mode.EXITING_GUEST_MODE:
                tk = min(tk, self.now)               # kicked between runs
            tk = max(tk, self.guest_since)
            tp = max(self._next_posted(), self.guest_since)
            tg, exits = self._next_guest_event()
            t = min(tk, tp, tg)
            if t >= until:
                self._add_guest_time(until)
                self.now = until
                return
            self._add_guest_time(t)
            if t == tk or (t == tg and exits):
                t_next, outcome = self._exit(t, self._row(t))
                if outcome == PASS:
                    self.pass_at, self.in_host = t_next, True
                elif outcome == HALTED:
                    self.halted, self.halt_since, self.halt_checked = True, t_next, False
            else:
                self._apply_in_guest(t, self._row(t))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("counts", None)             # a view of the Simulation's window
        return state

    def next_event(self):
        """When this vCPU next does something of its own (>= now); NEVER if never."""
        if self.in_host:
            return max(self.pass_at, self.now)
        if self.halted:
            if not self.halt_checked:
                return max(self.halt_since, self.now)
            return max(min(self._next_host(), self._next_hv_timer()), self.halt_since,
                       self.now)
        tk = self.now if self.mode == Mode.EXITING_GUEST_MODE else self._next_kick()
        return max(min(tk, self._next_posted(), self._next_guest_event()[0]),
                   self.guest_since, self.now)

    @property
    def pass_since(self):
        return self.ps[2] if self.ps else self.now

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
        self.ipi_seq = 0                      # orders IPIs that arrive at one instant
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
        if self.p.coupled:
            self._run_coupled(until_ns)
        else:
            for v in self.vcpus:
                v.run(until_ns)
                if self.stop != Stop.DONE:
                    break
        self._stop_event = None
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        return self.stop

    def _run_coupled(self, until):
        """vCPUs that send each other IPIs, in one time order: conservative lookahead. A
        vCPU may run to the earliest time another can still send plus cost_ipi: nothing can
        then reach it in its past. Each round moves the earliest sender past its send."""
        while True:
            sends = [v._next_send() for v in self.vcpus]
            first = min(range(len(sends)), key=sends.__getitem__)
            second = min((x for i, x in enumerate(sends) if i != first), default=NEVER)
            done = True
            for v in self.vcpus:
                other = second if v.index == first else sends[first]
                bound = until if other == NEVER else min(until, other + self.p.cost_ipi)
                if bound > v.now:
                    v.run(bound)
                    if self.stop != Stop.DONE:
                        return
                done = done and v.now >= until
            if done:
                return

    def make_request(self, vcpu: int, bit: int, kick: bool) -> bool:
        """Another CPU posts request `bit` (kvm_make_request) and, with kick, kicks the vCPU
        (kvm_vcpu_kick): in guest mode it exits at `now`. Returns whether a kick was sent."""
        v = self._vcpu(vcpu)
        if not 0 <= bit < _spec.N_BITS:
            raise ValueError(f"bit {bit} is outside 0..63")
        v.requests |= 1 << bit
        return bool(kick and v._kick())

    def inject(self, vcpu: int, kind: int, count: int = 1) -> bool:
        """Another CPU injects `count` NMIs or fixed IRQs (kvm_inject_nmi, kvm_apic_set_irq),
        or the host takes the NMI of a guest counter overflow (kvm_perf_overflow), at the
        vCPU's `now`. Returns whether the vCPU was kicked out of guest mode."""
        v = self._vcpu(vcpu)
        at = max(v.now, v.t_hook)                  # from a trace hook: at its event
        if kind == Src.NMI:
            v.ext_nmi += count
            v.ext_nmi_at = min(v.ext_nmi_at, at)
        elif kind == Src.IRQ:
            v.ext_irq += count
            v.ext_irq_at = min(v.ext_irq_at, at)
        elif kind == Src.PMI:
            v.pmi_nmi_n += count
            v.pmi_nmi_at = min(v.pmi_nmi_at, at)
        else:
            raise ValueError(f"kind {kind} cannot be injected")
        return False if kind == Src.IRQ and self.p.apicv else v._kick()

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

    def next_event(self, vcpu: int) -> int:
        """When the vCPU next does something of its own (ns, >= its now); NEVER if never."""
        return self._vcpu(vcpu).next_event()

    def _vcpu(self, vcpu: int) -> _VCpu:
        if not 0 <= vcpu < self.n_vcpus:
            raise ValueError(f"vcpu {vcpu} is outside 0..{self.n_vcpus - 1}")
        return self.vcpus[vcpu]
