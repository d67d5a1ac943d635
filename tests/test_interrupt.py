"""Ctrl-C interrupts a long run cleanly: the C loop yields between slices."""

import signal
import subprocess
import sys
import time

CHILD = """
import sys, numpy as np, kvmsim
cfg = kvmsim.Config(workload="spec2017-vtune")
sim = kvmsim.Simulation(cfg, interval=10.0)
print("ready", flush=True)
try:
    sim.run(until=1e5)
except KeyboardInterrupt:
    partial = sim.result()
    # Every vCPU stopped at a consistent point; the result holds the intervals all of them
    # completed, exactly as an uninterrupted run to that time counts them.
    clean = kvmsim.simulate(cfg, duration=partial.duration, interval=10.0)
    same = (np.array_equal(partial.counts, clean.counts) and partial.duration <= sim.now
            and partial.totals == clean.totals)
    print("interrupted", partial.duration, same, flush=True)
    sys.exit(0)
print("finished", flush=True)
"""


def test_sigint_stops_a_long_run_at_a_consistent_point(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    word, now, same = out.split()
    assert word == "interrupted" and float(now) > 0
    assert same == "True"
    assert time.monotonic() - sent < 30       # stopped promptly (the rerun takes most of it)
