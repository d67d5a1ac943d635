"""kvmsim.sweep on a 2-worker dask LocalCluster (processes) against one local thread, and
what dask costs per task.

Each test records its figures in extra_info (see docs/sweep.md); what it asserts is that
the cluster's table equals the local one, never a timing.
"""

import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pandas as pd
import pytest

import kvmsim
from kvmsim import _sweep, _version
from kvmsim._sweep.run import run_batch

# 24 runs, ~8 s on one thread: 8-vCPU runs ~8x the cost of 1-vCPU ones, so tasks are uneven.
BASE = kvmsim.Config(workload="spec2017-vtune", threads=1)
GRID = {"order": ["linux-6.6", "linux-6.7"], "workload.vcpus": [1, 8]}
SEEDS, DURATION = 6, 200.0
EMPTY_TASKS = 400


@pytest.fixture(scope="module")
def client():
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster, timeout="60s")
    yield client
    client.close()
    cluster.close(timeout=60)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def test_two_workers_over_one_thread(benchmark, client):
    # Two cores shared with whatever else runs: the load before and after says how much of
    # the second core the sweep could have had; two local threads are the control.
    load = os.getloadavg()[0]
    with ThreadPoolExecutor(1) as one:
        alone, expected = timed(lambda: kvmsim.sweep(BASE, GRID, SEEDS, DURATION, client=one))
    threads, local = timed(lambda: kvmsim.sweep(BASE, GRID, SEEDS, DURATION))
    got = benchmark.pedantic(kvmsim.sweep, args=(BASE, GRID, SEEDS, DURATION),
                             kwargs={"client": client}, rounds=1, iterations=1)
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(local, expected)
    if benchmark.stats:
        cluster = benchmark.stats.stats.min
        benchmark.extra_info.update({
            "one_thread_s": alone, "two_local_threads_s": threads, "two_workers_s": cluster,
            "speedup_two_workers_over_one_thread": alone / cluster,
            "speedup_two_threads_over_one_thread": alone / threads,
            "load_average_before": load, "load_average_after": os.getloadavg()[0]})


def per_task(executor, capacity: int) -> float:
    """Seconds per task of EMPTY_TASKS tasks that run no simulation, submitted as sweep()
    submits: 2 in flight per worker thread, a new one as each returns."""
    start, left, inflight = time.perf_counter(), EMPTY_TASKS, set()
    while left or inflight:
        while left and len(inflight) < 2 * capacity:
            inflight.add(executor.submit(run_batch, _version.model(), [], DURATION))
            left -= 1
        done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
        for f in done:
            assert f.result()[0] == []
    return (time.perf_counter() - start) / EMPTY_TASKS


def test_cost_per_task(benchmark, client):
    with ThreadPoolExecutor(1) as one:
        thread = per_task(one, 1)
    ex = client.get_executor(pure=False)
    dask = benchmark.pedantic(per_task, args=(ex, 2), rounds=1, iterations=1)
    if benchmark.stats:
        benchmark.extra_info.update({
            "dask_ms_per_task": dask * 1e3, "thread_ms_per_task": thread * 1e3,
            # 2 workers finishing empty tasks at this rate spend at most 2 x it on each.
            "overhead_share_upper_bound": 2 * dask / _sweep.TASK_SECONDS})
