"""Result: the counts of a run as totals, per interval and per vCPU."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import _names, _spec
from ._config import Config
from ._errors import ConfigError
from ._limits import NS

FORMAT = 2            # the JSON layout of Result.to_json


def sum_over_vcpus(counts: np.ndarray) -> np.ndarray:
    """counts summed over its first axis (the vCPUs), exactly: in int64 when no partial sum
    can pass it, else as Python ints (an object array). ns.guest of 16 vCPUs over a 1e9 s
    interval is 1.6e19 ns, past int64's 9.2e18."""
    if counts.size == 0:
        return counts.sum(axis=0)
    peak = max(int(counts.max()), -int(counts.min()))
    if peak * counts.shape[0] < 2**63:
        return counts.sum(axis=0)
    return counts.astype(object).sum(axis=0)


class Counts(Mapping):
    """Counters by name: kvmsim names, perf names (probe:vmx_cancel_injection) and tracepoint
    names (kvm_exit) all find the same value."""

    def __init__(self, names: tuple[str, ...], get, extra: dict | None = None):
        self._names, self._get, self._extra = names, get, extra or {}

    def __getitem__(self, name: str):
        if name in self._extra:
            return self._extra[name]
        return self._get(_names.counter(name))

    def __iter__(self):
        return iter(self._names + tuple(self._extra))

    def __len__(self) -> int:
        return len(self._names) + len(self._extra)

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(frozen=True, eq=False)
class Result:
    """The counts of one run. Times are simulated; every counter is an int.

    `totals` and `per_vcpu` hold every counter; `intervals` and `counts` hold the counters
    the Simulation kept per interval (`columns`, all by default).
    """

    config: Config
    interval_ns: int
    duration_ns: int
    columns: tuple[int, ...]      # counts columns kept per interval (_spec column numbers)
    counts: np.ndarray            # int64[vcpus, intervals, len(columns)]
    vcpu_totals: np.ndarray       # int64[vcpus, _spec.N_COLUMNS], the whole run
    nmis_outstanding: np.ndarray  # int64[vcpus], at the end

    @property
    def interval(self) -> float:
        return self.interval_ns / NS

    @property
    def duration(self) -> float:
        return self.duration_ns / NS

    @property
    def complete(self) -> int:
        """Intervals that ran whole; a last, shorter one may follow."""
        return self.duration_ns // self.interval_ns

    @property
    def names(self) -> tuple[str, ...]:
        """Counter names: events, ns.<phase>, and per request of the order
        requests.<NAME>, cancels.async.<NAME>, cancels.backedge.<NAME>."""
        return _names.for_order(self.config.check_order)

    def column(self, name: str) -> int:
        """Where a counter (any of its names) sits in `counts`; KeyError if not kept."""
        col = _spec.column(_names.counter(name))
        if col not in self.columns:
            raise KeyError(f"{name!r} was not kept per interval; Simulation(keep=...) "
                           "chooses the counters kept")
        return self.columns.index(col)

    @property
    def times(self) -> np.ndarray:
        """End of each interval, seconds (the perf stat -I timestamp)."""
        ends = np.minimum(np.arange(1, self.counts.shape[1] + 1) * self.interval_ns,
                          self.duration_ns)
        return ends / NS

    @property
    def intervals(self) -> Counts:
        """Each kept counter per interval, summed over vCPUs (numpy arrays)."""
        kept = {c: i for i, c in enumerate(self.columns)}
        names = tuple(n for n in self.names if _spec.column(n) in kept)
        summed = sum_over_vcpus(self.counts)       # ns.* of many vCPUs pass int64

        def get(name):
            col = _spec.column(name)
            if col not in kept:
                raise KeyError(f"{name!r} was not kept per interval; Simulation(keep=...) "
                               "chooses the counters kept")
            return summed[:, kept[col]]
        return Counts(names, get)

    @property
    def vcpus(self) -> int:
        return self.vcpu_totals.shape[0]

    @property
    def per_vcpu(self) -> Counts:
        """Each counter per vCPU (numpy arrays)."""
        return Counts(self.names, lambda n: self.vcpu_totals[:, _spec.column(n)],
                      {"nmis_outstanding": self.nmis_outstanding})

    @property
    def totals(self) -> Counts:
        """Each counter over the whole run and every vCPU (Python ints: no overflow)."""
        total = self.vcpu_totals.astype(object).sum(axis=0)
        return Counts(self.names, lambda n: int(total[_spec.column(n)]),
                      {"nmis_outstanding": int(self.nmis_outstanding.sum())})

    def to_json(self) -> str:
        """Everything needed to rebuild this Result exactly (Result.from_json)."""
        return json.dumps({
            "kvmsim_result": FORMAT,
            "config": self.config.model_dump(mode="json"),
            "interval_ns": self.interval_ns, "duration_ns": self.duration_ns,
            "layout": [_spec.column_name(i) for i in range(_spec.N_COLUMNS)],
            "columns": list(self.columns),
            "shape": list(self.counts.shape),
            "counts": self.counts.ravel().tolist(),
            "vcpu_totals": self.vcpu_totals.tolist(),
            "nmis_outstanding": self.nmis_outstanding.tolist(),
        })

    @classmethod
    def from_json(cls, text: str) -> Result:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("kvmsim_result") != FORMAT or \
                    data.get("layout") != [_spec.column_name(i) for i in range(_spec.N_COLUMNS)]:
                raise ValueError
            return cls(Config(**data["config"]), int(data["interval_ns"]),
                       int(data["duration_ns"]), tuple(int(c) for c in data["columns"]),
                       np.array(data["counts"], dtype=np.int64).reshape(data["shape"]),
                       np.array(data["vcpu_totals"], dtype=np.int64),
                       np.array(data["nmis_outstanding"], dtype=np.int64))
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ConfigError([("json", "not a kvmsim result of this version (written by "
                                        "Result.to_json)")]) from None

    def to_pandas(self, per_vcpu: bool = False):
        """Kept counts per interval as a DataFrame indexed by time (and vcpu with per_vcpu)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Result.to_pandas() needs pandas: pip install 'kvmsim[pandas]'") \
                from None
        names = tuple(self.intervals)
        cols = [self.column(n) for n in names]
        if not per_vcpu:
            return pd.DataFrame(sum_over_vcpus(self.counts)[:, cols], columns=list(names),
                                index=pd.Index(self.times, name="time"))
        v, n, _ = self.counts.shape
        index = pd.MultiIndex.from_product([range(v), self.times], names=["vcpu", "time"])
        return pd.DataFrame(self.counts[:, :, cols].reshape(v * n, len(cols)),
                            columns=list(names), index=index)

    def plot(self, counter: str = "canceled_vmenters", ax=None, label: str | None = None):
        """Draw `counter` (any of its names) per interval with matplotlib; returns the Axes."""
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
        ax.set_ylabel(f"{_names.perf_name(_names.counter(counter))} per {self.interval:g} s")
        return ax
