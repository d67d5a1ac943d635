"""`kvmsim calibrate`: this host's costs for the model, where the host can show them.

Everything is timed from user space with time.perf_counter_ns around KVM_RUN (no kprobes,
and the vendor module may emit no kvm_entry/kvm_exit), as the fastest batch mean (the least disturbed by other load on the machine):
- t_idle: a KVM_RUN that never enters (kvm_run->immediate_exit): the ioctl, vcpu_load/put;
- t_insn: one guest instruction (the spin loop's `loop`, timed over SPIN iterations; on a
  host that emulates the guest, as PVM does here, this is one emulated instruction);
- t_stop: KVM_RUN to the next stop: one exit to user space and back plus STOP_INSNS
  instructions;
- t_nmi: the same with an NMI injected at every entry, NMI_INSNS more instructions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import kvmsim

from ._vmm import Machine

STOP_INSNS = 8          # guest.s from an OUT to the next: mov, loop, cmp, jne, jmp, inc, mov, out
NMI_INSNS = 14          # guest.s nmi_entry without a stop inside, and log_delivery
SPIN = 800              # below one emulation batch (pvm_emul_batch = 1024 here)
MEASURED = ("vmexit", "vmenter", "event")      # the Costs fields costs_toml() prints
# Why this host cannot time the other Costs fields. not_measured() lists every Costs field
# but MEASURED, so a cost the model gains is listed even before it gets a reason here.
WHY_NOT_MEASURED = {
    "check": "one kvm_check_request(): no timed probe inside vcpu_enter_guest()",
    "handler": "request handlers: no kprobes on this host",
    "handlers": "process_nmi() and the PMU handlers: no kprobes on this host",
    "state_load": "kvm_mmu_reload .. kvm_vcpu_exit_request: no timed probe",
    "cancel": "a cancelled entry costs a return to user space here (a signal), not a loop",
    "task_work": "xfer_to_guest_mode_handle_work: a pending signal returns to user space here "
                 "(-EINTR), and a schedule() is not timed apart without kprobes",
    "ipi": "a guest's ICR write to another vCPU: the test VM has one vCPU (a KVM_SIGNAL_MSI "
           "from user space is not that path)",
}
UNKNOWN = "no probe on this host times it (calibrate has no rule for this cost yet)"


def not_measured() -> dict[str, str]:
    """Every field of kvmsim.Costs that calibrate does not measure, with why not."""
    return {name: WHY_NOT_MEASURED.get(name, UNKNOWN) for name in kvmsim.Costs.model_fields
            if name not in MEASURED}


@dataclass
class Calibration:
    """What measure() timed on this host (the module's docstring says how): an idle KVM_RUN,
    one guest instruction, a run to the next stop, the same with an NMI; the runs and
    batches it took."""
    t_idle: float
    t_insn: float
    t_stop: float
    t_nmi: float
    runs: int
    batches: int

    @property
    def round_trip(self) -> float:
        """An exit to user space and back, the guest's instructions taken out."""
        return self.t_stop - STOP_INSNS * self.t_insn

    @property
    def entry_exit(self) -> float:
        """The part of KVM_RUN that enters and leaves the guest: vmexit + vmenter."""
        return self.t_stop - self.t_idle - STOP_INSNS * self.t_insn

    @property
    def event(self) -> float:
        """An entry that injects an NMI, less one that does not, less the handler's
        instructions: process_nmi + kvm_check_and_inject_events + the delivery."""
        return self.t_nmi - self.t_stop - NMI_INSNS * self.t_insn


def _median_per_run(batches: int, runs: int, step) -> float:
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(runs):
            step()
        samples.append((time.perf_counter_ns() - t0) / runs)
    return min(samples)


def measure(runs: int = 200, batches: int = 5) -> Calibration:
    with Machine(spin=1) as m:
        m.run_to_stop()

        def idle():
            m.vcpu.run_state.immediate_exit = 1
            m.vcpu.run()
            m.vcpu.run_state.immediate_exit = 0

        def stop():
            m.runs = 0                                  # calibration runs are bounded here
            m.run_to_stop()

        def stop_nmi():
            m.vcpu.nmi()
            stop()

        t_idle = _median_per_run(batches, runs, idle)
        t_stop = _median_per_run(batches, runs, stop)
        t_nmi = _median_per_run(batches, runs, stop_nmi)
        m.write("spin", SPIN)
        t_spin = _median_per_run(batches, max(runs // 10, 1), stop)
    t_insn = (t_spin - t_stop) / (SPIN - 1)
    return Calibration(t_idle, t_insn, t_stop, t_nmi, runs, batches)


def costs_toml(c: Calibration, host: str) -> str:
    """The [costs] table; a derived cost that is not above 0 is not resolved (it is smaller
    than the noise of the terms it is the difference of) and stays out of the table."""
    half, event = round(c.entry_exit / 2), round(c.event)
    lines = [f"# kvmsim calibrate on {host}: fastest of {c.batches} batches of {c.runs} "
             "KVM_RUNs", "[costs]"]
    if half > 0:
        lines += [f"vmexit = {half}   # ns, calibrated to half of KVM_RUN's entry and exit",
                  f"vmenter = {half}  # ns, the other half"]
    else:
        lines.append(f"# vmexit, vmenter: not resolved (entry and exit {c.entry_exit:.0f} ns: "
                     "below the noise of the emulated instructions taken out)")
    if event > 0:
        lines.append(f"event = {event}  # ns, calibrated to an NMI injection (process_nmi, "
                     "the EVENT block and the delivery)")
    else:
        lines.append(f"# event: not resolved ({c.event:.0f} ns)")
    lines += ["# not measured on this host:",
              *[f"#   {k}: {why}" for k, why in not_measured().items()],
              "# measured, not a kvmsim cost (the model has no user space):",
              f"#   exit to user space and back: {c.round_trip:.0f} ns",
              f"#   KVM_RUN that never enters (immediate_exit): {c.t_idle:.0f} ns",
              f"#   one guest instruction (emulated on this host): {c.t_insn:.0f} ns"]
    return "\n".join(lines) + "\n"
