"""A minimal virtual machine monitor: one vCPU running the test guest (guest.s) in real mode.

The VMM drives the guest stop by stop: each KVM_RUN runs it to its next OUT to port 0x10
(main loop), 0x11 (inside an NMI handler) or 0x12 (inside an IRQ handler). Every KVM_RUN
is bounded by a watchdog that signals the vCPU thread, so a misbehaving guest or kernel
cannot hang the caller.
"""

from __future__ import annotations

import collections
import errno
import signal
import struct
import threading
import time
from dataclasses import dataclass

from . import _guest
from . import _kvm as K
from . import _tracepoints

MEM_SIZE = 1 << 20
APIC_BASE = 0xFEE00000
IRQ_VECTOR = 0x40                 # guest.s: IVT entry of the test interrupt
STOP_PORTS = {0x10: "main", 0x11: "nmi", 0x12: "irq"}
KICK_SIGNAL = signal.SIGUSR1      # the watchdog's and the kick case's signal
RUN_TIMEOUT = 5.0                 # seconds one KVM_RUN may take
MAX_RUNS = 64                     # KVM_RUN calls one machine may make


class HostError(RuntimeError):
    """The host did something the VMM cannot go on from (a timeout, an unexpected exit)."""


def ensure_kick_handler() -> None:
    """A no-op Python handler for KICK_SIGNAL: the signal interrupts KVM_RUN (-EINTR) and
    nothing else. Must run in the main thread (signal.signal's rule)."""
    if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(KICK_SIGNAL, lambda *_: None)


class _Watchdog(threading.Thread):
    """Signals the vCPU thread when a KVM_RUN outlives its deadline. One polling thread per
    machine: arming it costs an assignment, so timing runs are not disturbed."""

    POLL = 0.05

    def __init__(self, tid: int):
        super().__init__(daemon=True)
        self.tid, self.deadline, self.fired = tid, None, False
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.POLL):
            d = self.deadline
            if d is not None and time.monotonic() > d:
                self.fired, self.deadline = True, None
                signal.pthread_kill(self.tid, KICK_SIGNAL)


@dataclass(frozen=True)
class Exit:
    """What one KVM_RUN returned: 'stop' (a guest OUT; where: main/nmi/irq), 'intr'
    (-EINTR: a signal or immediate_exit), or another KVM_EXIT_* name."""
    kind: str
    where: str = ""
    stop: int = 0


class Machine:
    """One VM with an in-kernel irqchip and one vCPU at the guest's `main`."""

    def __init__(self, interrupts_enabled: bool = True, spin: int = 4096):
        ensure_kick_handler()
        self.image, self.sym = _guest.image()
        self.tid = threading.get_ident()
        self.kvm = K.Kvm()
        self.vm = K.Vm(self.kvm, MEM_SIZE, irqchip=True)
        self.vcpu = K.Vcpu(self.vm)
        self.vm.mem[0:len(self.image)] = self.image
        self.stats = self.vcpu.stats()
        self.tracepoints = _tracepoints.Counters()
        self.exits = collections.Counter()      # KVM_RUN returns by reason
        self.runs = 0
        self.watchdog = _Watchdog(self.tid)
        self.watchdog.start()
        s = self.vcpu.get_sregs()
        for seg in (s.cs, s.ds, s.es, s.ss, s.gs):
            seg.base, seg.selector = 0, 0
        s.fs.base, s.fs.selector = APIC_BASE, 0    # guest.s writes EOI through FS
        self.vcpu.set_sregs(s)
        r = self.vcpu.get_regs()
        r.rip = self.sym["main"]
        r.rflags = 0x2 | (0x200 if interrupts_enabled else 0)
        self.vcpu.set_regs(r)
        lapic = self.vcpu.get_lapic()               # software-enable the local APIC (SVR)
        struct.pack_into("<I", lapic.regs, 0xF0, 0x1FF)
        self.vcpu.set_lapic(lapic)
        self.write("spin", spin)

    # --- guest memory ---------------------------------------------------------------------
    def read(self, name: str) -> int:
        return struct.unpack_from("<H", self.vm.mem, self.sym[name])[0]

    def write(self, name: str, value: int) -> None:
        struct.pack_into("<I" if name == "spin" else "<H", self.vm.mem, self.sym[name], value)

    def log(self) -> list[tuple[str, int]]:
        """The guest's deliveries in order: ('nmi' | 'irq', stops at delivery)."""
        n = self.read("log_len")
        words = struct.unpack_from(f"<{n}H", self.vm.mem, self.sym["log"])
        return [("nmi" if w >> 8 == 1 else "irq", w & 0xFF) for w in words]

    # --- the vCPU ---------------------------------------------------------------------------
    def run(self, timeout: float = RUN_TIMEOUT) -> Exit:
        """One KVM_RUN, bounded by `timeout` seconds and by MAX_RUNS per machine."""
        if self.runs >= MAX_RUNS:
            raise HostError(f"more than {MAX_RUNS} KVM_RUN calls: the case's script is wrong")
        self.runs += 1
        self.watchdog.deadline = time.monotonic() + timeout
        try:
            r = self.vcpu.run()
        finally:
            self.watchdog.deadline = None
        if self.watchdog.fired:
            raise HostError(f"KVM_RUN did not return within {timeout:g} s")
        if r == -errno.EINTR:
            self.exits["INTR"] += 1
            return Exit("intr")
        rs = self.vcpu.run_state
        reason = K.EXIT_REASONS.get(rs.exit_reason, str(rs.exit_reason))
        if rs.exit_reason == K.EXIT_IO and rs.io.port in STOP_PORTS:
            self.exits[f"IO port {rs.io.port:#x}"] += 1
            stop = struct.unpack("<H", self.vcpu.io_data()[:2])[0]
            return Exit("stop", STOP_PORTS[rs.io.port], stop)
        self.exits[reason] += 1
        raise HostError(f"unexpected exit to user space: KVM_EXIT_{reason} "
                        f"at rip {self.vcpu.get_regs().rip:#x}")

    def run_to_stop(self, where: str | None = None) -> Exit:
        e = self.run()
        if e.kind != "stop" or (where and e.where != where):
            raise HostError(f"expected a stop{' in ' + where if where else ''}, got {e}")
        return e

    def irr(self, vector: int = IRQ_VECTOR) -> bool:
        """Whether the vector is pending in the local APIC's IRR."""
        regs = self.vcpu.get_lapic().regs
        word = struct.unpack_from("<I", regs, 0x200 + 0x10 * (vector // 32))[0]
        return bool(word >> (vector % 32) & 1)

    def msi(self) -> None:
        """KVM_SIGNAL_MSI: the test vector to APIC 0 (kvm_set_msi -> __apic_accept_irq)."""
        if self.vm.signal_msi(0, IRQ_VECTOR) <= 0:
            raise HostError("KVM_SIGNAL_MSI: the local APIC refused the interrupt")

    def close(self) -> None:
        self.watchdog.done.set()
        self.watchdog.join()
        self.tracepoints.close()
        self.stats.close()
        self.vcpu.close()
        self.vm.close()
        self.kvm.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
