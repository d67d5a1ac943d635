"""kvmsim trace: one line per simulated event of a short run, as `trace-cmd report` prints."""

from __future__ import annotations

import sys

from .. import _names, _trace
from .._errors import ConfigError
from .._simulation import Simulation
from .._spec import TRACEPOINTS
from . import _args

HELP = "print each simulated event of a short run, trace-cmd style"
EPILOG = """examples:
  kvmsim trace --order linux-6.6 --workload spec2017-vtune --duration 0.002 --vcpu 0
  kvmsim trace examples/pmi-trace.toml --events kvm_exit,kvm_check_request,vmx_cancel_injection
"""
NAMES = ", ".join(tp for tp, _ in TRACEPOINTS.values())


class _Enough(Exception):
    """--max-events lines are out."""


def add(sub) -> None:
    p = sub.add_parser("trace", help=HELP, epilog=EPILOG, formatter_class=_args.Formatter)
    p.add_argument("scenario", nargs="?", help="a scenario file (TOML), - for standard input; "
                                               "flags override it")
    _args.add_run_flags(p, duration=0.01, interval=False)
    p.add_argument("--max-events", type=_args.integer(), default=1000,
                   help="stop after N lines, and say so (default %(default)s)")
    p.add_argument("--events", help=f"only these events ({NAMES}; the counter names of "
                                     "`stat -e` work too)")
    p.add_argument("--vcpu", type=_args.integer(), help="only this vCPU")
    p.set_defaults(func=run)


def run(args, out) -> int:
    problems = []
    wanted = set(TRACEPOINTS)
    if args.events:
        wanted, bad = set(), []
        for name in (e for e in args.events.split(",") if e.strip()):
            try:
                wanted.add(_names.trace_event(name))
            except KeyError:
                bad.append(name.strip())
        if bad:
            problems.append(("--events", f"unknown {', '.join(map(repr, bad))}; allowed: "
                                         f"{NAMES}"))
    if args.max_events <= 0:
        problems.append(("--max-events", f"{args.max_events}; must be > 0"))
    scn = _args.scenario(args, problems)
    if scn and args.vcpu is not None and not 0 <= args.vcpu < scn.config.workload.vcpus:
        problems.append(("--vcpu", f"{args.vcpu}; allowed: 0..{scn.config.workload.vcpus - 1}"))
    if problems:
        raise ConfigError(problems)
    sim = Simulation(scn.config, interval=scn.duration, keep=())
    printed = 0

    def hook(t_ns, vcpu, event, a, b):
        # The engine stops at its next consistent point after the hook raises: events up to
        # there still arrive here, and are not printed.
        nonlocal printed
        if printed < args.max_events and event in wanted and \
                (args.vcpu is None or vcpu == args.vcpu):
            print(_trace.line(t_ns, vcpu, event, a, b), file=out)
            printed += 1
            if printed >= args.max_events:
                raise _Enough
    sim.engine.set_trace(hook)
    try:
        sim.run(until=scn.duration)
    except _Enough:
        print(f"kvmsim trace: stopped after {printed} events (--max-events) at "
              f"{sim.now:g} simulated s", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"kvmsim trace: interrupted at {sim.now:g} simulated s", file=sys.stderr)
        return 130
    return 0
