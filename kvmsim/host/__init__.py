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
CPUINFO = "/proc/cpuinfo"
SYS_MODULE = "/sys/module"          # one directory per loaded module
VENDOR_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")


def _cpu_flags() -> set[str]:
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _loaded_vendor_modules() -> list[str]:
    """Which of kvm_intel, kvm_amd and kvm_pvm are loaded (SYS_MODULE/<name> exists)."""
    return [n for n in VENDOR_MODULES if os.path.isdir(os.path.join(SYS_MODULE, n))]


def _why_missing(device: str) -> str:
    loaded = _loaded_vendor_modules()
    if loaded:
        return (f"{device} is missing although {' and '.join(loaded)} is loaded (udev did not "
                f"create the node: mknod {device} c 10 232)")
    why = f"{device} is missing: no KVM module (kvm_intel, kvm_amd or kvm_pvm) is loaded"
    flags = _cpu_flags()
    for flag, module in (("vmx", "kvm_intel"), ("svm", "kvm_amd")):
        if flag in flags:
            return f"{why} (the CPU shows {flag}: modprobe {module})"
    return (f"{why}; the CPU shows no vmx/svm flag, so kvm_intel and kvm_amd cannot load "
            "(inside a VM: nested virtualisation is off, or disabled in firmware); kvm_pvm "
            "needs neither (modprobe kvm_pvm, on a kernel built with PVM)")


def usable(device: str | None = None) -> str:
    """'' if /dev/kvm (DEVICE) can run the cases, else why not: missing (which vendor module
    is loaded, whether the CPU shows vmx/svm), permission, no virtualisation support, wrong
    API, no VM with an irqchip."""
    device = device or DEVICE
    if not os.path.exists(device):
        return _why_missing(device)
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
        names = os.listdir(SYS_MODULE)
    except OSError:
        return ""
    return next((n for n in sorted(names) if n.startswith("kvm_")), "")


__all__ = ["CASES", "Case", "Observation", "Outcome", "Script", "usable", "vendor_module"]
