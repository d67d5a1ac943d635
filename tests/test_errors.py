"""Bad input: one ConfigError naming the field, the bad value and what is allowed."""

import pytest

import kvmsim
from kvmsim import Config, ConfigError, Costs, Periodic, Poisson, Trace, Workload


def problems(fn):
    with pytest.raises(ConfigError) as e:
        fn()
    return e.value.problems


def test_unknown_order_lists_presets():
    (path, msg), = problems(lambda: Config(order="linux-6.4"))
    assert path == "order" and "'linux-6.4'" in msg and "linux-6.6" in msg


def test_order_list_problems_all_at_once():
    (path, msg), = problems(lambda: Config(order=["NMI", "NMI", "FOO"]))
    assert "'FOO'" in msg and "duplicate request NMI" in msg and "EVENT must be last" in msg


def test_order_must_check_what_the_workload_raises():
    wl = Workload(sources=[Poisson("pmi", rate=1.0)])
    (path, msg), = problems(lambda: Config(order=["PMU", "EVENT"], workload=wl))
    assert "NMI, PMI" in msg


def test_every_config_field_reported_at_once():
    ps = dict(problems(lambda: Config(workload="nope", seed=-1, engine="rust", vendor="arm")))
    assert set(ps) == {"workload", "seed", "engine", "vendor"}
    assert "spec2017-vtune" in ps["workload"] and "'rust'" in ps["engine"]


def test_unknown_source_kind_and_request():
    (_, msg), = problems(lambda: Poisson("pmx", rate=1.0))
    assert "'pmx'" in msg and "request:NAME" in msg
    (_, msg), = problems(lambda: Poisson("request:FOO", rate=1.0))
    assert "'FOO'" in msg
    (_, msg), = problems(lambda: Poisson("request:MCLOCK_INPROGRESS", rate=1.0))
    assert "never consumed" in msg


@pytest.mark.parametrize("make,field", [
    (lambda: Poisson("nmi", rate=0.0), "rate"),
    (lambda: Poisson("nmi", rate=-5.0), "rate"),
    (lambda: Periodic("irq", period=0.0), "period"),
    (lambda: Workload(vcpus=0), "vcpus"),
    (lambda: Workload(guest_exit_rate=-1.0), "guest_exit_rate"),
    (lambda: Workload(lvtpc="ext"), "lvtpc"),
    (lambda: Costs(vmexit=-1), "vmexit"),
    (lambda: Costs(handlers={"NMI": -3}), "handlers"),
    (lambda: Costs(handlers={"NOPE": 3}), "handlers"),
])
def test_bad_numbers_name_their_field(make, field):
    (path, msg), = problems(make)
    assert path == field


def test_trace_times_out_of_order():
    (path, msg), = problems(lambda: Trace("nmi", times=[0.2, 0.1, -1.0]))
    assert path == "times"
    assert "times[1] = 0.1 comes before times[0] = 0.2" in msg
    assert "times[2] = -1.0 is outside 0..1e+09" in msg


def test_source_vcpu_out_of_range():
    (_, msg), = problems(lambda: Workload(vcpus=2, sources=[Poisson("nmi", rate=1, vcpu=2)]))
    assert "vCPU 2" in msg and "0..1" in msg


@pytest.mark.parametrize("duration,interval", [(0, 1), (-1, 1), (1, 0), (1, -2),
                                               (float("nan"), 1), (float("inf"), 1)])
def test_bad_duration_and_interval(duration, interval):
    ps = dict(problems(lambda: kvmsim.simulate(Config(), duration=duration, interval=interval)))
    assert set(ps) <= {"duration", "interval"} and ps


def test_both_bad_times_reported_together():
    ps = dict(problems(lambda: kvmsim.simulate(Config(), duration=-1, interval=0)))
    assert set(ps) == {"duration", "interval"}


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("make,field", [
    (lambda: Poisson("nmi", rate=1e12), "rate"),
    (lambda: Workload(guest_exit_rate=1e10), "guest_exit_rate"),
    (lambda: Periodic("irq", period=1e10), "period"),
    (lambda: Costs(event=10**10), "event"),
    (lambda: Costs(handlers={"PMU": 10**10}), "handlers"),
    (lambda: Workload(nmi_handler=2.0), "nmi_handler"),
])
def test_values_that_would_overflow_or_never_end_are_refused(make, field):
    (path, msg), = problems(make)
    assert path == field


def test_huge_duration_is_refused_not_overflowed():
    (path, msg), = problems(lambda: kvmsim.simulate(Config(), duration=1e300))
    assert path == "duration" and "1e+09" in msg


@pytest.mark.parametrize("call,field", [
    (lambda: kvmsim.simulate(Config(), duration=True), "duration"),
    (lambda: kvmsim.simulate(Config(), duration=10**400), "duration"),
    (lambda: kvmsim.simulate(Config(), duration="10"), "duration"),
    (lambda: kvmsim.simulate(None), "config"),
    (lambda: kvmsim.Simulation({"order": "linux-6.6"}), "config"),
    (lambda: kvmsim.simulate(Config(), duration=1.0, interval=1.4e-9), "interval"),
    (lambda: Periodic("irq", period=1e-300), "period"),
    (lambda: Periodic("irq", period=1.5e-9), "period"),
    (lambda: Trace("nmi", times=[1e-3, 1.0000000005e-3]), "times"),
    (lambda: kvmsim.Result.from_json("[]"), "json"),
    (lambda: kvmsim.Result.from_json("not json"), "json"),
    (lambda: kvmsim.Simulation(Config(), keep=["cycles"]), "keep"),
])
def test_bad_types_and_times_are_config_errors(call, field):
    # These once ran (True as 1 s), overflowed, silently rounded (1.4 ns to 1 ns, 1e-300 s
    # to 1 ns) or raised AttributeError.
    (path, msg), = problems(call)
    assert path == field, msg


def test_interval_of_a_third_of_a_second_is_labelled_exactly():
    # 1/3 s over 1e5 s once gave two intervals stamped 100000. Times are whole ns: 1/3 s
    # is refused with the nearest, which labels every interval exactly.
    (path, msg), = problems(lambda: kvmsim.simulate(Config(), duration=1e5, interval=1 / 3))
    assert path == "interval" and "nearest: 0.333333333 s" in msg
    r = kvmsim.simulate(Config(workload=Workload()), duration=1e5, interval=0.333333333)
    assert r.interval_ns == 333_333_333 and r.counts.shape[1] == 300_001
    assert r.times[-2] == 299_999 * 0.333333333 + 0.333333333 and r.times[-1] == 1e5
    assert len(set(r.times.tolist())) == len(r.times)


def test_counts_memory_is_bounded_before_the_run():
    with pytest.raises(ConfigError, match="GiB of counts") as e:
        kvmsim.simulate(Config(), duration=1e5, interval=1e-3)
    assert e.value.problems[0][0] == "interval"
    # Keeping fewer counters per interval is the way out.
    assert kvmsim.simulate(Config(workload=Workload()), duration=1e5, interval=1e-3,
                           keep=["vmexits"]).counts.shape == (1, 10**8, 1)
