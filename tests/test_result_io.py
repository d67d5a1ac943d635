"""Result export: JSON round-trips exactly; pandas and matplotlib views of the same counts."""

import numpy as np
import pytest

import kvmsim
from kvmsim import Result


@pytest.fixture(scope="module")
def result():
    cfg = kvmsim.Config(order="linux-6.6", workload="spec2017-vtune", seed=4)
    return kvmsim.simulate(cfg, duration=2.0, interval=0.5)


def test_json_round_trip_is_exact(result):
    back = Result.from_json(result.to_json())
    assert back.config == result.config
    assert (back.interval, back.duration) == (result.interval, result.duration)
    np.testing.assert_array_equal(back.counts, result.counts)
    np.testing.assert_array_equal(back.nmis_outstanding, result.nmis_outstanding)
    assert back.totals == result.totals


def test_json_rejects_other_documents():
    with pytest.raises(ValueError, match="not a kvmsim result"):
        Result.from_json('{"counts": []}')


def test_to_pandas(result):
    df = result.to_pandas()
    assert list(df.index) == [0.5, 1.0, 1.5, 2.0]
    assert df["canceled_vmenters"].tolist() == result.intervals["canceled_vmenters"].tolist()
    per = result.to_pandas(per_vcpu=True)
    assert per.shape == (8 * 4, len(result.names))
    assert per["vmexits"].groupby(level="vcpu").sum().tolist() == \
        result.per_vcpu["vmexits"].tolist()


def test_plot(result):
    import matplotlib
    matplotlib.use("Agg")
    ax = result.plot("canceled_vmenters")
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0.5, 1.0, 1.5, 2.0]
    assert list(line.get_ydata()) == result.intervals["canceled_vmenters"].tolist()
    assert line.get_label() == "linux-6.6"


def test_missing_optional_dependency_is_explained(result, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_pandas(name, *a, **k):
        if name == "pandas":
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"pip install 'kvmsim\[pandas\]'"):
        result.to_pandas()


def test_json_round_trip_with_no_complete_interval(engine):
    # A result without a complete interval once could not be read back.
    sim = kvmsim.Simulation(kvmsim.Config(workload="anchor", engine=engine), interval=1.0)
    empty = sim.result()
    assert empty.counts.shape[1] == 0 and empty.complete == 0
    sim.run(until=0.25)
    partial = sim.result()
    for r in (empty, partial):
        back = Result.from_json(r.to_json())
        np.testing.assert_array_equal(back.counts, r.counts)
        assert back.totals == r.totals and back.duration_ns == r.duration_ns


def test_totals_answer_to_every_name_of_a_counter(result):
    t = result.totals
    assert t["probe:vmx_cancel_injection"] == t["canceled_vmenters"] == \
        t["vmx_cancel_injection"] == t["kvmsim:canceled_vmenters"]
    assert t["kvm:kvm_exit"] == t["vmexits"] == t["kvm_exit"]
    assert t["kvmsim:requests.NMI"] == t["requests.NMI"]
    with pytest.raises(KeyError, match="unknown counter 'cycles'"):
        t["cycles"]
