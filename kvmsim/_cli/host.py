"""kvmsim host-check and kvmsim calibrate: the model against this machine's KVM (kvmsim.host)."""

from __future__ import annotations

import argparse
import os
import platform
import threading

from .._errors import ConfigError
from ..host import CASES, usable, vendor_module
from ..host import calibrate as _calibrate
from ..host._vmm import HostError
from . import _args

EXIT_AGREE, EXIT_DISAGREE, EXIT_UNUSABLE = 0, 1, 2


def add(subparsers) -> None:
    names = ", ".join(c.name for c in CASES)
    p = subparsers.add_parser(
        "host-check", help="run every case on this host's /dev/kvm and in kvmsim; compare",
        formatter_class=_args.Formatter,
        epilog="exit status: 0 all agree, 1 one disagrees (or failed on the host), 2 no "
               "usable /dev/kvm\n\nexamples:\n  kvmsim host-check\n"
               "  kvmsim host-check --case nmi-burst-3 --case nmi-irq -v\n\n"
               f"cases: {names}")
    p.add_argument("--case", action="append", metavar="NAME", help="run only this case "
                   "(repeatable)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print what the kernel did: exits to user space by reason, "
                        "vCPU statistics, tracepoint counts, the guest's log")
    _args.add_run_flags(p, only=("engine",))
    p.set_defaults(func=cmd_host_check)
    c = subparsers.add_parser(
        "calibrate", help="measure this host's costs for a scenario file's [costs] table",
        formatter_class=_args.Formatter,
        epilog="examples:\n  kvmsim calibrate\n  kvmsim calibrate --runs 400 --batches 9 "
               "> host-costs.toml\n\nThe output is a whole [costs] table: replace the "
               "scenario file's [costs] table (and its [costs.*] sub-tables) with it, or "
               "paste it into a file that has none. Appending it (>>) to a file that "
               "already has [costs] makes that file invalid TOML.")
    c.add_argument("--runs", type=_args.integer(), default=200,
                   help="KVM_RUNs per batch (default 200)")
    c.add_argument("--batches", type=_args.integer(), default=7,
                   help="batches; the fastest counts (default 7)")
    c.set_defaults(func=cmd_calibrate)


def _selected(names: list[str] | None):
    if not names:
        return list(CASES)
    known = {c.name: c for c in CASES}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError([("--case", f"unknown case {n!r}; allowed: {', '.join(known)}")
                           for n in bad])
    return [known[n] for n in names]


def _main_thread_check() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise ConfigError([("", "host cases signal the vCPU thread: run them from the main "
                                "thread")])


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return "-" if v is None else str(v)


STATUS = {"agree": "yes", "pvm": "PVM", "host-only": "host", "DISAGREE": "NO"}


def cmd_host_check(args, out) -> int:
    problems = []
    config = _args.config(args, problems)
    if problems:
        raise ConfigError(problems)
    cases = _selected(args.case)
    _main_thread_check()
    why = usable()
    if why:
        print(f"kvmsim host-check: no usable KVM: {why}", file=out)
        return EXIT_UNUSABLE
    print(f"# kvmsim host-check: Linux {platform.release()}, vendor module "
          f"{vendor_module() or 'unknown'}; kvmsim: order linux-6.19, vendor intel (VMX), "
          "zero costs", file=out)
    row = "{:<22} {:<40} {:>12} {:>12}  {}"
    print(row.format("case", "observation", "host", "kvmsim", "agree"), file=out)
    tally, shown = {}, set()
    for case in cases:
        from ..host import _kvm
        k = _kvm.Kvm()
        try:
            skip = case.unavailable(k)
        finally:
            k.close()
        if skip:
            print(row.format(case.name, "(skipped)", "", "", skip), file=out)
            tally["skipped"] = tally.get("skipped", 0) + 1
            continue
        try:
            outcome = case.run(engine=config.engine)
        except (HostError, OSError) as e:
            print(row.format(case.name, "(failed on the host)", "", "", str(e)), file=out)
            tally["failed"] = tally.get("failed", 0) + 1
            continue
        for o in outcome.observations:
            note = f"  ({o.vendor})" if o.status in ("pvm", "host-only") else ""
            note = "" if note in shown else note
            shown.add(note)
            print(row.format(case.name, o.name, _fmt(o.host), _fmt(o.model),
                             STATUS[o.status] + note), file=out)
        if args.verbose:
            for key, val in outcome.host_report.items():
                print(f"{'':<22} host {key}: {val}", file=out)
        tally[outcome.status] = tally.get(outcome.status, 0) + 1
        out.flush()
    print(f"# {len(cases)} cases: {tally.get('agree', 0)} agree, {tally.get('pvm', 0)} agree "
          f"except where PVM's rule differs from VMX (docs/validation.md), "
          f"{tally.get('DISAGREE', 0)} disagree, {tally.get('failed', 0)} failed on the host, "
          f"{tally.get('skipped', 0)} skipped", file=out)
    return EXIT_DISAGREE if tally.get("DISAGREE") or tally.get("failed") else EXIT_AGREE


def cmd_calibrate(args, out) -> int:
    problems = [(f"--{k}", f"{v!r}; allowed: 1..100000") for k, v in
                (("runs", args.runs), ("batches", args.batches)) if not 1 <= v <= 100_000]
    if problems:
        raise ConfigError(problems)
    _main_thread_check()
    why = usable()
    if why:
        print(f"kvmsim calibrate: no usable KVM: {why}", file=out)
        return EXIT_UNUSABLE
    c = _calibrate.measure(runs=args.runs, batches=args.batches)
    load = os.getloadavg()[0]
    host = (f"Linux {platform.release()}, {vendor_module() or 'unknown vendor module'}, "
            f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print(_calibrate.costs_toml(c, host), end="", file=out)
    return 0
