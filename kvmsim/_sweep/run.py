"""What a sweep task runs, in a thread here or in a dask worker: a batch of whole runs.

Only kvmsim is needed on the worker: no pandas, no dask imports.
"""

from __future__ import annotations

import time

from .._config import Config
from .._simulation import Simulation
from .. import _version


class Stopped(Exception):
    """The sweep was interrupted: a local task stops at the next slice of its run."""


def worker_version() -> str:
    return _version.model()


def run_batch(version: str, runs: list[tuple[str, dict]], duration: float, stop=None):
    """Run each (key, dumped Config) for `duration` simulated seconds.

    Returns ([(key, totals)], wall seconds spent running). `stop` (a threading.Event, local
    threads only) ends the batch within one slice of simulated time (Simulation.run)."""
    if version != _version.model():
        raise RuntimeError(f"this worker runs kvmsim {_version.model()}, the sweep was "
                           f"planned with kvmsim {version}: install the same version")

    def check(_now):
        if stop.is_set():
            raise Stopped

    start = time.perf_counter()
    out = []
    for key, cfg in runs:
        # the sweep's runs already fill the cores: each in one thread unless it says more
        sim = Simulation(Config(**{**cfg, "threads": cfg.get("threads") or 1}),
                         interval=duration)
        sim.run(until=duration, on_slice=check if stop is not None else None)
        out.append((key, sim.result().totals))
    return out, time.perf_counter() - start
