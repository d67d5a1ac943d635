"""Running a Config: Simulation (SimPy-style `now` and `run(until=...)`) and simulate()."""

from __future__ import annotations

import math
import time

import numpy as np

from . import _reference, catalogue
from . import plan as P
from .config import Config
from .counters import N_COLUMNS
from .errors import ConfigError
from .limits import MAX_COUNTS_BYTES, MAX_SECONDS, MIN_SECONDS
from .result import Result


def _engine_class(name: str):
    if name == "python":
        return _reference.Engine
    from . import _core
    return _core.Engine


def _check_times(**values) -> None:
    problems = [(k, f"must be a number of seconds in {MIN_SECONDS:g}..{MAX_SECONDS:g} "
                    f"(got {v!r})")
                for k, v in values.items()
                if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)
                                          and MIN_SECONDS <= v <= MAX_SECONDS)]
    if problems:
        raise ConfigError(problems)


# The engine runs in slices of simulated time sized to take about this long, so Ctrl-C is
# seen within a slice and the GIL is taken only between slices.
SLICE_SECONDS = (0.02, 0.1)


class Simulation:
    """A VM under one Config; `run(until=t)` advances simulated time to t seconds.

    Ctrl-C during run() raises KeyboardInterrupt with `now` at the last slice completed
    and the counts up to it intact.
    """

    def __init__(self, config: Config, interval: float = 1.0):
        _check_times(interval=interval)
        self.config = config
        self.interval = interval
        self._interval_ns = P.ns(interval)
        self._plan = P.build(config)
        self._engine = _engine_class(config.engine)(self._plan, self._interval_ns)
        self._counts = np.zeros((self._plan.vcpus, 0, N_COLUMNS), dtype=np.int64)
        self._now_ns = 0
        self._slice_ns = 1_000_000

    @property
    def now(self) -> float:
        """Simulated seconds reached."""
        return self._now_ns / P.NS

    def run(self, until: float, on_slice=None) -> None:
        """Advance to `until` seconds; on_slice(now) is called after each slice."""
        _check_times(until=until)
        if until <= self.now:
            raise ConfigError([("until", f"{until!r} is not after now = {self.now!r}")])
        until_ns = P.ns(until)
        size = self._plan.vcpus * self._intervals(until_ns) * N_COLUMNS * 8
        if size > MAX_COUNTS_BYTES:
            raise ConfigError([("interval", f"{self.interval!r} s gives "
                                f"{self._intervals(until_ns):,} intervals x "
                                f"{self._plan.vcpus} vCPUs: {size / 2**30:.1f} GiB of counts; "
                                f"at most {MAX_COUNTS_BYTES / 2**30:g} GiB: use a longer "
                                "interval")])
        while self._now_ns < until_ns:
            end = min(until_ns, self._now_ns + self._slice_ns)
            self._reserve(self._intervals(end))
            start = time.perf_counter()
            try:
                self._engine.run(end, self._counts)
            except KeyboardInterrupt:
                # The C loop holds no GIL, so Ctrl-C surfaces only once the slice is done.
                if self.config.engine == "cython":
                    self._now_ns = end
                raise
            took = time.perf_counter() - start
            self._now_ns = end
            if on_slice:
                on_slice(self.now)
            if took < SLICE_SECONDS[0]:
                self._slice_ns *= 2
            elif took > SLICE_SECONDS[1] and self._slice_ns > 1:
                self._slice_ns //= 2

    def _intervals(self, t_ns: int) -> int:
        return -(-t_ns // self._interval_ns)

    def _reserve(self, n: int) -> None:
        """Room for n intervals, grown by doubling so long runs copy little."""
        have = self._counts.shape[1]
        if n > have:
            grown = np.zeros((self._plan.vcpus, max(n, 2 * have), N_COLUMNS), dtype=np.int64)
            grown[:, :have] = self._counts
            self._counts = grown

    def make_request(self, vcpu: int, request: str, kick: bool = True) -> bool:
        """Post KVM_REQ_<request> to a vCPU from "another CPU" at `now` (kvm_make_request),
        and kick it (kvm_vcpu_kick): a vCPU in guest mode exits at once and services it.
        Returns whether a kick was sent (only to a vCPU in guest mode)."""
        problems = []
        if not (isinstance(vcpu, int) and 0 <= vcpu < self._plan.vcpus):
            problems.append(("vcpu", f"{vcpu!r}; allowed: 0..{self._plan.vcpus - 1}"))
        if request not in catalogue.BY_NAME or \
                catalogue.bit_of(request) not in {int(b) for b in self._plan.order_bits}:
            problems.append(("request", f"{request!r}; allowed: a request the order checks"))
        if problems:
            raise ConfigError(problems)
        return self._engine.make_request(vcpu, catalogue.bit_of(request), kick)

    def result(self) -> Result:
        counts = self._counts[:, :self._intervals(self._now_ns)].copy()
        return Result(self.config, self.interval, self.now, counts,
                      self._engine.outstanding_nmis())


def simulate(config: Config, duration: float = 10.0, interval: float | None = None) -> Result:
    """Simulate `duration` seconds; counts per `interval` seconds (default: one interval)."""
    _check_times(duration=duration, interval=interval)
    sim = Simulation(config, interval=duration if interval is None else interval)
    sim.run(until=duration)
    return sim.result()
