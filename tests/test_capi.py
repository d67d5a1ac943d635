"""The C API (kvmsim/_core.pxd, Engine.capsule): the examples in examples/capi, built and run
as their READMEs say, give the Python API's counts; posting from other threads while a run
is in progress loses nothing."""

import importlib.util
import pathlib
import runpy
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import kvmsim
from kvmsim import Poisson, Workload, _spec, catalogue

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples" / "capi"


@pytest.fixture(scope="module")
def capi(tmp_path_factory):
    """Build examples/capi the way its setup.py says; import its modules by name."""
    build = tmp_path_factory.mktemp("capi")
    for name in ("kick.pyx", "vm_driver.pyx", "setup.py"):
        shutil.copy(EXAMPLES / name, build)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=build,
                   check=True, capture_output=True)
    modules = {}
    for name in ("kick", "vm_driver"):
        path = next(build.glob(f"{name}*.so"))
        spec = importlib.util.spec_from_file_location(name, path)
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    return modules


def quiet_vm():
    cfg = kvmsim.Config(order="linux-6.6", workload=kvmsim.Workload(vcpus=2))
    sim = kvmsim.Simulation(cfg, interval=0.01)
    sim.run(until=0.01)                      # both vCPUs now in guest mode, no exits due
    return sim


def test_post_and_kick_through_the_c_api(capi):
    sim = quiet_vm()
    tlb = catalogue.bit_of("TLB_FLUSH")
    assert capi["kick"].post(sim.engine, 1, tlb) == (True, True)
    assert capi["kick"].post(sim.engine, 1, tlb) == (False, True)  # already EXITING_GUEST_MODE
    sim.run(until=0.02)
    r = sim.result()
    assert r.per_vcpu["vmexits"].tolist() == [0, 1]              # the IPI's exit, at 10 ms
    assert r.intervals["vmexits"].tolist() == [0, 1]
    assert r.totals["requests.TLB_FLUSH"] == 1 and r.totals["canceled_vmenters"] == 0
    with pytest.raises(ValueError, match="out of range"):
        capi["kick"].post(sim.engine, 1, 70)        # bit 70: refused at the API's edge


VM = Workload(vcpus=4, guest_exit_rate=20_000.0, sources=[
    Poisson("pmi", rate=2_000.0), Poisson("ipi:any", rate=5_000.0), Poisson("hlt", rate=3_000.0)],
    pmi_skid=1e-6)
NMIS = [(int(t), v) for t, v in zip(np.linspace(1e5, 9e6, 40), [0, 1, 2, 3] * 10)]


def python_api(engine):
    """The same script through the Python API."""
    sim = kvmsim.Simulation(kvmsim.Config(workload=VM, engine=engine, seed=4), interval=0.01)
    for t, v in NMIS:
        sim.run(until=t / 1e9)
        sim.inject(v, "nmi")
    sim.run(until=0.01)
    return sim.result().vcpu_totals


def test_an_event_loop_in_cython_gets_the_python_apis_counts(capi, engine):
    sim = kvmsim.Simulation(kvmsim.Config(workload=VM, seed=4), interval=0.01)
    times = np.array([t for t, _ in NMIS], dtype=np.int64)
    targets = np.array([v for _, v in NMIS], dtype=np.int32)
    counts, steps = capi["vm_driver"].drive(sim.engine, times, targets, 10_000_000)
    np.testing.assert_array_equal(counts, python_api(engine))
    nmis = counts[:, _spec.COLUMN["nmis_queued"]] - counts[:, _spec.COLUMN["pmis_delivered"]]
    assert nmis.tolist() == [10, 10, 10, 10]
    assert steps > 1000                      # it stepped through kvmsim's own events


def test_ctypes_through_the_capsule():
    counts = runpy.run_path(str(EXAMPLES / "ctypes_caller.py"))["main"]()
    sim = kvmsim.Simulation(kvmsim.Config(workload=kvmsim.Workload(vcpus=2)), interval=1.0)
    sim.run(until=0.001)
    assert sim.inject(1, "nmi", 3) is True
    sim.run(until=0.002)
    np.testing.assert_array_equal(counts, sim.result().vcpu_totals)
    # process_nmi's limit: 2 of the 3 reach the guest
    assert counts[1, _spec.COLUMN["nmis_injected"]] == 2


# No PMIs: every NMI queued is one injected; the ticks raise a fixed number of IRQs.
BUSY = Workload(vcpus=8, guest_exit_rate=10_000.0, sources=[Poisson("timer", rate=250.0)])


def test_posts_from_other_threads_during_a_run_are_never_lost(engine):
    # 8 threads inject 200 NMIs and 200 IRQs each while the main thread runs the VM.
    sim = kvmsim.Simulation(kvmsim.Config(workload=BUSY, engine=engine, seed=1), interval=0.05)
    go = threading.Event()

    def poster(i):
        go.wait()
        for k in range(200):
            sim.inject(i % 8, "nmi")
            sim.inject((i + k) % 8, "irq")
    threads = [threading.Thread(target=poster, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    go.set()
    ms = 0
    while any(th.is_alive() for th in threads) or ms == 0:
        ms += 2
        sim.run(until=ms / 1000)
    for th in threads:
        th.join()
    until = (ms + 2) / 1000
    sim.run(until=until)                     # the last posts land at each vCPU's now
    t = sim.result().totals
    ticks = kvmsim.simulate(kvmsim.Config(workload=BUSY, engine=engine, seed=1),
                            duration=until).totals["irqs_raised"]
    assert t["nmis_queued"] == 8 * 200
    assert t["irqs_raised"] - ticks == 8 * 200


def test_c_level_posts_during_a_run_are_never_lost():
    # The same through the engine's lock directly (no Simulation lock): the run holds it in
    # nogil slices; posters wait for it with the GIL released.
    sim = kvmsim.Simulation(kvmsim.Config(workload=BUSY, seed=2), interval=1.0)
    done = threading.Event()

    def poster():
        for _ in range(500):
            sim.engine.inject(3, _spec.Src.NMI, 1)
        done.set()
    th = threading.Thread(target=poster)
    th.start()
    ms = 0
    while not done.is_set():
        ms += 1
        sim.run(until=ms / 1000)
    th.join()
    sim.run(until=(ms + 1) / 1000)
    assert sim.state(3)["nmi_queued"] == 0
    assert sim.result().per_vcpu["nmis_queued"].tolist() == [0, 0, 0, 500, 0, 0, 0, 0]


def test_bad_arguments_at_the_api_edge():
    ctypes_caller = runpy.run_path(str(EXAMPLES / "ctypes_caller.py"))
    sim = kvmsim.Simulation(kvmsim.Config(workload=Workload(vcpus=2)), interval=0.001)
    ks = ctypes_caller["api"](sim.engine)
    counts = np.zeros((2, 1, ks.n_columns), dtype=np.int64)
    buf = counts.ctypes.data_as(ctypes_caller["ctypes"].POINTER(ctypes_caller["i64"]))
    assert ks.run(ks.engine, 1_000_000, buf, 0, 1) == _spec.Stop.DONE
    before = counts.copy()
    assert ks.post(ks.engine, 2, 3, 1) == -1 and ks.post(ks.engine, 0, 64, 1) == -1
    assert ks.inject(ks.engine, 0, _spec.Src.TIMER, 1) == -1
    assert ks.inject(ks.engine, 0, _spec.Src.NMI, 0) == -1
    assert ks.next_event(ks.engine, -1) == -1 and ks.requests(ks.engine, 9) == 0
    # a window that ends before `until`, or starts after where a vCPU stands
    assert ks.run(ks.engine, 3_000_000, buf, 1, 1) == -1
    assert ks.run(ks.engine, 2_000_000, buf, 2, 1) == -1
    np.testing.assert_array_equal(counts, before)            # refused calls touch nothing
    assert ks.now(ks.engine, 0) == ks.now(ks.engine, 1) == 1_000_000
