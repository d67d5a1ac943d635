"""kvmsim inside a SimPy model: one clock (SimPy's, in seconds), event-driven.

    import simpy, kvmsim
    from kvmsim.simpy import VM

    env = simpy.Environment()
    vm = VM(env, kvmsim.Config(workload="spec2017-vtune"))
    vm.on_event(lambda t, vcpu, event, a, b: ..., events=["kvm_exit"])   # at env.now == t

    def watchdog(env):
        while True:
            yield env.timeout(0.001)
            vm.inject(0, "nmi")                   # lands at env.now
    env.process(watchdog(env))
    env.run(until=0.05)
    vm.result().totals["canceled_vmenters"]

The VM is a SimPy process. With a callback (on_event) it sleeps until kvmsim's next event of
its own (Simulation.next_event) or until another process posts to it, then runs kvmsim
through that instant: kvmsim's events happen at their own times on SimPy's clock, and the
callback sees env.now equal to the event's time (one SimPy step per kvmsim event: tens of
thousands of simulated events per second). Without one it sleeps until a post, and kvmsim
catches up with env.now only when asked (a post, state(), result()): the counts are the
same. kvmsim keeps whole nanoseconds: a post lands at env.now rounded to the nanosecond, or
1 ns later when kvmsim has just processed an event of its own at that instant. Needs the
`simpy` extra (pip install "kvmsim[simpy]").
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import simpy

from ._config import Config
from ._limits import NS
from ._result import Result
from ._simulation import Simulation


class VM:
    """A kvmsim Simulation that shares a SimPy Environment's clock (seconds from 0)."""

    def __init__(self, env: simpy.Environment, config: Config, interval: float = 1.0, *,
                 keep: Iterable[str] | None = None):
        if env.now != 0:
            raise ValueError(f"env.now is {env.now!r}; kvmsim's clock starts at 0: make the VM "
                             "before the environment runs")
        self.env = env
        self.sim = Simulation(config, interval, keep=keep)
        self._posted = env.event()
        self._stepping = False                 # one step per kvmsim event (a callback)
        self.process = env.process(self._run())

    def _run(self):
        while True:
            t = self.sim.next_event() if self._stepping else math.inf
            wait = self._posted if math.isinf(t) else \
                self._posted | self.env.timeout(max(0.0, t - self.env.now))
            yield wait
            if self._posted.triggered:
                self._posted = self.env.event()
            self._to(round(self.env.now * NS) + 1)     # through this instant

    def _to(self, until_ns: int) -> None:
        if until_ns > self.sim.now_ns:
            self.sim.run(until=until_ns / NS)

    def _post(self, action):
        """Bring kvmsim to env.now, post there, and wake the VM's process. From a callback
        (kvmsim is running: env.now is the event's time) the post goes straight in."""
        if not self.sim.running:
            self._to(round(self.env.now * NS))
        out = action()
        if not self._posted.triggered:
            self._posted.succeed()
        return out

    def inject(self, vcpu: int, kind: str, count: int = 1) -> bool:
        """Simulation.inject at env.now: NMIs, fixed IRQs or guest counter overflows."""
        return self._post(lambda: self.sim.inject(vcpu, kind, count))

    def make_request(self, vcpu: int, request: str, kick: bool = True) -> bool:
        """Simulation.make_request at env.now: kvm_make_request, and kvm_vcpu_kick."""
        return self._post(lambda: self.sim.make_request(vcpu, request, kick))

    def on_event(self, callback: Callable[[float, int, str, int, int], None] | None,
                 events: Iterable[str] | None = None) -> None:
        """Simulation.on_event: callback(t, vcpu, event, a, b) at env.now == t."""
        self._to(round(self.env.now * NS))
        self.sim.on_event(callback, events)
        self._stepping = callback is not None
        if not self._posted.triggered:
            self._posted.succeed()

    def state(self, vcpu: int) -> dict[str, int]:
        """The vCPU's state as of env.now."""
        self._to(round(self.env.now * NS))
        return self.sim.state(vcpu)

    def result(self) -> Result:
        """The counts up to env.now."""
        self._to(round(self.env.now * NS))
        return self.sim.result()
