"""kvmsim.host: ground truth from the kernel this machine runs.

A minimal VMM over /dev/kvm (ctypes ioctls, a real-mode guest from guest.s) runs scripted
micro-experiments; each runs in kvmsim under the same script and the counts are compared
(cases.py, docs/validation.md). `usable()` says whether this machine can run them.
"""

from __future__ import annotations

import errno
import os

from ._kvm import API_VERSION, Kvm, KvmError
from .cases import CASES, Case, Observation, Outcome, Script

DEVICE = "/dev/kvm"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def usable(device: str = DEVICE) -> str:
    """'' if /dev/kvm can run the cases, else why not (missing, permission, nested
    virtualisation off, wrong API)."""
    if not os.path.exists(device):
        flags = _cpu_flags()
        if not flags & {"vmx", "svm"}:
            why = ("the CPU shows no vmx/svm flag: inside a VM, nested virtualisation is off "
                   "(or the kvm module is not loaded)")
        else:
            why = "the kvm module is not loaded (modprobe kvm_intel or kvm_amd)"
        return f"{device} is missing: {why}"
    try:
        kvm = Kvm(device)
    except KvmError as e:
        return f"{device}: {e}"
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return f"{device}: permission denied (run as root or join the kvm group)"
        if e.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            return (f"{device}: {e.strerror}: no virtualisation support (nested "
                    "virtualisation off, or disabled in firmware)")
        return f"{device}: {e.strerror}"
    try:
        if kvm.api_version != API_VERSION:
            return f"{device}: KVM API {kvm.api_version}, expected {API_VERSION}"
        try:
            from . import _kvm as K
            vm = K.Vm(kvm, 1 << 16, irqchip=True)
            vm.close()
        except OSError as e:
            return f"{device}: cannot create a VM with an in-kernel irqchip: {e.strerror}"
    finally:
        kvm.close()
    return ""


def vendor_module() -> str:
    """The loaded KVM vendor module (kvm_intel, kvm_amd, kvm_pvm, ...), or ''."""
    try:
        names = os.listdir("/sys/module")
    except OSError:
        return ""
    return next((n for n in sorted(names) if n.startswith("kvm_")), "")


__all__ = ["CASES", "Case", "Observation", "Outcome", "Script", "usable", "vendor_module"]
