"""Trace events as `trace-cmd report` prints them: one line per simulated event."""

from __future__ import annotations

from . import catalogue
from ._limits import NS
from ._spec import TRACEPOINTS, ExitReason, Src, TraceEvent


def _fields(event: int, a: int, b: int) -> str:
    if event == TraceEvent.EXIT:
        return f"reason {ExitReason(a).name} requests {b:#x}"
    if event == TraceEvent.MAKE_REQUEST:
        if a == Src.NMI:
            return "req NMI (kvm_inject_nmi)"
        if a == Src.IRQ:
            return "req EVENT (IRR)"
        return f"req {catalogue.BY_BIT[b].name}"
    if event == TraceEvent.CHECK_REQUEST:
        return f"req {catalogue.BY_BIT[a].name} bit {a} pos {b}"
    if event == TraceEvent.NMI_DROP:
        return f"dropped {a} limit {b}"
    if event == TraceEvent.INJ_VIRQ:
        return "irq"
    if event in (TraceEvent.ENTRY, TraceEvent.CANCEL):
        return f"requests {b:#x}"
    return ""


def line(t_ns: int, vcpu: int, event: int, a: int, b: int) -> str:
    """`CPU 0/KVM-1000  [000]     0.001000000: kvm_exit:  reason ...` (the vCPU thread's
    comm and pid, then the host CPU, here the vCPU's number)."""
    secs, ns = divmod(t_ns, NS)
    name = TRACEPOINTS[TraceEvent(event)][0]
    return (f"{f'CPU {vcpu}/KVM':>16}-{1000 + vcpu:<5} [{vcpu:03d}] {secs:>5}.{ns:09d}: "
            f"{name + ':':<21} {_fields(event, a, b)}").rstrip()
