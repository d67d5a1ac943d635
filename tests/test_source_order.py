"""kvmsim.analysis.order_from_source: the request-check order of vcpu_enter_guest() read
from x86.c.

The files in tests/data/x86c/ are small C files written for these tests (no kernel source):
each imitates the shape of one real arch/x86/kvm/x86.c (statement forms, helpers, #ifdef
blocks, comments with braces, multi-line conditions) and names the file and commit it
mirrors. The expected lists below are the orders read in those real files.
"""

import glob
import os
import shutil
from pathlib import Path

import pytest

import kvmsim
from kvmsim import profiles
from kvmsim import catalogue
from kvmsim.analysis import back_edges
from kvmsim._config import resolve_order
from kvmsim.graph import Context
from kvmsim.analysis import Check, SourceOrder, order_from_source

DATA = Path(__file__).parent / "data" / "x86c"

# openharmony/kernel_linux_5.10 @ 001420d125b99fe567a9622162e16fbae78c39d9 (a 5.10.y tree:
# TLB_FLUSH_GUEST, where v5.10 itself checks KVM_REQ_HV_TLB_FLUSH; kvmsim.profiles linux-5.10.y)
V5_10 = (
    "GET_NESTED_STATE_PAGES", "MMU_RELOAD", "MIGRATE_TIMER", "MASTERCLOCK_UPDATE",
    "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC", "LOAD_MMU_PGD", "TLB_FLUSH",
    "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST", "REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT",
    "STEAL_UPDATE", "SMI", "NMI", "PMU", "PMI", "IOAPIC_EOI_EXIT", "SCAN_IOAPIC",
    "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD", "HV_CRASH", "HV_RESET", "HV_EXIT", "HV_STIMER",
    "APICV_UPDATE", "APF_READY", "MSR_FILTER_CHANGED", "EVENT",
)
# 0xUnbound/kernel_common-android13-5.15-lts @ ff3bfbb75dd7ca0e10d1ee900b133b2d66016e2e
V5_15 = (
    "VM_BUGGED", "GET_NESTED_STATE_PAGES", "MMU_RELOAD", "MIGRATE_TIMER", "MASTERCLOCK_UPDATE",
    "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC", "LOAD_MMU_PGD", "TLB_FLUSH",
    "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST", "REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT",
    "STEAL_UPDATE", "SMI", "NMI", "PMU", "PMI", "IOAPIC_EOI_EXIT", "SCAN_IOAPIC",
    "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD", "HV_CRASH", "HV_RESET", "HV_EXIT", "HV_STIMER",
    "APICV_UPDATE", "APF_READY", "MSR_FILTER_CHANGED", "UPDATE_CPU_DIRTY_LOGGING", "EVENT",
)
# CodeLinaro-mirror/qsdk_oss_kernel_linux-ipq-5.4 @ 7744840b595e164d6c4294c8192001c16526ce00
# (a v5.4 vendor tree: SUSPEND_TIME_ADJ is the vendor's own request)
V5_4 = (
    "GET_VMCS12_PAGES", "SUSPEND_TIME_ADJ", "MMU_RELOAD", "MIGRATE_TIMER",
    "MASTERCLOCK_UPDATE", "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC", "LOAD_CR3",
    "TLB_FLUSH", "REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT", "STEAL_UPDATE", "SMI", "NMI",
    "PMU", "PMI", "IOAPIC_EOI_EXIT", "SCAN_IOAPIC", "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD",
    "HV_CRASH", "HV_RESET", "HV_EXIT", "HV_STIMER", "EVENT",
)
# kvm-x86/linux @ 6f1cc3d67695f20f11b109ea895e21f8e4f26fdc (v6.6-era, the NMI-after-PMI base)
V6_6 = (
    "VM_DEAD", "DIRTY_RING_SOFT_FULL", "GET_NESTED_STATE_PAGES", "MMU_FREE_OBSOLETE_ROOTS",
    "MIGRATE_TIMER", "MASTERCLOCK_UPDATE", "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC",
    "LOAD_MMU_PGD", "TLB_FLUSH", "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST", "HV_TLB_FLUSH",
    "REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT", "STEAL_UPDATE", "SMI", "NMI", "PMU", "PMI",
    "IOAPIC_EOI_EXIT", "SCAN_IOAPIC", "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD", "HV_CRASH",
    "HV_RESET", "HV_EXIT", "HV_STIMER", "APICV_UPDATE", "APF_READY", "MSR_FILTER_CHANGED",
    "UPDATE_CPU_DIRTY_LOGGING", "EVENT",
)
# CachyOS/linux @ 4703912f5e300ffe720bef85cdba704ddb94a950 (v6.19-era)
V6_19 = (
    "VM_DEAD", "DIRTY_RING_SOFT_FULL", "GET_NESTED_STATE_PAGES", "MMU_FREE_OBSOLETE_ROOTS",
    "MIGRATE_TIMER", "MASTERCLOCK_UPDATE", "GLOBAL_CLOCK_UPDATE", "CLOCK_UPDATE", "MMU_SYNC",
    "LOAD_MMU_PGD", "TLB_FLUSH", "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST", "HV_TLB_FLUSH",
    "REPORT_TPR_ACCESS", "TRIPLE_FAULT", "APF_HALT", "STEAL_UPDATE", "PMU", "PMI", "SMI", "NMI",
    "IOAPIC_EOI_EXIT", "SCAN_IOAPIC", "LOAD_EOI_EXITMAP", "APIC_PAGE_RELOAD", "HV_CRASH",
    "HV_RESET", "HV_EXIT", "HV_STIMER", "APICV_UPDATE", "APF_READY", "RECALC_INTERCEPTS",
    "UPDATE_CPU_DIRTY_LOGGING", "UPDATE_PROTECTED_GUEST_STATE", "EVENT",
)

SHAPES = {
    "v5.4-shape.c": V5_4,
    "v5.10-shape.c": V5_10,
    "v5.15-shape.c": V5_15,
    "v6.6-shape.c": V6_6,
    "v6.19-shape.c": V6_19,
}


def _load(name: str) -> SourceOrder:
    return order_from_source(DATA / name)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_order(name):
    so = _load(name)
    assert so.names() == SHAPES[name]
    assert so.names()[-1] == "EVENT"
    assert so.checks[-1].name == "EVENT" and so.checks[-1].kind == "check"
    # every check points at a line that really mentions its request (or the helper call)
    lines = (DATA / name).read_text().splitlines()
    for c in so.checks:
        text = lines[c.line - 1]
        assert (f"KVM_REQ_{c.name}" in text if not c.via else c.via[0] in text), (c, text)


def test_presets_match_their_sources():
    assert _load("v6.6-shape.c").names() == profiles.PROFILES["linux-6.6"].order
    assert _load("v6.19-shape.c").names() == profiles.PROFILES["linux-6.19"].order


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_known_names_are_a_valid_order(name):
    so = _load(name)
    # names, no duplicate bit, EVENT last (older orders lack requests that the default
    # workload raises, so only the newer ones make a default Config)
    assert resolve_order(list(so.names(known_only=True))) == so.names(known_only=True)
    if name in ("v6.6-shape.c", "v6.19-shape.c"):
        config = kvmsim.Config(order=list(so.names()))
        assert config.check_order == so.names()


def test_v66_details():
    so = _load("v6.6-shape.c")
    by = {}
    for c in so.checks:
        by.setdefault(c.name, []).append(c)
    # TRIPLE_FAULT: tested, then checked; counted once, at the test
    assert [(c.kind, c.op) for c in by["TRIPLE_FAULT"]] == [("test", "test"),
                                                             ("check", "check")]
    assert so.names().count("TRIPLE_FAULT") == 1
    # helpers: defined in this file (with the lines of their checks), or from the table
    cur, gst = by["TLB_FLUSH_CURRENT"][0], by["TLB_FLUSH_GUEST"][0]
    assert cur.kind == gst.kind == "helper:kvm_service_local_tlb_flush_requests"
    assert cur.line == gst.line and cur.source_line < gst.source_line < cur.line
    ring = by["DIRTY_RING_SOFT_FULL"][0]
    assert ring.kind == "helper:kvm_dirty_ring_check_request"
    assert ring.source_file is None and ring.source_line is None
    # kvm_clear_request() of TLB_FLUSH_CURRENT in kvm_vcpu_flush_tlb_all() is not a check
    assert len(by["TLB_FLUSH_CURRENT"]) == 1
    # conditions: only SMI, under CONFIG_KVM_SMM
    assert so.conditions() == {"SMI": "CONFIG_KVM_SMM"}
    assert all(c.known for c in so.checks) and not so.unknown() and so.warnings == ()
    assert so.version is None  # a lone file, no Makefile
    lines = (DATA / "v6.6-shape.c").read_text().splitlines()
    assert lines[so.function_line - 1].startswith("static int vcpu_enter_guest(")
    assert [c.line for c in so.checks] == sorted(c.line for c in so.checks)


def test_v619_conditions_and_alias():
    so = _load("v6.19-shape.c")
    assert so.conditions() == {
        "HV_TLB_FLUSH": "CONFIG_KVM_HYPERV", "SMI": "CONFIG_KVM_SMM",
        "HV_CRASH": "CONFIG_KVM_HYPERV", "HV_RESET": "CONFIG_KVM_HYPERV",
        "HV_EXIT": "CONFIG_KVM_HYPERV", "HV_STIMER": "CONFIG_KVM_HYPERV",
    }
    (recalc,) = [c for c in so.checks if c.name == "RECALC_INTERCEPTS"]
    assert recalc.known and recalc.canonical == "MSR_FILTER_CHANGED"
    assert catalogue.bit_of("RECALC_INTERCEPTS") == 37
    # kvm_vcpu_reset() (the UPDATE_PROTECTED_GUEST_STATE handler) only makes requests
    assert not any(c.via and c.via[0] == "kvm_vcpu_reset" for c in so.checks)


def test_old_versions_flag_unknown_names():
    v54 = _load("v5.4-shape.c")
    assert [(c.name, c.renamed_to) for c in v54.unknown()] == [
        ("GET_VMCS12_PAGES", "GET_NESTED_STATE_PAGES"), ("SUSPEND_TIME_ADJ", None),
        ("LOAD_CR3", "LOAD_MMU_PGD")]
    assert any("not in kvmsim.catalogue" in w for w in v54.warnings)
    assert "GET_VMCS12_PAGES" not in v54.names(known_only=True)
    with pytest.raises(ValueError, match="unknown request"):
        kvmsim.Config(order=list(v54.names()))
    # 5.10 and 5.15 names (MMU_RELOAD, VM_BUGGED) are in the catalogue (kvmsim.profiles)
    v515 = _load("v5.15-shape.c")
    assert not v515.unknown() and v515.names(known_only=True) == V5_15
    # the pre-request dirty-ring test (kvm_dirty_ring_soft_full) is not a request check
    assert "DIRTY_RING_SOFT_FULL" not in v515.names()
    # 5.10: TLB_FLUSH_CURRENT/GUEST are direct checks, no helper yet
    v510 = _load("v5.10-shape.c")
    assert {c.kind for c in v510.checks if c.name.startswith("TLB_FLUSH")} == {"check"}
    assert not v510.unknown() and v510.names(known_only=True) == V5_10


def test_reformatted_source():
    so = _load("reformatted-shape.c")
    assert so.names() == (
        "VM_DEAD", "DIRTY_RING_SOFT_FULL", "TLB_FLUSH", "TLB_FLUSH_CURRENT", "TLB_FLUSH_GUEST",
        "SMI", "PMU", "PMI", "HV_EXIT", "HV_CRASH", "NMI", "VENDOR_SPECIAL",
        "RECALC_INTERCEPTS", "EVENT")
    by = {c.name: c for c in so.checks}
    # two levels of helpers are followed; the third level is not
    assert by["TLB_FLUSH_GUEST"].via == ("outer_flush", "inner_flush")
    assert by["TLB_FLUSH_GUEST"].kind == "helper:outer_flush"
    assert "TOO_DEEP" not in so.names()
    # comments, strings, #if 0 and a macro at file scope are not checks
    for name in ("IN_STRING", "IN_LINE_COMMENT", "DEAD_CODE", "NOT_IN_A_FUNCTION", "FAKE"):
        assert name not in so.names()
    # after EVENT: not part of the order
    assert "APF_READY" not in so.names()
    assert so.conditions() == {
        "SMI": "CONFIG_KVM_SMM",
        "PMU": "!CONFIG_NO_PMU",
        "PMI": "CONFIG_NO_PMU",
        "HV_EXIT": "CONFIG_KVM_HYPERV && (IS_ENABLED(CONFIG_KVM_XEN) || defined(CONFIG_TESTING))",
        "HV_CRASH": "CONFIG_KVM_HYPERV && (!(IS_ENABLED(CONFIG_KVM_XEN) || "
                    "defined(CONFIG_TESTING)) && defined(CONFIG_OTHER))",
    }
    assert [c.name for c in so.unknown()] == ["VENDOR_SPECIAL"]
    assert by["VENDOR_SPECIAL"].known is False
    assert [c.op for c in so.checks if c.name == "HV_EXIT"] == ["test", "check"]
    lines = (DATA / "reformatted-shape.c").read_text().splitlines()
    assert lines[so.function_line - 1].startswith("vcpu_enter_guest (")
    assert not [w for w in so.warnings if "EVENT" in w]


def test_tree_reads_dirty_ring_and_version(tmp_path):
    kvm = tmp_path / "arch" / "x86" / "kvm"
    kvm.mkdir(parents=True)
    shutil.copy(DATA / "v6.6-shape.c", kvm / "x86.c")
    ring = tmp_path / "virt" / "kvm"
    ring.mkdir(parents=True)
    (ring / "dirty_ring.c").write_text(
        "/* test stand-in for virt/kvm/dirty_ring.c */\n"
        "bool kvm_dirty_ring_check_request(struct kvm_vcpu *vcpu)\n"
        "{\n"
        "\tif (kvm_check_request(KVM_REQ_DIRTY_RING_SOFT_FULL, vcpu) &&\n"
        "\t    placeholder_soft_full(vcpu)) {\n"
        "\t\tkvm_make_request(KVM_REQ_DIRTY_RING_SOFT_FULL, vcpu);\n"
        "\t\treturn true;\n"
        "\t}\n"
        "\treturn false;\n"
        "}\n")
    (tmp_path / "Makefile").write_text(
        "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 6\nSUBLEVEL = 0\n"
        "EXTRAVERSION = -rc7\nNAME = Test\n")
    for arg in (tmp_path, kvm / "x86.c", str(tmp_path)):
        so = order_from_source(arg)
        assert so.names() == V6_6
        assert so.version == "6.6.0-rc7"
        (c,) = [c for c in so.checks if c.name == "DIRTY_RING_SOFT_FULL"]
        assert c.source_file.endswith("dirty_ring.c") and c.source_line == 4


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        order_from_source(tmp_path / "missing.c")
    with pytest.raises(ValueError, match=r"without arch/x86/kvm/x86\.c"):
        order_from_source(tmp_path)
    f = tmp_path / "x86.c"
    f.write_text("static int vcpu_enter_guest(struct kvm_vcpu *vcpu);\n"
                 "int vcpu_run(struct kvm_vcpu *vcpu)\n{\n"
                 "\tif (vcpu_enter_guest(vcpu)) {\n\t\treturn 1;\n\t}\n\treturn 0;\n}\n")
    with pytest.raises(ValueError, match=r"x86\.c: no definition of vcpu_enter_guest"):
        order_from_source(f)
    f.write_text("/* kvm_check_request(KVM_REQ_NMI, vcpu) */\n"
                 "static int vcpu_enter_guest(struct kvm_vcpu *vcpu)\n{\n"
                 "\treturn kvm_make_request(KVM_REQ_NMI, vcpu);\n}\n")
    with pytest.raises(ValueError, match=r"x86\.c: vcpu_enter_guest\(\) \(line 2\) has no"):
        order_from_source(f)


def test_no_block_no_event(tmp_path):
    f = tmp_path / "x86.c"
    f.write_text("static int vcpu_enter_guest(struct kvm_vcpu *vcpu)\n{\n"
                 "\tif (kvm_check_request(KVM_REQ_NMI, vcpu))\n\t\tprocess_nmi(vcpu);\n"
                 "\treturn 1;\n}\n")
    so = order_from_source(f)
    assert so.names() == ("NMI", "EVENT")
    assert any("kvm_request_pending" in w for w in so.warnings)
    assert any("EVENT appended" in w for w in so.warnings)
    assert isinstance(so.checks[0], Check) and so.checks[0].line == 3


def _real_trees():
    env = os.environ.get("KVMSIM_KERNEL_TREE")
    if env:
        return env.split(os.pathsep)
    found = sorted(glob.glob("/usr/src/linux*/arch/x86/kvm/x86.c"))
    return [str(Path(f).parents[3]) for f in found]


@pytest.mark.parametrize("tree", _real_trees() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no kernel tree (set KVMSIM_KERNEL_TREE=tree[:tree...] or unpack /usr/src/linux*)"))])
def test_real_kernel_tree(tree):
    so = order_from_source(tree)
    names = so.names()
    assert names[-1] == "EVENT"
    assert {"NMI", "PMI", "PMU"} <= set(names)
    assert so.checks and so.checks[-1].name == "EVENT"
    # fad505b2cb83 landed in v6.7: before it PMI -> NMI is a back edge, from it on it is not.
    if so.version:
        major, minor = (int(x) for x in so.version.split(".")[:2])
        fires = {(b.edge.src, b.edge.dst) for b in back_edges(so.names(known_only=True),
                                                              Context()) if b.active}
        assert (("PMI", "NMI") in fires) == ((major, minor) < (6, 7))
