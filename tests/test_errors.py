"""Bad input: one ConfigError naming the field, the bad value and what is allowed."""

import pytest

import kvmsim
from kvmsim import Config, ConfigError, Costs, Periodic, Poisson, Trace, Workload


def problems(fn):
    with pytest.raises(ConfigError) as e:
        fn()
    return e.value.problems


def test_unknown_order_lists_presets():
    (path, msg), = problems(lambda: Config(order="linux-6.5"))
    assert path == "order" and "'linux-6.5'" in msg and "linux-6.6" in msg


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
