"""The SimPy model (benchmarks/simpy_model.py) agrees with kvmsim on the `anchor` workload
(and with the pmu_reprogram switch the other way, and with a request to every vCPU).

The two use different random streams, so they can only agree statistically. Bounds:

* A count such as nmis_injected is (close to) Poisson: its variance is about its mean. The
  difference a - b of two independent runs then has variance ~ a + b, and we allow
  5 standard deviations: |a - b| <= 5 * sqrt(a + b). For a true Poisson count a false
  failure has probability ~6e-7 per counter.
* canceled_vmenters is slightly overdispersed: under linux-6.6 every delivered PMI cancels an
  entry, so cancels come as PMI count + arrival-driven cancels (over 300 seeds: variance
  ~1.3x the mean). 5 / sqrt(1.3) = 4.4 sigma, still ~1e-5 per counter.
* vmexits, vmenters and vmenter_attempts: the guest's own exits are a renewal process with
  a dead time (each exit costs ~800 ns of host time), underdispersed, but each PMI brings
  its NMI's exit and the 8 exits of the guest perf handler's PMU accesses with it, in one
  clump, so the counts are overdispersed (over 300 seeds: variance ~1.6-1.9x the mean).
  5 / sqrt(1.9) = 3.6 sigma: ~3e-4 per counter.
* SLACK = 3 absorbs the end of the run: kvmsim finishes the vcpu_enter_guest() episode in
  flight at `until` (one more attempt, VM-Enter, maybe a cancel and an injection) and the
  SimPy run stops at `until`; it also makes the bound meaningful for counts that are ~0.

The seeds are fixed, so the test is deterministic; the bounds say why it passes for any seed.
"""

from __future__ import annotations

import math
import os
import sys

import pytest

import kvmsim

sys.path.insert(0, os.path.dirname(__file__))
from simpy_model import simulate_simpy  # noqa: E402

DURATION = 0.05  # simulated seconds
SLACK = 3
KEYS = ("vmenter_attempts", "vmenters", "canceled_vmenters", "vmexits", "nmis_queued",
        "nmis_injected", "nmis_dropped", "pmis_delivered")


def within(a: int, b: int) -> bool:
    return abs(a - b) <= 5 * math.sqrt(a + b) + SLACK


def run_both(order: str, seed: int, workload="anchor",
             **cfg) -> tuple[dict[str, int], dict[str, int]]:
    cfg = kvmsim.Config(order=order, workload=workload, seed=seed, engine="cython", **cfg)
    return simulate_simpy(cfg, DURATION), kvmsim.simulate(cfg, DURATION).totals


def assert_agree(simpy_totals, kvmsim_totals, what):
    bad = {k: (simpy_totals[k], kvmsim_totals[k]) for k in KEYS
           if not within(simpy_totals[k], kvmsim_totals[k])}
    assert not bad, f"{what}: (simpy, kvmsim) outside 5 sigma + {SLACK}: {bad}"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", ["linux-6.6", "linux-6.7"])
def test_simpy_model_agrees_with_kvmsim(order, seed):
    simpy_totals, kvmsim_totals = run_both(order, seed)
    assert_agree(simpy_totals, kvmsim_totals, f"{order} seed {seed}")
    # The model has to do something: anchor VM-exits ~150k/s, PMIs 2k/s.
    assert simpy_totals["vmexits"] > 5000 and simpy_totals["pmis_delivered"] > 50


def test_pmi_nmi_back_edge():
    """Under linux-6.6 the PMI handler queues an NMI whose check already ran in this pass,
    so every delivered PMI cancels one VM-Enter; linux-6.7 checks PMI before NMI.
    Both models must show the same excess of cancels under 6.6."""
    s66, k66 = run_both("linux-6.6", 0)
    s67, k67 = run_both("linux-6.7", 0)
    for t in (s66, k66):
        assert t["canceled_vmenters"] >= t["pmis_delivered"] - 1
    excess_simpy = s66["canceled_vmenters"] - s67["canceled_vmenters"]
    excess_kvmsim = k66["canceled_vmenters"] - k67["canceled_vmenters"]
    assert excess_simpy > 0.5 * s66["pmis_delivered"]
    # The difference of the two excesses has variance ~ the sum of all four cancel counts.
    spread = sum(t["canceled_vmenters"] for t in (s66, s67, k66, k67))
    assert abs(excess_simpy - excess_kvmsim) <= 5 * math.sqrt(spread) + 2 * SLACK


@pytest.mark.parametrize("seed", [0, 1])
def test_simpy_model_synchronous_reprogramming(seed):
    """Before 68fb4757e867 (pmu_reprogram = sync) the perf handler's global-control writes
    reprogram at once: no KVM_REQ_PMU from them, fewer coalesced PMIs."""
    simpy_totals, kvmsim_totals = run_both("linux-6.6", seed,
                                           behaviour={"pmu_reprogram": "sync"})
    assert_agree(simpy_totals, kvmsim_totals, f"pmu_reprogram sync, seed {seed}")


# anchor's loop on 2 vCPUs, with a request to both at once: the same arrivals on each.
# (Arrivals shared by the vCPUs make the totals' counts clump in pairs: variance up to 2x
# the mean for the kicks they cause, 5 / sqrt(2) = 3.5 sigma.)
REQUEST_ALL = kvmsim.Workload(
    vcpus=2, guest_exit_rate=100_000.0,
    sources=[kvmsim.Poisson("pmi", rate=2_000.0), kvmsim.Poisson("request:noop", rate=20_000.0),
             kvmsim.Poisson("request-all:TLB_FLUSH", rate=10_000.0)])


@pytest.mark.parametrize("seed", [0, 1])
def test_simpy_model_request_to_every_vcpu(seed):
    simpy_totals, kvmsim_totals = run_both("linux-6.7", seed, REQUEST_ALL)
    assert_agree(simpy_totals, kvmsim_totals, f"request-all, seed {seed}")


@pytest.mark.parametrize("kind", ["hlt", "ipi:self", "task-work", "ipi:any", "ipi-nmi:1"])
def test_simpy_model_refuses_what_it_does_not_model(kind):
    wl = kvmsim.Workload(vcpus=2, sources=[kvmsim.Poisson(kind, rate=100.0, vcpu=0)])
    with pytest.raises(NotImplementedError, match=kind):
        simulate_simpy(kvmsim.Config(workload=wl, seed=0), 0.001)
    with pytest.raises(NotImplementedError, match="vNMI"):
        simulate_simpy(kvmsim.Config(workload="anchor", vendor="amd", order="linux-6.6"), 0.001)
