"""The kvmsim model written as an ordinary SimPy 4 simulation.

Same rules as kvmsim/_reference.py (the specification), expressed the way SimPy users write
models: one `simpy.Environment`, one process per vCPU running KVM's run loop
(VM-exit -> vcpu_enter_guest() passes -> VM-Enter -> guest) with `yield env.timeout(...)`
for every phase cost and for guest run time, and one generator process per arrival source.
An arrival changes the vCPU's state at its time and, when the vCPU has to look again, wakes
it (`proc.interrupt()`): a kick from another CPU while the guest runs (the IPI VM-exit), a
posted interrupt the CPU delivers to a running guest, a guest event, a request posted while
the vCPU sleeps in its check walk.

Time is integer nanoseconds. Random numbers come from one numpy Generator seeded with
config.seed, so counts agree with kvmsim statistically, not bit for bit.

What it models: the check walk with arrivals landing among the checks and the late check
(kvm_vcpu_exit_request) that cancels the entry; APICv / AVIC posted interrupts or injected
ones with their windows; NMIs and process_nmi's limit; PMIs as NMIs, fixed interrupts or
SMIs with LVTPC auto-masking; the guest's perf NMI handler as its intercepted PMU accesses
(Intel: 8 per PMI, 2 of them global-control writes that raise KVM_REQ_PMU, or reprogram at
once before 68fb4757e867: the pmu_reprogram switch); host PMI skid (an overflow's host NMI
lands after the VM-exit, in host context, when the guest exits first; one still in flight
makes no exit slow); guest handler times in guest time; the guest's LAPIC timer on the VMX
preemption timer (a fastpath exit that re-enters without a pass) or on a host hrtimer;
vcpu_run's tail; a request to every vCPU at once (request-all:NAME: one process posts to
all). What it refuses (NotImplementedError): STI;HLT, self-IPIs, task work and IPIs between
vCPUs (hlt, ipi:self, task-work, ipi:N|any|all and ipi-nmi:... sources), and AMD vNMI.

The check walk: check k of a pass starts at `origin + k * cost_check` and sees a request
posted at or before that time; a request posted later than its check stays pending and
cancels the entry at the late check. Instead of one timeout per check, the vCPU sleeps until
the next check whose bit is set; a request posted meanwhile wakes it and the walk resumes
from the first check that has not started.
"""

from __future__ import annotations

import types

import numpy as np
import simpy

from kvmsim import _spec
from kvmsim._limits import to_ns
from kvmsim._plan import SHARED, Plan, SourcePlan, build
from kvmsim._spec import Dist, Handler, Lvtpc, Src
from kvmsim._workload import ipi_target

EVENT_BIT, NMI_BIT, PMU_BIT, PMI_BIT, SMI_BIT = (_spec.SPECIAL_BITS[n] for n in
                                                 ("EVENT", "NMI", "PMU", "PMI", "SMI"))
UNBLOCK_BIT = _spec.UNBLOCK_BIT
NO_EVENT, INJECT_NMI, INJECT_IRQ = "none", "nmi", "irq"
NEVER = float("inf")
REFUSED = ("hlt", "ipi:self", "task-work")          # and IPIs to other vCPUs (ipi_target)

# Where the vCPU is: handling a VM-exit or in a pass of vcpu_enter_guest() (OUTSIDE), from
# the late check to the guest (ENTERING: vcpu->mode is IN_GUEST_MODE, a kick makes the entry
# exit at once), or running the guest.
OUTSIDE, ENTERING, GUEST = "outside", "entering", "guest"


class VCpu:
    def __init__(self, env: simpy.Environment, plan: Plan, index: int,
                 rng: np.random.Generator, counts: dict[str, int]):
        self.env, self.rng, self.counts = env, rng, counts
        self.p = p = types.SimpleNamespace(**plan.params)
        self.order = p.order[:p.n_checks]
        self.rank = {b: r for r, b in enumerate(self.order)}
        self.phase = OUTSIDE
        self.waiting = False                      # in a wait a wake() may interrupt
        self.kicked = False                       # vcpu->mode == EXITING_GUEST_MODE
        self.requests = 0                         # vcpu->requests
        self.nmi_queued = self.nmi_pending = 0
        self.nmi_injected = self.irq_injected = False
        self.irq_pending = self.smi_pending = False
        self.entry_event = NO_EVENT
        self.nmi_window = self.irq_window = False
        self.req_immediate_exit = self.immediate_exit = False
        self.lvtpc_masked = self.pmu_reprogram = self.emul_overflow = False
        self.pmi_status = False                   # GLOBAL_STATUS shows an overflow
        self.nmi_credit = 0                       # NMI IPIs a guest handler will claim
        self.last_pmi_t = -NEVER
        self.timer_pending = False                # apic->lapic_timer.pending
        # The guest's handlers, in guest time: deadlines move on by the time spent outside.
        self.nmi_end = self.irq_end = NEVER       # NMI / IRQ handler running until then
        self.ops = ()                             # the perf NMI handler's accesses left
        self.op_at = NEVER                        # ... the next one
        self.op_gap = 0
        self.exit_at = NEVER                      # the guest's own next VM-exit
        self.exit_t = 0                           # the last VM-exit
        self.guest_events: list[int] = []         # guest-side events for the next VM-exit
        # Guest counter overflows: each is followed, a skid later, by the host's NMI. Those of
        # this guest run, by when their NMI lands; those due while the vCPU was not in the
        # guest (the counters count guest time: they overflow at the next entry); NMIs the
        # guest's VM-exit left in flight (one NMI, for that many overflows, lands then).
        self.landings: list[int] = []
        self.overflows_in_host = 0
        self.host_nmi_at, self.host_nmi_n = NEVER, 0
        self.host_nmis = 0                        # NMIs in flight so far: which is pending

        self.proc = env.process(self.run())
        for sp in plan.sources:
            if sp.vcpu == index and sp.spawn_key[0] != SHARED:   # request-all: SimPyRun's
                env.process(self.source(sp))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    @property
    def nmi_blocked(self) -> bool:
        return self.nmi_end != NEVER

    @property
    def irq_blocked(self) -> bool:
        return self.irq_end != NEVER

    def allowed(self) -> bool:
        """interrupt_allowed: no handler blocks interrupts."""
        return not (self.nmi_blocked or self.irq_blocked)

    def wake(self) -> None:
        """Interrupt the vCPU's current wait (guest run or check walk), at most once."""
        if self.waiting:
            self.waiting = False
            self.proc.interrupt()

    def wait(self, delay):
        """A wait that wake() may cut short; True if it ran out."""
        self.waiting = True
        try:
            yield self.env.event() if delay == NEVER else self.env.timeout(delay)
        except simpy.Interrupt:
            return False
        self.waiting = False
        return True

    # --- arrival sources ------------------------------------------------------------------
    def gaps(self, sp: SourcePlan):
        """Inter-arrival times (ns) of one source."""
        if sp.dist == Dist.POISSON:
            while True:
                gap = self.rng.exponential(sp.mean_ns)
                if gap >= _spec.MAX_GAP_NS:
                    return
                yield int(gap)
        elif sp.dist == Dist.PERIODIC:
            yield sp.start_ns + sp.period_ns
            while True:
                yield sp.period_ns
        else:
            last = 0
            for t in sp.times_ns:
                yield int(t) - last
                last = int(t)

    def source(self, sp: SourcePlan):
        for gap in self.gaps(sp):
            yield self.env.timeout(gap)
            if sp.guest:
                self.guest_event(sp.kind)
            else:
                self.host_arrival(sp)

    def host_arrival(self, sp: SourcePlan) -> None:
        """Another CPU: kvm_make_request + kvm_vcpu_kick, kvm_inject_nmi, an interrupt."""
        if sp.kind == Src.NMI:                    # kvm_inject_nmi, from an NMI IPI
            self.nmi_queued += 1
            self.count("nmis_queued")
            self.nmi_credit += 1                  # the guest's handler for it claims it
            self.requests |= 1 << NMI_BIT
            self.kick()
        elif sp.kind == Src.IRQ:                  # __apic_accept_irq
            self.accept_irq()
        elif sp.kind == Src.TIMER:                # a host hrtimer: apic_timer_expired
            self.timer_pending = True
            self.requests |= 1 << UNBLOCK_BIT
            self.kick()
        elif sp.kind == Src.REQUEST:
            self.requests |= 1 << sp.bit
            self.kick()
        else:                                     # request:noop, a random no-op request
            self.requests |= 1 << int(self.p.noop_bits[int(self.rng.random() * self.p.n_noop)])
            self.kick()
        self.wake()

    def kick(self) -> None:
        """kvm_vcpu_kick: IN_GUEST_MODE -> EXITING_GUEST_MODE (the IPI forces a VM-exit)."""
        if self.phase != OUTSIDE:
            self.kicked = True

    def guest_event(self, kind: int) -> None:
        """Something the guest does: acts while the guest runs, else at its next entry."""
        if kind == Src.PMI:                       # a guest counter overflows
            if self.phase == GUEST:
                self.landings.append(self.env.now + self.p.pmi_skid_ns)
            else:
                self.overflows_in_host += 1
        else:
            self.guest_events.append(kind)
        if self.phase == GUEST:
            self.wake()

    def nmis_in_flight(self, n: int, at: int) -> None:
        """The guest exited before the host's NMI for n overflows: it lands at `at`, together
        with one still in flight (the CPU holds one NMI pending)."""
        if self.host_nmi_n == 0:
            self.host_nmis += 1
            self.env.process(self.host_nmi(self.host_nmis, at))
        self.host_nmi_n += n
        self.host_nmi_at = min(self.host_nmi_at, at)

    def host_nmi(self, which: int, at: int):
        """The NMI lands in host context; if the vCPU is (about to be) in the guest, it is a
        VM-exit, which takes it."""
        yield self.env.timeout(at - self.env.now)
        if which != self.host_nmis or not self.host_nmi_n:
            return                                # a VM-exit took it already
        if self.phase == OUTSIDE:
            self.take_host_nmi(in_guest=False)
        else:
            self.kicked = True
        self.wake()

    def take_host_nmi(self, in_guest: bool) -> None:
        """kvm_perf_overflow in NMI context, for each overflow the NMI stands for."""
        n, self.host_nmi_n, self.host_nmi_at = self.host_nmi_n, 0, NEVER
        for _ in range(n):
            if in_guest or not self.p.pmi_irq_work:
                self.overflow()                   # KVM_REQ_PMI
            else:
                self.pmi_irq_work()               # kvm_pmi_trigger_fn

    # --- the run loop ---------------------------------------------------------------------
    def run(self):
        yield from self.enter_guest()             # KVM_RUN: the first entry has no exit
        while True:
            yield from self.run_guest()
            fast = self.vm_exit()
            if fast:                              # EXIT_FASTPATH_REENTER_GUEST
                self.phase = ENTERING
                yield self.env.timeout(self.p.cost_vmexit + self.p.cost_vmenter)
                self.count("fastpath_exits")
                self.count("vmenter_attempts")
                self.count("vmenters")
                self.enter()
                continue
            self.vcpu_run_tail()
            yield self.env.timeout(self.p.cost_vmexit)
            yield from self.enter_guest()

    def enter_guest(self):
        """vcpu_enter_guest() passes until one completes a VM-Enter."""
        p = self.p
        while True:
            self.req_immediate_exit = False
            yield from self.check_requests()
            yield self.env.timeout(p.cost_state_load)
            self.phase = ENTERING                 # vcpu->mode = IN_GUEST_MODE
            self.count("vmenter_attempts")        # kvm_vcpu_exit_request()
            if self.requests or self.kicked:      # cancel_injection
                self.phase, self.kicked = OUTSIDE, False
                self.count("canceled_vmenters")
                if self.entry_event != NO_EVENT or self.req_immediate_exit:
                    self.requests |= 1 << EVENT_BIT
                self.entry_event = NO_EVENT
                self.vcpu_run_tail()
                yield self.env.timeout(p.cost_cancel)
                continue
            if self.req_immediate_exit:
                self.requests |= 1 << EVENT_BIT
            self.immediate_exit = self.req_immediate_exit
            yield self.env.timeout(p.cost_vmenter)
            self.count("vmenters")
            self.enter()
            return

    def vcpu_run_tail(self) -> None:
        """vcpu_run() after vcpu_enter_guest(): clear KVM_REQ_UNBLOCK, inject the timer's
        interrupt (kvm_inject_pending_timer_irqs)."""
        self.requests &= ~(1 << UNBLOCK_BIT)
        if self.timer_pending:
            self.timer_pending = False
            self.accept_irq()

    def enter(self) -> None:
        """The guest runs: interrupted handlers resume, the written event is delivered, then
        what the CPU delivers by itself; the guest's next own exit is drawn."""
        p, now = self.p, self.env.now
        paused = now - self.exit_t                # handler times are guest time
        self.nmi_end += paused
        self.op_at += paused
        self.irq_end += paused
        if self.entry_event == INJECT_NMI:
            self.count("nmis_injected")
            self.nmi_injected = False
            self.nmi_start()
        elif self.entry_event == INJECT_IRQ:
            self.count("irqs_injected")
            self.irq_injected = False
            self.irq_end = now + p.irq_handler_ns
        self.entry_event = NO_EVENT
        self.hardware_deliver()
        if p.guest_exit_mean_ns:
            self.exit_at = now + int(self.rng.exponential(p.guest_exit_mean_ns))
        self.phase = GUEST
        self.landings += [now + p.pmi_skid_ns] * self.overflows_in_host
        self.overflows_in_host = 0

    def check_requests(self):
        """The kvm_check_request() walk of one pass, EVENT last."""
        env, c, n = self.env, self.p.cost_check, len(self.order)
        pos = 0 if self.requests else n - 1      # if (kvm_request_pending(vcpu)) { ... }
        origin = env.now - pos * c                # check k starts at origin + k * c
        while True:
            r = self.next_check(pos)
            if not (yield from self.wait(origin + r * c - env.now)):
                if c:                             # a request was posted mid-walk
                    pos = max(pos, -(-(env.now - origin) // c))
                continue
            if r == n:
                return
            bit = self.order[r]
            self.requests &= ~(1 << bit)          # kvm_check_request: clear, then handle
            self.handle(bit)
            yield env.timeout(c + self.p.handler_ns[bit])
            pos = r + 1
            origin = env.now - pos * c

    def next_check(self, pos: int) -> int:
        """Position of the first check at or after pos whose bit is set (len(order): none)."""
        ranks = [self.rank[b] for b in self.rank if self.requests >> b & 1]
        return min((r for r in ranks if r >= pos), default=len(self.order))

    # --- the guest ------------------------------------------------------------------------
    def run_guest(self):
        """The guest runs until something makes it exit; handler ends that need no exit and
        the CPU's own deliveries happen on the way."""
        while True:
            now = self.env.now
            if self.exits_now(now):
                return
            if self.nmi_end <= now and not self.ops or self.irq_end <= now:
                self.end_handlers(now)            # IRET / EOI inside the guest
                self.hardware_deliver()
                continue
            if self.irq_pending and self.p.apicv and self.allowed():
                self.hardware_deliver()           # a posted interrupt arrived
                continue
            handler = self.op_at if self.ops else self.nmi_end
            landing = self.landings[0] if self.landings else NEVER
            deadline = min(self.exit_at, handler, self.irq_end, landing)
            yield from self.wait(deadline - now)

    def exits_now(self, now: int) -> bool:
        p = self.p
        return bool(
            self.kicked or self.guest_events or self.immediate_exit or self.exit_at <= now
            or (self.landings and self.landings[0] <= now)
            or (self.nmi_window and not self.nmi_blocked)
            or (self.irq_window and self.allowed())
            or self.op_at <= now
            or (self.nmi_end <= now and not self.ops and (
                p.iret_exits or self.nmi_window or (self.irq_window and not self.irq_blocked)))
            or (self.irq_end <= now and (
                (self.irq_window and not self.nmi_blocked)
                or (p.automask and p.lvtpc == Lvtpc.FIXED and self.lvtpc_masked))))

    def vm_exit(self) -> bool:
        """A VM-exit now: what the guest did up to it reaches KVM. True if the fastpath
        handles it and re-enters the guest without a pass."""
        p, now = self.p, self.env.now
        self.count("vmexits")
        slow = self.kicked or self.immediate_exit or self.host_nmi_at <= now
        fast = False
        self.phase, self.kicked, self.exit_t = OUTSIDE, False, now
        if self.immediate_exit:
            self.count("immediate_exits")
            self.immediate_exit = False
        if self.op_at <= now:                     # the perf handler's PMU access
            self.pmu_access()
            slow = True
        if self.end_handlers(now):
            slow = True
        if self.landings:                         # overflows during this run
            landed = sum(1 for at in self.landings if at <= now)
            for _ in range(landed):               # their NMI exits: kvm_perf_overflow
                self.overflow()
                slow = True                       # (one still in flight makes no exit slow)
            if landed < len(self.landings):
                self.nmis_in_flight(len(self.landings) - landed, self.landings[landed])
            self.landings = []
        if self.host_nmi_at <= now:               # an NMI in flight lands with this exit
            self.take_host_nmi(in_guest=True)
        for kind in self.guest_events:
            if kind == Src.EMUL_PMI:            # kvm_pmu_trigger_event
                if p.pmu_request:                 # deferred reprogramming (68fb4757e867)
                    self.pmu_reprogram = self.emul_overflow = True
                    self.requests |= 1 << PMU_BIT
                else:                             # reprogrammed at once: it overflows
                    self.perf_overflow()
                slow = True
            elif kind == Src.TIMER:               # handle_fastpath_preemption_timer
                if p.apicv:
                    self.accept_irq()
                else:
                    self.timer_pending = True
                    self.requests |= 1 << UNBLOCK_BIT
                fast = True
            else:                                 # the guest's own exit (exit sources)
                slow = True
        self.guest_events.clear()
        return fast and not slow and not self.requests

    def end_handlers(self, now: int) -> bool:
        """Guest handlers whose time is up: IRET unblocks NMIs (SVM intercepts it); an open
        window is satisfied and raises KVM_REQ_EVENT. True if one ended."""
        p, ended = self.p, False
        if self.nmi_end <= now and not self.ops:
            self.nmi_end, ended = NEVER, True
            if p.iret_exits:
                self.nmi_window = False
                self.count("nmi_window_exits")
                self.requests |= 1 << EVENT_BIT
        if self.irq_end <= now:
            self.irq_end, ended = NEVER, True
            if p.lvtpc == Lvtpc.FIXED:
                self.lvtpc_masked = False
        if self.nmi_window and not self.nmi_blocked:
            self.nmi_window = False
            self.count("nmi_window_exits")
            self.requests |= 1 << EVENT_BIT
            ended = True
        if self.irq_window and self.allowed():
            self.irq_window = False
            self.count("irq_window_exits")
            self.requests |= 1 << EVENT_BIT
            ended = True
        return ended

    def nmi_start(self) -> None:
        """default_do_nmi: perf's handler finds the overflow (a PMI), another claims an NMI
        IPI, else it is unknown; perf's handler makes its PMU accesses."""
        p, now = self.p, self.env.now
        self.nmi_end = now + p.nmi_handler_ns
        pmi, self.pmi_status = self.pmi_status, False
        claimed = pmi or self.nmi_credit > 0 or now - self.last_pmi_t < p.amd_nmi_window_ns
        if self.nmi_credit:
            self.nmi_credit -= 1
        if pmi:
            self.last_pmi_t = now
        if not claimed:
            self.count("nmis_unknown")
        seq = 0 if pmi else 1
        n = p.pmi_ops_n[seq]
        self.ops = [(p.pmi_ops_pmu[seq] >> i & 1, p.pmi_ops_lvtpc[seq] == i) for i in range(n)]
        self.op_gap = p.nmi_handler_ns // (n + 1)
        self.op_at = now + self.op_gap if n else NEVER

    def pmu_access(self) -> None:
        """One intercepted access of the perf NMI handler (reprogram_counters, LVTPC)."""
        reprogram, lvtpc = self.ops.pop(0)
        if reprogram and self.p.pmu_request:      # (synchronous before 68fb4757e867)
            self.pmu_reprogram = True
            self.requests |= 1 << PMU_BIT
        if lvtpc:
            self.lvtpc_masked = False
        self.op_at = self.op_at + self.op_gap if self.ops else NEVER

    def hardware_deliver(self) -> None:
        """APICv virtual-interrupt delivery of a posted interrupt the guest allows."""
        if self.p.apicv and self.irq_pending and self.allowed():
            self.irq_pending = False
            self.count("irqs_injected")
            self.irq_end = self.env.now + self.p.irq_handler_ns

    # --- KVM's side -----------------------------------------------------------------------
    def overflow(self) -> None:
        """kvm_perf_overflow: ignored while the counter is to be reprogrammed."""
        if self.pmu_reprogram:
            self.count("pmis_coalesced")
        else:
            self.pmu_reprogram = True
            self.perf_overflow()
            self.requests |= 1 << PMU_BIT

    def pmi_irq_work(self) -> None:
        """Before 73554b29bd70, outside guest mode: irq_work delivers the PMI at once."""
        if self.pmu_reprogram:
            self.count("pmis_coalesced")
        else:
            self.pmu_reprogram = self.pmi_status = True
            self.requests |= 1 << PMU_BIT
            self.count("pmis_irq_work")
            self.deliver_pmi()

    def perf_overflow(self) -> None:
        self.pmi_status = True
        if self.requests >> PMI_BIT & 1:
            self.count("pmis_coalesced")
        else:
            self.count("pmis_raised")
            self.requests |= 1 << PMI_BIT

    def accept_irq(self) -> None:
        """The IRR (PIR with APICv) bit; without APICv KVM_REQ_EVENT and a kick."""
        self.count("irqs_raised")
        if self.irq_pending:
            self.count("irqs_coalesced")
        self.irq_pending = True
        if not self.p.apicv:
            self.requests |= 1 << EVENT_BIT
            self.kick()

    def handle(self, bit: int) -> None:
        h = int(self.p.handler[bit])
        if h == Handler.NOOP:
            self.requests |= int(self.p.raises[bit])
        elif h == Handler.NMI:
            self.process_nmi()
        elif h == Handler.PMU:                  # kvm_pmu_handle_event
            self.pmu_reprogram = False
            if self.emul_overflow:
                self.emul_overflow = False
                self.perf_overflow()
        elif h == Handler.PMI:
            self.deliver_pmi()
        elif h == Handler.SMI:                  # process_smi
            self.smi_pending = True
            self.requests |= 1 << EVENT_BIT
        else:
            self.inject_events()

    def process_nmi(self) -> None:
        limit = 1 if (self.nmi_blocked or self.nmi_injected) else 2
        self.nmi_pending += self.nmi_queued
        self.nmi_queued = 0
        if self.nmi_pending > limit:
            self.count("nmis_dropped", self.nmi_pending - limit)
            self.nmi_pending = limit
        if self.nmi_pending or self.p.nmi_event_always:
            self.requests |= 1 << EVENT_BIT

    def deliver_pmi(self) -> None:
        """kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(APIC_LVTPC)."""
        p = self.p
        if p.lvtpc == Lvtpc.MASKED or self.lvtpc_masked:
            self.count("pmis_dropped")
            return
        self.count("pmis_delivered")
        if p.lvtpc == Lvtpc.NMI:                          # NMI delivery mode: kvm_inject_nmi
            self.nmi_queued += 1
            self.count("nmis_queued")
            self.requests |= 1 << NMI_BIT
        elif p.lvtpc == Lvtpc.FIXED:
            self.accept_irq()
        else:
            self.requests |= 1 << SMI_BIT
        if p.automask:                            # LVTPC auto-mask (the profile's rule)
            self.lvtpc_masked = True

    def inject_events(self) -> None:
        """kvm_check_and_inject_events: re-injection first, then SMI > NMI > IRQ; posted
        interrupts are the CPU's to deliver."""
        can_inject = True
        if self.nmi_injected:
            self.entry_event, can_inject = INJECT_NMI, False
        elif self.irq_injected:
            self.entry_event, can_inject = INJECT_IRQ, False
        if self.smi_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            self.smi_pending = False
            self.count("smis_injected")
            can_inject = False
        if self.nmi_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if not self.nmi_blocked:
                self.nmi_pending -= 1
                self.nmi_injected = True
                self.entry_event = INJECT_NMI
                can_inject = False
            if self.nmi_pending:
                self.nmi_window = True
        if self.irq_pending and not self.p.apicv:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if self.allowed():
                self.irq_pending = False
                self.irq_injected = True
                self.entry_event = INJECT_IRQ
            else:
                self.irq_window = True


class SimPyRun:
    """`config` for `duration` simulated seconds, set up: call it to run, then totals()."""

    def __init__(self, config, duration: float):
        plan = build(config, to_ns(duration))
        refused = sorted({s.kind for s in config.workload.sources
                          if s.kind in REFUSED or ipi_target(s.kind) is not None})
        if refused:
            raise NotImplementedError(f"the SimPy model does not model {', '.join(refused)} "
                                      "sources (STI;HLT, self-IPIs, task work, IPIs between "
                                      "vCPUs)")
        if plan.params["vnmi"]:
            raise NotImplementedError("the SimPy model does not model AMD vNMI (use "
                                      "Host(vnmi=False) or vendor intel)")
        self.env = simpy.Environment()
        rng = np.random.default_rng(config.seed)
        self.counts = dict.fromkeys((c.name for c in _spec.EVENTS), 0)
        vcpus = [VCpu(self.env, plan, i, rng, self.counts) for i in range(plan.vcpus)]
        # request-all:NAME: one stream of arrivals, each posted to every vCPU at once
        # (kvm_make_all_cpus_request); the plan has a copy of the source per vCPU.
        for sp in {sp.spawn_key: sp for sp in plan.sources if sp.spawn_key[0] == SHARED}.values():
            self.env.process(self.request_all(vcpus, sp))
        self.until = to_ns(duration)

    def request_all(self, vcpus: list[VCpu], sp: SourcePlan):
        for gap in vcpus[0].gaps(sp):
            yield self.env.timeout(gap)
            for v in vcpus:
                v.host_arrival(sp)

    def __call__(self) -> None:
        self.env.run(until=self.until)

    def totals(self) -> dict[str, int]:
        """Totals of every kvmsim event counter."""
        return self.counts


def simulate_simpy(config, duration: float) -> dict[str, int]:
    """Run `config` for `duration` simulated seconds; totals of every kvmsim event counter."""
    run = SimPyRun(config, duration)
    run()
    return run.totals()
