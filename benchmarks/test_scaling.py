"""How cost grows: with simulated time, with vCPUs, in memory, and across threads.

Each test records its measurement in extra_info (see README, "Speed"); what it asserts is
correctness (the same counts however the work is split), never a timing.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np

import kvmsim
from kvmsim._workload import _spec2017_vtune


def against(benchmark, baseline, contender, rounds=5):
    """Time `contender` (pytest-benchmark's rounds) and `baseline` (before each round) in
    turn, so that a noisy spell of a shared machine hits both. Returns the baseline's best
    wall time, its last result and the contender's."""
    base = []

    def setup():
        start = time.perf_counter()
        out = baseline()
        base.append((time.perf_counter() - start, out))
    got = benchmark.pedantic(contender, setup=setup, rounds=rounds, iterations=1)
    return min(t for t, _ in base), base[-1][1], got


def test_doubling_simulated_time_doubles_run_time(benchmark):
    cfg = kvmsim.Config(order="linux-6.6", workload="anchor", threads=1)
    one, r1, two = against(benchmark, lambda: kvmsim.simulate(cfg, duration=40.0),
                           lambda: kvmsim.simulate(cfg, duration=80.0))
    assert two.totals["vmenter_attempts"] > 1.9 * r1.totals["vmenter_attempts"]
    if benchmark.stats:
        benchmark.extra_info["time_ratio_80s_over_40s"] = benchmark.stats.stats.min / one


def test_per_vcpu_cost_64_vs_1(benchmark):
    def run(vcpus, duration):
        cfg = kvmsim.Config(workload=_spec2017_vtune(vcpus=vcpus, scale=10.0), threads=1)
        return kvmsim.simulate(cfg, duration=duration)
    t1, r1, r64 = against(benchmark, lambda: run(1, 128.0), lambda: run(64, 2.0), rounds=3)
    if benchmark.stats:
        one = t1 / r1.totals["vmenter_attempts"]
        many = benchmark.stats.stats.min / r64.totals["vmenter_attempts"]
        benchmark.extra_info["ns_per_attempt_1_vcpu"] = one * 1e9
        benchmark.extra_info["ns_per_attempt_64_vcpus"] = many * 1e9
        benchmark.extra_info["ratio_64_over_1"] = many / one


# Peak RSS is VmHWM, the high-water mark of this process's own memory: ru_maxrss would
# also count the pytest process it was forked from (Linux keeps it across execve).
MEMORY_CHILD = """
import re, sys, kvmsim
target = int(sys.argv[1])
sim = kvmsim.Simulation(kvmsim.Config(workload="anchor"), interval=600.0)
step = 600.0
while True:
    sim.run(until=sim.now + step)
    if sim.result().totals["vmenter_attempts"] >= target:
        break
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(sim.result().totals["vmenter_attempts"], hwm)
"""


def test_memory_does_not_grow_with_duration(benchmark, tmp_path):
    def rss(attempts):
        # Outside the source tree, so the child imports the installed package.
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(attempts)], check=True,
                             capture_output=True, text=True, cwd=tmp_path).stdout.split()
        return int(out[0]), int(out[1]) / 1024      # attempts, MB
    small = rss(10_000_000)
    big = benchmark.pedantic(rss, args=(1_000_000_000,), rounds=1, iterations=1)
    benchmark.extra_info["rss_mb_1e7_attempts"] = small[1]
    benchmark.extra_info["rss_mb_1e9_attempts"] = big[1]
    assert big[0] >= 1_000_000_000


STAT_CHILD = """
import resource, subprocess, sys, time
start = time.perf_counter()
stat = subprocess.Popen([sys.executable, "-m", "kvmsim", "stat", *sys.argv[1:]],
                        stdout=subprocess.PIPE, text=True)
lines, first = 0, None
for line in stat.stdout:
    if not line.startswith("#"):
        lines += 1
        first = first or time.perf_counter() - start
print(stat.wait(), lines, first, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_stat_streams_its_intervals(benchmark, tmp_path):
    """`kvmsim stat -I` prints each interval as it completes and keeps none: the time to its
    first line and its peak RSS, for 60,000 and 1,000,000 intervals."""
    def stat(interval_ms, duration):
        out = subprocess.run([sys.executable, "-c", STAT_CHILD, "-I", str(interval_ms),
                              "--duration", str(duration)], check=True, capture_output=True,
                             text=True, cwd=tmp_path).stdout.split()
        assert int(out[0]) == 0 and int(out[1]) == duration * 1000 // interval_ms
        return float(out[2]), int(out[3]) / 1024        # first line (s), peak RSS (MB)
    first, rss = benchmark.pedantic(stat, args=(10, 600), rounds=1, iterations=1)
    benchmark.extra_info["stat_I10_600s_first_line_s"] = first
    benchmark.extra_info["stat_I10_600s_peak_rss_mb"] = rss
    benchmark.extra_info["stat_I1_1000s_peak_rss_mb"] = stat(1, 1000)[1]


def test_one_simulation_on_two_cores(benchmark):
    """Config(threads=2) against threads=1 on spec2017-vtune's 8 independent vCPUs: the
    speed-up, and the same counts."""
    def run(threads):
        return kvmsim.simulate(kvmsim.Config(workload="spec2017-vtune", threads=threads),
                               duration=200.0)
    one, serial, parallel = against(benchmark, lambda: run(1), lambda: run(2))
    np.testing.assert_array_equal(parallel.counts, serial.counts)
    if benchmark.stats:
        benchmark.extra_info["speedup_2_threads_over_1"] = one / benchmark.stats.stats.min


def test_two_threads_run_in_the_time_of_one(benchmark):
    cfg = kvmsim.Config(order="linux-6.6", workload="spec2017-vtune", threads=1)

    def pair():
        out = [None, None]
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(
            i, kvmsim.simulate(cfg, duration=200.0))) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out
    alone, expected, both = against(benchmark, lambda: kvmsim.simulate(cfg, duration=200.0),
                                    pair)
    for r in both:
        np.testing.assert_array_equal(r.counts, expected.counts)
    if benchmark.stats:
        benchmark.extra_info["two_threads_over_one"] = benchmark.stats.stats.min / alone


def test_progress_bar_overhead(benchmark):
    """kvmsim stat's progress bar updates once per slice: its cost against no callback."""
    from tqdm import tqdm
    cfg = kvmsim.Config(workload="spec2017-vtune", threads=1)

    def plain():
        kvmsim.Simulation(cfg, interval=10.0).run(until=200.0)

    def with_bar():
        with open(os.devnull, "w") as sink:
            bar = tqdm(total=200.0, file=sink, mininterval=0)    # draws on every update
            done = [0.0]

            def tick(now):
                bar.update(now - done[0])
                done[0] = now
            kvmsim.Simulation(cfg, interval=10.0).run(until=200.0, on_slice=tick)
            bar.close()
    alone = against(benchmark, plain, with_bar)[0]
    if benchmark.stats:
        benchmark.extra_info["progress_over_plain"] = benchmark.stats.stats.min / alone
