"""The kvmsim model written as an ordinary SimPy 4 simulation.

Same rules as kvmsim/_reference.py (the specification), expressed the way SimPy users write
models: one `simpy.Environment`, one process per vCPU running KVM's run loop
(VM-exit -> vcpu_enter_guest() passes -> VM-Enter -> guest) with `yield env.timeout(...)`
for every phase cost and for guest run time, and one generator process per arrival source
that posts its request into the vCPU's state and kicks the vCPU (`proc.interrupt()`) when
the guest is running: the IPI VM-exit.

Time is integer nanoseconds. Random numbers come from one numpy Generator seeded with
config.seed, so counts agree with kvmsim statistically, not bit for bit.

The check walk: check k of a pass starts at `origin + k * cost_check` and sees a request
posted at or before that time; a request posted later than its check stays pending and
cancels the entry at the late check (kvm_vcpu_exit_request). Instead of one timeout per
check, the vCPU sleeps until the next check whose bit is set; a request posted meanwhile
interrupts that sleep and the walk resumes from the first check that has not started.
"""

from __future__ import annotations

import numpy as np
import simpy

import types

from kvmsim import _spec
from kvmsim._limits import to_ns
from kvmsim._plan import Plan, SourcePlan, build
from kvmsim._spec import Dist, Handler, Lvtpc, Src

EVENT_BIT, NMI_BIT, PMU_BIT, PMI_BIT, SMI_BIT = (_spec.SPECIAL_BITS[n] for n in
                                                 ("EVENT", "NMI", "PMU", "PMI", "SMI"))
NO_EVENT, INJECT_NMI, INJECT_IRQ = "none", "nmi", "irq"
NEVER = float("inf")

# vcpu->mode, plus WALKING: the vCPU sleeps between two checks of the request walk.
OUTSIDE, WALKING, ENTERING, IN_GUEST, KICKED = "outside", "walking", "entering", "guest", "kicked"


class VCpu:
    def __init__(self, env: simpy.Environment, plan: Plan, index: int,
                 rng: np.random.Generator, counts: dict[str, int]):
        self.env, self.rng, self.counts = env, rng, counts
        self.p = types.SimpleNamespace(**plan.params)
        self.order = self.p.order[:self.p.n_checks]
        self.rank = {b: r for r, b in enumerate(self.order)}
        self.mode = OUTSIDE
        self.requests = 0                         # vcpu->requests
        self.nmi_queued = self.nmi_pending = 0
        self.nmi_injected = self.irq_injected = False
        self.irq_pending = self.smi_pending = False
        self.entry_event = NO_EVENT
        self.nmi_window = self.irq_window = False
        self.req_immediate_exit = self.immediate_exit = False
        self.lvtpc_masked = self.pmu_reprogram = self.emul_overflow = False
        self.nmi_end = self.irq_end = NEVER       # guest handler running until then
        self.exit_at = NEVER                      # the guest's own next VM-exit
        self.guest_arrivals: list[int] = []       # guest-side events not yet seen by KVM

        self.proc = env.process(self.run())
        for sp in plan.sources:
            if sp.vcpu == index:
                env.process(self.source(sp))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    @property
    def nmi_blocked(self) -> bool:
        return self.nmi_end != NEVER

    @property
    def irq_blocked(self) -> bool:
        return self.irq_end != NEVER

    # --- arrival sources ------------------------------------------------------------------
    def gaps(self, sp: SourcePlan):
        """Inter-arrival times (ns) of one source."""
        if sp.dist == Dist.POISSON:
            while True:
                yield int(self.rng.exponential(sp.mean_ns))
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
            if sp.kind < Src.NMI:               # counter overflow / exit in the guest
                self.guest_arrivals.append(sp.kind)
                self.kick(wake_walk=False)
                continue
            if sp.kind == Src.NMI:              # kvm_inject_nmi
                self.nmi_queued += 1
                self.count("nmis_queued")
                self.requests |= 1 << NMI_BIT
            elif sp.kind == Src.IRQ:            # __apic_accept_irq
                self.accept_irq()
            elif sp.kind == Src.REQUEST:
                self.requests |= 1 << sp.bit
            else:                                 # request:noop, a random no-op request
                self.requests |= 1 << int(self.rng.choice(self.p.noop_bits[:self.p.n_noop]))
            self.kick(wake_walk=True)

    def kick(self, wake_walk: bool) -> None:
        """kvm_vcpu_kick: IN_GUEST_MODE -> EXITING_GUEST_MODE, and the IPI forces a VM-exit.
        A kick during VM-Enter takes effect right after it. A new request also wakes a
        vCPU sleeping in its check walk."""
        if self.mode == IN_GUEST or (wake_walk and self.mode == WALKING):
            self.mode = KICKED
            self.proc.interrupt()
        elif self.mode == ENTERING:
            self.mode = KICKED

    # --- the run loop ---------------------------------------------------------------------
    def run(self):
        yield from self.enter_guest()             # KVM_RUN: the first entry has no exit
        while True:
            yield from self.run_guest()
            self.count("vmexits")
            if self.immediate_exit:
                self.count("immediate_exits")
                self.immediate_exit = False
            self.apply_guest_events()
            yield self.env.timeout(self.p.cost_vmexit)
            yield from self.enter_guest()

    def enter_guest(self):
        """vcpu_enter_guest() passes until one completes a VM-Enter."""
        p = self.p
        while True:
            self.req_immediate_exit = False
            yield from self.check_requests()
            yield self.env.timeout(p.cost_state_load)
            self.count("vmenter_attempts")        # kvm_vcpu_exit_request()
            if self.requests:                     # cancel_injection
                self.count("canceled_vmenters")
                if self.entry_event != NO_EVENT or self.req_immediate_exit:
                    self.requests |= 1 << EVENT_BIT
                self.entry_event = NO_EVENT
                yield self.env.timeout(p.cost_cancel)
                continue
            if self.req_immediate_exit:
                self.requests |= 1 << EVENT_BIT
            self.immediate_exit = self.req_immediate_exit
            self.mode = ENTERING
            yield self.env.timeout(p.cost_vmenter)
            self.count("vmenters")
            now = self.env.now
            if self.entry_event == INJECT_NMI:    # the guest's NMI handler starts
                self.count("nmis_injected")
                self.nmi_injected = False
                self.nmi_end = now + p.nmi_handler_ns
            elif self.entry_event == INJECT_IRQ:
                self.count("irqs_injected")
                self.irq_injected = False
                self.irq_end = now + p.irq_handler_ns
            self.entry_event = NO_EVENT
            if p.guest_exit_mean_ns:
                self.exit_at = now + int(self.rng.exponential(p.guest_exit_mean_ns))
            return

    def check_requests(self):
        """The kvm_check_request() walk of one pass, EVENT last."""
        env, c, n = self.env, self.p.cost_check, len(self.order)
        pos = 0 if self.requests else n - 1      # if (kvm_request_pending(vcpu)) { ... }
        origin = env.now - pos * c                # check k starts at origin + k * c
        while True:
            r = self.next_check(pos)
            self.mode = WALKING
            try:
                yield env.timeout(origin + r * c - env.now)
            except simpy.Interrupt:               # a request was posted mid-walk
                if c:
                    pos = max(pos, -(-(env.now - origin) // c))
                continue
            self.mode = OUTSIDE
            if r == n:
                return
            bit = self.order[r]
            self.requests &= ~(1 << bit)          # kvm_check_request: clear, then handle
            cost = self.p.handler_ns[bit]
            self.handle(bit)
            yield env.timeout(c + cost)
            pos = r + 1
            origin = env.now - pos * c

    def next_check(self, pos: int) -> int:
        """Position of the first check at or after pos whose bit is set (len(order): none)."""
        ranks = [self.rank[b] for b in self.rank if self.requests >> b & 1]
        return min((r for r in ranks if r >= pos), default=len(self.order))

    def run_guest(self):
        """The guest runs until it exits, or until a kick interrupts it."""
        env = self.env
        while not self.must_exit_now():
            handler_end = min(self.nmi_end, self.irq_end)
            deadline = min(self.exit_at, handler_end)
            self.mode = IN_GUEST
            if deadline == NEVER:
                wait = env.event()                # nothing but a kick ends this run
            else:
                wait = env.timeout(max(0, deadline - env.now))
            try:
                yield wait
            except simpy.Interrupt:
                break
            if self.exit_at <= handler_end:
                break                             # the guest's own VM-exit
            ending = [h for h, t in (("nmi", self.nmi_end), ("irq", self.irq_end))
                      if t == handler_end]
            if any(self.handler_end_exits(h) for h in ending):
                break                             # e.g. the LVTPC unmask write
            self.end_handlers()
        self.mode = OUTSIDE

    def must_exit_now(self) -> bool:
        return (self.mode == KICKED or bool(self.guest_arrivals) or self.immediate_exit
                or (self.nmi_window and not self.nmi_blocked)
                or (self.irq_window and not (self.nmi_blocked or self.irq_blocked)))

    # --- the guest side, seen at a VM-exit -------------------------------------------------
    def handler_end_exits(self, which: str) -> bool:
        p = self.p
        if which == "nmi":
            return (p.lvtpc == Lvtpc.NMI or not p.intel or self.nmi_window
                    or (self.irq_window and not self.irq_blocked))
        return ((self.irq_window and not self.nmi_blocked)
                or (p.intel and p.lvtpc == Lvtpc.FIXED and self.lvtpc_masked))

    def end_handlers(self) -> None:
        """Guest handlers whose time is up: IRET unblocks NMIs, the perf handler unmasks
        LVTPC; an open window is satisfied and raises KVM_REQ_EVENT."""
        p, now = self.p, self.env.now
        if self.nmi_end <= now:
            self.nmi_end = NEVER
            if p.lvtpc == Lvtpc.NMI:
                self.lvtpc_masked = False
            if not p.intel:
                self.nmi_window = False
                self.count("nmi_window_exits")
                self.requests |= 1 << EVENT_BIT
        if self.irq_end <= now:
            self.irq_end = NEVER
            if p.lvtpc == Lvtpc.FIXED:
                self.lvtpc_masked = False
        if self.nmi_window and not self.nmi_blocked:
            self.nmi_window = False
            self.count("nmi_window_exits")
            self.requests |= 1 << EVENT_BIT
        if self.irq_window and not (self.nmi_blocked or self.irq_blocked):
            self.irq_window = False
            self.count("irq_window_exits")
            self.requests |= 1 << EVENT_BIT

    def apply_guest_events(self) -> None:
        self.end_handlers()
        for kind in self.guest_arrivals:
            if kind == Src.PMI:                 # kvm_perf_overflow
                if self.pmu_reprogram:
                    self.count("pmis_coalesced")
                else:
                    self.pmu_reprogram = True
                    self.perf_overflow()
                    self.requests |= 1 << PMU_BIT
            elif kind == Src.EMUL_PMI:          # kvm_pmu_trigger_event
                self.pmu_reprogram = self.emul_overflow = True
                self.requests |= 1 << PMU_BIT
        self.guest_arrivals.clear()

    def perf_overflow(self) -> None:
        if self.requests >> PMI_BIT & 1:
            self.count("pmis_coalesced")
        else:
            self.count("pmis_raised")
            self.requests |= 1 << PMI_BIT

    def accept_irq(self) -> None:
        self.count("irqs_raised")
        if self.irq_pending:
            self.count("irqs_coalesced")
        self.irq_pending = True
        self.requests |= 1 << EVENT_BIT

    # --- request handlers -----------------------------------------------------------------
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
        if self.nmi_pending:
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
        if p.intel:                               # LVTPC auto-mask on Intel guests
            self.lvtpc_masked = True

    def inject_events(self) -> None:
        """kvm_check_and_inject_events: re-injection first, then SMI > NMI > IRQ."""
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
        if self.irq_pending:
            if not can_inject:
                self.req_immediate_exit = True
                return
            if not (self.nmi_blocked or self.irq_blocked):
                self.irq_pending = False
                self.irq_injected = True
                self.entry_event = INJECT_IRQ
            else:
                self.irq_window = True


class SimPyRun:
    """`config` for `duration` simulated seconds, set up: call it to run, then totals()."""

    def __init__(self, config, duration: float):
        plan = build(config, to_ns(duration))
        self.env = simpy.Environment()
        rng = np.random.default_rng(config.seed)
        self.counts = dict.fromkeys((c.name for c in _spec.EVENTS), 0)
        for i in range(plan.vcpus):
            VCpu(self.env, plan, i, rng, self.counts)
        self.until = to_ns(duration)

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
