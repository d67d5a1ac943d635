"""Running a Config: Simulation (SimPy-style `now` and `run(until=...)`) and simulate()."""

from __future__ import annotations

import math

import numpy as np

from . import _reference
from . import plan as P
from .config import Config
from .counters import N_COLUMNS
from .errors import ConfigError
from .result import Result


def _engine_class(name: str):
    if name == "python":
        return _reference.Engine
    from . import _core
    return _core.Engine


def _check_times(**values) -> None:
    problems = [(k, f"must be a number > 0 seconds (got {v!r})") for k, v in values.items()
                if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)
                                          and v > 0)]
    if problems:
        raise ConfigError(problems)


class Simulation:
    """A VM under one Config; `run(until=t)` advances simulated time to t seconds."""

    def __init__(self, config: Config, interval: float = 1.0):
        _check_times(interval=interval)
        self.config = config
        self.interval = interval
        self._interval_ns = P.ns(interval)
        self._plan = P.build(config)
        self._engine = _engine_class(config.engine)(self._plan, self._interval_ns)
        self._counts = np.zeros((self._plan.vcpus, 0, N_COLUMNS), dtype=np.int64)
        self.now = 0.0

    def run(self, until: float) -> None:
        _check_times(until=until)
        if until <= self.now:
            raise ConfigError([("until", f"{until!r} is not after now = {self.now!r}")])
        until_ns = P.ns(until)
        need = -(-until_ns // self._interval_ns)
        if need > self._counts.shape[1]:
            grown = np.zeros((self._plan.vcpus, need, N_COLUMNS), dtype=np.int64)
            grown[:, :self._counts.shape[1]] = self._counts
            self._counts = grown
        self._engine.run(until_ns, self._counts)
        self.now = until

    def result(self) -> Result:
        return Result(self.config, self.interval, self.now, self._counts.copy(),
                      self._engine.outstanding_nmis())


def simulate(config: Config, duration: float = 10.0, interval: float | None = None) -> Result:
    """Simulate `duration` seconds; counts per `interval` seconds (default: one interval)."""
    _check_times(duration=duration, interval=interval)
    sim = Simulation(config, interval=duration if interval is None else interval)
    sim.run(until=duration)
    return sim.result()
