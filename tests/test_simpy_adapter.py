"""kvmsim.simpy: a VM on SimPy's clock gives the counts of the same script through the
Python API, and its events reach SimPy at their own times."""

import runpy
from pathlib import Path

import numpy as np
import pytest

import kvmsim

simpy = pytest.importorskip("simpy")
from kvmsim.simpy import VM  # noqa: E402

EXAMPLE = Path(__file__).parent.parent / "examples" / "simpy_watchdog.py"


def test_the_example_matches_the_python_api(engine):
    mod = runpy.run_path(str(EXAMPLE))
    result, exits = mod["main"](0.005, engine)
    sim = kvmsim.Simulation(kvmsim.Config(workload=mod["WORKLOAD"], engine=engine, seed=4),
                            interval=0.005)
    for k in range(4):
        sim.run(until=(k + 1) * 1e-3)
        sim.inject(k % 4, "nmi")
    sim.run(until=0.005)
    np.testing.assert_array_equal(result.vcpu_totals, sim.result().vcpu_totals)
    # every exit reached SimPy at its own time (to the nanosecond), in time order
    assert len(exits) == result.totals["vmexits"] > 500
    assert all(abs(t - now) < 1e-9 for t, now in exits)
    assert [t for t, _ in exits] == sorted(t for t, _ in exits)


def test_without_a_callback_kvmsim_catches_up_when_asked(engine):
    env = simpy.Environment()
    cfg = kvmsim.Config(workload="spec2017-vtune", engine=engine, seed=1)
    vm = VM(env, cfg)
    env.run(until=0.01)
    assert vm.sim.now == 0.0                 # it slept: nothing asked
    np.testing.assert_array_equal(vm.result().vcpu_totals,
                                  kvmsim.simulate(cfg, duration=0.01).vcpu_totals)


def test_a_quiet_vm_sleeps_until_posted():
    env = simpy.Environment()
    vm = VM(env, kvmsim.Config(workload=kvmsim.Workload(vcpus=1)))
    seen = []
    vm.on_event(lambda t, *_: seen.append((t, env.now)), events=["kvm_exit", "kvm_inj_nmi"])

    def poke(env):
        yield env.timeout(0.5)
        assert vm.make_request(0, "TLB_FLUSH") is True   # in guest mode: kicked
    env.process(poke(env))
    env.run(until=0.1)
    assert vm.sim.next_event() == float("inf")   # in the guest, with nothing to do
    env.run(until=1.0)
    assert [round(t * 1e9) for t, _ in seen] == [500_000_000]
    assert vm.result().totals["requests.TLB_FLUSH"] == 1


def test_the_clock_must_start_at_zero():
    env = simpy.Environment(initial_time=1.0)
    with pytest.raises(ValueError, match="clock starts at 0"):
        VM(env, kvmsim.Config())


def test_a_callback_may_post_to_the_vm():
    env = simpy.Environment()
    vm = VM(env, kvmsim.Config(workload=kvmsim.Workload(
        vcpus=1, lvtpc="masked", sources=[kvmsim.Trace("exit", times=[0.001, 0.002])])))
    posted = []

    def on_exit(t, vcpu, event, a, b):
        posted.append(env.now)
        vm.inject(0, "nmi")                   # straight in, at the exit's time
    vm.on_event(on_exit, events=["kvm_exit"])
    env.run(until=0.003)
    assert posted == [0.001, 0.002] and vm.result().totals["nmis_injected"] == 2
