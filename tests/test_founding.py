"""The founding measurement: NMI after PMI (fad505b2cb83) on SPEC2017 + VTune, 8 vCPUs.

The patch's host-wide probe:vmx_cancel_injection per 10 s: 14,254-15,261 before, 19-40
after. docs/calibration.md derives the preset: the PMI rate and pmi_skid are calibrated to
these numbers. before = PMIs delivered (187/s/vCPU x 8 x 10 s = 14,960) + residual; after =
residual only: host NMIs for guest counter overflows that land after the PMI check of an
entry in progress (~25 per 10 s). Poisson spread is ~120 and ~5 per interval, so the
bands asserted below, [13,000, 17,000] and [10, 60], sit > 16 and > 3 standard deviations
away."""

import math

import pytest

import kvmsim


def run(order, seed, engine="cython", duration=60.0):
    cfg = kvmsim.Config(order=order, workload="spec2017-vtune", seed=seed, engine=engine)
    return kvmsim.simulate(cfg, duration=duration, interval=10.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cancels_per_10s_match_the_patch(seed):
    before, after = run("linux-6.6", seed), run("linux-6.7", seed)
    assert len(before.intervals["canceled_vmenters"]) == 6
    assert all(13_000 <= c <= 17_000 for c in before.intervals["canceled_vmenters"])
    assert all(10 <= c <= 60 for c in after.intervals["canceled_vmenters"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_drop_is_one_back_edge_per_pmi(seed):
    # Same workload, same streams: the orders differ by one cancel per PMI delivered as an
    # NMI; what is left differs only by the residual's Poisson noise.
    before, after = run("linux-6.6", seed).totals, run("linux-6.7", seed).totals
    saved = before["canceled_vmenters"] - after["canceled_vmenters"]
    noise = 5 * math.sqrt(2 * after["canceled_vmenters"] + 1)
    assert abs(saved - before["pmis_delivered"]) <= noise
    assert before["nmis_injected"] == pytest.approx(after["nmis_injected"], abs=noise)
    # No per-order parameter: the PMI rate that produced the saving is the same in both.
    assert before["pmis_raised"] == pytest.approx(after["pmis_raised"], abs=noise)


def test_python_engine_reproduces_it_too():
    before, after = run("linux-6.6", 7, "python", 10.0), run("linux-6.7", 7, "python", 10.0)
    assert 13_000 <= before.totals["canceled_vmenters"] <= 17_000
    assert 10 <= after.totals["canceled_vmenters"] <= 60
