"""The C-level API: another Cython extension cimports kvmsim._core and posts requests."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

import kvmsim
from kvmsim import catalogue

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "capi"


@pytest.fixture(scope="module")
def kick(tmp_path_factory):
    """Build examples/capi the way its README line says, then import it."""
    build = tmp_path_factory.mktemp("capi")
    for name in ("kick.pyx", "setup.py"):
        shutil.copy(EXAMPLE / name, build)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=build,
                   check=True, capture_output=True)
    path = next(build.glob("kick*.so"))
    spec = importlib.util.spec_from_file_location("kick", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quiet_vm():
    cfg = kvmsim.Config(order="linux-6.6", workload=kvmsim.Workload(vcpus=2))
    sim = kvmsim.Simulation(cfg, interval=0.01)
    sim.run(until=0.01)                      # both vCPUs now in guest mode, no exits due
    return sim


def test_post_and_kick_through_the_c_api(kick):
    sim = quiet_vm()
    tlb = catalogue.bit_of("TLB_FLUSH")
    assert kick.post(sim.engine, 1, tlb) == (True, True)
    assert kick.post(sim.engine, 1, tlb) == (False, True)    # already EXITING_GUEST_MODE
    sim.run(until=0.02)
    r = sim.result()
    assert r.per_vcpu["vmexits"].tolist() == [0, 1]              # the IPI's exit, at 10 ms
    assert r.intervals["vmexits"].tolist() == [0, 1]
    assert r.totals["requests.TLB_FLUSH"] == 1 and r.totals["canceled_vmenters"] == 0


def test_withdrawn_request_is_never_serviced(kick):
    sim = quiet_vm()
    bit = catalogue.bit_of("STEAL_UPDATE")
    kick.post(sim.engine, 0, bit)
    assert kick.withdraw(sim.engine, 0, bit) is True
    assert kick.withdraw(sim.engine, 0, bit) is False
    sim.run(until=0.02)
    # Kicked, so it exits, but the request was taken back before the pass.
    assert sim.result().totals["requests.STEAL_UPDATE"] == 0
    assert sim.result().per_vcpu["vmexits"].tolist() == [1, 0]


def test_python_api_matches_the_c_api(kick, engine):
    cfg = kvmsim.Config(order="linux-6.6", workload=kvmsim.Workload(vcpus=2), engine=engine)
    sim = kvmsim.Simulation(cfg, interval=0.01)
    sim.run(until=0.01)
    assert sim.make_request(1, "TLB_FLUSH") is True
    assert sim.make_request(0, "STEAL_UPDATE", kick=False) is False
    sim.run(until=0.02)
    r = sim.result()
    assert r.per_vcpu["vmexits"].tolist() == [0, 1]
    assert r.totals["requests.TLB_FLUSH"] == 1 and r.totals["requests.STEAL_UPDATE"] == 0


def test_make_request_rejects_bad_input():
    sim = quiet_vm()
    with pytest.raises(kvmsim.ConfigError) as e:
        sim.make_request(5, "NOPE")
    assert {p for p, _ in e.value.problems} == {"vcpu", "request"}
