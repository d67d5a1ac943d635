"""kvmsim.sweep and `kvmsim sweep`: field paths, seeds, the table, the file it appends to and
resumes from, and a real dask LocalCluster (2 worker processes), one of them SIGKILLed."""

import fcntl
import io
import json
import logging
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from typing import Literal

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

import kvmsim
from kvmsim._config import ORDER_HELP
from kvmsim import ConfigError, _sweep, _version
from kvmsim._sweep import grid as _sweep_grid
from kvmsim._sweep import points as _sweep_plan
from kvmsim._sweep.run import run_batch
from kvmsim._sweep.stats import mean_interval, t_quantile
from kvmsim._cli import main

ANCHOR = kvmsim.Config(workload="anchor", order="linux-6.6")
GRID = {"order": ["linux-6.6", "linux-6.7"], "workload.vcpus": [1, 2]}


def configs(plan):
    return [kvmsim.Config(**r.config) for r in plan.runs]


# --- field paths ---------------------------------------------------------------------------
def test_any_field_path_of_the_models_is_swept():
    grid = {"vendor": ["intel", "amd"], "workload.sources[0].rate": [500.0, 4000.0],
            "costs.state_load": [90, 300], "costs.handlers.PMU": [800],
            "workload.guest_exit_rate": [5e4], "order": [["PMU", "PMI", "NMI", "TLB_FLUSH",
                                                          "EVENT"]]}
    p = _sweep_plan.plan(ANCHOR, grid, seeds=1, duration=0.01)
    assert len(p.runs) == 8
    got = [(c.vendor, c.workload.sources[0].rate, c.costs.state_load, c.costs.handlers["PMU"],
            c.workload.guest_exit_rate, c.order) for c in configs(p)]
    assert got == [(v, r, s, 800, 5e4, ["PMU", "PMI", "NMI", "TLB_FLUSH", "EVENT"])
                   for v in ("intel", "amd") for r in (500.0, 4000.0) for s in (90, 300)]
    # Untouched fields stay the base's; the order list is a cell in CLI syntax.
    assert all(c.workload.sources[1] == ANCHOR.workload.sources[1] for c in configs(p))
    assert p.labels["order"] == ["PMU+PMI+NMI+TLB_FLUSH+EVENT"] * 8


def test_a_preset_workload_is_expanded_before_a_deeper_field_is_set():
    p = _sweep_plan.plan(kvmsim.Config(workload="spec2017-vtune"), {"workload.vcpus": [2, 64]})
    preset = kvmsim.Config(workload="spec2017-vtune").workload
    assert [c.workload for c in configs(p)] == [
        preset.model_copy(update={"vcpus": n}) for n in (2, 64)]
    # The preset is itself a grid value here: each point expands its own.
    p = _sweep_plan.plan(ANCHOR, {"workload": ["anchor", "spec2017-vtune"], "workload.vcpus": [3]})
    assert [(len(c.workload.sources), c.workload.vcpus) for c in configs(p)] == [(2, 3), (3, 3)]


def test_paths_reach_fields_a_model_gains_later():
    # A stand-in for the `host` sub-model another issue adds: walked by its annotations.
    class Host(BaseModel):
        apicv: bool = True
        lapic_timer: Literal["tsc-deadline", "oneshot"] = "tsc-deadline"

    class Root(BaseModel):
        host: Host | None = None
        hosts: list[Host] = []

    data = Root().model_dump()
    node, key, ann = _sweep_grid.walk(Root, data, _sweep_grid.parse_path("host.apicv"), None)
    node[key] = _sweep_grid.parse_text("false", ann)
    assert Root(**data).host == Host(apicv=False)         # the optional model's defaults
    with pytest.raises(_sweep_grid.PathError, match="allowed: apicv, lapic_timer"):
        _sweep_grid.walk(Root, data, _sweep_grid.parse_path("host.apic"), None)
    with pytest.raises(_sweep_grid.PathError, match="hosts is empty: nothing to index"):
        _sweep_grid.walk(Root, data, _sweep_grid.parse_path("hosts[0].apicv"), None)


def test_host_features_and_behaviour_switches_are_swept():
    p = _sweep_plan.plan(ANCHOR, {"host.apicv": [True, False],
                                  "behaviour.lvtpc_automask": ["all", "none"]})
    got = [(c.host.apicv, c.behaviour) for c in configs(p)]
    assert got == [(a, {"lvtpc_automask": m}) for a in (True, False) for m in ("all", "none")]
    # and they reach the model: with LVTPC masked on delivery a PMI that comes before the
    # guest's handler unmasks it is dropped (this seed has one in 50 ms); unmasked, none is
    t = kvmsim.sweep(ANCHOR, {"behaviour.lvtpc_automask": ["all", "none"]}, duration=0.05)
    assert list(t["pmis_dropped"]) == [1, 0]


def test_bad_paths_and_values_are_reported_together_before_anything_runs():
    grid = {"host.apic": [True], "workload.vcpu": [1], "workload.sources[5].rate": [1.0],
            "workload.vcpus": [0, 2], "seed": [1], "order": ["linux-6.6", "nope"],
            "costs.state_load": [-1], "vendor": "amd", "bad path!": [1]}
    with pytest.raises(ConfigError) as e:
        kvmsim.sweep(ANCHOR, grid, seeds=0, duration=0.01)
    got = dict(e.value.problems)
    assert got["host.apic"] == ("unknown field 'apic' in host; allowed: apicv, ipiv, vnmi, "
                                "idle_hlt, preemption_timer")
    assert got["workload.vcpu"].startswith("unknown field 'vcpu' in workload; allowed: vcpus, ")
    assert got["workload.sources[5].rate"] == ("workload.sources has 2 items; allowed: "
                                               "[0]..[1]")
    assert "seeds=N" in got["seed"]
    assert "greater than or equal to 1" in got["workload.vcpus=0"]
    assert got["order=nope"].startswith("unknown order 'nope'")
    assert "greater than or equal to 0" in got["costs.state_load=-1"]
    assert got["vendor"] == "'amd'; give a list of values"
    assert "not a field path" in got["bad path!"]
    assert got["seeds"].startswith("0;")
    assert len(got) == 10


def test_points_that_collide_or_repeat_are_refused():
    with pytest.raises(ConfigError) as e:
        _sweep_plan.plan(ANCHOR, {"vendor": ["amd", "intel", "amd"]})
    assert e.value.problems == [("vendor", 'value "amd" given twice: every point runs once')]
    # Two spellings of one config would be one run twice.
    with pytest.raises(ConfigError) as e:
        _sweep_plan.plan(ANCHOR, {"workload": ["anchor", kvmsim.Config(workload="anchor").workload]})
    assert "give the same runs" in e.value.problems[0][1]
    # Threads and engine change how a run is computed, not its counts.
    with pytest.raises(ConfigError) as e:
        _sweep_plan.plan(ANCHOR, {"threads": [1, 2]})
    assert e.value.problems == [("grid", "points 1 and 2 give the same runs (threads and "
                                         "engine change no count)")]


def test_run_keys_hash_the_model(monkeypatch):
    # A run of another model (any change to the files that decide counts) is another run:
    # a sweep file written by it is never resumed into this one.
    before = [r.key for r in _sweep_plan.plan(ANCHOR, seeds=2).runs]
    assert before == [r.key for r in _sweep_plan.plan(
        ANCHOR.model_copy(update={"threads": 2}), seeds=2).runs]
    monkeypatch.setattr(_version, "_digest", lambda: "another-model")
    assert not set(before) & {r.key for r in _sweep_plan.plan(ANCHOR, seeds=2).runs}


@pytest.mark.parametrize("path, text, value", [
    ("workload.vcpus", "8", 8), ("workload.sources[0].rate", "1e3", 1000.0),
    ("workload.sources[0].vcpu", "none", None), ("workload.sources[0].vcpu", "0", 0),
    ("order", "linux-6.6", "linux-6.6"), ("order", "PMU+PMI+NMI+EVENT",
                                          ["PMU", "PMI", "NMI", "EVENT"]),
    ("vendor", "amd", "amd"), ("workload", "spec2017-vtune", "spec2017-vtune"),
    ("costs.handlers.PMU", "800", 800)])
def test_command_line_values_are_parsed_by_the_field_type(path, text, value):
    data = ANCHOR.model_dump()
    _, _, ann = _sweep_grid.walk(kvmsim.Config, data, _sweep_grid.parse_path(path), None)
    got = _sweep_grid.parse_text(text, ann)
    assert got == value and type(got) is type(value)


def test_command_line_values_of_the_wrong_type_are_named():
    data = ANCHOR.model_dump()
    for path, text, msg in [("workload.vcpus", "8.5", "'8.5' is not an integer"),
                            ("costs.state_load", "x", "'x' is not an integer"),
                            ("workload.sources[0].rate", "fast", "'fast' is not a number"),
                            ("costs.handlers", "PMU", "set its keys, PATH.KEY=VALUE")]:
        _, _, ann = _sweep_grid.walk(kvmsim.Config, data, _sweep_grid.parse_path(path), None)
        with pytest.raises(ValueError, match=msg):
            _sweep_grid.parse_text(text, ann)


# --- seeds, the table and its summary ------------------------------------------------------
def test_rows_are_the_runs_of_spawned_seeds_exactly():
    table = kvmsim.sweep(ANCHOR, GRID, seeds=3, duration=0.2)
    children = np.random.SeedSequence(ANCHOR.seed).spawn(3)
    seeds = [int(c.generate_state(1)[0]) for c in children]
    assert list(table["seed"]) == seeds * 4 and list(table["seed_index"]) == [0, 1, 2] * 4
    assert list(table["point"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert list(table["order"]) == ["linux-6.6"] * 6 + ["linux-6.7"] * 6
    assert list(table["workload.vcpus"]) == [1, 1, 1, 2, 2, 2] * 2
    for i, row in table.iterrows():
        cfg = ANCHOR.model_copy(update={"order": row["order"], "seed": int(row["seed"]),
                                        "workload": ANCHOR.workload.model_copy(
                                            update={"vcpus": int(row["workload.vcpus"])})})
        totals = kvmsim.simulate(cfg, duration=0.2).totals
        assert {c: int(row[c]) for c in totals} == totals
        if i == 0:
            assert list(table.columns[5:]) == list(totals)
    assert table.dtypes["canceled_vmenters"] == np.int64
    # More seeds later: the first three are the same runs.
    assert list(kvmsim.sweep(ANCHOR, seeds=5, duration=0.2)["seed"])[:3] == seeds


def test_a_row_reruns_alone_with_kvmsim_stat(capsys):
    table = kvmsim.sweep(ANCHOR, {"workload.vcpus": [2]}, seeds=2, duration=0.5)
    row = table.iloc[1]
    assert main(["stat", "--workload", "anchor", "--order", "linux-6.6", "--vcpus", "2",
                 "--duration", "0.5", "--seed", str(row["seed"]), "-x,"]) == 0
    count = int(capsys.readouterr().out.splitlines()[0].split(",")[1])
    assert count == row["canceled_vmenters"] > 0


def test_summary_is_the_mean_and_students_t_interval():
    table = kvmsim.sweep(ANCHOR, {"order": ["linux-6.6", "linux-6.7"]}, seeds=5, duration=0.2)
    s = table.summary(["canceled_vmenters", "vmenters"])
    assert list(s.columns) == ["point", "order", "n"] + [
        f"{c}.{x}" for c in ("canceled_vmenters", "vmenters") for x in ("mean", "low", "high")]
    x = table[table["order"] == "linux-6.7"]["canceled_vmenters"].to_numpy(dtype=float)
    half = 2.7764451 * x.std(ddof=1) / np.sqrt(5)        # t(0.975, 4 df)
    row = s.iloc[1]
    assert row["n"] == 5 and row["canceled_vmenters.mean"] == pytest.approx(x.mean())
    assert row["canceled_vmenters.low"] == pytest.approx(x.mean() - half, rel=1e-6)
    assert row["canceled_vmenters.high"] == pytest.approx(x.mean() + half, rel=1e-6)
    # A filtered table is still a SweepTable.
    assert len(table[table["order"] == "linux-6.6"].summary()) == 1
    # Counters answer to every name they have, as in stat -e.
    pd.testing.assert_frame_equal(table.summary(["probe:vmx_cancel_injection", "vmenters"]), s)


def test_cli_counters_take_perf_names(capsys):
    args = ["sweep", "--grid", "workload=anchor", "--duration", "0.01", "--no-progress"]
    assert main(args + ["-e", "probe:vmx_cancel_injection,kvm:kvm_exit"]) == 0
    assert main(args + ["-e", "canceled_vmenters,vmexits"]) == 0
    perf, plain = capsys.readouterr().out.split("# ")[1:]
    assert perf == plain and "canceled_vmenters" in perf and "vmexits" in perf
    assert main(args + ["-e", "kvm:kvm_exits"]) == 2
    assert "unknown counter kvm:kvm_exits" in capsys.readouterr().err


@pytest.mark.parametrize("df, t", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451),
                                   (9, 2.2621572), (30, 2.0422725), (1000, 1.9623391)])
def test_t_quantiles(df, t):
    assert t_quantile(0.95, df) == pytest.approx(t, abs=1e-6)


def test_one_seed_has_no_interval():
    mean, low, high = mean_interval([7])
    assert mean == 7 and np.isnan(low) and np.isnan(high)


def test_importing_kvmsim_imports_no_dask_or_pandas(tmp_path):
    code = ("import sys, kvmsim; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dask', 'distributed', 'pandas', 'pyarrow'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_any_executor_gives_the_same_table():
    with ThreadPoolExecutor(1) as one:
        a = kvmsim.sweep(ANCHOR, GRID, seeds=2, duration=0.1, client=one)
    pd.testing.assert_frame_equal(a, kvmsim.sweep(ANCHOR, GRID, seeds=2, duration=0.1))


# --- the file: appended as rows arrive, resumed ---------------------------------------------
def lines(path):
    return path.read_text().splitlines()


def test_resume_runs_only_what_the_file_lacks(tmp_path):
    out = tmp_path / "sweep.jsonl"
    first = kvmsim.sweep(ANCHOR, {"order": ["linux-6.6"]}, seeds=2, duration=0.1, out=out)
    before = lines(out)
    assert len(before) == 2
    # More values and more seeds: the old rows stay as they are, only new ones are appended.
    grown = kvmsim.sweep(ANCHOR, {"order": ["linux-6.6", "linux-6.7"]}, seeds=3, duration=0.1,
                         out=out)
    after = lines(out)
    assert after[:2] == before and len(after) == 6
    assert len({json.loads(x)["key"] for x in after}) == 6
    fresh = kvmsim.sweep(ANCHOR, {"order": ["linux-6.6", "linux-6.7"]}, seeds=3, duration=0.1)
    pd.testing.assert_frame_equal(grown, fresh)
    pd.testing.assert_frame_equal(first, fresh[fresh["seed_index"] < 2].iloc[:2])
    # A line cut short by a kill is dropped and its run done again.
    out.write_text("\n".join(after[:4]) + "\n" + after[4][:30])
    again = kvmsim.sweep(ANCHOR, {"order": ["linux-6.6", "linux-6.7"]}, seeds=3, duration=0.1,
                         out=out)
    pd.testing.assert_frame_equal(again, fresh)
    assert sorted(lines(out)) == sorted(after)
    # A different duration is a different sweep: its rows are not taken for these.
    other = kvmsim.sweep(ANCHOR, {"order": ["linux-6.6"]}, seeds=1, duration=0.2, out=out)
    assert len(lines(out)) == 7 and other["vmenter_attempts"][0] > fresh["vmenter_attempts"][0]


def test_parquet_out_is_a_dataset_of_atomic_parts(tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "sweep.parquet"
    table = kvmsim.sweep(ANCHOR, GRID, seeds=2, duration=0.1, out=str(out))
    parts = sorted(os.listdir(out))
    assert parts and all(p.startswith("part-") and p.endswith(".parquet") for p in parts)
    (out / ".part-killed.parquet").write_bytes(b"PAR1 half a part")
    again = kvmsim.sweep(ANCHOR, GRID, seeds=2, duration=0.1, out=str(out))
    assert sorted(os.listdir(out)) == parts           # nothing run, the dead part removed
    pd.testing.assert_frame_equal(again, table)
    rows = pd.read_parquet(out).sort_values(["order", "workload.vcpus", "seed_index"])
    assert list(rows["canceled_vmenters"]) == list(table["canceled_vmenters"])


def test_bad_out_is_reported_with_the_grid(tmp_path):
    with pytest.raises(ConfigError) as e:
        kvmsim.sweep(ANCHOR, {"vendor": ["x"]}, out=tmp_path / "no" / "f.jsonl")
    assert [p for p, _ in e.value.problems] == ["vendor=x", "out"]
    bad = tmp_path / "notes.jsonl"
    bad.write_text("hello\n")
    with pytest.raises(ConfigError, match="notes.jsonl:1: not a sweep row"):
        kvmsim.sweep(ANCHOR, out=bad, duration=0.01)


def test_a_failed_task_keeps_what_finished(tmp_path, monkeypatch):
    calls = []

    def flaky(version, runs, duration, stop=None):
        calls.append(len(runs))
        if len(calls) > 2:
            raise RuntimeError("worker lost its disk")
        return run_batch(version, runs, duration, stop)
    monkeypatch.setattr(_sweep, "run_batch", flaky)
    out = tmp_path / "sweep.jsonl"
    with ThreadPoolExecutor(1) as one, pytest.raises(_sweep.SweepFailed) as e:
        kvmsim.sweep(ANCHOR, GRID, seeds=2, duration=0.1, client=one, out=out)
    assert str(e.value) == ("a sweep task failed: RuntimeError: worker lost its disk; the 2 "
                            f"runs done are in {out}: run again to resume")
    assert len(lines(out)) == 2


def test_a_worker_with_another_kvmsim_refuses_the_task():
    with pytest.raises(RuntimeError, match="the sweep was planned with kvmsim 0.0.0-other"):
        run_batch("0.0.0-other", [], 1.0)


def test_each_run_takes_one_thread_unless_told(monkeypatch):
    # The sweep's runs already fill the cores; a run asks for more only if its config does.
    from kvmsim._sweep import run as R
    seen = []

    class Spy(R.Simulation):
        def __init__(self, config, **kw):
            seen.append(config.threads)
            super().__init__(config, **kw)
    monkeypatch.setattr(R, "Simulation", Spy)
    cfg = ANCHOR.model_dump()
    run_batch(_version.model(), [("a", cfg), ("b", {**cfg, "threads": 2})], 0.001)
    assert seen == [1, 2]


# --- the command ------------------------------------------------------------------------------
def test_cli_bad_grid_exits_2_with_every_problem(capsys):
    code = main(["sweep", "--grid", "workload=anchor", "--grid", "order=linux-6.6,nope",
                 "--grid", "workload.vcpus=1,x", "--grid", "costs.foo=1", "--grid", "vendor",
                 "--seeds", "0", "-e", "nonsense", "--heatmap"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == [
        "kvmsim sweep: error: --grid: 'vendor'; write PATH=V1,V2,... with no empty value",
        "kvmsim sweep: error: --seeds: 0; give a whole number of seeds, at least 1",
        "kvmsim sweep: error: costs.foo: unknown field 'foo' in costs; allowed: "
        + ", ".join(kvmsim.Costs.model_fields),
        "kvmsim sweep: error: workload.vcpus=x: 'x' is not an integer",
        f"kvmsim sweep: error: order=nope: unknown order 'nope'; allowed: {ORDER_HELP}",
        "kvmsim sweep: error: -e: unknown counter nonsense; allowed: the table's counter "
        "names, e.g. canceled_vmenters, nmis_dropped, ns.guest, requests.NMI, "
        "cancels.backedge.NMI",
        "kvmsim sweep: error: --heatmap: draws with --plot FILE.png; give --plot"]


def test_cli_prints_the_summary_and_plots(tmp_path, capsys):
    scenario = tmp_path / "s.toml"
    scenario.write_text('workload = "anchor"\nseed = 4\nduration = 0.2\n')
    for kind in ("lines", "heatmap"):
        png = tmp_path / f"{kind}.png"
        args = ["sweep", str(scenario), "--grid", "order=linux-6.6,PMU+PMI+NMI+TLB_FLUSH+EVENT",
                "--grid", "workload.vcpus=1,2", "--seeds", "3", "-e",
                "canceled_vmenters,vmenters", "--plot", str(png)]
        assert main(args + (["--heatmap"] if kind == "heatmap" else [])) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("# 4 points x 3 seeds, 0.2 simulated s each; mean and 95% interval "
                      "over seeds")
    assert out[1].split() == ["order", "workload.vcpus", "n", "canceled_vmenters", "+-95%",
                              "vmenters", "+-95%"]
    s = kvmsim.sweep(kvmsim.Scenario.load(scenario), {
        "order": ["linux-6.6", ["PMU", "PMI", "NMI", "TLB_FLUSH", "EVENT"]],
        "workload.vcpus": [1, 2]}, seeds=3).summary(["canceled_vmenters"])
    for line, (_, r) in zip(out[2:6], s.iterrows()):
        cells = line.split()
        assert cells[:3] == [r["order"], str(r["workload.vcpus"]), "3"]
        assert float(cells[3]) == pytest.approx(r["canceled_vmenters.mean"], rel=1e-6)
        half = r["canceled_vmenters.mean"] - r["canceled_vmenters.low"]
        assert float(cells[4]) == pytest.approx(half, rel=1e-2)


@pytest.mark.parametrize("missing, args, message", [
    ("pandas", [], "sweep: needs pandas and dask: pip install 'kvmsim[dask]'"),
    ("distributed", ["--scheduler", "tcp://127.0.0.1:8786"],
     "--scheduler: needs dask: pip install 'kvmsim[dask]'")])
def test_cli_without_the_dask_extra(tmp_path, missing, args, message):
    code = (f"import sys; sys.modules[{missing!r}] = None; from kvmsim._cli import main; "
            f"sys.exit(main(['sweep', '--duration', '0.01', *{args!r}]))")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert (p.returncode, p.stderr) == (2, f"kvmsim sweep: error: {message}\n")
    code = f"import sys; sys.modules[{missing!r}] = None; import kvmsim; kvmsim.sweep(" \
           "kvmsim.Config(), duration=0.01)"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    if missing == "pandas":
        assert "ImportError: kvmsim.sweep() needs pandas: pip install 'kvmsim[dask]'" in p.stderr
    else:                                   # local threads need no dask
        assert p.returncode == 0, p.stderr


def test_cli_scheduler_that_cannot_be_reached_exits_2(capsys):
    assert main(["sweep", "--duration", "0.01", "--scheduler", "no-port"]) == 2
    assert capsys.readouterr().err == ("kvmsim sweep: error: --scheduler: cannot connect to "
                                       "no-port: missing port number in address 'no-port'\n")


def test_summary_printed_with_no_point_complete():
    from kvmsim._cli.sweep import print_summary
    from kvmsim._sweep.table import SweepTable
    p = _sweep_plan.plan(ANCHOR, {"workload.vcpus": [1, 2]}, seeds=2)
    out = io.StringIO()
    print_summary(SweepTable.build(p, {p.runs[0].key: {"canceled_vmenters": 5}}),
                  ["canceled_vmenters"], p.duration, out)
    assert out.getvalue().splitlines() == [
        "# 0 points x 2 seeds, 10 simulated s each; mean and 95% interval over seeds "
        "(1 incomplete not shown)", "workload.vcpus  n  canceled_vmenters  +-95%"]


def test_cli_heatmap_needs_two_varying_paths(capsys):
    assert main(["sweep", "--grid", "order=linux-6.6,linux-6.7", "--grid", "workload=anchor",
                 "--plot", "x.png", "--heatmap"]) == 2
    assert "a heatmap needs exactly two grid paths with several values; this grid has 1 " \
           "(order)" in capsys.readouterr().err


def test_cli_progress_bar_over_points_on_a_terminal(tmp_path):
    master, slave = pty.openpty()       # stderr a 100-column terminal, as a user's
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    err = bytearray()

    def drain():                        # read while the child runs: a closed pty drops data
        while chunk := _read(master):
            err.extend(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "sweep", "--grid",
                              "workload=anchor", "--grid", "workload.vcpus=1,2,3",
                              "--seeds", "2", "--duration", "2"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, _ = child.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    assert child.returncode == 0
    assert b"0/3 [" in err and b"point" in err and b"%|" in err  # tqdm drew the bar
    assert len(out.splitlines()) == 5                            # the table is unaffected


def _read(fd):
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


# A sweep that takes ~3 s of CPU (48 runs), long enough to be stopped mid-way.
CLI_SWEEP = ["sweep", "--grid", "workload=anchor", "--grid", "order=linux-6.6,linux-6.7",
             "--grid", "workload.vcpus=1,2", "--seeds", "12", "--duration", "8", "--seed", "7"]


def start(tmp_path, out):
    return subprocess.Popen([sys.executable, "-m", "kvmsim", *CLI_SWEEP, "--out", str(out)],
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_for_rows(path, proc, at_least=1, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= at_least:
            return path.read_text().count("\n")
        time.sleep(0.01)
    raise AssertionError(f"no rows in {path} before the sweep ended ({proc.poll()})")


@pytest.fixture(scope="module")
def reference():
    """The same sweep uninterrupted, in this process."""
    cfg = kvmsim.Config(workload="anchor", seed=7)
    return kvmsim.sweep(cfg, {"workload": ["anchor"], "order": ["linux-6.6", "linux-6.7"],
                              "workload.vcpus": [1, 2]}, seeds=12, duration=8.0)


def check_file(out, ref):
    rows = [json.loads(x) for x in lines(out)]
    assert len(rows) == len(ref) == len({r["key"] for r in rows})  # each run exactly once
    by_seed = {(r["order"], r["workload.vcpus"], r["seed"]): r for r in rows}
    for _, row in ref.iterrows():
        got = by_seed[(row["order"], row["workload.vcpus"], row["seed"])]
        assert all(got[c] == row[c] for c in ref.counters)


@pytest.mark.timeout(300)
def test_cli_sigkill_then_the_same_command_resumes(tmp_path, reference):
    out = tmp_path / "sweep.jsonl"
    proc = start(tmp_path, out)
    done = wait_for_rows(out, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert 0 < done < 48, "killed mid-way"
    kept = lines(out)
    again = subprocess.run([sys.executable, "-m", "kvmsim", *CLI_SWEEP, "--out", str(out)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} of 48 runs already in {out}" in again.stderr
    assert lines(out)[:len(kept)] == kept        # appended to, never rewritten
    check_file(out, reference)


@pytest.mark.timeout(300)
def test_cli_ctrl_c_prints_complete_points_and_exits_130(tmp_path, reference):
    out = tmp_path / "sweep.jsonl"
    proc = start(tmp_path, out)
    wait_for_rows(out, proc, at_least=26)            # about half done
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = [json.loads(x) for x in lines(out)]
    assert f"interrupted after {len(rows)} of 48 runs; they are in {out}" in stderr
    assert "Traceback" not in stderr
    ref = reference.summary()
    shown = stdout.splitlines()[2:]
    complete = {(r["order"], r["workload.vcpus"]) for r in rows
                if sum(x["order"] == r["order"] and x["workload.vcpus"] == r["workload.vcpus"]
                       for x in rows) == 12}
    assert 1 <= len(shown) == len(complete) < 4
    for line in shown:                               # only points with all 12 seeds
        wl, order, vcpus, n_seeds, mean = line.split()[:5]
        assert (order, int(vcpus)) in complete
        r = ref[(ref["order"] == order) & (ref["workload.vcpus"] == int(vcpus))].iloc[0]
        assert n_seeds == "12" and float(mean) == pytest.approx(r["canceled_vmenters.mean"])
    again = subprocess.run([sys.executable, "-m", "kvmsim", *CLI_SWEEP, "--out", str(out)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    check_file(out, reference)


# --- a real cluster -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    import distributed
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster, timeout="60s")
    yield client
    client.close()
    cluster.close(timeout=60)


@pytest.mark.timeout(300)
def test_cluster_table_equals_a_local_run(client):
    grid = {**GRID, "costs.state_load": [90, 400]}
    got = kvmsim.sweep(ANCHOR, grid, seeds=3, duration=0.5, client=client)
    pd.testing.assert_frame_equal(got, kvmsim.sweep(ANCHOR, grid, seeds=3, duration=0.5))


@pytest.mark.timeout(300)
def test_cluster_worker_sigkilled_mid_sweep_loses_and_duplicates_nothing(client, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(_sweep, "TASK_SECONDS", 0.1)   # many tasks, several in flight
    out = tmp_path / "sweep.jsonl"
    grid = {**GRID, "costs.state_load": [90, 400]}
    result = {}
    thread = threading.Thread(target=lambda: result.update(table=kvmsim.sweep(
        ANCHOR, grid, seeds=6, duration=6.0, client=client, out=out)))
    thread.start()
    end = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n")) and time.monotonic() < end:
        time.sleep(0.01)
    pids = client.run(os.getpid)
    busy = [w for w, tasks in client.processing().items() if tasks]
    assert busy, "a worker has tasks in flight"
    victim = pids[busy[0]]
    os.kill(victim, signal.SIGKILL)
    at_kill = out.read_text().count("\n")
    thread.join(timeout=240)
    assert not thread.is_alive()
    assert 0 < at_kill < 48, "the worker died with most of the sweep to do"
    assert victim not in client.run(os.getpid).values()
    table = result["table"]
    rows = [json.loads(x) for x in lines(out)]
    assert len(rows) == 48 == len({r["key"] for r in rows})
    pd.testing.assert_frame_equal(table, kvmsim.sweep(ANCHOR, grid, seeds=6, duration=6.0))


@pytest.mark.timeout(120)
def test_cluster_workers_must_run_this_kvmsim(client):
    def set_version(v):
        from kvmsim import _version
        old, _version.__version__ = _version.__version__, v
        return old
    client.run(set_version, "0.0.0-other")
    try:
        with pytest.raises(ConfigError) as e:
            kvmsim.sweep(ANCHOR, seeds=1, duration=0.01, client=client)
    finally:
        client.run(set_version, kvmsim.__version__)
    problems = dict(e.value.problems)
    assert sorted(problems) == sorted([*(f"worker {a}" for a in client.nthreads()), "client"])
    other = f"has kvmsim '0.0.0-other+model.{_version._digest()}'"
    assert all(m == other for p, m in problems.items() if p != "client")


@pytest.mark.timeout(300)
def test_cli_on_the_cluster_interrupted_then_resumed(client, tmp_path, reference):
    out = tmp_path / "sweep.jsonl"
    args = [sys.executable, "-m", "kvmsim", *CLI_SWEEP, "--out", str(out),
            "--scheduler", client.scheduler.address]
    proc = subprocess.Popen(args, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for_rows(out, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    kept = lines(out)
    assert 0 < len(kept) < 48 and f"interrupted after {len(kept)} of 48 runs" in stderr
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} of 48 runs already in {out}" in again.stderr
    assert lines(out)[:len(kept)] == kept
    check_file(out, reference)


def test_cli_a_counter_named_twice_is_one_column(capsys):
    args = ["sweep", "--grid", "workload=anchor", "--seeds", "2", "--duration", "0.01",
            "--no-progress", "-e"]
    assert main(args + ["probe:vmx_cancel_injection,vmx_cancel_injection,vmexits,vmexits"]) == 0
    assert main(args + ["canceled_vmenters,vmexits"]) == 0
    twice, once = capsys.readouterr().out.split("# ")[1:]
    assert twice == once
    assert once.splitlines()[1].split() == ["workload", "n", "canceled_vmenters", "+-95%",
                                            "vmexits", "+-95%"]


@pytest.mark.parametrize("args, message", [
    (["missing.toml"], "missing.toml: cannot read scenario file: No such file or directory"),
    (["BAD"], "BAD: not a scenario file: byte 0 is not UTF-8 (scenario files are TOML)"),
    (["--seed", "-1"], "--seed: ")])
def test_cli_a_bad_base_is_not_blamed_on_the_default_counters(tmp_path, capsys, args,
                                                              message):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    args = [str(bad) if a == "BAD" else a for a in args]
    message = message.replace("BAD", str(bad))
    assert main(["sweep", *args, "--grid", "order=linux-6.6"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"kvmsim sweep: error: {message}"), err
    assert main(["sweep", *args, "--grid", "order=linux-6.6", "-e", "nonsense"]) == 2
    assert "-e: unknown counter nonsense" in capsys.readouterr().err


def test_cli_a_grid_path_that_is_a_flag_is_named_by_its_path(capsys):
    assert main(["sweep", "--grid", "duration=1,2", "--grid", "seeds=2",
                 "--duration", "-1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kvmsim sweep: error: --duration: -1.0 s is out of range")
    assert [e.split(";")[0] for e in err[1:]] == [
        "kvmsim sweep: error: duration: unknown field 'duration' in the config",
        "kvmsim sweep: error: seeds: unknown field 'seeds' in the config"]
    assert err[1].endswith("; the run length is not swept: use --duration")
    assert err[2].endswith("; use --seeds for the number of seeds per point")


def test_cli_interrupted_before_any_point_is_complete_says_so(tmp_path, capsys, monkeypatch):
    from kvmsim._sweep.table import SweepTable
    out = tmp_path / "s.jsonl"
    keep = {"runs": None}

    def interrupted(plan, done, store, client, progress):
        raise _sweep.SweepInterrupted(SweepTable.build(
            plan, {r.key: {"canceled_vmenters": 5} for r in plan.runs if keep["runs"](r)}))
    monkeypatch.setattr(_sweep, "execute", interrupted)
    args = ["sweep", "--grid", "workload=anchor", "--grid", "order=linux-6.6,linux-6.7",
            "--seeds", "6", "--duration", "0.01", "--no-progress"]
    keep["runs"] = lambda r: r.seed_index < 2            # 2 seeds of each point: 4 runs
    assert main(args + ["--out", str(out)]) == 130
    got = capsys.readouterr()
    assert got.out == (f"# no point has all its seeds yet: 4 of 12 runs in {out}; run the "
                       "same command to resume\n")
    assert f"interrupted after 4 of 12 runs" in got.err
    assert main(args) == 130
    assert capsys.readouterr().out == ("# no point has all its seeds yet: 4 of 12 runs; none "
                                       "kept: give --out FILE to keep runs and resume\n")
    keep["runs"] = lambda r: r.point == 0 or r.seed_index == 0   # one point complete
    assert main(args) == 130
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("# 1 point x 6 seeds") and "(1 incomplete not shown)" in shown[0]
    assert len(shown) == 3
