"""Ctrl-C interrupts a long run cleanly: the C loop yields between slices."""

import signal
import subprocess
import sys
import time

CHILD = """
import sys, kvmsim
sim = kvmsim.Simulation(kvmsim.Config(workload="spec2017-vtune"), interval=1.0)
print("ready", flush=True)
try:
    sim.run(until=1e6)
except KeyboardInterrupt:
    r = sim.result()
    t = r.totals
    ok = t["vmenter_attempts"] == t["vmenters"] + t["canceled_vmenters"]
    print("interrupted", sim.now, sim.now == int(sim.now) or sim.now > 0, ok, flush=True)
    sys.exit(0)
print("finished", flush=True)
"""


def test_sigint_stops_a_long_run(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    word, now, _, consistent = out.split()
    assert word == "interrupted" and float(now) > 0 and consistent == "True"
