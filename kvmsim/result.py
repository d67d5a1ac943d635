"""Result: the counts of a run as totals, per interval and per vCPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import catalogue
from .config import Config
from .counters import COLUMNS, EVENTS, PHASES, REQ_BASE


@dataclass(frozen=True)
class Result:
    config: Config
    interval: float          # seconds
    duration: float          # seconds
    counts: np.ndarray       # int64[vcpus, intervals, columns]
    nmis_outstanding: np.ndarray  # int64[vcpus], at the end

    @property
    def names(self) -> tuple[str, ...]:
        """Counter names: events, ns.<phase>, requests.<NAME> for the checks in the order."""
        reqs = tuple(f"requests.{n}" for n in self.config.check_order)
        return EVENTS + tuple(f"ns.{p}" for p in PHASES) + reqs

    def _column(self, name: str) -> int:
        if name.startswith("requests."):
            return REQ_BASE + catalogue.bit_of(name.removeprefix("requests."))
        return COLUMNS.index(name)

    @property
    def times(self) -> np.ndarray:
        """End of each interval, seconds (the perf stat -I timestamp)."""
        n = self.counts.shape[1]
        return np.minimum(np.arange(1, n + 1) * self.interval, self.duration)

    @property
    def intervals(self) -> dict[str, np.ndarray]:
        by_interval = self.counts.sum(axis=0)
        return {n: by_interval[:, self._column(n)] for n in self.names}

    @property
    def per_vcpu(self) -> dict[str, np.ndarray]:
        by_vcpu = self.counts.sum(axis=1)
        out = {n: by_vcpu[:, self._column(n)] for n in self.names}
        out["nmis_outstanding"] = self.nmis_outstanding
        return out

    @property
    def totals(self) -> dict[str, int]:
        total = self.counts.sum(axis=(0, 1))
        out = {n: int(total[self._column(n)]) for n in self.names}
        out["nmis_outstanding"] = int(self.nmis_outstanding.sum())
        return out
