"""A SimPy model around a kvmsim VM (kvmsim.simpy): a watchdog on another CPU sends an NMI to
each vCPU in turn every millisecond, and a monitor counts the VM-exits as they happen on
SimPy's clock. Needs kvmsim[simpy].

    python examples/simpy_watchdog.py
"""

import simpy

import kvmsim
from kvmsim.simpy import VM

WORKLOAD = kvmsim.Workload(vcpus=4, guest_exit_rate=20_000.0, pmi_skid=1e-6, sources=[
    kvmsim.Poisson("pmi", rate=2_000.0), kvmsim.Poisson("ipi:any", rate=5_000.0)])


def main(duration: float = 0.02, engine: str = "cython"):
    env = simpy.Environment()
    vm = VM(env, kvmsim.Config(workload=WORKLOAD, engine=engine, seed=4), interval=duration)
    exits = []
    vm.on_event(lambda t, vcpu, event, a, b: exits.append((t, env.now)), events=["kvm_exit"])

    def watchdog(env):
        for k in range(round(duration / 1e-3) - 1):
            yield env.timeout(1e-3)
            vm.inject(k % 4, "nmi")

    env.process(watchdog(env))
    env.run(until=duration)
    result = vm.result()
    print(f"{len(exits)} VM-exits seen as they happened; NMIs injected per vCPU: "
          f"{result.per_vcpu['nmis_injected'].tolist()}")
    return result, exits


if __name__ == "__main__":
    main()
