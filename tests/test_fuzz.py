"""A fuzzer that stays: random configurations, steps and posts on both engines; random bytes
and TOML into the scenario reader; random argv into the command line.

The `ci` profile (default) is bounded and deterministic; `pytest --fuzz=long` (or
KVMSIM_FUZZ=long) runs many more examples with fresh randomness.

Every run must finish: each example fails after EXAMPLE_SECONDS (so hypothesis shrinks a hang
to a reproducer), and each test after TEST_SECONDS whatever happens (pytest-timeout).
"""

import contextlib
import functools
import io
import signal
import threading

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kvmsim
from kvmsim import Config, ConfigError, Costs, Periodic, Poisson, Scenario, Trace, Workload
from kvmsim import _spec, graph, profiles

# The slowest of 2,000 random examples took 0.9 s (both engines); the debug build (ASan,
# UBSan) runs several times slower.
EXAMPLE_SECONDS = 60
TEST_SECONDS = 1800
pytestmark = pytest.mark.timeout(TEST_SECONDS, method="thread")


class DidNotFinish(Exception):
    """An example ran longer than EXAMPLE_SECONDS: a hang, or a run far slower than it should be."""


def finishes(test):
    """Each example of `test` fails with DidNotFinish after EXAMPLE_SECONDS. SIGALRM's handler
    raises it: in Python code, or (the compiled engine holds no GIL) where the engine polls
    for signals, every _spec.POLL_EVERY steps, also when it runs vCPUs in several threads."""
    @functools.wraps(test)
    def bounded(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return test(*args, **kwargs)

        def alarm(signum, frame):
            raise DidNotFinish(f"an example ran longer than {EXAMPLE_SECONDS} s")
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, EXAMPLE_SECONDS)
        try:
            return test(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return bounded


US = 1e-6
PHASES = [c.name for c in _spec.PHASES]            # the ns.* columns
ORDER_NAMES = [n for n in profiles.PROFILES["linux-6.19"].order if n != "EVENT"]
KINDS = ["pmi", "emulated-pmi", "nmi", "irq", "exit", "request:noop", "timer", "hlt",
         "ipi:self", "task-work", "request:MASTERCLOCK_UPDATE", "request:SCAN_IOAPIC",
         "request:APF_READY", *(f"request:{n}" for n in graph.NOOP_NAMES[:6]),
         "request-all:TLB_FLUSH"]
IPI_KINDS = ["ipi:N", "ipi:any", "ipi:all", "ipi-nmi:N", "ipi-nmi:any"]


def whole_ns(lo_ns: int, hi_ns: int):
    return st.integers(lo_ns, hi_ns).map(lambda n: n / 1e9)


@st.composite
def sources(draw, vcpus: int, extreme: bool):
    kind = draw(st.sampled_from(KINDS + (IPI_KINDS if vcpus > 1 else [])))
    vcpu = draw(st.none() | st.integers(0, vcpus - 1))
    if kind.endswith(":N"):                   # another vCPU than the sender
        target = draw(st.integers(0, vcpus - 1).filter(lambda n: n != vcpu))
        kind = kind.replace(":N", f":{target}")
    if kind.startswith("request-all:"):
        vcpu = None
    shape = draw(st.sampled_from(["poisson", "periodic", "trace"]))
    if shape == "poisson":
        return Poisson(kind, rate=draw(st.floats(1.0, 2e6 if extreme else 5e4)), vcpu=vcpu)
    if shape == "periodic":
        lo = 1 if extreme else 20_000
        return Periodic(kind, period=draw(whole_ns(lo, 2_000_000)),
                        start=draw(whole_ns(0, 1_000_000)), vcpu=vcpu)
    # Duplicates and simultaneous times with other sources are the point.
    times = sorted(draw(st.lists(whole_ns(0, 3_000_000 if not extreme else 20_000),
                                 max_size=12)))
    return Trace(kind, times=sorted(times + times[:draw(st.integers(0, 3))]), vcpu=vcpu)


@st.composite
def configs(draw, engine="cython"):
    extreme = draw(st.booleans())
    vcpus = draw(st.integers(1, 3))
    vendor = draw(st.sampled_from(["intel", "amd"]))
    pmus = ["intel"] if vendor == "intel" else ["amd-legacy", "amd-perfmon-v2"]
    wl = Workload(vcpus=vcpus,
                  guest_exit_rate=draw(st.sampled_from([0.0, 1e3, 3e4, 1e5])),
                  sources=draw(st.lists(sources(vcpus, extreme), max_size=5)),
                  lvtpc=draw(st.sampled_from(["nmi", "fixed", "smi", "masked"])),
                  nmi_handler=draw(whole_ns(0, 20_000)), irq_handler=draw(whole_ns(0, 20_000)),
                  guest_pmu=draw(st.sampled_from([None, *pmus])),
                  pmi_skid=draw(st.sampled_from([0.0, 1e-7, 5e-7, 3e-6])))
    behaviour = {name: draw(st.sampled_from(sw.values))
                 for name, sw in profiles.SWITCH.items() if draw(st.booleans())}
    flags = ("apicv", "ipiv") + (("preemption_timer",) if vendor == "intel" else
                                 ("vnmi", "idle_hlt"))
    host = {f: draw(st.booleans()) for f in flags if draw(st.booleans())}
    order = draw(st.permutations(ORDER_NAMES)) + ["EVENT"]
    zero = extreme and draw(st.booleans())
    costs = Costs(**{c.name: (0 if zero else draw(st.integers(0, 2_000))) + (c.name == "ipi")
                     for c in _spec.COSTS})
    try:
        cfg = Config(order=order if draw(st.booleans()) else draw(st.sampled_from(
            list(profiles.PROFILES))), workload=wl, costs=costs, seed=draw(st.integers(0, 2**32)),
            vendor=vendor, engine=engine, behaviour=behaviour, host=kvmsim.Host(**host),
            threads=draw(st.sampled_from([1, 2, 3])))
    except ConfigError:               # a host this kernel cannot have (vNMI before 6.4, ...)
        assume(False)
    # Short runs when arrivals can be dense: the Python engine must finish them too.
    duration_ns = draw(st.integers(1_000, 20_000 if extreme else 4_000_000))
    return cfg, duration_ns


def invariants(r: kvmsim.Result, sim: kvmsim.Simulation) -> None:
    """docs/model.md §8's invariants, per vCPU (so in total too), and interval sums = totals."""
    n = r.config.workload.vcpus
    for i in range(n):
        t = {k: int(v[i]) for k, v in r.per_vcpu.items()}
        s = sim.state(i)
        assert t["nmis_queued"] == t["nmis_injected"] + t["nmis_dropped"] + t["nmis_outstanding"]
        assert t["vmenter_attempts"] == t["vmenters"] + t["canceled_vmenters"]
        # Every VM-exit ends in one VM-Enter, and KVM_RUN's first pass too, unless the vCPU
        # is still between a VM-exit and its VM-Enter (or halted) at the end.
        assert t["vmenters"] == t["vmexits"] + 1 - (s["in_host"] or s["halted"])
        assert t["requests.PMI"] + t["pmis_irq_work"] == t["pmis_delivered"] + t["pmis_dropped"]
        # Every IRR (or PIR) set found the bit set, was delivered, or is still pending or
        # injected (irq_pending: the IRR bit; irq_injected: vcpu->arch.interrupt.injected).
        assert t["irqs_raised"] == t["irqs_coalesced"] + t["irqs_injected"] + \
            s["irq_pending"] + s["irq_injected"]
        # The ns.* columns sum to the simulated time (now), plus the overhang of what began
        # before now and ends after it (a pass, a VM-exit and vcpu_run's tail, a VM-Enter),
        # counted whole where it began: it ends no later than the vCPU next acts, and in the
        # host exactly where the next pass starts.
        ns, now, due = sum(t[p] for p in PHASES), s["now"], sim.engine.next_event(i)
        if s["pass_since"] < now:
            # A coupled VM's pass suspended at `now` (docs/model.md §1, §4 step 8) counts the
            # time of its checks when they end: until then the sum stops where the pass
            # began, or where its checks ended.
            assert s["pass_since"] <= ns <= now, (i, ns, s)
        elif s["in_host"]:
            assert now <= ns == due, (i, ns, due, s)
        else:
            assert now <= ns <= due, (i, ns, due, s)
    for name in r.intervals:
        assert int(np.sum(r.intervals[name], dtype=object)) == r.totals[name]


def run_both(cfg, steps, posts):
    """Run one configuration on both engines in the same steps, posting the same requests."""
    out = []
    for engine in ("cython", "python"):
        sim = kvmsim.Simulation(cfg.model_copy(update={"engine": engine}),
                                interval=steps[-1] / 3e9 if steps[-1] % 3 == 0 else 1e-3)
        for until_ns, post in zip(steps, posts):
            sim.run(until=until_ns / 1e9)
            if post is not None:
                vcpu, what = post
                vcpu %= cfg.workload.vcpus
                if what in kvmsim._simulation.INJECTABLE:
                    with contextlib.suppress(ConfigError):    # the order may not check it
                        sim.inject(vcpu, what)
                else:
                    with contextlib.suppress(ConfigError):
                        sim.make_request(vcpu, what, kick=True)
        out.append((sim, sim.result()))
    return out


POSTS = st.none() | st.tuples(st.integers(0, 2), st.sampled_from(
    ["nmi", "irq", "pmi", "TLB_FLUSH", "MASTERCLOCK_UPDATE", "STEAL_UPDATE", "NMI"]))


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(configs(), st.lists(st.integers(1, 1000), min_size=1, max_size=4), st.data())
@finishes
def test_engines_agree_on_random_configurations(drawn, cuts, data):
    cfg, duration_ns = drawn
    steps = sorted({max(1, duration_ns * c // 1000) for c in cuts} | {duration_ns})
    posts = [data.draw(POSTS) for _ in steps]
    (cy_sim, cy), (py_sim, py) = run_both(cfg, steps, posts)
    np.testing.assert_array_equal(cy.counts, py.counts)
    np.testing.assert_array_equal(cy.vcpu_totals, py.vcpu_totals)
    assert [cy_sim.state(v) for v in range(cfg.workload.vcpus)] == \
        [py_sim.state(v) for v in range(cfg.workload.vcpus)]
    invariants(cy, cy_sim)
    invariants(py, py_sim)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(configs(), st.lists(st.integers(1, 999), min_size=1, max_size=5))
@finishes
def test_stepping_never_changes_a_count(drawn, cuts):
    cfg, duration_ns = drawn
    interval = 1e-3 if duration_ns >= 2_000_000 else duration_ns / 4e9
    assume(abs(interval * 1e9 - round(interval * 1e9)) < 1e-6)
    whole = kvmsim.simulate(cfg, duration=duration_ns / 1e9, interval=interval)
    sim = kvmsim.Simulation(cfg, interval=interval)
    for until in sorted({duration_ns * c // 1000 for c in cuts if duration_ns * c // 1000}):
        sim.run(until=until / 1e9)
    sim.run(until=duration_ns / 1e9)
    np.testing.assert_array_equal(sim.result().counts, whole.counts)
    invariants(sim.result(), sim)


# --- the scenario reader --------------------------------------------------------------------
@given(st.binary(max_size=300))
@finishes
def test_scenario_reader_takes_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "s.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        Scenario.load(path)


KEYS = ["order", "seed", "engine", "vendor", "duration", "interval", "workload", "costs",
        "vcpus", "sources", "type", "kind", "rate", "period", "start", "times", "lvtpc",
        "handlers", "PMU", "nmi_handler", "guest_exit_rate", "vcpu", "bogus"]
VALUES = st.recursive(
    st.none().map(lambda _: "x") | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["linux-6.6", "poisson", "pmi", "request:TLB_FLUSH", "anchor", "EVENT"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                max_size=5),
    max_leaves=20)


@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
@finishes
def test_scenario_reader_takes_any_toml(document):
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        assume(False)
    try:
        s = Scenario.from_toml(text)
    except ConfigError as e:
        assert e.problems and all(isinstance(m, str) and m for _, m in e.problems)
    else:
        assert s.duration > 0


# --- the command line -----------------------------------------------------------------------
SMALL = ["0.002", "0.01", "-1", "0", "nan", "1e-10", "abc", "", "1e400"]
FLAG_VALUES = {
    "--order": ["linux-6.6", "linux-6.7", "bogus", "NMI,EVENT", "PMU,PMI,SMI,NMI,EVENT", ","],
    "--workload": ["anchor", "spec2017-vtune", "nope", ""],
    "--vcpus": ["1", "2", "0", "-3", "x", "5000"],
    "--duration": SMALL, "-I": ["1", "0.5", "-5", "0", "x", "1e-7"],
    "--seed": ["0", "7", "-1", "x"], "--engine": ["cython", "python", "rust"],
    "--vendor": ["intel", "amd", "arm"],
    "-e": ["kvm_exit", "probe:vmx_cancel_injection,requests.NMI", "cycles", ",", "ns.guest"],
    "-x": [",", ";", "\\t"], "-r": ["1", "2", "0", "x"], "--max-events": ["3", "0", "-1"],
    "--events": ["kvm_exit", "vmexits", "nope"], "--vcpu": ["0", "9", "x"],
    "--lvtpc": ["nmi", "smi", "ext"], "--from": ["linux-6.6", "bogus"],
    "-o": ["out.txt", "/nonexistent/dir/x"], "--plot": ["p.png", "p.jpgx"],
}
SWITCHES = ["-A", "-j", "--no-progress", "--list-events", "--help", "--bogus"]
COMMANDS = {"stat": [], "compare": ["linux-6.6", "linux-6.7", "NMI,EVENT"], "trace": [],
            "orders": ["linux-6.6", "bogus"], "lint-order": ["linux-6.6", "linux-6.19", "x,y"],
            "optimize": [], "what-if": [], "bogus": []}


@st.composite
def argvs(draw):
    command = draw(st.sampled_from(list(COMMANDS)))
    argv = [command] + draw(st.lists(st.sampled_from(COMMANDS[command] or ["x"]), max_size=2)
                            if COMMANDS[command] else st.just([]))
    for flag in draw(st.lists(st.sampled_from(list(FLAG_VALUES) + SWITCHES), max_size=5,
                              unique=True)):
        argv.append(flag)
        if flag in FLAG_VALUES:
            argv.append(draw(st.sampled_from(FLAG_VALUES[flag]) | st.text(max_size=6)))
    if "--duration" not in argv:          # keep every run short
        argv += ["--duration", "0.003"]
    return argv


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argvs())
@finishes
def test_command_line_never_shows_a_traceback(tmp_path, monkeypatch, argv):
    from kvmsim._cli import main
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    assert code in (0, 1, 2), (argv, code, err.getvalue())
    if code == 2:
        assert "error" in err.getvalue() and err.getvalue().strip(), argv


# --- every run finishes ---------------------------------------------------------------------
@pytest.mark.parametrize("engine,threads", [("cython", 1), ("cython", 3), ("python", 1)])
def test_an_example_that_does_not_finish_fails(monkeypatch, engine, threads):
    # A run far longer than the bound stands for a hang: it must fail, not stall the suite.
    import time
    monkeypatch.setitem(globals(), "EXAMPLE_SECONDS", 0.3)
    cfg = Config(workload=Workload(vcpus=3, guest_exit_rate=1e5), engine=engine,
                 threads=threads)
    start = time.perf_counter()
    with pytest.raises(DidNotFinish):
        finishes(lambda: kvmsim.simulate(cfg, duration=1e6))()
    assert time.perf_counter() - start < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)      # the alarm is off again


def test_every_fuzz_test_is_bounded():
    tests = [f for name, f in globals().items() if name.startswith("test_") and
             hasattr(f, "hypothesis")]
    assert len(tests) == 5
    for f in tests:
        assert f.hypothesis.inner_test.__code__ is finishes(lambda: None).__code__, f.__name__
    assert pytestmark.name == "timeout" and pytestmark.args == (TEST_SECONDS,)
