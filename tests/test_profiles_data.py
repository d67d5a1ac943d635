"""kvmsim.profiles: every profile's order and switches, against kvmsim, the presets, the
shape files of tests/data/x86c/ and, when they are here, the real kernel trees.

Real trees: set KVMSIM_KERNEL_TREE=tree[:tree...] (as for test_source_order.py) or unpack
them as /usr/src/linux*; each tree is matched to a profile by its Makefile version. The
trees are not in the repository, so CI skips those tests.
"""

import glob
import os
import re
from pathlib import Path

import pytest

import kvmsim
from kvmsim import catalogue, profiles
from kvmsim._config import resolve_order
from kvmsim._source_order import _version as makefile_version
from kvmsim._source_order import order_from_source
from kvmsim.profiles import PROFILES, SWITCHES

DATA = Path(__file__).parent / "data" / "x86c"
MAINLINE = [n for n in PROFILES if not n.endswith(".y")]
STABLE = [n for n in PROFILES if n.endswith(".y")]

# The Makefile version of the tree each profile's order and switches were read in
# (Profile.tree); profiles missing here were not read in a tree kvmsim's tests can name.
TREE_VERSION = {
    "linux-5.10": "5.10.0", "linux-5.10.y": "5.10.262", "linux-5.15": "5.15.0",
    "linux-6.1": "6.1.0-rc7", "linux-6.1.y": "6.1.192", "linux-6.5": "6.5.0",
    "linux-6.6": "6.6.9", "linux-6.7": "6.7.3", "linux-6.8": "6.8.0", "linux-6.9": "6.9.0",
    "linux-6.12": "6.12.0", "linux-7.2": "7.2.13", "linux-7.3-rc7": "7.3.0-rc7",
}
NO_TREE = {
    "linux-5.15.y": "no 5.15.y tree was read (Profile.tree says UNVERIFIED)",
    "linux-6.6.y": "no 6.6.y tree after the backport was read (UNVERIFIED)",
    "linux-6.8.y": "no 6.8.y tree after the backport was read (UNVERIFIED)",
    "linux-6.19": "CachyOS/linux 4703912f5e30 is not a tree kvmsim's tests can fetch; "
                  "v6.19-shape.c stands for it",
}
# Names a tree spells differently from the profile's order (the profile's note says why).
SOURCE_NAMES = {"linux-5.10": {"HV_TLB_FLUSH": "TLB_FLUSH_GUEST"}}
# Shape files (test data written in the shape of a tree, not kernel source) per profile.
SHAPES = {
    "linux-5.10.y": "v5.10-shape.c", "linux-5.15": "v5.15-shape.c",
    "linux-6.1": "v6.1-shape.c", "linux-6.6": "v6.6-shape.c",
    "linux-6.19": "v6.19-shape.c", "linux-7.3-rc7": "v7.3-shape.c",
}


def test_every_profile_is_accounted_for():
    assert set(TREE_VERSION) | set(NO_TREE) == set(PROFILES)
    assert not set(TREE_VERSION) & set(NO_TREE)
    assert profiles.NEWEST in MAINLINE and "-rc" not in profiles.NEWEST
    newest = max(MAINLINE, key=lambda n: profiles.version(PROFILES[n].release))
    assert newest == "linux-7.3-rc7"    # newer than NEWEST, but not a release


@pytest.mark.parametrize("name", PROFILES)
def test_order_resolves(name):
    p = PROFILES[name]
    assert p.name == name
    assert resolve_order(list(p.order)) == p.order      # known names, one bit each
    assert p.order[-1] == "EVENT" and p.order.count("EVENT") == 1
    bits = [catalogue.bit_of(n) for n in p.order]
    assert len(set(bits)) == len(bits)
    assert {"SMI", "NMI", "PMU", "PMI"} <= set(p.order)
    # every profile makes a Config with the default workload
    assert kvmsim.Config(order=list(p.order)).check_order == p.order


def test_nmi_pmi_order_follows_fad505b2cb83():
    for p in PROFILES.values():
        middle = [n for n in p.order if n in ("SMI", "NMI", "PMU", "PMI")]
        new = profiles.version(p.release) >= (6, 7)
        assert middle == (["PMU", "PMI", "SMI", "NMI"] if new else ["SMI", "NMI", "PMU", "PMI"])


@pytest.mark.parametrize("name", PROFILES)
def test_behaviour_values(name):
    b = PROFILES[name].behaviour
    assert list(b) == [s.name for s in SWITCHES]
    for s in SWITCHES:
        assert b[s.name] in s.values, (s.name, b[s.name])


def test_switch_histories():
    assert [s.name for s in SWITCHES] == [
        "lvtpc_automask", "pmi_delivery", "pmu_reprogram", "process_nmi_event", "vnmi",
        "idle_hlt", "ipiv", "fastpath_reenter", "avic_default"]
    for s in SWITCHES:
        assert tuple(v for v, _ in s.history) == s.values
        assert s.history[0][1] is None          # the older behaviour: no commit
        assert s.doc
        for value, c in s.history[1:]:
            assert isinstance(c, profiles.Citation), (s.name, value)
            assert re.fullmatch(r"v\d+\.\d+(\.\.v\d+\.\d+)?", c.release), c.release
            if c.verified:
                assert re.fullmatch(r"[0-9a-f]{12}", c.commit), c
                assert c.subject and ".." not in c.release
                assert re.search(r"arch/x86/kvm/\S+\.c \w+", c.where), c.where
            else:
                assert len(c.where) > len("UNVERIFIED: ") + 20, c.where
    unverified = {s.name for s in SWITCHES for _, c in s.history[1:] if c and not c.verified}
    assert unverified == {"pmu_reprogram", "vnmi", "idle_hlt", "ipiv",
                          "fastpath_reenter", "avic_default"}


def test_mainline_values():
    # spot checks, written out from the trees of Profile.tree rather than the histories
    expect = {
        "linux-5.10": ("none", "irq_work", "sync", "always", False, False, False, "timer", "off"),
        "linux-6.1": ("none", "irq_work", "sync", "always", False, False, True, "timer", "off"),
        "linux-6.5": ("none", "irq_work", "request", "pending", True, False, True, "timer", "off"),
        "linux-6.6": ("all", "request", "request", "pending", True, False, True, "timer", "off"),
        "linux-6.8": ("all", "request", "request", "pending", True, False, True, "timer", "off"),
        "linux-6.9": ("intel", "request", "request", "pending", True, False, True, "timer", "off"),
        "linux-6.12": ("intel", "request", "request", "pending", True, False, True,
                       "timer-icr-hlt", "off"),
        "linux-7.2": ("intel", "request", "request", "pending", True, True, True,
                      "timer-icr-hlt", "auto"),
    }
    for name, values in expect.items():
        assert tuple(PROFILES[name].behaviour.values()) == values, name
    with pytest.raises(ValueError, match="fastpath_reenter in v6.11: inside v6.10..v6.12"):
        profiles._at("v6.11")


@pytest.mark.parametrize("name", STABLE)
def test_stable_profiles_differ_from_their_release(name):
    p = PROFILES[name]
    base = PROFILES[name.removesuffix(".y")]
    assert profiles.version(p.release) == profiles.version(base.release)
    assert p.behaviour != base.behaviour or p.order != base.order
    assert p.order == base.order           # so far only switches differ


def test_tables():
    rows = profiles.table()
    assert rows[0] == ["profile", "release", "SMI/NMI/PMU/PMI", *(s.name for s in SWITCHES)]
    assert [r[0] for r in rows[1:]] == list(PROFILES)
    assert rows[1 + list(PROFILES).index("linux-6.1.y")] == [
        "linux-6.1.y", "v6.1.192", "SMI NMI PMU PMI", "intel", "irq_work", "sync", "always",
        "False", "False", "True", "timer", "off"]
    cites = profiles.citations()
    assert cites[0] == ["switch", "value", "commit", "subject", "release", "where"]
    assert len(cites) == 1 + sum(len(s.history) - 1 for s in SWITCHES)
    assert ["lvtpc_automask", "all", "a16eb25b09c0", "KVM: x86: Mask LVTPC when handling a PMI",
            "v6.6"] == cites[1][:5]


def test_old_names_in_the_catalogue():
    assert catalogue.BY_BIT[1].name == "VM_DEAD"         # today's name wins the bit
    assert catalogue.bit_of("MMU_RELOAD") == 1 and catalogue.canonical("MMU_RELOAD") == "MMU_RELOAD"
    assert catalogue.BY_NAME["VM_BUGGED"].leaves and catalogue.bit_of("VM_BUGGED") == 4
    assert catalogue.bit_of("VMSA_PAGE_RELOAD") == 41
    from kvmsim.graph import NOOP_NAMES
    assert "MMU_RELOAD" not in NOOP_NAMES and "VM_BUGGED" not in NOOP_NAMES
    # no release checks two names of one bit
    with pytest.raises(ValueError, match="duplicate request MMU_RELOAD, VM_DEAD"):
        resolve_order(["VM_DEAD", "MMU_RELOAD", "EVENT"])


def test_handler_cost_of_a_shared_bit():
    from kvmsim import _plan
    costs = kvmsim.Costs(handlers={"VM_DEAD": 700, "MMU_RELOAD": 300})
    for name, ns in (("linux-6.6", 700), ("linux-5.10", 300)):
        cfg = kvmsim.Config(order=list(PROFILES[name].order), costs=costs)
        assert _plan.build(cfg, 10**9).params["handler_ns"][1] == ns, name


def _spelled(name: str, names: tuple[str, ...]) -> tuple[str, ...]:
    rename = SOURCE_NAMES.get(name, {})
    return tuple(rename.get(n, n) for n in names)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_gives_the_order(name):
    so = order_from_source(DATA / SHAPES[name])
    assert not so.unknown() and not so.warnings
    assert _spelled(name, so.names()) == PROFILES[name].order


# ------------------------------------------------------------------------ real trees


def _trees() -> dict[str, Path]:
    env = os.environ.get("KVMSIM_KERNEL_TREE")
    paths = env.split(os.pathsep) if env else [
        str(Path(f).parents[3]) for f in glob.glob("/usr/src/linux*/arch/x86/kvm/x86.c")]
    return {makefile_version(Path(p)): Path(p) for p in paths if p}


TREES = _trees()


def _tree(name: str) -> Path:
    if name in NO_TREE:
        pytest.skip(NO_TREE[name])
    if TREE_VERSION[name] not in TREES:
        pytest.skip(f"no {TREE_VERSION[name]} tree (set KVMSIM_KERNEL_TREE=tree[:tree...])")
    return TREES[TREE_VERSION[name]]


@pytest.mark.parametrize("name", PROFILES)
def test_tree_gives_the_order(name):
    so = order_from_source(_tree(name))
    assert not so.unknown()
    assert _spelled(name, so.names()) == PROFILES[name].order


def _body(path: Path, function: str) -> str | None:
    """The text of a function definition, from its name to the first `}` in column 0."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.search(rf"^\w[^\n;]*\b{function}\([^;]*?\n{{\n.*?\n}}\n", text, re.S | re.M)
    return m.group(0) if m else None


def _read_switches(tree: Path) -> dict:
    """The switch values a tree's source shows; None where the file is not in the tree."""
    kvm = tree / "arch/x86/kvm"
    out: dict = {}
    deliver = _body(kvm / "lapic.c", "kvm_apic_local_deliver")
    out["lvtpc_automask"] = ("none" if "reg | APIC_LVT_MASKED" not in deliver else
                             "intel" if "guest_cpuid_is_intel_compatible" in deliver else "all")
    pmu = (kvm / "pmu.c").read_text()
    has_events = _body(kvm / "x86.c", "kvm_vcpu_has_events")
    irq_work = "irq_work_queue(" in pmu
    assert irq_work != ("KVM_REQ_PMI" in has_events)    # one commit changed both
    out["pmi_delivery"] = "irq_work" if irq_work else "request"
    intel_pmu = (kvm / "vmx/pmu_intel.c").read_text()
    counters = _body(kvm / "vmx/pmu_intel.c", "reprogram_counters") or \
        _body(kvm / "pmu.h", "reprogram_counters") or ""
    out["pmu_reprogram"] = ("request" if "kvm_make_request(KVM_REQ_PMU" in counters else
                            "sync" if "global_ctrl_changed" in intel_pmu or counters else None)
    nmi = _body(kvm / "x86.c", "process_nmi")
    out["process_nmi_event"] = ("pending" if re.search(
        r"if \(vcpu->arch\.nmi_pending\)\s*kvm_make_request\(KVM_REQ_EVENT", nmi) else "always")
    svm = kvm / "svm/svm.c"
    svm_text = svm.read_text() if svm.is_file() else None
    avic_text = (kvm / "svm/avic.c").read_text() if svm_text else None
    out["vnmi"] = None if svm_text is None else "module_param(vnmi," in svm_text
    out["idle_hlt"] = None if svm_text is None else "INTERCEPT_IDLE_HLT)" in svm_text
    out["fastpath_reenter"] = ("timer-icr-hlt" if _body(kvm / "x86.c", "handle_fastpath_hlt")
                               else "timer")
    vmx = kvm / "vmx/vmx.c"
    out["ipiv"] = "module_param(enable_ipiv," in vmx.read_text() if vmx.is_file() else None
    if svm_text is not None:
        params = svm_text + avic_text
        out["avic_default"] = ("auto" if "avic = AVIC_AUTO_MODE;" in params else
                               "off" if re.search(r"^(static )?(bool|int) avic;", params, re.M)
                               else "not found")
    return out


@pytest.mark.parametrize("name", PROFILES)
def test_tree_gives_the_switches(name):
    found = _read_switches(_tree(name))
    want = PROFILES[name].behaviour
    checked = {k: v for k, v in found.items() if v is not None}
    assert checked == {k: want[k] for k in checked}
    assert len(checked) >= 4


# ------------------------------------------------------------------------ docs/profiles.md

DOC = (Path(__file__).parent.parent / "docs" / "profiles.md").read_text()


def _doc_table(heading: str) -> list[list[str]]:
    section = DOC.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows if not r.startswith("|---")]


def test_doc_table_is_table():
    assert _doc_table("The table") == profiles.table()


DOC_LINES = {r[0]: (r[1], [int(x) for x in r[2].split()])
             for r in _doc_table("Appendix: where each check is")[1:]}


def test_doc_lines_fit_the_orders():
    assert set(DOC_LINES) == set(TREE_VERSION)
    for name, (version, lines) in DOC_LINES.items():
        assert version == TREE_VERSION[name]
        assert len(lines) == len(PROFILES[name].order) and lines == sorted(lines), name


@pytest.mark.parametrize("name", sorted(TREE_VERSION))
def test_doc_lines_are_the_tree_lines(name):
    so = order_from_source(_tree(name))
    first: dict[str, int] = {}
    for c in so.checks:
        first.setdefault(c.name, c.line)
    assert [first[n] for n in so.names()] == DOC_LINES[name][1]
