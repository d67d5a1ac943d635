"""The /dev/kvm ioctls kvmsim.host needs, as ctypes structures and thin wrappers.

Layouts and request numbers follow include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h (KVM API 12). Every ioctl goes through libc's ioctl() by
ctypes, which releases the GIL, so another Python thread can post an interrupt or a signal
while a vCPU thread sits in KVM_RUN.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int

KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | KVMIO << 8 | nr


def _io(nr):
    return _ioc(0, nr, 0)


def _iow(nr, t):
    return _ioc(1, nr, ctypes.sizeof(t))


def _ior(nr, t):
    return _ioc(2, nr, ctypes.sizeof(t))


class Segment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16), ("type", ctypes.c_uint8),
                ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8), ("db", ctypes.c_uint8),
                ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8),
                ("padding", ctypes.c_uint8)]


class DTable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
                 "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class Sregs(ctypes.Structure):
    _fields_ = ([(n, Segment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")]
                + [("gdt", DTable), ("idt", DTable)]
                + [(n, ctypes.c_uint64) for n in
                   ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]
                + [("interrupt_bitmap", ctypes.c_uint64 * 4)])


class _EvNmi(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("pending", ctypes.c_uint8),
                ("masked", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class _EvSmi(ctypes.Structure):
    _fields_ = [("smm", ctypes.c_uint8), ("pending", ctypes.c_uint8),
                ("smm_inside_nmi", ctypes.c_uint8), ("latched_init", ctypes.c_uint8)]


class _EvInterrupt(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("nr", ctypes.c_uint8),
                ("soft", ctypes.c_uint8), ("shadow", ctypes.c_uint8)]


class VcpuEvents(ctypes.Structure):
    """struct kvm_vcpu_events (KVM_GET_VCPU_EVENTS runs process_nmi() first)."""
    _fields_ = [("exception", ctypes.c_uint8 * 8), ("interrupt", _EvInterrupt),
                ("nmi", _EvNmi), ("sipi_vector", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("smi", _EvSmi), ("triple_fault", ctypes.c_uint8),
                ("reserved", ctypes.c_uint8 * 26), ("exception_has_payload", ctypes.c_uint8),
                ("exception_payload", ctypes.c_uint64)]


class MemoryRegion(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


class IrqLevel(ctypes.Structure):
    _fields_ = [("irq", ctypes.c_uint32), ("level", ctypes.c_uint32)]


class Msi(ctypes.Structure):
    _fields_ = [("address_lo", ctypes.c_uint32), ("address_hi", ctypes.c_uint32),
                ("data", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("devid", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 12)]


class LapicState(ctypes.Structure):
    _fields_ = [("regs", ctypes.c_uint8 * 1024)]


class _RunIo(ctypes.Structure):
    _fields_ = [("direction", ctypes.c_uint8), ("size", ctypes.c_uint8),
                ("port", ctypes.c_uint16), ("count", ctypes.c_uint32),
                ("data_offset", ctypes.c_uint64)]


class RunHeader(ctypes.Structure):
    """The head of struct kvm_run shared with the kernel through mmap."""
    _fields_ = [("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
                ("padding1", ctypes.c_uint8 * 6), ("exit_reason", ctypes.c_uint32),
                ("ready_for_interrupt_injection", ctypes.c_uint8), ("if_flag", ctypes.c_uint8),
                ("flags", ctypes.c_uint16), ("cr8", ctypes.c_uint64),
                ("apic_base", ctypes.c_uint64), ("io", _RunIo)]


GET_API_VERSION = _io(0x00)
CREATE_VM = _io(0x01)
CHECK_EXTENSION = _io(0x03)
GET_VCPU_MMAP_SIZE = _io(0x04)
CREATE_VCPU = _io(0x41)
SET_USER_MEMORY_REGION = _iow(0x46, MemoryRegion)
SET_TSS_ADDR = _io(0x47)
CREATE_IRQCHIP = _io(0x60)
IRQ_LINE = _iow(0x61, IrqLevel)
RUN = _io(0x80)
GET_REGS = _ior(0x81, Regs)
SET_REGS = _iow(0x82, Regs)
GET_SREGS = _ior(0x83, Sregs)
SET_SREGS = _iow(0x84, Sregs)
GET_LAPIC = _ior(0x8E, LapicState)
SET_LAPIC = _iow(0x8F, LapicState)
NMI = _io(0x9A)
GET_VCPU_EVENTS = _ior(0x9F, VcpuEvents)
SIGNAL_MSI = _iow(0xA5, Msi)
SMI = _io(0xB7)
SET_SIGNAL_MASK = _ioc(1, 0x8B, 4)         # struct kvm_signal_mask: u32 len, then the set
GET_STATS_FD = _io(0xCE)

CAP_IRQCHIP = 0
CAP_VCPU_EVENTS = 41
CAP_SIGNAL_MSI = 77
CAP_X86_SMM = 117
CAP_IMMEDIATE_EXIT = 136
CAP_BINARY_STATS_FD = 203

# KVM_EXIT_* (include/uapi/linux/kvm.h)
EXIT_REASONS = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT",
                6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR",
                11: "SET_TPR", 12: "TPR_ACCESS", 17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT"}
EXIT_IO, EXIT_HLT, EXIT_INTR, EXIT_SHUTDOWN = 2, 5, 10, 8

API_VERSION = 12


class KvmError(OSError):
    """An ioctl failed; `what` names it."""

    def __init__(self, what: str, err: int):
        self.what = what
        super().__init__(err, f"{what}: {os.strerror(err)}")


def ioctl(fd: int, request: int, arg=None, what: str = "ioctl") -> int:
    """ioctl(fd, request, arg): arg is None, an int, or a ctypes object passed by address."""
    if arg is None:
        ptr = None
    elif isinstance(arg, int):
        ptr = ctypes.c_void_p(arg)
    else:
        ptr = ctypes.cast(ctypes.byref(arg), ctypes.c_void_p)
    r = _libc.ioctl(fd, request, ptr)
    if r < 0:
        raise KvmError(what, ctypes.get_errno())
    return r


class Kvm:
    """/dev/kvm, open for the life of the object."""

    def __init__(self, path: str = "/dev/kvm"):
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.api_version = ioctl(self.fd, GET_API_VERSION, what="KVM_GET_API_VERSION")
        self.vcpu_mmap_size = ioctl(self.fd, GET_VCPU_MMAP_SIZE, what="KVM_GET_VCPU_MMAP_SIZE")

    def check_extension(self, cap: int) -> int:
        return ioctl(self.fd, CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def close(self) -> None:
        os.close(self.fd)


class Stats:
    """A binary statistics fd (KVM_GET_STATS_FD): read(name) returns the current value.
    Documented in Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"."""

    def __init__(self, fd: int):
        self.fd = fd
        hdr = os.pread(fd, 24, 0)
        _, name_size, num_desc, _, desc_off, data_off = struct.unpack("6I", hdr)
        self._offsets = {}
        desc_size = 16 + name_size
        raw = os.pread(fd, num_desc * desc_size, desc_off)
        for i in range(num_desc):
            flags, _, size, offset, _ = struct.unpack_from("IhHII", raw, i * desc_size)
            name = raw[i * desc_size + 16:(i + 1) * desc_size].split(b"\0", 1)[0].decode()
            if size == 1:                          # histograms are left out
                self._offsets[name] = data_off + offset
        self.names = tuple(self._offsets)

    def read(self, name: str) -> int:
        return struct.unpack("Q", os.pread(self.fd, 8, self._offsets[name]))[0]

    def snapshot(self) -> dict[str, int]:
        return {n: self.read(n) for n in self.names}

    def close(self) -> None:
        os.close(self.fd)


class Vm:
    """A VM with one slot of guest memory at guest-physical 0."""

    def __init__(self, kvm: Kvm, mem_size: int, irqchip: bool):
        self.kvm = kvm
        self.fd = ioctl(kvm.fd, CREATE_VM, 0, "KVM_CREATE_VM")
        self.mem = mmap.mmap(-1, mem_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        ioctl(self.fd, SET_USER_MEMORY_REGION, MemoryRegion(0, 0, 0, mem_size, addr),
              "KVM_SET_USER_MEMORY_REGION")
        self.irqchip = irqchip
        if irqchip:
            ioctl(self.fd, CREATE_IRQCHIP, what="KVM_CREATE_IRQCHIP")

    def irq_line(self, irq: int, level: int) -> None:
        ioctl(self.fd, IRQ_LINE, IrqLevel(irq, level), "KVM_IRQ_LINE")

    def signal_msi(self, dest_apic: int, vector: int) -> int:
        """A fixed, edge-triggered MSI to a local APIC (physical destination); returns
        >0 if delivered, 0 if the guest blocked it (kvm_set_msi)."""
        msi = Msi(0xFEE00000 | dest_apic << 12, 0, vector & 0xFF, 0, 0)
        return ioctl(self.fd, SIGNAL_MSI, msi, "KVM_SIGNAL_MSI")

    def stats(self) -> Stats:
        return Stats(ioctl(self.fd, GET_STATS_FD, what="KVM_GET_STATS_FD (VM)"))

    def close(self) -> None:
        os.close(self.fd)
        self.mem.close()


class Vcpu:
    def __init__(self, vm: Vm, index: int = 0):
        self.vm = vm
        self.fd = ioctl(vm.fd, CREATE_VCPU, index, "KVM_CREATE_VCPU")
        self._run_map = mmap.mmap(self.fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_state = RunHeader.from_buffer(self._run_map)

    def run(self) -> int:
        """KVM_RUN; returns 0, or -EINTR (signal or immediate_exit). Other errors raise."""
        r = _libc.ioctl(self.fd, RUN, None)
        if r < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                return -errno.EINTR
            raise KvmError("KVM_RUN", err)
        return r

    @property
    def exit_reason(self) -> int:
        return self.run_state.exit_reason

    def io_data(self) -> bytes:
        io = self.run_state.io
        start = io.data_offset
        return bytes(self._run_map[start:start + io.size * io.count])

    def get_regs(self) -> Regs:
        r = Regs()
        ioctl(self.fd, GET_REGS, r, "KVM_GET_REGS")
        return r

    def set_regs(self, r: Regs) -> None:
        ioctl(self.fd, SET_REGS, r, "KVM_SET_REGS")

    def get_sregs(self) -> Sregs:
        s = Sregs()
        ioctl(self.fd, GET_SREGS, s, "KVM_GET_SREGS")
        return s

    def set_sregs(self, s: Sregs) -> None:
        ioctl(self.fd, SET_SREGS, s, "KVM_SET_SREGS")

    def get_lapic(self) -> LapicState:
        s = LapicState()
        ioctl(self.fd, GET_LAPIC, s, "KVM_GET_LAPIC")
        return s

    def set_lapic(self, s: LapicState) -> None:
        ioctl(self.fd, SET_LAPIC, s, "KVM_SET_LAPIC")

    def events(self) -> VcpuEvents:
        e = VcpuEvents()
        ioctl(self.fd, GET_VCPU_EVENTS, e, "KVM_GET_VCPU_EVENTS")
        return e

    def nmi(self) -> None:
        ioctl(self.fd, NMI, what="KVM_NMI")

    def smi(self) -> None:
        ioctl(self.fd, SMI, what="KVM_SMI")

    def stats(self) -> Stats:
        return Stats(ioctl(self.fd, GET_STATS_FD, what="KVM_GET_STATS_FD (vCPU)"))

    def set_signal_mask(self, blocked) -> None:
        """KVM_SET_SIGNAL_MASK: the signals blocked while KVM_RUN runs (the kernel's
        64-bit sigset_t)."""
        bits = 0
        for sig in blocked:
            bits |= 1 << (int(sig) - 1)
        arg = (ctypes.c_uint8 * 12).from_buffer_copy(struct.pack("<IQ", 8, bits))
        ioctl(self.fd, SET_SIGNAL_MASK, arg, "KVM_SET_SIGNAL_MASK")

    def close(self) -> None:
        del self.run_state
        self._run_map.close()
        os.close(self.fd)
