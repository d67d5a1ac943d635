"""Scenario files: a whole run as TOML, round-tripped exactly, with every problem reported."""

import pathlib

import numpy as np
import pytest

import kvmsim
from kvmsim import ConfigError, Scenario

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_load_and_round_trip(path):
    s = Scenario.load(path)
    again = Scenario.from_toml(s.to_toml())
    assert again == s


def test_example_is_the_founding_preset():
    s = Scenario.load(EXAMPLES / "spec2017-vtune.toml")
    preset = kvmsim.Config(order="linux-6.6", workload="spec2017-vtune")
    assert s.config == preset and (s.duration, s.interval) == (60.0, 10.0)


def test_scenario_file_means_the_config_written_in_python(engine):
    text = f"""order = "linux-6.6"\nseed = 3\nengine = "{engine}"\nduration = 0.05
interval = 0.01\n[workload]\nvcpus = 2\nguest_exit_rate = 5000.0\n
[[workload.sources]]\ntype = "poisson"\nkind = "pmi"\nrate = 500.0\n
[costs.handlers]\nPMU = 800\n"""
    cfg = kvmsim.Config(order="linux-6.6", seed=3, engine=engine,
                        workload=kvmsim.Workload(vcpus=2, guest_exit_rate=5000.0,
                                                 sources=[kvmsim.Poisson("pmi", rate=500.0)]),
                        costs=kvmsim.Costs(handlers={"PMU": 800}))
    s = Scenario.from_toml(text)
    assert s.config == cfg and (s.duration, s.interval) == (0.05, 0.01)
    assert s.config.costs.handlers == {"NMI": 30, "PMU": 800, "PMI": 150, "SMI": 30}
    np.testing.assert_array_equal(
        s.run().counts, kvmsim.simulate(cfg, duration=0.05, interval=0.01).counts)


def test_every_problem_with_its_line():
    text = ('order = ["NMI", "NMI"]\nseed = -1\nduration = 0\n'
            '[workload]\nvcpus = 2\nlvtpc = "ext"\n'
            '[[workload.sources]]\ntype = "poisson"\nkind = "nmi"\nrate = 1.0\n'
            '[[workload.sources]]\ntype = "gauss"\nkind = "pmi"\n'
            '[costs]\nvmexit = -5\nbogus = 1\n')
    with pytest.raises(ConfigError) as e:
        Scenario.from_toml(text, source="s.toml")
    got = {p: m for p, m in e.value.problems}
    assert set(got) == {"s.toml:1: order", "s.toml:2: seed", "s.toml:6: workload.lvtpc",
                        "s.toml:11: workload.sources.1", "s.toml:15: costs.vmexit",
                        "s.toml:16: costs.bogus", "s.toml:3: duration"}
    assert "'gauss'" in got["s.toml:11: workload.sources.1"]


def test_not_toml():
    with pytest.raises(ConfigError) as e:
        Scenario.from_toml("order = [", source="x.toml")
    (path, msg), = e.value.problems
    assert path == "x.toml" and "not valid TOML" in msg


def test_config_toml_keeps_every_field():
    cfg = kvmsim.Config(order=["PMU", "PMI", "SMI", "NMI", "EVENT"], vendor="amd", seed=9,
                        workload=kvmsim.Workload(vcpus=3, lvtpc="fixed", sources=[
                            kvmsim.Trace("nmi", times=[0.001, 0.002], vcpu=1),
                            kvmsim.Periodic("irq", period=0.004, start=0.001)]),
                        costs=kvmsim.Costs(check=3, handlers={"NMI": 70}))
    assert Scenario.from_toml(Scenario(config=cfg).to_toml()).config == cfg


def test_types_are_strict():
    with pytest.raises(ConfigError) as e:
        Scenario.from_toml('seed = 1e3\n[workload]\nvcpus = true\n', source="t.toml")
    assert {p for p, _ in e.value.problems} == {"t.toml:1: seed", "t.toml:3: workload.vcpus"}
    # Integers where seconds or rates are expected are fine.
    s = Scenario.from_toml('duration = 2\n[workload]\nguest_exit_rate = 100\n')
    assert (s.duration, s.config.workload.guest_exit_rate) == (2.0, 100.0)


def test_vcpu_targets_are_reported_with_the_other_problems():
    # Field errors and out-of-range vCPU targets in one file: all of them at once, each with
    # its line (the vCPU checks once waited until every field was valid).
    text = """[workload]
vcpus = 2
guest_exit_rate = -5.0
[[workload.sources]]
type = "poisson"
kind = "ipi:7"
rate = 10.0
[[workload.sources]]
type = "trace"
kind = "nmi"
vcpu = 5
times = [0.1]
[[workload.sources]]
type = "poisson"
kind = "pmi"
rate = -1.0
"""
    with pytest.raises(ConfigError) as e:
        Scenario.from_toml(text, source="e8.toml")
    paths = sorted(p for p, _ in e.value.problems)
    assert paths == ["e8.toml:11: workload.sources.1.vcpu",
                     "e8.toml:16: workload.sources.2.rate",
                     "e8.toml:3: workload.guest_exit_rate",
                     "e8.toml:6: workload.sources.0.kind"]
    assert "vCPU 5 does not exist; allowed: 0..1" in str(e.value)
    assert "'ipi:7' targets vCPU 7" in str(e.value)


def test_vcpu_targets_with_other_problems_in_python():
    with pytest.raises(ConfigError) as e:
        kvmsim.Workload(vcpus=2, guest_exit_rate=-1.0,
                        sources=[kvmsim.Trace("nmi", times=[0.1], vcpu=5)])
    assert sorted(p for p, _ in e.value.problems) == ["guest_exit_rate", "sources.0.vcpu"]
    with pytest.raises(ConfigError) as e:            # a bad vcpus: no target checks on it
        kvmsim.Workload(vcpus=0, sources=[{"type": "trace", "kind": "nmi", "times": [0.1],
                                           "vcpu": 5}])
    assert [p for p, _ in e.value.problems] == ["vcpus"]


def test_overrides_apply_before_the_file_is_checked():
    # What `--vcpus 8` needs: the file's vCPU targets are checked against the flag's count,
    # not the file's (README: flags override the file).
    text = """order = "linux-6.6"
[workload]
vcpus = 2
[[workload.sources]]
type = "trace"
kind = "nmi"
vcpu = 5
times = [0.1]
"""
    s = Scenario.from_toml(text, source="e8.toml", overrides={"workload": {"vcpus": 8}})
    assert s.config.workload.vcpus == 8 and s.config.workload.sources[0].vcpu == 5
    with pytest.raises(ConfigError) as e:                  # still too few: the file's line
        Scenario.from_toml(text, source="e8.toml", overrides={"workload": {"vcpus": 4}})
    assert e.value.problems == [("e8.toml:7: workload.sources.0.vcpu",
                                 "vCPU 5 does not exist; allowed: 0..3")]
    with pytest.raises(ConfigError) as e:                  # the override's own problem: no line
        Scenario.from_toml(text, source="e8.toml", overrides={"workload": {"vcpus": 0}})
    assert [p for p, _ in e.value.problems] == ["workload.vcpus"]
    preset = Scenario.from_toml('workload = "anchor"\nduration = 2.0',
                                overrides={"workload": {"vcpus": 3}, "seed": 4})
    assert preset.config.workload.vcpus == 3 and preset.config.seed == 4
    assert preset.config.workload.sources == kvmsim.Config(workload="anchor").workload.sources
