"""The cases: one script, run on the host's KVM (kvmsim.host._vmm) and in kvmsim.

A script is a sequence of stops. Stop j is the guest's j-th exit to the VMM (guest.s: an OUT
from its main loop or from inside an NMI/IRQ handler). At a stop the VMM may issue KVM_NMI
and KVM_SIGNAL_MSI while the vCPU is outside the guest; between two stops another thread may
post MSIs or signal the vCPU thread while it runs.

In kvmsim the same script becomes a Workload: stop j is a guest exit at T_j = j ms (a
`Trace("exit")`), the NMIs and MSIs issued there are `Trace("nmi")` and `Trace("irq")`
arrivals at T_j, and every cost is 0, so the model's counts per 1 ms interval are counts
between two stops. The model runs with vendor="intel" (VMX: the model's NMI- and IRQ-window
exits) without APICv (PVM has none), the `linux-6.19` profile (the host runs 6.18), LVTPC
masked (the guest has no perf handler) and no guest exits of its own.

Each observation is compared exactly. `vendor` marks the few that depend on the vendor
module (kvm_x86_ops), where the model follows VMX and this host runs PVM: the host must then
match either the model or the value PVM's source gives (docs/validation.md).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import kvmsim

from . import _kvm as K
from ._vmm import HostError, KICK_SIGNAL, Machine

STOP_S = 1e-3                 # model time between two stops
SHORT_HANDLER_S = 10e-6       # a guest handler that does not stop inside (a dozen instructions)
LONG_HANDLER_S = 1.5e-3       # one that stops inside: it spans the next stop
CANCEL_STATE_LOAD_NS = 100    # signal-cancel: the window between the checks and the late check
POST_GAP_S = 0.1e-3           # cross-thread MSIs: model time between two posts
KICK_AT_S = 0.5e-3            # kick: model time of the kick after its stop
HOST_POST_TIMEOUT = 1.0       # seconds a cross-thread MSI may take to reach the guest
HOST_POST_SETTLE = 2e-3       # ... and to finish its handler (EOI, IRET) before the next one
HOST_KICK_DELAY = 0.005       # seconds the guest runs before the kick signal


@dataclass(frozen=True)
class Script:
    """What happens, stop by stop. Keys are stop numbers (1-based)."""
    stops: int                                   # the run ends at this stop
    nmis: dict[int, int] = field(default_factory=dict)     # KVM_NMI calls at the stop
    msis: dict[int, int] = field(default_factory=dict)     # KVM_SIGNAL_MSI calls at the stop
    posts: dict[int, int] = field(default_factory=dict)    # MSIs from another thread after it
    kick_after: int | None = None                # a signal to the running vCPU after this stop
    cancel_at: int | None = None                 # a signal pending at the KVM_RUN after this stop
    immediate_at: int | None = None              # a KVM_RUN with immediate_exit after this stop
    nmi_stops: int = 0                           # NMI handlers that stop inside
    irq_stops: int = 0                           # IRQ handlers that stop inside
    spin: int = 4096                             # guest loop iterations after each stop


@dataclass
class Observation:
    """One number a case compares: the host's value, the model's (None: the host's is
    checked against `expected`), and for a vendor-dependent rule the value PVM's rule gives."""
    name: str
    host: object
    model: object
    vendor: str = ""                             # why it depends on kvm_x86_ops, if it does
    pvm: object = None                           # the value PVM's rule gives
    expected: object = None                      # host-only (model is None): the kernel's rule

    @property
    def status(self) -> str:
        if self.model is None:
            return "host-only" if self.host == self.expected else "DISAGREE"
        if self.host == self.model:
            return "agree"
        if self.vendor and self.host == self.pvm:
            return "pvm"
        return "DISAGREE"


@dataclass
class Outcome:
    """A case's result: its observations, what the kernel did (reported, not compared), and
    why it was skipped, if it was."""
    case: str
    observations: list[Observation] = field(default_factory=list)
    host_report: dict = field(default_factory=dict)   # what the kernel did, not compared
    skipped: str = ""                                 # why the case did not run

    @property
    def status(self) -> str:
        """skipped, DISAGREE, pvm (agrees but for a documented PVM rule), or agree."""
        if self.skipped:
            return "skipped"
        seen = {o.status for o in self.observations}
        if "DISAGREE" in seen:
            return "DISAGREE"
        return "pvm" if "pvm" in seen else "agree"


# --- the host side -------------------------------------------------------------------------

@dataclass
class HostRun:
    """What the VMM saw: per stop j (1..stops), before acting (outstanding NMIs, IRR) and after
    (NMIs dropped so far); the guest's log; vCPU statistics and tracepoint deltas."""
    nmi_outstanding: list[int] = field(default_factory=list)
    irq_pending: list[int] = field(default_factory=list)
    nmis_dropped: list[int] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    tracepoints: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    msis: int = 0
    nmi_issued: int = 0
    after_cancel: K.VcpuEvents | None = None
    cancel_rip_at_nmi: bool = False               # the cancelled entry left RIP at nmi_entry
    immediate: dict = field(default_factory=dict)
    kick_exit: str = ""


def _post_msis(m: Machine, count: int, errors: list) -> None:
    """Another thread posts `count` MSIs to the running vCPU, each after the last one
    reached the guest (kvm_set_msi -> __apic_accept_irq -> kvm_vcpu_kick) and its handler
    had time to return: an MSI that lands before the IRET finds interrupts disabled, and
    KVM opens an IRQ window the model's script does not have."""
    try:
        for _ in range(count):
            seen = m.read("irq_count")
            m.msi()
            deadline = time.monotonic() + HOST_POST_TIMEOUT
            while m.read("irq_count") == seen:
                if time.monotonic() > deadline:
                    raise HostError("a cross-thread MSI did not reach the guest within "
                                    f"{HOST_POST_TIMEOUT:g} s")
                time.sleep(50e-6)
            time.sleep(HOST_POST_SETTLE)
    except Exception as e:                      # reported by the vCPU thread
        errors.append(e)
    finally:
        m.write("hold", 0)


def _kick(m: Machine) -> None:
    time.sleep(HOST_KICK_DELAY)
    signal.pthread_kill(m.tid, KICK_SIGNAL)


def run_host(script: Script) -> HostRun:
    out = HostRun()
    with Machine(spin=script.spin) as m:
        m.write("nmi_stops", script.nmi_stops)
        m.write("irq_stops", script.irq_stops)
        stats0, tp0 = m.stats.snapshot(), m.tracepoints.read()
        stop = m.run_to_stop().stop
        while True:
            ev = m.vcpu.events()               # runs process_nmi() first
            out.nmi_outstanding.append(ev.nmi.pending + ev.nmi.injected)
            out.irq_pending.append(int(m.irr()))
            for _ in range(script.nmis.get(stop, 0)):
                m.vcpu.nmi()
                out.nmi_issued += 1
            for _ in range(script.msis.get(stop, 0)):
                m.msi()
                out.msis += 1
            ev = m.vcpu.events()
            delivered = sum(1 for kind, _ in m.log() if kind == "nmi")
            out.nmis_dropped.append(out.nmi_issued - delivered - ev.nmi.pending - ev.nmi.injected)
            if stop == script.stops:
                break
            stop = _host_interval(m, script, stop, out)
        out.log = m.log()
        stats1, tp1 = m.stats.snapshot(), m.tracepoints.read()
        out.stats = {k: stats1[k] - stats0[k] for k in stats1 if stats1[k] != stats0[k]}
        out.tracepoints = {k: tp1[k] - tp0[k] for k in tp1}
        out.exits = dict(m.exits)
    return out


def _host_interval(m: Machine, script: Script, stop: int, out: HostRun) -> int:
    """Resume the guest after `stop`; returns the next stop's number."""
    helper, errors = None, []
    if stop in script.posts:
        m.write("hold", 1)
        helper = threading.Thread(target=_post_msis, args=(m, script.posts[stop], errors))
        out.msis += script.posts[stop]
    elif script.kick_after == stop:
        m.write("hold", 1)
        helper = threading.Thread(target=_kick, args=(m,))
    if script.cancel_at == stop:
        # The signal is blocked in user space and unblocked inside KVM_RUN
        # (KVM_SET_SIGNAL_MASK), so it is pending when vcpu_enter_guest() makes its late
        # check: xfer_to_guest_mode_work_pending() cancels the entry.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, [KICK_SIGNAL])
        try:
            m.vcpu.set_signal_mask(old)
            signal.pthread_kill(m.tid, KICK_SIGNAL)
            e = m.run()
            if e.kind != "intr":
                raise HostError(f"a pending signal did not stop KVM_RUN: {e}")
            out.after_cancel = m.vcpu.events()
            out.cancel_rip_at_nmi = m.vcpu.get_regs().rip == m.sym["nmi_entry"]
            signal.sigtimedwait([KICK_SIGNAL], 0)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if script.immediate_at == stop:
        before = m.stats.snapshot()
        m.vcpu.run_state.immediate_exit = 1
        try:
            e = m.run()
        finally:
            m.vcpu.run_state.immediate_exit = 0
        ev, after = m.vcpu.events(), m.stats.snapshot()
        out.immediate = {"returned": e.kind, "exits": after["exits"] - before["exits"],
                         "nmi_injections": after["nmi_injections"] - before["nmi_injections"],
                         "nmis_outstanding": ev.nmi.pending + ev.nmi.injected}
    if helper:
        helper.start()
    try:
        e = m.run()
        if script.kick_after == stop:
            out.kick_exit = e.kind
            m.write("hold", 0)
            e = m.run()
    finally:
        if helper:
            m.write("hold", 0)
            helper.join()
    if errors:
        raise errors[0]
    if e.kind != "stop" or e.stop != stop + 1:
        raise HostError(f"after stop {stop} expected stop {stop + 1}, got {e}")
    return e.stop


# --- the kvmsim side ---------------------------------------------------------------------------

@dataclass
class ModelRun:
    """What kvmsim gave for a script: per stop, the NMIs outstanding, IRQs pending and NMIs
    dropped; NMIs and IRQs injected per interval; the totals; whether the script's kick was
    sent, and the totals after its cancelled pass."""
    nmi_outstanding: list[int]
    irq_pending: list[int]
    nmis_dropped: list[int]
    nmis_per_interval: list[int]
    irqs_per_interval: list[int]
    totals: dict[str, int]
    kick_sent: bool | None = None
    after_cancel: dict[str, int] | None = None


def workload(script: Script) -> kvmsim.Workload:
    t = [j * STOP_S for j in range(script.stops + 1)]
    sources = [kvmsim.Trace("exit", times=t[1:script.stops])]
    nmis = [t[j] for j, n in sorted(script.nmis.items()) for _ in range(n)]
    irqs = [t[j] for j, n in sorted(script.msis.items()) for _ in range(n)]
    irqs += [t[j] + (i + 1) * POST_GAP_S for j, n in sorted(script.posts.items())
             for i in range(n)]
    if nmis:
        sources.append(kvmsim.Trace("nmi", times=nmis))
    if irqs:
        sources.append(kvmsim.Trace("irq", times=sorted(irqs)))
    if script.cancel_at is not None:
        # The signal sets TIF_SIGPENDING (task work) between the checks and
        # kvm_vcpu_exit_request(), the late check that sees it.
        late = t[script.cancel_at] + CANCEL_STATE_LOAD_NS / 2 * 1e-9
        sources.append(kvmsim.Trace("task-work", times=[late]))
    return kvmsim.Workload(
        vcpus=1, guest_exit_rate=0.0, lvtpc="masked", sources=sources,
        nmi_handler=LONG_HANDLER_S if script.nmi_stops else SHORT_HANDLER_S,
        irq_handler=LONG_HANDLER_S if script.irq_stops else SHORT_HANDLER_S)


def config(script: Script, engine: str = "cython") -> kvmsim.Config:
    zero = kvmsim.Costs(vmexit=0, vmenter=0, check=0, handler=0, event=0, cancel=0,
                        task_work=0, handlers={"NMI": 0, "PMU": 0, "PMI": 0, "SMI": 0},
                        state_load=CANCEL_STATE_LOAD_NS if script.cancel_at is not None else 0)
    # PVM has no APICv: interrupts take the IRR + KVM_REQ_EVENT + kick path.
    return kvmsim.Config(order="linux-6.19", workload=workload(script), seed=0, engine=engine,
                         vendor="intel", costs=zero, host=kvmsim.Host(apicv=False, ipiv=False))


def run_model(script: Script, engine: str = "cython") -> ModelRun:
    sim = kvmsim.Simulation(config(script, engine), interval=STOP_S)
    ns = 1e-9
    outstanding, pending, dropped = [], [], []
    kick_sent = after_cancel = None
    for j in range(1, script.stops + 1):
        sim.run(until=j * STOP_S)                  # just before stop j is processed
        tot = sim.result().totals
        outstanding.append(tot["nmis_outstanding"])
        pending.append(tot["irqs_raised"] - tot["irqs_coalesced"] - tot["irqs_injected"])
        if j == script.stops:
            break
        if script.cancel_at == j:
            sim.run(until=j * STOP_S + CANCEL_STATE_LOAD_NS * ns)   # the cancelled pass only
            after_cancel = dict(sim.result().totals)
        else:
            sim.run(until=j * STOP_S + ns)          # stop j's exit and its passes
        dropped.append(sim.result().totals["nmis_dropped"])
        if script.kick_after == j:
            sim.run(until=j * STOP_S + KICK_AT_S)
            kick_sent = sim.make_request(0, "TLB_FLUSH", kick=True)
    dropped.append(sim.result().totals["nmis_dropped"])
    res = sim.result()
    per = res.intervals
    return ModelRun(outstanding, pending, dropped,
                    [int(x) for x in per["nmis_injected"][1:script.stops]],
                    [int(x) for x in per["irqs_injected"][1:script.stops]],
                    res.totals, kick_sent, after_cancel)


# --- comparing ----------------------------------------------------------------------------------

NMI_WINDOW = ("enable_nmi_window: VMX arms an NMI-window exit at IRET; PVM's does nothing, "
              "so a waiting NMI is taken at the next exit of any kind")


def _per_interval(log, kind: str, stops: int) -> list[int]:
    return [sum(1 for k, s in log if k == kind and s == j) for j in range(1, stops)]


def observe(script: Script, host: HostRun, model: ModelRun) -> list[Observation]:
    """The observations every script makes (the mapping is in docs/validation.md)."""
    s = script.stops
    obs = [
        Observation("NMIs outstanding at each stop", host.nmi_outstanding,
                    model.nmi_outstanding),
        Observation("NMIs dropped by each stop", host.nmis_dropped, model.nmis_dropped),
        Observation("NMIs taken between stops", _per_interval(host.log, "nmi", s),
                    model.nmis_per_interval),
        Observation("NMI-window exits", host.stats.get("nmi_window_exits", 0),
                    model.totals["nmi_window_exits"], vendor=NMI_WINDOW, pvm=0),
    ]
    if host.msis or model.totals["irqs_raised"]:
        taken = sum(1 for k, _ in host.log if k == "irq")
        obs += [
            Observation("IRQs pending (IRR) at each stop", host.irq_pending, model.irq_pending),
            Observation("IRQs taken between stops", _per_interval(host.log, "irq", s),
                        model.irqs_per_interval),
            Observation("IRQs lost (coalesced in IRR)", host.msis - taken - host.irq_pending[-1],
                        model.totals["irqs_coalesced"]),
            Observation("IRQ-window exits", host.stats.get("irq_window_exits", 0),
                        model.totals["irq_window_exits"], vendor="enable_irq_window"),
        ]
    return obs


@dataclass(frozen=True)
class Case:
    """A micro-experiment run on /dev/kvm and in kvmsim under one script; `pvm` lists the
    observations where PVM's rule gives another value than the model's VMX rule."""
    name: str
    title: str
    script: Script
    # Observations where PVM's rule gives another value than the model's VMX rule:
    # {observation name: (the PVM value for this script, why)}.
    pvm: dict[str, tuple[object, str]] = field(default_factory=dict)

    def unavailable(self, kvm: K.Kvm) -> str:
        """Why this host cannot run the case, or ''."""
        return ""

    def run(self, engine: str = "cython") -> Outcome:
        model = run_model(self.script, engine)
        host = run_host(self.script)
        out = Outcome(self.name, observe(self.script, host, model), _report(host))
        out.observations += self.extra(host, model)
        for o in out.observations:
            if o.name in self.pvm:
                o.pvm, o.vendor = self.pvm[o.name]
        return out

    def extra(self, host: HostRun, model: ModelRun) -> list[Observation]:
        return []


class CancelCase(Case):
    """A signal pending when KVM_RUN starts, with an NMI to inject: the late check in
    vcpu_enter_guest() cancels the entry and the NMI stays injected for the next one."""

    def extra(self, host, model):
        delivered = sum(1 for k, _ in host.log if k == "nmi")
        ac = host.after_cancel
        return [
            # Each inject_nmi call counts nmi_injections; a cancelled entry re-injects.
            Observation("entries cancelled with an NMI written",
                        host.stats.get("nmi_injections", 0) - delivered,
                        model.totals["canceled_vmenters"]),
            Observation("NMIs outstanding after the cancel",
                        ac.nmi.pending + ac.nmi.injected, model.after_cancel["nmis_outstanding"]),
            Observation("NMIs taken by the cancelled entry", int(host.cancel_rip_at_nmi),
                        model.after_cancel["nmis_injected"]),
        ]


class ImmediateExitCase(Case):
    """KVM_RUN with kvm_run->immediate_exit set, an NMI pending: kvm_arch_vcpu_ioctl_run()
    returns -EINTR before vcpu_run(). kvmsim has no KVM_RUN boundary, so these observations
    are checked against the kernel's rule only; the rest of the script is compared."""

    def extra(self, host, model):
        rule = "no rule in kvmsim: KVM_RUN with immediate_exit never calls vcpu_run()"
        im = host.immediate
        return [Observation(f"immediate_exit KVM_RUN: {k}", im[k], None, vendor=rule,
                            expected=v)
                for k, v in (("returned", "intr"), ("exits", 0), ("nmi_injections", 0),
                             ("nmis_outstanding", 1))]


class KickCase(Case):
    """A signal to the vCPU thread while the guest runs (kick_process's IPI)."""

    def extra(self, host, model):
        stop_exits = self.script.stops - 1
        forced = (model.totals["vmexits"] - stop_exits - model.totals["nmi_window_exits"]
                  - model.totals["irq_window_exits"])
        return [
            Observation("kick found the vCPU in guest mode", host.kick_exit == "intr",
                        model.kick_sent),
            Observation("exits forced by the kick", host.stats.get("signal_exits", 0), forced),
        ]


class SmiCase(Case):
    """KVM_SMI: process_smi, then enter_smm from the EVENT block (model: smis_injected)."""

    def unavailable(self, kvm: K.Kvm) -> str:
        if not kvm.check_extension(K.CAP_X86_SMM):
            return ("KVM_CAP_X86_SMM is 0: this kernel has no SMM (CONFIG_KVM_SMM off; PVM's "
                    "smi_allowed() is 0 in any case)")
        return "the test guest has no SMM handler at SMBASE + 0x8000 yet"


def _report(host: HostRun) -> dict:
    return {"exits to user space": host.exits, "vCPU stats": host.stats,
            "tracepoints": host.tracepoints, "guest log": host.log}


CASES: tuple[Case, ...] = (
    *(Case(f"nmi-burst-{n}", f"{n} KVM_NMI while the vCPU is outside the guest",
           Script(stops=3, nmis={1: n})) for n in range(1, 5)),
    Case("nmi-masked", "3 NMIs while the guest's NMI handler runs (process_nmi limit 1)",
         Script(stops=4, nmis={1: 1, 2: 3}, nmi_stops=1)),
    Case("nmi-window", "a second NMI waits for the handler's IRET",
         Script(stops=4, nmis={1: 2}, nmi_stops=1)),
    Case("nmi-irq", "NMI and IRQ pending together: NMI first, the IRQ waits for its window",
         Script(stops=4, nmis={1: 1}, msis={1: 1}, nmi_stops=1)),
    Case("irq-coalesce", "3 MSIs of one vector while the vCPU is outside: one IRR bit",
         Script(stops=3, msis={1: 3})),
    Case("irq-cross-thread", "8 MSIs posted from another thread while the guest runs",
         Script(stops=3, posts={1: 8})),
    KickCase("kick-signal", "a signal to the vCPU thread while the guest runs",
             Script(stops=3, kick_after=1)),
    CancelCase("signal-cancel", "a signal pending at KVM_RUN cancels an entry carrying an NMI",
               Script(stops=3, nmis={1: 1}, cancel_at=1)),
    ImmediateExitCase("immediate-exit", "KVM_RUN with immediate_exit while an NMI is pending",
                      Script(stops=3, nmis={1: 1}, immediate_at=1)),
    Case("nmi-window-next-exit", "a second NMI waits for IRET; the guest stops right after it",
         Script(stops=4, nmis={1: 2}, nmi_stops=1, spin=1),
         pvm={"NMIs taken between stops": ([1, 0, 1], NMI_WINDOW),
              "NMIs outstanding at each stop": ([0, 1, 1, 0], NMI_WINDOW)}),
    SmiCase("smi", "KVM_SMI while the vCPU is outside the guest", Script(stops=3)),
)
