"""Counting kvm tracepoints with perf_event_open(2), as `perf stat -e kvm:NAME` does.

The counters follow the calling thread and the threads it starts afterwards (inherit), so a
case counts only its own VM. kvm_entry and kvm_exit are opened like the others: a vendor
module that never emits them (PVM) simply counts 0.
"""

from __future__ import annotations

import ctypes
import os
import struct

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENTS = ("kvm_userspace_exit", "kvm_pio", "kvm_inj_virq", "kvm_msi_set_irq",
          "kvm_apic_accept_irq", "kvm_emulate_insn", "kvm_entry", "kvm_exit")

_PERF_TYPE_TRACEPOINT = 2
_SYS_PERF_EVENT_OPEN = 298          # x86_64
_FLAG_FD_CLOEXEC = 8
_ATTR_SIZE = 128
_libc = ctypes.CDLL(None, use_errno=True)


def _event_id(name: str) -> int | None:
    for root in TRACEFS:
        try:
            with open(f"{root}/events/kvm/{name}/id") as f:
                return int(f.read())
        except OSError:
            continue
    return None


def unavailable() -> str | None:
    """Why tracepoints cannot be counted here, or None."""
    if _event_id("kvm_userspace_exit") is None:
        return (f"no kvm tracepoint ids under {' or '.join(TRACEFS)} (tracefs not mounted; "
                "`perf list` mounts it)")
    return None


class Counters:
    """Open counters for EVENTS that the host has; read() gives {event: count}."""

    def __init__(self, events=EVENTS):
        self.fds = {}
        for name in events:
            eid = _event_id(name)
            if eid is None:
                continue
            attr = bytearray(_ATTR_SIZE)
            # type, size, config; flags: inherit (bit 1), exclude_hv stays 0
            struct.pack_into("IIQ", attr, 0, _PERF_TYPE_TRACEPOINT, _ATTR_SIZE, eid)
            struct.pack_into("Q", attr, 40, 1 << 1)
            buf = (ctypes.c_char * _ATTR_SIZE).from_buffer(attr)
            fd = _libc.syscall(_SYS_PERF_EVENT_OPEN, buf, 0, -1, -1, _FLAG_FD_CLOEXEC)
            if fd >= 0:
                self.fds[name] = fd

    def read(self) -> dict[str, int]:
        return {n: struct.unpack("Q", os.read(fd, 8))[0] for n, fd in self.fds.items()}

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
