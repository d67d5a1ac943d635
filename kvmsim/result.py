"""Result: the counts of a run as totals, per interval and per vCPU."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from . import catalogue
from .config import Config
from .counters import BIT_GROUPS, COLUMNS, EVENTS, N_BITS, PHASES, REQ_BASE


@dataclass(frozen=True)
class Result:
    config: Config
    interval: float          # seconds
    duration: float          # seconds
    counts: np.ndarray       # int64[vcpus, intervals, columns]
    nmis_outstanding: np.ndarray  # int64[vcpus], at the end

    @property
    def names(self) -> tuple[str, ...]:
        """Counter names: events, ns.<phase>, and per request of the order
        requests.<NAME>, cancels.async.<NAME>, cancels.backedge.<NAME>."""
        per_request = tuple(f"{g}.{n}" for g in BIT_GROUPS for n in self.config.check_order)
        return EVENTS + tuple(f"ns.{p}" for p in PHASES) + per_request

    def _column(self, name: str) -> int:
        group, _, request = name.rpartition(".")
        if group in BIT_GROUPS and request in catalogue.BY_NAME:
            return REQ_BASE + BIT_GROUPS.index(group) * N_BITS + catalogue.bit_of(request)
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

    def to_json(self) -> str:
        """Everything needed to rebuild this Result exactly (Result.from_json)."""
        return json.dumps({
            "kvmsim_result": 1,
            "config": self.config.model_dump(mode="json"),
            "interval": self.interval, "duration": self.duration,
            "columns": list(COLUMNS),
            "counts": self.counts.tolist(),
            "nmis_outstanding": self.nmis_outstanding.tolist(),
        })

    @classmethod
    def from_json(cls, text: str) -> Result:
        data = json.loads(text)
        if data.get("kvmsim_result") != 1 or data.get("columns") != list(COLUMNS):
            raise ValueError("not a kvmsim result of this version (kvmsim_result/columns)")
        return cls(Config(**data["config"]), data["interval"], data["duration"],
                   np.array(data["counts"], dtype=np.int64).reshape(
                       -1, len(data["counts"][0]) if data["counts"] else 0, len(COLUMNS)),
                   np.array(data["nmis_outstanding"], dtype=np.int64))

    def to_pandas(self, per_vcpu: bool = False):
        """Counts per interval as a DataFrame indexed by time (and vcpu with per_vcpu)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Result.to_pandas() needs pandas: pip install 'kvmsim[pandas]'") \
                from None
        cols = [self._column(n) for n in self.names]
        if not per_vcpu:
            return pd.DataFrame(self.counts.sum(axis=0)[:, cols], columns=list(self.names),
                                index=pd.Index(self.times, name="time"))
        v, n, _ = self.counts.shape
        index = pd.MultiIndex.from_product([range(v), self.times], names=["vcpu", "time"])
        return pd.DataFrame(self.counts[:, :, cols].reshape(v * n, len(cols)),
                            columns=list(self.names), index=index)

    def plot(self, counter: str = "canceled_vmenters", ax=None, label: str | None = None):
        """Draw `counter` per interval (matplotlib); returns the Axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("Result.plot() needs matplotlib: pip install 'kvmsim[plot]'") \
                from None
        if ax is None:
            ax = plt.figure(figsize=(8, 4.5)).add_subplot()
        ax.plot(self.times, self.intervals[counter], marker="o",
                label=label or self.config.order_name)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel(f"{counter} per {self.interval:g} s")
        return ax
