"""The interface both engines implement, and the choice between them.

`_core.Engine` (Cython, C state, a nogil loop) and `_reference.Engine` (plain Python) run the
same rules from the same Plan and give identical counts for a seed. Nothing outside the two
engines asks which one it holds.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Protocol

import numpy as np

from ._plan import Plan

# hook(t_ns, vcpu, event, a, b): event is a _spec.TraceEvent, a and b its fields.
TraceHook = Callable[[int, int, int, int, int], None]


class Engine(Protocol):
    """What Simulation needs of an engine (docs/architecture.md)."""

    n_vcpus: int

    def run(self, until_ns: int, counts: np.ndarray, first_interval: int,
            stop_event: threading.Event | None = None) -> int:
        """Advance every vCPU to until_ns, adding into counts[vcpu, interval - first_interval,
        column]; return a _spec.Stop code. It stops early (each vCPU's `now` says where) when
        stop_event is set, on Ctrl-C, or when a request no check clears is pending."""

    def make_request(self, vcpu: int, bit: int, kick: bool) -> bool:
        """kvm_make_request from another CPU at the vCPU's `now`, and kvm_vcpu_kick if kick;
        returns whether a kick was sent (the vCPU was in guest mode)."""

    def inject(self, vcpu: int, kind: int, count: int = 1) -> bool:
        """`count` NMIs or IRQs from another CPU, or guest counter overflows (a _spec.Src
        of nmi, irq, pmi), at the vCPU's `now`, with a kick; returns whether it was sent."""

    def set_trace(self, hook: TraceHook | None) -> None:
        """Call hook for every TraceEvent from now on (None: stop). A hook that raises
        stops the run; run() re-raises its exception."""

    def state(self, vcpu: int) -> dict[str, int]:
        """The vCPU's state: _spec.STATE_FIELDS."""

    def next_event(self, vcpu: int) -> int:
        """When the vCPU next does something of its own (ns, >= its now): an exit, a pass,
        a wake-up; _spec.NEVER when nothing is due."""


def create(plan: Plan, engine: str, threads: int = 1) -> Engine:
    """The engine named by Config.engine, built from a plan; the compiled one runs vCPUs
    that send each other no IPIs in up to `threads` threads (the counts do not change)."""
    if engine == "python":
        from ._reference import Engine as Reference
        return Reference(plan)
    try:
        from ._core import Engine as Core
    except ImportError as e:
        here = os.path.dirname(os.path.abspath(__file__))
        raise ImportError(
            f"kvmsim's compiled engine (kvmsim._core) is not built in {here}: {e}. If that is "
            "a source checkout, install it with `pip install -e .` (or build in place with "
            "`python setup.py build_ext --inplace`), or run from outside it so the installed "
            "kvmsim is imported; Config(engine='python') runs without it") from None
    return Core(plan, threads)
