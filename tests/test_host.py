"""kvmsim.host: every case on this machine's KVM and in kvmsim, with the exact counts of both.

The cases need a usable /dev/kvm (root, KVM API 12); elsewhere they are skipped with the
reason. The expected values are those docs/validation.md reports for this project's machines
(Linux 6.18, vendor module kvm_pvm); on a VMX or SVM host the vendor rows would take the
model's values instead.
"""

import errno
import io
import os
import re
import shutil

import pytest

import kvmsim
import kvmsim.spec
from kvmsim import _cli as cli
from kvmsim import host as H
from kvmsim.host import CASES, _guest, usable, vendor_module
from kvmsim.host import _kvm
from kvmsim.host import calibrate as CAL
from kvmsim.host import cases as C
from kvmsim.host._vmm import HostError

WHY = usable()
needs_kvm = pytest.mark.skipif(bool(WHY), reason=f"no usable KVM: {WHY}")
PVM = vendor_module() == "kvm_pvm"
BY_NAME = {c.name: c for c in CASES}

# case -> {observation: (host, kvmsim)}; on PVM the host differs from kvmsim only where the
# case's PVM rule says so.
EXPECTED = {
    **{f"nmi-burst-{n}": {
        "NMIs dropped by each stop": ([max(n - 2, 0)] * 3,) * 2,
        "NMIs taken between stops": ([min(n, 2), 0],) * 2,
        "NMIs outstanding at each stop": ([0, 0, 0],) * 2,
        "NMI-window exits": (0, int(n >= 2))} for n in range(1, 5)},
    "nmi-masked": {"NMIs dropped by each stop": ([0, 2, 2, 2],) * 2,
                   "NMIs taken between stops": ([1, 1, 0],) * 2,
                   "NMI-window exits": (0, 1)},
    "nmi-window": {"NMIs outstanding at each stop": ([0, 1, 0, 0],) * 2,
                   "NMIs taken between stops": ([1, 1, 0],) * 2,
                   "NMI-window exits": (0, 1)},
    "nmi-window-next-exit": {"NMIs outstanding at each stop": ([0, 1, 1, 0], [0, 1, 0, 0]),
                             "NMIs taken between stops": ([1, 0, 1], [1, 1, 0]),
                             "NMI-window exits": (0, 1)},
    "nmi-irq": {"NMIs taken between stops": ([1, 0, 0],) * 2,
                "IRQs pending (IRR) at each stop": ([0, 1, 0, 0],) * 2,
                "IRQs taken between stops": ([0, 1, 0],) * 2,
                "IRQ-window exits": (1, 1)},
    "irq-coalesce": {"IRQs taken between stops": ([1, 0],) * 2,
                     "IRQs lost (coalesced in IRR)": (2, 2)},
    "irq-cross-thread": {"IRQs taken between stops": ([8, 0],) * 2,
                         "IRQs lost (coalesced in IRR)": (0, 0)},
    "kick-signal": {"kick found the vCPU in guest mode": (True, True),
                    "exits forced by the kick": (1, 1)},
    "signal-cancel": {"entries cancelled with an NMI written": (1, 1),
                      "NMIs outstanding after the cancel": (1, 1),
                      "NMIs taken by the cancelled entry": (0, 0),
                      "NMIs taken between stops": ([1, 0],) * 2},
    "immediate-exit": {"immediate_exit KVM_RUN: returned": ("intr", None),
                       "immediate_exit KVM_RUN: exits": (0, None),
                       "immediate_exit KVM_RUN: nmi_injections": (0, None),
                       "immediate_exit KVM_RUN: nmis_outstanding": (1, None),
                       "NMIs taken between stops": ([1, 0],) * 2},
}


def test_every_case_has_expectations():
    assert set(EXPECTED) == {c.name for c in CASES} - {"smi"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_side(name):
    """kvmsim's side alone (no KVM needed): both engines give the expected counts."""
    script = BY_NAME[name].script
    runs = [C.run_model(script, engine) for engine in ("cython", "python")]
    assert runs[0] == runs[1]
    m = runs[0]
    per_name = {"NMIs dropped by each stop": m.nmis_dropped,
                "NMIs taken between stops": m.nmis_per_interval,
                "NMIs outstanding at each stop": m.nmi_outstanding,
                "IRQs pending (IRR) at each stop": m.irq_pending,
                "IRQs taken between stops": m.irqs_per_interval,
                "NMI-window exits": m.totals["nmi_window_exits"],
                "IRQ-window exits": m.totals["irq_window_exits"],
                "IRQs lost (coalesced in IRR)": m.totals["irqs_coalesced"]}
    for obs, (_, model) in EXPECTED[name].items():
        if obs in per_name:
            assert per_name[obs] == model, obs


@needs_kvm
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_case(name):
    out = BY_NAME[name].run()
    got = {o.name: o for o in out.observations}
    for obs, (host, model) in EXPECTED[name].items():
        o = got[obs]
        assert o.model == model, obs
        assert o.host == (host if PVM else model if model is not None else host), obs
    assert out.status in ("agree", "pvm")
    assert all(o.status != "DISAGREE" for o in out.observations)


@needs_kvm
def test_smi_skipped_with_reason():
    """No host runs the SMI case yet: without SMM it says so, with SMM the guest lacks a
    handler (docs/validation.md)."""
    from kvmsim.host import _kvm as K
    k = K.Kvm()
    try:
        why = BY_NAME["smi"].unavailable(k)
        smm = k.check_extension(K.CAP_X86_SMM)
    finally:
        k.close()
    assert ("KVM_CAP_X86_SMM is 0" in why) == (not smm) and why


def test_pvm_rule_only_where_documented():
    """A vendor difference is accepted only for an observation that names its rule."""
    o = C.Observation("x", 0, 1, vendor="enable_nmi_window", pvm=0)
    assert o.status == "pvm"
    assert C.Observation("x", 0, 1).status == "DISAGREE"
    assert C.Observation("x", 2, 1, vendor="enable_nmi_window", pvm=0).status == "DISAGREE"
    assert C.Observation("x", 1, None, expected=1).status == "host-only"
    assert C.Observation("x", 0, None, expected=1).status == "DISAGREE"


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("ld") is None,
                    reason="GNU as/ld (binutils) not installed")
def test_guest_image_matches_source():
    assert _guest.assemble() == _guest.image()


@needs_kvm
def test_host_check_cli_exit_0():
    out = io.StringIO()
    args = cli.parser().parse_args(["host-check", "--case", "nmi-burst-3", "--case", "nmi-irq"])
    assert args.func(args, out) == 0
    text = out.getvalue()
    assert "nmi-burst-3" in text and "NMIs dropped by each stop" in text
    assert "2 cases:" in text and "0 disagree" in text


def test_host_check_unknown_case_exit_2(capsys):
    assert cli.main(["host-check", "--case", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--case: unknown case 'nope'" in err and "nmi-burst-1" in err


def test_host_check_engine_is_the_run_flag(capsys):
    # --engine is defined and checked where every command's is (_cli/_args.py).
    assert cli.main(["host-check", "--engine", "rust"]) == 2
    assert capsys.readouterr().err == ("kvmsim host-check: error: --engine: Input should be "
                                       "'cython' or 'python' (got 'rust')\n")


def test_unusable_kvm_exit_2(monkeypatch):
    from kvmsim._cli import host
    monkeypatch.setattr(host, "usable", lambda: "/dev/kvm is missing: test")
    out = io.StringIO()
    args = cli.parser().parse_args(["host-check"])
    assert args.func(args, out) == 2
    assert "no usable KVM: /dev/kvm is missing: test" in out.getvalue()


# --- host-check exits 1 when a case disagrees (no KVM needed: the host run is faked) ------

class _FakeKvm:
    """host-check opens /dev/kvm for each case's unavailable(); none is needed here."""

    def close(self):
        pass


def _host_run_agreeing(script):
    """nmi-burst-1 as the host shows it (docs/validation.md): one NMI taken after stop 1."""
    return C.HostRun(nmi_outstanding=[0, 0, 0], irq_pending=[0, 0, 0], nmis_dropped=[0, 0, 0],
                     log=[("nmi", 1)], stats={"nmi_injections": 1}, nmi_issued=1)


def _run_host_check(monkeypatch, capsys, argv):
    from kvmsim._cli import host
    monkeypatch.setattr(host, "usable", lambda: "")
    monkeypatch.setattr(_kvm, "Kvm", _FakeKvm)
    rc = cli.main(argv)
    return rc, capsys.readouterr().out


def test_host_check_agreeing_fake_host_exit_0(monkeypatch, capsys):
    """The fake host of the disagreement tests agrees when left alone."""
    monkeypatch.setattr(C, "run_host", _host_run_agreeing)
    rc, text = _run_host_check(monkeypatch, capsys, ["host-check", "--case", "nmi-burst-1"])
    assert rc == 0, text
    assert "# 1 cases: 1 agree, 0 agree except" in text and "0 disagree" in text


@pytest.mark.parametrize("side", ["host", "model"])
def test_host_check_disagreement_exit_1(monkeypatch, capsys, side):
    """One observation differs (on the host's side or the model's): the row says NO, the
    summary counts the case as disagreeing, and the exit status is 1."""
    if side == "host":
        def run_host(script):
            run = _host_run_agreeing(script)
            run.nmis_dropped = [0, 1, 1]
            return run
        monkeypatch.setattr(C, "run_host", run_host)
        host, model = "0 1 1", "0 0 0"
    else:
        real_run_model = C.run_model

        def run_model(script, engine="cython"):
            run = real_run_model(script, engine)
            run.nmis_dropped = [0, 2, 2]
            return run
        monkeypatch.setattr(C, "run_host", _host_run_agreeing)
        monkeypatch.setattr(C, "run_model", run_model)
        host, model = "0 0 0", "0 2 2"
    rc, text = _run_host_check(monkeypatch, capsys, ["host-check", "--case", "nmi-burst-1"])
    assert rc == 1, text
    line = next(ln for ln in text.splitlines() if ln.startswith("nmi-burst-1 ")
                and "NMIs dropped by each stop" in ln)
    assert re.search(rf"\s{host}\s+{model}\s+NO$", line), line
    others = [ln for ln in text.splitlines() if ln.startswith("nmi-burst-1 ") and ln != line]
    assert others and all(ln.endswith(" yes") for ln in others), text
    assert "# 1 cases: 0 agree, 0 agree except" in text and ", 1 disagree, 0 failed" in text


def test_host_check_failed_on_host_exit_1(monkeypatch, capsys):
    def run_host(script):
        raise HostError("after stop 1 expected stop 2, got a test failure")
    monkeypatch.setattr(C, "run_host", run_host)
    rc, text = _run_host_check(monkeypatch, capsys, ["host-check", "--case", "nmi-burst-1"])
    assert rc == 1, text
    assert "(failed on the host)" in text and "got a test failure" in text
    assert "0 disagree, 1 failed on the host" in text


@needs_kvm
def test_host_check_disagreement_exit_1_on_this_host(monkeypatch, capsys):
    """The same with the real host run: only the model's side is changed."""
    real_run_model = C.run_model

    def run_model(script, engine="cython"):
        run = real_run_model(script, engine)
        run.nmis_per_interval = [n + 1 for n in run.nmis_per_interval]
        return run
    monkeypatch.setattr(C, "run_model", run_model)
    assert cli.main(["host-check", "--case", "nmi-burst-1"]) == 1
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("nmi-burst-1 ")
                and "NMIs taken between stops" in ln)
    assert line.endswith(" NO") and ", 1 disagree," in text


# --- usable(): why /dev/kvm cannot run the cases -------------------------------------------

def _fake_sysfs(monkeypatch, tmp_path, modules=(), flags=""):
    """A /sys/module with these modules and a /proc/cpuinfo with these flags."""
    sysmod = tmp_path / "sys-module"
    sysmod.mkdir()
    for name in modules:
        (sysmod / name).mkdir()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu tsc msr {flags}\n")
    monkeypatch.setattr(H, "SYS_MODULE", str(sysmod))
    monkeypatch.setattr(H, "CPUINFO", str(cpuinfo))


def test_usable_missing_no_module_no_flag(monkeypatch, tmp_path):
    """No vmx/svm flag: kvm_intel and kvm_amd cannot load, but PVM needs neither, so the
    reason names every vendor module and does not blame nested virtualisation alone."""
    _fake_sysfs(monkeypatch, tmp_path)
    dev = str(tmp_path / "kvm")
    why = usable(dev)
    assert why.startswith(f"{dev} is missing: no KVM module (kvm_intel, kvm_amd or kvm_pvm) "
                          "is loaded; the CPU shows no vmx/svm flag"), why
    assert "kvm_pvm needs neither" in why and "modprobe kvm_pvm" in why
    assert vendor_module() == ""


@pytest.mark.parametrize("flag, module", [("vmx", "kvm_intel"), ("svm", "kvm_amd")])
def test_usable_missing_no_module_with_flag(monkeypatch, tmp_path, flag, module):
    _fake_sysfs(monkeypatch, tmp_path, flags=flag)
    dev = str(tmp_path / "kvm")
    assert usable(dev) == (f"{dev} is missing: no KVM module (kvm_intel, kvm_amd or kvm_pvm) "
                           f"is loaded (the CPU shows {flag}: modprobe {module})")


@pytest.mark.parametrize("module", ["kvm_pvm", "kvm_intel", "kvm_amd"])
def test_usable_missing_with_module_loaded(monkeypatch, tmp_path, module):
    """A vendor module is loaded (kvm_pvm on a CPU without vmx/svm): the node is what is
    missing, whatever the CPU flags say."""
    _fake_sysfs(monkeypatch, tmp_path, modules=["kvm", module])
    dev = str(tmp_path / "kvm")
    why = usable(dev)
    assert why == (f"{dev} is missing although {module} is loaded (udev did not create the "
                   f"node: mknod {dev} c 10 232)")
    assert "nested" not in why
    assert vendor_module() == module


PERMISSION = "permission denied (run as root or join the kvm group)"
NO_VIRT = "no virtualisation support (nested virtualisation off, or disabled in firmware)"


@pytest.mark.parametrize("err, reason", [
    (errno.EACCES, PERMISSION), (errno.EPERM, PERMISSION),
    (errno.ENXIO, f"{os.strerror(errno.ENXIO)}: {NO_VIRT}"),
    (errno.ENODEV, f"{os.strerror(errno.ENODEV)}: {NO_VIRT}")])
@pytest.mark.parametrize("command", ["host-check", "calibrate"])
def test_usable_open_errors_exit_2(monkeypatch, tmp_path, capsys, err, reason, command):
    """open(/dev/kvm) fails: usable() says why, and both commands print it and exit 2."""
    dev = tmp_path / "kvm"
    dev.touch()
    real_open = os.open

    def fake_open(path, *args, **kwargs):
        if os.fspath(path) == str(dev):
            raise OSError(err, os.strerror(err), str(dev))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)
    assert usable(str(dev)) == f"{dev}: {reason}"
    monkeypatch.setattr(H, "DEVICE", str(dev))
    assert usable() == f"{dev}: {reason}"
    assert cli.main([command]) == 2
    assert capsys.readouterr().out == f"kvmsim {command}: no usable KVM: {dev}: {reason}\n"


def test_usable_missing_exit_2(monkeypatch, tmp_path, capsys):
    _fake_sysfs(monkeypatch, tmp_path)
    monkeypatch.setattr(H, "DEVICE", str(tmp_path / "kvm"))
    assert cli.main(["host-check"]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"kvmsim host-check: no usable KVM: {tmp_path / 'kvm'} is missing: "
                          "no KVM module (kvm_intel, kvm_amd or kvm_pvm) is loaded")


# --- calibrate: the [costs] table, and every cost it does not measure -----------------------

def test_calibrate_bad_input_exit_2(capsys):
    assert cli.main(["calibrate", "--runs", "0", "--batches", "0"]) == 2
    err = capsys.readouterr().err
    assert "--runs: 0" in err and "--batches: 0" in err


@needs_kvm
def test_calibrate_prints_costs_table():
    out = io.StringIO()
    args = cli.parser().parse_args(["calibrate", "--runs", "20", "--batches", "2"])
    assert args.func(args, out) == 0
    text = out.getvalue()
    table = kvmsim.Scenario.from_toml("duration = 1.0\n" + text).config.costs
    assert table.vmexit == table.vmenter > 0
    assert ("vmexit = " in text) != ("not resolved (entry and exit" in text)
    assert "# not measured on this host:" in text and "state_load" in text


def _fake_calibration():
    # entry and exit: 16000 - 6000 - 8 * 500 = 6000 ns; event: 35000 - 16000 - 14 * 500
    return CAL.Calibration(t_idle=6000, t_insn=500, t_stop=16000, t_nmi=35000, runs=1,
                           batches=1)


def test_calibrate_lists_every_cost_it_does_not_measure():
    """Every field of kvmsim.Costs is either in the [costs] table or in the "not measured"
    list (task_work and ipi included), each with its own reason; none is listed twice."""
    fields = set(kvmsim.Costs.model_fields)
    assert {c.name for c in kvmsim.spec.COSTS} <= fields
    assert set(CAL.MEASURED) <= fields
    assert set(CAL.not_measured()) == fields - set(CAL.MEASURED)
    assert {"task_work", "ipi"} <= set(CAL.not_measured())
    assert set(CAL.WHY_NOT_MEASURED) <= fields, "a reason for a cost Costs no longer has"
    assert CAL.UNKNOWN not in CAL.not_measured().values(), "a cost without its own reason"
    text = CAL.costs_toml(_fake_calibration(), "a test host")
    listed = re.findall(r"^#   (\w+): ", text, re.M)
    assert sorted(listed) == sorted(fields - set(CAL.MEASURED))
    table = re.findall(r"^(\w+) = ", text, re.M)
    assert sorted(table) == sorted(CAL.MEASURED)
    costs = kvmsim.Scenario.from_toml("duration = 1.0\n" + text).config.costs
    assert (costs.vmexit, costs.vmenter, costs.event) == (3000, 3000, 12000)


def test_calibrate_lists_a_cost_the_model_gains(monkeypatch):
    """The list comes from kvmsim.Costs, not from a hand-written one: a new cost is listed
    (with the generic reason) before calibrate knows it."""
    class Costs:
        model_fields = {**kvmsim.Costs.model_fields, "new_phase": None}

    class FakeKvmsim:
        pass
    FakeKvmsim.Costs = Costs
    monkeypatch.setattr(CAL, "kvmsim", FakeKvmsim)
    assert CAL.not_measured()["new_phase"] == CAL.UNKNOWN
    assert f"#   new_phase: {CAL.UNKNOWN}" in CAL.costs_toml(_fake_calibration(), "a test host")
