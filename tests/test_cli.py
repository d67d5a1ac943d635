"""The command line, driven as a user drives it: a real subprocess per command."""

import re
import subprocess
import sys

import pytest

# perf's stat-display.c: "%6lu.%09lu", ' ', count in 18 columns, ' ', unit in 4, ' ', name.
PERF_LINE = re.compile(r"^(?P<time>[ \d]{6}\.\d{9}) (?P<count>[ \d]{18}) (?P<unit>.{4}) "
                       r"(?P<event>\S+)\s*$")


def kvmsim(*args, cwd):
    # Run outside the source tree so the installed package (with its C engine) is used.
    return subprocess.run([sys.executable, "-m", "kvmsim", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture
def cli(tmp_path):
    return lambda *args: kvmsim(*args, cwd=tmp_path)


def test_stat_prints_perf_interval_lines(cli):
    p = cli("stat", "--order", "linux-6.6", "--workload", "spec2017-vtune",
            "--duration", "20", "-I", "10000")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "#           time             counts unit events"
    assert len(lines) == 3
    for i, line in enumerate(lines[1:], start=1):
        m = PERF_LINE.match(line)
        assert m, line
        assert m["time"] == f"{10 * i:6d}.000000000"
        assert line.index("probe:vmx_cancel_injection") == 41       # column 42
        assert 13_000 <= int(m["count"]) <= 17_000
        assert m["unit"] == "    "


def test_stat_several_events_with_units(cli):
    p = cli("stat", "--workload", "anchor", "--duration", "0.02", "-I", "10",
            "-e", "kvm:kvm_exit,kvmsim:nmis_injected,ns.guest", "--engine", "python")
    assert p.returncode == 0, p.stderr
    rows = [PERF_LINE.match(line) for line in p.stdout.splitlines()[1:]]
    assert [r["event"] for r in rows] == ["kvm:kvm_exit", "kvmsim:nmis_injected",
                                          "kvmsim:ns.guest"] * 2
    assert rows[2]["unit"] == "ns  "
    assert all(int(r["count"]) > 0 for r in rows)


def test_stat_accepts_an_order_list(cli):
    order = ",".join(["PMU", "PMI", "SMI", "NMI", "EVENT"])
    wl_cli = cli("stat", "--order", order, "--workload", "spec2017-vtune", "--duration", "1",
                 "-I", "1000")
    # spec2017-vtune posts every no-op request, so this short order cannot run it.
    assert wl_cli.returncode == 2 and "never checks" in wl_cli.stderr


def test_compare_runs_orders_side_by_side(cli):
    p = cli("compare", "--workload", "spec2017-vtune", "--duration", "20", "-I", "10000")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "linux-6.6" in lines[1] and "linux-6.7" in lines[1]
    rows = [line.split() for line in lines[2:4]]
    assert all(13_000 <= int(r[1]) <= 17_000 and 10 <= int(r[2]) <= 60 for r in rows)
    assert lines[4].split()[0] == "total"
    assert lines[5].startswith("# linux-6.7 vs linux-6.6: -")


def test_orders_lists_presets_and_bits(cli):
    p = cli("orders", "linux-6.6")
    assert p.returncode == 0
    names = [line.split()[1] for line in p.stdout.splitlines()]
    assert names.index("NMI") < names.index("PMI") and names[-1] == "EVENT"
    assert "NMI                            bit 17" in p.stdout


@pytest.mark.parametrize("args,needles", [
    (["stat", "--order", "linux-6.5"], ["--order", "'linux-6.5'", "linux-6.6"]),
    (["stat", "--workload", "nope"], ["--workload", "'nope'", "spec2017-vtune"]),
    (["stat", "--duration", "0"], ["--duration", "must be a number > 0"]),
    (["stat", "-I", "-5"], ["-I", "must be > 0"]),
    (["stat", "-e", "cycles"], ["-e", "'cycles'", "probe:vmx_cancel_injection"]),
    (["stat", "--order", "NMI,NMI,EVENT"], ["duplicate request NMI"]),
    (["stat", "--duration", "abc"], ["--duration", "invalid float value"]),
    (["compare", "--orders", "linux-6.6"], ["--orders", "at least two"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_bad_input_exits_2_without_traceback(cli, args, needles):
    p = cli(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stdout == ""
    for n in needles:
        assert n in p.stderr


def test_all_problems_reported_at_once(cli):
    p = cli("stat", "--order", "linux-6.5", "--workload", "nope", "--duration", "-1",
            "-e", "foo")
    assert p.returncode == 2
    assert {line.split(": ")[2] for line in p.stderr.splitlines()} == {
        "-e", "--duration", "--order", "--workload"}


def test_version_and_help(cli):
    assert cli("--version").stdout.startswith("kvmsim ")
    h = cli("stat", "--help")
    assert h.returncode == 0 and "examples:" in h.stdout and "-I MSEC" in h.stdout
