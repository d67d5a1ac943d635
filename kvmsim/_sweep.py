"""kvmsim.sweep: a grid of configs x seeds, run in local threads or on a dask cluster,
appended to a file as results arrive, resumed from it, returned as one pandas table.

docs/sweep.md describes the field paths, seeds, batching, the file and the table.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import kvmsim
from kvmsim import Config, ConfigError, Result, Scenario

from . import _sweep_grid as G
from ._sweep_run import run_batch, worker_version
from ._sweep_store import open_store

# Wall time a task aims at once the cost of a run is known: dask's cost per task is a few ms
# (benchmarks/test_sweep.py measures it), so this keeps it under 2% of the work.
TASK_SECONDS = 0.5


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during sweep(): `table` holds every run completed (and appended) so far."""

    def __init__(self, table):
        super().__init__()
        self.table = table


class SweepFailed(RuntimeError):
    """A task failed (a worker died too often, a version mismatch); finished runs are kept."""


@dataclass(frozen=True)
class Run:
    key: str              # hash of the run: config with its seed, duration, kvmsim version
    point: int
    seed_index: int
    seed: int
    config: dict          # Config.model_dump() with the seed set


@dataclass(frozen=True)
class Plan:
    keys: list[str]                 # grid paths, in the order given
    labels: dict[str, list]         # grid path -> the table cell of each point
    runs: list[Run]                 # point-major, then seed index
    counters: list[str]
    seeds: int
    duration: float


def seed_ints(base_seed: int, n: int) -> list[int]:
    """Config.seed of seed index 0..n-1: SeedSequence(base_seed).spawn(n), one 32-bit word
    each. Child i does not depend on n, so adding seeds keeps the runs already done."""
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(base_seed).spawn(n)]


def _run_key(cfg: Config, duration: float) -> str:
    text = json.dumps({"kvmsim": kvmsim.__version__, "duration": duration,
                       "config": cfg.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def counter_names(cfg: Config) -> list[str]:
    """Result.totals' keys for this config's order (an empty Result knows its names)."""
    empty = Result(cfg, 1.0, 0.0, np.zeros((0, 0, 0), np.int64), np.zeros(0, np.int64))
    return [*empty.names, "nmis_outstanding"]


def _union(names: list[list[str]]) -> list[str]:
    """Counters of every order in the grid, each kind together (requests.*, cancels.async.*,
    ...) in the order the first config lists them."""
    seen = list(dict.fromkeys(n for ns in names for n in ns))
    kinds = list(dict.fromkeys(n.rpartition(".")[0] or n for n in seen))
    return sorted(seen, key=lambda n: kinds.index(n.rpartition(".")[0] or n))


def _base(base) -> tuple[Config, float | None]:
    if isinstance(base, Scenario):
        return base.config, base.duration
    if isinstance(base, Config):
        return base, None
    raise ConfigError([("base", f"{type(base).__name__}; give a kvmsim.Config or a "
                                "kvmsim.Scenario")])


def _grid_values(grid, problems) -> dict[str, tuple[tuple[G.Part, ...], list]]:
    """Each grid key parsed as a path, its values checked: a non-empty list, no repeats."""
    if not isinstance(grid, dict):
        problems.append(("grid", f"{type(grid).__name__}; give a dict of field path -> list "
                                 "of values"))
        return {}
    out = {}
    for key, values in grid.items():
        try:
            parts = G.parse_path(key)
        except G.PathError as e:
            problems.append((key, str(e)))
            continue
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
            problems.append((key, f"{values!r}; give a list of values"))
            continue
        values = list(values)
        cells = [json.dumps(G.label(v), sort_keys=True) for v in values]
        twice = sorted({c for c in cells if cells.count(c) > 1})
        if not values:
            problems.append((key, "no values; give at least one"))
        elif twice:
            problems.append((key, f"value {', '.join(twice)} given twice: every point "
                                  "runs once"))
        else:
            out[key] = (parts, values)
    return out


def _loc(parts) -> str:
    """A path as ConfigError spells it (workload.sources.0.rate)."""
    return ".".join(str(p) for p in parts)


def _at(node, parts):
    for p in parts:
        node = node[p]
    return node


def _point_config(base: dict, assigned: list, problems, shared: dict):
    """(Config, values) of a point: (key, parts, value) applied shallow paths first (a Text
    parsed by its field's type), then validated; (None, None) if bad. A problem is named by
    the grid key and value it comes from; one no key owns (a model's own check) goes to
    `shared` (problem -> points), as the same one often comes from many points."""
    data = copy.deepcopy(base)

    def expand(prefix):
        # The field's own validator expands the name. Try it in the base config first, so
        # that a bad value elsewhere in this point is reported once, as itself.
        alone = copy.deepcopy(base)
        try:
            _at(alone, prefix[:-1])[prefix[-1]] = _at(data, prefix)
        except (KeyError, IndexError, TypeError):
            alone = None
        for candidate in [c for c in (alone, data) if c is not None]:
            try:
                return _at(Config(**candidate).model_dump(), prefix)
            except ConfigError as e:
                error = e
        raise G.PathError(f"{G.show(prefix)} = {_at(data, prefix)!r} could not be expanded "
                          f"to set a field in it: {error}")

    parsed = {}
    for key, parts, value in sorted(assigned, key=lambda a: len(a[1])):
        try:
            node, field, ann = G.walk(Config, data, parts, expand)
            parsed[key] = G.parse_text(value, ann) if isinstance(value, G.Text) else value
        except (G.PathError, ValueError) as e:
            where = f"{key}={value}" if isinstance(value, G.Text) and \
                not isinstance(e, G.PathError) else key
            problems.append((where, str(e)))  # and check the other keys without this one
            continue
        node[field] = parsed[key]
    try:
        return Config(**data), [parsed.get(k) for k, _, _ in assigned]
    except ConfigError as e:
        for path, msg in e.problems:
            owners = [(len(parts), key) for key, parts, _ in assigned
                      if path == _loc(parts) or path.startswith(_loc(parts) + ".")]
            if owners:
                _, key = max(owners)
                problems.append((f"{key}={G.label(parsed.get(key))}", msg))
            else:
                point = ", ".join(f"{k}={G.label(parsed.get(k, v))}" for k, _, v in assigned)
                shared.setdefault((path, msg), []).append(point)
        return None, None


def plan(base, grid: dict | None = None, seeds: int = 1, duration: float | None = None) -> Plan:
    """Every run of the sweep, checked before anything runs; all problems at once."""
    problems: list[tuple[str, str]] = []
    cfg, base_duration = _base(base)
    duration = base_duration if duration is None else duration
    duration = 10.0 if duration is None else duration
    try:
        duration = Scenario(config=cfg, duration=duration).duration   # checked, a float
    except ConfigError as e:
        problems += e.problems
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        problems.append(("seeds", f"{seeds!r}; give a whole number of seeds, at least 1"))
    values = _grid_values(grid or {}, problems)
    dumped = cfg.model_dump()
    ints = seed_ints(cfg.seed, seeds) if not problems else []
    runs, points, first, orders, shared = [], [], {}, {}, {}
    for combo in itertools.product(*(v for _, v in values.values())):
        assigned = [(k, parts, v) for (k, (parts, _)), v in zip(values.items(), combo)]
        point, combo = _point_config(dumped, assigned, problems, shared)
        if point is None or problems or shared:
            continue                      # keep checking the other points, run nothing
        p = len(points)
        points.append(combo)
        orders.setdefault(point.check_order, point)
        cfgs = [point.model_copy(update={"seed": seed}) for seed in ints]
        keys = [_run_key(c, duration) for c in cfgs]
        if keys[0] in first:
            cells = [", ".join(str(G.label(v)) for v in c) for c in (points[first[keys[0]]],
                                                                      combo)]
            problems.append(("grid", f"points {cells[0]} and {cells[1]} give the same "
                                     "configuration"))
        first.setdefault(keys[0], p)
        runs += [Run(key, p, s, seed, c.model_dump())
                 for s, (key, seed, c) in enumerate(zip(keys, ints, cfgs))]
    for (path, msg), where in shared.items():
        more = f" (and {len(where) - 1} more points)" if len(where) > 1 else ""
        problems.append((f"{where[0]}{more}" + (f": {path}" if path else ""), msg))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    labels = {k: G.column([G.label(c[i]) for c in points]) for i, k in enumerate(values)}
    counters = _union([counter_names(c) for c in orders.values()])
    return Plan(list(values), labels, runs, counters, seeds, duration)


# --- execution -------------------------------------------------------------------------------
def _is_dask(client) -> bool:
    return hasattr(client, "get_executor") and hasattr(client, "nthreads")


def check_workers(client) -> None:
    """Every dask worker imports the same kvmsim version as this process."""
    answers = client.run(worker_version, on_error="return")
    bad = [(addr, v) for addr, v in answers.items() if v != kvmsim.__version__]
    if bad:
        raise ConfigError([(f"worker {addr}", f"has kvmsim {v!r}" if isinstance(v, str) else
                            f"cannot run kvmsim ({type(v).__name__}: {v})")
                           for addr, v in bad] +
                          [("client", f"workers need kvmsim {kvmsim.__version__}, as here")])


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
    from ._sweep_table import SweepTable   # pandas: kvmsim[dask]

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
                return ex.submit(run_batch, kvmsim.__version__,
                                 [(r.key, r.config) for r in batch], plan.duration, stop)
            _drive(todo, submit, capacity, on_rows)
    except KeyboardInterrupt:
        raise Interrupted(SweepTable.build(plan, done)) from None
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
    and 95% interval per point. Ctrl-C raises Interrupted (a KeyboardInterrupt) whose .table
    holds the runs completed."""
    from . import _sweep_table  # noqa: F401  (pandas, kvmsim[dask]: checked before any work)

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
