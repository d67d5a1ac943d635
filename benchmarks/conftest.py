"""Benchmark scenarios and contenders. Run: pytest benchmarks (see README, "Speed")."""

import math
import os
import subprocess
import sys

import pytest

import kvmsim
from kvmsim._workload import _spec2017_vtune

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))  # workloads
import c_model  # noqa: E402
import report  # noqa: E402
from simpy_model import SimPyRun  # noqa: E402

ORDERS = ("linux-6.6", "linux-6.7")
CONTENDERS = ("cython", "c", "python", "simpy")


def _vm(vcpus: int) -> kvmsim.Workload:
    """A whole VM with cross-vCPU traffic (issue "embedding"): spec2017-vtune's rates per
    vCPU, plus fixed IPIs to a random other vCPU at 2,000/s per vCPU (ipi:any) and a TLB
    flush to every vCPU at once at 50/s (request-all:TLB_FLUSH). Its vCPUs run coupled, in
    kvmsim's rounds of conservative lookahead (an IPI reaches its target cost_ipi later)."""
    wl = _spec2017_vtune(vcpus=vcpus)
    traffic = [kvmsim.Poisson("ipi:any", rate=2_000.0),
               kvmsim.Poisson("request-all:TLB_FLUSH", rate=50.0)]
    return kvmsim.Workload.model_validate({**dict(wl), "sources": [*wl.sources, *traffic]})


# Each scenario's workload: a kvmsim preset by name, or a Workload.
WORKLOADS = {"anchor": "anchor", "spec2017-vtune": "spec2017-vtune",
             "spec2017-vtune-large": "spec2017-vtune-large",
             "vm-64": _vm(64), "vm-256": _vm(256)}
# Simulated seconds of each scenario, the same for every contender, so the rows of a group
# in pytest-benchmark's table do the same work: 170k-240k VM-Enter attempts, a few seconds
# for SimPy (the slowest) and >= 5 ms for C, where Simulation.run's first short slices
# (1 ms, doubling) still cost kvmsim ~2%.
DURATION = {"anchor": 1.2, "spec2017-vtune": 2.4, "spec2017-vtune-large": 0.03,
            "vm-64": 0.25, "vm-256": 0.0625}
SCENARIOS = tuple(DURATION)
# Who runs each scenario. SimPy does not model IPIs between vCPUs (SimPyRun refuses them).
# The Python reference takes ~17 s for vm-64 (~10x its time on the other scenarios, as the
# rounds of a coupled run cost it a method call per vCPU each) and ~40 s for vm-256: it runs
# vm-64 only.
RUNS = {s: CONTENDERS for s in ("anchor", "spec2017-vtune", "spec2017-vtune-large")} | {
    "vm-64": ("cython", "c", "python"), "vm-256": ("cython", "c")}
assert RUNS.keys() == DURATION.keys() == WORKLOADS.keys()
# Filled by test_speed: RATES[(scenario, order)][contender] = attempts per second.
RATES: dict[tuple[str, str], dict[str, float]] = {}


class KvmsimRun:
    """A kvmsim Simulation set up for `duration` seconds: call it to run, then totals()."""

    def __init__(self, config, duration: float):
        self.sim = kvmsim.Simulation(config, interval=duration)
        self.until = duration

    def __call__(self) -> None:
        self.sim.run(until=self.until)

    def totals(self) -> dict[str, int]:
        return self.sim.result().totals


def prepare(contender, scenario, order, duration, c_lib=None, seed=0):
    """One simulation by `contender`, set up but not run: call it, then .totals()."""
    engine = contender if contender in ("cython", "python") else "cython"
    # One thread: rounds are timed in the calling thread's CPU time, like the C contender's
    # (test_scaling.py measures threads).
    cfg = kvmsim.Config(order=order, workload=WORKLOADS[scenario], seed=seed, engine=engine,
                        threads=1)
    if contender == "simpy":
        return SimPyRun(cfg, duration)
    if contender == "c":
        return c_model.CRun(c_lib, cfg, duration)
    return KvmsimRun(cfg, duration)


def agree(a: int, b: int) -> bool:
    """Two independent runs of the same model: counts are near-Poisson, so their difference
    has variance ~ a + b; allow 5 standard deviations, plus 3 for the episode kvmsim
    finishes past `until` (benchmarks/test_simpy_model_check.py derives this)."""
    return abs(a - b) <= 5 * math.sqrt(a + b) + 3


@pytest.fixture(params=ORDERS)
def order(request):
    return request.param


@pytest.fixture(scope="session")
def c_lib(tmp_path_factory):
    """The C contender, benchmarks/c_model/kvmsim_model.c, compiled for this session."""
    if c_model.compiler() is None:
        pytest.skip("no C compiler ($CC, cc or gcc on PATH) to build the C contender")
    try:
        return c_model.build(str(tmp_path_factory.mktemp("c_model")))
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the C contender failed: {' '.join(e.cmd)}\n{e.stderr}")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """After pytest-benchmark's table: kvmsim's rate and its ratio to each contender."""
    if RATES:
        terminalreporter.write_sep("-", "simulated VM-Enter attempts per second, best round")
        for line in report.speed_table(RATES):
            terminalreporter.write_line(line)
