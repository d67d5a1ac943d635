"""The command line, driven as a user drives it: a real subprocess per command."""

import fcntl
import json
import os
import pathlib
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"

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


def test_stat_order_list_must_cover_the_workload(cli):
    # anchor raises NMI through PMI, and posts no-op requests: this order checks neither NMI
    # nor any no-op request.
    p = cli("stat", "--order", "PMU,PMI,SMI,EVENT", "--workload", "anchor",
            "--duration", "1", "-I", "1000")
    assert p.returncode == 2
    assert "never checks NMI" in p.stderr and "none of the no-op requests" in p.stderr
    ok = cli("stat", "--order", "PMU,PMI,SMI,NMI,TLB_FLUSH,EVENT", "--workload",
             "spec2017-vtune", "--duration", "20")
    assert ok.returncode == 0, ok.stderr
    assert all(int(line.split()[1]) < 200 for line in ok.stdout.splitlines()[1:])


def test_compare_runs_orders_side_by_side(cli):
    p = cli("compare", "--workload", "spec2017-vtune", "--duration", "20", "-I", "10000")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].split()[2:] == ["linux-6.6", "linux-6.7"]
    rows = [line.split() for line in lines[2:4]]
    assert all(13_000 <= int(r[1]) <= 17_000 and 10 <= int(r[2]) <= 60 for r in rows)
    total, diff, ratio = (line.split() for line in lines[4:7])
    assert total[0] == "total" and int(total[1]) == int(rows[0][1]) + int(rows[1][1])
    assert diff[0] == "difference" and int(diff[2]) == int(total[2]) - int(total[1])
    assert ratio[0] == "ratio" and float(ratio[2]) == pytest.approx(
        int(total[2]) / int(total[1]), rel=1e-3)


def test_orders_lists_presets_and_bits(cli):
    p = cli("orders", "linux-6.6")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    names = [line.split()[1] for line in lines if not line.startswith("#")]
    assert names.index("NMI") < names.index("PMI") and names[-1] == "EVENT"
    assert "NMI                            bit 17" in p.stdout
    # then the profile's behaviour switches
    assert [ln for ln in lines if ln.startswith("# ")][1:] == [
        "# lvtpc_automask = all", "# pmi_delivery = request", "# pmu_reprogram = request",
        "# process_nmi_event = pending",
        "# vnmi = True", "# idle_hlt = False", "# ipiv = True", "# fastpath_reenter = timer",
        "# avic_default = off"]


def test_orders_profiles_table(cli):
    p = cli("orders", "--profiles")
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines()]
    assert rows[0][:4] == ["profile", "release", "SMI/NMI/PMU/PMI", "lvtpc_automask"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["linux-6.1.y"][1:] == ["v6.1.192", "SMI", "NMI", "PMU", "PMI", "intel",
                                          "irq_work", "sync", "always", "False", "False",
                                          "True", "timer", "off"]
    assert len(by_name) == len(kvmsim_presets())
    cites = cli("orders", "--citations")
    assert "73554b29bd70" in cites.stdout and cites.returncode == 0


@pytest.mark.parametrize("args,needles", [
    (["stat", "--order", "linux-6.4"], ["--order", "'linux-6.4'", "linux-6.6"]),
    (["stat", "--workload", "nope"], ["--workload", "'nope'", "spec2017-vtune"]),
    (["stat", "--duration", "0"], ["--duration", "allowed: seconds in 1e-09..1e+09"]),
    (["stat", "-I", "-5"], ["-I", "-5 ms; allowed: milliseconds in 1e-06..1e+12"]),
    (["stat", "-I", "0.0000001"], ["-I", "1e-07 ms", "whole nanoseconds"]),
    (["stat", "-e", "cycles"], ["-e", "'cycles'", "probe:vmx_cancel_injection"]),
    (["stat", "--order", "NMI,NMI,EVENT"], ["duplicate request NMI"]),
    # argparse's "invalid float value" said nothing of what is allowed: _args.number does.
    (["stat", "--duration", "abc"], ["--duration", "'abc'; allowed: a number of seconds"]),
    (["compare", "linux-6.6"], ["runs", "at least two"]),
    (["stat", "missing.toml"], ["missing.toml", "cannot read scenario file"]),
    (["stat", "--vcpus", "0"], ["--vcpus", "greater than or equal to 1"]),
    (["stat", "-j", "-x,"], ["-j", "cannot be combined with -x"]),
    (["trace", "--events", "kvm_foo", "--max-events", "0"], ["--events", "'kvm_foo'",
                                                              "--max-events"]),
    (["trace", "--vcpu", "9"], ["--vcpu", "0..7"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_bad_input_exits_2_without_traceback(cli, args, needles):
    p = cli(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stdout == ""
    for n in needles:
        assert n in p.stderr


def test_all_problems_reported_at_once(cli):
    p = cli("stat", "--order", "linux-6.4", "--workload", "nope", "--duration", "-1",
            "-e", "foo")
    assert p.returncode == 2
    assert {line.split(": ")[2] for line in p.stderr.splitlines()} == {
        "-e", "--duration", "--order", "--workload"}


def test_version_and_help(cli):
    assert cli("--version").stdout.startswith("kvmsim ")
    h = cli("stat", "--help")
    assert h.returncode == 0 and "examples:" in h.stdout and "-I MSEC" in h.stdout


def test_stat_csv_and_json_lines(cli):
    csv = cli("stat", "--duration", "20", "-x", ";", "-e", "probe:vmx_cancel_injection")
    assert csv.returncode == 0, csv.stderr
    first = csv.stdout.splitlines()[0].split(";")
    assert first[0] == "10.000000000" and first[2:] == [
        "", "probe:vmx_cancel_injection", "10000000000", "100.00", "", ""]
    js = cli("stat", "--duration", "20", "-j", "-A", "--vcpus", "2")
    lines = [json.loads(line) for line in js.stdout.splitlines()]
    assert [(d["interval"], d["cpu"]) for d in lines] == [(10.0, "0"), (10.0, "1"),
                                                         (20.0, "0"), (20.0, "1")]
    assert set(lines[0]) == {"interval", "cpu", "counter-value", "unit", "event",
                             "event-runtime", "pcnt-running"}


def test_stat_per_vcpu_sums_to_total(cli):
    args = ("stat", "--duration", "10", "--workload", "anchor", "--vcpus", "3",
            "--order", "linux-6.6")
    total = int(cli(*args).stdout.splitlines()[1].split()[1])
    per = [line.split() for line in cli(*args, "-A").stdout.splitlines()[1:]]
    assert [p[1] for p in per] == ["CPU0", "CPU1", "CPU2"]
    assert sum(int(p[2]) for p in per) == total


def test_stat_output_file(cli, tmp_path):
    p = cli("stat", "--duration", "10", "-o", str(tmp_path / "out.txt"))
    assert p.returncode == 0 and p.stdout == ""
    text = (tmp_path / "out.txt").read_text().splitlines()
    assert text[0].startswith("# started on ") and text[1] == ""
    assert text[2] == "#           time             counts unit events"
    assert PERF_LINE.match(text[3])


def test_scenario_file_and_flags_override(cli, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('order = "linux-6.6"\nduration = 20.0\ninterval = 10.0\n'
                 'workload = "spec2017-vtune"\n')
    before = cli("stat", str(f))
    after = cli("stat", str(f), "--order", "linux-6.7")
    assert before.returncode == after.returncode == 0
    assert [int(line.split()[1]) for line in before.stdout.splitlines()[1:]] == [14855, 14871]
    assert all(int(line.split()[1]) < 60 for line in after.stdout.splitlines()[1:])


def test_bad_scenario_file_reports_every_problem_with_lines(cli, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('order = "linux-6.4"\nseed = -1\n[workload]\nvcpus = 2\n'
                 '[[workload.sources]]\ntype = "poisson"\nkind = "nmi"\nrate = -3\n')
    p = cli("stat", str(f))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{f}:1: order: unknown order 'linux-6.4'" in p.stderr
    assert f"{f}:2: seed:" in p.stderr
    assert f"{f}:8: workload.sources.0.rate:" in p.stderr


def test_compare_scenario_files_and_plot(cli, tmp_path):
    png = tmp_path / "cancels.png"
    p = cli("compare", str(EXAMPLES / "spec2017-vtune.toml"), "linux-6.7", "linux-6.19",
            "--duration", "20", "--plot", str(png))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1].split()[2:] == ["spec2017-vtune", "linux-6.7", "linux-6.19"]
    assert p.stderr.splitlines()[-1] == f"kvmsim compare: wrote {png}"
    from PIL import Image
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (800, 450)
        colors = {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 20)}
    # One line per run, in matplotlib's first three series colours (C0, C1, C2), no fourth.
    series = [(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28)]
    assert [c in colors for c in series] == [True, True, True, False]


def test_compare_plot_title_names_workload_vcpus_and_seed(tmp_path, monkeypatch, capsys):
    import matplotlib.figure
    from kvmsim._cli import main
    titles = []
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kw):
        titles.append(fig.axes[0].get_title())
        return save(fig, *args, **kw)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--workload", "spec2017-vtune", "--seed", "7", "--duration", "2",
                 "-I", "500", "--plot", "p.png", "--no-progress"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == "kvmsim compare: wrote p.png"
    assert titles == ["probe:vmx_cancel_injection per 0.5 s: spec2017-vtune, 8 vCPUs, seed 7"]
    assert (tmp_path / "p.png").stat().st_size > 0


def test_trace_follows_one_vmenter(cli):
    p = cli("trace", str(EXAMPLES / "pmi-trace.toml"), "--max-events", "9")
    assert p.returncode == 0, p.stderr
    events = [line.split(": ")[1].rstrip(":").strip() for line in p.stdout.splitlines()]
    assert events == ["kvm_entry", "kvm_exit", "kvm_check_request", "kvm_check_request",
                      "vmx_cancel_injection", "kvm_check_request", "kvm_check_request",
                      "kvm_inj_nmi", "kvm_entry"]
    assert "reason EXCEPTION_NMI requests 0xc0000" in p.stdout   # PMI | PMU pending
    line = p.stdout.splitlines()[1]
    assert re.match(r"^ +CPU 0/KVM-1000  \[000\] +0\.001000000: kvm_exit: +reason", line)
    filtered = cli("trace", str(EXAMPLES / "pmi-trace.toml"), "--order", "linux-6.7",
                   "--events", "vmx_cancel_injection,kvm_inj_nmi")
    assert [line.split(": ")[1].strip(":") for line in filtered.stdout.splitlines()] == \
        ["kvm_inj_nmi"] * 3


def test_progress_bar_on_a_terminal(tmp_path):
    # stderr is a pseudo-terminal (100 columns); the run lasts ~6 s, past the 2 s delay.
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    err = bytearray()

    def drain():                     # read while the child runs: a closed pty drops its data
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            err.extend(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "stat", "--duration", "60",
                              "--workload", "spec2017-vtune-large", "-I", "20000"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, _ = child.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    assert child.returncode == 0
    assert b"sim s" in err and b"%|" in err            # tqdm drew the bar on the terminal
    assert len(out.splitlines()) == 4                  # the counts are unaffected


def test_no_progress_bar_off_a_terminal(cli):
    p = cli("stat", "--duration", "1500", "-I", "500000")
    assert p.returncode == 0 and p.stderr == ""


def test_ctrl_c_prints_completed_intervals(tmp_path):
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "stat", "--duration", "1e5",
                              "-I", "1000"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert "Traceback" not in err and "interrupted at" in err
    lines = out.splitlines()
    assert lines[0] == "#           time             counts unit events"
    assert len(lines) > 10
    assert [PERF_LINE.match(line)["time"].strip() for line in lines[1:4]] == [
        "1.000000000", "2.000000000", "3.000000000"]


SHAPES = pathlib.Path(__file__).parent / "data" / "x86c"


def test_lint_order_names_the_hazard_and_fails(cli):
    p = cli("lint-order", "linux-6.6")
    assert p.returncode == 1, p.stderr
    assert "back edge PMI -> NMI: check #21 raises #19 (bits 19 -> 17)  FIRES" in p.stdout
    # The chain and its public source, as lint prints them after "via:".
    assert ("via:  kvm_pmu_deliver_pmi -> kvm_apic_local_deliver(LVTPC) -> __apic_accept_irq"
            "(APIC_DM_NMI) -> kvm_inject_nmi  [pmu.c kvm_pmu_deliver_pmi @ kvm-x86 04f2bbf1c779; "
            "lapic.c __apic_accept_irq @ kvm-x86 f729851189d5]") in p.stdout
    assert "cost: one cancelled VM-Enter per PMI delivered as an NMI" in p.stdout
    assert "back edge PMI -> SMI: check #21 raises #18 (bits 19 -> 20)  conditional" in p.stdout
    assert p.stdout.splitlines()[-1] == "1 back edge fires in this context: exit status 1"


@pytest.mark.parametrize("target", ["linux-6.7", "linux-6.19", str(SHAPES / "v6.19-shape.c")])
def test_lint_order_clean_on_later_kernels(cli, target):
    p = cli("lint-order", target)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not re.search(r"back edge PM[UI] ", p.stdout)


def test_lint_order_with_lvtpc_smi(cli):
    p = cli("lint-order", "linux-6.6", "--lvtpc", "smi")
    assert p.returncode == 1
    assert "PMI -> SMI: check #21 raises #18 (bits 19 -> 20)  FIRES" in p.stdout
    assert "PMI -> NMI: check #21 raises #19 (bits 19 -> 17)  conditional" in p.stdout


def test_lint_order_measures_the_cost(cli):
    p = cli("lint-order", "linux-6.6", "--workload", "spec2017-vtune", "--duration", "2")
    m = re.search(r"measured on spec2017-vtune \(2 s\): ([\d,.]+) cancelled", p.stdout)
    assert p.returncode == 1 and m
    assert 1_300 <= float(m[1].replace(",", "")) <= 1_700


@pytest.mark.parametrize("target", [str(SHAPES / "v6.6-shape.c"),
                                    str(EXAMPLES / "spec2017-vtune.toml")])
def test_lint_order_reads_kernel_sources_and_scenarios(cli, target):
    p = cli("lint-order", target)
    assert p.returncode == 1 and "back edge PMI -> NMI: check #21 raises #19" in p.stdout


def test_compare_and_lint_order_read_a_scenario_whatever_its_name(cli, tmp_path):
    # A file that is neither a directory nor *.c is a scenario, as for `stat FILE`; compare
    # once took any name not ending in .toml for kernel source.
    (tmp_path / "scn.txt").write_text((EXAMPLES / "spec2017-vtune.toml").read_text())
    p = cli("compare", "scn.txt", "linux-6.7", "--duration", "1", "-I", "1000")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].split()[2:] == ["scn.txt", "linux-6.7"]
    before, after = map(int, lines[2].split()[1:])
    assert 1_300 <= before <= 1_700 and after <= 60            # the file's linux-6.6 order
    lint = cli("lint-order", "scn.txt")
    assert lint.returncode == 1, lint.stderr
    assert "back edge PMI -> NMI: check #21 raises #19" in lint.stdout


def test_optimize_rediscovers_the_patch(cli):
    p = cli("optimize", "--workload", "spec2017-vtune", "--from", "linux-6.6",
            "--duration", "2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1] == "move NMI: check #19 -> #21, after PMI"
    assert ",STEAL_UPDATE,SMI,PMU,PMI,NMI,IOAPIC_EOI_EXIT," in lines[2]
    saved = float(lines[-1].split()[1].replace(",", ""))
    assert 1_300 <= saved <= 1_700


def test_optimize_clean_order(cli):
    p = cli("optimize", "--from", "linux-6.7", "--duration", "1")
    assert p.returncode == 0 and "no avoidable back edge" in p.stdout


def test_what_if_table(cli):
    p = cli("what-if", "--workload", "spec2017-vtune", "--order", "linux-6.6",
            "--duration", "2")
    assert p.returncode == 0, p.stderr
    rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()[2:]}
    assert rows["NMI"][2] == "PMI" and 1_300 <= float(rows["NMI"][1].replace(",", "")) <= 1_700
    # host NMIs of guest overflows that land after the PMU check (the calibrated pmi_skid)
    assert float(rows["PMU"][0]) > 0
    # The total has its own line, last, after the table (it once sat under a column): every
    # cancel of the run per second, as stat counts them, and at most the table's sum (a cancel
    # with two requests pending is listed under both).
    m = re.fullmatch(r"cancelled VM-Enters/s: ([\d,]+\.\d) in all \(a cancel with two "
                     r"requests pending is listed under both above\)", p.stdout.splitlines()[-1])
    assert m, p.stdout
    total = float(m[1].replace(",", ""))
    stat = cli("stat", "--workload", "spec2017-vtune", "--order", "linux-6.6", "--duration", "2",
               "-I", "2000")
    assert total == round(int(stat.stdout.splitlines()[1].split()[1]) / 2, 1)
    listed = [float(x.replace(",", "")) for r in list(rows.values())[:-1] for x in r[:2]]
    assert 1_300 <= total <= sum(listed)


def test_order_from_source_feeds_simulate(cli):
    p = cli("order", "--from-source", str(SHAPES / "v6.6-shape.c"))
    assert p.returncode == 0, p.stderr
    order = p.stdout.splitlines()[-1]
    assert order.split(",") == list(kvmsim_presets()["linux-6.6"])
    a = cli("stat", "--order", str(SHAPES / "v6.6-shape.c"), "--duration", "10")
    b = cli("stat", "--order", "linux-6.6", "--duration", "10")
    assert a.returncode == 0 and a.stdout == b.stdout


def kvmsim_presets():
    from kvmsim.profiles import PROFILES
    return {name: p.order for name, p in PROFILES.items()}


def test_ctrl_c_stops_every_compared_run_together(tmp_path):
    # Ctrl-C once stopped the first run only, ran the second to its end, and printed a
    # partial interval plus totals and a ratio of two runs of different lengths, exit 0.
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "compare", "linux-6.6",
                              "linux-6.7", "--duration", "3000", "-I", "1000"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "complete intervals only, no totals" in err
    rows = out.splitlines()[2:]
    assert rows and all(re.match(r"^ +\d+\.000000000 +\d+ +\d+$", r) for r in rows), out
    assert [float(r.split()[0]) for r in rows] == [float(i) for i in range(1, len(rows) + 1)]
    assert "total" not in out and "ratio" not in out


def test_ctrl_c_is_prompt_when_a_burst_follows_a_quiet_start(tmp_path):
    # Slices once grew while the workload was quiet, then one slice swallowed a burst of
    # 1 ns requests and Ctrl-C took 26.7 s to act.
    scenario = """order = "linux-6.6"\nduration = 1000.0\ninterval = 1.0
[workload]\nvcpus = 1\n[[workload.sources]]\ntype = "periodic"\nkind = "request:TLB_FLUSH"
period = 1e-9\nstart = 60.0\n"""
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "stat", "-"], cwd=tmp_path,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    child.stdin.write(scenario)
    child.stdin.close()
    child.stdin = None
    time.sleep(4.0)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert time.monotonic() - sent < 5.0
    assert len(out.splitlines()) > 60                  # the quiet minute printed as it went


def test_plot_to_an_unknown_image_type_is_refused_before_running(cli):
    p = cli("compare", "--duration", "1", "--plot", "out.jpgx")
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert "unknown image type 'jpgx'" in p.stderr and "png" in p.stderr


def test_scenario_that_is_not_utf8(cli, tmp_path):
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe x")
    p = cli("stat", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == (f"kvmsim stat: error: {bad}: not a scenario file: byte 0 is "
                                "not UTF-8 (scenario files are TOML)")


@pytest.mark.parametrize("bad", [["--duration", "-1"], ["--order", "bogus"]])
def test_output_file_is_untouched_when_the_input_is_bad(cli, tmp_path, bad):
    keep = tmp_path / "keep.csv"
    keep.write_text("precious\n")
    p = cli("stat", "-o", str(keep), *bad)
    assert p.returncode == 2 and keep.read_text() == "precious\n"


def test_scenario_on_standard_input(tmp_path):
    text = (EXAMPLES / "spec2017-vtune.toml").read_text()
    p = subprocess.run([sys.executable, "-m", "kvmsim", "stat", "-", "--duration", "20"],
                       input=text, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert [int(line.split()[1]) for line in p.stdout.splitlines()[1:]] == [14855, 14871]


def test_interval_in_fractions_of_a_millisecond(cli):
    p = cli("stat", "--workload", "anchor", "--duration", "0.001", "-I", "0.5",
            "-e", "requests.PMU,kvmsim:requests.NMI")
    assert p.returncode == 0, p.stderr
    rows = [PERF_LINE.match(line) for line in p.stdout.splitlines()[1:]]
    assert [r["time"].strip() for r in rows] == ["0.000500000"] * 2 + ["0.001000000"] * 2
    assert {r["event"] for r in rows} == {"kvmsim:requests.PMU", "kvmsim:requests.NMI"}


def test_unknown_flag_names_the_command_and_shows_its_usage(cli):
    p = cli("stat", "--frobnicate")
    assert p.returncode == 2
    assert p.stderr.startswith("usage: kvmsim stat ")
    assert "kvmsim stat: error: unrecognized arguments: --frobnicate" in p.stderr


def test_trace_runs_either_engine_with_the_same_lines(monkeypatch, capsys):
    # trace once ran the Python engine whatever --engine said: the lines were the same, so
    # watch which engine class each run builds and traces.
    from kvmsim import _engine
    from kvmsim._cli import main
    built = []
    create = _engine.create

    def spy(*args, **kw):
        made = create(*args, **kw)
        built.append(type(made).__module__)
        return made
    monkeypatch.setattr(_engine, "create", spy)
    lines = {}
    for name, module in (("cython", "kvmsim._core"), ("python", "kvmsim._reference")):
        built.clear()
        assert main(["trace", str(EXAMPLES / "pmi-trace.toml"), "--engine", name]) == 0
        assert built == [module]
        lines[name] = capsys.readouterr().out
    assert lines["cython"] == lines["python"] and len(lines["cython"].splitlines()) > 20
    # without --engine: the default, cython (pmi-trace.toml names none)
    built.clear()
    assert main(["trace", str(EXAMPLES / "pmi-trace.toml")]) == 0
    assert capsys.readouterr().out == lines["cython"] and built == ["kvmsim._core"]


def test_trace_says_when_it_stops_at_max_events(cli):
    p = cli("trace", "--workload", "spec2017-vtune", "--max-events", "5")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 5
    assert "stopped after 5 events (--max-events)" in p.stderr


def test_trace_and_stat_take_the_same_event_names(cli):
    for names in ("kvm:kvm_exit,probe:vmx_cancel_injection", "vmexits,canceled_vmenters",
                  "kvm_exit,vmx_cancel_injection"):
        p = cli("trace", str(EXAMPLES / "pmi-trace.toml"), "--events", names)
        assert p.returncode == 0, p.stderr
        assert {line.split(": ")[1].strip(":") for line in p.stdout.splitlines()} == {
            "kvm_exit", "vmx_cancel_injection"}
        s = cli("stat", str(EXAMPLES / "pmi-trace.toml"), "-e", names)
        assert s.returncode == 0, s.stderr


def test_repeat_prints_mean_and_spread_as_perf(cli):
    p = cli("stat", "--workload", "anchor", "--duration", "0.5", "-r", "4", "-e",
            "kvm:kvm_exit,vmx_cancel_injection")
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    assert lines[0].strip() == "Performance counter stats for 'kvmsim' (4 runs, seeds 0..3):"
    m = re.match(r"^ +(\d+) +kvm:kvm_exit +\( \+- +(\d+\.\d\d)% \)$", lines[1])
    assert m, lines[1]
    runs = [int(cli("stat", "--workload", "anchor", "--duration", "0.5", "-I", "500",
                    "--seed", str(s), "-e", "kvm_exit").stdout.splitlines()[1].split()[1])
            for s in range(4)]
    assert int(m[1]) == round(sum(runs) / 4)


def test_compare_csv_and_json(cli):
    csv = cli("compare", "--duration", "20", "-x", ";")
    assert csv.returncode == 0, csv.stderr
    rows = [line.split(";") for line in csv.stdout.splitlines()]
    assert [r[:2] for r in rows] == [["10.000000000", "linux-6.6"], ["10.000000000", "linux-6.7"],
                                     ["20.000000000", "linux-6.6"], ["20.000000000", "linux-6.7"],
                                     ["total", "linux-6.6"], ["total", "linux-6.7"]]
    assert int(rows[4][2]) == int(rows[0][2]) + int(rows[2][2])
    js = [json.loads(line) for line in cli("compare", "--duration", "20", "-j").stdout.splitlines()]
    assert js[0] == {"interval": 10.0, "run": "linux-6.6", "counter-value": f"{rows[0][2]}.000000",
                     "unit": "", "event": "probe:vmx_cancel_injection"}


def test_missing_compiled_engine_says_what_to_run(tmp_path):
    # From a source folder without the built engine, README's Python once failed with
    # "cannot import name '_core'", which said neither why nor what to run.
    import shutil
    src = pathlib.Path(__file__).parent.parent / "kvmsim"
    shutil.copytree(src, tmp_path / "kvmsim", ignore=shutil.ignore_patterns("*.so", "*.c"))
    # (An editable install's import hook would find the built engine anyway: set it aside.)
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if not "
            "getattr(f, '__module__', '').startswith('__editable__')]; import kvmsim; "
            "kvmsim.simulate(kvmsim.Config())")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1
    assert "kvmsim's compiled engine (kvmsim._core) is not built" in p.stderr
    assert "pip install -e ." in p.stderr


def test_progress_bar_counts_plainly_and_leaves_the_screen_on_ctrl_c(tmp_path):
    # The bar once showed "1.48e+03/3000" and stayed on screen after Ctrl-C.
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    err = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            err.extend(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "stat", "--duration", "3000",
                              "--workload", "spec2017-vtune-large", "-I", "100000"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    time.sleep(5.0)
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    assert child.returncode == 130
    assert re.search(rb"\| [\d,]+/3,000 sim s", err), err[-300:]
    tail = err.split(b" sim s [")[-1]
    assert re.search(rb"\r *\r?kvmsim stat: interrupted", tail), tail


def test_lint_order_takes_the_run_flags_of_stat(cli):
    # One definition of the run flags and one mapping of errors to flags (_cli/_args.py).
    bad = ("--duration", "-1", "--seed", "-1", "--engine", "rust", "--behaviour", "x=1")
    lint, stat = cli("lint-order", "linux-6.6", *bad), cli("stat", *bad)
    assert lint.returncode == stat.returncode == 2
    assert lint.stderr.replace("kvmsim lint-order:", "kvmsim stat:") == stat.stderr
    assert stat.stderr.count("\n") == 4


def test_lint_order_takes_the_host_from_vendor_profile_and_flags(cli):
    def head(*args):
        p = cli("lint-order", *args)
        assert p.returncode in (0, 1), p.stderr
        return p.stdout.splitlines()[0].split("; ")[1]
    assert head("linux-6.6", "--vendor", "amd") == "LVTPC delivery mode NMI, amd, APICv off"
    # AVIC is on by default for Zen 4 since v6.18 (ca2967de5a5b)
    assert head("linux-7.2", "--vendor", "amd") == "LVTPC delivery mode NMI, amd, APICv on"
    assert head("linux-7.2", "--host", "apicv=off") == "LVTPC delivery mode NMI, intel, APICv off"
    bad = cli("lint-order", "linux-7.2", "--host", "apicv=maybe", "--vendor", "arm")
    assert bad.returncode == 2 and "--host" in bad.stderr and "--vendor" in bad.stderr


QUIET_16 = 'duration = 1e9\ninterval = 1e9\n[workload]\nvcpus = 16\n'


def test_summed_nanoseconds_print_exactly(cli, tmp_path):
    # 16 quiet vCPUs over 1e9 s spend 1.6e19 ns in the guest, past int64: stat and compare
    # summed each interval over the vCPUs in int64 and printed -2446744073709558512.
    import kvmsim
    from fractions import Fraction
    (tmp_path / "q16.toml").write_text(QUIET_16)
    scn = kvmsim.Scenario.load(tmp_path / "q16.toml")
    want = [kvmsim.simulate(scn.config.model_copy(update={"seed": s}), duration=1e9)
            .totals["ns.guest"] for s in (0, 1)]
    assert want[0] > 2**63
    stat = cli("stat", "q16.toml", "-e", "ns.guest,kvm_exit")
    assert stat.returncode == 0, stat.stderr
    assert [line.split()[1] for line in stat.stdout.splitlines()[1:]] == [str(want[0]), "0"]
    csv = cli("stat", "q16.toml", "-e", "ns.guest", "-x,").stdout.splitlines()
    assert csv[0].split(",")[1] == str(want[0])
    js = json.loads(cli("stat", "q16.toml", "-e", "ns.guest", "-j").stdout)
    assert js["counter-value"] == f"{want[0]}.000000"
    per = [line.split() for line in cli("stat", "q16.toml", "-e", "ns.guest", "-A").stdout
           .splitlines()[1:]]
    assert len(per) == 16 and sum(int(p[2]) for p in per) == want[0]
    rep = cli("stat", "q16.toml", "-e", "ns.guest", "-r", "2").stdout
    assert re.search(rf"^ *{round(Fraction(sum(want), 2))} ns +kvmsim:ns.guest ", rep, re.M), rep

    table = cli("compare", "q16.toml", "q16.toml", "-e", "ns.guest").stdout.splitlines()
    assert table[2].split()[1:] == table[3].split()[1:] == [str(want[0])] * 2
    rows = [r.split(",") for r in cli("compare", "q16.toml", "q16.toml", "-e", "ns.guest",
                                      "-x,").stdout.splitlines()]
    assert [r[2] for r in rows] == [str(want[0])] * 4
    for line in cli("compare", "q16.toml", "q16.toml", "-e", "ns.guest", "-j").stdout \
            .splitlines():
        assert json.loads(line)["counter-value"] == f"{want[0]}.000000"


def test_summed_counts_stay_exact_in_the_api():
    # Result.intervals and to_pandas sum over the vCPUs: exact past int64 too.
    import kvmsim
    r = kvmsim.Result.from_json(kvmsim.simulate(kvmsim.Config(workload=kvmsim.Workload(
        vcpus=2)), duration=0.001).to_json())
    col = r.column("ns.guest")
    counts = r.counts.copy()
    counts[:, 0, col] = 2**62 + 1
    big = kvmsim.Result(r.config, r.interval_ns, r.duration_ns, r.columns, counts,
                        r.vcpu_totals, r.nmis_outstanding)
    assert int(big.intervals["ns.guest"][0]) == 2**63 + 2
    assert int(big.to_pandas()["ns.guest"].iloc[0]) == 2**63 + 2
    assert big.intervals["vmexits"].tolist() == r.intervals["vmexits"].tolist()


@pytest.mark.parametrize("args, flag", [
    (["compare", "missing.toml", "linux-6.6"], "runs: missing.toml"),
    (["lint-order", "missing.toml"], "ORDER"),
    (["lint-order", "no/such/x86.c"], "ORDER"),
    (["stat", "--order", "no/such/tree"], "--order")])
def test_a_file_that_does_not_exist_is_not_called_an_unknown_order(cli, args, flag):
    p = cli(*args, "--duration", "0.01")
    name = next(a for a in args[1:] if a.endswith((".toml", ".c")) or "/" in a)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (f"kvmsim {args[0]}: error: {flag}: cannot read {name!r}: no such file "
                        "or directory; allowed: a scenario file, kernel tree or x86.c that "
                        "exists, or an order (`kvmsim orders`)\n")


def test_ctrl_c_in_the_first_of_repeated_runs_prints_no_block(tmp_path):
    child = subprocess.Popen([sys.executable, "-m", "kvmsim", "stat", "--duration", "1e5",
                              "-r", "5"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert out == "" and "nan" not in out and "Traceback" not in err
    assert err == ("kvmsim stat: interrupted during run 1 of 5; no run finished, nothing to "
                   "print\n")


@pytest.mark.parametrize("ms, ok", [("0.000001", True), ("0.000003", True), ("0.3", True),
                                    ("0.0000015", False), ("0.0000001", False),
                                    ("nan", False), ("inf", False), ("2e12", False)])
def test_interval_of_whole_nanoseconds_is_taken(cli, ms, ok):
    p = cli("stat", "--duration", "0.000000004", "-I", ms, "--engine", "python")
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr.startswith("kvmsim stat: error: -I: ")
        assert "allowed: milliseconds in 1e-06..1e+12, whole nanoseconds" in p.stderr
        assert p.stderr.count("\n") == 1


def test_a_bad_switch_value_or_a_key_given_twice_is_named(cli):
    p = cli("stat", "--behaviour", "vnmi=maybe,lvtpc_automask=foo", "--host", "apicv=maybe")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "kvmsim stat: error: --host: apicv = 'maybe'; allowed: on, off",
        "kvmsim stat: error: --behaviour: vnmi = 'maybe'; allowed: on, off",
        "kvmsim stat: error: --behaviour: lvtpc_automask = 'foo'; allowed: 'none', 'all', "
        "'intel'"]
    p = cli("stat", "--host", "apicv=on,apicv=off", "--behaviour", "vnmi=on,vnmi=on")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "kvmsim stat: error: --host: apicv given twice; give each key once",
        "kvmsim stat: error: --behaviour: vnmi given twice; give each key once"]


def test_orders_profiles_and_citations_together_and_for_one_profile(cli):
    from kvmsim import profiles
    both, table, cites = (cli("orders", *f) for f in (("--profiles", "--citations"),
                                                        ("--profiles",), ("--citations",)))
    assert both.returncode == table.returncode == cites.returncode == 0
    assert both.stdout == table.stdout + "\n" + cites.stdout
    one = cli("orders", "linux-6.6", "--citations")
    plain = cli("orders", "linux-6.6")
    assert one.returncode == 0 and one.stdout.startswith(plain.stdout + "\n")
    rows = [line.split()[:2] for line in one.stdout[len(plain.stdout) + 1:].splitlines()]
    behaviour = profiles.PROFILES["linux-6.6"].behaviour
    assert rows[0] == ["switch", "value"] and len(rows) > 2
    assert all(str(behaviour[s]) == v for s, v in rows[1:])
    assert ["lvtpc_automask", "intel"] not in rows            # linux-6.9's, not 6.6's
    bad = cli("orders", "PMU,EVENT", "--citations")
    assert (bad.returncode, bad.stdout) == (2, "") and bad.stderr.count("\n") == 1


def test_run_time_of_a_short_last_interval_is_its_length(cli):
    # perf's run time is how long the counter ran in the interval: a run of 0.05 s with the
    # default 10 s interval ran 0.05 s, and with -I 20 its last interval 10 ms.
    csv = cli("stat", "--duration", "0.05", "-x", ",")
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines()[0].split(",")[4] == "50000000"
    js = cli("stat", "--duration", "0.05", "-I", "20", "-j", "-A", "--vcpus", "2")
    got = [(d["interval"], d["event-runtime"]) for d in map(json.loads, js.stdout.splitlines())]
    assert got == [(0.02, 20000000)] * 2 + [(0.04, 20000000)] * 2 + [(0.05, 10000000)] * 2


@pytest.mark.parametrize("args, message", [
    (["stat", "--threads", "abc"], "argument --threads: 'abc'; allowed: an int in 1..1024"),
    (["stat", "--vcpus", "abc"], "argument --vcpus: 'abc'; allowed: an int in 1..4096"),
    (["stat", "--seed", "1e3"], "argument --seed: '1e3'; allowed: an int, at least 0"),
    (["sweep", "--seeds", "abc"], "argument --seeds: 'abc'; allowed: an int, at least 1"),
    (["sweep", "--seed", "1e3"], "argument --seed: '1e3'; allowed: an int, at least 0"),
    (["stat", "-r", "x"], "argument -r/--repeat: 'x'; allowed: an int in 1..10000"),
    (["stat", "--duration", "x"],
     "argument --duration: 'x'; allowed: a number of seconds in 1e-09..1e+09"),
    (["stat", "-x", ""], "argument -x/--field-separator: '': an empty separator runs the "
                         "fields together; allowed: one or more characters, e.g. -x, or "
                         "-x '\\t'"),
    (["compare", "-x", ""], "argument -x/--field-separator: '': an empty separator runs the "
                            "fields together; allowed: one or more characters, e.g. -x, or "
                            "-x '\\t'")])
def test_a_flag_of_the_wrong_type_says_what_is_allowed(cli, args, message):
    p = cli(*args)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr.splitlines()[-1] == f"kvmsim {args[0]}: error: {message}"
    assert "Traceback" not in p.stderr


def test_flags_override_a_scenario_file_before_it_is_checked(cli, tmp_path):
    scn = tmp_path / "e8.toml"
    scn.write_text('[workload]\nvcpus = 2\n[[workload.sources]]\ntype = "poisson"\n'
                   'kind = "nmi"\nrate = 10.0\nvcpu = 5\n')
    p = cli("stat", str(scn), "--duration", "0.01")
    assert p.returncode == 2 and p.stderr.strip() == (
        f"kvmsim stat: error: {scn}:7: workload.sources.0.vcpu: vCPU 5 does not exist; "
        "allowed: 0..1")
    assert cli("stat", str(scn), "--duration", "0.01", "--vcpus", "8").returncode == 0
    p = cli("stat", str(scn), "--seed", "-1")                 # both problems, each its own
    assert p.returncode == 2 and p.stderr.splitlines() == [
        f"kvmsim stat: error: {scn}:7: workload.sources.0.vcpu: vCPU 5 does not exist; "
        "allowed: 0..1",
        "kvmsim stat: error: --seed: Input should be greater than or equal to 0 (got -1)"]
