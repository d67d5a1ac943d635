"""kvmsim.sweep: a grid of configs x seeds, run in local threads or on a dask cluster,
appended to a file as results arrive, resumed from it, returned as one pandas table.

docs/sweep.md describes the field paths, seeds, batching, the file and the table.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from contextlib import contextmanager

from .._errors import ConfigError
from .. import _version

from .points import Plan, Run, plan
from .run import run_batch, worker_version
from .store import open_store

# Wall time a task aims at once the cost of a run is known: dask's cost per task is a few ms
# (benchmarks/test_sweep.py measures it), so this keeps it under 2% of the work.
TASK_SECONDS = 0.5


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during sweep(): `table` holds every run completed (and appended) so far."""

    def __init__(self, table):
        super().__init__()
        self.table = table


class SweepFailed(RuntimeError):
    """A task failed (a worker died too often, a version mismatch); finished runs are kept."""


def _is_dask(client) -> bool:
    return hasattr(client, "get_executor") and hasattr(client, "nthreads")


def check_workers(client) -> None:
    """Every dask worker imports the same kvmsim version and model as this process."""
    answers = client.run(worker_version, on_error="return")
    bad = [(addr, v) for addr, v in answers.items() if v != _version.model()]
    if bad:
        raise ConfigError([(f"worker {addr}", f"has kvmsim {v!r}" if isinstance(v, str) else
                            f"cannot run kvmsim ({type(v).__name__}: {v})")
                           for addr, v in bad] +
                          [("client", f"workers need kvmsim {_version.model()}, as here")])


@contextmanager
def _executor(client):
    """(executor, capacity(), stop event or None) for local threads, a concurrent.futures
    Executor, or a dask Client."""
    if client is None:
        n = os.cpu_count() or 1
        stop = threading.Event()
        ex = ThreadPoolExecutor(n, thread_name_prefix="kvmsim-sweep")
        try:
            yield ex, lambda: n, stop
        finally:
            stop.set()                    # an interrupted run stops within one slice
            ex.shutdown(wait=True, cancel_futures=True)
    elif isinstance(client, Executor):
        n = getattr(client, "_max_workers", None) or os.cpu_count() or 1
        stop = threading.Event() if isinstance(client, ThreadPoolExecutor) else None
        try:
            yield client, lambda: n, stop
        finally:
            if stop is not None:
                stop.set()
    elif _is_dask(client):
        check_workers(client)
        ex = client.get_executor(pure=False)
        seen = [0.0, 1]

        def capacity():
            # Workers may join or leave: look again at most once a second.
            if time.monotonic() - seen[0] > 1.0:
                seen[:] = time.monotonic(), max(1, sum(client.nthreads().values()))
            return seen[1]
        try:
            yield ex, capacity, None
        finally:
            ex.shutdown(wait=False)       # cancels whatever is still queued
    else:
        raise ConfigError([("client", f"{type(client).__name__}; give a dask.distributed "
                                      "Client, a concurrent.futures Executor or None")])


def _drive(todo: list[Run], submit, capacity, on_rows) -> None:
    """Keep 2 tasks per worker thread in flight; a task's batch is sized to TASK_SECONDS from
    the time runs took so far (one run each until the first returns), smaller at the tail so
    the last tasks spread over every worker."""
    pending = deque(todo)
    inflight: dict = {}
    per_run = None
    try:
        while pending or inflight:
            while pending and len(inflight) < 2 * capacity():
                n = 1 if per_run is None else max(1, round(TASK_SECONDS / max(per_run, 1e-6)))
                n = min(n, -(-len(pending) // (2 * capacity())))
                batch = [pending.popleft() for _ in range(n)]
                inflight[submit(batch)] = batch
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            # In submission order; a failed task is raised once the others' rows are kept.
            failed = None
            for f in [f for f in inflight if f in done]:
                batch = inflight.pop(f)
                if f.exception() is not None:
                    failed = failed or f
                    continue
                rows, seconds = f.result()
                took = seconds / len(batch)
                per_run = took if per_run is None else 0.7 * per_run + 0.3 * took
                on_rows(rows)
            if failed:
                failed.result()
    finally:
        for f in inflight:
            f.cancel()


def _file_row(plan: Plan, run: Run, totals: dict) -> dict:
    return {"key": run.key, **{k: plan.labels[k][run.point] for k in plan.keys},
            "seed_index": run.seed_index, "seed": run.seed,
            **{c: int(totals.get(c, 0)) for c in plan.counters}}


def done_runs(plan: Plan, rows: list[dict]) -> dict:
    """key -> row of the runs of this plan among rows a store holds (rows of other sweeps,
    or of another kvmsim version, are left alone)."""
    keys = {r.key for r in plan.runs}
    return {row["key"]: row for row in rows if row["key"] in keys}


def _progress(plan: Plan, done: dict, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    points = plan.runs[-1].point + 1
    complete = points - len({r.point for r in plan.runs if r.key not in done})
    return tqdm(total=points, initial=complete, unit="point", leave=False,
                desc="kvmsim sweep", dynamic_ncols=True)


def execute(plan: Plan, done: dict, store=None, client=None, progress: bool = False):
    """Run what `done` lacks, append each task's rows to the store, return the table."""
    from .table import SweepTable   # pandas: kvmsim[dask]

    by_key = {r.key: r for r in plan.runs}
    left = {}
    for r in plan.runs:
        left[r.point] = left.get(r.point, 0) + (r.key not in done)
    bar = _progress(plan, done, progress)

    def on_rows(rows):
        new = [_file_row(plan, by_key[key], totals) for key, totals in rows]
        if store:
            store.append(new)
        for row in new:
            done[row["key"]] = row
            point = by_key[row["key"]].point
            left[point] -= 1
            if bar is not None and left[point] == 0:
                bar.update(1)

    todo = [r for r in plan.runs if r.key not in done]
    try:
        with _executor(client) as (ex, capacity, stop):
            def submit(batch):
                return ex.submit(run_batch, _version.model(),
                                 [(r.key, r.config) for r in batch], plan.duration, stop)
            _drive(todo, submit, capacity, on_rows)
    except KeyboardInterrupt:
        raise SweepInterrupted(SweepTable.build(plan, done)) from None
    except ConfigError:
        raise
    except Exception as e:
        kept = f"; the {len(done)} runs done are in {store.path}: run again to resume" \
            if store else ""
        raise SweepFailed(f"a sweep task failed: {type(e).__name__}: {e}{kept}") from e
    finally:
        if bar is not None:
            bar.close()
    return SweepTable.build(plan, done)


def sweep(base, grid: dict | None = None, seeds: int = 1, duration: float | None = None,
          client=None, out: str | None = None, progress: bool = False):
    """Run `base` (a Config or a Scenario) at every point of `grid` x `seeds` seeds.

    grid maps a field path (order, vendor, workload.vcpus, workload.sources[0].rate,
    costs.state_load, ...) to a list of values; points are the product of the lists.
    Seeds: SeedSequence(base.seed).spawn(seeds), the same for every point (paired runs, as
    `kvmsim compare` does). duration: simulated seconds per run (default: the Scenario's,
    else 10). client: None (local threads, one per core), a dask.distributed Client, or a
    concurrent.futures Executor. out: a file that rows are appended to as they arrive; if it
    exists, the runs it holds are not run again (resume). progress: a bar over points.

    Returns a SweepTable (a pandas DataFrame): one row per point and seed, the grid paths,
    seed_index, seed (Config.seed of the run) and every counter; .summary() gives the mean
    and 95% interval per point. Ctrl-C raises SweepInterrupted (a KeyboardInterrupt) whose
    .table holds the runs completed."""
    from . import table  # noqa: F401  (pandas, kvmsim[dask]: checked before any work)

    problems = []
    try:
        p = plan(base, grid, seeds, duration)
    except ConfigError as e:
        problems += e.problems
    store, rows = None, []
    if out is not None:
        try:
            store = open_store(os.fspath(out))
            rows = store.load()
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return execute(p, done_runs(p, rows), store, client, progress)
